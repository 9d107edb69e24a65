// Eager attention as exporters trace it -> one contrib op.
//   q/k/v 3-D -> Reshape [B, S, N, D] -> Transpose [0, 2, 1, 3]
//   Softmax(MatMul(q, Transpose(k, [0, 1, 3, 2])) / c (+ mask)) @ v -> Transpose -> Reshape [B, S, N*D]
//   (the scale as Div, Mul, or split as sqrt(s) on both q and k^T the way torch exports SDPA)
// No past, no repeated heads -> MultiHeadAttention (mask, if any, as attention_bias).
// Decoder with KV cache (k = Concat(past_key, k_new) on the sequence axis, repeat_kv as
// Unsqueeze/Expand/Reshape, mask = HF causal + padding Where built from attention_mask, its causal
// part traced from Range/Greater or already folded to a constant table under static shapes)
// -> GroupQueryAttention (total_sequence_length = attention_mask.shape[1], seqlens_k = total - 1, the
// model's mask as attention_bias), the Concat outputs becoming present_key/present_value. Query rows
// with every key masked (left-padding positions) come out differently, as the op averages over the
// causal keys only; every other row is exact for any padding. Anything else
// with 4-D key/value (repeated heads, an unrecognised mask) -> MultiHeadAttention on the BNSH
// key/value with the mask as attention_bias, which is exact for any mask.
import { DataType, Tensor, type Dim, type Graph, type Model, type Node, type Value } from '../ir/index.js';
import type { OptionSchema, OptionsOf } from './pass.js';
import { constScalar, constTensor, internalOnly, other, producer, replaceOutput, sameDim, splitHeads } from './pattern.js';
import { defineRule, fusionPass, skip, type Match, type Skip } from './rule.js';

function ints(v: Value | null | undefined): number[] | null {
  const t = constTensor(v);
  return t ? Array.from(t.toNumbers()) : null;
}

/** Reshape(Expand(Unsqueeze(kv, [2]), [B, kvN, rep, T, D]), [B, kvN*rep, T, D]) -> kv and rep. */
function repeatKv(v4: Value): { kv: Value; rep: number; nodes: Node[] } | null {
  const rs = producer(v4, 'Reshape');
  const ex = producer(rs?.inputs[0], 'Expand');
  const un = producer(ex?.inputs[0], 'Unsqueeze');
  if (!rs || !ex || !un || ints(un.inputs[1])?.join() !== '2') return null;
  const kv = un.inputs[0]!;
  const se = ex.outputs[0]!.shape,
    sk = kv.shape,
    so = v4.shape;
  if (!se || !sk || !so || se.length !== 5 || sk.length !== 4 || so.length !== 4) return null;
  const rep = se[2];
  if (typeof rep !== 'number' || typeof sk[1] !== 'number' || so[1] !== sk[1] * rep) return null;
  if (!sameDim(se[0], sk[0]) || !sameDim(se[3], sk[2]) || se[4] !== sk[3] || !sameDim(so[2], sk[2]) || so[3] !== sk[3]) return null;
  return { kv, rep, nodes: [rs, ex, un] };
}

interface Core {
  softmax: Node;
  q4: Value;
  k4: Value;
  v4: Value;
  scale: number;
  mask: Value | null;
  out: Value;
  nodes: Node[];
  heads: number;
  headSize: number;
  /** K^T taken straight from the [B, S, N, D] view: the 3-D key behind it. */
  kDirect: { x: Value; n: number; d: number; nodes: Node[] } | null;
}

