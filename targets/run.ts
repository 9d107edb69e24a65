// runArtifact(): an artifact folder's manifest -> the files for each stage of the MLLM, the image
// preprocessed as the manifest says (resized to the compiled size), and greedy generation in
// onnxruntime-node; with `compare`, the same run on the fp32 source folder and the first token
// where they part.
import fs from 'node:fs';
import path from 'node:path';
import { InputError, loadModel } from '../ir/index.js';
import {
  SessionPool,
  encodeImage,
  generate,
  type DecoderFiles,
  type GenerateResult,
  type OptLevel,
  type Prefix,
} from '../runtime/generate.js';
import { compareTensors } from '../runtime/ort.js';
import { Tensor } from '../ir/index.js';
import { DEFAULT_NORMALIZE, cropResize, decodeImage, toPixelValues, type Normalize, type RgbImage } from '../runtime/image.js';
import { parseSize, type Size } from './dims.js';
import { resolveInputs, roleOf } from './compile.js';
import { encoderCalls } from './buckets.js';
import { decoderFiles } from './through-cache.js';
import { bluelmCanvas, planImage, type PolicyName, type Tile, type TilePlan } from './plan/index.js';
import type { Manifest } from './manifest.js';
import { loadTokenizer, type TextTokenizer } from '../runtime/tokenizer.js';

export interface RunOptions {
  image?: string;
  /** Prompt token ids; or `prompt`, text for the artifact's tokenizer.json. */
  ids?: number[];
  prompt?: string;
  maxNewTokens?: number;
  /** Encoder size for dynamic vision encoders (default: the compiled size, else 224x224). */
  imageSize?: string;
  /** fp32 source folder (or file) to run the same way. */
  compare?: string;
  graphOptimizationLevel?: OptLevel;
  eos?: number;
}

export interface RunResult {
  target: string;
  imageSize?: Size;
  imageTokens: number;
  promptTokens: number;
  /** The prompt's ids (from --tokens, or --prompt through the tokenizer). */
  promptIds: number[];
  tokens: number[];
  /** The generated tokens as text, when the artifact carries a tokenizer. */
  text?: string;
  /** Why there is no text although the artifact has a tokenizer.json. */
  noText?: string;
  top2: GenerateResult['top2'];
  reference?: { tokens: number[]; top2: GenerateResult['top2']; text?: string };
  /** Index of the first generated token that differs from the reference (null: none). */
  firstDivergence?: number | null;
  /** Tiling-policy artifacts: the plan the image was run with. */
  tiling?: { policy: string; image: Size; grids: string[]; tiles: number; encoderCalls: number };
  /** Cosine and max abs error of the first step's logits against the reference's. */
  firstLogits?: { cosine: number; maxAbsError: number };
}

interface Stages {
  vision?: string;
  projector?: string;
  decoder: DecoderFiles;
  size?: Size;
}

export function readManifest(dir: string): Manifest {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch {
    throw new InputError('is not an edgec artifact (no readable manifest.json); compile one first', dir);
  }
}

function artifactStages(dir: string, m: Manifest, imageSize?: Size): Stages {
  const of = (role: string) => m.models.filter((e) => e.role === role);
  const file = (f: string) => path.join(dir, f);
  const pick = (role: string) => {
    const es = of(role);
    if (!es.length) throw new InputError(`the artifact has no ${role} sub-model`, dir);
    const got = decoderFiles(es, file);
    if (!got) throw new InputError(`${role}: variants ${es.map((e) => e.variant).join(', ')} are neither one file nor prefill/decode`, dir);
    return got;
  };
  const vis = of('vision-encoder');
  let size = imageSize;
  let vision: string | undefined, projector: string | undefined;
  if (vis.length) {
    const sized = vis.filter((e) => e.variant && /^\d+x\d+$/.test(e.variant));
    if (sized.length) {
      const want = size ? `${size.width}x${size.height}` : sized[0]!.variant!;
      const v = sized.find((e) => e.variant === want);
      if (!v) throw new InputError(`no vision encoder compiled for ${want} (have ${sized.map((e) => e.variant).join(', ')})`, dir);
      vision = file(v.file);
      size = parseSize(want);
      const p = of('projector').find((e) => e.variant === want) ?? of('projector').find((e) => !e.variant);
      projector = p && file(p.file);
    } else {
      vision = file(vis[0]!.file);
      const shape = vis[0]!.inputs[0]?.shape;
      if (!size && shape && typeof shape[2] === 'number' && typeof shape[3] === 'number') size = { width: shape[3], height: shape[2] };
      const p = of('projector')[0];
      projector = p && file(p.file);
    }
  }
  return { vision, projector, size, decoder: { embed: pick('embeddings'), decoder: pick('decoder') } };
}

