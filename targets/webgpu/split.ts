// Keep every weight under the device's binding limit (WebGPU cannot bind a storage range larger
// than maxStorageBufferBindingSize): MatMul / MatMulNBits weights split along N and Conv weights
// along output channels, with a Concat of the (small) outputs; embedding tables (Gather / GatherBlockQuantized) split along the vocabulary,
// each part gathering clamped ids and masked to the rows it owns, parts summed.
import { DataType, Graph, Model, Node, Tensor, Value } from '../../ir/index.js';

export interface SplitStats {
  splitMatMul: number;
  splitConv: number;
  splitMatMulNBits: number;
  splitGather: number;
  parts: number;
}

function sliceRows(t: Tensor, rows: number, r0: number, r1: number, name: string): Tensor {
  const rowBytes = t.byteLength / rows;
  if (!Number.isInteger(rowBytes)) throw new Error(`tensor '${t.name}' rows are not byte-aligned`);
  const dims = [...t.dims];
  if (dims.length === 1) dims[0] = (r1 - r0) * (t.dims[0]! / rows);
  else dims[0] = r1 - r0;
  return Tensor.fromBytes(name, t.dtype, dims, t.bytes().slice(r0 * rowBytes, r1 * rowBytes));
}

/** Row ranges of at most `per` rows. */
function ranges(n: number, per: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = 0; r < n; r += per) out.push([r, Math.min(n, r + per)]);
  return out;
}

function splitMatMulNBits(g: Graph, n: Node, limit: number): number {
  const B = n.input(1)?.initializer,
    S = n.input(2)?.initializer;
  if (!B || !S || n.input(4)) return 0;
  const N = n.attrInt('N');
  const zp = n.input(3)?.initializer ?? null;
  const bias = n.input(5)?.initializer ?? null;
  const tensors = [B, S, zp, bias].filter((t): t is Tensor => !!t);
  const worst = Math.max(...tensors.map((t) => t.byteLength / N));
  if (tensors.every((t) => t.byteLength <= limit)) return 0;
  const per = Math.max(1, Math.floor(limit / worst));
  const parts: Value[] = [];
  for (const [r0, r1] of ranges(N, per)) {
    const tag = `${n.name}_n${r0}`;
    const ins: (Value | null)[] = [
      n.input(0),
      g.addInitializer(sliceRows(B, N, r0, r1, `${B.name}_n${r0}`)),
      g.addInitializer(sliceRows(S, N, r0, r1, `${S.name}_n${r0}`)),
    ];
    ins.push(zp ? g.addInitializer(sliceRows(zp, N, r0, r1, `${zp.name}_n${r0}`)) : null);
    if (bias) ins.push(null, g.addInitializer(sliceRows(bias, N, r0, r1, `${bias.name}_n${r0}`)));
    const attrs = Object.fromEntries(n.attributes.map((a) => [a.name, a]));
    const part = g.addNode(
      { opType: 'MatMulNBits', domain: n.domain, name: tag, inputs: ins, outputs: [`${tag}_out`], attrs: { ...attrs, N: r1 - r0 } },
      n,
    );
    const o = n.outputs[0]!;
    part.outputs[0]!.type = o.type
      ? { elemType: o.type.elemType, shape: o.type.shape ? [...o.type.shape.slice(0, -1), r1 - r0] : undefined }
      : undefined;
    parts.push(part.outputs[0]!);
  }
  retire(g, n, parts);
  return parts.length;
}

function splitMatMul(g: Graph, n: Node, limit: number): number {
  const Wv = n.input(1),
    W = Wv?.initializer;
  if (!W || W.dims.length !== 2 || W.byteLength <= limit) return 0;
  const [K, N] = W.dims as [number, number];
  const esize = W.byteLength / (K * N);
  if (!Number.isInteger(esize)) return 0;
  const per = Math.max(1, Math.floor(limit / (K * esize)));
  const src = W.bytes();
  const parts: Value[] = [];
  for (const [c0, c1] of ranges(N, per)) {
    const w = c1 - c0;
    const buf = new Uint8Array(K * w * esize);
    for (let k = 0; k < K; k++) buf.set(src.subarray((k * N + c0) * esize, (k * N + c1) * esize), k * w * esize);
    const tag = `${n.name}_n${c0}`;
    const part = g.addNode(
      {
        opType: 'MatMul',
        name: tag,
        inputs: [n.input(0), g.addInitializer(Tensor.fromBytes(`${W.name}_n${c0}`, W.dtype, [K, w], buf))],
        outputs: [`${tag}_out`],
      },
      n,
    );
    const o = n.outputs[0]!;
    part.outputs[0]!.type = o.type
      ? { elemType: o.type.elemType, shape: o.type.shape ? [...o.type.shape.slice(0, -1), w] : undefined }
      : undefined;
    parts.push(part.outputs[0]!);
  }
  retire(g, n, parts);
  return parts.length;
}

