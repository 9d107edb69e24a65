// Values for symbolic dims: what verification feeds dynamic models and what static-shape targets
// bake in. Names follow the HF/transformers.js exporters (batch, seq, past_seq, total_seq,
// height, width, grid_h, grid_w); --fix name=N always wins.
import { Model } from '../ir/index.js';
import { feedInputs } from '../ir/summary.js';
import type { TilePlan } from './plan/index.js';
import type { SubModel, Variant } from './target.js';

export interface Size {
  width: number;
  height: number;
}

/** Image size static encoders are built for (and dynamic ones fed) when no --image-sizes is given. */
export const DEFAULT_IMAGE: Size = { width: 224, height: 224 };

/** The representative image whose tiling plan the manifest works through. */
export const EXAMPLE_IMAGE: Size = { width: 1344, height: 896 };

/** A tiling policy's encoder shapes (compile() attaches it to the options when --policy is given). */
export interface Tiling {
  /** The example plan: its options are the policy's full parameters. */
  example: TilePlan;
  /** Tile sizes the vision encoder/projector are compiled at; empty: they stay dynamic. */
  sizes: Size[];
  /** Encoder batch sizes compiled per tile size, largest first. */
  batches: number[];
}

/** Variant suffix of a tiled vision model, and its inverse (the manifest maps plans through it). */
export const tileSuffix = (s: Size, batch: number): string => `${s.width}x${s.height}_b${batch}`;
export function parseTileSuffix(suffix: string): { width: number; height: number; batch: number } | undefined {
  const m = /^(\d+)x(\d+)_b(\d+)$/.exec(suffix);
  return m ? { width: Number(m[1]), height: Number(m[2]), batch: Number(m[3]) } : undefined;
}

export interface DimContext {
  /** Tokens per decoder call. */
  seq: number;
  /** Fixed KV-cache length (past + seq) for static decoders; past for dynamic verification. */
  context: number;
  image: Size;
  /** Images per vision encoder call (default 1). */
  batch?: number;
  /** Vision patch (stride of the patch-embedding Conv), when the folder has a vision encoder. */
  patch?: number;
  fix: Record<string, number>;
}

/** Symbolic dims of a model's fed inputs, in first-seen order. */
export function symbolicDims(model: Model): string[] {
  const out: string[] = [];
  for (const v of feedInputs(model.graph)) for (const d of v.type?.shape ?? []) if (typeof d === 'string' && !out.includes(d)) out.push(d);
  return out;
}

/** Resolve one dim name; undefined when no rule knows it. */
export function resolveDim(name: string, c: DimContext): number | undefined {
  if (c.fix[name] !== undefined) return c.fix[name];
  const n = name.toLowerCase();
  if (/batch/.test(n)) return c.batch ?? 1;
  if (/past/.test(n)) return c.context - c.seq;
  if (/total|kv_len|context/.test(n)) return c.context;
  if (/^(seq|seq_len|sequence|sequence_length|num_tokens|tokens)$/.test(n)) return c.seq;
  if (/grid_h|patches_h/.test(n)) return c.patch ? Math.floor(c.image.height / c.patch) : undefined;
  if (/grid_w|patches_w/.test(n)) return c.patch ? Math.floor(c.image.width / c.patch) : undefined;
  if (/height/.test(n)) return c.image.height;
  if (/width/.test(n)) return c.image.width;
  return undefined;
}

/** Every symbolic input dim resolved, and the names no rule knows. */
export function resolveDims(model: Model, c: DimContext): { dims: Record<string, number>; unresolved: string[] } {
  const dims: Record<string, number> = {};
  const unresolved: string[] = [];
  for (const d of symbolicDims(model)) {
    const v = resolveDim(d, c);
    if (v === undefined) unresolved.push(d);
    else dims[d] = v;
  }
  return { dims, unresolved };
}

/** Stride of the Conv a 4-D float image input feeds (the ViT patch size). */
export function patchSize(model: Model): number | undefined {
  for (const v of feedInputs(model.graph)) {
    if (v.type?.shape?.length !== 4) continue;
    for (const n of v.consumers) if (n.opType === 'Conv') return n.attrInts('strides', [1, 1])[0];
  }
  return undefined;
}

const IMAGE_DIM = /height|width|grid_h|grid_w|patches_h|patches_w/i;
const BATCH_DIM = /batch/i;

/** Vision encoder/projector variants of a tiling policy: every tile size x encoder batch, with
 * the dims `pick` selects resolved for that shape. The policy decides image and batch dims: a
 * --fix of those names (meant for the decoder's batch, say) does not override them here. */
export function tilingVariants(model: Model, sm: SubModel, t: Tiling, seq: number, pick: (dim: string) => boolean): Variant[] {
  const names = symbolicDims(model).filter(pick);
  const fix = Object.fromEntries(Object.entries(sm.opts.fix).filter(([k]) => !IMAGE_DIM.test(k) && !BATCH_DIM.test(k)));
  return t.sizes.flatMap((image) =>
    t.batches.map((batch) => {
      const c: DimContext = { seq, context: sm.opts.context, image, batch, patch: sm.patch, fix };
      const dims: Record<string, number> = {};
      for (const d of names) {
        const v = resolveDim(d, c);
        if (v !== undefined) dims[d] = v;
      }
      return { suffix: tileSuffix(image, batch), dims };
    }),
  );
}

/** Dynamic-shape targets: the dims the user asked to bake in. --fix names the model has, and, for
 * vision models when --image-sizes is given, the image dims: one variant per size (per size and
 * encoder batch under a tiling policy). */
export function requestedVariants(model: Model, sm: SubModel): Variant[] {
  const names = symbolicDims(model);
  const fixed = Object.fromEntries(Object.entries(sm.opts.fix).filter(([k]) => names.includes(k)));
  const sizes = sm.opts.imageSizes;
  if (!(sm.role === 'vision-encoder' || sm.role === 'projector') || !sizes.length) return [{ suffix: '', dims: fixed }];
  const tiling = sm.opts.tiling;
  if (tiling?.sizes.length) {
    return tilingVariants(model, sm, tiling, 1, (d) => IMAGE_DIM.test(d) || BATCH_DIM.test(d)).map((v) => ({
      ...v,
      dims: { ...fixed, ...v.dims },
    }));
  }
  return sizes.map((image) => {
    const dims = { ...fixed };
    for (const d of names) {
      const v = IMAGE_DIM.test(d) ? resolveDim(d, { seq: 1, context: 1, image, patch: sm.patch, fix: sm.opts.fix }) : undefined;
      if (v !== undefined) dims[d] = v;
    }
    return { suffix: sizes.length > 1 ? `${image.width}x${image.height}` : '', dims };
  });
}

export function parseSize(s: string): Size {
  const m = /^(\d+)[xX](\d+)$/.exec(s.trim());
  if (!m) throw new RangeError(`image size must be WxH (e.g. 448x448), got '${s}'`);
  return { width: Number(m[1]), height: Number(m[2]) };
}
