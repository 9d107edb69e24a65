// ReduceMean/Sub/Pow(2)/ReduceMean/Add(eps)/Sqrt/Div (or Mul by Reciprocal)/Mul(gamma)/Add(beta)
// -> LayerNormalization (opset 17), axis -1: what exporters write for a LayerNorm spelled out by hand,
// and what the TorchScript exporter writes for nn.LayerNorm below opset 17. A model below 17 with a
// LayerNorm to fuse is first converted to opset 17 (upgrade-opset), so the result is valid ONNX; one
// that cannot be converted keeps its decomposed LayerNorms, and the statistics say why.
import { DataType, type Model, type Node, type Value } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';
import {
  asVector,
  matchAffine,
  matchInvStd,
  rankOf,
  reducesLastAxis,
  replaceOutput,
  squares,
  type AffineMatch,
  type InvStdMatch,
} from './pattern.js';
import { Skip, applyRules, defineRule, skip, type Match } from './rule.js';
import { upgradeOpset } from './upgrade-opset.js';

interface LayerNormMatch extends Match {
  mean: Node;
  x: Value;
  inv: InvStdMatch;
  aff: AffineMatch;
}

const where = (mean: Node) => `LayerNorm at '${mean.name}'`;
const FLOATS: readonly number[] = [DataType.FLOAT16, DataType.BFLOAT16, DataType.FLOAT, DataType.DOUBLE];

/** The one consumer of `d` when it is a Cast of a float `x`'s type to float or double. */
function widening(d: Value, x: Value): Node | null {
  const c = d.uses.length === 1 && !d.isGraphOutput ? d.uses[0]!.node : null;
  if (!c || c.opType !== 'Cast' || c.domain !== '' || x.dtype === undefined || !FLOATS.includes(x.dtype)) return null;
  const to = c.attrInt('to');
  return to === DataType.FLOAT || to === DataType.DOUBLE ? c : null;
}

/** The one consumer of `v` when it casts back to `x`'s type. */
function narrowing(v: Value, x: Value): Node | null {
  const c = v.uses.length === 1 && !v.isGraphOutput ? v.uses[0]!.node : null;
  return c && c.opType === 'Cast' && c.domain === '' && c.attrInt('to') === x.dtype ? c : null;
}

export const layerNormRule = defineRule<LayerNormMatch>({
  name: 'layernorm',
  anchors: ['ReduceMean'],
  counts: { layernorm: 'decomposed LayerNorms fused into LayerNormalization' },
  where,
  match(mean) {
    const x = mean.inputs[0];
    const mu = mean.outputs[0];
    if (!x || !mu) return null;
    const sub = mu.uses.find((u) => u.node.opType === 'Sub' && u.index === 1 && u.node.inputs[0] === x)?.node;
    if (!sub) return null;
    const at = where(mean);
    if (!reducesLastAxis(mean, rankOf(x))) return skip(`${at}: mean is not over the last axis with keepdims`);
    if (mu.uses.length !== 1) return skip(`${at}: mean has other consumers`);
    // An fp16 export may take the statistics in a wider float: Cast(x - mean) ... Cast back (Phi-3.5 vision).
    const up = widening(sub.outputs[0]!, x);
    const d = up ? up.outputs[0]! : sub.outputs[0]!;
    const sq = d.uses.map((u) => u.node).find((n) => squares(n, d));
    if (!sq) return skip(`${at}: no Pow(x - mean, 2)`);
    const v = sq.outputs[0]!;
    if (v.uses.length !== 1 || v.uses[0]!.node.opType !== 'ReduceMean') return skip(`${at}: square does not feed one ReduceMean`);
    const varMean = v.uses[0]!.node;
    if (!reducesLastAxis(varMean, rankOf(x))) return skip(`${at}: variance is not over the last axis with keepdims`);
    const inv = matchInvStd(varMean.outputs[0]!, d);
    if (inv === null) return skip(`${at}: variance is not normalized with Add(eps)/Sqrt`);
    if (typeof inv === 'string') return skip(`${at}: ${inv}`);
    const down = up ? narrowing(inv.normalized, x) : null;
    if (up && !down) return skip(`${at}: statistics taken in a wider float are not cast back to the input's type`);
    const aff = matchAffine(down ? down.outputs[0]! : inv.normalized, x, true);
    if (typeof aff === 'string') return skip(`${at}: ${aff}`);
    const casts = up && down ? [up, down] : [];
    return { nodes: [mean, sub, ...casts, sq, varMean, ...inv.nodes, ...aff.nodes], outputs: [aff.out], mean, x, inv, aff };
  },
  rewrite({ mean, x, inv, aff, nodes }, { model, graph }) {
    if ((model.opset('') ?? 0) < 17) return skip(`${where(mean)}: LayerNormalization needs opset >= 17`);
    const scale = asVector(graph, aff.gamma, aff.gammaT);
    const bias = aff.beta ? asVector(graph, aff.beta, aff.betaT!) : null;
    replaceOutput(
      graph,
      aff.out,
      {
        opType: 'LayerNormalization',
        name: `${mean.name}/LayerNormalization`,
        inputs: bias ? [x, scale, bias] : [x, scale],
        attrs: { axis: -1, epsilon: { float: inv.eps }, stash_type: 1 },
      },
      nodes,
    );
    return 'layernorm';
  },
});

/** Whether any ReduceMean starts a fusable LayerNorm (read only, as the driver's match is). */
function hasCandidate(model: Model): boolean {
  for (const graph of model.graph.allGraphs()) {
    for (const n of graph.nodes) {
      if (n.opType !== 'ReduceMean' || n.domain !== '') continue;
      const m = layerNormRule.match(n, { model, graph, options: {}, pass: {}, state: undefined });
      if (m && !(m instanceof Skip)) return true;
    }
  }
  return false;
}

export const fuseLayerNorm = definePass({
  name: 'fuse-layernorm',
  description: 'decomposed LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Add) -> LayerNormalization',
  options: {},
  requires: ['shapes'],
  statistics: layerNormRule.counts,
  run(model: Model, options, ctx): PassStats {
    const from = model.opset('') ?? 0;
    let why: string | undefined;
    if (from < 17 && hasCandidate(model)) {
      const r = upgradeOpset(model, 17);
      if (r.blockers.length) why = `model stays at opset ${from} (${r.blockers[0]})`;
    }
    const stats = applyRules(model, options, [layerNormRule], ctx);
    if (from < 17 && (model.opset('') ?? 0) >= 17)
      (stats.notes ??= []).push(`model converted from opset ${from} to 17 for LayerNormalization`);
    if (why) stats.skipped = stats.skipped?.map((s) => (s.endsWith('needs opset >= 17') ? `${s}: ${why}` : s));
    return stats;
  },
});