function matchCore(sm: Node): Core | string | null {
  const ax = sm.attrInt('axis', -1);
  let probs = sm.outputs[0]!;
  const nodes: Node[] = [sm];
  // F.softmax(w, dtype=float32).to(q.dtype) traces as identity Casts in an fp32 export.
  for (let c = identityCast(probs); c; c = identityCast(probs)) {
    nodes.push(c);
    probs = c.outputs[0]!;
  }
  const pv = probs.uses.length === 1 ? probs.uses[0]! : null;
  if (!pv || pv.node.opType !== 'MatMul' || pv.index !== 0) return null;
  let scores = sm.inputs[0]!;
  nodes.push(pv.node);
  let mask: Value | null = null;
  const addM = producer(scores, 'Add');
  if (addM) {
    const [a, b] = addM.inputs as Value[];
    const isScaled = (v: Value) => !!(producer(v, 'Div') ?? producer(v, 'Mul') ?? producer(v, 'MatMul'));
    const s = isScaled(a) ? a : isScaled(b) ? b : null;
    if (!s) return null;
    mask = other(addM, s);
    nodes.push(addM);
    scores = s;
  }
  let scale = 1;
  let qk = producer(scores, 'MatMul');
  if (!qk) {
    const div = producer(scores, 'Div'),
      mul = producer(scores, 'Mul');
    if (div) {
      const c = constScalar(div.inputs[1]);
      qk = producer(div.inputs[0], 'MatMul');
      if (c === null || !qk) return null;
      scale = 1 / c;
      nodes.push(div);
    } else if (mul) {
      const mm = producer(mul.inputs[0], 'MatMul') ? 0 : 1;
      const c = constScalar(mul.inputs[1 - mm]);
      qk = producer(mul.inputs[mm], 'MatMul');
      if (c === null || !qk) return null;
      scale = c;
      nodes.push(mul);
    } else return null;
  }
  // torch's scaled_dot_product_attention export scales both sides: (q * sqrt(s)) @ (k^T * sqrt(s)).
  let q4 = qk.inputs[0]!,
    kTv = qk.inputs[1]!;
  const qs = producer(q4, 'Mul'),
    ks = producer(kTv, 'Mul');
  if (qs && ks && q4.uses.length === 1 && kTv.uses.length === 1) {
    const a = qs.inputs.findIndex((v) => constScalar(v) !== null),
      b = ks.inputs.findIndex((v) => constScalar(v) !== null);
    if (a >= 0 && b >= 0 && producer(ks.inputs[1 - b], 'Transpose')) {
      scale *= constScalar(qs.inputs[a])! * constScalar(ks.inputs[b])!;
      q4 = qs.inputs[1 - a]!;
      kTv = ks.inputs[1 - b]!;
      nodes.push(qs, ks);
    }
  }
  const kT = producer(kTv, 'Transpose');
  const perm = kT?.attrInts('perm', []).join();
  // K^T as Transpose(k4, [0,1,3,2]), or straight from the [B, S, N, D] view with [0,2,3,1].
  const kDirect = perm === '0,2,3,1' ? reshapedHeads(kT!.inputs[0]) : null;
  if (!kT || (perm !== '0,1,3,2' && !kDirect)) return null;
  nodes.push(qk, kT);
  const where = `attention at '${sm.name}'`;
  if (ax !== -1 && ax !== 3) return `${where}: Softmax is not over the last axis`;
  const ctx = pv.node.outputs[0]!;
  const tr = ctx.uses.length === 1 ? producer(ctx.uses[0]!.node.outputs[0], 'Transpose') : null;
  if (!tr || tr.attrInts('perm', []).join() !== '0,2,1,3') return `${where}: context is not transposed back to [B, S, N, D]`;
  const rs = tr.outputs[0]!.uses.length === 1 ? tr.outputs[0]!.uses[0]!.node : null;
  const sc = ctx.shape,
    so = rs?.outputs[0]?.shape;
  if (!rs || rs.opType !== 'Reshape' || !sc || !so || so.length !== 3 || sc.length !== 4)
    return `${where}: context is not merged back to [B, S, N*D]`;
  const [n, d] = [sc[1], sc[3]];
  if (typeof n !== 'number' || typeof d !== 'number' || so[2] !== n * d || !sameDim(so[0], sc[0]) || !sameDim(so[1], sc[2]))
    return `${where}: merged shape is not [B, S, N*D]`;
  nodes.push(tr, rs);
  return {
    softmax: sm,
    q4,
    k4: kT.inputs[0]!,
    kDirect,
    v4: pv.node.inputs[1]!,
    scale,
    mask,
    out: rs.outputs[0]!,
    nodes,
    heads: n,
    headSize: d,
  };
}

