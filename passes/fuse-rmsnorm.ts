// RMSNorm as exporters write it (HF LlamaRMSNorm and kin): Pow(x,2)/ReduceMean/Add(eps)/Sqrt then Div,
// or Reciprocal/Mul, then Mul(gamma); with the fp32 Casts around it in half-precision models
// -> SimplifiedLayerNormalization (default domain, as onnxruntime registers it), axis -1, stash_type 1.
import { AttrType, DataType, type Node, type Value } from '../ir/index.js';
import {
  asVector,
  matchAffine,
  matchInvStd,
  producer,
  rankOf,
  reducesLastAxis,
  replaceOutput,
  squares,
  type AffineMatch,
} from './pattern.js';
import { defineRule, fusionPass, skip, type Match } from './rule.js';

function castTo(n: Node | null | undefined): number | undefined {
  const a = n?.attr('to');
  return n?.opType === 'Cast' && a?.type === AttrType.INT ? Number(a.value) : undefined;
}

interface RmsNormMatch extends Match {
  mean: Node;
  input: Value;
  eps: number;
  aff: AffineMatch;
}

const where = (mean: Node) => `RMSNorm at '${mean.name}'`;

export const rmsNormRule = defineRule<RmsNormMatch>({
  name: 'rmsnorm',
  anchors: ['ReduceMean'],
  counts: { rmsnorm: 'decomposed RMSNorms fused into SimplifiedLayerNormalization' },
  where,
  match(mean) {
    const sq = mean.inputs[0]?.producer;
    const x = sq?.inputs[0];
    if (!sq || !x || !squares(sq, x)) return null;
    const at = where(mean);
    const sub = producer(x, 'Sub');
    if (sub && sub.inputs[1]?.producer?.opType === 'ReduceMean' && sub.inputs[1].producer.inputs[0] === sub.inputs[0]) return null;
    if (!reducesLastAxis(mean, rankOf(x))) return skip(`${at}: mean of squares is not over the last axis with keepdims`);
    if (sq.outputs[0]!.uses.length !== 1) return skip(`${at}: square has other consumers`);
    const inv = matchInvStd(mean.outputs[0]!, x);
    if (inv === null) return skip(`${at}: mean of squares is not normalized with Add(eps)/Sqrt`);
    if (typeof inv === 'string') return skip(`${at}: ${inv}`);
    // Half-precision exports compute in fp32: X -> Cast(float) -> ... -> Cast(back) -> Mul(gamma).
    let input: Value = x;
    const nodes: Node[] = [mean, sq, ...inv.nodes];
    let normalized = inv.normalized;
    const castIn = x.producer?.opType === 'Cast' ? x.producer : null;
    if (castIn && castTo(castIn) === DataType.FLOAT && normalized.uses.length === 1) {
      const castOut = normalized.uses[0]!.node;
      const src = castIn.inputs[0]!;
      if (
        castOut.opType === 'Cast' &&
        src.dtype !== undefined &&
        castTo(castOut) === src.dtype &&
        x.uses.every((u) => u.node === sq || nodes.includes(u.node))
      ) {
        nodes.push(castIn, castOut);
        input = src;
        normalized = castOut.outputs[0]!;
      }
    }
    const aff = matchAffine(normalized, input, false);
    if (typeof aff === 'string') return skip(`${at}: ${aff}`);
    nodes.push(...aff.nodes);
    return { nodes, outputs: [aff.out], mean, input, eps: inv.eps, aff };
  },
  rewrite({ mean, input, eps, aff, nodes }, { graph }) {
    replaceOutput(
      graph,
      aff.out,
      {
        opType: 'SimplifiedLayerNormalization',
        name: `${mean.name}/SimplifiedLayerNormalization`,
        inputs: [input, asVector(graph, aff.gamma, aff.gammaT)],
        attrs: { axis: -1, epsilon: { float: eps }, stash_type: 1 },
      },
      nodes,
    );
    return 'rmsnorm';
  },
});

export const fuseRmsNorm = fusionPass({
  name: 'fuse-rmsnorm',
  description: 'decomposed RMSNorm (Pow 2, ReduceMean, Add eps, Sqrt, Div or Reciprocal/Mul, Mul gamma) -> SimplifiedLayerNormalization',
  options: {},
  requires: ['shapes'],
  rules: [rmsNormRule],
});
