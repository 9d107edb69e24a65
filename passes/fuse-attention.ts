// Eager attention as exporters trace it -> one contrib op.
//   q/k/v 3-D -> Reshape [B, S, N, D] -> Transpose [0, 2, 1, 3]
//   Softmax(MatMul(q, Transpose(k, [0, 1, 3, 2])) / c (+ mask)) @ v -> Transpose -> Reshape [B, S, N*D]
//   (the scale as Div, Mul, or split as sqrt(s) on both q and k^T the way torch exports SDPA)
// No past, no repeated heads -> MultiHeadAttention (mask, if any, as attention_bias).
// Decoder with KV cache (k = Concat(past_key, k_new) on the sequence axis, repeat_kv as
// Unsqueeze/Expand/Reshape, mask = HF causal + padding Where built from attention_mask, its causal
// part traced from Range/Greater or already folded to a constant table under static shapes, or
// transformers >= 4.40's ConstantOfShape(min) * (j > cache_position) form: causal-mask.ts)
// -> GroupQueryAttention (total_sequence_length = attention_mask.shape[1], seqlens_k = total - 1, the
// model's mask as attention_bias), the Concat outputs becoming present_key/present_value. Query rows
// with every key masked (left-padding positions) come out differently, as the op averages over the
// causal keys only; every other row is exact for any padding. Anything else
// with 4-D key/value (repeated heads, an unrecognised mask) -> MultiHeadAttention on the BNSH
// key/value with the mask as attention_bias, which is exact for any mask.
import { DataType, Tensor, type Dim, type Graph, type Model, type Node, type Value } from '../ir/index.js';
import { definePass, type OptionSchema, type Options, type OptionsOf, type PassStats } from './pass.js';
import { ShapeInference } from './infer-shapes.js';
import { constScalar, constTensor, internalOnly, other, producer, replaceOutput, sameDim, splitHeads } from './pattern.js';
import { mul, quotient } from './shape/sym.js';
import { hfCausalPaddingMask } from './causal-mask.js';
import { applyRules, defineRule, ruleCounts, skip, type Match, type Skip } from './rule.js';

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

/**
 * A mask applied as Where(cond, scores, fill) (GPT-2's causal mask): the bias Where(cond, 0, fill) added
 * instead gives the same softmax (exp(s + fill - max) and exp(fill - max) both underflow to 0 for a fill
 * <= -1e4 and sane scores) in every row that keeps a key. A row whose every allowed key is also padded by
 * the additive mask (a left-padding position under a causal mask) comes out differently: a padding row.
 */
interface Select {
  cond: Value;
  fill: Value;
}

interface Core {
  softmax: Node;
  q4: Value;
  k4: Value;
  v4: Value;
  scale: number;
  /** Gemma 2's tanh soft-capping of the scaled scores (0: none); only GroupQueryAttention takes it. */
  softcap: number;
  mask: Value | null;
  select: Select | null;
  out: Value;
  nodes: Node[];
  heads: number;
  headSize: number;
  /** Head size of value (and of the output), which may differ from query/key's. */
  vHeadSize: number;
  /** Key sequence length T. */
  keys: Dim;
  /** tf2onnx Einsum attention: q4/k4/v4 and `out` are [B, S, N, D] (no head transposes to remove). */
  bsnd?: boolean;
  /** K^T taken straight from the [B, S, N, D] view: the 3-D key behind it. */
  kDirect: { x: Value; n: number; d: number; nodes: Node[] } | null;
  /** The [B, S, N, Dv] context before the head merge, when exporters' shape arithmetic reads its Shape:
   * those reads move to a view of the fused output (same shape), so the matched chain can go. */
  shapeRead?: Value;
}

/** Dims equal to `want`, one unknown at most (the Reshape's element count fixes it). */
function dimsAgree(got: readonly Dim[] | undefined, want: Dim[]): boolean {
  if (!got || got.length !== want.length || want.some((d) => d === null)) return false;
  let unknown = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] === null) unknown++;
    else if (!sameDim(got[i], want[i])) return false;
  }
  return unknown <= 1;
}

/** [B, N, X, Y] -> [B*N, X, Y]. */
const merged = (s: readonly Dim[]): Dim[] => [mul(s[0] ?? null, s[1] ?? null), s[2] ?? null, s[3] ?? null];

/** v3 = Reshape(v4 [B, N, X, Y], [B*N, X, Y]) (BART/CLIP bmm): v4 and the Reshape. */
function unmergeHeads(v3: Value | null | undefined): { v4: Value; node: Node } | null {
  const rs = producer(v3, 'Reshape');
  const v4 = rs?.inputs[0];
  const s4 = v4?.shape;
  if (!rs || !v4 || !s4 || s4.length !== 4 || !dimsAgree(v3!.shape, merged(s4))) return null;
  return { v4, node: rs };
}

/** Mul(x, c) with c a constant scalar and x's product read only there: x and c. */
function peelScale(v: Value): { x: Value; c: number; node: Node } | null {
  const m = producer(v, 'Mul');
  if (!m || v.uses.length !== 1 || v.isGraphOutput) return null;
  const i = m.inputs.findIndex((x) => constScalar(x) !== null);
  if (i < 0 || m.inputs.length !== 2) return null;
  return { x: m.inputs[1 - i]!, c: constScalar(m.inputs[i])!, node: m };
}