/** Cast between float values of one type: the only use of `v`, nothing else reads it. */
function identityCast(v: Value): Node | null {
  if (v.uses.length !== 1 || v.isGraphOutput) return null;
  const c = v.uses[0]!.node;
  return c.opType === 'Cast' && c.domain === '' && v.dtype !== undefined && c.attrInt('to') === v.dtype ? c : null;
}

/** Reshape(x [B, S, N*D], [B, S, N, D]) without the head transpose (K^T taken with perm [0,2,3,1]). */
function reshapedHeads(v4: Value | null | undefined): { x: Value; n: number; d: number; nodes: Node[] } | null {
  const rs = producer(v4, 'Reshape');
  const x = rs?.inputs[0];
  const s4 = v4?.shape,
    s3 = x?.shape;
  if (!rs || !x || !s4 || !s3 || s4.length !== 4 || s3.length !== 3) return null;
  const [n, d] = [s4[2], s4[3]];
  if (typeof n !== 'number' || typeof d !== 'number' || s3[2] !== n * d || !sameDim(s4[0], s3[0]) || !sameDim(s4[1], s3[1])) return null;
  return { x, n, d, nodes: [rs] };
}

/** A bool [.., S, T] table (leading dims 1) equal to j > (T - S) + i: causal over a cache of T - S. */
function isCausalTable(t: Tensor, total: Dim | undefined): boolean {
  if (t.dtype !== DataType.BOOL || t.dims.length < 2 || t.dims.slice(0, -2).some((d) => d !== 1)) return false;
  const [s, tt] = t.dims.slice(-2) as [number, number];
  if (total !== tt || s > tt) return false;
  const v = t.toNumbers();
  for (let i = 0; i < s; i++) for (let j = 0; j < tt; j++) if ((v[i * tt + j] !== 0) !== j > tt - s + i) return false;
  return true;
}

/** HF _prepare_4d_causal_attention_mask as traced: Where(Or(j > past + i, mask == 0), min, 0). */
function causalFromAttentionMask(mask: Value): { attentionMask: Value } | null {
  const w = producer(mask, 'Where');
  if (!w) return null;
  const neg = constScalar(w.inputs[1]),
    zero = constScalar(w.inputs[2]);
  if (neg === null || zero !== 0 || !(neg <= -1e4)) return null;
  let cond = w.inputs[0]!;
  let padding: Value | null = null;
  const or = producer(cond, 'Or');
  if (or) {
    const [a, b] = or.inputs as Value[];
    const pad = (v: Value) => {
      const un = producer(v, 'Unsqueeze');
      const eq = producer(un?.inputs[0], 'Equal');
      if (!un || !eq || ints(un.inputs[1])?.join() !== '1,2') return null;
      const [x, y] = eq.inputs as Value[];
      return constScalar(y) === 0 ? x : constScalar(x) === 0 ? y : null;
    };
    padding = pad(a) ?? pad(b);
    if (!padding) return null;
    cond = pad(a) ? b : a;
  }
  // Static shapes: fold-constants has already turned j > past + i into a constant [S, T] table.
  const folded = constTensor(cond);
  if (folded) return padding?.isGraphInput && isCausalTable(folded, padding.shape?.[1]) ? { attentionMask: padding } : null;
  const gt = producer(cond, 'Greater');
  const uk = producer(gt?.inputs[0], 'Unsqueeze'),
    uq = producer(gt?.inputs[1], 'Unsqueeze');
  if (!gt || !uk || !uq || ints(uk.inputs[1])?.join() !== '0' || ints(uq.inputs[1])?.join() !== '1') return null;
  const rk = producer(uk.inputs[0], 'Range'),
    rq = producer(uq.inputs[0], 'Range');
  if (!rk || !rq || constScalar(rk.inputs[0]) !== 0 || constScalar(rk.inputs[2]) !== 1 || constScalar(rq.inputs[2]) !== 1) return null;
  // Keys 0..total-1 with total = attention_mask.shape[1]; queries past..past+seq-1.
  const gTotal = producer(rk.inputs[1], 'Gather');
  const shp = producer(gTotal?.inputs[0], 'Shape');
  const am = shp?.inputs[0];
  if (!gTotal || !am || !am.isGraphInput || constScalar(gTotal.inputs[1]) !== 1 || (padding && padding !== am)) return null;
  const past = rq.inputs[0]!;
  const end = producer(rq.inputs[1], 'Add');
  if (!end || !end.inputs.includes(past)) return null;
  const gPast = producer(past, 'Gather');
  const pk = producer(gPast?.inputs[0], 'Shape')?.inputs[0];
  if (!gPast || !pk || !pk.isGraphInput || pk.shape?.length !== 4 || constScalar(gPast.inputs[1]) !== 2) return null;
  return { attentionMask: am };
}