function splitGather(g: Graph, n: Node, limit: number): number {
  const gbq = n.opType === 'GatherBlockQuantized';
  const data = n.input(0)?.initializer;
  if (!data || (data.byteLength <= limit && !(gbq && (n.input(2)?.initializer?.byteLength ?? 0) > limit))) return 0;
  if ((gbq ? n.attrInt('gather_axis', 0) : n.attrInt('axis', 0)) !== 0) return 0;
  const V = data.dims[0]!;
  const side = [data, gbq ? n.input(2)?.initializer : null, gbq ? n.input(3)?.initializer : null].filter((t): t is Tensor => !!t);
  const per = Math.max(1, Math.floor(limit / Math.max(...side.map((t) => t.byteLength / V))));
  const outType = gbq ? n.input(2)!.initializer!.dtype : data.dtype;
  const ids = n.input(1)!;
  const idType = ids.dtype ?? DataType.INT64;
  const idConst = (name: string, v: number) => g.addInitializer(Tensor.fromNumbers(name, idType, [], [v]));
  const zero = g.addInitializer(Tensor.fromNumbers(`${n.name}/split_zero`, outType, [], [0]));
  const axes = g.addInitializer(Tensor.fromInt64(`${n.name}/split_axes`, [1], [-1]));
  let acc: Value | null = null;
  const ranges_ = ranges(V, per);
  for (const [r0, r1] of ranges_) {
    const tag = `${n.name}_v${r0}`;
    const add = (op: string, inputs: (Value | null)[], attrs?: Record<string, number>) =>
      g.addNode({ opType: op, name: `${tag}/${op}`, inputs, outputs: [`${tag}/${op}_out`], attrs }, n).outputs[0]!;
    const lo = idConst(`${tag}/lo`, r0),
      zeroId = idConst(`${tag}/zero`, 0);
    const inside = add('And', [add('GreaterOrEqual', [ids, lo]), add('Less', [ids, idConst(`${tag}/end`, r1)])]);
    // Ids of other parts read row 0 here and are masked out below.
    const local = add('Where', [inside, add('Sub', [ids, lo]), zeroId]);
    const ins: (Value | null)[] = [g.addInitializer(sliceRows(data, V, r0, r1, `${data.name}_v${r0}`)), local];
    if (gbq) {
      const s = n.input(2)!.initializer!,
        z = n.input(3)?.initializer;
      ins.push(g.addInitializer(sliceRows(s, V, r0, r1, `${s.name}_v${r0}`)));
      if (z) ins.push(g.addInitializer(sliceRows(z, V, r0, r1, `${z.name}_v${r0}`)));
    }
    const attrs = Object.fromEntries(n.attributes.map((a) => [a.name, a]));
    const part = g.addNode({ opType: n.opType, domain: n.domain, name: tag, inputs: ins, outputs: [`${tag}_out`], attrs }, n).outputs[0]!;
    const masked = add('Where', [add('Unsqueeze', [inside, axes]), part, zero]);
    acc = acc ? add('Add', [acc, masked]) : masked;
  }
  const out = n.outputs[0]!;
  const last = acc!.producer!;
  // The last Add/Where takes over the original output value (name and type kept).
  n.setOutput(0, null);
  g.forgetValue(last.setOutput(0, out)!);
  g.removeNode(n, true);
  return ranges_.length;
}

/** Conv (group 1) split along output channels; the parts concatenate on the channel axis. */
function splitConv(g: Graph, n: Node, limit: number): number {
  const W = n.input(1)?.initializer,
    bias = n.input(2)?.initializer ?? null;
  if (!W || W.byteLength <= limit || n.attrInt('group', 1) !== 1) return 0;
  const M = W.dims[0]!;
  const per = Math.max(1, Math.floor(limit / (W.byteLength / M)));
  const parts: Value[] = [];
  const attrs = Object.fromEntries(n.attributes.map((a) => [a.name, a]));
  for (const [r0, r1] of ranges(M, per)) {
    const tag = `${n.name}_m${r0}`;
    const ins: (Value | null)[] = [n.input(0), g.addInitializer(sliceRows(W, M, r0, r1, `${W.name}_m${r0}`))];
    if (bias) ins.push(g.addInitializer(sliceRows(bias, M, r0, r1, `${bias.name}_m${r0}`)));
    const part = g.addNode({ opType: 'Conv', name: tag, inputs: ins, outputs: [`${tag}_out`], attrs }, n);
    const o = n.outputs[0]!;
    part.outputs[0]!.type = o.type ? { elemType: o.type.elemType, shape: o.type.shape?.map((d, i) => (i === 1 ? r1 - r0 : d)) } : undefined;
    parts.push(part.outputs[0]!);
  }
  retire(g, n, parts, 1);
  return parts.length;
}

function retire(g: Graph, n: Node, parts: Value[], axis = -1): void {
  const ins = [...n.inputs];
  g.replaceNode(n, [{ opType: 'Concat', name: `${n.name}/split_concat`, inputs: parts, outputs: [n.outputs[0]!], attrs: { axis } }]);
  for (const v of ins) if (v?.initializer && !v.uses.length && !v.isGraphOutput) g.removeInitializer(v);
}

/** Split every weight over `limit` bytes; returns counts. Nodes it cannot split stay (the check reports them). */
export function splitLargeWeights(model: Model, limit: number): SplitStats {
  const stats: SplitStats = { splitMatMul: 0, splitConv: 0, splitMatMulNBits: 0, splitGather: 0, parts: 0 };
  if (!Number.isFinite(limit)) return stats;
  for (const g of model.graph.allGraphs()) {
    for (const n of [...g.nodes]) {
      let parts = 0;
      if (n.opType === 'MatMulNBits') {
        parts = splitMatMulNBits(g, n, limit);
        if (parts) stats.splitMatMulNBits++;
      } else if (n.opType === 'MatMul' && n.domain === '') {
        parts = splitMatMul(g, n, limit);
        if (parts) stats.splitMatMul++;
      } else if (n.opType === 'Conv' && n.domain === '') {
        parts = splitConv(g, n, limit);
        if (parts) stats.splitConv++;
      } else if (n.opType === 'Gather' || n.opType === 'GatherBlockQuantized') {
        parts = splitGather(g, n, limit);
        if (parts) stats.splitGather++;
      }
      stats.parts += parts;
    }
    for (const v of [...g.values.values()])
      if (v.initializer && !v.uses.length && !v.isGraphOutput && !v.isGraphInput) g.removeInitializer(v);
    g.sortTopologically();
  }
  return stats;
}