/** K^T [B, N, D, T] (or [B*N, D, T]) back to the key it transposes. */
function keyOf(kTv: Value): { k4: Value; kDirect: Core['kDirect']; nodes: Node[] } | null {
  const tr = producer(kTv, 'Transpose');
  const perm = tr?.attrInts('perm', []).join();
  if (tr && perm === '0,1,3,2') return { k4: tr.inputs[0]!, kDirect: null, nodes: [tr] };
  // GPT-2: K^T = Concat(past^T, k^T) on the last axis, its BNSH form computed anyway for `present`.
  const cat = producer(kTv, 'Concat');
  if (cat && (cat.attrInt('axis') === -1 || cat.attrInt('axis') === 3)) {
    const bnsh = kTv.uses.find((u) => u.node.opType === 'Transpose' && u.node.attrInts('perm', []).join() === '0,1,3,2')?.node;
    return bnsh ? { k4: bnsh.outputs[0]!, kDirect: null, nodes: [] } : null;
  }
  if (tr && perm === '0,2,3,1') {
    const kDirect = reshapedHeads(tr.inputs[0]);
    return kDirect ? { k4: tr.inputs[0]!, kDirect, nodes: [tr] } : null;
  }
  // 3-D bmm: Transpose(Reshape(k4, [B*N, T, D]), [0, 2, 1]).
  if (tr && perm === '0,2,1' && kTv.shape?.length === 3) {
    const u = unmergeHeads(tr.inputs[0]);
    return u ? { k4: u.v4, kDirect: null, nodes: [tr, u.node] } : null;
  }
  // BART SDPA: Reshape(Transpose(Reshape(k4, [B*N, T, D]), [0, 2, 1]), [B, N, D, T]).
  const rs = producer(kTv, 'Reshape');
  const t3 = rs && producer(rs.inputs[0], 'Transpose');
  if (!rs || !t3 || t3.attrInts('perm', []).join() !== '0,2,1') return null;
  const u = unmergeHeads(t3.inputs[0]);
  const s = u?.v4.shape;
  if (!u || !s || !dimsAgree(kTv.shape, [s[0]!, s[1]!, s[3]!, s[2]!])) return null;
  return { k4: u.v4, kDirect: null, nodes: [rs, t3, u.node] };
}

/** The scores chain from the Softmax input back to MatMul(q, k^T): scale, mask, 3-D/4-D Reshapes. */
function scoresChain(sm: Node):
  | {
      qk: Node;
      scale: number;
      softcap: number;
      mask: Value | null;
      select: Select | null;
      reshapes: Node[];
      maskRank: number;
      nodes: Node[];
    }
  | string {
  let cur = sm.inputs[0]!;
  let softcap = 0;
  let scale = 1,
    mask: Value | null = null,
    select: Select | null = null,
    maskRank = 0,
    scaled = false;
  const nodes: Node[] = [],
    reshapes: Node[] = [];
  for (let step = 0; step < 8; step++) {
    const p = cur.producer;
    if (!p || p.domain !== '') break;
    if (p.opType === 'MatMul' || p.opType === 'Einsum')
      return { qk: p, scale, softcap, mask, select, reshapes, maskRank, nodes: [...nodes, p] };
    const cap = softcapOf(p);
    if (cap) {
      // Gemma 2: cap * tanh(scaled / cap), then the mask, as GroupQueryAttention's softcap does.
      if (scaled || softcap) return 'the scores are scaled after soft-capping';
      if (select) return 'the scores are masked by Where before soft-capping';
      softcap = cap.cap;
      nodes.push(...cap.nodes);
      cur = cap.x;
      continue;
    }
    if (p.opType === 'Reshape') {
      reshapes.push(p);
    } else if (p.opType === 'Add' && !mask) {
      const [a, b] = p.inputs as Value[];
      const path = reachesMatMul(a) ? a : reachesMatMul(b) ? b : null;
      if (!path) return 'scores are not MatMul(q, k^T) plus a mask';
      if (scaled) return 'the mask is added before the scores are scaled';
      mask = other(p, path);
      maskRank = cur.shape?.length ?? 0;
      nodes.push(p);
      cur = path;
      continue;
    } else if (p.opType === 'Where' && !select && constScalar(p.inputs[2]) !== null) {
      // GPT-2's causal mask: Where(allowed, scores, fill).
      if (scaled) return 'the scores are masked by Where before they are scaled';
      if ((cur.shape?.length ?? 0) !== 4) return 'the Where mask is applied to scores that are not [B, N, S, T]';
      select = { cond: p.inputs[0]!, fill: p.inputs[2]! };
      nodes.push(p);
      cur = p.inputs[1]!;
      continue;
    } else if (p.opType === 'Div' && constScalar(p.inputs[1]) !== null) {
      scale /= constScalar(p.inputs[1])!;
      scaled = true;
    } else if (p.opType === 'Mul' && p.inputs.some((v) => constScalar(v) !== null)) {
      const i = p.inputs.findIndex((v) => constScalar(v) !== null);
      scale *= constScalar(p.inputs[i])!;
      scaled = true;
      nodes.push(p);
      cur = p.inputs[1 - i]!;
      continue;
    } else if (p.opType === 'Sub' && producer(p.inputs[0], 'Mul')?.inputs.some((v) => reachesMatMul(v))) {
      return 'scores are multiplied by a mask (Megatron: s * m - c * (1 - m)): an additive bias only for a 0/1 mask, which nothing proves here';
    } else return `scores come from ${p.opType}, not MatMul(q, k^T) scaled by a constant and masked by an Add`;
    nodes.push(p);
    cur = p.inputs[0]!;
  }
  return 'scores are not MatMul(q, k^T) scaled by a constant and masked by an Add';
}

