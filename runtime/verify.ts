// Verification: run a reference and a candidate model in onnxruntime on the same input sets and
// compare every output: cosine and errors per output, and the task metric the role calls for
// (top-1/top-5, next-token agreement and KL, per-token cosine). The library the `verify` command
// and targets' compile step share, with one table of thresholds (runtime/metrics.ts).
import * as ort from 'onnxruntime-node';
import { CheckError, DataType, InputError, Model, Tensor, dtypeName, guessRole, isFloat, loadModel, type Role } from '../ir/index.js';
import { Comparison, compareTensors, fromOrtTensor, toOrtTensor } from './ort.js';
import {
  defaultDims,
  describeInputs,
  shapesOf,
  dimKinds,
  loadInputs,
  type Feeds,
  type InputSets,
  type InputsSpec,
  type InputsUsed,
  type Preprocess,
} from './inputs.js';
import { TaskAccumulator, cosineThreshold, taskKind, type TaskMetric } from './metrics.js';

export interface VerifyOptions {
  /** ONNX test-data folders (every test_data_set_N is used), or `<input name>.pb` folders. */
  inputs?: string[];
  /** One folder (kept for callers of the single-folder form). */
  inputsDir?: string;
  /** PNG/JPEG files or folders, preprocessed with `preprocess`. */
  images?: string[];
  preprocess?: Preprocess;
  /** Token id sequences (decoders): teacher-forced, with perplexity. */
  tokens?: string;
  /** Seed for synthetic inputs (default 1234). */
  seed?: number;
  /** Values for symbolic dims; those left unset take the candidate's fixed dims, else a size the model is meant for. */
  dims?: Record<string, number>;
  /** The flag that sets dims, for messages (--dim on verify, --fix on compile). */
  dimFlag?: string;
  /** Image size the model is meant for (policy tile, --image-sizes). */
  image?: { width: number; height: number };
  /** Minimum cosine per output (default: the role's threshold, or the exact one for unquantized fp32 candidates). */
  threshold?: number;
  /** Role of the reference (default: guessed). */
  role?: Role;
  /** Inputs that must have these exact values (overrides files and synthetic values). */
  fixed?: Record<string, Tensor>;
  /** Inputs only the candidate takes, computed from the reference's feeds (a static NPU decoder's
   * position_ids from its attention mask). */
  derive?: (feeds: Record<string, Tensor>) => Record<string, Tensor>;
  /** How to name the candidate in messages (e.g. its artifact file rather than a temp path). */
  candidateName?: string;
  /** The input sets themselves (a target's own: what its runtime feeds the candidate); replaces the
   * above. `select` keeps the part of an output the runtime reads (a left-padded chunk's real rows). */
  sets?: InputSets & { select?: OutputSelect };
  /** User data whose shapes a static candidate cannot take: refuse (default), or verify on
   * synthetic sets and say why (compile's fixed-shape variants). */
  unfit?: 'error' | 'synthetic';
}

/** The part of set `i`'s output `name` that counts (applied to reference and candidate alike). */
export type OutputSelect = (feeds: Feeds, name: string, t: Tensor) => Tensor;

export interface InputUsed {
  name: string;
  dtype: string;
  shape: number[];
  source: 'file' | 'random' | 'fixed' | 'image' | 'tokens';
}

export interface OutputCheck extends Comparison {
  /** Why this output fails, if it does. */
  problem?: string;
}

export interface VerifyResult {
  /** Per output, the worst figures over all input sets. */
  outputs: OutputCheck[];
  /** Outputs only the candidate has (not compared, not a failure). */
  extraOutputs: string[];
  passed: boolean;
  threshold: number;
  role: Role;
  /** Task metrics (judged ones count toward `passed`). */
  metrics: TaskMetric[];
  /** The first set's inputs (name, dtype, shape, source). */
  inputs: InputUsed[];
  /** What all the figures were measured on. */
  inputsUsed: InputsUsed;
  /** Set when the verdict is not the cosine threshold (byTaskMetrics). */
  judgedBy?: string;
}

