// x * Sigmoid(alpha * x) -> com.microsoft QuickGelu(alpha): CLIP's quick_gelu (alpha 1.702) and,
// with alpha 1, SiLU / Swish (Llama's MLP act_fn), as onnxruntime's own QuickGelu fusion does.
import type { Node, Value } from '../ir/index.js';
import type { OptionSchema, OptionsOf } from './pass.js';
import { constScalar, other, producer, replaceOutput } from './pattern.js';
import { defineRule, fusionPass, type Match } from './rule.js';

function match(sig: Node): { x: Value; alpha: number; nodes: Node[]; out: Value } | null {
  const s = sig.outputs[0]!;
  if (s.uses.length !== 1) return null;
  const mul = s.uses[0]!.node;
  if (mul.opType !== 'Mul' || mul.domain !== '') return null;
  const x = other(mul, s);
  const arg = sig.inputs[0];
  if (!x || !arg) return null;
  if (arg === x) return { x, alpha: 1, nodes: [sig, mul], out: mul.outputs[0]! };
  const scale = producer(arg, 'Mul');
  if (!scale || other(scale, x) === null) return null;
  const alpha = constScalar(other(scale, x));
  if (alpha === null) return null;
  return { x, alpha, nodes: [scale, sig, mul], out: mul.outputs[0]! };
}

interface QuickGeluMatch extends Match {
  sig: Node;
  x: Value;
  alpha: number;
  out: Value;
}

const options = {
  silu: { type: 'bool', default: true, description: 'also fuse SiLU (alpha = 1)' },
} as const satisfies OptionSchema;

export const quickGeluRule = defineRule<QuickGeluMatch, undefined, OptionsOf<typeof options>>({
  name: 'quickgelu',
  anchors: ['Sigmoid'],
  counts: { quickgelu: 'x * sigmoid(alpha * x) fused into QuickGelu', silu: 'SiLU (alpha 1) fused into QuickGelu' },
  where: (sig) => `Sigmoid '${sig.name}'`,
  pattern: 'the x * sigmoid(alpha * x) pattern',
  match(sig, { options }) {
    const m = match(sig);
    if (!m || (m.alpha === 1 && !options.silu)) return null;
    return { ...m, outputs: [m.out], sig };
  },
  rewrite({ sig, x, alpha, out, nodes }, { model, graph }) {
    model.requireOpset('com.microsoft', 1);
    replaceOutput(
      graph,
      out,
      { opType: 'QuickGelu', domain: 'com.microsoft', name: `${sig.name}/QuickGelu`, inputs: [x], attrs: { alpha: { float: alpha } } },
      nodes,
    );
    return alpha === 1 ? 'silu' : 'quickgelu';
  },
});

export const fuseQuickGelu = fusionPass({
  name: 'fuse-quickgelu',
  description: 'x * Sigmoid(alpha * x) (quick_gelu, SiLU) -> com.microsoft QuickGelu',
  options,
  rules: [quickGeluRule],
});
