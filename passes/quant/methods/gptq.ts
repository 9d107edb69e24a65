// GPTQ (Frantar et al., 2022) for block-wise weights, its linear algebra in WebAssembly SIMD
// (simd-linalg.ts). W [K, N] is quantized one input row k at a time, each row's rounding error
// pushed onto the rows not yet quantized through the Hessian of the layer's output error,
// H = 2/rows X^T X + damp I (damp = percdamp 0.01 of the mean diagonal). Groups are the format's
// blocks; their parameters come from mse-search's block search with the error weighted by diag(H),
// and with act-order (default) rows go in decreasing diag(H) order with static groups (parameters
// from the original weights), so the codes keep the plain MatMulNBits layout (no g_idx, which WebGPU
// rejects). Off-diagonal H entries are shrunk by rows/(rows+K): calibration caps rows per weight, and
// correlations sampled from a few hundred rows are partly noise.
// The error feedback is GPTQ's in its LDL form (LDLQ, Chee et al. 2023, shown there to equal GPTQ):
// with H = (I + U) D (I + U)^T, U strictly upper triangular in processing order, row k is rounded
// after adding sum_{j<k} (W_j - Q_j) U[j][k], W_j the original row. U comes from one Cholesky
// factorization (of H with its order reversed) instead of GPTQ's factorization, inverse and second
// factorization; with fewer rows than K / 3.5 (a 3B decoder: 512 rows, K 3072 or 8192) from H as
// diagonal + low rank instead (gptq-lowrank.ts: K^2 r / 2 multiply-adds, not K^3 / 6). Rows go in lazy
// batches of 128, each in sub-batches of 16: a row takes its sub-batch's earlier errors in one product
// (left-looking), then a sub-batch's errors go onto the rest of its batch and a batch's onto every
// later row, each as one SIMD product (GPTQ's lazy batch, applied at two levels).
// Every 4th calibration row is held out (with at least 64 rows) to pick, over the whole weight, between
// GPTQ, the same weighted group search without feedback, and mse-search: feedback only pays when the
// activations are correlated and the rows many enough to estimate that. The check scores every S-th
// output column (S = floor(N / 512): 512 to 1023 columns, all of them below N = 1024): the choice is
// one per weight, and its cost stays that of a 512-column weight however wide the weight is.
// Factors depend on the calibration rows only; weights reading the same activation (q/k/v, gate/up)
// share them.
// Columns are independent given the factors, and each column's arithmetic is the same whatever the
// slice it is in: the bytes do not depend on slicing or thread count.
import {
  dequantize,
  kBlocksOf,
  type CalibrationData,
  type QuantExec,
  type QuantMethod,
  type QuantParams,
  type QuantizedWeight,
} from '../types.js';
import { checkParams } from './rtn.js';
import { mseSearchQuantize } from './mse-search.js';
import { blockSearcher, releaseBlockSearcher, searchBlockRow } from './simd-search.js';
import { Linalg, roundUp, rowStride } from './simd-linalg.js';
import { STRIP, lowRankPays, lowRankU, uIndex, uLayout } from './gptq-lowrank.js';

export interface GptqOptions {
  /** Dampening as a fraction of the mean Hessian diagonal (GPTQ's percdamp, default 0.01). */
  percdamp?: number;
  /** Quantize rows in decreasing Hessian-diagonal order (act-order) with static groups (default true).
   * Without it each block's parameters come from its rows as the LDL feedback has them when the block
   * starts, which are not GPTQ's partial updates: codes then differ a little from the reference. */
  actOrder?: boolean;
  /** Hold out every 4th row to choose between GPTQ, no feedback and mse-search (default true). */
  validate?: boolean;
  /** Factor H densely or as diagonal + low rank (default: low rank when the rows are under K / 3.5). */
  factorization?: 'dense' | 'low-rank';
}

/** Rows of a lazy batch, and of the sub-batches inside it (GPTQ's lazy batch, applied twice). */
const BATCH = 128,
  SUB = 16;
/** Columns the held-out check scores per weight (at least; every column under 2x this). */
const SCORE_COLS = 512;