/** Symbolic dims of the reference fixed by the candidate (a static-shape target artifact). */
function dimsFromCandidate(ref: Model, cand: Model): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of ref.graph.inputs) {
    const c = cand.graph.inputs.find((x) => x.name === v.name);
    (v.type?.shape ?? []).forEach((d, i) => {
      const cd = c?.type?.shape?.[i];
      if (typeof d === 'string' && typeof cd === 'number' && out[d] === undefined) out[d] = cd;
    });
  }
  return out;
}

/** A candidate with fp16 I/O (a q4f16 artifact) gets the same values rounded to its float type. */
function castFloat(t: Tensor, dtype: DataType | undefined): Tensor {
  if (dtype === undefined || dtype === t.dtype || !isFloat(dtype) || !isFloat(t.dtype)) return t;
  return Tensor.fromNumbers(t.name, dtype, [...t.dims], t.toFloat32());
}

/** Exclusive bound for ids fed to a Gather: the row count of the smallest table they index. */
export function idBound(model: Model): number | undefined {
  let bound: number | undefined;
  for (const v of model.graph.inputs) {
    if (v.initializer || (v.dtype !== DataType.INT64 && v.dtype !== DataType.INT32) || /position|mask/i.test(v.name)) continue;
    for (const u of v.uses) {
      if (!u.node.opType.startsWith('Gather') || u.index !== 1) continue;
      const src = u.node.input(0);
      const rows = src?.initializer?.dims[0] ?? src?.producer?.input(0)?.initializer?.dims[0] ?? src?.type?.shape?.[0];
      if (typeof rows === 'number' && rows > 0) bound = Math.min(bound ?? rows, rows);
    }
  }
  return bound;
}

const QUANT_OPS = /MatMulNBits|DequantizeLinear|QuantizeLinear|GatherBlockQuantized|QLinear|MatMulInteger|DynamicQuantize/;

/** A candidate that computes in fp32 with float weights is held to the exact threshold. */
function isExact(cand: Model): boolean {
  for (const g of cand.graph.allGraphs()) {
    for (const n of g.nodes) if (QUANT_OPS.test(n.opType)) return false;
    for (const v of g.initializers) if (v.dtype === DataType.FLOAT16 || v.dtype === DataType.BFLOAT16) return false;
    for (const n of g.nodes)
      for (const o of n.outputs)
        if (o?.type && (o.type.elemType === DataType.FLOAT16 || o.type.elemType === DataType.BFLOAT16)) return false;
  }
  return true;
}

/** Why a set of feeds does not fit a candidate's fixed input dims, if it does not. */
function unfitInput(cand: Model, feeds: Feeds): string | undefined {
  for (const v of cand.graph.inputs) {
    const t = feeds[v.name];
    const shape = v.type?.shape;
    if (!t || !shape) continue;
    if (shape.length !== t.dims.length || shape.some((d, i) => typeof d === 'number' && d !== t.dims[i])) {
      return `input '${v.name}' [${t.dims}] does not fit the candidate's [${shape.map((d) => d ?? '?')}]`;
    }
  }
  return undefined;
}

