// Conv/ConvTranspose weights for a float-activation graph (mobile vision): int8 symmetric per output
// channel behind a DequantizeLinear (axis = the output-channel axis), as onnxruntime's QDQ quantizer
// writes weights; onnxruntime's CPU EP and XNNPACK run DQ -> Conv. Biases stay float: the int32 bias
// of a full QDQ Conv takes its scale from the input activation's, and these activations are not
// quantized.
import { DataType, Graph, Node, Tensor, Value, type Model } from '../../ir/index.js';
import { dropIfUnused } from './graph-util.js';
import { convWeightAxis, quantizeInt8 } from './qdq.js';

const isConv = (n: Node) => n.domain === '' && (n.opType === 'Conv' || n.opType === 'ConvTranspose');

/** Conv nodes with a constant float weight that `keep` selects. */
export function convCandidates(model: Model, keep: (n: Node) => boolean): Node[] {
  const out: Node[] = [];
  for (const g of model.graph.allGraphs())
    for (const n of g.nodes) {
      const w = n.input(1);
      if (
        isConv(n) &&
        keep(n) &&
        w?.initializer &&
        !w.isGraphInput &&
        w.initializer.dtype === DataType.FLOAT &&
        w.initializer.dims.length >= 3
      )
        out.push(n);
    }
  return out;
}

function dequantized(g: Graph, at: Node, w: Value): Value {
  const t = w.initializer!;
  const axis = convWeightAxis(at);
  const { q, scales } = quantizeInt8(t, axis);
  const qv = g.addInitializer(Tensor.fromBytes(g.uniqueName(`${w.name}_q8`), DataType.INT8, [...t.dims], new Uint8Array(q.buffer)));
  const sv = g.addInitializer(Tensor.fromFloat32(g.uniqueName(`${w.name}_scale`), axis < 0 ? [] : [scales.length], scales));
  const dq = g.addNode(
    {
      opType: 'DequantizeLinear',
      name: `${w.name}/DequantizeLinear`,
      inputs: [qv, sv],
      outputs: [`${w.name}_dq`],
      attrs: axis < 0 ? {} : { axis },
    },
    at,
  );
  dq.outputs[0]!.type = { elemType: DataType.FLOAT, shape: [...t.dims] };
  return dq.outputs[0]!;
}

/** Replace the weights of `convs` (from convCandidates) by DequantizeLinear of int8 codes; a weight
 * several Conv nodes share is quantized once. Returns the number of weights quantized. */
export function quantizeConvWeights(convs: Node[]): number {
  const done = new Map<Value, Value>();
  for (const n of convs) {
    const w = n.input(1)!;
    let dq = done.get(w);
    if (!dq) {
      dq = dequantized(n.graph, n, w);
      done.set(w, dq);
    }
    n.setInput(1, dq);
    dropIfUnused(w);
  }
  return done.size;
}
