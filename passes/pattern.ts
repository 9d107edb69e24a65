// Matching helpers shared by the fuse-* passes: constants (initializers or Constant nodes), producer
// walks over commutative binary ops, "only used inside the match" checks, and the rewrite step that
// hands the matched output to a new node and drops what became dead. Each fusion writes its own
// matcher with these; a generic pattern language would be larger than all the matchers together.
import {
  AttrType,
  DataType,
  type Dim,
  Graph,
  Node,
  NodeSpec,
  Tensor,
  Value,
  bf16ToF32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
} from '../ir/index.js';

/** Constant tensor behind a value: an initializer or the output of a Constant node. */
export function constTensor(v: Value | null | undefined): Tensor | null {
  if (!v) return null;
  if (v.initializer) return v.initializer;
  const p = v.producer;
  if (!p || p.opType !== 'Constant' || p.domain !== '') return null;
  const a = p.attributes[0];
  if (!a || p.attributes.length !== 1) return null;
  switch (a.name) {
    case 'value':
      return a.type === AttrType.TENSOR ? a.value : null;
    case 'value_float':
      return a.type === AttrType.FLOAT ? Tensor.fromFloat32(v.name, [], Float32Array.of(a.value)) : null;
    case 'value_floats':
      return a.type === AttrType.FLOATS ? Tensor.fromFloat32(v.name, [a.value.length], Float32Array.from(a.value)) : null;
    case 'value_int':
      return a.type === AttrType.INT ? Tensor.fromInt64(v.name, [], [a.value]) : null;
    case 'value_ints':
      return a.type === AttrType.INTS ? Tensor.fromInt64(v.name, [a.value.length], a.value) : null;
    default:
      return null;
  }
}

/** The single number of a one-element constant, else null. */
export function constScalar(v: Value | null | undefined): number | null {
  const t = constTensor(v);
  if (!t || t.size !== 1 || t.dtype === DataType.STRING) return null;
  return t.toNumbers()[0]!;
}

/** Round a number to what a constant of `dtype` can hold (so 1/sqrt(2) compares in fp16 models). */
function roundTo(dtype: DataType, x: number): number {
  if (dtype === DataType.FLOAT) return Math.fround(x);
  if (dtype === DataType.FLOAT16) return f16ToF32(f32ToF16(x));
  if (dtype === DataType.BFLOAT16) return bf16ToF32(f32ToBf16(x));
  return x;
}

/** A one-element constant equal to `expected` up to one or two units in the last place of its dtype. */
export function isConst(v: Value | null | undefined, expected: number): boolean {
  const t = constTensor(v);
  if (!t || t.size !== 1 || t.dtype === DataType.STRING) return false;
  const x = t.toNumbers()[0]!;
  const want = roundTo(t.dtype, expected);
  const rel = t.dtype === DataType.FLOAT16 || t.dtype === DataType.BFLOAT16 ? 2e-3 : t.dtype === DataType.FLOAT ? 3e-7 : 0;
  return Math.abs(x - want) <= rel * Math.abs(want);
}

/** Still in its graph: a removed node no longer produces its outputs (O(1), unlike a nodes scan). */
export function isLive(n: Node): boolean {
  return n.outputs.some((o) => o?.producer === n);
}

/** Producer of v when it is `opType` in the default domain (or `domain`). */
export function producer(v: Value | null | undefined, opType: string, domain = ''): Node | null {
  const p = v?.producer;
  return p && p.opType === opType && p.domain === domain ? p : null;
}

/** For a commutative binary node: the operand other than `v` (null if v is not an operand). */
export function other(node: Node, v: Value): Value | null {
  if (node.inputs[0] === v) return node.inputs[1] ?? null;
  if (node.inputs[1] === v) return node.inputs[0] ?? null;
  return null;
}

/** Operands of a binary node ordered so that `pred(first)` holds, trying both orders. */
export function orderBy(node: Node, pred: (v: Value) => boolean): [Value, Value] | null {
  const a = node.inputs[0],
    b = node.inputs[1];
  if (!a || !b || node.inputs.length !== 2) return null;
  if (pred(a)) return [a, b];
  if (pred(b)) return [b, a];
  return null;
}

/** When one operand of a binary node is a constant equal to `c`: the other operand. */
export function splitConst(node: Node, c: number): Value | null {
  const o = orderBy(node, (v) => isConst(v, c));
  return o ? o[1] : null;
}

