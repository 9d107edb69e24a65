// Round-to-nearest block quantization with onnxruntime's arithmetic: the MatMul path of its DEFAULT
// weight-only quantizer (MLAS BlockwiseQuantizer::quantizeAndTranspose, range2scale/range2scalezp),
// reproduced in float32 so the codes and scales match it bit for bit.
//   symmetric:  m = the block value of largest magnitude (the negative one on a tie), scale = m / -2^(bits-1),
//               so m maps to code 0; zp = 2^(bits-1) implicit.
//   asymmetric: range widened to include 0, scale = (max - min) / (2^bits - 1), zp = roundf(-min / scale).
//   code = clamp(roundf(w * (1/scale) + zp), 0, 2^bits - 1).
// All-zero blocks get scale 0 and codes = zp (8 symmetric, 0 asymmetric, as MLAS). K is padded to
// kBlocks*blockSize with zp codes.
import { kBlocksOf, type QuantMethod, type QuantParams, type QuantizedWeight } from '../types.js';
import { rtnSimd } from './rtn-simd.js';

const fround = Math.fround;
const SIGN = 0x80000000 | 0;

/** C's roundf (half away from zero) of a float32 value. */
export function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

export interface BlockParams {
  scale: number;
  zp: number;
  /** fround(1/scale), 0 for an all-zero block. */
  rs: number;
}

/** MLAS scale / zero point for a block whose float32 range is [min, max]. */
export function blockParams(min: number, max: number, bits: 4 | 8, symmetric: boolean): BlockParams {
  if (symmetric) {
    const m = Math.abs(max) > Math.abs(min) ? max : min;
    // `+ 0` turns the -0 of an all-zero block into +0 (MLAS writes -0; both dequantize to 0).
    const scale = fround(-m / (1 << (bits - 1))) + 0;
    return { scale, zp: 1 << (bits - 1), rs: scale !== 0 ? fround(1 / scale) : 0 };
  }
  const lo = Math.min(min, 0),
    hi = Math.max(max, 0),
    qmax = (1 << bits) - 1;
  const scale = fround(fround(hi - lo) / qmax);
  const zpf = scale !== 0 ? -fround(lo / scale) : lo;
  const zp = zpf < 0 ? 0 : zpf > qmax ? qmax : roundf(zpf);
  return { scale, zp, rs: scale !== 0 ? fround(1 / scale) : 0 };
}

/** One code: clamp(roundf(fround(fround(v * rs) + zp)), 0, qmax). */
export function quantizeValue(v: number, rs: number, zp: number, qmax: number): number {
  const q = roundf(fround(fround(v * rs) + zp));
  return q < 0 ? 0 : q > qmax ? qmax : q;
}

function allocate(K: number, N: number, p: QuantParams): QuantizedWeight {
  const kBlocks = kBlocksOf(K, p.blockSize);
  return {
    K,
    N,
    bits: p.bits,
    blockSize: p.blockSize,
    kBlocks,
    symmetric: p.symmetric,
    codes: new Uint8Array(N * kBlocks * p.blockSize),
    scales: new Float32Array(N * kBlocks),
    zeroPoints: p.symmetric ? undefined : new Uint8Array(N * kBlocks),
  };
}

export function checkParams(K: number, N: number, p: QuantParams, w: Float32Array): void {
  if (p.bits !== 4 && p.bits !== 8) throw new RangeError(`bits must be 4 or 8, got ${p.bits}`);
  const bs = p.blockSize;
  if (!(bs >= 16 && bs <= 256 && (bs & (bs - 1)) === 0)) throw new RangeError(`block size must be a power of two in 16..256, got ${bs}`);
  if (!(K > 0 && N > 0) || w.length !== K * N) throw new RangeError(`weight has ${w.length} values, expected K*N = ${K}*${N}`);
}

/** The plain per-block loop, kept as the reference the tuned kernel is tested against. */
export function rtnReference(w: Float32Array, K: number, N: number, p: QuantParams): QuantizedWeight {
  checkParams(K, N, p, w);
  const q = allocate(K, N, p);
  const { blockSize: bs, kBlocks } = q;
  const Kp = kBlocks * bs,
    qmax = (1 << p.bits) - 1;
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * bs,
        k1 = Math.min(K, k0 + bs);
      let min = Infinity,
        max = -Infinity;
      for (let k = k0; k < k1; k++) {
        const v = w[k * N + n]!;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const { scale, zp, rs } = blockParams(min, max, p.bits, p.symmetric);
      q.scales[n * kBlocks + b] = scale;
      if (q.zeroPoints) q.zeroPoints[n * kBlocks + b] = zp;
      for (let k = k0; k < k0 + bs; k++) q.codes[n * Kp + k] = k < k1 ? quantizeValue(w[k * N + n]!, rs, zp, qmax) : zp;
    }
  }
  return q;
}

