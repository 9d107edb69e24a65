// fold-constants: evaluate nodes whose inputs are all constants with our evaluator (eval/) and
// turn their outputs into initializers that keep the output names. Shape/Size of values with a
// fully static inferred shape fold too. Never folds quantize/dequantize (the quantized form is
// the point) or random ops, and never grows a tensor past maxBytes unless asked.
import { DataType, Graph, Model, Node, Tensor, Value, byteLength, dtypeBits, numElements } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';
import { Unsupported, broadcastShapes, getEvaluator } from './eval/index.js';
import './eval/ops.js';

const NEVER = new Set([
  'QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear', 'RandomNormal', 'RandomUniform',
  'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli', 'Dropout',
]);

/** Upper bound on output elements, computed before evaluating so a blow-up costs nothing. */
function predictElements(node: Node, inputs: (Tensor | null)[]): number {
  const first = (i: number) => {
    const t = inputs[i];
    return t ? Array.from(t.toNumbers()) : [];
  };
  switch (node.opType) {
    case 'ConstantOfShape': return numElements(first(0));
    case 'Expand': return numElements(broadcastShapes(inputs[0]!.dims, first(1)));
    case 'Tile': return (inputs[0]?.size ?? 0) * numElements(first(1));
    case 'Range': {
      const [s, l, d] = [first(0)[0] ?? 0, first(1)[0] ?? 0, first(2)[0] ?? 1];
      return d === 0 ? Infinity : Math.max(Math.ceil((l - s) / d), 0);
    }
  }
  const ts = inputs.filter((t): t is Tensor => !!t);
  if (!ts.length) return 0;
  let bcast = 0;
  try {
    bcast = numElements(broadcastShapes(...ts.map((t) => t.dims)));
  } catch {
    bcast = 0;
  }
  return Math.max(bcast, ts.reduce((s, t) => s + t.size, 0));
}

/** Make a node's outputs initializers under their own names and drop the node. */
function replaceWithConstants(g: Graph, node: Node, results: Tensor[]): void {
  const inputs = [...node.inputs];
  node.inputs.forEach((_, i) => node.setInput(i, null));
  // Constants only this node read go too (onnxruntime rejects stray initializers in IR < 4 models).
  for (const v of new Set(inputs)) {
    if (v?.initializer && !v.uses.length && !v.isGraphInput && !v.isGraphOutput) v.graph.removeInitializer(v);
  }
  g.nodes.splice(g.nodes.indexOf(node), 1);
  node.outputs.forEach((v, i) => {
    if (!v) return;
    v.producer = null;
    g.values.set(v.name, v);
    g.setInitializer(v, results[i]!);
  });
}

const isConst = (v: Value | null) => !v || (!!v.initializer && !v.isGraphInput);

export const foldConstants: Pass = {
  name: 'fold-constants',
  description: 'evaluate constant subgraphs (and Shape of statically shaped values) into initializers',
  options: {
    maxBytes: { type: 'int', default: 1 << 20, min: 0, description: 'largest folded tensor that may be bigger than its inputs (bytes)' },
    shapes: { type: 'bool', default: true, description: 'fold Shape/Size of values whose inferred shape is fully static' },
  },
  requires: ['shapes'],
  run(model: Model, options): PassStats {
    const maxBytes = options.maxBytes as number;
    const counts: Record<string, number> = { folded: 0, shapesFolded: 0, tooLarge: 0, unsupported: 0, bytesAdded: 0 };
    const skippedOps = new Map<string, number>();
    const skip = (op: string) => skippedOps.set(op, (skippedOps.get(op) ?? 0) + 1);
    for (const g of [...model.graph.allGraphs()]) {
      for (const node of [...g.nodes]) {
        if (NEVER.has(node.opType) || node.subgraphs().length || !node.outputs.some((o) => o)) continue;
        const ev = getEvaluator(node);
        if (!ev) continue;
        if (options.shapes && (node.opType === 'Shape' || node.opType === 'Size') && !node.domain) {
          const s = node.input(0)?.type?.shape;
          if (s && s.every((d) => typeof d === 'number' && d >= 0) && !isConst(node.input(0))) {
            const stand = new Tensor('', node.input(0)!.type!.elemType, s as number[], { kind: 'raw', bytes: new Uint8Array(0) });
            replaceWithConstants(g, node, ev(node, [stand]));
            counts.shapesFolded!++;
            continue;
          }
        }
        if (!node.inputs.every(isConst)) continue;
        const inputs = node.inputs.map((v) => v?.initializer ?? null);
        if (inputs.some((t) => t && t.dtype === DataType.STRING)) continue;
        const inBytes = inputs.reduce((s, t) => s + (t?.byteLength ?? 0), 0);
        const outType = node.output(0)?.type?.elemType;
        const bits = outType ? Math.max(dtypeBits(outType), 8) : 64;
        const predicted = predictElements(node, inputs) * (bits / 8);
        if (predicted > maxBytes && predicted > inBytes) {
          counts.tooLarge!++;
          continue;
        }
        let results: Tensor[];
        try {
          results = ev(node, inputs);
        } catch (e) {
          counts.unsupported!++;
          skip(`${node.opType}${e instanceof Unsupported ? '' : ' (error)'}`);
          continue;
        }
        if (node.outputs.some((o, i) => o && !results[i])) {
          counts.unsupported!++;
          skip(node.opType);
          continue;
        }
        const outBytes = results.reduce((s, t) => s + byteLength(t.dtype, t.size), 0);
        if (outBytes > maxBytes && outBytes > inBytes) {
          counts.tooLarge!++;
          continue;
        }
        replaceWithConstants(g, node, results);
        counts.folded!++;
        counts.bytesAdded! += outBytes;
      }
    }
    const stats: PassStats = { counts };
    if (skippedOps.size) stats.skipped = [`not evaluated: ${[...skippedOps].map(([k, n]) => `${k} x${n}`).join(', ')}`];
    return stats;
  },
};
