// Block-wise weight quantization: the contract between quantization methods (RTN, data-free
// search, calibration-based) and the format emitters (MatMulNBits, QDQ, GatherBlockQuantized).
import type { ExternalRef } from '../../ir/index.js';
import type { GptqStep, GptqStepResult } from './methods/gptq.js';

export interface QuantParams {
  bits: 4 | 8;
  /** Elements per block along K (16..256, power of two). */
  blockSize: number;
  /** Symmetric: no zero points stored; codes are centred on 2^(bits-1). */
  symmetric: boolean;
}

/**
 * A weight of logical shape [K, N] (ONNX MatMul B: K input features, N outputs), quantized in
 * blocks of `blockSize` consecutive K values per output column n.
 * Dequantized value of element (k, n): (codes[n*Kp + k] - zp(n, k/blockSize)) * scales[n*kBlocks + k/blockSize]
 * with Kp = kBlocks*blockSize (K zero-padded), zp = zeroPoints[...] or 2^(bits-1) when symmetric.
 */
export interface QuantizedWeight {
  K: number;
  N: number;
  bits: 4 | 8;
  blockSize: number;
  kBlocks: number;
  symmetric: boolean;
  /** Unsigned codes in [0, 2^bits), one byte each, [N][kBlocks*blockSize] (padding codes = zp). */
  codes: Uint8Array;
  /** [N][kBlocks] */
  scales: Float32Array;
  /** [N][kBlocks] unsigned integer zero points (asymmetric only). */
  zeroPoints?: Uint8Array;
}

/** Calibration statistics for one weight: activations X that multiply it ([rows, K] row-major). */
export interface CalibrationData {
  /** Sample activations, row-major [rows, K]. */
  x: Float32Array;
  rows: number;
}

/**
 * A method turns a float weight [K, N] (row-major, as stored in a MatMul initializer) into codes.
 * The quantize pass reads big weights in column slices (output columns are independent: blocks run
 * along K) and calls `quantize` per slice; a method that must see the whole weight first (GPTQ's
 * Hessian factors and held-out scoring, a scale search) says so with `prepare`.
 */
export interface QuantMethod {
  name: string;
  description: string;
  /** True when the method needs calibration activations (the pass collects them via onnxruntime). */
  needsCalibration: boolean;
  /** True when the method weights its error per input channel if given activation statistics; the
   * quantize pass then supplies data-free estimates (passes/quant/norm-scales.ts) when no calibration
   * was run. */
  usesChannelScale?: boolean;
  /** True when `quantize` gives the codes of the SIMD RTN kernel: fp32 weights may then stream
   * through it from their file, never held whole (quant/rtn-streamer.ts). */
  streamable?: boolean;
  quantize(w: Float32Array, K: number, N: number, p: QuantParams, calib?: CalibrationData): QuantizedWeight;
  /**
   * Whole-weight work before the slices are quantized: may read the slices (`weight.eachSlice`) and
   * run work on the pass's workers (`exec`); returns how to quantize each slice. Without it each
   * slice goes to `quantize` (on a worker when the pass has a pool).
   */
  prepare?(weight: WeightSlices, p: QuantParams, calib: CalibrationData | undefined, exec: QuantExec): Promise<SliceQuantizer>;
}

/** Quantize one column slice [K, ns] of a weight. */
export type SliceQuantizer = (w: Float32Array, K: number, ns: number) => Promise<QuantizedWeight>;

/** A weight as the pass hands it to a method: its logical [K, N] and its column slices. */
export interface WeightSlices {
  K: number;
  N: number;
  eachSlice(f: (w: Float32Array, n0: number, ns: number) => Promise<void>): Promise<void>;
}

/** Where a method's work runs: the pass's worker pool, or the calling thread. */
export interface QuantExec {
  /** A method's `quantize` on one slice. */
  quantize(
    m: QuantMethod,
    w: Float32Array,
    K: number,
    N: number,
    p: QuantParams,
    calib: CalibrationData | undefined,
  ): Promise<QuantizedWeight>;
  /** One GPTQ step (methods/gptq.ts). */
  gptq<T extends GptqStepResult>(s: GptqStep): Promise<T>;
}

/** A quantized weight as the pass emits it. */
export interface Quantized {
  q: QuantizedWeight;
  /** MatMulNBits B bytes [N][kBlocks][blob] when streamed; q.codes is then empty. */
  packed?: Uint8Array;
  /** Streamed and left in the spill file (quant/spill.ts): B bytes and float32 scales as lazy
   * ranges; q.codes, q.scales and packed are then empty. */
  spilled?: { packed: ExternalRef; scales: ExternalRef };
  /** ||W - dequant|| / ||W|| over the whole weight. */
  relError: number;
}

export function kBlocksOf(K: number, blockSize: number): number {
  return Math.ceil(K / blockSize);
}

/** Dequantize back to a float [K, N] row-major weight (reference for error reports and tests). */
export function dequantize(q: QuantizedWeight): Float32Array {
  const { K, N, blockSize, kBlocks, bits } = q;
  const Kp = kBlocks * blockSize;
  const out = new Float32Array(K * N);
  const mid = 1 << (bits - 1);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const s = q.scales[n * kBlocks + b]!;
      const zp = q.zeroPoints ? q.zeroPoints[n * kBlocks + b]! : mid;
      const k1 = Math.min(K, (b + 1) * blockSize);
      for (let k = b * blockSize; k < k1; k++) out[k * N + n] = (q.codes[n * Kp + k]! - zp) * s;
    }
  }
  return out;
}