/** A set split along axis 0 into the candidate's fixed batch, when that is all that differs. */
function splitBatch(cand: Model, set: Feeds): { sets: Feeds[]; batch: number } | undefined {
  // Inputs derived from the others (position ids from the mask) are computed after the split.
  const ins = cand.graph.inputs.filter((v) => !v.initializer && set[v.name]);
  const b0 = ins.map((v) => v.type?.shape?.[0]).find((d) => typeof d === 'number');
  if (typeof b0 !== 'number' || b0 < 1) return undefined;
  const n = set[ins[0]!.name]?.dims[0];
  if (n === undefined || n % b0 !== 0) return undefined;
  for (const v of ins) {
    const t = set[v.name],
      shape = v.type?.shape;
    if (
      !t ||
      !shape ||
      shape[0] !== b0 ||
      t.dims[0] !== n ||
      shape.length !== t.dims.length ||
      shape.some((d, i) => i > 0 && typeof d === 'number' && d !== t.dims[i])
    )
      return undefined;
  }
  const out: Feeds[] = [];
  for (let i = 0; i < n; i += b0) {
    out.push(
      Object.fromEntries(
        Object.entries(set).map(([k, t]) => {
          const row = t.size / t.dims[0]!;
          const vals = t.toNumbers().slice(i * row, (i + b0) * row);
          const dims = [b0, ...t.dims.slice(1)];
          return [k, t.dtype === DataType.INT64 ? Tensor.fromInt64(k, dims, Array.from(vals)) : Tensor.fromNumbers(k, t.dtype, dims, vals)];
        }),
      ),
    );
  }
  return { sets: out, batch: b0 };
}

/** A decoder set whose past is shorter than a static candidate's KV window, right-aligned in it as a
 * runtime feeds that window: every past input padded in front with zero slots, the attention mask with
 * zeros (the same count), so the slots are masked out and positions (cumsum of the mask) are unchanged. */
function rightAlign(ref: Model, cand: Model, set: Feeds): Feeds | undefined {
  const kinds = dimKinds(ref);
  const shapeOf = (m: Model, k: string) => m.graph.inputs.find((v) => v.name === k)?.type?.shape;
  const pads = new Map<string, { axis: number; by: number }>();
  for (const [k, t] of Object.entries(set)) {
    const rs = shapeOf(ref, k),
      cs = shapeOf(cand, k);
    if (!rs || !cs || cs.length !== t.dims.length) continue;
    const axis = rs.findIndex((d) => typeof d === 'string' && (kinds.get(d) === 'past' || kinds.get(d) === 'total'));
    const want = cs[axis];
    if (axis >= 0 && typeof want === 'number' && want > t.dims[axis]!) pads.set(k, { axis, by: want - t.dims[axis]! });
  }
  const by = new Set([...pads.values()].map((p) => p.by));
  if (by.size !== 1 || ![...pads.keys()].some((k) => /attention_mask/.test(k))) return undefined;
  const out: Feeds = { ...set };
  for (const [k, { axis, by: n }] of pads) out[k] = padFront(set[k]!, axis, n);
  return out;
}

/** Zeros in front of `t` along `axis`. */
function padFront(t: Tensor, axis: number, n: number): Tensor {
  const dims = t.dims.map((d, i) => (i === axis ? d + n : d));
  const inner = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1),
    outer = t.dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const src = t.toNumbers(),
    len = t.dims[axis]! * inner;
  const vals = new Array<number>(outer * (len + n * inner)).fill(0);
  for (let o = 0; o < outer; o++) for (let i = 0; i < len; i++) vals[o * (len + n * inner) + n * inner + i] = src[o * len + i]!;
  return t.dtype === DataType.INT64 ? Tensor.fromInt64(t.name, dims, vals) : Tensor.fromNumbers(t.name, t.dtype, dims, vals);
}

/** The sets a candidate with fixed dims can take (batch-N sets split into its batch B, a shorter past
 * right-aligned in its KV window), and why the others cannot. */
function fitSets(ref: Model, cand: Model, sets: Feeds[]): { sets: Feeds[]; dropped: string[]; split?: number; aligned: number } {
  const out: Feeds[] = [],
    dropped: string[] = [];
  let split: number | undefined,
    aligned = 0;
  for (const given of sets) {
    const why = unfitInput(cand, given);
    if (!why) {
      out.push(given);
      continue;
    }
    const set = rightAlign(ref, cand, given) ?? given;
    if (set !== given && !unfitInput(cand, set)) {
      out.push(set);
      aligned++;
      continue;
    }
    const parts = splitBatch(cand, set);
    if (parts) {
      out.push(...parts.sets);
      split = parts.batch;
      if (set !== given) aligned++;
    } else dropped.push(why);
  }
  return { sets: out, dropped, split, aligned };
}