function sourceStages(src: string): Stages {
  const files = resolveInputs(src);
  const by: Record<string, string> = {};
  for (const f of files) by[roleOf(loadModel(f.file), f.name)] = f.file;
  if (!by.decoder || !by.embeddings) throw new InputError('the source needs a decoder and an embeddings model to compare with', src);
  return { vision: by['vision-encoder'], projector: by.projector, decoder: { embed: by.embeddings, decoder: by.decoder } };
}

function normalizeOf(dir: string): Normalize {
  try {
    const c = JSON.parse(fs.readFileSync(path.join(dir, 'preprocessor_config.json'), 'utf8')) as {
      image_mean?: number[];
      image_std?: number[];
    };
    if (c.image_mean?.length === 3 && c.image_std?.length === 3)
      return { mean: c.image_mean as Normalize['mean'], std: c.image_std as Normalize['std'] };
  } catch {
    /* no config: the default */
  }
  return DEFAULT_NORMALIZE;
}

/** Image embeddings of a run (none without an image). */
type Vision = (pool: SessionPool, s: Stages) => Promise<Prefix>;

async function runStages(
  s: Stages,
  vision: Vision | undefined,
  ids: number[],
  o: RunOptions,
  level: OptLevel,
): Promise<GenerateResult & { imageTokens: number }> {
  const pool = new SessionPool(level);
  try {
    const prefix = vision ? await vision(pool, s) : { data: new Float32Array(0), rows: 0 };
    const r = await generate(pool, s.decoder, prefix, ids, { maxNewTokens: o.maxNewTokens ?? 16, eos: o.eos });
    return { ...r, imageTokens: prefix.rows };
  } finally {
    await pool.release();
  }
}

interface TilingSpec {
  policy: PolicyName;
  options: Record<string, number | boolean>;
  /** Static variants: tile `WxH` -> batch -> file (absent: one dynamic encoder takes any call). */
  variants?: { visionEncoder: Record<string, Record<string, string>>; projector?: Record<string, Record<string, string>> };
}

/** One encoder (+ projector) call: its tiles, in order, and the files that run it. */
interface TileCall {
  tiles: number[];
  batch: number;
  encoder: string;
  projector?: string;
}

/** The tiles' image embeddings in tile order: each call's pixels stacked (padded slots zero),
 * its rows split evenly per tile, padded slots' rows dropped. */
async function encodeTiles(pool: SessionPool, plan: TilePlan, pixels: Float32Array[], calls: TileCall[]): Promise<Prefix> {
  const perTile: Float32Array[] = new Array(plan.tiles.length);
  let hidden = 0;
  for (const c of calls) {
    const { width, height } = plan.tiles[c.tiles[0]!]!.resize;
    const x = new Float32Array(c.batch * 3 * width * height);
    c.tiles.forEach((t, i) => x.set(pixels[t]!, i * 3 * width * height));
    const out = await encodeImage(pool, c.encoder, c.projector, x, [c.batch, 3, height, width]);
    const per = out.data.length / c.batch;
    hidden = out.data.length / out.rows;
    c.tiles.forEach((t, i) => {
      perTile[t] = out.data.slice(i * per, (i + 1) * per);
    });
  }
  const total = perTile.reduce((n, d) => n + d.length, 0);
  const data = new Float32Array(total);
  let at = 0;
  for (const d of perTile) {
    data.set(d, at);
    at += d.length;
  }
  return { data, rows: total / hidden };
}

/** A tile's pixels as the plan says: its crop resized to the tile size; a BlueLM-V grid cell is cut
 * from the padded canvas instead (the resized image centred on black), so padding stays padding. */
