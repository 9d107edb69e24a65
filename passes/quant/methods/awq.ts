// AWQ-style activation-aware scaling (Lin et al., 2023): per input channel k a scale
// s_k = mean|x_k|^alpha (normalised by sqrt(max s * min s)), alpha searched on a grid in [0, 1] for
// the least output error ||X W - (X diag(s)^-1) Q(diag(s) W)||^2 on calibration rows, then the
// weights quantized as diag(s) W and the activation divided by s. The division must happen in the
// graph: the quantize pass folds 1/s into the norm that produces the activation (quant/awq-fold.ts);
// weights whose activation has no such norm are quantized without scaling (alpha 0). alpha = 0 is
// on the grid (s = 1: the inner method alone), so the search never picks worse than that on the
// rows it sees. The search's products run in WebAssembly SIMD (simd-linalg.ts).
import { dequantize, type CalibrationData, type QuantMethod, type QuantParams, type QuantizedWeight } from '../types.js';
import { gptq } from './gptq.js';
import { rtnQuantize } from './rtn.js';
import { Linalg, roundUp } from './simd-linalg.js';

/** alpha grid: 0, 0.1, ..., 1. */
const GRID = Array.from({ length: 11 }, (_, i) => i / 10);
/** Rows and columns per weight the search scores on (evenly spaced: the alpha is a whole-weight choice). */
const SEARCH_ROWS = 128;
const SEARCH_COLS = 512;

export interface AwqWeight {
  w: Float32Array;
  K: number;
  N: number;
}

export interface AwqResult {
  alpha: number;
  /** Per input channel; all 1 when alpha is 0. */
  s: Float32Array;
  /** Output error on the sampled rows and columns at the chosen alpha and at alpha 0. */
  err: number;
  err0: number;
}

const spread = (total: number, take: number) =>
  take >= total
    ? Array.from({ length: total }, (_, i) => i)
    : Array.from({ length: take }, (_, i) => Math.floor(((i + 0.5) * total) / take));

/** Channel scales for one alpha from the mean absolute activations. */
export function awqScales(xmean: Float64Array, alpha: number): Float32Array {
  const K = xmean.length,
    top = Math.max(...xmean) || 1;
  const s = new Float64Array(K);
  let lo = Infinity,
    hi = 0;
  for (let k = 0; k < K; k++) {
    s[k] = Math.max(xmean[k]!, 1e-6 * top) ** alpha;
    lo = Math.min(lo, s[k]!);
    hi = Math.max(hi, s[k]!);
  }
  const norm = Math.sqrt(lo * hi);
  return Float32Array.from(s, (v) => v / norm);
}

/** Mean |x| per input channel. */
export function meanAbs(calib: CalibrationData, K: number): Float64Array {
  const m = new Float64Array(K);
  for (let r = 0; r < calib.rows; r++) for (let k = 0, o = r * K; k < K; k++) m[k]! += Math.abs(calib.x[o + k]!);
  for (let k = 0; k < K; k++) m[k]! /= calib.rows;
  return m;
}

/**
 * The alpha (and scales) for weights that read the same activation, scored with `inner` rounding
 * (RTN) on evenly spaced calibration rows and output columns.
 */
export function awqSearch(ws: AwqWeight[], calib: CalibrationData, p: QuantParams): AwqResult {
  const K = ws[0]!.K;
  if (ws.some((x) => x.K !== K)) throw new RangeError('awq: weights of one activation must share K');
  if (calib.x.length !== calib.rows * K) throw new RangeError(`calibration holds ${calib.x.length} values, expected rows*${K}`);
  const xmean = meanAbs(calib, K);
  const rows = spread(calib.rows, SEARCH_ROWS),
    R = rows.length;
  // sampled columns of every weight side by side: Ws [K][Ns]
  const cols = ws.map((x) => spread(x.N, SEARCH_COLS));
  const Ns = cols.reduce((a, c) => a + c.length, 0),
    nsp = roundUp(Ns, 16),
    ld = nsp * 4;
  const Ws = new Float32Array(K * Ns);
  let at = 0;
  ws.forEach((x, i) => {
    for (const n of cols[i]!) {
      for (let k = 0; k < K; k++) Ws[k * Ns + at] = x.w[k * x.N + n]!;
      at++;
    }
  });
  const xAt = 0,
    dAt = K * R * 4,
    yAt = dAt + K * ld;
  const lin = new Linalg(yAt + R * ld);
  const m = lin.f32();
  rows.forEach((r, i) => {
    for (let k = 0; k < K; k++) m[k * R + i] = calib.x[r * K + k]!;
  });
  const scaled = new Float32Array(K * Ns);
  let best: AwqResult | undefined;
  for (const alpha of GRID) {
    const s = awqScales(xmean, alpha);
    for (let k = 0; k < K; k++) for (let n = 0, o = k * Ns; n < Ns; n++) scaled[o + n] = Math.fround(Ws[o + n]! * s[k]!);
    const d = dequantize(rtnQuantize(scaled, K, Ns, p));
    const f = lin.f32();
    for (let k = 0; k < K; k++) for (let n = 0, o = k * Ns; n < Ns; n++) f[dAt / 4 + k * nsp + n] = Ws[o + n]! - d[o + n]! / s[k]!;
    f.fill(0, yAt / 4, yAt / 4 + R * nsp);
    lin.gemm(yAt, ld, xAt, R * 4, dAt, ld, R, nsp, K, 1);
    let err = 0;
    for (let i = 0; i < R * nsp; i++) err += f[yAt / 4 + i]! ** 2;
    if (!best) best = { alpha, s, err, err0: err };
    else if (err < best.err) best = { alpha, s, err, err0: best.err0 };
  }
  return best!;
}

/** One weight on its own: the search, then RTN of diag(s) W; dequantize and divide row k by s_k for the weight it stands for. */
export function awqQuantize(
  w: Float32Array,
  K: number,
  N: number,
  p: QuantParams,
  calib: CalibrationData,
): { q: QuantizedWeight; r: AwqResult } {
  const r = awqSearch([{ w, K, N }], calib, p);
  const scaled = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) scaled[k * N + n] = Math.fround(w[k * N + n]! * r.s[k]!);
  return { q: rtnQuantize(scaled, K, N, p), r };
}

/** Marks the AWQ methods: the quantize pass searches and folds the scales first (quant/awq-fold.ts). */
export interface AwqMethod extends QuantMethod {
  awq: true;
}

export const awq: AwqMethod = {
  name: 'awq',
  description:
    'AWQ: per-input-channel scales mean|x|^alpha from calibration activations, alpha searched on [0, 1] for the least output error, folded into the preceding norm (LayerNorm/RMSNorm scale); weights then rounded to nearest. Weights with no norm to fold into are rounded unscaled',
  needsCalibration: true,
  awq: true,
  quantize: (w, K, N, p) => rtnQuantize(w, K, N, p),
};

export const awqGptq: AwqMethod = {
  name: 'awq+gptq',
  description: "AWQ's scale search and fold, then GPTQ on the scaled weights with the activations divided by the scales",
  needsCalibration: true,
  awq: true,
  quantize: gptq.quantize,
  prepare: gptq.prepare,
};

export function isAwq(m: QuantMethod): m is AwqMethod {
  return (m as Partial<AwqMethod>).awq === true;
}