/** Soft-capped scores c * tanh(x / c) (or x * (1/c)): x, c and the nodes; null otherwise. */
function softcapOf(mul: Node): { x: Value; cap: number; nodes: Node[] } | null {
  if (mul.opType !== 'Mul') return null;
  const i = mul.inputs.findIndex((v) => constScalar(v) !== null);
  const cap = i >= 0 ? constScalar(mul.inputs[i])! : 0;
  const tanh = producer(mul.inputs[1 - i], 'Tanh');
  const inner = tanh?.inputs[0]?.producer;
  if (!tanh || !inner || inner.domain !== '' || !(cap > 0)) return null;
  let x: Value | undefined;
  if (inner.opType === 'Div' && constScalar(inner.inputs[1]) !== null && Math.abs(constScalar(inner.inputs[1])! - cap) <= 1e-6 * cap)
    x = inner.inputs[0]!;
  else if (inner.opType === 'Mul') {
    const j = inner.inputs.findIndex((v) => constScalar(v) !== null);
    if (j >= 0 && Math.abs(constScalar(inner.inputs[j])! * cap - 1) <= 1e-6) x = inner.inputs[1 - j]!;
  }
  return x ? { x, cap, nodes: [mul, tanh, inner] } : null;
}

/** Through Div/Mul by constants, soft-capping (Tanh) and Reshapes to a MatMul. */
function reachesMatMul(v: Value | null | undefined, depth = 0): boolean {
  const p = v?.producer;
  if (!p || p.domain !== '' || depth > 6) return false;
  if (p.opType === 'MatMul' || p.opType === 'Einsum') return true;
  if (p.opType === 'Tanh') return reachesMatMul(p.inputs[0], depth + 1);
  if (p.opType === 'Reshape') return reachesMatMul(p.inputs[0], depth + 1);
  if (p.opType === 'Where') return reachesMatMul(p.inputs[1], depth + 1);
  if (p.opType === 'Div') return constScalar(p.inputs[1]) !== null && reachesMatMul(p.inputs[0], depth + 1);
  if (p.opType !== 'Mul') return false;
  const j = p.inputs.findIndex((x) => constScalar(x) !== null);
  return j >= 0 && reachesMatMul(p.inputs[1 - j], depth + 1);
}

/** Softmax output through identity Casts and a NaN guard (Where(IsNaN(p), 0, p)) to MatMul(p, v). */
function probsToValue(sm: Node): { pv: Node; nodes: Node[] } | null {
  let probs = sm.outputs[0]!;
  const nodes: Node[] = [];
  // F.softmax(w, dtype=float32).to(q.dtype) traces as identity Casts in an fp32 export.
  for (let c = identityCast(probs); c; c = identityCast(probs)) {
    nodes.push(c);
    probs = c.outputs[0]!;
  }
  // SDPA exports guard fully masked rows: Where(IsNaN(p), 0, p); with finite masks no row is NaN.
  if (probs.uses.length === 2 && !probs.isGraphOutput) {
    const isnan = probs.uses.find((u) => u.node.opType === 'IsNaN')?.node;
    const w = probs.uses.find((u) => u.node.opType === 'Where' && u.index === 2)?.node;
    if (isnan && w && w.inputs[0] === isnan.outputs[0] && constScalar(w.inputs[1]) === 0) {
      nodes.push(isnan, w);
      probs = w.outputs[0]!;
    }
  }
  const pv = probs.uses.length === 1 && !probs.isGraphOutput ? probs.uses[0]! : null;
  if (!pv || (pv.node.opType !== 'MatMul' && pv.node.opType !== 'Einsum') || pv.node.domain !== '' || pv.index !== 0) return null;
  return { pv: pv.node, nodes: [...nodes, pv.node] };
}

/** The operand and result letters of a 4-D two-operand Einsum ('aecd,abcd->acbe'). */
function einsumLetters(n: Node): [string, string, string] | null {
  const m = /^([a-z]{4}),([a-z]{4})->([a-z]{4})$/.exec(n.attrString('equation', '').replace(/\s/g, ''));
  return m ? [m[1]!, m[2]!, m[3]!] : null;
}

/**
 * tf2onnx's Einsum attention: scores = Einsum([B, T, N, D], [B, S, N, D] -> [B, N, S, T]) (either operand
 * order), context = Einsum([B, N, S, T], [B, T, N, Dv] -> [B, S, N, Dv]); q/k/v stay [B, S, N, D].
 */
