// Data-free scale search: per block, try a grid of scales (clip ratios of the RTN range, both
// orientations of the symmetric grid, whose levels -8..7 are not symmetric), refit each by least squares for the codes it
// rounds to, keep the one with the least reconstruction error, then alternate rounding and refit
// (HQQ-style, but with INTEGER zero points so WebGPU / NPU runtimes accept the result). The RTN grid
// is one of the candidates and a refit never increases the error, so the result is never worse
// than RTN's error for the same block (up to float32 rounding of the stored scale).
import { kBlocksOf, type QuantMethod, type QuantParams, type QuantizedWeight } from '../types.js';
import { checkParams } from './rtn.js';

/** Clip ratios of the block range tried: the symmetric grid has one free end, the asymmetric two
 * (so a coarser list: the affine refit and the alternation recover the rest, within 0.2% here). */
const RATIOS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];
const ASYM_RATIOS = [1, 0.9, 0.8];
const REFINE_ITERS = 3;

export interface Fit { err: number; s: number; z: number }

/** Least-squares scale for fixed codes q and integer zero z; err = ||x - s(q-z)||^2. */
function fitScale(sx: number, sxx: number, sq: number, sqq: number, sxq: number, n: number, z: number): Fit {
  const sxd = sxq - z * sx, sdd = sqq - 2 * z * sq + n * z * z;
  if (sdd <= 0) return { err: sxx, s: 0, z };
  const s = sxd / sdd;
  return { err: Math.max(0, sxx - s * sxd), s, z };
}

/**
 * Best (scale, zero point) for the block x[0..n). Symmetric: zero fixed at `mid`, codes in [0, qmax].
 * Returns codes written into q.
 */
export function searchBlock(x: Float64Array, n: number, bits: 4 | 8, symmetric: boolean, q: Int32Array, qt: Int32Array): Fit {
  const qmax = (1 << bits) - 1, mid = 1 << (bits - 1);
  let lo = 0, hi = 0, sx = 0, sxx = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    sx += v; sxx += v * v;
  }
  if (lo === 0 && hi === 0) {
    q.fill(symmetric ? mid : 0, 0, n);
    return { err: 0, s: 0, z: symmetric ? mid : 0 };
  }
  let best: Fit = { err: Infinity, s: 0, z: 0 };
  const trial = (s: number, z: number): void => {
    const inv = 1 / s;
    let sq = 0, sqq = 0, sxq = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i]!;
      let c = Math.round(v * inv) + z;
      c = c < 0 ? 0 : c > qmax ? qmax : c;
      qt[i] = c;
      sq += c; sqq += c * c; sxq += v * c;
    }
    let f = fitScale(sx, sxx, sq, sqq, sxq, n, z);
    if (!symmetric && sqq * n - sq * sq > 0) {
      // Free affine fit w ~ a*q + b, then the nearest integer zero point.
      const a = (n * sxq - sx * sq) / (n * sqq - sq * sq), b = (sx - a * sq) / n;
      if (a !== 0) {
        const z2 = Math.min(qmax, Math.max(0, Math.round(-b / a)));
        if (z2 !== z) {
          const f2 = fitScale(sx, sxx, sq, sqq, sxq, n, z2);
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
        const l = lo * a, h = hi * b, s = (h - l) / qmax;
        trial(s, Math.min(qmax, Math.max(0, Math.round(-l / s))));
      }
    }
  }
  for (let it = 0; it < REFINE_ITERS; it++) {
    const before = best.err;
    trial(best.s, best.z);
    if (!(best.err < before * (1 - 1e-9))) break;
  }
  return best;
}

export function mseSearchQuantize(w: Float32Array, K: number, N: number, p: QuantParams): QuantizedWeight {
  checkParams(K, N, p, w);
  const bs = p.blockSize, kBlocks = kBlocksOf(K, bs), Kp = kBlocks * bs;
  const codes = new Uint8Array(N * Kp), scales = new Float32Array(N * kBlocks);
  const zeroPoints = p.symmetric ? undefined : new Uint8Array(N * kBlocks);
  const x = new Float64Array(bs), q = new Int32Array(bs), qt = new Int32Array(bs);
  for (let b = 0; b < kBlocks; b++) {
    const k0 = b * bs, len = Math.min(K, k0 + bs) - k0;
    for (let n = 0; n < N; n++) {
      for (let i = 0, j = k0 * N + n; i < len; i++, j += N) x[i] = w[j]!;
      const f = searchBlock(x, len, p.bits, p.symmetric, q, qt);
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
  description: 'data-free per-block search over clip ratios with least-squares scale refit and integer zero points (minimises weight reconstruction MSE)',
  needsCalibration: false,
  quantize: (w, K, N, p) => mseSearchQuantize(w, K, N, p),
};
