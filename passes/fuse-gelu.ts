// GELU as exporters spell it out -> one op.
//   erf form  x * 0.5 * (1 + erf(x / sqrt2))  (any grouping of the product, Div by sqrt2 or Mul by
//             1/sqrt2) -> com.microsoft Gelu, or ONNX Gelu when the model's opset is >= 20.
//   tanh form 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), cube as Pow(x,3) or x*x*x -> com.microsoft FastGelu.
import type { Node, Value } from '../ir/index.js';
import { flatten, isConst, producer, replaceOutput, splitConst } from './pattern.js';
import { defineRule, fusionPass, skip, type Match } from './rule.js';

const SQRT2 = Math.SQRT2;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** (1 + t) where t is the erf/tanh output, then the 3-factor product {0.5, x, 1 + t}. */
function matchOuter(t: Value, x: Value): { nodes: Node[]; out: Value } | null {
  if (t.uses.length !== 1) return null;
  const add = t.uses[0]!.node;
  if (add.opType !== 'Add' || add.domain !== '' || splitConst(add, 1) !== t) return null;
  const b = add.outputs[0]!;
  if (b.uses.length !== 1 || b.isGraphOutput) return null;
  const m1 = b.uses[0]!.node;
  if (m1.opType !== 'Mul' || m1.domain !== '') return null;
  const roots = [m1];
  const o = m1.outputs[0]!;
  if (o.uses.length === 1 && !o.isGraphOutput && o.uses[0]!.node.opType === 'Mul' && o.uses[0]!.node.domain === '') roots.push(o.uses[0]!.node);
  for (const root of roots) {
    const inner: Node[] = [];
    const leaves = flatten(root, 'Mul', inner);
    if (leaves.length === 3 && leaves.includes(b) && leaves.includes(x) && leaves.some((l) => isConst(l, 0.5))) {
      return { nodes: [add, root, ...inner], out: root.outputs[0]! };
    }
  }
  return null;
}

function matchErf(erf: Node): { x: Value; nodes: Node[]; out: Value } | null {
  const a = erf.inputs[0];
  const div = producer(a, 'Div');
  const mul = producer(a, 'Mul');
  let x: Value | null = null;
  if (div && isConst(div.inputs[1], SQRT2)) x = div.inputs[0]!;
  else if (mul) x = splitConst(mul, 1 / SQRT2);
  if (!x) return null;
  const outer = matchOuter(erf.outputs[0]!, x);
  if (!outer) return null;
  return { x, nodes: [(div ?? mul)!, erf, ...outer.nodes], out: outer.out };
}

/** x + 0.044715 * x^3 with the cube as Pow(x, 3) or a product of three x. */
function isCubicTerm(v: Value, x: Value, nodes: Node[]): boolean {
  const m = producer(v, 'Mul');
  if (!m || v.uses.length !== 1) return false;
  const inner: Node[] = [];
  const leaves = flatten(m, 'Mul', inner);
  const k = leaves.findIndex((l) => isConst(l, 0.044715));
  if (k < 0) return false;
  const rest = leaves.filter((_, i) => i !== k);
  if (rest.length === 3 && rest.every((l) => l === x)) {
    nodes.push(m, ...inner);
    return true;
  }
  const pow = rest.length === 1 ? producer(rest[0], 'Pow') : null;
  if (pow && pow.inputs[0] === x && isConst(pow.inputs[1], 3) && rest[0]!.uses.length === 1) {
    nodes.push(m, ...inner, pow);
    return true;
  }
  return false;
}

function matchTanh(tanh: Node): { x: Value; nodes: Node[]; out: Value } | null {
  const mulK = producer(tanh.inputs[0], 'Mul');
  if (!mulK) return null;
  const s = splitConst(mulK, SQRT_2_OVER_PI);
  const add = producer(s, 'Add');
  if (!add) return null;
  for (const [x, cubic] of [[add.inputs[0], add.inputs[1]], [add.inputs[1], add.inputs[0]]] as const) {
    if (!x || !cubic) continue;
    const nodes: Node[] = [];
    if (!isCubicTerm(cubic, x, nodes)) continue;
    const outer = matchOuter(tanh.outputs[0]!, x);
    if (!outer) return null;
    return { x, nodes: [...nodes, add, mulK, tanh, ...outer.nodes], out: outer.out };
  }
  return null;
}

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
    replaceOutput(graph, out, { opType: erf ? 'Gelu' : 'FastGelu', domain, name: `${anchor.name}/${erf ? 'Gelu' : 'FastGelu'}`, inputs: [x] }, nodes);
    return erf ? 'gelu' : 'fastgelu';
  },
});

export const fuseGelu = fusionPass({
  name: 'fuse-gelu',
  description: 'erf GELU -> Gelu (com.microsoft, or ONNX Gelu at opset >= 20); tanh GELU -> com.microsoft FastGelu',
  options: {},
  rules: [geluRule],
});