function einsumCore(sm: Node, pv: Node, sc: Exclude<ReturnType<typeof scoresChain>, string>, nodes: Node[]): Core | string {
  const s = sc.qk.opType === 'Einsum' ? einsumLetters(sc.qk) : null,
    o = pv.opType === 'Einsum' ? einsumLetters(pv) : null;
  if (!s || !o || sc.reshapes.length) return 'Einsum attention is not two 4-D contractions over [B, S, N, D]';
  const [b, n, sq, t] = s[2];
  const bsnd = (l: string, seq: string) => l[0] === b && l[1] === seq && l[2] === n && !s[2].includes(l[3]!);
  const qi =
    bsnd(s[0], sq!) && bsnd(s[1], t!) && s[0][3] === s[1][3] ? 0 : bsnd(s[1], sq!) && bsnd(s[0], t!) && s[0][3] === s[1][3] ? 1 : -1;
  const [pb, pn, ps, pt] = o[0];
  const vOk = o[1][0] === pb && o[1][1] === pt && o[1][2] === pn && o[2] === `${pb}${ps}${pn}${o[1][3]}` && !o[0].includes(o[1][3]!);
  if (qi < 0 || new Set(s[2]).size !== 4 || !vOk || new Set(o[0]).size !== 4)
    return 'Einsum equations are not attention over [B, S, N, D] heads';
  let scale = sc.scale;
  const side = (v: Value) => {
    const pre = peelScale(v);
    if (!pre) return v;
    scale *= pre.c;
    nodes.push(pre.node);
    return pre.x;
  };
  const q4 = side(sc.qk.inputs[qi]!),
    k4 = side(sc.qk.inputs[1 - qi]!),
    v4 = pv.inputs[1]!;
  const sq4 = q4.shape,
    sk4 = k4.shape,
    sv4 = v4.shape;
  if (!sq4 || !sk4 || !sv4 || sq4.length !== 4 || sk4.length !== 4 || sv4.length !== 4) return 'Einsum q/k/v shapes are not known 4-D';
  const [heads, d, dv] = [sq4[2], sq4[3], sv4[3]];
  if (typeof heads !== 'number' || typeof d !== 'number' || typeof dv !== 'number' || sk4[2] !== heads || sk4[3] !== d || sv4[2] !== heads)
    return 'Einsum heads or head sizes are not static and equal';
  if (sc.mask && sc.maskRank !== 4) return `the mask is added to ${sc.maskRank}-D scores, not [B, N, S, T]`;
  const ax = sm.attrInt('axis', -1);
  if (ax !== -1 && ax !== 3) return 'Softmax is not over the last axis';
  return {
    softmax: sm,
    q4,
    k4,
    v4,
    kDirect: null,
    scale,
    softcap: sc.softcap,
    mask: sc.mask,
    select: sc.select,
    out: pv.outputs[0]!,
    nodes,
    heads,
    headSize: d,
    vHeadSize: dv,
    keys: sk4[1] ?? null,
    bsnd: true,
  };
}

function matchCore(sm: Node): Core | string | null {
  const p = probsToValue(sm);
  const where = `attention at '${sm.name}'`;
  if (!p) return null;
  const sc = scoresChain(sm);
  if (typeof sc === 'string') return `${where}: ${sc}`;
  const nodes: Node[] = [sm, ...p.nodes, ...sc.nodes];
  if (sc.qk.opType === 'Einsum' || p.pv.opType === 'Einsum') {
    const e = einsumCore(sm, p.pv, sc, nodes);
    return typeof e === 'string' ? `${where}: ${e}` : e;
  }
  let scale = sc.scale;
  // torch's scaled_dot_product_attention export scales both sides: (q * sqrt(s)) @ (k^T * sqrt(s)).
  let qv = sc.qk.inputs[0]!,
    kTv = sc.qk.inputs[1]!;
  const qs = peelScale(qv),
    ks = peelScale(kTv);
  if (qs && ks) {
    scale *= qs.c * ks.c;
    [qv, kTv] = [qs.x, ks.x];
    nodes.push(qs.node, ks.node);
  }
  let q4 = qv;
  if (qv.shape?.length === 3) {
    const u = unmergeHeads(qv);
    if (!u) return `${where}: 3-D query is not Reshape([B, N, S, D] -> [B*N, S, D])`;
    q4 = u.v4;
    nodes.push(u.node);
  }
  const key = keyOf(kTv);
  if (!key) return `${where}: key is not transposed with perm [0,1,3,2] or [0,2,3,1], nor a 3-D [B*N, D, T] from its heads`;
  nodes.push(...key.nodes);
  let v4 = p.pv.inputs[1]!;
  if (v4.shape?.length === 3) {
    const u = unmergeHeads(v4);
    if (!u) return `${where}: 3-D value is not Reshape([B, N, T, D] -> [B*N, T, D])`;
    v4 = u.v4;
    nodes.push(u.node);
  }
  const s4 = q4.shape,
    sk = key.kDirect ? key.kDirect.x.shape : key.k4.shape,
    sv = v4.shape;
  if (!s4 || s4.length !== 4 || !sv || sv.length !== 4 || !sk) return `${where}: query/value shapes are not known 4-D [B, N, S, D]`;
  const [b, n, s, d] = s4;
  const t = key.kDirect ? sk[1] : sk[2],
    dv = sv[3];
  if (typeof n !== 'number' || typeof d !== 'number' || typeof dv !== 'number') return `${where}: head count or head size is not static`;
  // Every Reshape on the scores is between [B, N, S, T] and [B*N, S, T].
  const want4: Dim[] = [b!, n, s!, t ?? null];
  if (!sc.reshapes.every((r) => dimsAgree(r.outputs[0]!.shape, r.outputs[0]!.shape?.length === 3 ? merged(want4) : want4)))
    return `${where}: a Reshape on the scores is not between [B, N, S, T] and [B*N, S, T]`;
  if (sc.mask && sc.maskRank !== 4) return `${where}: the mask is added to ${sc.maskRank}-D scores, not [B, N, S, T]`;
  const ax = sm.attrInt('axis', -1),
    rank = sm.inputs[0]!.shape?.length;
  if (ax !== -1 && ax !== (rank ?? 0) - 1) return `${where}: Softmax is not over the last axis`;
  const ctx = contextMerge(p.pv.outputs[0]!, [b!, n, s!, dv]);
  if (typeof ctx === 'string') return `${where}: ${ctx}`;
  nodes.push(...ctx.nodes);
  return {
    softmax: sm,
    q4,
    k4: key.k4,
    kDirect: key.kDirect,
    v4,
    scale,
    softcap: sc.softcap,
    mask: sc.mask,
    select: sc.select,
    out: ctx.out,
    shapeRead: ctx.shapeRead,
    nodes,
    heads: n,
    headSize: d,
    vHeadSize: dv,
    keys: t ?? null,
  };
}

