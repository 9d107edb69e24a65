// The decoder mask transformers >= 4.40 traces (_prepare_4d_causal_attention_mask_with_cache_position,
// Llama/Qwen2/Phi-3 eager), recognised so that GroupQueryAttention can take over its causal part:
//   causal  = ConstantOfShape([S, T], min) * Cast(Range(0, T) > Reshape(Range(T - S, T), [S, 1]))
//             (or Where(Range(0, T) > ..., min, 0)), Unsqueeze'd to [1, 1, S, T], maybe Expanded to B
//   padding = causal + Cast(attention_mask[:, None, None, :]) == 0
//   mask    = Where(padding, min, causal)
// with T = attention_mask.shape[1]: key j of query i is masked when j > T - S + i (the causal mask of
// a cache of T - S, as GroupQueryAttention applies it with seqlens_k = T - 1) or when
// attention_mask[b, j] == 0. Anything else is left to MultiHeadAttention, which is exact for any mask.
import { AttrType, type Node, type Value } from '../ir/index.js';
import { constScalar, constTensor, other, producer } from './pattern.js';

const isMin = (v: Value | null | undefined) => {
  const c = constScalar(v);
  return c !== null && c <= -1e4;
};

function axesOf(n: Node): string | null {
  if (n.hasAttr('axes')) return n.attrInts('axes').join();
  const t = constTensor(n.inputs[1]);
  return t ? Array.from(t.toNumbers()).join() : null;
}

/** Through Expand and Unsqueeze (the [S, T] table made [B|1, 1, S, T]). */
function throughBroadcast(v: Value): Value {
  for (let n = v.producer; n && (n.opType === 'Expand' || n.opType === 'Unsqueeze') && n.domain === ''; n = v.producer) v = n.inputs[0]!;
  return v;
}

/** T = attention_mask.shape[1] with attention_mask a graph input. */
function totalOf(v: Value | null | undefined): Value | null {
  const g = producer(v, 'Gather');
  const shp = producer(g?.inputs[0], 'Shape');
  const am = shp?.inputs[0];
  if (!g || !am || !am.isGraphInput || am.shape?.length !== 2 || constScalar(g.inputs[1]) !== 1) return null;
  return am;
}

/** Range(0, T) > Reshape(Range(T - S, T), [S, 1]): the attention_mask behind T, or null. */
function causalGreater(gt: Node | null): Value | null {
  if (!gt) return null;
  const keys = producer(gt.inputs[0], 'Range');
  const rs = producer(gt.inputs[1], 'Reshape');
  const rows = producer(rs?.inputs[0], 'Range');
  if (!keys || !rows || constScalar(keys.inputs[0]) !== 0 || constScalar(keys.inputs[2]) !== 1 || constScalar(rows.inputs[2]) !== 1)
    return null;
  const shape = constTensor(rs!.inputs[1])?.toNumbers();
  if (!shape || shape.length !== 2 || shape[1] !== 1) return null;
  // Queries sit at T - S .. T - 1: the Range ends at T and starts at T minus something.
  const total = keys.inputs[1]!;
  const start = producer(rows.inputs[0], 'Sub');
  if (rows.inputs[1] !== total || !start || start.inputs[0] !== total) return null;
  return totalOf(total);
}

/** The [S, T] causal table: the attention_mask its T comes from. */
function causalTable(v: Value): Value | null {
  const w = producer(v, 'Where');
  if (w) return isMin(w.inputs[1]) && constScalar(w.inputs[2]) === 0 ? causalGreater(producer(w.inputs[0], 'Greater')) : null;
  const mul = producer(v, 'Mul');
  if (!mul) return null;
  for (const x of mul.inputs) {
    const full = producer(x, 'ConstantOfShape');
    const a = full?.attributes.find((f) => f.name === 'value');
    const fill = a?.type === AttrType.TENSOR ? a.value : null;
    if (!fill || fill.size !== 1 || !(fill.toNumbers()[0]! <= -1e4)) continue;
    const cast = x && producer(other(mul, x), 'Cast');
    const am = causalGreater(producer(cast?.inputs[0], 'Greater'));
    if (am) return am;
  }
  return null;
}

/** attention_mask[:, None, None, :] as float. */
function paddingOf(v: Value): Value | null {
  const cast = producer(v, 'Cast');
  let x = cast ? cast.inputs[0]! : v;
  for (let n = x.producer; n && n.opType === 'Unsqueeze'; n = x.producer) {
    if (!['1', '2', '1,2'].includes(axesOf(n) ?? '')) return null;
    x = n.inputs[0]!;
  }
  return x.isGraphInput && x.shape?.length === 2 ? x : null;
}

/** The mask is HF's causal + padding mask built from attention_mask: that graph input, else null. */
export function hfCausalPaddingMask(mask: Value): Value | null {
  const w = producer(mask, 'Where');
  if (!w || !isMin(w.inputs[1])) return null;
  const causal = w.inputs[2]!;
  const eq = producer(w.inputs[0], 'Equal');
  const sum = eq && constScalar(eq.inputs[1]) === 0 ? producer(eq.inputs[0], 'Add') : null;
  if (!sum || !sum.inputs.includes(causal)) return null;
  const pad = paddingOf(other(sum, causal)!);
  const am = causalTable(throughBroadcast(causal));
  return am && pad === am ? am : null;
}
