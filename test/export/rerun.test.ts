// The figures `compile` reports are the artifact's: every corpus model (fixtures/export) compiled for
// each target on the exporter's test sets (--inputs), then the written files run again here, apart
// from edgec's verify path: the .pb files decoded with protobufjs, a plain onnxruntime session per
// artifact file, fixed-shape variants fed the sets they take (batch-N sets split into the variant's
// batch, position ids as a runtime computes them), compared with the exporter's (torch's) outputs,
// and cosine, max abs error and the task metrics recomputed from scratch. A model a target cannot
// run is asserted to fail as it does today, naming the ops.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import protobuf from 'protobufjs';
import { afterAll, describe, expect, it } from 'vitest';
import { compile, type CompileOptions } from '../../targets/compile.js';
import type { Manifest } from '../../targets/manifest.js';
import { METRIC_THRESHOLDS } from '../../runtime/metrics.js';
import { cli } from '../cli/helpers.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-rerun-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const MODELS = fs
  .readdirSync(ROOT)
  .filter((d) => fs.existsSync(path.join(ROOT, d, 'model.onnx')))
  .sort();
const TARGETS = ['webgpu', 'npu', 'mobile'] as const;
/** npu is static: image sizes / context chosen so that at least one exporter test set fits a variant. */
const NPU: Record<string, Partial<CompileOptions>> = {
  siglip_vit: { imageSizes: ['224x224'] },
  clip_vit: { imageSizes: ['224x224'] },
  projector: { fix: { num_tokens: 196 } },
  decoder_nokv: { context: 64 },
  decoder_kv: { prefillChunk: 8, context: 41 },
  decoder_gemma2: { prefillChunk: 8, context: 41 },
  decoder_phi3: { prefillChunk: 8, context: 41 },
  classifier: { imageSizes: ['64x64'] },
  convnet: { imageSizes: ['32x32'] },
  textdet: { imageSizes: ['160x96'] },
  mllm: { imageSizes: ['224x224'], fix: { sequence_length: 90 } },
};
/** What does not compile today, exactly: exit 1, every node named with its reason. The whole-MLLM
 * export (NonZero/ScatterND masked_scatter) compiles everywhere since the masked-scatter pass. */
const FAILS: Record<string, { count: number; lines: string[]; args: string[] }> = {};
/** Compiles whose verification fails today, asserted as they fail (none: Gemma 2 and Phi-3 on npu passed once RMSNorm
 * ran as one op and their decode variants were measured on the exporter's sets right-aligned in the KV window). */
const VERIFY_FAILS: Record<string, RegExp> = {};

// ---- an ONNX TensorProto reader of our own (fields 1 dims, 2 data_type, 4 float_data, 5 int32_data, 7 int64_data, 8 name, 9 raw_data)

interface Arr {
  name: string;
  type: number;
  dims: number[];
  data: Float64Array | BigInt64Array;
}

function readPb(file: string): Arr {
  const r = protobuf.Reader.create(fs.readFileSync(file));
  let name = '',
    type = 0,
    raw: Uint8Array | undefined;
  const dims: number[] = [],
    floats: number[] = [],
    ints: bigint[] = [];
  const repeated = (wire: number, one: () => void) => {
    if (wire !== 2) return one();
    const end = r.uint32() + r.pos;
    while (r.pos < end) one();
  };
  while (r.pos < r.len) {
    const tag = r.uint32(),
      field = tag >>> 3,
      wire = tag & 7;
    if (field === 1) repeated(wire, () => dims.push(Number(r.int64().toString())));
    else if (field === 2) type = r.int32();
    else if (field === 4) repeated(wire, () => floats.push(r.float()));
    else if (field === 5) repeated(wire, () => floats.push(r.int32()));
    else if (field === 7) repeated(wire, () => ints.push(BigInt(r.int64().toString())));
    else if (field === 8) name = r.string();
    else if (field === 9) raw = r.bytes();
    else r.skipType(wire);
  }
  const n = dims.reduce((a, b) => a * b, 1);
  if (type === 7) {
    const data = raw ? new BigInt64Array(Uint8Array.from(raw).buffer, 0, n) : BigInt64Array.from(ints);
    return { name, type, dims, data };
  }
  if (type !== 1) throw new Error(`${file}: data type ${type} not handled by this reader`);
  const data = raw ? Float64Array.from(new Float32Array(Uint8Array.from(raw).buffer, 0, n)) : Float64Array.from(floats);
  return { name, type, dims, data };
}