/** k4 = Concat(past [B, kvN, P, D] graph input, new, axis 2) -> past and the new 4-D part. */
function cacheConcat(kv: Value): { past: Value; fresh: Value; concat: Node } | null {
  const c = producer(kv, 'Concat');
  if (!c || c.inputs.length !== 2) return null;
  const ax = c.attrInt('axis');
  if (ax !== 2 && ax !== -2) return null;
  const [past, fresh] = c.inputs as Value[];
  if (!past.isGraphInput || past.shape?.length !== 4) return null;
  return { past, fresh, concat: c };
}

/**
 * total_sequence_length = attention_mask.shape[1] and seqlens_k = total - 1 for every row, built once
 * per graph (constants when the mask's shape is static). Padding is left to attention_bias (the model's own mask), so any padding side stays
 * exact; sum(attention_mask) - 1 would be right only for right padding.
 */
function gqaLengths(g: Graph, am: Value, cache: Map<Value, [Value, Value]>, before: Node): [Value, Value] {
  const hit = cache.get(am);
  if (hit) return hit;
  const p = '/edgec/gqa';
  const [b, t] = am.shape ?? [];
  if (typeof b === 'number' && typeof t === 'number') {
    const r: [Value, Value] = [
      g.addInitializer(Tensor.fromNumbers(`${p}/seqlens_k`, DataType.INT32, [b], new Array(b).fill(t - 1))),
      g.addInitializer(Tensor.fromNumbers(`${p}/total_sequence_length`, DataType.INT32, [], [t])),
    ];
    cache.set(am, r);
    return r;
  }
  const add = (opType: string, inputs: Value[], attrs?: Record<string, number | number[]>) =>
    g.addNode({ opType, name: `${p}/${opType}`, inputs, outputs: [`${p}/${opType}_output_0`], attrs }, before).outputs[0]!;
  const one = g.addInitializer(Tensor.fromInt64(`${p}/one`, [], [1]));
  const shape = add('Shape', [am]);
  const total64 = add('Gather', [shape, one], { axis: 0 });
  const batch = add('Slice', [
    shape,
    g.addInitializer(Tensor.fromInt64(`${p}/starts`, [1], [0])),
    g.addInitializer(Tensor.fromInt64(`${p}/ends`, [1], [1])),
  ]);
  const seqlens = add('Cast', [add('Expand', [add('Sub', [total64, one]), batch])], { to: DataType.INT32 });
  const total = add('Cast', [total64], { to: DataType.INT32 });
  const r: [Value, Value] = [seqlens, total];
  cache.set(am, r);
  return r;
}