/** Leaves of a tree of same-op (commutative) nodes under `root`, expanding only single-use inner values. */
export function flatten(root: Node, opType: string, inner: Node[] = []): Value[] {
  const out: Value[] = [];
  for (const v of root.inputs) {
    if (!v) continue;
    const p = producer(v, opType);
    if (p && v.uses.length === 1 && !v.isGraphOutput) {
      inner.push(p);
      out.push(...flatten(p, opType, inner));
    } else out.push(v);
  }
  return out;
}

/** True when every output of `nodes` except `keep` is used only by nodes in the set and is not a graph output. */
export function internalOnly(nodes: Node[], keep: Value[] = []): boolean {
  const set = new Set(nodes);
  for (const n of nodes) {
    for (const o of n.outputs) {
      if (!o || keep.includes(o)) continue;
      if (o.isGraphOutput) return false;
      if (o.uses.some((u) => !set.has(u.node))) return false;
    }
  }
  return true;
}

/** Reduction axes of a Reduce* node (attribute before opset 18, input after); null if not constant. */
export function reduceAxes(node: Node): number[] | null {
  if (node.hasAttr('axes')) return node.attrInts('axes');
  const t = constTensor(node.inputs[1]);
  if (node.inputs[1] && !t) return null;
  return t ? Array.from(t.toNumbers()) : [];
}

/** Reduce* over exactly the last axis with keepdims=1. */
export function reducesLastAxis(node: Node, rank?: number): boolean {
  if (node.attrInt('keepdims', 1) !== 1) return false;
  const axes = reduceAxes(node);
  if (!axes || axes.length !== 1) return false;
  const a = axes[0]!;
  return a === -1 || (rank !== undefined && a === rank - 1);
}

/** Two dims known to be equal: the same number or the same symbol, never unknown. */
export function sameDim(a: Dim | undefined, b: Dim | undefined): boolean {
  return a !== undefined && a !== null && a === b;
}

/** Transpose(Reshape(x [B, S, N*D], [B, S, N, D]), [0, 2, 1, 3]): the 3-D x split into N heads of D. */
export function splitHeads(v4: Value): { x: Value; n: number; d: number; reshape: Node; transpose: Node; nodes: Node[] } | null {
  const tr = producer(v4, 'Transpose');
  if (!tr || tr.attrInts('perm', []).join() !== '0,2,1,3') return null;
  const rs = producer(tr.inputs[0], 'Reshape');
  const x = rs?.inputs[0];
  const s4 = rs?.outputs[0]?.shape,
    s3 = x?.shape;
  if (!rs || !x || !s4 || !s3 || s4.length !== 4 || s3.length !== 3) return null;
  const [n, d] = [s4[2], s4[3]];
  if (typeof n !== 'number' || typeof d !== 'number' || s3[2] !== n * d || !sameDim(s4[0], s3[0]) || !sameDim(s4[1], s3[1])) return null;
  return { x, n, d, reshape: rs, transpose: tr, nodes: [tr, rs] };
}

export function rankOf(v: Value | null | undefined): number | undefined {
  return v?.shape?.length;
}

export function lastDim(v: Value | null | undefined): number | undefined {
  const d = v?.shape?.at(-1);
  return typeof d === 'number' && d > 0 ? d : undefined;
}

/**
 * Make `out` (the matched pattern's result) the output of a new node built from `spec`, placed
 * where `out`'s producer was, then remove the matched nodes that became dead, together with the
 * Constant nodes and initializers only they used.
 */
export function replaceOutput(
  graph: Graph,
  out: Value,
  spec: Omit<NodeSpec, 'outputs'> & { extraOutputs?: (Value | string)[] },
  matched: Node[],
): Node {
  const old = out.producer!;
  old.setOutput(old.outputs.indexOf(out), null);
  const node = graph.addNode({ ...spec, outputs: [out, ...(spec.extraOutputs ?? [])] }, old);
  graph.removeDead(matched);
  return node;
}

/** Per-channel constant for a normalization's scale or bias: size C (> 1), all leading dims 1. */
export function channelVector(v: Value, xRank: number | undefined, c: number | undefined): Tensor | null {
  const t = constTensor(v);
  if (!t || (t.dtype !== DataType.FLOAT && t.dtype !== DataType.FLOAT16 && t.dtype !== DataType.BFLOAT16)) return null;
  const n = t.dims.at(-1) ?? 1;
  if (n < 2 || t.size !== n) return null;
  if (c !== undefined && n !== c) return null;
  if (t.dims.length > 1 && (xRank === undefined || t.dims.length > xRank)) return null;
  return t;
}

/** The value to feed as a [C] scale/bias: the constant itself when already 1-D, else a 1-D copy. */
export function asVector(graph: Graph, v: Value, t: Tensor): Value {
  if (t.dims.length === 1) return v;
  return graph.addInitializer(Tensor.fromBytes(`${v.name}_1d`, t.dtype, [t.size], t.bytes()));
}