const firstLine = (e: unknown) => String((e as Error)?.message ?? e).split('\n')[0]!;
const SHAPE_ERROR = /shape|dimension|dims|broadcast|reshape|size of|index|out of range|invalid/i;

/** One session for every input set. A reference onnxruntime cannot run is bad input (exit 2); a
 * candidate that cannot run fails the check (exit 1): it is the thing being verified. Shape
 * errors name the dims the inputs bound, and the flag that changes them. */
export async function runSets(file: string, sets: Feeds[], hint: string, candidate?: string): Promise<Record<string, Tensor>[]> {
  const fail = (e: unknown): never => {
    const msg = firstLine(e);
    const extra = SHAPE_ERROR.test(msg) ? `; ${hint}` : '';
    if (candidate) throw new CheckError(`${candidate}: does not run in onnxruntime: ${msg}${extra}`);
    throw new InputError(`onnxruntime failed: ${msg}${extra}`, file);
  };
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, logSeverityLevel: 4 });
  } catch (e) {
    fail(e);
  }
  const out: Record<string, Tensor>[] = [];
  try {
    for (const feeds of sets) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const name of session!.inputNames) ortFeeds[name] = toOrtTensor(feeds[name]!);
      let res: ort.InferenceSession.OnnxValueMapType;
      try {
        res = await session!.run(ortFeeds);
      } catch (e) {
        fail(e);
      }
      out.push(Object.fromEntries(Object.entries(res!).map(([k, v]) => [k, fromOrtTensor(k, v as ort.Tensor)])));
    }
  } finally {
    await session!.release();
  }
  return out;
}

