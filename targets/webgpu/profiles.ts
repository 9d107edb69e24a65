// WebGPU device profiles (formats-and-runtimes.md §5.3): binding and buffer limits decide which
// tensors must be split; shader-f16 decides whether fp16 activations can run at all.
import type { DeviceProfile } from '../target.js';

const MiB = 1024 * 1024;

export const WEBGPU_PROFILES: Record<string, DeviceProfile> = {
  // The spec's default limits: what every conforming adapter grants without asking.
  default: { name: 'default', description: 'WebGPU spec default limits (128 MiB binding, 256 MiB buffer), shader-f16', maxBindingBytes: 128 * MiB, maxBufferBytes: 256 * MiB, shaderF16: true, int8Dot: true },
  'snapdragon-x': { name: 'snapdragon-x', description: 'Qualcomm Snapdragon X Elite (Adreno X1): 256 MiB binding, 1 GiB buffer', maxBindingBytes: 256 * MiB, maxBufferBytes: 1024 * MiB, shaderF16: true, int8Dot: true },
  'apple-m2': { name: 'apple-m2', description: 'Apple M2 (Metal): no DP4A path in ORT WebGPU', maxBindingBytes: 2048 * MiB, maxBufferBytes: 2048 * MiB, shaderF16: true, int8Dot: false },
  // Chromium's CPU adapter used in tests: no shader-f16, so artifacts must be built --no-fp16.
  swiftshader: { name: 'swiftshader', description: 'SwiftShader (CPU WebGPU adapter in headless Chromium): no shader-f16', maxBindingBytes: 128 * MiB, maxBufferBytes: 256 * MiB, shaderF16: false, int8Dot: false },
};
