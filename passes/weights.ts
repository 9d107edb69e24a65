// Weights where passes look for them: exporters (paddle2onnx, some torch paths) hold weights in
// `Constant` nodes and feed MatMul/Gemm/Conv through Transpose/Reshape/Cast of a constant. These
// helpers make such weights initializers, whatever their size, so quantizers and targets see them.
import { AttrType, DataType, Graph, Model, Node, Tensor, Value } from '../ir/index.js';
import { getEvaluator } from './eval/index.js';
import './eval/ops.js';

/** The tensor a Constant node holds, or null for forms that are not one tensor (sparse, strings). */
function constantTensor(n: Node): Tensor | null {
  const ev = getEvaluator(n);
  const a = n.attributes[0];
  if (!ev || !a || n.attributes.length !== 1 || (a.type === AttrType.TENSOR && a.value.dtype === DataType.STRING)) return null;
  try {
    return ev(n, [])[0] ?? null;
  } catch {
    return null;
  }
}

/** Constant nodes (any size) -> initializers under their output names. Returns how many. */
export function constantsToInitializers(model: Model): number {
  let n = 0;
  for (const g of model.graph.allGraphs()) {
    for (const node of [...g.nodes]) {
      if (node.opType !== 'Constant' || node.domain !== '' || !node.outputs[0]) continue;
      const t = constantTensor(node);
      if (!t) continue;
      const v = node.outputs[0];
      // A subgraph output must stay produced by a node there (initializers are not outputs of If bodies in ORT).
      if ((v.isGraphOutput && g.parent) || !(v.uses.length || v.isGraphOutput)) continue;
      g.removeNode(node, true);
      g.setInitializer(v, t);
      n++;
    }
  }
  return n;
}

/** Shape-only and type-only ops a weight passes through on its way to the op that multiplies by it. */
const CARRIERS = new Set(['Transpose', 'Reshape', 'Cast', 'Identity', 'Squeeze', 'Unsqueeze', 'Flatten']);

/** Weight slots: MatMul/Gemm B, Conv/ConvTranspose W. */
const WEIGHT_SLOTS: Record<string, number> = { MatMul: 1, Gemm: 1, Conv: 1, ConvTranspose: 1 };

/** The carrier chain from a constant to v (nearest last), or null when v is not one. */
function carrierChain(v: Value | null): Node[] | null {
  const chain: Node[] = [];
  for (let cur = v; cur;) {
    if (cur.initializer) return chain.length ? chain.reverse() : null;
    const p = cur.producer;
    if (!p || p.domain !== '' || !CARRIERS.has(p.opType)) return null;
    if (p.inputs.slice(1).some((i) => i && !i.initializer)) return null;
    chain.push(p);
    cur = p.input(0);
  }
  return null;
}

/**
 * MatMul/Gemm/Conv weights behind Transpose/Reshape/Cast of a constant become initializers holding
 * the value the op multiplies by (the carriers are evaluated; dead ones dropped). A lone 2-D
 * Transpose(perm 1,0) into MatMul/Gemm is kept: the quantizer reads it transposed as it streams.
 */
export function materializeWeights(model: Model, grow = true): number {
  let made = 0;
  for (const g of model.graph.allGraphs()) {
    for (const node of [...g.nodes]) {
      const slot = node.domain === '' ? WEIGHT_SLOTS[node.opType] : undefined;
      if (slot === undefined) continue;
      const v = node.input(slot);
      const chain = carrierChain(v);
      if (!v || !chain) continue;
      if (
        chain.length === 1 &&
        chain[0]!.opType === 'Transpose' &&
        node.opType !== 'Conv' &&
        node.opType !== 'ConvTranspose' &&
        chain[0]!.input(0)!.initializer!.dims.length === 2
      )
        continue;
      let t: Tensor | null = chain[0]!.input(0)!.initializer!;
      for (const c of chain) {
        const ev = getEvaluator(c);
        try {
          t = ev
            ? (ev(
                c,
                c.inputs.map((i, k) => (k === 0 ? t : (i?.initializer ?? null))),
              )[0] ?? null)
            : null;
        } catch {
          t = null;
        }
        if (!t) break;
      }
      if (!t || !(t.dtype === DataType.FLOAT || t.dtype === DataType.FLOAT16 || t.dtype === DataType.BFLOAT16)) continue;
      // Without a quantizer after it, a Cast to a wider float would make the artifact bigger.
      if (!grow && t.byteLength > chain[0]!.input(0)!.initializer!.byteLength) continue;
      t.name = `${chain[0]!.input(0)!.name}_${node.opType === 'Conv' ? 'w' : 'weight'}`;
      const w = g.addInitializer(t);
      node.setInput(slot, w);
      dropDeadChain(g, chain);
      made++;
    }
  }
  return made;
}

function dropDeadChain(g: Graph, chain: Node[]): void {
  for (const n of [...chain].reverse()) {
    if (n.outputs.some((o) => o && (o.uses.length || o.isGraphOutput))) return;
    const ins = [...n.inputs];
    g.removeNode(n, true);
    for (const i of ins) if (i?.initializer && !i.uses.length && !i.isGraphOutput && !i.isGraphInput) g.removeInitializer(i);
  }
}