/** Context [B, N, S, Dv] (or [B*N, S, Dv]) -> Transpose [0, 2, 1, 3] -> Reshape [B, S, N*Dv]. */
function contextMerge(ctx: Value, want: Dim[]): { out: Value; nodes: Node[]; shapeRead?: Value } | string {
  const nodes: Node[] = [];
  let c4 = ctx;
  const only = (v: Value) => (v.uses.length === 1 && !v.isGraphOutput ? v.uses[0]!.node : null);
  if (ctx.shape?.length === 3) {
    const rs = only(ctx);
    if (!rs || rs.opType !== 'Reshape' || !dimsAgree(ctx.shape, merged(want)) || !dimsAgree(rs.outputs[0]!.shape, want))
      return 'context [B*N, S, D] is not reshaped to [B, N, S, D]';
    nodes.push(rs);
    c4 = rs.outputs[0]!;
  }
  const tr = only(c4);
  if (!tr || tr.opType !== 'Transpose' || tr.attrInts('perm', []).join() !== '0,2,1,3')
    return 'context is not transposed back to [B, S, N, D]';
  // GPT-2 (PyTorch 1.5) reads the transposed context's Shape for the merge target: allowed, moved by the rewrite.
  const t4 = tr.outputs[0]!;
  const merges = t4.isGraphOutput ? [] : t4.uses.filter((u) => u.node.opType !== 'Shape' || u.node.domain !== '');
  const rs = merges.length === 1 ? merges[0]!.node : null;
  const shapeRead = t4.uses.length > 1 ? t4 : undefined;
  const so = rs?.outputs[0]?.shape;
  const want3 = [want[0]!, want[2]!, mul(want[1]!, want[3]!)];
  const [b, n, s, d] = want;
  if (!rs || rs.opType !== 'Reshape' || !so || !(dimsAgree(so, want3) || sameDims(reshapeDims(rs, [b!, s!, n!, d!]), want3)))
    return want.some((x) => x === null)
      ? `context merge to [B, S, N*D] not provable: the query's dims are [${want.map(String).join(', ')}] after shape inference`
      : 'context is not merged back to [B, S, N*D]';
  nodes.push(tr, rs);
  return { out: rs.outputs[0]!, nodes, shapeRead };
}

/** A Reshape's output dims from its constant target and the input's dims (0 copies, one -1 inferred). */
function reshapeDims(rs: Node, inDims: Dim[]): Dim[] | null {
  const target = ints(rs.inputs[1]);
  if (!target || rs.attrInt('allowzero', 0) !== 0) return null;
  const dims: Dim[] = target.map((t, i) => (t === 0 ? (inDims[i] ?? null) : t));
  const free = target.indexOf(-1);
  if (free >= 0)
    dims[free] = quotient(
      inDims,
      dims.filter((_, i) => i !== free),
    );
  return dims;
}

