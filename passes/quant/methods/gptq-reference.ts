// The first GPTQ, in plain JavaScript (float64, K^2 N + K^3 per weight), kept as the reference the
// WebAssembly SIMD version (gptq.ts) is tested and benchmarked against.
// GPTQ (Frantar et al., 2022; reference implementation IST-DASLab/gptq) for block-wise weights:
// quantize W [K, N] one input row k at a time and push each row's rounding error onto the rows
// not yet quantized, weighted by the inverse Hessian of the layer's output error,
// H = 2/rows X^T X + damp I (damp = percdamp 0.01 of the mean diagonal). Groups are the format's
// blocks (groupsize = blockSize); their parameters come from the block search of mse-search with the
// error weighted by diag(H), the inputs' activation energy, so blocks holding an outlier channel's
// row fit that row; with act-order (default) rows go in decreasing diag(H) order and the group parameters
// are static (from the original weights), so the codes keep the plain MatMulNBits layout (no g_idx,
// which WebGPU rejects). Off-diagonal H entries are shrunk by rows/(rows+K): calibration caps rows
// per weight, and sampled correlations of a few hundred rows are partly noise. Rows are processed
// in lazy batches so the trailing update is one pass over the remaining rows per batch.
// H and its factors depend on the calibration rows only: a GptqPlan makes them once per weight and
// the quantize pass runs its column slices against it (candidate chosen over the whole weight), so
// the bytes do not depend on the slicing or the thread count.
import { dequantize, kBlocksOf, type CalibrationData, type QuantParams, type QuantizedWeight } from '../types.js';
import { checkParams } from './rtn.js';
import { mseSearchReference as mseSearchQuantize, searchBlock } from './mse-search.js';

export interface GptqOptions {
  /** Dampening as a fraction of the mean Hessian diagonal (GPTQ's percdamp, default 0.01). */
  percdamp?: number;
  /** Quantize rows in decreasing Hessian-diagonal order (act-order) with static groups: group
   * parameters come from the original weights, so codes stay in the plain layout (no g_idx). */
  actOrder?: boolean;
}

/** H = 2/rows X^T X as a dense symmetric K x K matrix. */
export function hessian(c: CalibrationData, K: number): Float64Array {
  const { x, rows } = c;
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
      const oi = i * n,
        oj = j * n;
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
  // T = (L^-1)^T, so that column j of L^-1 (what forward substitution walks) is the contiguous row j.
  const T = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const oj = j * n;
    T[oj + j] = 1 / L[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      const oi = i * n;
      for (let k = j; k < i; k++) s += L[oi + k]! * T[oj + k]!;
      T[oj + i] = -s / L[oi + i]!;
    }
  }
  // H^-1 = L^-T L^-1: entry (i, j) is the dot product of rows i and j of T over k >= max(i, j).
  const Hi = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const oi = i * n;
    for (let j = i; j < n; j++) {
      const oj = j * n;
      let s = 0;
      for (let k = j; k < n; k++) s += T[oi + k]! * T[oj + k]!;
      Hi[oi + j] = s;
      Hi[oj + i] = s;
    }
  }
  if (!cholesky(Hi, n)) return undefined;
  // Upper factor U = L'^T of Hinv = L' L'^T.
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) U[j * n + i] = Hi[i * n + j]!;
  return U;
}

/** Per output column n: sum over rows of (x (W - Wq))_n^2. Columns are independent, so a weight's
 * error is the same whichever column slices it is computed in. */
function columnErrors(x: Float32Array, rows: number, w: Float32Array, q: QuantizedWeight, K: number, N: number): Float64Array {
  const d = dequantize(q);
  for (let i = 0; i < d.length; i++) d[i] = w[i]! - d[i]!;
  const y = new Float64Array(N),
    e = new Float64Array(N);
  for (let r = 0; r < rows; r++) {
    y.fill(0);
    for (let k = 0; k < K; k++) {
      const xv = x[r * K + k]!;
      if (xv === 0) continue;
      for (let n = 0, o = k * N; n < N; n++) y[n]! += xv * d[o + n]!;
    }
    for (let n = 0; n < N; n++) e[n]! += y[n]! * y[n]!;
  }
  return e;
}

