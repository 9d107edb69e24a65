// Verification: run a reference and a candidate model in onnxruntime on the same inputs and compare
// every output. The library the `verify` command and targets' compile step share.
import fs from 'node:fs';
import path from 'node:path';
import { CheckError, DataType, Dim, InputError, Model, Tensor, Value, dtypeName, isFloat, loadModel } from '../ir/index.js';
import { Comparison, compareTensors, loadInputsDir, randomInputs, runModel } from './ort.js';

export interface VerifyOptions {
  /** Folder of inputs: an ONNX test_data_set_N folder, a test folder holding one, or `<input name>.pb` files. */
  inputsDir?: string;
  /** Seed for random inputs (default 1234). */
  seed?: number;
  /** Values for symbolic dims; those left unset take the candidate's fixed dims, else 1. */
  dims?: Record<string, number>;
  /** Minimum cosine per output (default 0.999). */
  threshold?: number;
  /** Inputs that must have these exact values (overrides files and random). */
  fixed?: Record<string, Tensor>;
  /** Inputs only the candidate takes, computed from the reference's feeds (a static NPU decoder's
   * position_ids from its attention mask). */
  derive?: (feeds: Record<string, Tensor>) => Record<string, Tensor>;
  /** How to name the candidate in messages (e.g. its artifact file rather than a temp path). */
  candidateName?: string;
}

export interface InputUsed {
  name: string;
  dtype: string;
  shape: number[];
  source: 'file' | 'random' | 'fixed';
}

export interface OutputCheck extends Comparison {
  /** Why this output fails, if it does. */
  problem?: string;
}

export interface VerifyResult {
  outputs: OutputCheck[];
  /** Outputs only the candidate has (not compared, not a failure). */
  extraOutputs: string[];
  passed: boolean;
  threshold: number;
  inputs: InputUsed[];
}

/** Folder holding the input .pb files: the folder itself, or its first test_data_set_N. */
function inputsFolder(dir: string): string {
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch { throw new InputError('no such inputs folder', dir); }
  if (!st.isDirectory()) throw new InputError('inputs must be a folder of .pb tensors', dir);
  const entries = fs.readdirSync(dir);
  if (entries.some((f) => f.endsWith('.pb'))) return dir;
  const set = entries.filter((f) => /^test_data_set_\d+$/.test(f)).sort()[0];
  if (set) return path.join(dir, set);
  throw new InputError('holds no .pb tensors and no test_data_set_N folder', dir);
}

/** Symbolic dims of the reference fixed by the candidate (a static-shape target artifact). */
function dimsFromCandidate(ref: Model, cand: Model): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of ref.graph.inputs) {
    const c = cand.graph.inputs.find((x) => x.name === v.name);
    (v.type?.shape ?? []).forEach((d: Dim, i) => {
      const cd = c?.type?.shape?.[i];
      if (typeof d === 'string' && typeof cd === 'number' && out[d] === undefined) out[d] = cd;
    });
  }
  return out;
}

/** A tensor read from a file must fit the input it feeds: same dtype and rank, fixed dims equal. */
function checkFeed(t: Tensor, v: Value, dir: string): void {
  const shape = v.type?.shape;
  const fits = t.dtype === v.dtype && (!shape || (shape.length === t.dims.length && shape.every((d, i) => typeof d !== 'number' || d === t.dims[i])));
  if (!fits) throw new InputError(`tensor for input '${v.name}' is ${dtypeName(t.dtype)}[${t.dims}], the model takes ${v.dtype === undefined ? '?' : dtypeName(v.dtype)}[${(shape ?? []).map((d) => d ?? '?')}]`, dir);
}

/** A candidate with fp16 I/O (a q4f16 artifact) gets the same values rounded to its float type. */
function castFloat(t: Tensor, dtype: DataType | undefined): Tensor {
  if (dtype === undefined || dtype === t.dtype || !isFloat(dtype) || !isFloat(t.dtype)) return t;
  return Tensor.fromNumbers(t.name, dtype, [...t.dims], t.toFloat32());
}

/** Exclusive bound for ids fed to a Gather: the row count of the smallest table they index. */
function idBound(model: Model): number | undefined {
  let bound: number | undefined;
  for (const v of model.graph.inputs) {
    if (v.initializer || (v.dtype !== DataType.INT64 && v.dtype !== DataType.INT32)) continue;
    for (const u of v.uses) {
      if (!u.node.opType.startsWith('Gather') || u.index !== 1) continue;
      const rows = u.node.input(0)?.type?.shape?.[0];
      if (typeof rows === 'number' && rows > 0) bound = Math.min(bound ?? rows, rows);
    }
  }
  return bound;
}

