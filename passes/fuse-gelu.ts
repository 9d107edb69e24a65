// GELU as exporters spell it out -> one op.
//   erf form  x * 0.5 * (1 + erf(x / sqrt2))  (any grouping of the product; the argument any
//             polynomial form equal to x/sqrt2, sqrt2 rounded to 1.41421 too; an identity Cast after
//             erf) -> com.microsoft Gelu, or ONNX Gelu when the model's opset is >= 20.
//   tanh form 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), the argument in any factoring that is that
//             polynomial (x*0.7978845608*(1 + 0.044715*x*x), Pow(x,3), x*x*x) -> com.microsoft FastGelu.
import type { Node, Value } from '../ir/index.js';
import { constScalar, flatten, isConst, producer, replaceOutput, splitConst } from './pattern.js';
import { defineRule, fusionPass, skip, type Match } from './rule.js';

const SQRT2 = Math.SQRT2;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** A float Cast between two float values: the exporters' identity casts (Megatron's erf(x).float()). */
function floatCast(v: Value | null | undefined): Node | null {
  const c = producer(v, 'Cast');
  return c && c.inputs[0]?.dtype === c.outputs[0]?.dtype ? c : null;
}

/** (1 + t) where t is the erf/tanh output (maybe through an identity Cast), then the 3-factor
 * product {0.5, x, 1 + t} in any grouping. */
function matchOuter(t: Value, x: Value): { nodes: Node[]; out: Value } | null {
  if (t.uses.length !== 1) return null;
  const pre: Node[] = [];
  let first = t.uses[0]!.node;
  if (first.opType === 'Cast' && floatCast(first.outputs[0])) {
    const c = first.outputs[0]!;
    if (c.uses.length !== 1 || c.isGraphOutput) return null;
    pre.push(first);
    t = c;
    first = c.uses[0]!.node;
  }
  const add = first;
  if (add.opType !== 'Add' || add.domain !== '' || splitConst(add, 1) !== t) return null;
  const b = add.outputs[0]!;
  if (b.uses.length !== 1 || b.isGraphOutput) return null;
  const m1 = b.uses[0]!.node;
  if (m1.opType !== 'Mul' || m1.domain !== '') return null;
  const roots = [m1];
  const o = m1.outputs[0]!;
  if (o.uses.length === 1 && !o.isGraphOutput && o.uses[0]!.node.opType === 'Mul' && o.uses[0]!.node.domain === '')
    roots.push(o.uses[0]!.node);
  for (const root of roots) {
    const inner: Node[] = [];
    const leaves = flatten(root, 'Mul', inner);
    if (leaves.length === 3 && leaves.includes(b) && leaves.includes(x) && leaves.some((l) => isConst(l, 0.5))) {
      return { nodes: [...pre, add, root, ...inner], out: root.outputs[0]! };
    }
  }
  return null;
}

/** A polynomial in x: coefficient by degree. */
type Poly = Map<number, number>;
const ARITH = new Set(['Mul', 'Add', 'Sub', 'Div', 'Pow', 'Neg', 'Cast']);

/** The one non-constant leaf of the single-use arithmetic tree under v (the GELU input x). */
function soleLeaf(v: Value, root = true): Value | null | undefined {
  if (constScalar(v) !== null) return undefined;
  const p = v.producer;
  if (
    p &&
    p.domain === '' &&
    ARITH.has(p.opType) &&
    (root || (v.uses.length === 1 && !v.isGraphOutput)) &&
    (p.opType !== 'Cast' || floatCast(v))
  ) {
    let leaf: Value | undefined;
    for (const i of p.inputs) {
      if (!i) continue;
      const l = soleLeaf(i, false);
      if (l === null) return null;
      if (l && leaf && l !== leaf) return null;
      leaf ??= l;
    }
    return leaf;
  }
  return v;
}

function polyMul(a: Poly, b: Poly): Poly {
  const out: Poly = new Map();
  for (const [i, x] of a) for (const [j, y] of b) out.set(i + j, (out.get(i + j) ?? 0) + x * y);
  return out;
}