/** What gptqCore needs from a Hessian: the row order, the group-search weights and (with error
 * feedback) U. Depends on the calibration rows only, so one serves every column slice of a weight. */
export interface GptqFactors {
  actOrder: boolean;
  perm: Int32Array;
  hw: Float64Array;
  U?: Float64Array;
}

/**
 * A weight's GPTQ setup, made once from its calibration rows and shared by all its column slices
 * (the arrays sit in SharedArrayBuffers, so worker threads get them without a copy). With at least
 * 64 rows every 4th row is held out: `fit` is from the others, and `pick` says which candidate won
 * on the held-out rows over the whole weight (0 GPTQ, 1 weighted search without feedback,
 * 2 mse-search); `full` is from all rows, for the candidate picked.
 */
export interface GptqPlan {
  K: number;
  held?: CalibrationData;
  fit?: GptqFactors;
  full?: GptqFactors;
  pick: number;
}

function checkCalib(calib: CalibrationData | undefined, K: number): asserts calib is CalibrationData {
  if (!calib || calib.rows <= 0) throw new RangeError('gptq needs calibration activations for this weight');
  if (calib.x.length !== calib.rows * K)
    throw new RangeError(`calibration holds ${calib.x.length} values, expected rows*K = ${calib.rows}*${K}`);
}

/** Step 1: the held-out split and its factors; without validation (or under 64 rows), `full` for GPTQ. */
export function gptqPlan(calib: CalibrationData | undefined, K: number, opts: GptqOptions & { validate?: boolean } = {}): GptqPlan {
  checkCalib(calib, K);
  if (!(opts.validate ?? true) || calib.rows < 64) return { K, full: gptqFactors(hessian(calib, K), K, calib.rows, opts, true), pick: 0 };
  const fit = new Float32Array(calib.rows * K),
    held = new Float32Array(Math.ceil(calib.rows / 4) * K);
  let nf = 0,
    nh = 0;
  for (let r = 0; r < calib.rows; r++) {
    const row = calib.x.subarray(r * K, (r + 1) * K);
    if (r % 4 === 3) held.set(row, nh++ * K);
    else fit.set(row, nf++ * K);
  }
  const shared = new Float32Array(new SharedArrayBuffer(nh * K * 4));
  shared.set(held.subarray(0, nh * K));
  return {
    K,
    held: { x: shared, rows: nh },
    fit: gptqFactors(hessian({ x: fit.subarray(0, nf * K), rows: nf }, K), K, nf, opts, true),
    pick: 0,
  };
}

/** Step 2, per column slice w [K, N]: held-out errors per column of the three candidates, [3][N]. */
export function gptqScores(w: Float32Array, K: number, N: number, p: QuantParams, plan: GptqPlan): Float64Array[] {
  checkParams(K, N, p, w);
  const { held, fit } = plan;
  if (!held || !fit) throw new Error('gptq plan has no held-out rows to score on');
  return [gptqCore(w, K, N, p, fit, true), gptqCore(w, K, N, p, fit, false), mseSearchQuantize(w, K, N, p)].map((q) =>
    columnErrors(held.x, held.rows, w, q, K, N),
  );
}

/** Step 3: the winner, from the whole weight's per-column errors (summed in column order, so the
 * choice does not depend on slicing), and its factors from all rows. */
export function gptqChoose(plan: GptqPlan, errs: Float64Array[], calib: CalibrationData, opts: GptqOptions = {}): void {
  const totals = errs.map((e) => e.reduce((s, v) => s + v, 0));
  plan.pick = totals.indexOf(Math.min(...totals));
  if (plan.pick < 2) plan.full = gptqFactors(hessian(calib, plan.K), plan.K, calib.rows, opts, plan.pick === 0);
}