interface TestSet {
  inputs: Record<string, Arr>;
  outputs: Record<string, Arr>;
}

function testSets(model: string, inNames: string[], outNames: string[]): TestSet[] {
  const dir = path.join(ROOT, model);
  return fs
    .readdirSync(dir)
    .filter((d) => /^test_data_set_\d+$/.test(d))
    .sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)))
    .map((d) => {
      const read = (prefix: string, names: string[]) =>
        Object.fromEntries(
          names.map((n, i) => {
            const t = readPb(path.join(dir, d, `${prefix}_${i}.pb`));
            return [t.name || n, t];
          }),
        );
      return { inputs: read('input', inNames), outputs: read('output', outNames) };
    });
}

/** Rows [i, i + b) along axis 0. */
function rowsOf(t: Arr, i: number, b: number): Arr {
  const row = t.data.length / t.dims[0]!;
  return { ...t, dims: [b, ...t.dims.slice(1)], data: t.data.slice(i * row, (i + b) * row) as Arr['data'] };
}

/** The exporter's position ids (cumsum(mask) - 1, 1 at padding) for the last `seq` positions. */
function positionIds(mask: Arr, seq: number): Arr {
  const [b, total] = mask.dims as [number, number];
  const out = new BigInt64Array(b * seq);
  for (let i = 0; i < b; i++) {
    let sum = 0n;
    for (let j = 0; j < total; j++) {
      const m = mask.data[i * total + j] as bigint;
      sum += m;
      if (j >= total - seq) out[i * seq + j - (total - seq)] = m === 0n ? 1n : sum - 1n;
    }
  }
  return { name: 'position_ids', type: 7, dims: [b, seq], data: out };
}

type Shape = (number | string | null)[];
const fits = (t: Arr, shape: Shape, fromAxis = 0) =>
  t.dims.length === shape.length && shape.every((d, i) => i < fromAxis || typeof d !== 'number' || d === t.dims[i]);

/** `n` zero slots in front of axis 2 of a [B, H, S, D] cache tensor, or axis 1 of a [B, T] mask. */
function padFront(t: Arr, n: number): Arr {
  const axis = t.dims.length - (t.dims.length === 4 ? 2 : 1);
  const inner = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1),
    outer = t.dims.slice(0, axis).reduce((a, b) => a * b, 1),
    len = t.dims[axis]! * inner;
  const data = t.type === 7 ? new BigInt64Array(outer * (len + n * inner)) : new Float64Array(outer * (len + n * inner));
  for (let o = 0; o < outer; o++) data.set(t.data.subarray(o * len, (o + 1) * len) as never, o * (len + n * inner) + n * inner);
  return { ...t, dims: t.dims.map((d, i) => (i === axis ? d + n : d)), data };
}

/** A set whose KV past is shorter than a static variant's window, right-aligned in it as the runtime feeds
 * it: past and mask padded in front (masked zero slots), torch's present.* outputs padded alike. */
function rightAligned(set: TestSet, inputs: { name: string; shape: Shape }[]): TestSet | undefined {
  const mask = inputs.find((v) => v.name === 'attention_mask'),
    given = set.inputs.attention_mask;
  if (!mask || !given || typeof mask.shape[1] !== 'number') return undefined;
  const n = mask.shape[1] - given.dims[1]!;
  const past = inputs.filter((v) => /^past_key_values\./.test(v.name) && set.inputs[v.name]);
  if (n <= 0 || !past.length || !past.every((v) => v.shape[2] === set.inputs[v.name]!.dims[2]! + n)) return undefined;
  const pad = (ts: Record<string, Arr>, re: RegExp) =>
    Object.fromEntries(Object.entries(ts).map(([k, t]) => [k, re.test(k) ? padFront(t, n) : t]));
  return { inputs: pad(set.inputs, /^(past_key_values\.|attention_mask$)/), outputs: pad(set.outputs, /^present\./) };
}