interface AttentionMatch extends Match {
  kind: 'mha' | 'gqa' | 'mhaBnsh';
  core: Core;
  spec: { opType: string; inputs: (Value | null)[]; attrs: Record<string, unknown> };
  /** GroupQueryAttention: the mask its lengths come from and the cache Concats whose outputs become present_key/value. */
  gqa?: { attentionMask: Value; inputs: (Value | null)[]; concats: [Node, Node] };
}

function match(sm: Node, mode: string): AttentionMatch | Skip | null {
  const core = matchCore(sm);
  if (!core) return null;
  if (typeof core === 'string') return skip(core);
  const where = `attention at '${sm.name}'`;
  const q = splitHeads(core.q4);
  if (!q || q.n !== core.heads || q.d !== core.headSize) return skip(`${where}: query is not a [B, S, N*D] tensor split into heads`);
  const k = core.kDirect ?? splitHeads(core.k4),
    v = splitHeads(core.v4);
  const attrs = { num_heads: core.heads, scale: { float: core.scale } };
  // attention_bias is [B or 1, N or 1, S, T].
  const ms = core.mask?.shape;
  if (core.mask && (!ms || ms.length !== 4 || (ms[1] !== 1 && ms[1] !== core.heads)))
    return skip(`${where}: mask is not a 4-D [B|1, N|1, S, T] bias`);
  // attention_bias does not broadcast over queries: a [B, 1, 1, T] padding mask (BERT) is refused by onnxruntime.
  const qs = q.x.shape?.[1];
  if (core.mask && ms && !(sameDim(ms[2], qs) || (ms[2] === 1 && qs === 1)))
    return skip(`${where}: mask has ${String(ms[2])} query rows, not the sequence length (attention_bias does not broadcast over queries)`);
  if (k && v && k.n === core.heads && v.n === core.heads && k.d === q.d && v.d === q.d) {
    const inputs: (Value | null)[] = [q.x, k.x, v.x];
    if (core.mask) inputs.push(null, null, core.mask);
    return {
      kind: 'mha',
      core,
      nodes: [...core.nodes, ...q.nodes, ...k.nodes, ...v.nodes],
      outputs: [core.out],
      spec: { opType: 'MultiHeadAttention', inputs, attrs },
    };
  }
  if (core.kDirect) return skip(`${where}: key taken with perm [0,2,3,1] but value or head sizes do not fit MultiHeadAttention`);
  // Decoder: key/value in BNSH, maybe from a KV cache and with repeated heads.
  const rk = repeatKv(core.k4),
    rv = repeatKv(core.v4);
  const kc = cacheConcat(rk?.kv ?? core.k4),
    vc = cacheConcat(rv?.kv ?? core.v4);
  const kn = kc && splitHeads(kc.fresh),
    vn = vc && splitHeads(vc.fresh);
  const gqa =
    mode === 'gqa' &&
    kc &&
    vc &&
    kn &&
    vn &&
    core.mask &&
    kn.d === q.d &&
    vn.d === q.d &&
    kn.n === vn.n &&
    core.heads % kn.n === 0 &&
    (rk ? rk.rep : 1) * kn.n === core.heads &&
    (rv ? rv.rep : 1) * vn.n === core.heads
      ? causalFromAttentionMask(core.mask)
      : null;
  const pastFits = (c: typeof kc, n: number) => !!c && c.past.shape![1] === n && c.past.shape![3] === q.d;
  if (gqa && kc && vc && kn && vn && pastFits(kc, kn.n) && pastFits(vc, vn.n)) {
    const keep = [core.out, kc.concat.outputs[0]!, vc.concat.outputs[0]!];
    const nodes = [...core.nodes, ...q.nodes, ...(rk?.nodes ?? []), ...(rv?.nodes ?? []), kc.concat, vc.concat, ...kn.nodes, ...vn.nodes];
    // When the cache path is read elsewhere, MHA on the BNSH key/value below still fits.
    if (internalOnly(nodes, keep)) {
      return {
        kind: 'gqa',
        core,
        nodes,
        outputs: keep,
        spec: {
          opType: 'GroupQueryAttention',
          inputs: [],
          attrs: { num_heads: core.heads, kv_num_heads: kn.n, scale: { float: core.scale } },
        },
        gqa: { attentionMask: gqa.attentionMask, inputs: [q.x, kn.x, vn.x, kc.past, vc.past], concats: [kc.concat, vc.concat] },
      };
    }
  }
  // Exact for any mask: MHA over the (repeated) BNSH key/value, the mask as attention_bias.
  const sk = core.k4.shape,
    sv = core.v4.shape;
  if (!sk || !sv || sk.length !== 4 || sv.length !== 4 || sk[1] !== core.heads || sv[1] !== core.heads || sk[3] !== q.d || sv[3] !== q.d)
    return skip(`${where}: key/value are not [B, N, T, D]`);
  const inputs: (Value | null)[] = [q.x, core.k4, core.v4];
  if (core.mask) inputs.push(null, null, core.mask);
  return {
    kind: 'mhaBnsh',
    core,
    nodes: [...core.nodes, ...q.nodes],
    outputs: [core.out],
    spec: { opType: 'MultiHeadAttention', inputs, attrs },
  };
}

