// HF rotate_half rotary embedding -> com.microsoft RotaryEmbedding (interleaved = 0):
//   out = t * cos + cat(-t[..., D/2:], t[..., :D/2]) * sin,  cos/sin = Unsqueeze(Gather(cache, position_ids), 1)
// t is [B, N, S, D] and comes from Transpose(Reshape(x, [B, S, N, D]), [0, 2, 1, 3]); the op then
// runs on the 3-D x (num_heads = N) and the Reshape/Transpose move after it, which leaves the
// attention fusion a 3-D query/key to take. The HF cache repeats its halves (emb = cat(freqs, freqs));
// the op's cache is one half, so the halves must be bit-identical.
import { DataType, Tensor, type Graph, type Model, type Node, type Value } from '../ir/index.js';
import { constTensor, other, producer, replaceOutput, sameDim, splitHeads } from './pattern.js';
import { defineRule, fusionPass, skip, Skip, type Match } from './rule.js';

interface SliceSpec {
  start: number;
  end: number;
}

function sliceLast(n: Node | null, rank: number): SliceSpec | null {
  if (!n || n.opType !== 'Slice' || n.domain !== '') return null;
  const get = (i: number) => {
    const t = constTensor(n.inputs[i]);
    return t && t.size === 1 ? Number(t.toBigInt64()[0]!) : null;
  };
  const start = get(1),
    end = get(2),
    axis = n.inputs[3] ? get(3) : null,
    step = n.inputs[4] ? get(4) : 1;
  if (start === null || end === null || axis === null || step !== 1) return null;
  if (axis !== -1 && axis !== rank - 1) return null;
  return { start, end };
}

/** cos/sin operand: Unsqueeze(Gather(cache [P, D], position_ids [B, S], axis 0), [1]). */
function cacheOf(v: Value, d: number): { cache: Tensor; cacheValue: Value; pos: Value; nodes: Node[] } | null {
  const un = producer(v, 'Unsqueeze');
  if (!un) return null;
  const axes = constTensor(un.inputs[1]);
  if (!axes || axes.size !== 1 || Number(axes.toNumbers()[0]) !== 1) return null;
  const ga = producer(un.inputs[0], 'Gather');
  if (!ga || ga.attrInt('axis', 0) !== 0) return null;
  const cache = constTensor(ga.inputs[0]);
  const pos = ga.inputs[1];
  if (!cache || !pos || cache.dims.length !== 2 || cache.dims[1] !== d) return null;
  if (cache.dtype !== DataType.FLOAT && cache.dtype !== DataType.FLOAT16) return null;
  if (pos.dtype !== DataType.INT64 || pos.shape?.length !== 2) return null;
  return { cache, cacheValue: ga.inputs[0]!, pos, nodes: [un, ga] };
}

/** First half of a [P, D] cache when its two halves are bit-identical. */
function halfCache(t: Tensor): Tensor | null {
  const [p, d] = t.dims as [number, number];
  const es = t.dtype === DataType.FLOAT ? 4 : 2;
  const src = t.bytes(),
    h = (d / 2) * es;
  const out = new Uint8Array(p * h);
  for (let r = 0; r < p; r++) {
    const row = src.subarray(r * d * es, (r + 1) * d * es);
    for (let i = 0; i < h; i++) if (row[i] !== row[h + i]) return null;
    out.set(row.subarray(0, h), r * h);
  }
  return Tensor.fromBytes(`${t.name}_half`, t.dtype, [p, d / 2], out);
}

interface RotaryMatch extends Match {
  t: Value;
  out: Value;
  cos: NonNullable<ReturnType<typeof cacheOf>>;
  sin: NonNullable<ReturnType<typeof cacheOf>>;
  nodes: Node[];
}

