// Device figures for the roofline (kernels/roofline.ts): per compute unit, the DRAM bandwidth one
// unit reaches and its peak compute. Copied from the project's performance notes
// (performance.md §B2, sources named per figure); where no study gives a figure it says "assumed".
// Decode on these devices is bandwidth-bound, so bandwidth is the figure that matters; the
// compute peaks only decide prefill and vision encoders.
import type { ComputeUnit } from '../kernels/roofline.js';

export type UnitKind = 'cpu' | 'gpu' | 'npu';

export interface PerfDevice {
  name: string;
  description: string;
  /** Bus peak (bytes/s), for the report; the roofline uses each unit's measured bandwidth. */
  peakBandwidth: number;
  units: Partial<Record<UnitKind, ComputeUnit>>;
  sources: string[];
}

const G = 1e9,
  T = 1e12,
  us = 1e-6;

export const PERF_DEVICES: Record<string, PerfDevice> = {
  'dimensity-9300': {
    name: 'dimensity-9300',
    description: 'MediaTek Dimensity 9300 (LPDDR5T 9600, APU 790)',
    peakBandwidth: 76.8 * G,
    units: {
      // No single-unit measurement is published for the D9300: 0.62 x its bus peak, the ratio
      // HeteroInfer measured on the Snapdragon 8 Gen 3 (42.5 of 68 GB/s).
      cpu: { bandwidth: 47.6 * G, int8Ops: 1.5 * T, fp16Flops: 0.5 * T, fp32Flops: 0.25 * T, overhead: 2 * us },
      gpu: { bandwidth: 47.6 * G, int8Ops: 4 * T, fp16Flops: 4 * T, fp32Flops: 2 * T, overhead: 10 * us },
      npu: { bandwidth: 47.6 * G, int8Ops: 60 * T, fp16Flops: 10 * T, fp32Flops: 1 * T, overhead: 10 * us },
    },
    sources: [
      'bus peak 76.8 GB/s: LPDDR5T 9600 Mbps on a 64-bit bus (MediaTek launch coverage [S]; bus width assumed)',
      'single-unit bandwidth 47.6 GB/s: derived, 0.62 x peak (ratio measured on Snapdragon 8 Gen 3 by HeteroInfer [P])',
      'APU int8 60 TOPS: llm.npu, ASPLOS 2025, Table 2 [P]',
      'CPU and GPU compute, APU fp16: assumed (no published figure)',
    ],
  },
  'snapdragon-8-gen-3': {
    name: 'snapdragon-8-gen-3',
    description: 'Qualcomm Snapdragon 8 Gen 3 (LPDDR5X 4800 MHz, Hexagon HTP v75, Adreno 750)',
    peakBandwidth: 68 * G,
    units: {
      cpu: { bandwidth: 42.5 * G, int8Ops: 1.5 * T, fp16Flops: 0.5 * T, fp32Flops: 0.25 * T, overhead: 2 * us },
      gpu: { bandwidth: 42.5 * G, int8Ops: 2 * T, fp16Flops: 1 * T, fp32Flops: 1 * T, overhead: 10 * us },
      npu: { bandwidth: 42.5 * G, int8Ops: 45 * T, fp16Flops: 10 * T, fp32Flops: 1 * T, overhead: 10 * us },
    },
    sources: [
      'theoretical 68 GB/s, one CPU, GPU or NPU 40-45 GB/s (42.5 used): HeteroInfer, "Characterizing Mobile SoC for Accelerating Heterogeneous LLM Inference" [P]',
      'HMX fp16 ~10 TFLOPS measured; Adreno 750 ~1 TFLOPS measured: HeteroInfer [P]',
      'Hexagon int8 ~45 TOPS: third-party figure [S] (llm.npu gives 73)',
      'CPU compute: assumed (no published figure)',
    ],
  },
  'apple-m2': {
    name: 'apple-m2',
    description: 'Apple M2 (100 GB/s unified LPDDR5, 10-core GPU) in a WebGPU browser',
    peakBandwidth: 100 * G,
    units: {
      // WebGPU decoders reach ~0.46 of the bus (WebLLM 8B on M3 Max: ~185 of 400 GB/s).
      gpu: { bandwidth: 46 * G, int8Ops: 3.6 * T, fp16Flops: 3.6 * T, fp32Flops: 3.6 * T, overhead: 15 * us },
      cpu: { bandwidth: 60 * G, int8Ops: 1 * T, fp16Flops: 0.5 * T, fp32Flops: 0.25 * T, overhead: 2 * us },
    },
    sources: [
      '100 GB/s and 3.6 TFLOPS fp32 GPU: Apple M2 specification (vendor figure, not in performance.md)',
      'WebGPU achievable fraction 0.46: derived from WebLLM Llama-3.1-8B 41.1 tok/s on M3 Max, arXiv 2412.15803 [P]',
      'CPU figures: assumed',
    ],
  },
  'rtx-4090': {
    name: 'rtx-4090',
    description: 'NVIDIA GeForce RTX 4090 desktop GPU in a WebGPU browser',
    peakBandwidth: 1008 * G,
    units: {
      gpu: { bandwidth: 464 * G, int8Ops: 82.6 * T, fp16Flops: 82.6 * T, fp32Flops: 82.6 * T, overhead: 8 * us },
    },
    sources: [
      '1008 GB/s, 82.6 TFLOPS fp32/fp16 (non-tensor): NVIDIA specification (vendor figure, not in performance.md)',
      'WebGPU achievable fraction 0.46: as for apple-m2 (WebLLM, arXiv 2412.15803 [P])',
    ],
  },
};

/** Which unit runs each target's artifact. */
export const TARGET_UNIT: Record<string, UnitKind> = { mobile: 'cpu', npu: 'npu', webgpu: 'gpu' };
export const DEFAULT_DEVICE: Record<string, string> = { mobile: 'snapdragon-8-gen-3', npu: 'snapdragon-8-gen-3', webgpu: 'apple-m2' };

export function perfDevice(name: string): PerfDevice | undefined {
  return PERF_DEVICES[name];
}
