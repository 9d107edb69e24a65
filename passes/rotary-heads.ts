// A com.microsoft RotaryEmbedding already in the graph (onnxruntime's optimizer, a Microsoft export) on split
// heads, RotaryEmbedding(Transpose(Reshape(x [B, S, N*D], [B, S, N, D]), [0, 2, 1, 3])), runs on x itself
// (num_heads = N) with the Reshape/Transpose after it: the op reads a 3-D input as [B, S, N, D] and rotates each
// head by the same position_ids, so the result is the same, and attention fusion gets the 3-D query/key it takes.
import type { Node, Value } from '../ir/index.js';
import { replaceOutput, splitHeads } from './pattern.js';
import { defineRule, skip, type Match } from './rule.js';

interface HeadsMatch extends Match {
  rot: Node;
  view: NonNullable<ReturnType<typeof splitHeads>>;
}

function match(rot: Node): HeadsMatch | ReturnType<typeof skip> | null {
  const view = rot.inputs[0] ? splitHeads(rot.inputs[0]) : null;
  if (!view) return null;
  const where = `RotaryEmbedding '${rot.name}'`;
  if (rot.attrInt('is_packed_batching', 0)) return skip(`${where}: packed batching`);
  const heads = rot.attrInt('num_heads', 0);
  if (heads && heads !== view.n) return skip(`${where}: num_heads ${heads} is not the split's ${view.n}`);
  return { rot, view, nodes: [rot], outputs: [rot.outputs[0]!] };
}

export const rotaryHeadsRule = defineRule<HeadsMatch>({
  name: 'rotary-heads',
  anchors: ['RotaryEmbedding'],
  domain: 'com.microsoft',
  counts: { rotaryHeads: 'RotaryEmbedding on split heads moved onto the 3-D projection' },
  where: (n) => `RotaryEmbedding '${n.name}'`,
  match: (n) => match(n),
  rewrite({ rot, view }, { graph }) {
    const attrs = Object.fromEntries(rot.attributes.map((a) => [a.name, a]));
    const on3d = graph.addNode(
      {
        opType: 'RotaryEmbedding',
        domain: 'com.microsoft',
        name: `${rot.name}/bsh`,
        inputs: [view.x, ...rot.inputs.slice(1)],
        outputs: [`${rot.name}/bsh_output_0`],
        attrs: { ...attrs, num_heads: view.n },
      },
      rot,
    );
    on3d.outputs[0]!.type = view.x.type && { ...view.x.type, shape: view.x.type.shape && [...view.x.type.shape] };
    const rs = graph.addNode(
      {
        opType: 'Reshape',
        name: `${rot.name}/bsh/Reshape`,
        inputs: [on3d.outputs[0]!, view.reshape.inputs[1]!],
        outputs: [`${rot.name}/bsh/Reshape_output_0`],
        attrs: Object.fromEntries(view.reshape.attributes.map((a) => [a.name, a])),
      },
      rot,
    );
    rs.outputs[0]!.type = view.reshape.outputs[0]!.type;
    const out: Value = rot.outputs[0]!;
    replaceOutput(
      graph,
      out,
      { opType: 'Transpose', name: `${rot.name}/bsh/Transpose`, inputs: [rs.outputs[0]!], attrs: { perm: [0, 2, 1, 3] } },
      [rot, ...view.nodes],
    );
    return 'rotaryHeads';
  },
});
