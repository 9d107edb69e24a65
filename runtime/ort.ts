// The one place that talks to onnxruntime (node build). Run models on given or seeded inputs and
// compare outputs. IR tensors in, IR tensors out.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DataType, Dim, InputError, Model, Tensor, dtypeName, loadTensorFile, numElements, byteLength } from '../ir/index.js';

const ORT_TYPES: Partial<Record<DataType, ort.Tensor.Type>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.FLOAT16]: 'float16',
  [DataType.DOUBLE]: 'float64',
  [DataType.INT8]: 'int8',
  [DataType.UINT8]: 'uint8',
  [DataType.INT16]: 'int16',
  [DataType.UINT16]: 'uint16',
  [DataType.INT32]: 'int32',
  [DataType.UINT32]: 'uint32',
  [DataType.INT64]: 'int64',
  [DataType.UINT64]: 'uint64',
  [DataType.BOOL]: 'bool',
  [DataType.STRING]: 'string',
  [DataType.INT4]: 'int4',
  [DataType.UINT4]: 'uint4',
};

const FROM_ORT: Record<string, DataType> = Object.fromEntries(Object.entries(ORT_TYPES).map(([k, v]) => [v, Number(k)]));

export function toOrtTensor(t: Tensor): ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (!type) throw new Error(`onnxruntime cannot take ${dtypeName(t.dtype)} tensor '${t.name}'`);
  if (t.dtype === DataType.STRING) return new ort.Tensor('string', t.strings(), t.dims);
  const raw = t.bytes();
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  const buf = copy.buffer;
  const n = t.size;
  let data: ort.Tensor.DataType;
  switch (t.dtype) {
    case DataType.FLOAT:
      data = new Float32Array(buf, 0, n);
      break;
    case DataType.FLOAT16:
      data = new Uint16Array(buf, 0, n);
      break;
    case DataType.DOUBLE:
      data = new Float64Array(buf, 0, n);
      break;
    case DataType.INT8:
      data = new Int8Array(buf, 0, n);
      break;
    case DataType.UINT8:
    case DataType.BOOL:
      data = new Uint8Array(buf, 0, n);
      break;
    case DataType.INT16:
      data = new Int16Array(buf, 0, n);
      break;
    case DataType.UINT16:
      data = new Uint16Array(buf, 0, n);
      break;
    case DataType.INT32:
      data = new Int32Array(buf, 0, n);
      break;
    case DataType.UINT32:
      data = new Uint32Array(buf, 0, n);
      break;
    case DataType.INT64:
      data = new BigInt64Array(buf, 0, n);
      break;
    case DataType.UINT64:
      data = new BigUint64Array(buf, 0, n);
      break;
    default:
      data = copy;
      break;
  }
  return new ort.Tensor(type, data, t.dims);
}

export function fromOrtTensor(name: string, t: ort.Tensor): Tensor {
  const dtype = FROM_ORT[t.type];
  if (dtype === undefined) throw new Error(`unsupported onnxruntime output type ${t.type}`);
  const dims = t.dims.map(Number);
  if (dtype === DataType.STRING)
    return new Tensor(name, dtype, dims, { kind: 'strings', values: (t.data as string[]).map((s) => Buffer.from(s, 'utf8')) });
  const d = t.data as ArrayBufferView;
  const bytes = new Uint8Array(d.buffer, d.byteOffset, byteLength(dtype, numElements(dims))).slice();
  return Tensor.fromBytes(name, dtype, dims, bytes);
}

export interface RunOptions {
  /** Graph optimization level; 'disabled' runs the graph as written (what verification wants). */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  intraOpNumThreads?: number;
  /** Output names to fetch (default: all). */
  outputs?: string[];
}

/** onnxruntime tensors for every input a session declares; a missing one is named. */
export function sessionFeeds(inputNames: readonly string[], feeds: Record<string, Tensor>): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const name of inputNames) {
    const t = feeds[name];
    if (!t) throw new Error(`no input given for '${name}'`);
    out[name] = toOrtTensor(t);
  }
  return out;
}

/** Run a model file (external data resolved next to it) on the given feeds. */
export async function runModel(modelPath: string, feeds: Record<string, Tensor>, opts: RunOptions = {}): Promise<Record<string, Tensor>> {
  const session = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: opts.graphOptimizationLevel ?? 'disabled',
    intraOpNumThreads: opts.intraOpNumThreads ?? 1,
    // Fatal only: a failure comes back as the exception; onnxruntime's own log line would be a second stderr line.
    logSeverityLevel: 4,
  });
  try {
    const ortFeeds = sessionFeeds(session.inputNames, feeds);
    const res = await session.run(ortFeeds, opts.outputs ?? session.outputNames);
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrtTensor(k, v as ort.Tensor);
    return out;
  } finally {
    await session.release();
  }
}