export interface InvStdMatch {
  /** Nodes from the epsilon Add to the normalized output. */
  nodes: Node[];
  eps: number;
  /** x / sqrt(var + eps) */
  normalized: Value;
}

/**
 * From a variance value (ReduceMean output): Add(eps) -> Sqrt -> Div(num, .) | Mul(num, Reciprocal(.))
 * | Mul(num, Div(1, .)), or Add(eps) -> Pow(-0.5) -> Mul(num, .). Returns a reason string when the
 * chain starts but does not finish.
 */
export function matchInvStd(variance: Value, num: Value): InvStdMatch | string | null {
  if (variance.uses.length !== 1) return null;
  const add = variance.uses[0]!.node;
  if (add.opType !== 'Add' || add.domain !== '') return null;
  const epsV = other(add, variance);
  const eps = constScalar(epsV);
  if (eps === null || !(eps > 0)) return 'epsilon is not a positive scalar constant added to the variance';
  const ve = add.outputs[0]!;
  if (ve.uses.length !== 1 || ve.isGraphOutput) return 'variance + eps has other consumers';
  const first = ve.uses[0]!.node;
  const nodes: Node[] = [add];
  let recip: Node | null = null;
  // rsqrt written as Pow(v + eps, -0.5).
  if (first.opType === 'Pow' && first.inputs[0] === ve && isConst(first.inputs[1], -0.5)) recip = first;
  else if (first.opType === 'Sqrt') {
    const s = first.outputs[0]!;
    nodes.push(first);
    if (s.uses.length !== 1 || s.isGraphOutput) return 'Sqrt output has other consumers';
    const u = s.uses[0]!;
    if (u.node.opType === 'Div' && u.index === 1 && u.node.inputs[0] === num)
      return { nodes: [...nodes, u.node], eps, normalized: u.node.outputs[0]! };
    if (u.node.opType === 'Reciprocal') recip = u.node;
    else if (u.node.opType === 'Div' && u.index === 1 && isConst(u.node.inputs[0], 1)) recip = u.node;
  } else return 'variance + eps does not feed Sqrt or Pow(-0.5)';
  if (!recip) return 'normalization is not Div or Mul by the reciprocal of Sqrt';
  const r = recip.outputs[0]!;
  if (r.uses.length !== 1 || r.isGraphOutput) return 'reciprocal has other consumers';
  const mul = r.uses[0]!.node;
  if (mul.opType !== 'Mul' || other(mul, r) !== num) return 'reciprocal does not multiply the normalized input';
  return { nodes: [...nodes, recip, mul], eps, normalized: mul.outputs[0]! };
}

/** Whether `node` squares `v`: Pow(v, 2) or Mul(v, v). */
export function squares(node: Node, v: Value): boolean {
  if (node.opType === 'Pow' && node.domain === '') return node.inputs[0] === v && isConst(node.inputs[1], 2);
  if (node.opType === 'Mul' && node.domain === '') return node.inputs[0] === v && node.inputs[1] === v;
  return false;
}

export interface AffineMatch {
  nodes: Node[];
  gamma: Value;
  gammaT: Tensor;
  beta?: Value;
  betaT?: Tensor;
  out: Value;
}

/** normalized * gamma (+ beta when `withBias`), gamma and beta per-channel constants. */
export function matchAffine(normalized: Value, x: Value, withBias: boolean): AffineMatch | string {
  if (normalized.uses.length !== 1 || normalized.isGraphOutput) return 'normalized value has other consumers or no scale';
  const mul = normalized.uses[0]!.node;
  if (mul.opType !== 'Mul' || mul.domain !== '') return 'normalized value is not multiplied by a scale';
  const g = other(mul, normalized)!;
  const rank = rankOf(x),
    c = lastDim(x);
  const gT = channelVector(g, rank, c);
  if (!gT) return 'scale is not a constant per-channel vector';
  const m: AffineMatch = { nodes: [mul], gamma: g, gammaT: gT, out: mul.outputs[0]! };
  if (!withBias) return m;
  const y = m.out;
  if (y.uses.length === 1 && !y.isGraphOutput) {
    const add = y.uses[0]!.node;
    if (add.opType === 'Add' && add.domain === '') {
      const b = other(add, y)!;
      const bT = channelVector(b, rank, c);
      if (bT && bT.size === gT.size) {
        m.nodes.push(add);
        m.beta = b;
        m.betaT = bT;
        m.out = add.outputs[0]!;
      }
    }
  }
  return m;
}
