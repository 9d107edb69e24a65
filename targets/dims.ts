// Values for symbolic dims: what verification feeds dynamic models and what static-shape targets
// bake in. Names follow the HF/transformers.js exporters (batch, seq, past_seq, total_seq,
// height, width, grid_h, grid_w); --fix name=N always wins.
import { Model } from '../ir/index.js';
import { feedInputs } from '../ir/summary.js';

export interface Size { width: number; height: number }

export interface DimContext {
  /** Tokens per decoder call. */
  seq: number;
  /** Fixed KV-cache length (past + seq) for static decoders; past for dynamic verification. */
  context: number;
  image: Size;
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
  if (/batch/.test(n)) return 1;
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

export function parseSize(s: string): Size {
  const m = /^(\d+)[xX](\d+)$/.exec(s.trim());
  if (!m) throw new RangeError(`image size must be WxH (e.g. 448x448), got '${s}'`);
  return { width: Number(m[1]), height: Number(m[2]) };
}
