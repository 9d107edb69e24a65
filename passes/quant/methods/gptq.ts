// GPTQ (Frantar et al., 2022; reference implementation IST-DASLab/gptq) for block-wise weights:
// quantize W [K, N] one input row k at a time and push each row's rounding error onto the rows
// not yet quantized, weighted by the inverse Hessian of the layer's output error,
// H = 2/rows X^T X + damp I. Group parameters are taken per block of `blockSize` rows (groupsize =
// blockSize, static groups, no act-order: g_idx is rejected by WebGPU) from the already-updated
// weights, so the codes fit the MatMulNBits layout directly. Rows are processed in lazy batches
// so the trailing update is one pass over the remaining rows per batch.
import { kBlocksOf, type CalibrationData, type QuantMethod, type QuantParams, type QuantizedWeight } from '../types.js';
import { checkParams } from './rtn.js';
import { searchBlock } from './mse-search.js';

export interface GptqOptions {
  /** Dampening as a fraction of the mean Hessian diagonal (GPTQ's percdamp). Default 0.01 + K/rows:
   * GPTQ's 0.01 assumes rows >> K (128 x 2048 tokens); with a few hundred rows per weight the sample
   * Hessian is noisy and undamped feedback fits that noise (held-out error above RTN's). */
  percdamp?: number;
}

/** H = 2/rows X^T X as a dense symmetric K x K matrix. */
export function hessian(c: CalibrationData, K: number): Float64Array {
  const { x, rows } = c;
  if (x.length !== rows * K) throw new RangeError(`calibration holds ${x.length} values, expected rows*K = ${rows}*${K}`);
  const H = new Float64Array(K * K);
  const row = new Float64Array(K);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < K; i++) row[i] = x[r * K + i]!;
    for (let i = 0; i < K; i++) {
      const xi = row[i]!;
      if (xi === 0) continue;
      const o = i * K;
      for (let j = i; j < K; j++) H[o + j]! += xi * row[j]!;
    }
  }
  const f = 2 / Math.max(1, rows);
  for (let i = 0; i < K; i++) {
    for (let j = i; j < K; j++) {
      const v = H[i * K + j]! * f;
      H[i * K + j] = v;
      H[j * K + i] = v;
    }
  }
  return H;
}

/** In-place lower Cholesky factor (row-major, lower triangle); false when not positive definite. */
function cholesky(A: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    let d = A[j * n + j]!;
    for (let k = 0; k < j; k++) d -= A[j * n + k]! * A[j * n + k]!;
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    A[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j]!;
      const oi = i * n, oj = j * n;
      for (let k = 0; k < j; k++) s -= A[oi + k]! * A[oj + k]!;
      A[oi + j] = s / ljj;
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) A[i * n + j] = 0;
  return true;
}

/** U, the upper Cholesky factor of H^-1 (what GPTQ iterates on), via H = L L^T, H^-1 = L^-T L^-1. */
function inverseCholeskyUpper(H: Float64Array, n: number): Float64Array | undefined {
  const L = H.slice();
  if (!cholesky(L, n)) return undefined;
  // Linv = L^-1 (lower), by forward substitution column by column.
  const Li = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    Li[j * n + j] = 1 / L[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += L[i * n + k]! * Li[k * n + j]!;
      Li[i * n + j] = -s / L[i * n + i]!;
    }
  }
  // Hinv = Li^T Li
  const Hi = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const ok = k * n;
    for (let i = 0; i <= k; i++) {
      const a = Li[ok + i]!;
      if (a === 0) continue;
      const oi = i * n;
      for (let j = i; j <= k; j++) Hi[oi + j]! += a * Li[ok + j]!;
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) Hi[j * n + i] = Hi[i * n + j]!;
  if (!cholesky(Hi, n)) return undefined;
  // Upper factor U = L'^T of Hinv = L' L'^T.
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) U[j * n + i] = Hi[i * n + j]!;
  return U;
}

