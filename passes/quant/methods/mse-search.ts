// Data-free scale search: per block, try a grid of scales (clip ratios of the RTN range, both
// orientations of the symmetric grid, whose levels -8..7 are not symmetric; a joint low/high clip
// grid when asymmetric), refit each by least squares for the codes it rounds to, keep the one with
// the least reconstruction error, then alternate rounding and refit (HQQ-style, but with INTEGER
// zero points so WebGPU / NPU runtimes accept the result). The RTN grid is one of the candidates
// and a refit never increases the error, so the result is never worse than RTN's error for the same
// block (up to float32 rounding of the stored scale).
// The error can be weighted per input channel by its activation energy, so that blocks holding an
// outlier channel's row get scales that represent that row well: output error is sum_k E[x_k^2]
// ||w_k - wq_k||^2 when channels are uncorrelated. The energies come from calibration rows, or
// without data from the norm scale (RMSNorm / LayerNorm gamma) that feeds the MatMul, as
// data-free quantization (Nagel et al., 2019) estimates activation statistics from BatchNorm.
import { kBlocksOf, type CalibrationData, type QuantMethod, type QuantParams, type QuantizedWeight } from '../types.js';
import { checkParams } from './rtn.js';
import { blockSearcher, searchBlockRow, searchSimdAvailable } from './simd-search.js';

/** Clip ratios of the block range tried. The symmetric grid has one free end; the asymmetric grid
 * two, searched jointly (low and high clip), then refit and alternated. */
const RATIOS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];
const ASYM_RATIOS = [1, 0.94, 0.88, 0.82, 0.76];
const REFINE_ITERS = 3;

export interface Fit {
  err: number;
  s: number;
  z: number;
}

/** Least-squares scale for fixed codes q and integer zero z; err = sum h (x - s(q-z))^2
 * (sums weighted by h; n = sum h). */
function fitScale(sx: number, sxx: number, sq: number, sqq: number, sxq: number, n: number, z: number): Fit {
  const sxd = sxq - z * sx,
    sdd = sqq - 2 * z * sq + n * z * z;
  if (sdd <= 0) return { err: sxx, s: 0, z };
  const s = sxd / sdd;
  return { err: Math.max(0, sxx - s * sxd), s, z };
}

/**
 * Best (scale, zero point) for the block x[0..n), minimising sum h_i (x_i - s(q_i - z))^2 with
 * h = 1 when not given (data-free) or the inputs' mean squared activation (calibration methods).
 * Symmetric: zero fixed at `mid`, codes in [0, qmax]. Returns codes written into q.
 */
export function searchBlock(
  x: Float64Array,
  n: number,
  bits: 4 | 8,
  symmetric: boolean,
  q: Int32Array,
  qt: Int32Array,
  h?: Float64Array,
): Fit {
  const qmax = (1 << bits) - 1,
    mid = 1 << (bits - 1);
  let lo = 0,
    hi = 0,
    sx = 0,
    sxx = 0,
    sh = 0,
    heavy = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i]!,
      wi = h ? h[i]! : 1;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    sx += wi * v;
    sxx += wi * v * v;
    sh += wi;
    if (h && wi * v * v > h[heavy]! * x[heavy]! * x[heavy]!) heavy = i;
  }
  if (lo === 0 && hi === 0) {
    q.fill(symmetric ? mid : 0, 0, n);
    return { err: 0, s: 0, z: symmetric ? mid : 0 };
  }
  let best: Fit = { err: Infinity, s: 0, z: 0 };
  const trial = (s: number, z: number): void => {
    const inv = 1 / s;
    let sq = 0,
      sqq = 0,
      sxq = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i]!,
        wi = h ? h[i]! : 1;
      let c = Math.round(v * inv) + z;
      c = c < 0 ? 0 : c > qmax ? qmax : c;
      qt[i] = c;
      sq += wi * c;
      sqq += wi * c * c;
      sxq += wi * v * c;
    }
    let f = fitScale(sx, sxx, sq, sqq, sxq, sh, z);
    if (!symmetric && sqq * sh - sq * sq > 0) {
      // Free affine fit w ~ a*q + b, then the nearest integer zero point.
      const a = (sh * sxq - sx * sq) / (sh * sqq - sq * sq),
        b = (sx - a * sq) / sh;
      if (a !== 0) {
        const z2 = Math.min(qmax, Math.max(0, Math.round(-b / a)));
        if (z2 !== z) {
          const f2 = fitScale(sx, sxx, sq, sqq, sxq, sh, z2);
          if (f2.err < f.err) f = f2;
        }
      }
    }
    if (f.err < best.err && f.s !== 0) {
      best = f;
      q.set(qt.subarray(0, n));
    }
  };
  if (symmetric) {
    const m = -lo > hi ? lo : hi; // the extreme, mapped to the far end (-mid) or the near end (mid-1)
    for (const r of RATIOS) {
      trial((m * r) / -mid, mid);
      trial((m * r) / (mid - 1), mid);
    }
  } else {
    for (const a of ASYM_RATIOS) {
      for (const b of ASYM_RATIOS) {
        const l = lo * a,
          hh = hi * b,
          s = (hh - l) / qmax;
        trial(s, Math.min(qmax, Math.max(0, Math.round(-l / s))));
      }
    }
  }
  if (h) {
    // Weighted: grids that put the dominant element exactly on a level (code c), within the range
    // that does not clip the block by more than half.
    const v = x[heavy]!,
      span = symmetric ? Math.max(-lo, hi) / (mid - 1) : (hi - lo) / qmax;
    for (let c = 1; c <= qmax; c++) {
      const s = Math.abs(v) / c;
      if (s < span * 0.5 || s > span * 1.5) continue;
      if (symmetric) {
        trial(s, mid);
        trial(-s, mid);
      } // both orientations of the -8..7 grid
      else trial(s, Math.min(qmax, Math.max(0, Math.round(-lo / s))));
    }
  }
  for (let it = 0; it < REFINE_ITERS; it++) {
    const before = best.err;
    trial(best.s, best.z);
    if (!(best.err < before * (1 - 1e-9))) break;
  }
  return best;
}

