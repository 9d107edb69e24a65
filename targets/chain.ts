// Shapes that chain: in an MLLM folder the vision encoder feeds the projector and the projector's
// image embeddings go into the decoder's inputs_embeds. Each file can compile and verify alone while
// the chain does not fit (an InternVL 448 tile gives the encoder [4, 1024, C] and a `--fix
// tokens=256` projector takes [4, 256, C]); a runtime then fails at the first image. Every encoder
// variant is checked against the projector variant of the same shape bucket, and the projector's
// hidden size against the decoder's and the embeddings'.
import { type Dim, type Model, type Value, isFloat } from '../ir/index.js';
import { feedInputs } from '../ir/summary.js';
import type { SubModel, Variant } from './target.js';

export interface Emitted {
  sm: SubModel;
  variant: Variant;
  file: string;
  model: Model;
}

const floatValue = (v: Value) => v.dtype !== undefined && isFloat(v.dtype);
const show = (s: readonly Dim[] | undefined) => `[${(s ?? []).map((d) => d ?? '?').join(',')}]`;

/** Dims two static shapes disagree on (symbolic or unknown dims agree with anything). */
function clash(a: readonly Dim[] | undefined, b: readonly Dim[] | undefined): boolean {
  if (!a || !b) return false;
  if (a.length !== b.length) return true;
  return a.some((d, i) => typeof d === 'number' && typeof b[i] === 'number' && d !== b[i]);
}

function imageOut(m: Model): Value | undefined {
  return m.graph.outputs.find(floatValue);
}

function floatIn(m: Model, re?: RegExp): Value | undefined {
  return feedInputs(m.graph).find((v) => floatValue(v) && (!re || re.test(v.name)));
}

/** Encoder -> projector pairs: the same variant suffix, else the projector's one unsuffixed file. */
function pairs(enc: Emitted[], proj: Emitted[]): [Emitted, Emitted][] {
  const out: [Emitted, Emitted][] = [];
  for (const e of enc) {
    const p = proj.find((x) => x.variant.suffix === e.variant.suffix) ?? (proj.length === 1 ? proj[0] : undefined);
    if (p) out.push([e, p]);
  }
  return out;
}

/** The first place the chain does not fit, as one line; undefined when it fits. */
export function shapeChainMismatch(emitted: Emitted[]): string | undefined {
  const by = (role: string) => emitted.filter((e) => e.sm.role === role);
  const proj = by('projector');
  for (const [e, p] of pairs(by('vision-encoder'), proj)) {
    const o = imageOut(e.model),
      i = floatIn(p.model);
    if (o && i && clash(o.shape, i.shape))
      return `${e.file} outputs ${o.name} ${show(o.shape)} but ${p.file} takes ${i.name} ${show(i.shape)}`;
  }
  const hidden = (v: Value | undefined) => v?.shape?.at(-1);
  for (const p of proj) {
    const o = imageOut(p.model),
      h = hidden(o);
    if (typeof h !== 'number') continue;
    for (const d of by('decoder')) {
      const i = floatIn(d.model, /embeds/);
      const hd = hidden(i);
      if (typeof hd === 'number' && hd !== h)
        return `${p.file} outputs ${o!.name} ${show(o!.shape)} but ${d.file} takes ${i!.name} ${show(i!.shape)}`;
    }
    for (const t of by('embeddings')) {
      const te = imageOut(t.model),
        ht = hidden(te);
      if (typeof ht === 'number' && ht !== h)
        return `${p.file} outputs ${o!.name} ${show(o!.shape)} but ${t.file} gives token embeddings ${show(te!.shape)}`;
    }
  }
  return undefined;
}

/** Projector variants with the input dims the encoder's output fixes for the same shape bucket (a
 * token count the rules cannot name, `num_tokens` of a 448 tile): the encoder decides them, a --fix
 * of the same name still wins (and the check above names the mismatch it makes). */
export function chainedVariants(emitted: Emitted[], sm: SubModel, model: Model, variants: Variant[]): Variant[] {
  const enc = emitted.filter((e) => e.sm.role === 'vision-encoder');
  const shape = floatIn(model)?.shape;
  if (sm.role !== 'projector' || !enc.length || !shape) return variants;
  return variants.map((v) => {
    const e = enc.find((x) => x.variant.suffix === v.suffix) ?? (enc.length === 1 ? enc[0] : undefined);
    const out = e && imageOut(e.model)?.shape;
    if (!out || out.length !== shape.length) return v;
    const dims = { ...v.dims };
    shape.forEach((d, i) => {
      const n = out[i];
      if (typeof d === 'string' && typeof n === 'number' && sm.opts.fix[d] === undefined) dims[d] = n;
    });
    return { ...v, dims };
  });
}