/** Failures on user-supplied files are bad input, named after the file. */
function asInputError<T>(file: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${what}: ${firstLine(e)}`, file);
  }
}

const firstLine = (e: unknown) => String((e as Error)?.message ?? e).split('\n')[0];

/** A reference onnxruntime cannot run is bad input (exit 2); a candidate that cannot run fails
 * the check (exit 1): it is the thing being verified. */
async function run(file: string, feeds: Record<string, Tensor>, candidate?: string): Promise<Record<string, Tensor>> {
  try {
    return await runModel(file, feeds);
  } catch (e) {
    if (candidate) throw new CheckError(`${candidate}: does not run in onnxruntime: ${firstLine(e)}`);
    throw new InputError(`onnxruntime failed: ${firstLine(e)}`, file);
  }
}

export async function verifyModels(refPath: string, candPath: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const threshold = opts.threshold ?? 0.999;
  const ref = loadModel(refPath);
  const cand = loadModel(candPath);
  const feedNames = ref.graph.inputs.filter((v) => !v.initializer).map((v) => v.name);

  let feeds: Record<string, Tensor> = {};
  const source: Record<string, InputUsed['source']> = {};
  if (opts.inputsDir) {
    const dir = inputsFolder(opts.inputsDir);
    const loaded = asInputError(dir, 'cannot read inputs', () => loadInputsDir(dir, ref));
    for (const v of ref.graph.inputs) {
      const t = loaded[v.name];
      if (v.initializer || !t) continue;
      checkFeed(t, v, dir);
      feeds[v.name] = t;
      source[v.name] = 'file';
    }
  }
  const missing = feedNames.filter((n) => !feeds[n] && !opts.fixed?.[n]);
  if (opts.inputsDir && missing.length) throw new InputError(`has no tensor for input '${missing[0]}'`, opts.inputsDir);
  if (missing.length) {
    const dims = { ...dimsFromCandidate(ref, cand), ...opts.dims };
    const random = asInputError(refPath, 'cannot make random inputs (pass --inputs)', () => randomInputs(ref, { seed: opts.seed ?? 1234, dims, intHigh: Math.min(idBound(ref) ?? 16, idBound(cand) ?? 16, 16) }));
    for (const n of missing) { feeds[n] = random[n]!; source[n] = 'random'; }
  }
  for (const [n, t] of Object.entries(opts.fixed ?? {})) { feeds[n] = t; source[n] = 'fixed'; }
  feeds = Object.fromEntries(feedNames.map((n) => [n, feeds[n]!]));

  const derived = opts.derive?.(feeds) ?? {};
  const candNeeds = cand.graph.inputs.filter((v) => !v.initializer && !feeds[v.name] && !derived[v.name]).map((v) => v.name);
  if (candNeeds.length) throw new InputError(`needs input '${candNeeds[0]}', which the reference does not have`, candPath);

  const refOut = await run(refPath, feeds);
  const candFeeds = Object.fromEntries(cand.graph.inputs.filter((v) => !v.initializer).map((v) => [v.name, castFloat(feeds[v.name] ?? derived[v.name]!, v.dtype)]));
  const candOut = await run(candPath, candFeeds, opts.candidateName ?? candPath);

  const outputs: OutputCheck[] = ref.graph.outputs.map((o) => {
    const r = refOut[o.name]!, c = candOut[o.name];
    if (!c) return { name: o.name, cosine: 0, maxAbsError: Infinity, relError: Infinity, mse: Infinity, shapeMatch: false, elements: 0, problem: 'missing from the candidate' };
    const cmp: OutputCheck = { ...compareTensors(r, c), name: o.name };
    if (!cmp.shapeMatch) cmp.problem = `shape [${c.dims}] differs from the reference [${r.dims}]`;
    else if (!(cmp.cosine >= threshold)) cmp.problem = `cosine ${cmp.cosine.toFixed(6)} < ${threshold}`;
    return cmp;
  });
  const extraOutputs = Object.keys(candOut).filter((k) => !refOut[k]);
  const inputs = feedNames.map((n) => ({ name: n, dtype: dtypeName(feeds[n]!.dtype), shape: [...feeds[n]!.dims], source: source[n]! }));
  return { outputs, extraOutputs, passed: outputs.every((o) => !o.problem), threshold, inputs };
}
