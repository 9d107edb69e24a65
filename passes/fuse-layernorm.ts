// ReduceMean/Sub/Pow(2)/ReduceMean/Add(eps)/Sqrt/Div (or Mul by Reciprocal)/Mul(gamma)/Add(beta)
// -> LayerNormalization (opset 17), axis -1: what exporters write for a LayerNorm spelled out by hand.
import type { Model, Node } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';
import { asVector, internalOnly, matchAffine, matchInvStd, rankOf, reducesLastAxis, replaceOutput, squares, fuseEach } from './pattern.js';

function fuseAt(model: Model, mean: Node): string | null | true {
  const g = mean.graph;
  const x = mean.inputs[0];
  const mu = mean.outputs[0];
  if (!x || !mu) return null;
  const sub = mu.uses.find((u) => u.node.opType === 'Sub' && u.index === 1 && u.node.inputs[0] === x)?.node;
  if (!sub) return null;
  const where = `LayerNorm at '${mean.name}'`;
  if (!reducesLastAxis(mean, rankOf(x))) return `${where}: mean is not over the last axis with keepdims`;
  if (mu.uses.length !== 1) return `${where}: mean has other consumers`;
  const d = sub.outputs[0]!;
  const sq = d.uses.map((u) => u.node).find((n) => squares(n, d));
  if (!sq) return `${where}: no Pow(x - mean, 2)`;
  const v = sq.outputs[0]!;
  if (v.uses.length !== 1 || v.uses[0]!.node.opType !== 'ReduceMean') return `${where}: square does not feed one ReduceMean`;
  const varMean = v.uses[0]!.node;
  if (!reducesLastAxis(varMean, rankOf(x))) return `${where}: variance is not over the last axis with keepdims`;
  const inv = matchInvStd(varMean.outputs[0]!, d);
  if (inv === null) return `${where}: variance is not normalized with Add(eps)/Sqrt`;
  if (typeof inv === 'string') return `${where}: ${inv}`;
  const aff = matchAffine(inv.normalized, x, true);
  if (typeof aff === 'string') return `${where}: ${aff}`;
  const nodes = [mean, sub, sq, varMean, ...inv.nodes, ...aff.nodes];
  if (!internalOnly(nodes, [aff.out])) return `${where}: an intermediate value is used outside the pattern`;
  if ((model.opset('') ?? 0) < 17) return `${where}: LayerNormalization needs opset >= 17`;
  const scale = asVector(g, aff.gamma, aff.gammaT);
  const bias = aff.beta ? asVector(g, aff.beta, aff.betaT!) : null;
  replaceOutput(g, aff.out, {
    opType: 'LayerNormalization', name: `${mean.name}/LayerNormalization`,
    inputs: bias ? [x, scale, bias] : [x, scale],
    attrs: { axis: -1, epsilon: { float: inv.eps }, stash_type: 1 },
  }, nodes);
  return true;
}

export const fuseLayerNorm: Pass = {
  name: 'fuse-layernorm',
  description: 'decomposed LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Add) -> LayerNormalization',
  options: {},
  requires: ['shapes'],
  run(model: Model): PassStats {
    return fuseEach(model, ['ReduceMean'], { layernorm: 0 }, (n) => fuseAt(model, n), () => 'layernorm');
  },
};
