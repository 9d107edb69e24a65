// Calibration activations for data-aware quantization (GPTQ): run the model in onnxruntime with the
// A inputs of weight MatMuls exposed as extra graph outputs and keep, per weight, a deterministic
// sample of activation rows [rows, K]. The temporary model is written next to the source so its
// external data is referenced in place, not copied. (passes/quant/norm-scales.ts holds the
// data-free stand-in: per-channel activation scale read off the norm weights.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { InputError, Model, Tensor, Value, saveModel, type Progress } from '../ir/index.js';
import type { CalibrationData } from '../passes/quant/types.js';
import { matmulActivations } from '../passes/quant/norm-scales.js';
import { fromOrtTensor, loadInputsDir, randomInputs, tensorToFloat64, toOrtTensor, type InputSpec } from './ort.js';

export interface CalibrateOptions {
  /** Most rows kept per weight (spread evenly over the input sets and their rows). Default 512. */
  maxRows?: number;
  /** Only these weight (initializer) names; default every 2-D float MatMul weight. */
  weights?: string[];
  intraOpNumThreads?: number;
  /** Called after each input set ran. */
  progress?: Progress;
}

/** Input sets from a `--calibration` folder: each sub-folder is one set (`<name>.pb` files or an
 * ONNX test_data_set), or the folder itself when it holds .pb files directly. Sorted by name. */
export function loadCalibrationSets(dir: string, model: Model, derived: readonly string[] = []): Record<string, Tensor>[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError('calibration folder not found', dir);
  const entries = fs.readdirSync(dir).sort();
  const subs = entries.filter((e) => fs.statSync(path.join(dir, e)).isDirectory());
  const sets = subs.length ? subs.map((s) => loadInputsDir(path.join(dir, s), model)) : [loadInputsDir(dir, model)];
  // Inputs the caller computes from the others (position ids from the mask) may be absent.
  const need = model.graph.inputs.filter((v) => !v.initializer && !derived.includes(v.name)).map((v) => v.name);
  sets.forEach((s, i) => {
    const missing = need.filter((n) => !s[n]);
    if (missing.length) throw new InputError(`calibration set lacks input(s) ${missing.join(', ')}`, subs.length ? path.join(dir, subs[i]!) : dir);
  });
  if (!sets.length) throw new InputError('calibration folder holds no input sets', dir);
  return sets;
}

/** Seeded synthetic input sets (smoke runs): set i uses seed base+i. */
export function syntheticCalibrationSets(model: Model, count: number, spec: InputSpec = {}): Record<string, Tensor>[] {
  return Array.from({ length: count }, (_, i) => randomInputs(model, { ...spec, seed: (spec.seed ?? 1234) + i }));
}

/** Evenly spaced row indices: `take` of `total` (all when take >= total). */
function spread(total: number, take: number): number[] {
  if (take >= total) return Array.from({ length: total }, (_, i) => i);
  return Array.from({ length: take }, (_, i) => Math.floor(((i + 0.5) * total) / take));
}

export async function collectCalibration(model: Model, sets: Record<string, Tensor>[], opts: CalibrateOptions = {}): Promise<Map<string, CalibrationData>> {
  const maxRows = opts.maxRows ?? 512;
  const acts = matmulActivations(model, opts.weights);
  const result = new Map<string, CalibrationData>();
  if (!acts.size || !sets.length) return result;
  const g = model.graph;
  const exposed = [...new Set(acts.values())];
  const added = exposed.filter((v) => !v.isGraphOutput);
  const dir = model.sourcePath ? path.dirname(model.sourcePath) : fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-calib-'));
  const tmp = path.join(dir, `.edgec-calib-${process.pid}-${Date.now().toString(36)}.onnx`);
  const perSet = Math.ceil(maxRows / sets.length);
  const rows = new Map<Value, Float32Array[]>();
  const savedOutputs = [...g.outputs];
  g.setOutputs([...savedOutputs, ...added]);
  let session: ort.InferenceSession | undefined;
  try {
    saveModel(model, tmp, { externalData: false, reuseExternal: true });
    session = await ort.InferenceSession.create(tmp, { graphOptimizationLevel: 'disabled', intraOpNumThreads: opts.intraOpNumThreads ?? 1, logSeverityLevel: 3 });
    for (const [si, feeds] of sets.entries()) {
      opts.progress?.('calibration', si, sets.length);
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const name of session.inputNames) {
        const t = feeds[name];
        if (!t) throw new InputError(`calibration set has no input '${name}'`);
        ortFeeds[name] = toOrtTensor(t);
      }
      const res = await session.run(ortFeeds, exposed.map((v) => v.name));
      for (const v of exposed) {
        const t = fromOrtTensor(v.name, res[v.name] as ort.Tensor);
        const K = t.dims[t.dims.length - 1]!;
        const all = tensorToFloat64(t), n = all.length / K;
        const pick = spread(n, perSet);
        const x = new Float32Array(pick.length * K);
        pick.forEach((r, i) => x.set(all.subarray(r * K, (r + 1) * K), i * K));
        (rows.get(v) ?? rows.set(v, []).get(v)!).push(x);
      }
    }
  } finally {
    g.setOutputs(savedOutputs);
    await session?.release();
    for (const f of [tmp, `${tmp}.data`]) fs.rmSync(f, { force: true });
    if (!model.sourcePath) fs.rmSync(dir, { recursive: true, force: true });
  }
  const joined = new Map<Value, Float32Array>();
  for (const [v, parts] of rows) {
    const x = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) { x.set(p, at); at += p.length; }
    joined.set(v, x);
  }
  // Weights reading the same activation (q/k/v, gate/up) share one sample.
  const shared = new Map<Value, CalibrationData>();
  for (const [w, v] of acts) {
    let c = shared.get(v);
    if (!c) {
      const x = joined.get(v)!, K = g.value(w).initializer!.dims[0]!, n = x.length / K;
      if (n <= maxRows) c = { x, rows: n };
      else {
        const pick = spread(n, maxRows), y = new Float32Array(maxRows * K);
        pick.forEach((r, i) => y.set(x.subarray(r * K, (r + 1) * K), i * K));
        c = { x: y, rows: maxRows };
      }
      shared.set(v, c);
    }
    result.set(w, c);
  }
  return result;
}
