// A decoder's feeds as `edgec run` (runtime/generate.ts) gives them: prompts (image embeddings
// from the folder's vision encoder and projector, then token embeddings from its embeddings model)
// run through the fp32 source decoder with a few greedy decode steps; every decoder call's feeds
// are kept. Dynamic targets grow the past call by call; npu's static files see a KV window
// (right-aligned past, left-padded chunks, empty positions masked, explicit position ids).
// Calibration and verification use them: synthetic N(0,1) inputs_embeds beside a fully valid
// random past are nothing like this (real embeddings have an RMS near 0.1, so RMSNorm's 1/rms went
// far outside the range calibrated on N(0,1) rows, and the first generated token of the demo's npu
// artifact was wrong; webgpu and mobile reported 0.015 more logits cosine on them than on these).
import path from 'node:path';
import { DataType, Model, Tensor, loadModel } from '../ir/index.js';
import { SessionPool, encodeImage, generate, type Prefix } from '../runtime/generate.js';
import { fromOrtTensor, rng } from '../runtime/ort.js';
import { loadInputs, shapesOf, tokenSequences, type Feeds, type InputSets, type InputsUsed } from '../runtime/inputs.js';
import type { OutputSelect } from '../runtime/verify.js';
import { idBound } from './calibration.js';
import type { SubModel, TargetOptions } from './target.js';

export interface RunFeeds {
  prefill: Feeds[];
  decode: Feeds[];
  /** The last prefill call moved to the last positions of the context (calibration only: rotary
   * angles grow with the position, and the ranges must cover every position the artifact sees). */
  late?: Feeds;
  used: InputsUsed;
}

/** What the feeds depend on (a SubModel has it all). */
export type RunSpec = Pick<SubModel, 'source' | 'role' | 'siblings'> & {
  opts: Pick<TargetOptions, 'context' | 'prefillChunk' | 'imageSizes' | 'images' | 'preprocess' | 'tokens' | 'fix'>;
};

/** The decoder layout the feeds are for: npu's static KV window, or the dynamic past of webgpu/mobile. */
export type Layout = 'static' | 'dynamic';

/** Recorded feeds beyond this are dropped (a 3B decoder's window at 4k context is ~1 GB per call);
 * the first call of each kind is always kept. */
export const FEED_BUDGET_BYTES = 512 * 2 ** 20;

const KV = /^past_key_values\.\d+\.(key|value)$/;
/** Greedy steps after each prompt (decode calls recorded per prompt). */
const DECODE_STEPS = 4;

/** The source files this needs, when the decoder is one runtime/generate.ts drives: a KV-cache
 * decoder fed token ids, or one fed inputs_embeds with an embeddings model in its folder. */
export function runStages(model: Model, sm: RunSpec): { embed?: string; vision?: string; projector?: string } | undefined {
  if (sm.role !== 'decoder') return undefined;
  const ins = model.graph.inputs.map((v) => v.name);
  if (!ins.some((n) => KV.test(n)) || !ins.some((n) => /attention_mask/.test(n))) return undefined;
  if (!ins.includes('inputs_embeds')) return ins.includes('input_ids') ? {} : undefined;
  const of = (role: string) => sm.siblings?.find((s) => s.role === role)?.file;
  const embed = of('embeddings');
  return embed ? { embed, vision: of('vision-encoder'), projector: of('projector') } : undefined;
}

/** A call's token rows: inputs_embeds [1, rows, hidden] or input_ids [1, rows]. */
const rowsOf = (f: Feeds): number => (f.inputs_embeds ?? f.input_ids)!.dims[1]!;

/** One image's embeddings from the source vision encoder (and projector): the user's first image, else a synthetic one. */
export async function imagePrefix(
  pool: SessionPool,
  sm: RunSpec,
  vision: string,
  projector: string | undefined,
  seed: number,
): Promise<{ prefix: Prefix; from: string }> {
  const vm = loadModel(vision);
  const image = sm.opts.imageSizes[0];
  const { sets, used } = loadInputs(
    vm,
    { images: sm.opts.images, preprocess: sm.opts.preprocess, image, seed, dims: sm.opts.fix, dimFlag: '--fix' },
    { synthCount: 1 },
  );
  const px = Object.values(sets[0]!).find((t) => t.dims.length === 4)!;
  const one = px.dims.slice(1).reduce((a, b) => a * b, 1);
  const prefix = await encodeImage(pool, vision, projector, px.toFloat32().subarray(0, one), [1, ...px.dims.slice(1)]);
  return { prefix, from: used.synthetic ? 'a synthetic image' : `image ${used.from[0]}` };
}