/** Step 4, per column slice: the picked candidate's codes. */
export function gptqApply(w: Float32Array, K: number, N: number, p: QuantParams, plan: GptqPlan): QuantizedWeight {
  checkParams(K, N, p, w);
  if (plan.pick === 2) return mseSearchQuantize(w, K, N, p);
  if (!plan.full) throw new Error('gptq plan has no factors: choose a candidate first');
  return gptqCore(w, K, N, p, plan.full, plan.pick === 0);
}

/**
 * GPTQ, checked on held-out calibration rows: every 4th row is held out, and three candidates fitted
 * on the others are compared there: GPTQ, the same activation-weighted group search without error
 * feedback, and the data-free search (mse-search). Error feedback only pays when the activations
 * are correlated and the rows many enough to estimate that; otherwise it fits sampling noise. The
 * winner is then computed on all rows. The whole weight at once; the quantize pass runs the same
 * steps over column slices (same bytes).
 */
export function gptqReferenceQuantize(
  w: Float32Array,
  K: number,
  N: number,
  p: QuantParams,
  calib: CalibrationData | undefined,
  opts: GptqOptions & { validate?: boolean } = {},
): QuantizedWeight {
  checkParams(K, N, p, w);
  const plan = gptqPlan(calib, K, opts);
  if (plan.held) gptqChoose(plan, gptqScores(w, K, N, p, plan), calib!, opts);
  return gptqApply(w, K, N, p, plan);
}

const shared64 = (n: number) => new Float64Array(new SharedArrayBuffer(n * 8));

/** Factors of H0 (from `rows` activation rows); U only with `feedback`. */
function gptqFactors(H0: Float64Array, K: number, rows: number, opts: GptqOptions, feedback: boolean): GptqFactors {
  const actOrder = opts.actOrder ?? true;
  const order = Array.from({ length: K }, (_, i) => i);
  if (actOrder) order.sort((a, b) => H0[b * K + b]! - H0[a * K + a]! || a - b);
  const perm = new Int32Array(new SharedArrayBuffer(K * 4));
  perm.set(order);
  const H = new Float64Array(K * K);
  for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) H[i * K + j] = H0[perm[i]! * K + perm[j]!]!;
  let mean = 0;
  for (let i = 0; i < K; i++) {
    // Inputs never seen in calibration: no feedback from or to them (their rows get plain rounding).
    if (H[i * K + i] === 0) H[i * K + i] = 1;
    mean += H[i * K + i]!;
  }
  mean /= K;
  const percdamp = opts.percdamp ?? 0.01;
  // Group search weights: the rows' activation energy, damped like H so unseen inputs still count.
  const hw = shared64(K);
  for (let k = 0; k < K; k++) hw[k] = H0[k * K + k]! + percdamp * mean;
  if (!feedback) return { actOrder, perm, hw };
  // Shrink the sampled off-diagonal correlations toward 0 by rows/(rows+K): with few rows per input
  // they are mostly sampling noise, and feedback through noise raises held-out error.
  const shrink = rows / (rows + K);
  for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) if (i !== j) H[i * K + j]! *= shrink;
  let U: Float64Array | undefined;
  for (let damp = percdamp, tries = 0; !U; damp *= 10, tries++) {
    if (tries > 6) throw new RangeError('gptq: Hessian stays singular after dampening');
    const Hd = H.slice();
    for (let i = 0; i < K; i++) Hd[i * K + i]! += damp * mean;
    U = inverseCholeskyUpper(Hd, K);
  }
  const Us = shared64(K * K);
  Us.set(U);
  return { actOrder, perm, hw, U: Us };
}

/** Block codes with group parameters searched under the activation weighting f.hw; with `feedback`,
 * GPTQ's inverse-Hessian error propagation between rows (f.U). */