function rewrite(model: Model, g: Graph, m: AttentionMatch, lengths: Map<Value, [Value, Value]>): AttentionMatch['kind'] {
  if (!m.gqa) {
    replace(model, g, m.core, m.spec, m.nodes);
    return m.kind;
  }
  const [seqlens, total] = gqaLengths(g, m.gqa.attentionMask, lengths, g.nodes[0]!);
  const present = m.gqa.concats.map((c) => c.outputs[0]!);
  for (const c of m.gqa.concats) c.setOutput(0, null);
  replace(
    model,
    g,
    m.core,
    {
      ...m.spec,
      inputs: [...m.gqa.inputs, seqlens, total, null, null, null, m.core.mask],
      extraOutputs: present,
    },
    m.nodes,
  );
  return m.kind;
}

function replace(
  model: Model,
  g: Graph,
  core: Core,
  spec: { opType: string; inputs: (Value | null)[]; attrs: Record<string, unknown>; extraOutputs?: Value[] },
  nodes: Node[],
): void {
  model.requireOpset('com.microsoft', 1);
  const base = core.softmax.name.replace(/\/[^/]*$/, '');
  replaceOutput(g, core.out, { ...spec, domain: 'com.microsoft', name: `${base}/${spec.opType}`, attrs: spec.attrs as never }, nodes);
}

const options = {
  decoder: {
    type: 'enum',
    values: ['gqa', 'mha'],
    default: 'gqa',
    description: 'op for KV-cache decoder attention (mha keeps the Concat cache and takes the mask as attention_bias)',
  },
} as const satisfies OptionSchema;

export const attentionRule = defineRule<AttentionMatch, Map<Value, [Value, Value]>, OptionsOf<typeof options>>({
  name: 'attention',
  anchors: ['Softmax'],
  counts: {
    mha: 'attention with 3-D q/k/v fused into MultiHeadAttention',
    mhaBnsh: 'attention with 4-D (BNSH) key/value fused into MultiHeadAttention',
    gqa: 'KV-cache decoder attention fused into GroupQueryAttention',
  },
  where: (sm) => `attention at '${sm.name}'`,
  // Per graph: seqlens_k / total_sequence_length built once per attention mask.
  state: () => new Map(),
  match: (sm, { options }) => match(sm, options.decoder),
  rewrite: (m, { model, graph, state }) => rewrite(model, graph, m, state),
});

export const fuseAttention = fusionPass({
  name: 'fuse-attention',
  description: 'eager attention -> com.microsoft MultiHeadAttention, or GroupQueryAttention for a KV-cache decoder with the HF causal mask',
  options,
  requires: ['shapes'],
  rules: [attentionRule],
});