function sameDims(a: Dim[] | null, b: Dim[]): boolean {
  return !!a && a.length === b.length && a.every((d, i) => sameDim(d, b[i]));
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

/** transformers >= 4.40's mask (causal-mask.ts), in the shape causalFromAttentionMask returns. */
function hfCausalMask(mask: Value): { attentionMask: Value } | null {
  const am = hfCausalPaddingMask(mask);
  return am ? { attentionMask: am } : null;
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
  /** attention_bias: Expand to [.., S, T] (it needs both dims; a [B, 1, 1, T] padding mask has neither S
   * rows nor, for Where masks, known dims), the key length read from `key` at `keyAxis`. */
  bias?: { expand: boolean; key: Value; keyAxis: number };
  spec: { opType: string; inputs: (Value | null)[]; attrs: Record<string, unknown> };
  /** GroupQueryAttention: the mask its lengths come from and the cache Concats whose outputs become present_key/value. */
  gqa?: { attentionMask: Value; inputs: (Value | null)[]; concats: [Node, Node] };
}

function match(sm: Node, mode: string, softcap: boolean): AttentionMatch | Skip | null {
  const core = matchCore(sm);
  if (!core) return null;
  if (typeof core === 'string') return skip(core);
  const where = `attention at '${sm.name}'`;
  const capped = (why: string) => skip(`${where}: soft-capped scores (tanh, Gemma 2) need GroupQueryAttention's softcap: ${why}`);
  if (core.bsnd) {
    if (core.softcap) return capped('not a decoder');
    const bias = biasShape(core, core.q4);
    if (typeof bias === 'string') return skip(`${where}: ${bias}`);
    return {
      kind: 'mha',
      core,
      bias: { expand: bias.expand, key: core.k4, keyAxis: 1 },
      ...withoutShapeReads(core.nodes, [core.out]),
      spec: {
        opType: 'MultiHeadAttention',
        inputs: [core.q4, core.k4, core.v4],
        attrs: { num_heads: core.heads, scale: { float: core.scale } },
      },
    };
  }
  const q = splitHeads(core.q4);
  if (!q || q.n !== core.heads || q.d !== core.headSize) return skip(`${where}: query is not a [B, S, N*D] tensor split into heads`);
  // CLIP/Phi scale the projected query before splitting heads.
  const pre = peelScale(q.x);
  if (pre) {
    q.x = pre.x;
    q.nodes.push(pre.node);
    core.scale *= pre.c;
  }
  const k = core.kDirect ?? splitHeads(core.k4),
    v = splitHeads(core.v4);
  const attrs = { num_heads: core.heads, scale: { float: core.scale } };
  const bias = biasShape(core, q.x);
  if (typeof bias === 'string') return skip(`${where}: ${bias}`);
  if (k && v && k.n === core.heads && v.n === core.heads && k.d === q.d && v.d === core.vHeadSize) {
    if (core.softcap) return capped(NO_CACHE);
    const inputs: (Value | null)[] = [q.x, k.x, v.x];
    if (core.mask) inputs.push(null, null, core.mask);
    return {
      kind: 'mha',
      core,
      bias: { expand: bias.expand, key: k.x, keyAxis: 1 },
      ...withoutShapeReads([...core.nodes, ...q.nodes, ...k.nodes, ...v.nodes], kept(core)),
      spec: { opType: 'MultiHeadAttention', inputs, attrs },
      ...(causalMask(core) ? { note: `MultiHeadAttention, not GroupQueryAttention: ${NO_CACHE}` } : {}),
    };
  }
  if (core.kDirect) return skip(`${where}: key taken with perm [0,2,3,1] but value or head sizes do not fit MultiHeadAttention`);
  // Decoder: key/value in BNSH, maybe from a KV cache and with repeated heads.
  const g = gqaMatch(core, q, mode);
  if (typeof g !== 'string') return core.softcap && !softcap ? capped(SOFTCAP_OFF) : g;
  if (core.softcap) return capped(g || 'not a decoder');
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
    bias: { expand: bias.expand, key: core.k4, keyAxis: 2 },
    ...withoutShapeReads([...core.nodes, ...q.nodes], kept(core)),
    spec: { opType: 'MultiHeadAttention', inputs, attrs },
    ...(g ? { note: `MultiHeadAttention, not GroupQueryAttention: ${g}` } : {}),
  };
}

type Heads = NonNullable<ReturnType<typeof splitHeads>>;

// onnxruntime-web 1.30's WebGPU GroupQueryAttention runs with softcap set but ignores it: its output equals
// the CPU EP's with softcap 0 (decoder_gemma2, cosine 1.00000), 0.98 against the capped model.
const SOFTCAP_OFF = 'softcap fusion off for this target (its GroupQueryAttention ignores the attribute)';
const NO_CACHE = 'no KV cache (key/value are not Concat(past input, new) on the sequence axis)';

/** A decoder's causal mask (the HF forms GroupQueryAttention takes). */
const causalMask = (core: Core) => !!core.mask && !!(causalFromAttentionMask(core.mask) ?? hfCausalMask(core.mask));

/**
 * GroupQueryAttention for a KV-cache decoder's attention, or why it does not fit (the MHA fallback's
 * note); '' when nothing says decoder (no cache, no repeat_kv, no causal mask).
 */