function gptqCore(w: Float32Array, K: number, N: number, p: QuantParams, f: GptqFactors, feedback: boolean): QuantizedWeight {
  const { perm, hw } = f;
  const U = feedback ? f.U : undefined;
  if (feedback && !U) throw new Error('gptq factors lack U for error feedback');
  const actOrder = f.actOrder;
  const bs = p.blockSize,
    kBlocks = kBlocksOf(K, bs),
    Kp = kBlocks * bs;
  const qmax = (1 << p.bits) - 1;
  const codes = new Uint8Array(N * Kp),
    scales = new Float32Array(N * kBlocks);
  const zeroPoints = p.symmetric ? undefined : new Uint8Array(N * kBlocks);
  // Group parameters [kBlocks][N]: static (original weights) for act-order, else set as each block starts.
  const gs = new Float64Array(kBlocks * N),
    gz = new Float64Array(kBlocks * N);
  const gx = new Float64Array(bs),
    gh = new Float64Array(bs),
    gq = new Int32Array(bs),
    gqt = new Int32Array(bs);
  const groupParams = (b: number, row: (k: number, n: number) => number): void => {
    const k0 = b * bs,
      len = Math.min(K, k0 + bs) - k0;
    for (let i = 0; i < len; i++) gh[i] = hw[k0 + i]!;
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < len; i++) gx[i] = row(k0 + i, n);
      const f = searchBlock(gx, len, p.bits, p.symmetric, gq, gqt, gh);
      const sc = Math.fround(f.s);
      scales[n * kBlocks + b] = sc;
      if (zeroPoints) zeroPoints[n * kBlocks + b] = f.z;
      gs[b * N + n] = sc;
      gz[b * N + n] = f.z;
      codes.fill(f.z, n * Kp + k0 + len, n * Kp + k0 + bs);
    }
  };
  if (actOrder) for (let b = 0; b < kBlocks; b++) groupParams(b, (k, n) => w[k * N + n]!);
  const W = new Float64Array(K * N);
  for (let i = 0; i < K; i++) for (let n = 0; n < N; n++) W[i * N + n] = w[perm[i]! * N + n]!;
  const batch = Math.max(bs, 128);
  const E = new Float64Array(batch * N);

  for (let i1 = 0; i1 < K; i1 += batch) {
    const i2 = Math.min(K, i1 + batch);
    for (let i = i1; i < i2; i++) {
      const k = perm[i]!,
        b = Math.floor(k / bs);
      // In plain order a block's rows all sit in this batch and have their updates from earlier rows.
      if (!actOrder && k % bs === 0) groupParams(b, (kk, n) => W[kk * N + n]!);
      if (!U) {
        // no feedback: static groups, plain rounding
        for (let n = 0; n < N; n++) {
          const sc = gs[b * N + n]!,
            z = gz[b * N + n]!;
          const c = sc !== 0 ? Math.round(W[i * N + n]! / sc) + z : z;
          codes[n * Kp + k] = c < 0 ? 0 : c > qmax ? qmax : c;
        }
        continue;
      }
      const d = U[i * K + i]!,
        oi = i * N,
        oe = (i - i1) * N,
        og = b * N;
      for (let n = 0; n < N; n++) {
        const v = W[oi + n]!,
          sc = gs[og + n]!,
          z = gz[og + n]!;
        let c = sc !== 0 ? Math.round(v / sc) + z : z;
        c = c < 0 ? 0 : c > qmax ? qmax : c;
        codes[n * Kp + k] = c;
        E[oe + n] = (v - (c - z) * sc) / d;
      }
      for (let j = i + 1; j < i2; j++) {
        const u = U[i * K + j]!;
        if (u === 0) continue;
        const oj = j * N;
        for (let n = 0; n < N; n++) W[oj + n]! -= u * E[oe + n]!;
      }
    }
    for (let j = i2; U && j < K; j++) {
      const oj = j * N;
      for (let i = i1; i < i2; i++) {
        const u = U[i * K + j]!;
        if (u === 0) continue;
        const oe = (i - i1) * N;
        for (let n = 0; n < N; n++) W[oj + n]! -= u * E[oe + n]!;
      }
    }
  }
  return { K, N, bits: p.bits, blockSize: bs, kBlocks, symmetric: p.symmetric, codes, scales, zeroPoints };
}