/**
 * Tuned kernel, byte-identical to rtnReference: the WebAssembly SIMD kernel (rtn-simd.ts), and
 * this scalar one for the edges it leaves (columns past a multiple of 4, a partial last block).
 */
export function rtnQuantize(w: Float32Array, K: number, N: number, p: QuantParams, simd = true): QuantizedWeight {
  checkParams(K, N, p, w);
  const out = allocate(K, N, p);
  const done = simd ? rtnSimd(w, K, N, out) : { blocks: 0, cols: 0 };
  // What SIMD did not cover: the trailing partial block row and the columns past a multiple of 4.
  if (done.cols < N) rtnKernel(w, K, N, out, 0, done.blocks, done.cols, N);
  if (done.blocks < out.kBlocks) rtnKernel(w, K, N, out, done.blocks, out.kBlocks, 0, N);
  return out;
}

/**
 * Scalar kernel over block rows [b0, b1) and columns [n0, n1). The range comes from the IEEE bits
 * as int32 with ternary maxes (no unpredictable branches): the largest positive value and the
 * largest negative magnitude, which is all both MLAS schemes need. Rounding is `(t + 0.5) | 0` on
 * t >= -tiny; the symmetric grid can only overshoot to 2^bits, fixed branch-free by `q - (q >> bits)`.
 */
export function rtnKernel(
  w: Float32Array,
  K: number,
  N: number,
  out: QuantizedWeight,
  b0: number,
  b1: number,
  n0: number,
  n1: number,
): void {
  const { blockSize: bs, kBlocks, codes, scales, zeroPoints, bits } = out;
  const sym = out.symmetric,
    Kp = kBlocks * bs,
    qmax = (1 << bits) - 1;
  const wi = new Int32Array(w.buffer, w.byteOffset, K * N);
  const cvt = new Int32Array(2),
    cvf = new Float32Array(cvt.buffer);
  // Block-row outer, column inner: the bs strided rows of one block stay in L1 across 16 columns.
  for (let b = b0; b < b1; b++) {
    const k0 = b * bs,
      k1 = Math.min(K, k0 + bs),
      len = k1 - k0;
    for (let n = n0; n < n1; n++) {
      let pos = 0,
        neg = 0;
      const start = k0 * N + n,
        end = k1 * N + n;
      for (let i = start; i < end; i += N) {
        const v = wi[i]!;
        pos = v > pos ? v : pos;
        const m = v ^ SIGN;
        neg = m > neg ? m : neg;
      }
      cvt[0] = pos;
      cvt[1] = neg;
      const hi = cvf[0]!,
        negMag = cvf[1]!;
      let scale: number, zp: number;
      if (sym) {
        const m = hi > negMag ? hi : -negMag;
        scale = fround(-m / (1 << (bits - 1))) + 0;
        zp = 1 << (bits - 1);
      } else {
        scale = fround(fround(hi + negMag) / qmax);
        const zpf = scale !== 0 ? fround(negMag / scale) : 0;
        zp = zpf > qmax ? qmax : roundf(zpf);
      }
      const rs = scale !== 0 ? fround(1 / scale) : 0;
      const bi = n * kBlocks + b;
      scales[bi] = scale;
      if (zeroPoints) zeroPoints[bi] = zp;
      let o = n * Kp + k0;
      if (sym) {
        for (let i = start; i < end; i += N) {
          const q = (fround(fround(w[i]! * rs) + zp) + 0.5) | 0;
          codes[o++] = q - (q >> bits);
        }
      } else {
        for (let i = start; i < end; i += N) {
          const q = (fround(fround(w[i]! * rs) + zp) + 0.5) | 0;
          codes[o++] = q < 0 ? 0 : q > qmax ? qmax : q;
        }
      }
      if (len < bs) codes.fill(zp, o, n * Kp + k0 + bs);
    }
  }
}

export const rtn: QuantMethod = {
  name: 'rtn',
  description: "round-to-nearest per block, onnxruntime's DEFAULT quantizer arithmetic (absmax/-8 symmetric, min/max asymmetric)",
  needsCalibration: false,
  streamable: true,
  quantize: (w, K, N, p) => rtnQuantize(w, K, N, p),
};