export function tileImage(img: RgbImage, plan: TilePlan, t: Tile): RgbImage {
  if (plan.policy !== 'bluelm-v' || t.kind !== 'tile') return cropResize(img, t.crop, t.resize.width, t.resize.height);
  const g = plan.grids[0]!,
    patch = t.resize.width;
  const { rw, rh, px, py } = bluelmCanvas(img, g.cols, g.rows, patch);
  const out = { width: patch, height: patch, data: new Float32Array(patch * patch * 3) };
  const cx = t.col * patch,
    cy = t.row * patch;
  const x0 = Math.max(cx, px),
    x1 = Math.min(cx + patch, px + rw),
    y0 = Math.max(cy, py),
    y1 = Math.min(cy + patch, py + rh);
  if (x1 <= x0 || y1 <= y0) return out;
  // Canvas pixels [x0, x1) come from the resized image's [x0 - px, x1 - px): that span of the source.
  const sx = img.width / rw,
    sy = img.height / rh;
  const part = cropResize(img, { x0: (x0 - px) * sx, y0: (y0 - py) * sy, x1: (x1 - px) * sx, y1: (y1 - py) * sy }, x1 - x0, y1 - y0);
  for (let y = 0; y < part.height; y++)
    out.data.set(part.data.subarray(y * part.width * 3, (y + 1) * part.width * 3), ((y + y0 - cy) * patch + x0 - cx) * 3);
  return out;
}

/** A tiling-policy artifact's image: planned with the manifest's policy and parameters, each tile
 * cropped and resized as the plan says, encoder calls on the compiled (tile size, batch) variants;
 * the source runs the same tiles, one call per plan batch, on its dynamic encoder. */
function tiledVision(
  dir: string,
  spec: TilingSpec,
  image: string,
  norm: Normalize,
): { plan: TilePlan; artifact: Vision; source: Vision; calls: number } {
  const img = decodeImage(image);
  let plan: TilePlan;
  try {
    plan = planImage(spec.policy, { width: img.width, height: img.height }, spec.options);
  } catch (e) {
    throw new InputError(`the manifest's tiling (${spec.policy}) cannot plan this image: ${(e as Error).message}`, image);
  }
  const pixels = plan.tiles.map((t) => toPixelValues(tileImage(img, plan, t), norm));
  const byPlan =
    (files: (s: Stages) => { encoder: string; projector?: string }) =>
    (s: Stages): TileCall[] =>
      plan.batches.map((b) => ({ tiles: b.tiles, batch: b.tiles.length, ...files(s) }));
  let calls: (s: Stages) => TileCall[];
  let count = plan.batches.length;
  const v = spec.variants;
  if (v) {
    const buckets = Object.entries(v.visionEncoder).flatMap(([k, bs]) =>
      Object.keys(bs)
        .map((b) => ({ batch: Number(b), ...parseSize(k) }))
        .map(({ batch, width, height }) => ({ batch, width, height })),
    );
    const planned = encoderCalls(plan, buckets).map((c) => {
      const key = `${c.shape[3]}x${c.shape[2]}`,
        b = String(c.shape[0]);
      const proj = v.projector?.[key]?.[b];
      return {
        tiles: c.tiles,
        batch: c.shape[0],
        encoder: path.join(dir, v.visionEncoder[key]![b]!),
        ...(proj ? { projector: path.join(dir, proj) } : {}),
      };
    });
    calls = () => planned;
    count = planned.length;
  } else {
    calls = byPlan((s) => {
      if (!s.vision) throw new InputError('the artifact has no vision encoder for --image', dir);
      return { encoder: s.vision, projector: s.projector };
    });
  }
  const source = byPlan((s) => {
    if (!s.vision) throw new InputError('the source has no vision encoder to compare the image with', dir);
    return { encoder: s.vision, projector: s.projector };
  });
  return {
    plan,
    calls: count,
    artifact: (pool, s) => encodeTiles(pool, plan, pixels, calls(s)),
    source: (pool, s) => encodeTiles(pool, plan, pixels, source(s)),
  };
}