/** Prompts: the user's token sequences (--tokens), else seeded random ids: one after an image
 * (as `edgec run --image` feeds it), one text-only prompt spanning more than one prefill chunk. */
export function prompts(sm: RunSpec, vocab: number, seed: number): { ids: number[][]; from: string } {
  if (sm.opts.tokens) return { ids: tokenSequences(sm.opts.tokens, [path.dirname(sm.source)]).slice(0, 4), from: sm.opts.tokens };
  const r = rng(seed);
  const draw = (n: number) => Array.from({ length: n }, () => Math.floor(r() * vocab));
  return { ids: [draw(8), draw(sm.opts.prefillChunk + 5)], from: `seeded random ids (seed ${seed})` };
}

/** Feeds of every decoder call, split by kind (prefill calls of more than one row, 1-token decode calls). */
export async function runFeeds(
  model: Model,
  sm: RunSpec,
  seed: number,
  layout: Layout,
  budget = FEED_BUDGET_BYTES,
): Promise<RunFeeds | undefined> {
  const st = runStages(model, sm);
  if (!st) return undefined;
  const { context, prefillChunk: chunk } = sm.opts;
  const calls: Feeds[] = [];
  const kept = { prefill: 0, decode: 0, bytes: 0, dropped: 0 };
  const pool = new SessionPool('disabled', (file, feeds) => {
    if (file !== sm.source) return;
    const f = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, fromOrtTensor(k, t)]));
    const kind = rowsOf(f) === 1 ? 'decode' : 'prefill';
    const bytes = Object.values(f).reduce((a, t) => a + t.byteLength, 0);
    if (kept[kind] && kept.bytes + bytes > budget) return void kept.dropped++;
    kept[kind]++;
    kept.bytes += bytes;
    calls.push(f);
  });
  const from: string[] = [];
  try {
    const img = st.vision ? await imagePrefix(pool, sm, st.vision, st.projector, seed) : undefined;
    const p = prompts(sm, idBound(loadModel(st.embed ?? sm.source)) ?? 16, seed);
    for (const [i, ids] of p.ids.entries()) {
      const prefix = i === 0 && img ? img.prefix : { data: new Float32Array(0), rows: 0 };
      const room = context - prefix.rows - DECODE_STEPS;
      if (room < 1) continue;
      const decoder = layout === 'static' ? { prefill: sm.source, decode: sm.source } : sm.source;
      const window = layout === 'static' ? { chunk, context } : undefined;
      await generate(pool, { embed: st.embed, decoder }, prefix, ids.slice(0, room), { maxNewTokens: DECODE_STEPS + 1, window });
    }
    const how =
      layout === 'static' ? `edgec run's static KV window (context ${context}, prefill chunk ${chunk})` : `edgec run's growing KV cache`;
    from.push(
      `${how} over the fp32 source: ${p.ids.length} prompts of ${p.from}` +
        `${img ? ` (the first after ${img.prefix.rows} embeddings of ${img.from})` : ''}, ${DECODE_STEPS} greedy decode steps each` +
        (kept.dropped
          ? `; ${kept.dropped} later calls dropped (recorded feeds capped at ${(budget / 2 ** 20).toFixed(budget < 2 ** 20 ? 2 : 0)} MiB)`
          : ''),
    );
  } finally {
    await pool.release();
  }
  const prefill = calls.filter((c) => rowsOf(c) > 1);
  const last = prefill.at(-1),
    pos = last?.position_ids;
  let late: Feeds | undefined;
  if (layout === 'static' && last && pos) {
    const ids = pos.toNumbers(),
      shift = context - 1 - Math.max(...ids);
    const moved = ids.map((x) => x + shift);
    if (shift > 0)
      late = {
        ...last,
        position_ids:
          pos.dtype === DataType.INT64
            ? Tensor.fromInt64('position_ids', [...pos.dims], moved)
            : Tensor.fromNumbers('position_ids', pos.dtype, [...pos.dims], moved),
      };
  }
  const decode = calls.filter((c) => rowsOf(c) === 1);
  const all = [...prefill, ...decode];
  const synthetic = !sm.opts.tokens;
  return {
    prefill,
    decode,
    late,
    used: { source: synthetic ? 'synthetic' : 'tokens', from, count: all.length, shapes: shapesOf(all), synthetic },
  };
}

