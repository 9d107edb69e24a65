// Phone NPU profiles (QNN HTP generations). No binding limit; static shapes and quantized tensors.
import type { DeviceProfile } from '../target.js';

export const NPU_PROFILES: Record<string, DeviceProfile> = {
  'snapdragon-8-gen-3': { name: 'snapdragon-8-gen-3', description: 'Qualcomm Snapdragon 8 Gen 3 (Hexagon HTP v75, LPDDR5X)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, int8Dot: true },
  'snapdragon-8-elite': { name: 'snapdragon-8-elite', description: 'Qualcomm Snapdragon 8 Elite (Hexagon HTP v79, LPDDR5X)', maxBindingBytes: Infinity, maxBufferBytes: Infinity, int8Dot: true },
};