function promptIds(dir: string, o: RunOptions, tok: TextTokenizer | undefined): number[] {
  if (o.ids && o.prompt !== undefined) throw new InputError('give the prompt as token ids or as text, not both');
  if (o.prompt !== undefined) {
    if (!tok)
      throw new InputError(
        '--prompt needs tokenizer.json in the artifact (carried over from the source folder); pass --tokens IDS instead',
        dir,
      );
    const ids = tok.encode(o.prompt);
    if (!ids.length) throw new InputError('the prompt text encodes to no tokens: give some text');
    return ids;
  }
  if (!o.ids?.length) throw new InputError('no prompt tokens: pass --tokens 1,2,3 (or --prompt TEXT with a tokenizer)');
  return o.ids;
}

/** The image for a plain (untiled) artifact: resized whole to the compiled size. */
function wholeImage(image: string, size: Size, norm: Normalize): Vision {
  const img = decodeImage(image);
  const pixels = toPixelValues(cropResize(img, { x0: 0, y0: 0, x1: img.width, y1: img.height }, size.width, size.height), norm);
  return (pool, s) => {
    if (!s.vision) throw new InputError('has no vision encoder for --image', image);
    return encodeImage(pool, s.vision, s.projector, pixels, [1, 3, size.height, size.width]);
  };
}

export async function runArtifact(dir: string, o: RunOptions): Promise<RunResult> {
  const m = readManifest(dir);
  // Token ids run without text when the tokenizer cannot be read; --prompt needs it.
  let tok: TextTokenizer | undefined, noText: string | undefined;
  try {
    tok = loadTokenizer(dir);
  } catch (e) {
    if (o.prompt !== undefined || !(e instanceof InputError)) throw e;
    noText = e.message;
  }
  const ids = promptIds(dir, o, tok);
  const tiling = (m.preprocessing as { tiling?: TilingSpec } | undefined)?.tiling;
  const stages = artifactStages(dir, m, o.imageSize && !tiling ? parseSize(o.imageSize) : undefined);
  const size = stages.size ?? (o.imageSize ? parseSize(o.imageSize) : { width: 224, height: 224 });
  let artifact: Vision | undefined, source: Vision | undefined;
  const head: Partial<RunResult> = {};
  if (o.image && tiling) {
    const t = tiledVision(dir, tiling, o.image, normalizeOf(dir));
    ({ artifact, source } = t);
    head.tiling = {
      policy: t.plan.policy,
      image: t.plan.image,
      grids: t.plan.grids.map((g) => `${g.cols}x${g.rows} ${g.layer}`),
      tiles: t.plan.tiles.length,
      encoderCalls: t.calls,
    };
  } else if (o.image) {
    if (!stages.vision) throw new InputError('the artifact has no vision encoder for --image', dir);
    artifact = source = wholeImage(o.image, size, normalizeOf(dir));
    head.imageSize = size;
  }
  // The level the artifact ships for its runtime (webgpu: all), unless asked otherwise.
  const shipped = (m.models[0]?.session as { graphOptimizationLevel?: OptLevel } | undefined)?.graphOptimizationLevel;
  const level = o.graphOptimizationLevel ?? shipped ?? 'all';
  const r = await runStages(stages, artifact, ids, o, level);
  const text = (t: number[]) => (tok ? { text: tok.decode(t) } : {});
  const out: RunResult = {
    target: m.target,
    ...head,
    imageTokens: r.imageTokens,
    promptTokens: ids.length,
    promptIds: ids,
    tokens: r.tokens,
    ...text(r.tokens),
    ...(noText ? { noText } : {}),
    top2: r.top2,
  };
  if (o.compare) {
    const ref = await runStages(sourceStages(o.compare), source, ids, o, 'disabled');
    out.reference = { tokens: ref.tokens, top2: ref.top2, ...text(ref.tokens) };
    const n = Math.min(ref.tokens.length, r.tokens.length);
    const at = Array.from({ length: n }, (_, i) => i).find((i) => ref.tokens[i] !== r.tokens[i]);
    out.firstDivergence = at ?? (ref.tokens.length === r.tokens.length ? null : n);
    const c = compareTensors(
      Tensor.fromFloat32('ref', [ref.firstLogits.length], ref.firstLogits),
      Tensor.fromFloat32('cand', [r.firstLogits.length], r.firstLogits),
    );
    out.firstLogits = { cosine: Number(c.cosine.toPrecision(6)), maxAbsError: Number(c.maxAbsError.toPrecision(4)) };
  }
  return out;
}