export function gptqQuantize(w: Float32Array, K: number, N: number, p: QuantParams, calib: CalibrationData | undefined, opts: GptqOptions = {}): QuantizedWeight {
  checkParams(K, N, p, w);
  if (!calib || calib.rows <= 0) throw new RangeError('gptq needs calibration activations for this weight');
  const H = hessian(calib, K);
  let mean = 0;
  for (let i = 0; i < K; i++) {
    // Inputs never seen in calibration: no feedback from or to them (their rows get plain rounding).
    if (H[i * K + i] === 0) H[i * K + i] = 1;
    mean += H[i * K + i]!;
  }
  mean /= K;
  let U: Float64Array | undefined;
  for (let damp = opts.percdamp ?? 0.01 + K / calib.rows, tries = 0; !U; damp *= 10, tries++) {
    if (tries > 6) throw new RangeError('gptq: Hessian stays singular after dampening');
    const Hd = H.slice();
    for (let i = 0; i < K; i++) Hd[i * K + i]! += damp * mean;
    U = inverseCholeskyUpper(Hd, K);
  }

  const bs = p.blockSize, kBlocks = kBlocksOf(K, bs), Kp = kBlocks * bs;
  const qmax = (1 << p.bits) - 1;
  const codes = new Uint8Array(N * Kp), scales = new Float32Array(N * kBlocks);
  const zeroPoints = p.symmetric ? undefined : new Uint8Array(N * kBlocks);
  const W = Float64Array.from(w);
  const batch = Math.max(bs, 128);
  const E = new Float64Array(batch * N);
  const gx = new Float64Array(bs), gq = new Int32Array(bs), gqt = new Int32Array(bs);
  const gs = new Float64Array(N), gz = new Float64Array(N);

  for (let i1 = 0; i1 < K; i1 += batch) {
    const i2 = Math.min(K, i1 + batch);
    for (let k = i1; k < i2; k++) {
      if (k % bs === 0) {
        // Group parameters from the error-updated rows of this block (all inside the batch).
        const b = k / bs, len = Math.min(K, k + bs) - k;
        for (let n = 0; n < N; n++) {
          for (let i = 0; i < len; i++) gx[i] = W[(k + i) * N + n]!;
          const f = searchBlock(gx, len, p.bits, p.symmetric, gq, gqt);
          const s = Math.fround(f.s);
          scales[n * kBlocks + b] = s;
          if (zeroPoints) zeroPoints[n * kBlocks + b] = f.z;
          gs[n] = s; gz[n] = f.z;
          codes.fill(f.z, n * Kp + k + len, n * Kp + k + bs);
        }
      }
      const d = U[k * K + k]!, ok = k * N, oe = (k - i1) * N;
      for (let n = 0; n < N; n++) {
        const v = W[ok + n]!, s = gs[n]!, z = gz[n]!;
        let c = s !== 0 ? Math.round(v / s) + z : z;
        c = c < 0 ? 0 : c > qmax ? qmax : c;
        codes[n * Kp + k] = c;
        E[oe + n] = (v - (c - z) * s) / d;
      }
      for (let j = k + 1; j < i2; j++) {
        const u = U[k * K + j]!;
        if (u === 0) continue;
        const oj = j * N;
        for (let n = 0; n < N; n++) W[oj + n]! -= u * E[oe + n]!;
      }
    }
    for (let j = i2; j < K; j++) {
      const oj = j * N;
      for (let k = i1; k < i2; k++) {
        const u = U[k * K + j]!;
        if (u === 0) continue;
        const oe = (k - i1) * N;
        for (let n = 0; n < N; n++) W[oj + n]! -= u * E[oe + n]!;
      }
    }
  }
  return { K, N, bits: p.bits, blockSize: bs, kBlocks, symmetric: p.symmetric, codes, scales, zeroPoints };
}

export const gptq: QuantMethod = {
  name: 'gptq',
  description: 'GPTQ: inverse-Hessian error feedback from calibration activations, static groups = blocks, MSE-searched group scales, integer zero points',
  needsCalibration: true,
  quantize: (w, K, N, p, calib) => gptqQuantize(w, K, N, p, calib),
};