/** The feeds of one set for a candidate with these input shapes: as is, right-aligned in its KV window,
 * split into its fixed batch, or none. */
function feedsFor(orig: TestSet, inputs: { name: string; shape: Shape }[]): { feeds: Record<string, Arr>; refs: Record<string, Arr> }[] {
  let set = orig;
  const given = inputs.filter((v) => set.inputs[v.name]);
  if (!given.every((v) => fits(set.inputs[v.name]!, v.shape))) set = rightAligned(set, inputs) ?? set;
  const complete = (feeds: Record<string, Arr>): Record<string, Arr> => {
    if (!inputs.some((v) => v.name === 'position_ids') || feeds.position_ids) return feeds;
    return { ...feeds, position_ids: positionIds(feeds.attention_mask!, feeds.input_ids!.dims[1]!) };
  };
  if (given.every((v) => fits(set.inputs[v.name]!, v.shape))) return [{ feeds: complete(set.inputs), refs: set.outputs }];
  const b = given[0]!.shape[0],
    n = set.inputs[given[0]!.name]!.dims[0]!;
  if (typeof b !== 'number' || n % b !== 0 || !given.every((v) => v.shape[0] === b && fits(set.inputs[v.name]!, v.shape, 1))) return [];
  const out = [];
  for (let i = 0; i < n; i += b) {
    const slice = (ts: Record<string, Arr>) => Object.fromEntries(Object.entries(ts).map(([k, t]) => [k, rowsOf(t, i, b)]));
    out.push({ feeds: complete(slice(set.inputs)), refs: slice(set.outputs) });
  }
  return out;
}

function toOrt(t: Arr, type: string): ort.Tensor {
  if (type !== (t.type === 7 ? 'int64' : 'float32'))
    throw new Error(`artifact input '${t.name}' is ${type}, the test data ${t.type === 7 ? 'int64' : 'float32'}`);
  return t.type === 7
    ? new ort.Tensor('int64', t.data as BigInt64Array, t.dims)
    : new ort.Tensor('float32', Float32Array.from(t.data as Float64Array), t.dims);
}

// ---- figures, from scratch

function cosine(a: Float64Array, b: ArrayLike<number>, off = 0, n = a.length): number {
  let d = 0,
    x = 0,
    y = 0;
  for (let i = off; i < off + n; i++) {
    d += a[i]! * b[i]!;
    x += a[i]! * a[i]!;
    y += b[i]! * b[i]!;
  }
  return x === 0 && y === 0 ? 1 : d / Math.sqrt(x * y);
}

function logSoftmax(a: ArrayLike<number>, off: number, n: number): Float64Array {
  let m = -Infinity,
    s = 0;
  for (let i = 0; i < n; i++) m = Math.max(m, a[off + i]!);
  for (let i = 0; i < n; i++) s += Math.exp(a[off + i]! - m);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = a[off + i]! - m - Math.log(s);
  return out;
}

const order = (a: ArrayLike<number>, off: number, n: number) =>
  Array.from({ length: n }, (_, i) => i).sort((i, j) => a[off + j]! - a[off + i]! || i - j);

/** Per output, over all the runs: worst cosine, max abs error, and the task figures (decoders:
 * positions whose attention_mask is 0 skipped; teacher-forced perplexity on the ids fed). */