/** What the core needs from a Hessian: row order, group-search weights and, for feedback, U. */
export interface GptqFactors {
  actOrder: boolean;
  /** Processing position -> input row k. */
  perm: Int32Array;
  /** Per input row: activation energy (H's diagonal, damped), the group search's weights. */
  hw: Float64Array;
  /** U's strict upper triangle in processing order, in uLayout(Kq) (gptq-lowrank.ts), shared between threads. */
  U?: Float32Array;
  Kq: number;
  /** Identifies U for the per-thread copy in WebAssembly memory. */
  id: string;
}

/** A weight's setup: held-out rows and the factors fitted without them, or (no validation) full factors. */
export interface GptqPlan {
  K: number;
  held?: CalibrationData;
  fit?: GptqFactors;
  full?: GptqFactors;
  /** 0 GPTQ, 1 weighted search without feedback, 2 mse-search. */
  pick: number;
}

function checkCalib(calib: CalibrationData | undefined, K: number): asserts calib is CalibrationData {
  if (!calib || calib.rows <= 0) throw new RangeError('gptq needs calibration activations for this weight');
  if (calib.x.length !== calib.rows * K)
    throw new RangeError(`calibration holds ${calib.x.length} values, expected rows*K = ${calib.rows}*${K}`);
}

const sharedF64 = (n: number) => new Float64Array(new SharedArrayBuffer(n * 8));
const sharedF32 = (n: number) =>
  new Float32Array(typeof SharedArrayBuffer !== 'undefined' ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
let nextId = 0;
const idBase = `${process.pid}-${Math.random().toString(36).slice(2)}`;

/** Order and group weights from H's diagonal, as the JS reference computes them (float64). */
function orderAndWeights(calib: CalibrationData, K: number, opts: GptqOptions) {
  const { x, rows } = calib;
  const diag = new Float64Array(K);
  for (let r = 0; r < rows; r++) for (let k = 0, o = r * K; k < K; k++) diag[k]! += x[o + k]! * x[o + k]!;
  const f = 2 / Math.max(1, rows);
  for (let k = 0; k < K; k++) diag[k]! *= f;
  const actOrder = opts.actOrder ?? true;
  const order = Array.from({ length: K }, (_, i) => i);
  if (actOrder) order.sort((a, b) => diag[b]! - diag[a]! || a - b);
  const perm = new Int32Array(new SharedArrayBuffer(K * 4));
  perm.set(order);
  let mean = 0;
  for (let i = 0; i < K; i++) mean += diag[perm[i]!]! === 0 ? 1 : diag[perm[i]!]!;
  mean /= K;
  const percdamp = opts.percdamp ?? 0.01;
  const hw = sharedF64(K);
  for (let k = 0; k < K; k++) hw[k] = diag[k]! + percdamp * mean;
  return { actOrder, perm, hw, mean, percdamp, f, diag };
}

/** Factors of the Hessian of `calib`'s rows; U only with `feedback`. */
export function gptqFactors(calib: CalibrationData, K: number, opts: GptqOptions, feedback: boolean): GptqFactors {
  checkCalib(calib, K);
  const { actOrder, perm, hw, mean, percdamp, f, diag } = orderAndWeights(calib, K, opts);
  const Kq = roundUp(K, 64),
    ld = rowStride(Kq),
    id = `${idBase}-${nextId++}`;
  if (!feedback) return { actOrder, perm, hw, Kq, id };
  const rows = calib.rows,
    KK = Kq * ld;
  // Memory (this thread's GPTQ memory, already touched: fresh pages cost more than the products):
  // X with its columns in reversed processing order [rows][ld], then H [Kq][ld].
  const hAt = rows * ld * 4,
    lin = scratch(hAt + KK * 4);
  const shrink = rows / (rows + K);
  const lowRank = opts.factorization ? opts.factorization === 'low-rank' : lowRankPays(rows, Kq);
  if (lowRank) {
    const U = lowRankFactor(calib, K, Kq, ld, perm, diag, { f, shrink, damp: percdamp * mean });
    if (U) return { actOrder, perm, hw, U, Kq, id };
  }
  for (let damp = percdamp, tries = 0; ; damp *= 10, tries++) {
    if (tries > 6) throw new RangeError('gptq: Hessian stays singular after dampening');
    // (a failed factorization, rare, is redone from X rather than from a copy of H kept every time)
    packReversed(lin.f32(), calib, K, Kq, ld, perm);
    lin.syrkUpper(0, rows, Kq, hAt, ld, ld);
    const H = lin.f32().subarray(hAt / 4, hAt / 4 + KK);
    // Scale, shrink the sampled off-diagonal correlations toward 0 by rows/(rows+K) (with few rows per
    // input they are mostly noise), and give inputs never seen (and the padding) a unit diagonal.
    for (let a = 0; a < Kq; a++) {
      const o = a * ld;
      for (let b = a + 1; b < Kq; b++) H[o + b] = H[o + b]! * f * shrink;
      H[o + a] = Math.fround(H[o + a]! * f || 1) + damp * mean;
    }
    if (lin.choleskyUpper(hAt, Kq, ld)) break;
  }
  const U = unitFactor(lin.f32().subarray(hAt / 4, hAt / 4 + KK), Kq, ld);
  return { actOrder, perm, hw, U, Kq, id };
}

/**
 * U for H = diag(d) + P^T P (gptq-lowrank.ts): P = X scaled by sqrt(f shrink) in processing order, d the
 * rest of H's diagonal (the unshrunk share and the damping; unit for unseen inputs and the padding).
 * Undefined on a pivot <= 0 (the dense path then retries with more damping).
 */
function lowRankFactor(
  calib: CalibrationData,
  K: number,
  Kq: number,
  ld: number,
  perm: Int32Array,
  diag: Float64Array,
  scale: { f: number; shrink: number; damp: number },
): Float32Array | undefined {
  const { rows, x: xs } = calib,
    { f, shrink, damp } = scale,
    rq = roundUp(rows, 16);
  const lin = scratch(rq * ld * 4),
    P = lin.f32(),
    sc = Math.sqrt(f * shrink);
  P.fill(0, 0, rq * ld);
  for (let r = 0; r < rows; r++) for (let j = 0, o = r * ld, ox = r * K; j < K; j++) P[o + j] = xs[ox + perm[j]!]! * sc;
  const d = new Float64Array(Kq).fill(1 + damp);
  for (let j = 0; j < K; j++) {
    const h = diag[perm[j]!]!;
    if (h !== 0) d[j] = h * (1 - shrink) + damp;
  }
  const U = sharedF32(uLayout(Kq).size);
  return lowRankU(lin, rows, Kq, ld, d, U) ? U : undefined;
}

/** X's columns in reversed processing order into x [rows][ld] (zero padding first), row by row. */
function packReversed(x: Float32Array, calib: CalibrationData, K: number, Kq: number, ld: number, perm: Int32Array): void {
  const src = new Int32Array(K);
  for (let a = Kq - K; a < Kq; a++) src[a - (Kq - K)] = perm[Kq - 1 - a]!;
  for (let r = 0; r < calib.rows; r++) {
    const o = r * ld + Kq - K,
      ox = r * K;
    x.fill(0, r * ld, o);
    for (let i = 0; i < K; i++) x[o + i] = calib.x[ox + src[i]!]!;
  }
}

/**
 * U from R (H reversed = R^T R, R upper): H = M M^T with M[j][k] = R[Kq-1-k][Kq-1-j] upper, and
 * U[j][k] = M[j][k] / M[k][k], for j < k; in 32 x 32 tiles (a transpose: reads and writes stay in cache).
 */
function unitFactor(R: Float32Array, Kq: number, ld: number): Float32Array {
  const L = uLayout(Kq),
    U = sharedF32(L.size),
    inv = new Float64Array(Kq),
    T = 32;
  for (let k = 0; k < Kq; k++) inv[k] = 1 / R[(Kq - 1 - k) * (ld + 1)]!;
  for (let j0 = 0; j0 < Kq; j0 += T)
    for (let k0 = j0; k0 < Kq; k0 += T)
      for (let j = j0; j < j0 + T; j++) {
        const b = Kq - 1 - j,
          o = uIndex(L, j, 0);
        for (let k = Math.max(k0, j + 1); k < k0 + T; k++) U[o + k] = R[(Kq - 1 - k) * ld + b]! * inv[k]!;
      }
  return U;
}

/** Held-out split (every 4th row) when validating with at least 64 rows, and the factors to score with. */
export function gptqPlan(calib: CalibrationData | undefined, K: number, opts: GptqOptions = {}): GptqPlan {
  checkCalib(calib, K);
  if (!(opts.validate ?? true) || calib.rows < 64) return { K, full: gptqFactors(calib, K, opts, true), pick: 0 };
  const { fit, held } = splitRows(calib, K);
  return { K, held, fit: gptqFactors(fit, K, opts, true), pick: 0 };
}

function splitRows(calib: CalibrationData, K: number): { fit: CalibrationData; held: CalibrationData } {
  const nh = Math.floor(calib.rows / 4),
    nf = calib.rows - nh;
  const fit = new Float32Array(nf * K),
    held = sharedF32(nh * K);
  let af = 0,
    ah = 0;
  for (let r = 0; r < calib.rows; r++) {
    const row = calib.x.subarray(r * K, (r + 1) * K);
    if (r % 4 === 3) held.set(row, ah++ * K);
    else fit.set(row, af++ * K);
  }
  return { fit: { x: fit, rows: nf }, held: { x: held, rows: nh } };
}

/** Per column slice w [K, N]: held-out errors per column of the three candidates, [3][N]. */
export function gptqScores(w: Float32Array, K: number, N: number, p: QuantParams, plan: GptqPlan): Float64Array[] {
  checkParams(K, N, p, w);
  const { held, fit } = plan;
  if (!held || !fit) throw new Error('gptq plan has no held-out rows to score on');
  // both fit candidates have the same static groups: searched once
  const g: Groups = { gs: new Float32Array(kBlocksOf(K, p.blockSize) * N), gz: new Int32Array(kBlocksOf(K, p.blockSize) * N) };
  const withFeedback = gptqCore(w, K, N, p, fit, true, g);
  return columnErrors(held, w, [withFeedback, gptqCore(w, K, N, p, fit, false, g, withFeedback), mseSearchQuantize(w, K, N, p)]);
}

/** Columns the held-out check scores: every stride-th of a weight's N, about SCORE_COLS of them. */
export const scoreStride = (N: number): number => Math.max(1, Math.floor(N / SCORE_COLS));

/**
 * The scored columns of slice w [K, ns] (columns n0.. of a weight of N) gathered into [K, count], and
 * where they go in the weight's list of scored columns; undefined when the slice has none.
 */
export function scoredColumns(
  w: Float32Array,
  K: number,
  N: number,
  n0: number,
  ns: number,
): { w: Float32Array; n: number; at: number } | undefined {
  const stride = scoreStride(N);
  if (stride === 1) return { w, n: ns, at: n0 };
  const at = Math.ceil(n0 / stride),
    n = Math.ceil((n0 + ns) / stride) - at;
  if (n <= 0) return undefined;
  const out = new Float32Array(K * n);
  for (let k = 0; k < K; k++) for (let j = 0, o = k * ns - n0; j < n; j++) out[k * n + j] = w[o + (at + j) * stride]!;
  return { w: out, n, at };
}

/** The winner from the whole weight's per-column errors (summed in column order: slicing-independent). */
export function gptqPick(errs: Float64Array[]): number {
  const totals = errs.map((e) => e.reduce((s, v) => s + v, 0));
  return totals.indexOf(Math.min(...totals));
}

/** Per column slice: the picked candidate's codes. */
export function gptqApply(w: Float32Array, K: number, N: number, p: QuantParams, plan: GptqPlan): QuantizedWeight {
  checkParams(K, N, p, w);
  if (plan.pick === 2) return mseSearchQuantize(w, K, N, p);
  if (!plan.full) throw new Error('gptq plan has no factors: choose a candidate first');
  return gptqCore(w, K, N, p, plan.full, plan.pick === 0);
}

/** GPTQ of a whole weight on the calling thread (the quantize pass runs the same steps over slices). */
export function gptqQuantize(
  w: Float32Array,
  K: number,
  N: number,
  p: QuantParams,
  calib: CalibrationData | undefined,
  opts: GptqOptions = {},
): QuantizedWeight {
  checkParams(K, N, p, w);
  const plan = gptqPlan(calib, K, opts);
  if (plan.held) {
    const c = scoredColumns(w, K, N, 0, N)!;
    plan.pick = gptqPick(gptqScores(c.w, K, c.n, p, plan));
    if (plan.pick < 2) plan.full = gptqFactors(calib!, K, opts, plan.pick === 0);
  }
  return gptqApply(w, K, N, p, plan);
}

/** One step, as a message a worker thread can run (passes/quant/workers.ts). */
export type GptqStep =
  | { op: 'plan'; calib: CalibrationData; K: number }
  | { op: 'factors'; calib: CalibrationData; K: number; feedback: boolean }
  | { op: 'scores' | 'apply'; w: Float32Array; K: number; N: number; params: QuantParams; plan: GptqPlan };
export type GptqStepResult = GptqPlan | GptqFactors | Float64Array[] | QuantizedWeight;

export function runGptqStep(s: GptqStep): GptqStepResult {
  switch (s.op) {
    case 'plan':
      return gptqPlan(s.calib, s.K);
    case 'factors':
      return gptqFactors(s.calib, s.K, {}, s.feedback);
    case 'scores':
      return gptqScores(s.w, s.K, s.N, s.params, s.plan);
    case 'apply':
      return gptqApply(s.w, s.K, s.N, s.params, s.plan);
  }
}

// ---- per-thread WebAssembly memory --------------------------------------------------------------
// Layout: U [Kq][ld] (copied in once per factors), then the slice's rows [K][lw] and the batch
// errors [BATCH][lw] (lw = rowStride(columns)).
let work: { lin: Linalg; id?: string } | undefined;

/** This thread's memory for a factorization: the copy of U it may hold is overwritten. */
function scratch(bytes: number): Linalg {
  work ??= { lin: new Linalg(bytes) };
  work.lin.ensure(bytes);
  work.id = undefined;
  return work.lin;
}

function workspace(f: GptqFactors, bytes: number): Linalg {
  work ??= { lin: new Linalg(bytes) };
  work.lin.ensure(bytes);
  if (f.U && work.id !== f.id) {
    work.lin.f32().set(f.U);
    work.id = f.id;
  }
  return work.lin;
}

let errLin: Linalg | undefined;

/** Drops this thread's GPTQ memory (the quantize pass calls it when done). */
export function releaseGptqMemory(): void {
  work = undefined;
  errLin = undefined;
  releaseBlockSearcher();
}

interface Groups {
  gs: Float32Array;
  gz: Int32Array;
}

/** Block codes with group parameters searched under f.hw; with `feedback`, the LDL error feedback. */
function gptqCore(
  w: Float32Array,
  K: number,
  N: number,
  p: QuantParams,
  f: GptqFactors,
  feedback: boolean,
  groups?: Groups,
  groupsOf?: QuantizedWeight,
): QuantizedWeight {
  if (feedback && !f.U) throw new Error('gptq factors lack U for error feedback');
  const { perm, actOrder, Kq } = f;
  const bs = p.blockSize,
    kBlocks = kBlocksOf(K, bs),
    Kp = kBlocks * bs,
    qmax = (1 << p.bits) - 1;
  const q: QuantizedWeight = {
    K,
    N,
    bits: p.bits,
    blockSize: bs,
    kBlocks,
    symmetric: p.symmetric,
    codes: new Uint8Array(N * Kp),
    scales: new Float32Array(N * kBlocks),
    zeroPoints: p.symmetric ? undefined : new Uint8Array(N * kBlocks),
  };
  const g: Groups = groups ?? { gs: new Float32Array(kBlocks * N), gz: new Int32Array(kBlocks * N) };
  if (groupsOf && actOrder) {
    // static groups found by an earlier call with the same factors (`groups` holds them)
    q.scales.set(groupsOf.scales);
    q.zeroPoints?.set(groupsOf.zeroPoints!);
    q.codes.set(groupsOf.codes); // padding codes; the rows are all rewritten below
  } else if (actOrder || !feedback) groupParams(q, g, f.hw, w, N, 0, kBlocks);
  if (!feedback) {
    for (let k = 0; k < K; k++) {
      const og = Math.floor(k / bs) * N;
      for (let n = 0; n < N; n++) q.codes[n * Kp + k] = code(w[k * N + n]!, g.gs[og + n]!, g.gz[og + n]!, qmax);
    }
    return q;
  }
  const nsp = roundUp(N, 16),
    lw = rowStride(N),
    ldw = lw * 4,
    L = uLayout(Kq),
    batch = Math.max(bs, BATCH),
    wAt = L.size * 4,
    eAt = wAt + K * ldw;
  const cAt = eAt + batch * ldw,
    lin = workspace(f, cAt + K * N);
  const Wv = lin.f32().subarray(wAt / 4, wAt / 4 + K * lw),
    Eb = lin.f32().subarray(eAt / 4, eAt / 4 + batch * lw),
    // codes by input row [K][N]: rows go in act-order, and writing [N][Kp] directly missed cache on every code
    ct = new Uint8Array(lin.memory.buffer, cAt, K * N);
  Wv.fill(0);
  Eb.fill(0);
  for (let i = 0; i < K; i++) {
    const k = perm[i]!;
    Wv.set(w.subarray(k * N, (k + 1) * N), i * lw);
  }
  // U's rows i.. from column j on (byte address), and its row stride (bytes) in i's strip
  const uAt = (i: number, j: number) => uIndex(L, i, j) * 4,
    ldu = (i: number) => L.ls[Math.floor(i / STRIP)]! * 4;
  for (let i1 = 0; i1 < K; i1 += batch) {
    const i2 = Math.min(K, i1 + batch);
    // Sub-batches of SUB rows: blocks (powers of two >= 16) start on a sub-batch's first row.
    for (let s1 = i1; s1 < i2; s1 += SUB) {
      const s2 = Math.min(i2, s1 + SUB);
      for (let i = s1; i < s2; i++) {
        const k = perm[i]!,
          b = Math.floor(k / bs);
        // In plain order a block's rows all have their updates from the rows before it here.
        if (!actOrder && k % bs === 0) groupParams(q, g, f.hw, Wv, lw, b, b + 1);
        // row i gets the updates of this sub-batch's earlier rows: W[i] += sum_j E[j] U[j][i]
        lin.gemm(wAt + i * ldw, ldw, uAt(s1, i), ldu(s1), eAt + (s1 - i1) * ldw, ldw, 1, nsp, i - s1, 1);
        quantizeRow(ct, g, w, Wv, Eb, k, N, b * N, i * lw, (i - i1) * lw, qmax);
      }
      // the rest of the batch
      lin.gemm(wAt + s2 * ldw, ldw, uAt(s1, s2), ldu(s1), eAt + (s1 - i1) * ldw, ldw, i2 - s2, nsp, s2 - s1, 1);
    }
    // every later row at once (one product per strip of U: one when the batch is a strip)
    for (let t = i1, t2; t < i2; t = t2) {
      t2 = Math.min(i2, (Math.floor(t / STRIP) + 1) * STRIP);
      lin.gemm(wAt + i2 * ldw, ldw, uAt(t, i2), ldu(t), eAt + (t - i1) * ldw, ldw, K - i2, nsp, t2 - t, 1);
    }
  }
  for (let k0 = 0; k0 < K; k0 += 64)
    for (let n0 = 0; n0 < N; n0 += 64)
      for (let n = n0, n1 = Math.min(N, n0 + 64), k1 = Math.min(K, k0 + 64); n < n1; n++)
        for (let k = k0; k < k1; k++) q.codes[n * Kp + k] = ct[k * N + n]!;
  return q;
}

/** Codes of input row k (processing row at oi of Wv) into ct, its error against the original row into Eb at oe. */
function quantizeRow(
  ct: Uint8Array,
  g: Groups,
  w: Float32Array,
  Wv: Float32Array,
  Eb: Float32Array,
  k: number,
  N: number,
  og: number,
  oi: number,
  oe: number,
  qmax: number,
): void {
  const ow = k * N;
  for (let n = 0; n < N; n++) {
    const s = g.gs[og + n]!,
      z = g.gz[og + n]!;
    const c = code(Wv[oi + n]!, s, z, qmax);
    ct[ow + n] = c;
    // LDLQ feeds back the error against the ORIGINAL row
    Eb[oe + n] = w[ow + n]! - (c - z) * s;
  }
}

function code(v: number, s: number, z: number, qmax: number): number {
  const c = s !== 0 ? Math.round(v / s) + z : z;
  return c < 0 ? 0 : c > qmax ? qmax : c;
}

/** Block rows [b0, b1) of q: parameters per column searched under the row weights hw, from the rows
 * of w (row stride ld) starting at block b0's first row; into q (scales, zero points, padding) and g. */
function groupParams(q: QuantizedWeight, g: Groups, hw: Float64Array, w: Float32Array, ld: number, b0: number, b1: number): void {
  const { K, N, blockSize: bs } = q,
    k0 = b0 * bs,
    k1 = Math.min(K, b1 * bs);
  const { s, r } = blockSearcher();
  s.load(w.subarray(k0 * ld, k1 * ld), k1 - k0, ld, hw.subarray(k0, k1));
  for (let b = b0; b < b1; b++)
    searchBlockRow(s, r, q, b, (b - b0) * bs, true, (n, sc, z) => {
      g.gs[b * N + n] = sc;
      g.gz[b * N + n] = z;
    });
}

/** Per candidate and output column n: sum over the held-out rows of (x (W - Wq))_n^2, the product in SIMD. */
function columnErrors(held: CalibrationData, w: Float32Array, qs: QuantizedWeight[]): Float64Array[] {
  const { K, N } = qs[0]!,
    rows = held.rows,
    nsp = roundUp(N, 16),
    lw = rowStride(N),
    ld = lw * 4,
    lx = rowStride(rows);
  const xAt = 0,
    dAt = K * lx * 4,
    yAt = dAt + K * ld;
  // this thread's memory for the check, kept between calls (fresh pages cost more than the product)
  errLin ??= new Linalg(yAt + rows * ld);
  const lin = errLin;
  lin.ensure(yAt + rows * ld);
  const m = lin.f32();
  m.fill(0, dAt / 4, yAt / 4); // padding columns of W - Wq
  for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) m[k * lx + r] = held.x[r * K + k]!;
  return qs.map((q) => {
    const d = dequantize(q);
    for (let k = 0; k < K; k++) for (let n = 0, o = dAt / 4 + k * lw; n < N; n++) m[o + n] = w[k * N + n]! - d[k * N + n]!;
    m.fill(0, yAt / 4, yAt / 4 + rows * lw);
    lin.gemm(yAt, ld, xAt, lx * 4, dAt, ld, rows, nsp, K, 1);
    const e = new Float64Array(N);
    for (let r = 0; r < rows; r++) for (let n = 0, o = yAt / 4 + r * lw; n < N; n++) e[n]! += m[o + n]! * m[o + n]!;
    return e;
  });
}

