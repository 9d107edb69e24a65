// x * Sigmoid(alpha * x) -> com.microsoft QuickGelu(alpha): CLIP's quick_gelu (alpha 1.702) and,
// with alpha 1, SiLU / Swish (Llama's MLP act_fn), as onnxruntime's own QuickGelu fusion does.
import type { Model, Node, Value } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';
import { constScalar, ensureOpset, internalOnly, isLive, other, producer, replaceOutput } from './pattern.js';

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

export const fuseQuickGelu: Pass = {
  name: 'fuse-quickgelu',
  description: 'x * Sigmoid(alpha * x) (quick_gelu, SiLU) -> com.microsoft QuickGelu',
  options: {
    silu: { type: 'bool', default: true, description: 'also fuse SiLU (alpha = 1)' },
  },
  run(model: Model, options): PassStats {
    const stats: PassStats = { counts: { quickgelu: 0, silu: 0 }, skipped: [] };
    for (const g of model.graph.allGraphs()) {
      for (const n of [...g.nodes]) {
        if (n.opType !== 'Sigmoid' || n.domain !== '' || !isLive(n)) continue;
        const m = match(n);
        if (!m || (m.alpha === 1 && !options.silu)) continue;
        if (!internalOnly(m.nodes, [m.out])) {
          stats.skipped!.push(`Sigmoid '${n.name}': an intermediate value is used outside the x * sigmoid(alpha * x) pattern`);
          continue;
        }
        ensureOpset(model, 'com.microsoft', 1);
        replaceOutput(g, m.out, { opType: 'QuickGelu', domain: 'com.microsoft', name: `${n.name}/QuickGelu`, inputs: [m.x], attrs: { alpha: { float: m.alpha } } }, m.nodes);
        stats.counts[m.alpha === 1 ? 'silu' : 'quickgelu']!++;
      }
    }
    return stats;
  },
};
