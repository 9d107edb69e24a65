// runArtifact(): an artifact folder's manifest -> the files for each stage of the MLLM, the image
// preprocessed as the manifest says (resized to the compiled size), and greedy generation in
// onnxruntime-node; with `compare`, the same run on the fp32 source folder and the first token
// where they part.
import fs from 'node:fs';
import path from 'node:path';
import { InputError, loadModel } from '../ir/index.js';
import { SessionPool, encodeImage, generate, type DecoderFiles, type GenerateResult, type OptLevel, type Prefix } from '../runtime/generate.js';
import { compareTensors } from '../runtime/ort.js';
import { Tensor } from '../ir/index.js';
import { DEFAULT_NORMALIZE, cropResize, decodeImage, toPixelValues, type Normalize } from '../runtime/image.js';
import { parseSize, type Size } from './dims.js';
import { resolveInputs, roleOf } from './compile.js';
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
    if (es.length === 1 && !/^(prefill\d+|decode)$/.test(es[0]!.variant ?? '')) return file(es[0]!.file);
    const pre = es.find((e) => /^prefill\d+$/.test(e.variant ?? '')), dec = es.find((e) => e.variant === 'decode');
    if (!pre || !dec) throw new InputError(`${role}: variants ${es.map((e) => e.variant).join(', ')} are neither one file nor prefill/decode`, dir);
    return { prefill: file(pre.file), decode: file(dec.file) };
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
    const c = JSON.parse(fs.readFileSync(path.join(dir, 'preprocessor_config.json'), 'utf8')) as { image_mean?: number[]; image_std?: number[] };
    if (c.image_mean?.length === 3 && c.image_std?.length === 3) return { mean: c.image_mean as Normalize['mean'], std: c.image_std as Normalize['std'] };
  } catch { /* no config: the default */ }
  return DEFAULT_NORMALIZE;
}

async function runStages(s: Stages, size: Size | undefined, pixels: Float32Array | undefined, ids: number[], o: RunOptions, level: OptLevel): Promise<GenerateResult & { imageTokens: number }> {
  const pool = new SessionPool(level);
  try {
    let prefix: Prefix = { data: new Float32Array(0), rows: 0 };
    if (pixels && s.vision && size) prefix = await encodeImage(pool, s.vision, s.projector, pixels, [1, 3, size.height, size.width]);
    const r = await generate(pool, s.decoder, prefix, ids, { maxNewTokens: o.maxNewTokens ?? 16, eos: o.eos });
    return { ...r, imageTokens: prefix.rows };
  } finally {
    await pool.release();
  }
}

function promptIds(dir: string, o: RunOptions, tok: TextTokenizer | undefined): number[] {
  if (o.ids && o.prompt !== undefined) throw new InputError('give the prompt as token ids or as text, not both');
  if (o.prompt !== undefined) {
    if (!tok) throw new InputError('--prompt needs tokenizer.json in the artifact (carried over from the source folder); pass --tokens IDS instead', dir);
    const ids = tok.encode(o.prompt);
    if (!ids.length) throw new InputError('the prompt text encodes to no tokens: give some text');
    return ids;
  }
  if (!o.ids?.length) throw new InputError('no prompt tokens: pass --tokens 1,2,3 (or --prompt TEXT with a tokenizer)');
  return o.ids;
}

export async function runArtifact(dir: string, o: RunOptions): Promise<RunResult> {
  const m = readManifest(dir);
  if (m.preprocessing && 'tiling' in m.preprocessing) throw new InputError('tiling-policy artifacts are not run end to end yet: compile with --image-sizes for `edgec run`', dir);
  // Token ids run without text when the tokenizer cannot be read; --prompt needs it.
  let tok: TextTokenizer | undefined, noText: string | undefined;
  try { tok = loadTokenizer(dir); } catch (e) {
    if (o.prompt !== undefined || !(e instanceof InputError)) throw e;
    noText = e.message;
  }
  const ids = promptIds(dir, o, tok);
  const stages = artifactStages(dir, m, o.imageSize ? parseSize(o.imageSize) : undefined);
  const size = stages.size ?? (o.imageSize ? parseSize(o.imageSize) : { width: 224, height: 224 });
  let pixels: Float32Array | undefined;
  if (o.image) {
    if (!stages.vision) throw new InputError('the artifact has no vision encoder for --image', dir);
    const img = decodeImage(o.image);
    pixels = toPixelValues(cropResize(img, { x0: 0, y0: 0, x1: img.width, y1: img.height }, size.width, size.height), normalizeOf(dir));
  }
  // The level the artifact ships for its runtime (webgpu: all), unless asked otherwise.
  const shipped = (m.models[0]?.session as { graphOptimizationLevel?: OptLevel } | undefined)?.graphOptimizationLevel;
  const level = o.graphOptimizationLevel ?? shipped ?? 'all';
  const r = await runStages(stages, size, pixels, ids, o, level);
  const text = (t: number[]) => (tok ? { text: tok.decode(t) } : {});
  const out: RunResult = { target: m.target, ...(pixels ? { imageSize: size } : {}), imageTokens: r.imageTokens, promptTokens: ids.length, promptIds: ids,
    tokens: r.tokens, ...text(r.tokens), ...(noText ? { noText } : {}), top2: r.top2 };
  if (o.compare) {
    const ref = await runStages(sourceStages(o.compare), size, pixels, ids, o, 'disabled');
    out.reference = { tokens: ref.tokens, top2: ref.top2, ...text(ref.tokens) };
    const n = Math.min(ref.tokens.length, r.tokens.length);
    const at = Array.from({ length: n }, (_, i) => i).find((i) => ref.tokens[i] !== r.tokens[i]);
    out.firstDivergence = at ?? (ref.tokens.length === r.tokens.length ? null : n);
    const c = compareTensors(Tensor.fromFloat32('ref', [ref.firstLogits.length], ref.firstLogits), Tensor.fromFloat32('cand', [r.firstLogits.length], r.firstLogits));
    out.firstLogits = { cosine: Number(c.cosine.toPrecision(6)), maxAbsError: Number(c.maxAbsError.toPrecision(4)) };
  }
  return out;
}