/** Per-input-channel weights for the search: the channels' mean squared activation over the rows,
 * floored at 1% of the mean so unseen channels still count. */
export function channelEnergy(calib: CalibrationData, K: number): Float64Array {
  if (calib.x.length !== calib.rows * K)
    throw new RangeError(`calibration holds ${calib.x.length} values, expected rows*K = ${calib.rows}*${K}`);
  const h = new Float64Array(K);
  for (let r = 0, o = 0; r < calib.rows; r++) for (let k = 0; k < K; k++, o++) h[k]! += calib.x[o]! * calib.x[o]!;
  let sum = 0;
  for (let k = 0; k < K; k++) sum += h[k]! /= calib.rows;
  const floor = (0.01 * sum) / K || 1;
  for (let k = 0; k < K; k++) h[k]! += floor;
  return h;
}

/** `energy`: per-input-channel error weights (see channelEnergy); plain weight MSE without. The
 * inner loop runs in WebAssembly SIMD (simd-search.ts), four columns at a time. */
export function mseSearchQuantize(w: Float32Array, K: number, N: number, p: QuantParams, energy?: Float64Array): QuantizedWeight {
  checkParams(K, N, p, w);
  if (!searchSimdAvailable()) return mseSearchReference(w, K, N, p, energy);
  const bs = p.blockSize,
    kBlocks = kBlocksOf(K, bs);
  const q: QuantizedWeight = {
    K,
    N,
    bits: p.bits,
    blockSize: bs,
    kBlocks,
    symmetric: p.symmetric,
    codes: new Uint8Array(N * kBlocks * bs),
    scales: new Float32Array(N * kBlocks),
    zeroPoints: p.symmetric ? undefined : new Uint8Array(N * kBlocks),
  };
  const { s, r } = blockSearcher();
  s.load(w, K, N, energy);
  for (let b = 0; b < kBlocks; b++) searchBlockRow(s, r, q, b, b * bs, !!energy);
  return q;
}

/** The search block by block in plain JavaScript (float64): the reference, and the path without WebAssembly SIMD. */
export function mseSearchReference(w: Float32Array, K: number, N: number, p: QuantParams, energy?: Float64Array): QuantizedWeight {
  checkParams(K, N, p, w);
  const bs = p.blockSize,
    kBlocks = kBlocksOf(K, bs),
    Kp = kBlocks * bs;
  const codes = new Uint8Array(N * Kp),
    scales = new Float32Array(N * kBlocks);
  const zeroPoints = p.symmetric ? undefined : new Uint8Array(N * kBlocks);
  const x = new Float64Array(bs),
    q = new Int32Array(bs),
    qt = new Int32Array(bs);
  for (let b = 0; b < kBlocks; b++) {
    const k0 = b * bs,
      len = Math.min(K, k0 + bs) - k0;
    const h = energy?.subarray(k0, k0 + len);
    for (let n = 0; n < N; n++) {
      for (let i = 0, j = k0 * N + n; i < len; i++, j += N) x[i] = w[j]!;
      const f = searchBlock(x, len, p.bits, p.symmetric, q, qt, h);
      scales[n * kBlocks + b] = f.s;
      if (zeroPoints) zeroPoints[n * kBlocks + b] = f.z;
      const o = n * Kp + k0;
      for (let i = 0; i < len; i++) codes[o + i] = q[i]!;
      codes.fill(f.z, o + len, o + bs);
    }
  }
  return { K, N, bits: p.bits, blockSize: bs, kBlocks, symmetric: p.symmetric, codes, scales, zeroPoints };
}

export const mseSearch: QuantMethod = {
  name: 'mse-search',
  description:
    'per-block search over clip ratios with least-squares scale refit and integer zero points; minimises weight MSE, weighted per input channel by activation energy when statistics are given (calibration rows, or data-free norm-scale estimates)',
  needsCalibration: false,
  usesChannelScale: true,
  quantize: (w, K, N, p, calib) => mseSearchQuantize(w, K, N, p, calib && calib.rows > 0 ? channelEnergy(calib, K) : undefined),
};