function gqaMatch(core: Core, q: Heads, mode: string): AttentionMatch | string {
  const rk = repeatKv(core.k4),
    rv = repeatKv(core.v4);
  const kc = cacheConcat(rk?.kv ?? core.k4),
    vc = cacheConcat(rv?.kv ?? core.v4);
  if (!kc && !vc && !rk && !rv && !causalMask(core)) return '';
  if (mode !== 'gqa') return 'fuse-attention{decoder=mha}';
  if (!kc || !vc) return NO_CACHE;
  const kn = splitHeads(kc.fresh),
    vn = splitHeads(vc.fresh);
  if (!kn || !vn) return 'the new key/value are not a [B, S, kvN*D] projection split into heads';
  if (kn.d !== q.d || vn.d !== q.d || kn.n !== vn.n || core.heads % kn.n !== 0)
    return `head sizes or counts do not fit (query ${core.heads}x${q.d}, key ${kn.n}x${kn.d}, value ${vn.n}x${vn.d})`;
  if ((rk ? rk.rep : 1) * kn.n !== core.heads || (rv ? rv.rep : 1) * vn.n !== core.heads)
    return `key/value heads (${kn.n}) are not repeated to the ${core.heads} query heads by Unsqueeze/Expand/Reshape`;
  const pastFits = (c: NonNullable<typeof kc>, n: number) => c.past.shape![1] === n && c.past.shape![3] === q.d;
  if (!pastFits(kc, kn.n) || !pastFits(vc, vn.n)) return `past key/value are not [B, ${kn.n}, P, ${q.d}]`;
  if (core.select) return 'the mask is applied by Where on the scores (masked_fill), not added';
  if (!core.mask) return 'no attention mask (GroupQueryAttention needs the causal + padding mask from attention_mask)';
  const gqa = causalFromAttentionMask(core.mask) ?? hfCausalMask(core.mask);
  if (!gqa) return 'the mask is not the HF causal + padding mask built from an attention_mask input';
  const keep = [...kept(core), kc.concat.outputs[0]!, vc.concat.outputs[0]!];
  const nodes = [...core.nodes, ...q.nodes, ...(rk?.nodes ?? []), ...(rv?.nodes ?? []), kc.concat, vc.concat, ...kn.nodes, ...vn.nodes];
  // When the cache path is read elsewhere, MHA on the BNSH key/value still fits.
  if (!internalOnly(nodes, keep)) return 'the cache path (Concat, repeat_kv) is read outside the attention';
  return {
    kind: 'gqa',
    core,
    nodes,
    outputs: keep,
    spec: {
      opType: 'GroupQueryAttention',
      inputs: [],
      attrs: {
        num_heads: core.heads,
        kv_num_heads: kn.n,
        scale: { float: core.scale },
        ...(core.softcap ? { softcap: { float: core.softcap } } : {}),
      },
    },
    gqa: { attentionMask: gqa.attentionMask, inputs: [q.x, kn.x, vn.x, kc.past, vc.past], concats: [kc.concat, vc.concat] },
  };
}

/** The additive mask (and a Where mask as its bias), expanded to [.., S, T] when not already so. */
function attentionBias(g: Graph, core: Core, query: Value, b: NonNullable<AttentionMatch['bias']>): Value {
  const before = core.out.producer!;
  const p = `${core.softmax.name}/edgec_bias`;
  const add = (opType: string, inputs: Value[], attrs?: Record<string, number>) =>
    g.addNode({ opType, name: `${p}/${opType}`, inputs, outputs: [`${p}/${opType}_output_0`], attrs }, before).outputs[0]!;
  const i64 = (name: string, v: number[]) => g.addInitializer(Tensor.fromInt64(`${p}/${name}`, [v.length], v));
  let bias = core.mask;
  if (core.select) {
    const fill = constTensor(core.select.fill)!;
    const zero = g.addInitializer(Tensor.fromNumbers(`${p}/zero`, fill.dtype, [], [0]));
    const w = add('Where', [core.select.cond, zero, core.select.fill]);
    bias = bias ? add('Add', [w, bias]) : w;
  }
  if (!b.expand) return bias!;
  const s = query.shape?.[1],
    t = b.key.shape?.[b.keyAxis];
  const dim = (v: Value, axis: number) => add('Slice', [add('Shape', [v]), i64(`start${axis}`, [axis]), i64(`end${axis}`, [axis + 1])]);
  const rows =
    typeof s === 'number' && typeof t === 'number'
      ? i64('shape', [1, 1, s, t])
      : add('Concat', [i64('ones', [1, 1]), dim(query, 1), dim(b.key, b.keyAxis)], { axis: 0 });
  return add('Expand', [bias!, rows]);
}

/**
 * Whether the mask fits attention_bias [B|1, N|1, S, T] as it is, or after an Expand over [1, 1, S, T]
 * (a [B, 1, 1, T] padding mask, a 2-D [S, T] one, a Where mask of unknown dims).
 */
function biasShape(core: Core, q3: Value): { expand: boolean } | string {
  if (!core.mask && !core.select) return { expand: false };
  const ms = core.mask ? core.mask.shape : [1, 1, 1, 1];
  if (!ms || ms.length > 4) return 'mask shape is unknown or has more than 4 dims';
  const d = [...new Array<Dim>(4 - ms.length).fill(1), ...ms];
  if (d[1] !== 1 && d[1] !== core.heads) return `mask has ${String(d[1])} heads, neither 1 nor ${core.heads}`;
  const fits = !core.select && ms.length === 4 && sameDim(d[2], q3.shape?.[1]) && sameDim(d[3], core.keys);
  return { expand: !fits };
}

/**
 * The matched nodes less those whose outputs are read outside only by Shape (exporters' shape
 * arithmetic, which the rewrite leaves dead for cleanup) and what feeds them: they stay in the graph.
 */
function withoutShapeReads(nodes: Node[], outputs: Value[]): { nodes: Node[]; outputs: Value[] } {
  const set = new Set(nodes);
  const kept = new Set<Node>();
  for (let changed = true; changed;) {
    changed = false;
    for (const n of set) {
      const outside = n.outputs.flatMap((o) => (o && !outputs.includes(o) ? o.uses.filter((u) => !set.has(u.node)) : []));
      if (outside.length && outside.every((u) => u.node.opType === 'Shape' || kept.has(u.node))) {
        set.delete(n);
        kept.add(n);
        changed = true;
      }
    }
  }
  return { nodes: [...set], outputs };
}

