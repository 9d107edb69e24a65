// fold-constants: evaluate nodes whose inputs are all constants with our evaluator (eval/) and
// turn their outputs into initializers that keep the output names. Shape/Size of values with a
// fully static inferred shape fold too. Never folds quantize/dequantize (the quantized form is
// the point) or random ops, and never grows a tensor past maxBytes unless asked.
import { DataType, Graph, Model, Node, Tensor, Value, byteLength, dtypeBits, isFloat, numElements } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';
import { Unsupported, broadcastShapes, getEvaluator, make, supportedDtype } from './eval/index.js';
import { ShapeInference } from './infer-shapes.js';
import './eval/ops.js';
import { constantsToInitializers, materializeWeights } from './weights.js';

const NEVER = new Set([
  'QuantizeLinear',
  'DequantizeLinear',
  'DynamicQuantizeLinear',
  'RandomNormal',
  'RandomUniform',
  'RandomNormalLike',
  'RandomUniformLike',
  'Multinomial',
  'Bernoulli',
  'Dropout',
]);

/** Upper bound on output elements, computed before evaluating so a blow-up costs nothing. */
function predictElements(node: Node, inputs: (Tensor | null)[]): number {
  const first = (i: number) => {
    const t = inputs[i];
    return t ? Array.from(t.toNumbers()) : [];
  };
  switch (node.opType) {
    case 'ConstantOfShape':
      return numElements(first(0));
    case 'Expand':
      return numElements(broadcastShapes(inputs[0]!.dims, first(1)));
    case 'Tile':
      return (inputs[0]?.size ?? 0) * numElements(first(1));
    case 'Resize': {
      const x = inputs[0];
      const sizes = first(3),
        scales = first(2);
      if (!x) return 0;
      if (sizes.length) return Math.max(numElements(sizes), x.size);
      return x.size * scales.reduce((p, s) => p * Math.max(s, 1), 1);
    }
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
  return Math.max(
    bcast,
    ts.reduce((s, t) => s + t.size, 0),
  );
}

/** Make a node's outputs initializers under their own names and drop the node. */
function replaceWithConstants(g: Graph, node: Node, results: Tensor[], pinned: Set<Value>): void {
  const inputs = [...node.inputs];
  node.inputs.forEach((_, i) => node.setInput(i, null));
  // Constants only this node read go too (onnxruntime rejects stray initializers in IR < 4 models).
  for (const v of new Set(inputs)) {
    if (v?.initializer && !v.uses.length && !v.isGraphInput && !pinned.has(v)) v.graph.removeInitializer(v);
  }
  node.outputs.forEach((v, i) => {
    if (!v) return;
    node.setOutput(i, null);
    g.setInitializer(v, results[i]!);
  });
  g.removeNode(node, true);
}

/** Outputs whose symbolic values (from shape inference) are all numbers, as tensors. */
function knownShapeValues(inf: ShapeInference, node: Node): Tensor[] | undefined {
  const out: Tensor[] = [];
  for (const o of node.outputs) {
    if (!o) return undefined;
    const v = inf.values.get(o),
      t = o.type;
    if (!v || !t?.shape || !v.every((d) => typeof d === 'number') || isFloat(t.elemType) || !supportedDtype(t.elemType)) return undefined;
    const dims = t.shape;
    if (!dims.every((d) => typeof d === 'number') || numElements(dims as number[]) !== v.length || dims.length > 1) return undefined;
    out.push(make(t.elemType, dims as number[], v as number[]));
  }
  return out;
}

const isConst = (v: Value | null) => !v || (!!v.initializer && !v.isGraphInput);

export const foldConstants = definePass({
  name: 'fold-constants',
  description: 'evaluate constant subgraphs (and Shape of statically shaped values) into initializers',
  options: {
    maxBytes: { type: 'int', default: 1 << 20, min: 0, description: 'largest folded tensor that may be bigger than its inputs (bytes)' },
    shapes: { type: 'bool', default: true, description: 'fold Shape/Size of values whose inferred shape is fully static' },
  },
  statistics: {
    folded: 'nodes evaluated into initializers',
    shapesFolded: 'Shape/Size of static values folded',
    shapeValuesFolded: 'shape arithmetic folded from inferred values',
    tooLarge: 'constant nodes left because the result is too large',
    unsupported: 'constant nodes the evaluator cannot run',
    bytesAdded: 'initializer bytes added',
    constantsToInitializers: 'Constant nodes turned into initializers',
    weightsMaterialized: 'weights made into stored initializers',
  },
  requires: ['shapes'],
  run(model: Model, options): PassStats {
    const maxBytes = options.maxBytes;
    // Constant nodes are weights already stored: they become initializers whatever their size.
    const constants = constantsToInitializers(model);
    const weights = materializeWeights(model, false);
    const counts: Record<string, number> = {
      folded: 0,
      shapesFolded: 0,
      shapeValuesFolded: 0,
      tooLarge: 0,
      unsupported: 0,
      bytesAdded: 0,
      constantsToInitializers: constants,
      weightsMaterialized: weights,
    };
    const skippedOps = new Map<string, number>(),
      tooLarge = new Map<string, number>();
    const skip = (op: string) => skippedOps.set(op, (skippedOps.get(op) ?? 0) + 1);
    const big = (op: string) => {
      counts.tooLarge!++;
      tooLarge.set(op, (tooLarge.get(op) ?? 0) + 1);
    };
    // Outputs of any graph, including outer values a subgraph returns directly.
    const pinned = new Set([...model.graph.allGraphs()].flatMap((g) => g.outputs));
    // Symbolic contents of shape tensors: Gather(Shape(x), 2) folds when dim 2 of x is static,
    // however dynamic the other dims are.
    const inf = new ShapeInference(model.opset('') ?? 21, false);
    if (options.shapes) inf.graph(model.graph);
    for (const g of [...model.graph.allGraphs()]) {
      for (const node of [...g.nodes]) {
        if (NEVER.has(node.opType) || node.subgraphs().length || !node.outputs.some((o) => o)) continue;
        if (options.shapes && !node.inputs.every(isConst)) {
          const known = knownShapeValues(inf, node);
          if (known) {
            replaceWithConstants(g, node, known, pinned);
            counts[node.opType === 'Shape' || node.opType === 'Size' ? 'shapesFolded' : 'shapeValuesFolded']!++;
            continue;
          }
        }
        const ev = getEvaluator(node);
        if (!ev) continue;
        if (!node.inputs.every(isConst)) continue;
        const inputs = node.inputs.map((v) => v?.initializer ?? null);
        if (inputs.some((t) => t && t.dtype === DataType.STRING)) continue;
        const inBytes = inputs.reduce((s, t) => s + (t?.byteLength ?? 0), 0);
        const outType = node.output(0)?.type?.elemType;
        const bits = outType ? Math.max(dtypeBits(outType), 8) : 64;
        const predicted = predictElements(node, inputs) * (bits / 8);
        if (predicted > maxBytes && predicted > inBytes) {
          big(node.opType);
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
          big(node.opType);
          continue;
        }
        replaceWithConstants(g, node, results, pinned);
        counts.folded!++;
        counts.bytesAdded! += outBytes;
      }
    }
    const list = (m: Map<string, number>) => [...m].map(([k, n]) => `${k} x${n}`).join(', ');
    const stats: PassStats = { counts, skipped: [] };
    if (skippedOps.size) stats.skipped!.push(`not evaluated: ${list(skippedOps)}`);
    if (tooLarge.size) stats.skipped!.push(`result over maxBytes=${maxBytes}: ${list(tooLarge)}`);
    return stats;
  },
});