/** v as a polynomial in x through single-use Mul/Add/Sub/Div-by-constant/Pow/Neg/identity Cast nodes. */
function polyOf(v: Value, x: Value, nodes: Node[], root = true): Poly | null {
  if (v === x) return new Map([[1, 1]]);
  const c = constScalar(v);
  if (c !== null) return new Map([[0, c]]);
  const p = v.producer;
  if (!p || p.domain !== '' || !ARITH.has(p.opType) || (!root && (v.uses.length !== 1 || v.isGraphOutput))) return null;
  const [a, b] = p.inputs;
  const pa = a ? polyOf(a, x, nodes, false) : null;
  if (!pa) return null;
  let r: Poly | null = null;
  if (p.opType === 'Neg') r = new Map([...pa].map(([k, y]) => [k, -y]));
  else if (p.opType === 'Cast') r = floatCast(v) ? pa : null;
  else if (p.opType === 'Pow') {
    const n = constScalar(b);
    if (n === 2 || n === 3) r = n === 2 ? polyMul(pa, pa) : polyMul(polyMul(pa, pa), pa);
  } else if (p.opType === 'Div') {
    const d = constScalar(b);
    if (d) r = new Map([...pa].map(([k, y]) => [k, y / d]));
  } else {
    const pb = b ? polyOf(b, x, nodes, false) : null;
    if (!pb) return null;
    if (p.opType === 'Mul') r = polyMul(pa, pb);
    else {
      r = new Map(pa);
      for (const [k, y] of pb) r.set(k, (r.get(k) ?? 0) + (p.opType === 'Sub' ? -y : y));
    }
  }
  if (r) nodes.push(p);
  return r;
}

/** p equals `want` (degree -> coefficient) within a relative 1e-4 (exporters round sqrt(2) to 1.41421). */
function polyIs(p: Poly, want: Record<number, number>): boolean {
  for (const [k, y] of p) if (Math.abs(y) > 1e-12 && !(k in want)) return false;
  return Object.entries(want).every(([k, y]) => Math.abs((p.get(Number(k)) ?? 0) - y) <= 1e-4 * Math.abs(y));
}

/** erf(x / sqrt2) or tanh(sqrt(2/pi) (x + 0.044715 x^3)) in any factoring (x*c*(1 + k*x*x), Pow, x*x*x). */
function matchArg(fn: Node, want: Record<number, number>): { x: Value; nodes: Node[]; out: Value } | null {
  const arg = fn.inputs[0];
  if (!arg) return null;
  const x = soleLeaf(arg);
  if (!x) return null;
  const nodes: Node[] = [];
  const p = polyOf(arg, x, nodes);
  if (!p || !polyIs(p, want)) return null;
  const outer = matchOuter(fn.outputs[0]!, x);
  if (!outer) return null;
  return { x, nodes: [...nodes, fn, ...outer.nodes], out: outer.out };
}

const matchErf = (erf: Node) => matchArg(erf, { 1: 1 / SQRT2 });
const matchTanh = (tanh: Node) => matchArg(tanh, { 1: SQRT_2_OVER_PI, 3: SQRT_2_OVER_PI * 0.044715 });

interface GeluMatch extends Match {
  anchor: Node;
  x: Value;
  out: Value;
  erf: boolean;
}

const where = (n: Node) => `${n.opType} '${n.name}'`;

export const geluRule = defineRule<GeluMatch>({
  name: 'gelu',
  anchors: ['Erf', 'Tanh'],
  counts: { gelu: 'erf GELUs fused into Gelu', fastgelu: 'tanh GELUs fused into FastGelu' },
  where,
  pattern: 'the GELU pattern',
  match(n) {
    const erf = n.opType === 'Erf';
    const m = erf ? matchErf(n) : matchTanh(n);
    if (!m) return erf ? skip(`${where(n)}: not the x*0.5*(1+erf(x/sqrt2)) pattern`) : null;
    return { nodes: m.nodes, outputs: [m.out], anchor: n, x: m.x, out: m.out, erf };
  },
  rewrite({ anchor, x, out, erf, nodes }, { model, graph }) {
    const domain = erf && (model.opset('') ?? 0) >= 20 ? '' : 'com.microsoft';
    if (domain) model.requireOpset(domain, 1);
    replaceOutput(
      graph,
      out,
      { opType: erf ? 'Gelu' : 'FastGelu', domain, name: `${anchor.name}/${erf ? 'Gelu' : 'FastGelu'}`, inputs: [x] },
      nodes,
    );
    return erf ? 'gelu' : 'fastgelu';
  },
});

export const fuseGelu = fusionPass({
  name: 'fuse-gelu',
  description: 'erf GELU -> Gelu (com.microsoft, or ONNX Gelu at opset >= 20); tanh GELU -> com.microsoft FastGelu',
  options: {},
  rules: [geluRule],
});