/** [B, S, N, D] q/k/v -> [B, S, N*D] for MultiHeadAttention, its output back to [B, S, N, Dv]. */
function rewriteBsnd(model: Model, g: Graph, m: AttentionMatch): 'mha' {
  const { core } = m;
  const before = core.out.producer!;
  const p = `${core.softmax.name}/edgec_bsnd`;
  const i64 = (name: string, v: number[]) => g.addInitializer(Tensor.fromInt64(`${p}/${name}`, [v.length], v));
  const to3 = (v: Value, d: number) =>
    g.addNode(
      { opType: 'Reshape', name: `${p}/Reshape`, inputs: [v, i64(`merge${d}`, [0, 0, core.heads * d])], outputs: [`${v.name}/edgec_bsh`] },
      before,
    ).outputs[0]!;
  const inputs: (Value | null)[] = [to3(core.q4, core.headSize), to3(core.k4, core.headSize), to3(core.v4, core.vHeadSize)];
  if (m.bias && (core.mask || core.select)) inputs.push(null, null, attentionBias(g, core, core.q4, m.bias));
  model.requireOpset('com.microsoft', 1);
  const mha = g.addNode(
    {
      ...m.spec,
      domain: 'com.microsoft',
      name: `${p}/MultiHeadAttention`,
      inputs,
      outputs: [`${p}/MultiHeadAttention_output_0`],
      attrs: m.spec.attrs as never,
    },
    before,
  );
  const split = i64('split', [0, 0, core.heads, core.vHeadSize]);
  replaceOutput(g, core.out, { opType: 'Reshape', name: `${p}/Reshape_out`, inputs: [mha.outputs[0]!, split] }, m.nodes);
  return 'mha';
}

/** The values a match hands on: the output, and the context whose Shape exporters read. */
const kept = (core: Core): Value[] => (core.shapeRead ? [core.out, core.shapeRead] : [core.out]);

/** Shape reads of the matched [B, S, N, Dv] context go to Reshape(fused output, [0, 0, N, Dv]), of that shape. */
function moveShapeReads(g: Graph, m: AttentionMatch): void {
  const t4 = m.core.shapeRead;
  if (!t4) return;
  const p = `${m.core.softmax.name}/edgec_context`;
  const dims = g.addInitializer(Tensor.fromInt64(`${p}/shape`, [4], [0, 0, m.core.heads, m.core.vHeadSize]));
  const view = g.addNode({ opType: 'Reshape', name: `${p}/Reshape`, inputs: [m.core.out, dims], outputs: [`${p}/Reshape_output_0`] });
  for (const u of [...t4.uses]) u.node.setInput(u.index, view.outputs[0]!);
  g.removeDead(m.nodes);
}

function rewrite(model: Model, g: Graph, m: AttentionMatch, lengths: Map<Value, [Value, Value]>): AttentionMatch['kind'] {
  const kind = rewriteCore(model, g, m, lengths);
  moveShapeReads(g, m);
  return kind;
}

function rewriteCore(model: Model, g: Graph, m: AttentionMatch, lengths: Map<Value, [Value, Value]>): AttentionMatch['kind'] {
  if (m.core.bsnd) return rewriteBsnd(model, g, m);
  if (!m.gqa) {
    const inputs = [...m.spec.inputs];
    if (m.bias && (m.core.mask || m.core.select)) inputs.splice(3, 3, null, null, attentionBias(g, m.core, inputs[0]!, m.bias));
    replace(model, g, m.core, { ...m.spec, inputs }, m.nodes);
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
  softcap: {
    type: 'bool',
    default: true,
    description: "fuse soft-capped scores (Gemma 2) into GroupQueryAttention's softcap (off where the runtime ignores it: WebGPU)",
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
  match: (sm, { options }) => match(sm, options.decoder, options.softcap),
  rewrite: (m, { model, graph, state }) => rewrite(model, graph, m, state),
});

/**
 * One sweep of the rule, and again after re-inferring shapes while a sweep fuses something and leaves a
 * candidate: a fused layer gives the residual stream the query's [B, S, H] shape, which the next layer's
 * match may need (GPT-2 with past: the causal mask's Slice leaves S unknown until then). Skip reasons are
 * the last sweep's.
 */
function run(model: Model, options: Options): PassStats {
  const counts = ruleCounts([attentionRule]);
  // Notes are of fusions made, so every sweep's count.
  const notes: string[] = [];
  for (;;) {
    const sweep = applyRules(model, options, [attentionRule]);
    let fused = 0;
    for (const [k, n] of Object.entries(sweep.counts)) {
      counts[k] = (counts[k] ?? 0) + n;
      fused += n;
    }
    notes.push(...(sweep.notes ?? []));
    if (!fused || !sweep.skipped?.length) return { counts, skipped: sweep.skipped, ...(notes.length ? { notes } : {}) };
    for (const g of model.graph.allGraphs()) g.sortTopologically();
    new ShapeInference(model.opset('') ?? 21, true).graph(model.graph);
  }
}

export const fuseAttention = definePass({
  name: 'fuse-attention',
  description: 'eager attention -> com.microsoft MultiHeadAttention, or GroupQueryAttention for a KV-cache decoder with the HF causal mask',
  options,
  requires: ['shapes'],
  statistics: attentionRule.counts,
  run,
});
