// Calibration activations for data-aware quantization (GPTQ): run the model in onnxruntime with the
// A inputs of weight MatMuls exposed as extra graph outputs and keep, per weight, a deterministic
// sample of activation rows [rows, K]. The temporary model is written next to the source so its
// external data is referenced in place, not copied. (passes/quant/norm-scales.ts holds the
// data-free stand-in: per-channel activation scale read off the norm weights.)
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DataType, InputError, Model, Tensor, Value, saveModel, type Progress } from '../ir/index.js';
import type { CalibrationData } from '../passes/quant/types.js';
import { matmulActivations } from '../passes/quant/norm-scales.js';
import { getMethod } from '../passes/quant/methods/index.js';
import { fromOrtTensor, randomInputs, tensorToFloat64, toOrtTensor, type InputSpec } from './ort.js';
import { loadInputs, type InputSets, type InputsSpec } from './inputs.js';
import { ActivationStore } from './activation-store.js';

export interface CalibrateOptions {
  /** Most rows kept per weight (spread evenly over the input sets and their rows). Default 512. */
  maxRows?: number;
  /** Only these weight (initializer) names; default every 2-D float MatMul weight. */
  weights?: string[];
  intraOpNumThreads?: number;
  /** Called after each input set ran. */
  progress?: Progress;
  /** Collect even when the method needs none (a --budget measures each format's output error on them). */
  always?: boolean;
  /** Sample bytes held in memory before they spill to a temporary file (default CALIB_MEMORY_BYTES). */
  memoryBytes?: number;
}

/** Input sets from a `--calibration` folder: its test_data_set_N folders (or the folder itself
 * when it holds .pb files), else its PNG/JPEG images. Nothing else in it counts as a set. */
export function calibrationData(dir: string, model: Model, spec: InputsSpec = {}): InputSets {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError('calibration folder not found', dir);
  const entries = fs.readdirSync(dir);
  const hasSets = entries.some((f) => /^test_data_set_\d+$/.test(f) || f.endsWith('.pb'));
  if (!hasSets && entries.some((f) => /\.(png|jpe?g)$/i.test(f))) return loadInputs(model, { ...spec, images: [dir] });
  if (!hasSets) throw new InputError('calibration folder holds no test_data_set_N folder, .pb tensors or PNG/JPEG images', dir);
  return loadInputs(model, { ...spec, inputs: [dir] });
}

/** `derived`: inputs the caller computes from the others (position ids from the mask): files need not hold them. */
export function loadCalibrationSets(dir: string, model: Model, derived: readonly string[] = []): Record<string, Tensor>[] {
  return calibrationData(dir, model, { optional: derived }).sets;
}

/** Calibration sets in content order, not file order: renumbered sets or renamed images give the
 * same artifact (GPTQ keeps rows spread over the sets in order; range histograms re-bin as they grow). */
