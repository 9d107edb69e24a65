// Values for symbolic dims: what verification feeds dynamic models and what static-shape targets
// bake in. Names follow the HF/transformers.js exporters (batch, seq, past_seq, total_seq,
// height, width, grid_h, grid_w); --fix name=N always wins.
import { Model, isFloat } from '../ir/index.js';
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

/** Resolve one dim name; undefined when no rule knows it. `kind`: what the dim's position says
 * (dimKinds), for names that say nothing, as paddle2onnx's `p2o.DynamicDimension.N`. */
export function resolveDim(name: string, c: DimContext, kind?: PosKind): number | undefined {
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
  if (kind === 'batch') return c.batch ?? 1;
  if (kind === 'height') return c.image.height;
  if (kind === 'width') return c.image.width;
  return undefined;
}

type PosKind = 'batch' | 'height' | 'width';

/** What a dim's position says, for names that say nothing (paddle2onnx's `p2o.DynamicDimension.N`):
 * in an image input [N, C, H, W] (float, C <= 4) axis 0 is the batch, axes 2 and 3 the image side. */
function dimKinds(model: Model): Map<string, PosKind> {
  const kinds = new Map<string, PosKind>();
  for (const v of feedInputs(model.graph)) {
    const s = v.type?.shape ?? [];
    if (s.length !== 4 || !isFloat(v.type!.elemType) || typeof s[1] !== 'number' || s[1] > 4) continue;
    (['batch', undefined, 'height', 'width'] as const).forEach((k, i) => {
      const d = s[i];
      if (k && typeof d === 'string' && !kinds.has(d)) kinds.set(d, k);
    });
  }
  return kinds;
}

const IMAGE_DIM = /height|width|grid_h|grid_w|patches_h|patches_w/i;
const BATCH_DIM = /batch/i;

/** Image dims by name, else by position: axes 2 and 3 of a 4-D float image input. */
const isImageDim = (d: string, kinds: Map<string, PosKind>) => IMAGE_DIM.test(d) || kinds.get(d) === 'height' || kinds.get(d) === 'width';
const isBatchDim = (d: string, kinds: Map<string, PosKind>) => BATCH_DIM.test(d) || kinds.get(d) === 'batch';

/** Every symbolic input dim resolved, and the names no rule knows. */
export function resolveDims(model: Model, c: DimContext): { dims: Record<string, number>; unresolved: string[] } {
  const dims: Record<string, number> = {};
  const unresolved: string[] = [];
  const kinds = dimKinds(model);
  for (const d of symbolicDims(model)) {
    const v = resolveDim(d, c, kinds.get(d));
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

/** Vision encoder/projector variants of a tiling policy: every tile size x encoder batch, with
 * the dims `pick` selects resolved for that shape. The policy decides image and batch dims: a
 * --fix of those names (meant for the decoder's batch, say) does not override them here. */
export function tilingVariants(
  model: Model,
  sm: SubModel,
  t: Tiling,
  seq: number,
  pick: (dim: string, kinds: Map<string, PosKind>) => boolean,
): Variant[] {
  const kinds = dimKinds(model);
  const names = symbolicDims(model).filter((d) => pick(d, kinds));
  const fix = Object.fromEntries(Object.entries(sm.opts.fix).filter(([k]) => !isImageDim(k, kinds) && !isBatchDim(k, kinds)));
  return t.sizes.flatMap((image) =>
    t.batches.map((batch) => {
      const c: DimContext = { seq, context: sm.opts.context, image, batch, patch: sm.patch, fix };
      const dims: Record<string, number> = {};
      for (const d of names) {
        const v = resolveDim(d, c, kinds.get(d));
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
    return tilingVariants(model, sm, tiling, 1, (d, kinds) => isImageDim(d, kinds) || isBatchDim(d, kinds)).map((v) => ({
      ...v,
      dims: { ...fixed, ...v.dims },
    }));
  }
  const kinds = dimKinds(model);
  return sizes.map((image) => {
    const dims = { ...fixed };
    for (const d of names) {
      const c = { seq: 1, context: 1, image, patch: sm.patch, fix: sm.opts.fix };
      const v = isImageDim(d, kinds) ? resolveDim(d, c, kinds.get(d)) : undefined;
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