function match(add: Node): RotaryMatch | Skip | null {
  const out = add.outputs[0]!;
  const [m1, m2] = [producer(add.inputs[0], 'Mul'), producer(add.inputs[1], 'Mul')];
  if (!m1 || !m2) return null;
  // One product is rot * sin where rot = Concat(Neg(x2), x1).
  for (const [pm, pr] of [
    [m1, m2],
    [m2, m1],
  ] as const) {
    for (const rot of pr.inputs) {
      if (!rot) continue;
      const cat = producer(rot, 'Concat');
      if (!cat || cat.inputs.length !== 2) continue;
      const neg = producer(cat.inputs[0], 'Neg');
      if (!neg) continue;
      const x2 = neg.inputs[0]!,
        x1 = cat.inputs[1]!;
      const s2 = producer(x2, 'Slice'),
        s1 = producer(x1, 'Slice');
      if (!s1 || !s2 || s1.inputs[0] !== s2.inputs[0]) continue;
      const t = s1.inputs[0]!;
      const where = `rotary at '${add.name}'`;
      const shape = t.shape;
      const d = shape?.[3];
      if (!shape || shape.length !== 4 || typeof d !== 'number' || d % 2)
        return skip(`${where}: input is not 4-D with a known even head size`);
      const a1 = sliceLast(s1, 4),
        a2 = sliceLast(s2, 4);
      const cax = cat.attrInt('axis');
      if (!a1 || !a2 || a1.start !== 0 || a1.end !== d / 2 || a2.start !== d / 2 || a2.end < d || (cax !== -1 && cax !== 3))
        return skip(`${where}: slices are not the two halves of the last axis (rotate_half)`);
      if (!pm.inputs.includes(t)) return skip(`${where}: cos term does not multiply the same input`);
      const cos = cacheOf(other(pm, t)!, d),
        sin = cacheOf(other(pr, rot)!, d);
      if (!cos || !sin) return skip(`${where}: cos/sin are not Unsqueeze(Gather(constant cache, position_ids), 1)`);
      if (cos.pos !== sin.pos) return skip(`${where}: cos and sin use different positions`);
      return { t, out, cos, sin, nodes: [s1, s2, neg, cat, pm, pr, add], outputs: [out] };
    }
  }
  return null;
}

function rewrite(model: Model, g: Graph, m: RotaryMatch, halves: Map<Value, Value | null>): string | Skip {
  const half = (c: NonNullable<ReturnType<typeof cacheOf>>) => {
    if (!halves.has(c.cacheValue)) {
      const h = halfCache(c.cache);
      halves.set(c.cacheValue, h ? g.addInitializer(h) : null);
    }
    return halves.get(c.cacheValue)!;
  };
  const cosH = half(m.cos),
    sinH = half(m.sin);
  if (!cosH || !sinH) return skip(`rotary at '${m.out.name}': cache halves differ (not the rotate_half layout)`);
  const view = splitHeads(m.t);
  if (!view) return skip(`rotary at '${m.out.name}': input is not a Transpose(Reshape) of a 3-D tensor into [B, N, S, D]`);
  // The op wants one position per token: position_ids [B, S] of the input's own B and S.
  const ps = m.cos.pos.shape!,
    xs = view.x.shape!;
  if (!sameDim(ps[0], xs[0]) || !sameDim(ps[1], xs[1]))
    return skip(`rotary at '${m.out.name}': position_ids ${JSON.stringify(ps)} are not [B, S] of the input ${JSON.stringify(xs)}`);
  model.requireOpset('com.microsoft', 1);
  const add = m.out.producer!;
  const base = add.name.replace(/\/[^/]*$/, '');
  const rot = g.addNode(
    {
      opType: 'RotaryEmbedding',
      domain: 'com.microsoft',
      name: `${base}/RotaryEmbedding`,
      inputs: [view.x, m.cos.pos, cosH, sinH],
      outputs: [`${base}/RotaryEmbedding_output_0`],
      attrs: { interleaved: 0, num_heads: view.n },
    },
    add,
  );
  rot.outputs[0]!.type = view.x.type && { ...view.x.type, shape: view.x.type.shape && [...view.x.type.shape] };
  const rs = g.addNode(
    {
      opType: 'Reshape',
      name: `${base}/RotaryEmbedding/Reshape`,
      inputs: [rot.outputs[0]!, view.reshape.inputs[1]!],
      outputs: [`${base}/RotaryEmbedding/Reshape_output_0`],
      attrs: Object.fromEntries(view.reshape.attributes.map((a) => [a.name, a])),
    },
    add,
  );
  rs.outputs[0]!.type = view.reshape.outputs[0]!.type;
  replaceOutput(
    g,
    m.out,
    { opType: 'Transpose', name: `${base}/RotaryEmbedding/Transpose`, inputs: [rs.outputs[0]!], attrs: { perm: [0, 2, 1, 3] } },
    [...m.nodes, ...view.nodes, ...m.cos.nodes, ...m.sin.nodes],
  );
  return 'rotary';
}

/** Per graph: the half caches made so far (null when a cache's halves differ). */
type Halves = Map<Value, Value | null>;

export const rotaryRule = defineRule<RotaryMatch, Halves>({
  name: 'rotary',
  anchors: ['Add'],
  counts: { rotary: 'rotate_half rotary embeddings fused into RotaryEmbedding' },
  where: (add) => `rotary at '${add.name}'`,
  state: () => new Map(),
  match: (add) => match(add),
  rewrite: (m, { model, graph, state }) => rewrite(model, graph, m, state),
  finish({ graph, state }) {
    for (const [, v] of state) if (v && !v.uses.length) graph.removeInitializer(v);
  },
});

export const fuseRotary = fusionPass({
  name: 'fuse-rotary',
  description: 'HF rotate_half rotary embedding with cos/sin gathered by position_ids -> com.microsoft RotaryEmbedding',
  options: {},
  requires: ['shapes'],
  rules: [rotaryRule],
});
