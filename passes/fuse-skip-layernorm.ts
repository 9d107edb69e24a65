// Residual Add feeding LayerNormalization / SimplifiedLayerNormalization -> com.microsoft
// SkipLayerNormalization / SkipSimplifiedLayerNormalization. When the sum also feeds the next
// residual, it comes out of output 3 (input_skip_bias_sum); a constant bias added to the residual
// branch (out_proj / fc2 bias) becomes the op's bias input. Runs after fuse-layernorm/fuse-rmsnorm.
import type { Dim, Node, Value } from '../ir/index.js';
import type { OptionSchema, OptionsOf } from './pass.js';
import { constTensor, producer, sameDim } from './pattern.js';
import { defineRule, fusionPass, skip, type Match } from './rule.js';

const sameDims = (a: Dim[], b: Dim[]) => a.length === b.length && a.every((d, i) => sameDim(d, b[i]));

interface SkipMatch extends Match {
  ln: Node;
  add: Node;
  inputs: (Value | null)[];
  y: Value;
  sum: Value | null;
}

const where = (ln: Node) => `${ln.opType} '${ln.name}'`;

const options = {
  bias: { type: 'bool', default: true, description: "take a constant bias added to the residual branch as the op's bias input" },
} as const satisfies OptionSchema;

export const skipLayerNormRule = defineRule<SkipMatch, undefined, OptionsOf<typeof options>>({
  name: 'skip-layernorm',
  anchors: ['LayerNormalization', 'SimplifiedLayerNormalization'],
  counts: {
    skipLayerNorm: 'residual Add + LayerNormalization fused',
    skipSimplifiedLayerNorm: 'residual Add + SimplifiedLayerNormalization fused',
  },
  where,
  match(ln, { options }) {
    const simplified = ln.opType === 'SimplifiedLayerNormalization';
    const x = ln.inputs[0];
    const add = producer(x, 'Add');
    if (!x || !add) return null;
    const at = where(ln);
    let [a, b] = add.inputs;
    if (!a || !b || constTensor(a) || constTensor(b)) return skip(`${at}: Add has a constant operand (a bias, not a residual)`);
    if (a.shape && b.shape && a.shape.length === 3 && a.shape[0] === 1 && b.shape[0] !== 1) [a, b] = [b, a];
    const sa = a.shape,
      sb = b.shape;
    if (!sa || !sb) return skip(`${at}: residual shapes unknown`);
    // The op takes skip as [B, S, H] or broadcast over the batch as [1, S, H] (a position table).
    const fits = sa.length === 3 && (sameDims(sa, sb) || (sb.length === 3 && sb[0] === 1 && sameDims(sa.slice(1), sb.slice(1))));
    if (!fits) return skip(`${at}: residual operands are not [B, S, H] + [B or 1, S, H] (${JSON.stringify(sa)} + ${JSON.stringify(sb)})`);
    const axis = ln.attrInt('axis', -1);
    if (axis !== -1 && axis !== 2) return skip(`${at}: axis ${axis} is not the last`);
    if (ln.outputs.slice(1).some((o) => o && (o.uses.length || o.isGraphOutput))) return skip(`${at}: mean/inv_std_var outputs are used`);
    const gamma = ln.inputs[1],
      beta = simplified ? null : (ln.inputs[2] ?? null);
    if (!gamma || gamma.shape?.length !== 1 || (beta && beta.shape?.length !== 1)) return skip(`${at}: scale/bias are not 1-D`);
    // A projection's bias on the residual branch, Add(bias [H], X), rides along as the op's bias input.
    let bias: Value | null = null;
    const nodes: Node[] = [ln, add];
    if (options.bias) {
      for (const [inp, br] of [
        [a, b],
        [b, a],
      ] as const) {
        const badd = producer(br, 'Add');
        if (!badd || br.uses.length !== 1 || br.isGraphOutput) continue;
        const k = badd.inputs.findIndex((v) => v && constTensor(v)?.dims.length === 1 && constTensor(v)!.dims[0] === sa.at(-1));
        const xv = k < 0 ? null : badd.inputs[1 - k];
        if (!xv?.shape || !inp.shape || !sameDims(xv.shape, inp.shape)) continue;
        [a, b, bias] = [inp, xv, badd.inputs[k]!];
        nodes.push(badd);
        break;
      }
    }
    const y = ln.outputs[0]!;
    // When the sum also feeds the next residual, it comes out of output 3.
    const sum = x.uses.length > 1 || x.isGraphOutput ? x : null;
    const inputs = simplified ? [a, b, gamma, bias] : [a, b, gamma, beta, bias];
    while (inputs.length && !inputs.at(-1)) inputs.pop();
    return { nodes, outputs: sum ? [y, sum] : [y], ln, add, inputs, y, sum };
  },
  rewrite({ ln, add, inputs, y, sum, nodes }, { model, graph }) {
    const simplified = ln.opType === 'SimplifiedLayerNormalization';
    model.requireOpset('com.microsoft', 1);
    ln.setOutput(0, null);
    if (sum) add.setOutput(0, null);
    const node = graph.addNode(
      {
        opType: simplified ? 'SkipSimplifiedLayerNormalization' : 'SkipLayerNormalization',
        domain: 'com.microsoft',
        name: `${ln.name}/Skip`,
        inputs,
        outputs: [y],
        attrs: { epsilon: { float: ln.attrFloat('epsilon', 1e-5) } },
      },
      add,
    );
    if (sum) node.setOutput(3, sum);
    graph.removeDead(nodes);
    return simplified ? 'skipSimplifiedLayerNorm' : 'skipLayerNorm';
  },
});

export const fuseSkipLayerNorm = fusionPass({
  name: 'fuse-skip-layernorm',
  description: 'residual Add + (Simplified)LayerNormalization -> com.microsoft Skip(Simplified)LayerNormalization',
  options,
  requires: ['shapes'],
  rules: [skipLayerNormRule],
});