// ---- seeded inputs ---------------------------------------------------------------------------

/** Small fast PRNG (mulberry32): the same seed gives the same inputs on every machine. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples from a seeded generator (Box-Muller). */
export function randn(rand: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rand(), 1e-12),
      v = rand();
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export interface InputSpec {
  /** Values for symbolic dims by name (e.g. batch=1, height=224). Unknown dims default to `defaultDim`. */
  dims?: Record<string, number>;
  defaultDim?: number;
  seed?: number;
  /** Upper bound (exclusive) for integer inputs such as token ids. */
  intHigh?: number;
  /** Fixed values for some inputs (e.g. attention masks, positions). */
  fixed?: Record<string, Tensor>;
}

/** Resolve an input's shape against symbolic-dim bindings. */
export function concreteShape(shape: Dim[] | undefined, spec: InputSpec): number[] {
  return (shape ?? []).map((d) =>
    typeof d === 'number' && d >= 0 ? d : typeof d === 'string' && spec.dims?.[d] !== undefined ? spec.dims[d]! : (spec.defaultDim ?? 1),
  );
}

export const MAX_RANDOM_ELEMENTS = 2 ** 28;

/** Seeded random feeds that honour symbolic dims: normal floats, ints in [0, intHigh), bools. */
export function randomInputs(model: Model, spec: InputSpec = {}): Record<string, Tensor> {
  const rand = rng(spec.seed ?? 1234);
  const feeds: Record<string, Tensor> = {};
  for (const v of model.graph.inputs) {
    if (v.initializer) continue;
    if (spec.fixed?.[v.name]) {
      feeds[v.name] = spec.fixed[v.name]!;
      continue;
    }
    const type = v.type;
    if (!type) throw new InputError(`input '${v.name}' has no type`, model.sourcePath);
    const dims = concreteShape(type.shape, spec);
    const n = numElements(dims);
    // A declared shape is a claim: check it before allocating for it.
    if (!(Number.isSafeInteger(n) && n <= MAX_RANDOM_ELEMENTS))
      throw new InputError(
        `input '${v.name}' of shape [${dims}] has ${n} elements, more than the ${MAX_RANDOM_ELEMENTS} random inputs may hold`,
        model.sourcePath,
      );
    const lname = v.name.toLowerCase();
    switch (type.elemType) {
      case DataType.FLOAT:
        feeds[v.name] = Tensor.fromFloat32(v.name, dims, randn(rand, n));
        break;
      case DataType.FLOAT16:
      case DataType.DOUBLE:
      case DataType.BFLOAT16:
        feeds[v.name] = Tensor.fromNumbers(v.name, type.elemType, dims, randn(rand, n));
        break;
      case DataType.BOOL:
        feeds[v.name] = Tensor.fromNumbers(
          v.name,
          type.elemType,
          dims,
          Array.from({ length: n }, () => (rand() < 0.5 ? 1 : 0)),
        );
        break;
      case DataType.INT64:
      case DataType.INT32:
      case DataType.UINT8:
      case DataType.INT8: {
        // Masks are all ones and positions count up: what a real caller passes.
        let vals: number[];
        if (lname.includes('mask')) vals = new Array(n).fill(1);
        else if (lname.includes('position')) vals = Array.from({ length: n }, (_, i) => i % dims[dims.length - 1]!);
        else vals = Array.from({ length: n }, () => Math.floor(rand() * (spec.intHigh ?? 16)));
        feeds[v.name] =
          type.elemType === DataType.INT64 ? Tensor.fromInt64(v.name, dims, vals) : Tensor.fromNumbers(v.name, type.elemType, dims, vals);
        break;
      }
      default:
        throw new InputError(`cannot make a random ${dtypeName(type.elemType)} input for '${v.name}'`, model.sourcePath);
    }
  }
  return feeds;
}

// ---- comparison ------------------------------------------------------------------------------

export interface Comparison {
  name: string;
  cosine: number;
  maxAbsError: number;
  /** ||a-b|| / ||a|| */
  relError: number;
  mse: number;
  shapeMatch: boolean;
  elements: number;
}