export async function verifyModels(refPath: string, candPath: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const ref = loadModel(refPath);
  const cand = loadModel(candPath);
  const role = opts.role ?? guessRole(ref).role;
  const threshold = opts.threshold ?? cosineThreshold(role, isExact(cand));
  const feedNames = ref.graph.inputs.filter((v) => !v.initializer).map((v) => v.name);
  const dimFlag = opts.dimFlag ?? '--dim';

  const spec: InputsSpec = {
    inputs: [...(opts.inputs ?? []), ...(opts.inputsDir ? [opts.inputsDir] : [])],
    images: opts.images,
    tokens: opts.tokens,
    preprocess: opts.preprocess,
    dims: opts.dims,
    dimFlag,
    fixedDims: dimsFromCandidate(ref, cand),
    image: opts.image,
    seed: opts.seed,
    intHigh: Math.min(idBound(ref) ?? Infinity, idBound(cand) ?? Infinity),
  };
  if (!Number.isFinite(spec.intHigh!)) spec.intHigh = 16;
  // Every symbolic dim the candidate keeps free is bound by the user or a realistic default.
  if (opts.fixed && feedNames.every((n) => opts.fixed![n])) spec.batches = [1];
  // onnxruntime's GroupQueryAttention takes batch 1 only when a prompt extends a cache: so does the runtime.
  if ([...dimKinds(ref).values()].includes('past') && cand.graph.nodes.some((n) => n.opType === 'GroupQueryAttention')) spec.batches = [1];
  let loaded: InputSets;
  try {
    loaded = opts.sets ?? loadInputs(ref, spec);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot make inputs (pass --inputs): ${firstLine(e)}`, refPath);
  }
  let misfit: string | undefined;
  if (!loaded.used.synthetic) {
    const fit = fitSets(ref, cand, loaded.sets);
    misfit = fit.dropped[0];
    if (fit.sets.length && (!misfit || opts.unfit === 'synthetic')) {
      // A static candidate is measured on the sets it can take; the others are named, not hidden.
      const notes = [
        ...(fit.split ? [`split into batch-${fit.split} sets for the candidate`] : []),
        ...(fit.aligned
          ? [`${fit.aligned} of ${loaded.sets.length} sets right-aligned in the candidate's KV window (past padded with masked zero slots)`]
          : []),
        ...(misfit ? [`${fit.dropped.length} of ${loaded.sets.length} sets not used: ${misfit}`] : []),
      ];
      if (notes.length)
        loaded = {
          sets: fit.sets,
          used: { ...loaded.used, count: fit.sets.length, shapes: shapesOf(fit.sets), from: [...loaded.used.from, ...notes] },
        };
      misfit = undefined;
    }
  }
  if (misfit && opts.unfit !== 'synthetic') throw new InputError(`${misfit}: pass inputs of that shape`, candPath);
  if (misfit) {
    loaded = loadInputs(ref, { ...spec, inputs: [], images: undefined, tokens: undefined });
    loaded.used.from.push(`user data not used: ${misfit}`);
  }
  const fromUser = !loaded.used.synthetic;
  let sets = loaded.sets.map((s) => ({ ...s, ...(opts.fixed ?? {}) }));
  if (opts.fixed && feedNames.every((n) => opts.fixed![n])) sets = sets.slice(0, 1);
  const used: InputsUsed = opts.fixed
    ? { ...loaded.used, count: sets.length, shapes: [Object.fromEntries(Object.entries(sets[0]!).map(([k, t]) => [k, [...t.dims]]))] }
    : loaded.used;

  const derived = sets.map((s) => opts.derive?.(s) ?? {});
  const candNeeds = cand.graph.inputs.filter((v) => !v.initializer && !sets[0]![v.name] && !derived[0]![v.name]).map((v) => v.name);
  if (candNeeds.length) throw new InputError(`needs input '${candNeeds[0]}', which the reference does not have`, candPath);

  const kinds = dimKinds(ref);
  const bound = Object.keys(used.dims ?? defaultDims(ref, { ...spec, dims: {} })).filter((d) => kinds.has(d));
  const hint =
    `the inputs bound ${bound.length ? bound.map((d) => `${d}=${used.dims?.[d] ?? '?'}`).join(', ') : 'no symbolic dim'}` +
    ` (${used.source}); set symbolic dims with ${dimFlag} NAME=N${dimFlag === '--fix' ? '' : ' (compile: --fix NAME=N)'} or pass real inputs with --inputs`;
  const select = opts.sets?.select;
  const part = (outs: Record<string, Tensor>[]) =>
    select ? outs.map((o, i) => Object.fromEntries(Object.entries(o).map(([k, t]) => [k, select(sets[i]!, k, t)]))) : outs;
  const refOut = part(await runSets(refPath, sets, hint));
  const candSets = sets.map((s, i) =>
    Object.fromEntries(
      cand.graph.inputs.filter((v) => !v.initializer).map((v) => [v.name, castFloat(s[v.name] ?? derived[i]![v.name]!, v.dtype)]),
    ),
  );
  const candOut = part(await runSets(candPath, candSets, hint, opts.candidateName ?? candPath));

  const idsName = feedNames.find((n) => /input_ids|^ids$/i.test(n));
  const maskName = feedNames.find((n) => /attention_mask/i.test(n));
  const outputs: OutputCheck[] = [];
  const metrics: TaskMetric[] = [];
  for (const o of ref.graph.outputs) {
    let worst: OutputCheck | undefined;
    const acc = new TaskAccumulator(taskKind(role, refOut[0]![o.name]!));
    for (let i = 0; i < sets.length; i++) {
      const r = refOut[i]![o.name]!,
        c = candOut[i]![o.name];
      if (!c) {
        worst = {
          name: o.name,
          cosine: 0,
          maxAbsError: Infinity,
          relError: Infinity,
          mse: Infinity,
          shapeMatch: false,
          elements: 0,
          problem: 'missing from the candidate',
        };
        break;
      }
      const cmp: OutputCheck = { ...compareTensors(r, c), name: o.name };
      if (!cmp.shapeMatch) cmp.problem = `shape [${c.dims}] differs from the reference [${r.dims}]`;
      else acc.add(r, c, fromUser && idsName ? sets[i]![idsName] : undefined, maskName ? sets[i]![maskName] : undefined);
      if (!worst || cmp.problem || cmp.cosine < worst.cosine)
        worst = worst?.problem
          ? worst
          : {
              ...cmp,
              maxAbsError: Math.max(cmp.maxAbsError, worst?.maxAbsError ?? 0),
              relError: Math.max(cmp.relError, worst?.relError ?? 0),
              elements: cmp.elements + (worst?.elements ?? 0),
            };
      else
        worst = {
          ...worst,
          maxAbsError: Math.max(cmp.maxAbsError, worst.maxAbsError),
          relError: Math.max(cmp.relError, worst.relError),
          mse: Math.max(cmp.mse, worst.mse),
          elements: worst.elements + cmp.elements,
        };
      if (cmp.problem) break;
    }
    const judged = acc.metrics();
    // Decoder logits are judged by their next-token distributions (KL, agreement, perplexity) on
    // every target and input; their cosine is reported. Other outputs by cosine.
    const byTask = acc.kind === 'decoder' && judged.length > 0;
    if (!byTask && !worst!.problem && !(worst!.cosine >= threshold)) worst!.problem = `cosine ${worst!.cosine.toFixed(6)} < ${threshold}`;
    outputs.push(worst!);
    for (const m of judged) {
      const named = { ...m, name: `${o.name}: ${m.name}` };
      metrics.push(named);
      if (m.passed === false && !worst!.problem)
        worst!.problem = `${m.name} ${m.value.toPrecision(4)} ${m.higherIsBetter ? '<' : '>'} ${m.threshold}`;
    }
  }
  const extraOutputs = Object.keys(candOut[0]!).filter((k) => !refOut[0]![k]);
  const srcOf = (n: string): InputUsed['source'] =>
    opts.fixed?.[n]
      ? 'fixed'
      : used.synthetic
        ? 'random'
        : used.source.includes('images') && /pixel|image/i.test(n)
          ? 'image'
          : used.source.includes('tokens')
            ? 'tokens'
            : 'file';
  const inputs = feedNames.map((n) => ({ name: n, dtype: dtypeName(sets[0]![n]!.dtype), shape: [...sets[0]![n]!.dims], source: srcOf(n) }));
  return { outputs, extraOutputs, passed: outputs.every((o) => !o.problem), threshold, role, metrics, inputs, inputsUsed: used };
}

export { describeInputs };

/** A decoder verified on its runtime's feeds (targets/run-feeds.ts) is also run through its own KV
 * cache (targets/through-cache.ts), which judges its present.* outputs by their effect on later
 * logits; per call they are fed the reference's past, so their cosine here is reported, not judged. */
export function byTaskMetrics(r: VerifyResult): VerifyResult {
  const outputs = r.outputs.map((o): OutputCheck => {
    if (!o.problem?.startsWith('cosine ')) return o;
    const rest: OutputCheck = { ...o };
    delete rest.problem;
    const bad = r.metrics.find((m) => m.passed === false && m.name.startsWith(`${o.name}: `));
    return bad
      ? {
          ...rest,
          problem: `${bad.name.slice(o.name.length + 2)} ${bad.value.toPrecision(4)} ${bad.higherIsBetter ? '<' : '>'} ${bad.threshold}`,
        }
      : rest;
  });
  return {
    ...r,
    outputs,
    passed: outputs.every((o) => !o.problem),
    judgedBy: 'task metrics per call and through its own KV cache (cosine reported)',
  };
}