class Figures {
  cos = Infinity;
  maxAbs = 0;
  top1 = 0;
  top5 = 0;
  rows = 0;
  kl = 0;
  positions = 0;
  agree = 0;
  decisive = 0;
  nllRef = 0;
  nllCand = 0;
  scored = 0;
  tokCos = 0;
  tokMin = Infinity;
  tokens = 0;
  add(ref: Arr, got: ArrayLike<number>, ids?: Arr, mask?: Arr): void {
    const r = ref.data as Float64Array;
    this.cos = Math.min(this.cos, cosine(r, got));
    for (let i = 0; i < r.length; i++) this.maxAbs = Math.max(this.maxAbs, Math.abs(r[i]! - got[i]!));
    const w = ref.dims.at(-1)!,
      n = r.length / w,
      S = ref.dims.length === 3 ? ref.dims[1]! : 1;
    const total = mask?.dims[1] ?? 0;
    const real = (row: number) => !mask || mask.data[Math.floor(row / S) * total + total - S + (row % S)] !== 0n;
    for (let row = 0; row < n; row++) {
      if (!real(row)) continue;
      const off = row * w;
      const ro = order(r, off, w),
        go = order(got, off, w);
      this.top1 += +(ro[0] === go[0]);
      this.top5 += +go.slice(0, 5).includes(ro[0]!);
      this.rows++;
      const p = logSoftmax(r, off, w),
        q = logSoftmax(got, off, w);
      let kl = 0;
      for (let i = 0; i < w; i++) kl += Math.exp(p[i]!) * (p[i]! - q[i]!);
      this.kl += kl;
      this.positions++;
      if (Math.exp(p[ro[0]!]!) - Math.exp(p[ro[1]!]!) >= 0.1) {
        this.decisive++;
        this.agree += +(go[0] === ro[0]);
      }
      if (ids && (row % S) + 1 < S && real(row + 1)) {
        const next = Number(ids.data[row + 1]);
        this.nllRef -= p[next]!;
        this.nllCand -= q[next]!;
        this.scored++;
      }
      const c = cosine(r, got, off, w);
      this.tokCos += c;
      this.tokMin = Math.min(this.tokMin, c);
      this.tokens++;
    }
  }
  metric(name: string): number {
    const ppl = Math.exp(this.nllCand / this.scored);
    const m: Record<string, number> = {
      top1: this.top1 / this.rows,
      top5: this.top5 / this.rows,
      kl: this.kl / this.positions,
      nextToken: this.agree / this.decisive,
      perplexity: ppl,
      perplexityRatio: ppl / Math.exp(this.nllRef / this.scored),
      tokenCosine: this.tokCos / this.tokens,
      tokenCosineMin: this.tokMin,
    };
    return m[name] ?? NaN;
  }
}

/** Compile-reported minus independent, for the report table. */
const rows: string[] = [];
afterAll(() =>
  console.log(
    [
      '| model | target | file | sets | output | cosine compile / rerun | max abs compile / rerun | metrics compile / rerun |',
      '|---|---|---|---|---|---|---|---|',
      ...rows,
    ].join('\n'),
  ),
);

/** One plain onnxruntime session over the runs, at a graph optimization level. */
async function measure(
  file: string,
  inputs: { name: string; dtype: string }[],
  outputs: string[],
  runs: ReturnType<typeof feedsFor>,
  level: 'disabled' | 'all',
  decoder: boolean,
): Promise<Map<string, Figures>> {
  const session = await ort.InferenceSession.create(file, { graphOptimizationLevel: level });
  const types = Object.fromEntries(inputs.map((i) => [i.name, i.dtype]));
  const figs = new Map<string, Figures>(outputs.map((o) => [o, new Figures()]));
  try {
    for (const run of runs) {
      const res = await session.run(Object.fromEntries(session.inputNames.map((n) => [n, toOrt(run.feeds[n]!, types[n]!)])));
      for (const o of outputs) {
        expect(res[o]!.dims, `${file}: ${o}`).toEqual(run.refs[o]!.dims);
        figs
          .get(o)!
          .add(
            run.refs[o]!,
            res[o]!.data as Float32Array,
            decoder ? run.feeds.input_ids : undefined,
            decoder ? run.feeds.attention_mask : undefined,
          );
      }
    }
  } finally {
    await session.release();
  }
  return figs;
}