/** Values of any numeric tensor (fp16, bf16 and int4 included) as float64, for comparisons. */
export function tensorToFloat64(t: Tensor): Float64Array {
  return t.toNumbers();
}

export function compareTensors(ref: Tensor, cand: Tensor): Comparison {
  const shapeMatch = ref.dims.length === cand.dims.length && ref.dims.every((d, i) => d === cand.dims[i]);
  const a = tensorToFloat64(ref),
    b = tensorToFloat64(cand);
  const n = Math.min(a.length, b.length);
  let dot = 0,
    na = 0,
    nb = 0,
    maxAbs = 0,
    se = 0;
  let nanMismatch = false;
  for (let i = 0; i < n; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) nanMismatch = true;
      continue;
    }
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (x !== y) nanMismatch = true;
      continue;
    }
    dot += x * y;
    na += x * x;
    nb += y * y;
    const d = Math.abs(x - y);
    if (d > maxAbs) maxAbs = d;
    se += d * d;
  }
  let cosine = na === 0 && nb === 0 ? 1 : na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
  if (nanMismatch || !shapeMatch || a.length !== b.length) cosine = Math.min(cosine, 0);
  return {
    name: ref.name,
    cosine,
    maxAbsError: nanMismatch ? Infinity : maxAbs,
    relError: na === 0 ? Math.sqrt(se) : Math.sqrt(se / na),
    mse: n ? se / n : 0,
    shapeMatch,
    elements: n,
  };
}

/** Compare outputs present in both maps, in the reference's order. */
export function compareOutputs(ref: Record<string, Tensor>, cand: Record<string, Tensor>): Comparison[] {
  return Object.keys(ref).map((k) => {
    const c = cand[k];
    if (!c) return { name: k, cosine: 0, maxAbsError: Infinity, relError: Infinity, mse: Infinity, shapeMatch: false, elements: 0 };
    return compareTensors(ref[k]!, c);
  });
}

/** ONNX backend-test style closeness: |actual - expected| <= atol + rtol*|expected| everywhere. */
export function allClose(expected: Tensor, actual: Tensor, rtol = 1e-3, atol = 1e-5): boolean {
  if (expected.dtype === DataType.STRING) return JSON.stringify(expected.strings()) === JSON.stringify(actual.strings());
  if (expected.dims.join() !== actual.dims.join()) return false;
  const a = tensorToFloat64(expected),
    b = tensorToFloat64(actual);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    if (x === y) continue;
    if (!(Math.abs(x - y) <= atol + rtol * Math.abs(x))) return false;
  }
  return true;
}

// ---- ONNX test-data folders ------------------------------------------------------------------

export interface TestDataSet {
  inputs: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
}

/** Read `test_data_set_N/` (input_K.pb / output_K.pb), naming tensors by the model's I/O order
 * when the files leave names empty. Sequence/optional files are not tensors and throw. */
export function loadTestDataSet(dir: string, model: Model): TestDataSet {
  const read = (prefix: string, values: { name: string; type?: unknown }[]) => {
    const names = values.map((v) => v.name);
    const out: Record<string, Tensor> = {};
    const files = fs
      .readdirSync(dir)
      .filter((f) => f.startsWith(prefix) && f.endsWith('.pb'))
      .sort((a, b) => Number(a.slice(prefix.length, -3)) - Number(b.slice(prefix.length, -3)));
    files.forEach((f, i) => {
      if (values[i] && !values[i]!.type)
        throw new Error(`${path.join(dir, f)}: '${names[i]}' is not a tensor (sequence, map or optional value)`);
      const t = loadTensorFile(path.join(dir, f));
      const name = names[i] ?? t.name;
      t.name = name;
      out[name] = t;
    });
    return out;
  };
  return {
    inputs: read(
      'input_',
      model.graph.inputs.filter((v) => !v.initializer),
    ),
    outputs: read('output_', model.graph.outputs),
  };
}

/** Inputs from a directory of `<input name>.pb` TensorProto files or an ONNX test_data_set folder. */
export function loadInputsDir(dir: string, model: Model): Record<string, Tensor> {
  const files = fs.readdirSync(dir);
  if (files.some((f) => /^input_\d+\.pb$/.test(f))) return loadTestDataSet(dir, model).inputs;
  const out: Record<string, Tensor> = {};
  for (const f of files.filter((x) => x.endsWith('.pb'))) {
    const t = loadTensorFile(path.join(dir, f));
    const name = t.name || f.slice(0, -3);
    t.name = name;
    out[name] = t;
  }
  return out;
}