/** Factors per calibration sample, shared by the weights reading it; the last two kept per pass. */
const factorCache = new WeakMap<QuantExec, Map<CalibrationData, Map<string, Promise<unknown>>>>();

function cached<T>(exec: QuantExec, calib: CalibrationData, key: string, make: () => Promise<T>): Promise<T> {
  let byCalib = factorCache.get(exec);
  if (!byCalib) factorCache.set(exec, (byCalib = new Map()));
  let entry = byCalib.get(calib);
  if (!entry) {
    byCalib.set(calib, (entry = new Map()));
    while (byCalib.size > 2) byCalib.delete(byCalib.keys().next().value!);
  }
  let v = entry.get(key) as Promise<T> | undefined;
  if (!v) entry.set(key, (v = make()));
  return v;
}

export const gptq: QuantMethod = {
  name: 'gptq',
  description:
    'GPTQ: inverse-Hessian error feedback from calibration activations (act-order, static groups = blocks, lazy batches, WebAssembly SIMD), group scales searched under activation-energy weighting, integer zero points; checked on held-out calibration rows (about 512 sampled output columns) against the same search without feedback and against mse-search',
  needsCalibration: true,
  quantize: (w, K, N, p, calib) => gptqQuantize(w, K, N, p, calib),
  /** Factors once per calibration sample; when validating, the slices are read twice (score, then apply). */
  async prepare(weight, p, calib, exec) {
    const { K, N } = weight;
    const c = calib!;
    const base = await cached(exec, c, 'plan', () => exec.gptq<GptqPlan>({ op: 'plan', calib: c, K }));
    let plan: GptqPlan = { ...base };
    if (base.held) {
      const errs = [0, 1, 2].map(() => new Float64Array(Math.ceil(N / scoreStride(N))));
      await weight.eachSlice(async (w, n0, ns) => {
        const c = scoredColumns(w, K, N, n0, ns);
        if (!c) return;
        const e = await exec.gptq<Float64Array[]>({ op: 'scores', w: c.w, K, N: c.n, params: p, plan: base });
        e.forEach((x, i) => errs[i]!.set(x, c.at));
      });
      const pick = gptqPick(errs);
      const full =
        pick < 2
          ? await cached(exec, c, `full${pick}`, () => exec.gptq<GptqFactors>({ op: 'factors', calib: c, K, feedback: pick === 0 }))
          : undefined;
      plan = { K, full, pick };
    }
    return (w, k, ns) => exec.gptq<QuantizedWeight>({ op: 'apply', w: w.slice(), K: k, N: ns, params: p, plan });
  },
};