async function rerun(model: string, target: string, out: string, manifest: Manifest): Promise<void> {
  const src = await ort.InferenceSession.create(path.join(ROOT, model, 'model.onnx'));
  const sets = testSets(model, [...src.inputNames], [...src.outputNames]);
  await src.release();
  for (const e of manifest.models) {
    const v = e.verification!;
    expect(v, `${model}/${target}/${e.file}: verified`).toBeDefined();
    const inputs = e.inputs.map((i) => ({ name: i.name, shape: i.shape as Shape }));
    const decoder = e.role === 'decoder' || e.role === 'mllm';
    const runs = sets.flatMap((s) => feedsFor(s, inputs));
    if (v.inputsUsed?.synthetic) {
      // Only a variant no exporter set fits is measured on synthetic sets, and its manifest says why.
      expect(runs, `${model}/${target}/${e.file}: a test set fits, yet compile measured on synthetic data`).toHaveLength(0);
      expect(v.inputsUsed.from.join(' ')).toMatch(/user data not used: input '.*' \[[\d,]+\] does not fit the candidate's/);
      rows.push(`| ${model} | ${target} | ${e.file} | synthetic (no test set fits) | | | | |`);
      continue;
    }
    expect(v.inputsUsed?.source, `${model}/${target}/${e.file}`).toBe('test-data');
    expect(runs.length, `${model}/${target}/${e.file}: sets measured`).toBe(v.inputsUsed!.count);
    const unused = sets.filter((s) => !feedsFor(s, inputs).length).length;
    if (unused) expect(v.inputsUsed!.from.join(' ')).toContain(`${unused} of ${sets.length} sets not used: input '`);
    // As compile measures it (the graph as written), and as a runtime would optimize it.
    const figs = await measure(
      path.join(out, e.file),
      e.inputs,
      v.outputs.map((o) => o.name),
      runs,
      'disabled',
      decoder,
    );
    const opt = await measure(
      path.join(out, e.file),
      e.inputs,
      v.outputs.map((o) => o.name),
      runs,
      'all',
      decoder,
    );
    for (const o of v.outputs) {
      const f = figs.get(o.name)!,
        fo = opt.get(o.name)!,
        where = `${model}/${target}/${e.file}: ${o.name}`;
      const ms = (v.metrics ?? [])
        .filter((m) => m.name.startsWith(`${o.name}: `))
        .map((m) => ({ ...m, short: m.name.slice(o.name.length + 2) }));
      const fig = (x: number) => (x < 0.01 ? x.toExponential(3) : x.toPrecision(x > 0.99 && x < 1 ? 6 : 4));
      rows.push(
        `| ${model} | ${target} | ${e.file} | ${runs.length} | ${o.name} | ${o.cosine} / ${fig(f.cos)} (${fig(fo.cos)}) ` +
          `| ${fig(o.maxAbsError)} / ${fig(f.maxAbs)} (${fig(fo.maxAbs)}) ` +
          `| ${ms.map((m) => `${m.short} ${fig(m.value)} / ${fig(f.metric(m.short))} (${fig(fo.metric(m.short))})`).join(', ')} |`,
      );
      expect(Math.abs(o.cosine - f.cos), `${where}: cosine ${o.cosine} vs ${f.cos}`).toBeLessThanOrEqual(TOL.cosine);
      expect(Math.abs(o.maxAbsError - f.maxAbs), `${where}: max abs ${o.maxAbsError} vs ${f.maxAbs}`).toBeLessThanOrEqual(
        TOL.maxAbs * Math.max(1, f.maxAbs),
      );
      for (const m of ms) {
        const mine = f.metric(m.short);
        if (m.short === 'nextToken' && !(m.count > 0)) continue;
        const tol = m.short === 'kl' ? TOL.kl * Math.max(m.value, 1e-3) : m.short.startsWith('top') ? 0 : TOL.cosine * Math.max(1, m.value);
        expect(Math.abs(m.value - mine), `${where}: ${m.short} ${m.value} vs ${mine}`).toBeLessThanOrEqual(tol);
        if (m.passed !== undefined)
          expect(m.passed, `${where}: ${m.short} verdict with onnxruntime's optimizations on`).toBe(
            m.higherIsBetter ? fo.metric(m.short) >= m.threshold! : fo.metric(m.short) <= m.threshold!,
          );
      }
      // Fused kernels (QDQ -> integer ops on the CPU) move figures a little, never across a verdict.
      expect(Math.abs(o.cosine - fo.cos), `${where}: cosine with optimizations ${fo.cos}`).toBeLessThanOrEqual(TOL.optimizedCosine);
      expect(fo.cos, `${where}: cosine with optimizations`).toBeGreaterThanOrEqual(v.threshold);
    }
  }
}

/** How close compile's figures (onnxruntime on the fp32 source as reference) and ours (torch's outputs) must be. */
const TOL = { cosine: 2e-5, maxAbs: 0.02, kl: 0.02, optimizedCosine: 1e-4 };

describe('compile figures agree with an independent re-run of the artifact', () => {
  it.each(MODELS.flatMap((m) => TARGETS.map((t) => [m, t] as const)))(
    '%s on %s',
    async (model, target) => {
      const src = path.join(ROOT, model, 'model.onnx'),
        out = path.join(tmp, `${model}-${target}`);
      const fail = FAILS[`${model}/${target}`];
      if (fail) {
        const r = await cli('compile', src, '--target', target, '--inputs', path.join(ROOT, model), '-o', out, ...fail.args);
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr).toMatch(
          new RegExp(`^edgec: ${fail.count} nodes? cannot run on ${target} \\(use --allow-fallback to emit anyway\\)`),
        );
        const named = r.stderr
          .split('\n')
          .filter((l) => /^ {2}\S.*: node '/.test(l))
          .map((l) => l.trim());
        expect(named).toEqual(fail.lines);
        rows.push(
          `| ${model} | ${target} | does not compile: exit 1, ${[...new Set(named.map((l) => /\((\w+)\)/.exec(l)?.[1]))].join(', ')} | | | | | |`,
        );
        return;
      }
      const known = VERIFY_FAILS[`${model}/${target}`];
      if (known) {
        await expect(
          compile(src, { target, out, inputs: [path.join(ROOT, model)], ...(target === 'npu' ? NPU[model] : {}) }),
        ).rejects.toThrow(known);
        rows.push(`| ${model} | ${target} | verification fails (known gap): ${known.source} | | | | | |`);
        return;
      }
      await compile(src, { target, out, inputs: [path.join(ROOT, model)], ...(target === 'npu' ? NPU[model] : {}) });
      const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
      expect(manifest.verification).toEqual({ ran: true, passed: true });
      if (model === 'decoder_kv') {
        // A decoder fed input_ids is driven through its own KV cache too, on every target.
        const tc = manifest.models.find((m) => m.role === 'decoder')!.verification!.throughCache!;
        expect(tc.passed).toBe(true);
        expect(tc.steps).toBeGreaterThanOrEqual(16);
        expect(tc.metrics!.find((m) => m.name === 'kl')!.value).toBeGreaterThan(0);
      }
      await rerun(model, target, out, manifest);
    },
    120_000,
  );

  it('npu decoder_kv decode variant, which no exporter set fits as is: right-aligned in its KV window as a runtime feeds it, it agrees with torch', async () => {
    const out = path.join(tmp, 'decoder_kv-npu');
    if (!fs.existsSync(path.join(out, 'manifest.json')))
      await compile(path.join(ROOT, 'decoder_kv', 'model.onnx'), {
        target: 'npu',
        out,
        inputs: [path.join(ROOT, 'decoder_kv')],
        ...NPU.decoder_kv,
      });
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
    const e = manifest.models.find((m) => m.variant === 'decode')!;
    const shape = Object.fromEntries(e.inputs.map((i) => [i.name, i.shape as number[]]));
    const window = shape['past_key_values.0.key']![2]!;
    const src = await ort.InferenceSession.create(path.join(ROOT, 'decoder_kv', 'model.onnx'));
    const sets = testSets('decoder_kv', [...src.inputNames], [...src.outputNames]);
    await src.release();
    const runs: ReturnType<typeof feedsFor> = [];
    for (const set of sets.filter((x) => x.inputs.input_ids!.dims[1] === 1)) {
      for (let b = 0; b < set.inputs.input_ids!.dims[0]!; b++) {
        const row = (t: Arr) => rowsOf(t, b, 1);
        const mask = row(set.inputs.attention_mask!),
          past = mask.dims[1]! - 1,
          pad = window - past;
        // Left-pad the cache to the window: zero slots, masked out.
        const padPast = (t: Arr): Arr => {
          const [, h, , d] = t.dims as [number, number, number, number];
          const data = new Float64Array(h * window * d);
          for (let i = 0; i < h; i++) data.set((t.data as Float64Array).subarray(i * past * d, (i + 1) * past * d), (i * window + pad) * d);
          return { ...t, dims: [1, h, window, d], data };
        };
        const m: Arr = {
          ...mask,
          dims: [1, window + 1],
          data: BigInt64Array.from([...new Array<bigint>(pad).fill(0n), ...(mask.data as BigInt64Array)]),
        };
        const feeds: Record<string, Arr> = { input_ids: row(set.inputs.input_ids!), attention_mask: m, position_ids: positionIds(m, 1) };
        for (const k of Object.keys(set.inputs).filter((k) => k.startsWith('past_key_values'))) feeds[k] = padPast(row(set.inputs[k]!));
        runs.push({ feeds, refs: { logits: row(set.outputs.logits!) } });
      }
    }
    expect(runs.length).toBe(3);
    const f = (await measure(path.join(out, e.file), e.inputs, ['logits'], runs, 'disabled', true)).get('logits')!;
    rows.push(
      `| decoder_kv | npu | ${e.file} (right-aligned, rerun only) | ${runs.length} | logits | - / ${f.cos.toPrecision(6)} | - / ${f.maxAbs.toPrecision(4)} | kl - / ${f.metric('kl').toExponential(3)} |`,
    );
    expect(f.cos).toBeGreaterThanOrEqual(e.verification!.threshold);
    expect(f.metric('kl')).toBeLessThanOrEqual(METRIC_THRESHOLDS.kl);
  }, 120_000);

  it('webgpu fp16 keeps the float-min causal mask in range: decoder_nokv padding rows match torch too', async () => {
    // With the mask Add in fp16 (before measured ranges), each fully masked (padding) query row of
    // the left-padded set was off by KL 1.6 and the whole-set KL read 0.054.
    const out = path.join(tmp, 'decoder_nokv-webgpu-pad');
    const r = await compile(path.join(ROOT, 'decoder_nokv', 'model.onnx'), { target: 'webgpu', out, verify: false });
    const e = r.manifest.models[0]!;
    const src = await ort.InferenceSession.create(path.join(ROOT, 'decoder_nokv', 'model.onnx'));
    const set = testSets('decoder_nokv', [...src.inputNames], [...src.outputNames])[1]!;
    await src.release();
    const mask = set.inputs.attention_mask!;
    expect([...(mask.data as BigInt64Array)].filter((x) => x === 0n).length).toBeGreaterThan(0);
    // Every position scored, padding included (no mask handed to the figures).
    const f = (
      await measure(path.join(out, e.file), e.inputs, ['logits'], [{ feeds: set.inputs, refs: set.outputs }], 'disabled', false)
    ).get('logits')!;
    expect(f.metric('kl')).toBeLessThan(0.01);
    expect(f.cos).toBeGreaterThan(0.999);
  }, 120_000);
});