/** Feeds of the calls a variant takes (a static one: those of its token rows), or undefined;
 * compared on what the runtime reads: the logits of real (not padding) rows and the KV of valid positions. */
export function feedsFor(w: RunFeeds, candidate: Model): { sets: Feeds[]; used: InputsUsed; select: OutputSelect } | undefined {
  const len = candidate.graph.inputs.find((v) => v.name === 'inputs_embeds' || v.name === 'input_ids')?.type?.shape?.[1];
  // A dynamic candidate takes every call.
  const sets = typeof len !== 'number' ? [...w.prefill, ...w.decode] : len === 1 ? w.decode : w.prefill.filter((s) => rowsOf(s) === len);
  if (!sets.length) return undefined;
  return { sets, used: { ...w.used, count: sets.length, shapes: shapesOf(sets) }, select: realPart };
}

/** Rows of `logits` [1, chunk, V] whose position is valid in the mask, positions of `present.*`
 * [1, heads, context, dim] likewise; other outputs whole. */
export function realPart(feeds: Feeds, name: string, t: Tensor): Tensor {
  const mask = feeds.attention_mask?.toNumbers();
  if (!mask || t.dims.length < 3) return t;
  const context = mask.length;
  const axis = name === 'logits' ? 1 : /^present\./.test(name) ? 2 : -1;
  const n = t.dims[axis] ?? -1;
  if (axis < 0 || n > context) return t;
  const keep = Array.from({ length: n }, (_, i) => i).filter((i) => mask[context - n + i] === 1);
  if (keep.length === n) return t;
  const outer = t.dims.slice(0, axis).reduce((a, b) => a * b, 1),
    inner = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const x = t.toFloat32(),
    y = new Float32Array(outer * keep.length * inner);
  for (let o = 0; o < outer; o++)
    keep.forEach((i, j) => y.set(x.subarray((o * n + i) * inner, (o * n + i + 1) * inner), (o * keep.length + j) * inner));
  const dims = [...t.dims];
  dims[axis] = keep.length;
  return Tensor.fromFloat32(t.name, dims, y);
}

/** A decoder `edgec run` drives, without calibration sets of the user's, is calibrated on the calls
 * the runtime makes (real embeddings, the target's KV layout), not on N(0,1) embeddings; records
 * their source on `sm.calibrationUsed`. */
export async function runCalibrationSets(model: Model, sm: SubModel, layout: Layout): Promise<Feeds[] | undefined> {
  if (sm.opts.calibration || sm.opts.inputs?.length) return undefined;
  const w = await runFeeds(model, sm, sm.opts.seed, layout);
  if (!w) return undefined;
  sm.calibrationUsed = w.used;
  return [...w.prefill, ...w.decode, ...(w.late ? [w.late] : [])];
}

/** A decoder `edgec run` drives is verified on what the runtime feeds it: held-out prompts (another
 * seed than calibration's) through the source, in the target's layout. The user's --inputs win. */
export async function runVerificationSets(
  sm: SubModel,
  candidate: Model,
  layout: Layout,
): Promise<(InputSets & { select?: OutputSelect }) | undefined> {
  if (sm.role !== 'decoder' || sm.opts.inputs?.length) return undefined;
  let w = heldOut.get(sm);
  if (!w) {
    w = runFeeds(loadModel(sm.source), sm, sm.opts.seed + 7919, layout);
    heldOut.set(sm, w);
  }
  const got = await w;
  return got && feedsFor(got, candidate);
}
const heldOut = new WeakMap<SubModel, ReturnType<typeof runFeeds>>();