export function inContentOrder(sets: Record<string, Tensor>[]): Record<string, Tensor>[] {
  const key = (set: Record<string, Tensor>) => {
    const h = crypto.createHash('sha256');
    for (const name of Object.keys(set).sort()) {
      const t = set[name]!;
      h.update(`${name}\0${t.dtype}\0${t.dims.join(',')}\0`);
      if (t.dtype !== DataType.STRING) h.update(t.bytes());
    }
    return h.digest('hex');
  };
  return sets
    .map((s) => ({ s, k: key(s) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .map((x) => x.s);
}

/** Seeded synthetic input sets (smoke runs): set i uses seed base+i. */
export function syntheticCalibrationSets(model: Model, count: number, spec: InputSpec = {}): Record<string, Tensor>[] {
  return Array.from({ length: count }, (_, i) => randomInputs(model, { ...spec, seed: (spec.seed ?? 1234) + i }));
}

/** What a data-aware quantization method (GPTQ) gets: activations by weight name, and how many sets and weights. */
export interface WeightCalibration {
  calibration: (weight: string) => CalibrationData | undefined;
  sets: number;
  weights: number;
  /** Sample bytes written to the spill file (0: all in memory). */
  spilledBytes: number;
  /** Closes the spill file. */
  release: () => void;
}

/**
 * The one calibration setup of weight quantization (`edgec quantize` and compile): when `method` needs
 * activations, run the model on the sets `load` gives and hand the activations out by weight name;
 * undefined when the method is data-free (then `load` is never called).
 */
export async function weightCalibration(
  model: Model,
  method: string,
  load: () => Record<string, Tensor>[] | Promise<Record<string, Tensor>[]>,
  opts: CalibrateOptions = {},
): Promise<WeightCalibration | undefined> {
  if (!getMethod(method).needsCalibration && !opts.always) return undefined;
  const sets = await load();
  const acts = await collectActivations(model, sets, opts);
  return {
    calibration: (w) => acts.get(w),
    sets: sets.length,
    weights: acts.weights,
    spilledBytes: acts.spilledBytes,
    release: () => acts.close(),
  };
}

/** Evenly spaced row indices: `take` of `total` (all when take >= total). */
function spread(total: number, take: number): number[] {
  if (take >= total) return Array.from({ length: total }, (_, i) => i);
  return Array.from({ length: take }, (_, i) => Math.floor(((i + 0.5) * total) / take));
}

/** Every weight's activations at once (small models, tests, the library API). */
export async function collectCalibration(
  model: Model,
  sets: Record<string, Tensor>[],
  opts: CalibrateOptions = {},
): Promise<Map<string, CalibrationData>> {
  const acts = await collectActivations(model, sets, opts);
  try {
    return new Map(acts.names.map((w) => [w, acts.get(w)!]));
  } finally {
    acts.close();
  }
}

/** Activation samples handed out one weight at a time, from memory or from the spill file. */
export interface ActivationSamples {
  get(weight: string): CalibrationData | undefined;
  names: string[];
  weights: number;
  spilledBytes: number;
  close(): void;
}

/** One onnxruntime run per set with every weight MatMul's input exposed; rows kept per distinct input. */
export async function collectActivations(
  model: Model,
  sets: Record<string, Tensor>[],
  opts: CalibrateOptions = {},
): Promise<ActivationSamples> {
  const maxRows = opts.maxRows ?? 512;
  const acts = matmulActivations(model, opts.weights);
  const store = new ActivationStore<Value>(opts.memoryBytes);
  if (acts.size && sets.length) await runExposed(model, [...new Set(acts.values())], sets, Math.ceil(maxRows / sets.length), store, opts);
  const g = model.graph;
  // Weights reading the same activation (q/k/v, gate/up) share one sample; they come one after another.
  let last: { v: Value; c: CalibrationData } | undefined;
  const get = (w: string): CalibrationData | undefined => {
    const v = acts.get(w);
    if (!v || !sets.length) return undefined;
    if (last?.v === v) return last.c;
    const x = store.read(v),
      K = g.value(w).initializer!.dims[0]!,
      n = x.length / K;
    let c: CalibrationData = { x, rows: n };
    if (n > maxRows) {
      const y = new Float32Array(maxRows * K);
      spread(n, maxRows).forEach((r, i) => y.set(x.subarray(r * K, (r + 1) * K), i * K));
      c = { x: y, rows: maxRows };
    }
    last = { v, c };
    return c;
  };
  const names = sets.length ? [...acts.keys()] : [];
  return { get, names, weights: names.length, spilledBytes: store.spilled, close: () => store.close() };
}

async function runExposed(
  model: Model,
  exposed: Value[],
  sets: Record<string, Tensor>[],
  perSet: number,
  store: ActivationStore<Value>,
  opts: CalibrateOptions,
): Promise<void> {
  const g = model.graph;
  const added = exposed.filter((v) => !v.isGraphOutput);
  const dir = model.sourcePath ? path.dirname(model.sourcePath) : fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-calib-'));
  const tmp = path.join(dir, `.edgec-calib-${process.pid}-${Date.now().toString(36)}.onnx`);
  const savedOutputs = [...g.outputs];
  g.setOutputs([...savedOutputs, ...added]);
  let session: ort.InferenceSession | undefined;
  try {
    saveModel(model, tmp, { externalData: false, reuseExternal: true });
    session = await ort.InferenceSession.create(tmp, {
      graphOptimizationLevel: 'disabled',
      intraOpNumThreads: opts.intraOpNumThreads ?? 1,
      logSeverityLevel: 4,
    });
    for (const [si, feeds] of sets.entries()) {
      opts.progress?.('calibration', si, sets.length);
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const name of session.inputNames) {
        const t = feeds[name];
        if (!t) throw new InputError(`calibration set has no input '${name}'`);
        ortFeeds[name] = toOrtTensor(t);
      }
      const res = await session.run(
        ortFeeds,
        exposed.map((v) => v.name),
      );
      for (const v of exposed) {
        const r = res[v.name] as ort.Tensor;
        const K = r.dims[r.dims.length - 1]!;
        const all = r.type === 'float32' ? (r.data as Float32Array) : tensorToFloat64(fromOrtTensor(v.name, r)),
          n = all.length / K;
        const pick = spread(n, perSet);
        const x = new Float32Array(pick.length * K);
        pick.forEach((row, i) => x.set(all.subarray(row * K, (row + 1) * K), i * K));
        store.add(v, x);
      }
    }
  } finally {
    g.setOutputs(savedOutputs);
    await session?.release();
    for (const f of [tmp, `${tmp}.data`]) fs.rmSync(f, { force: true });
    if (!model.sourcePath) fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- activation ranges -----------------------------------------------------------------------
// The range methods of onnxruntime's calibrate.py: MinMax; Percentile (of |x|, default 99.999);
// Entropy (the clipping threshold whose 128-bin quantized histogram is nearest in KL divergence).

export type RangeMethod = 'minmax' | 'percentile' | 'entropy';
export const RANGE_METHODS: readonly RangeMethod[] = ['minmax', 'percentile', 'entropy'];

const BINS = 2048;
const QUANT_BINS = 128;

interface Stat {
  lo: number;
  hi: number;
  edge: number;
  hist?: Float64Array;
}

export class RangeCollector {
  private stats = new Map<string, Stat>();
  /** `bits`: width of the quantized grid the entropy method models (8: 128 bins of |x|, as
   * TensorRT/onnxruntime do for int8). A 16-bit grid has more levels than the histogram has bins:
   * no clip lowers its KL divergence, so entropy keeps the full range there. */
  constructor(
    readonly method: RangeMethod = 'minmax',
    readonly percentile = 99.999,
    readonly bits = 8,
  ) {}

  add(name: string, values: ArrayLike<number>): void {
    let s = this.stats.get(name);
    if (!s) this.stats.set(name, (s = { lo: 0, hi: 0, edge: 0 }));
    let amax = 0;
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      if (!Number.isFinite(x)) continue;
      if (x < s.lo) s.lo = x;
      if (x > s.hi) s.hi = x;
      const a = Math.abs(x);
      if (a > amax) amax = a;
    }
    if (this.method === 'minmax') return;
    // Histogram of |x| over [0, edge]; a larger edge re-bins what was collected so far.
    if (!s.hist || amax > s.edge) {
      const edge = Math.max(amax, s.edge, 1e-12);
      const h = new Float64Array(BINS);
      if (s.hist)
        for (let b = 0; b < BINS; b++)
          if (s.hist[b]) h[Math.min(BINS - 1, Math.floor((((b + 0.5) * s.edge) / BINS / edge) * BINS))]! += s.hist[b]!;
      s.hist = h;
      s.edge = edge;
    }
    const scale = BINS / s.edge;
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      if (Number.isFinite(x)) s.hist[Math.min(BINS - 1, Math.floor(Math.abs(x) * scale))]!++;
    }
  }

  /** [lo, hi] per value: clipped to the method's threshold, always containing 0. `unclipped`: values
   * kept at min/max whatever the method (a model's outputs: a classifier's winning logit is
   * exactly the outlier a clip removes, and every clipped row then ties). */
  ranges(unclipped: ReadonlySet<string> = new Set()): Map<string, [number, number]> {
    const out = new Map<string, [number, number]>();
    for (const [k, s] of this.stats) {
      if (this.method === 'minmax' || !s.hist || unclipped.has(k)) {
        out.set(k, [s.lo, s.hi]);
        continue;
      }
      const t =
        this.method === 'percentile'
          ? percentileThreshold(s.hist, s.edge, this.percentile)
          : entropyThreshold(s.hist, s.edge, 2 ** (this.bits - 1));
      out.set(k, [Math.max(s.lo, -t), Math.min(s.hi, t)]);
    }
    return out;
  }
}

function percentileThreshold(hist: Float64Array, edge: number, pct: number): number {
  const total = hist.reduce((a, b) => a + b, 0);
  let acc = 0;
  for (let b = 0; b < hist.length; b++) {
    acc += hist[b]!;
    if (acc >= (total * pct) / 100) return ((b + 1) * edge) / hist.length;
  }
  return edge;
}

function entropyThreshold(hist: Float64Array, edge: number, quantBins = QUANT_BINS): number {
  const n = hist.length;
  if (quantBins >= n) return edge;
  let best = n,
    bestKl = Infinity;
  for (let i = quantBins; i <= n; i += 16) {
    // p: the first i bins with the outliers folded into the last; q: p merged into 128 bins and spread back.
    const p = Float64Array.from(hist.subarray(0, i));
    for (let b = i; b < n; b++) p[i - 1]! += hist[b]!;
    const q = new Float64Array(i);
    const per = i / quantBins;
    for (let j = 0; j < quantBins; j++) {
      const start = Math.floor(j * per),
        end = j === quantBins - 1 ? i : Math.floor((j + 1) * per);
      let sum = 0,
        nz = 0;
      for (let b = start; b < end; b++) {
        sum += p[b]!;
        if (p[b]) nz++;
      }
      for (let b = start; b < end; b++) if (p[b]) q[b] = sum / nz;
    }
    const ps = p.reduce((a, b) => a + b, 0),
      qs = q.reduce((a, b) => a + b, 0);
    if (!ps || !qs) continue;
    let kl = 0;
    for (let b = 0; b < i; b++) {
      if (!p[b]) continue;
      const pb = p[b]! / ps,
        qb = q[b]! / qs;
      kl += qb > 0 ? pb * Math.log(pb / qb) : pb * 30;
    }
    if (kl < bestKl) {
      bestKl = kl;
      best = i;
    }
  }
  return (best * edge) / n;
}
