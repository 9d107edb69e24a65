// masked-scatter: LLaVA/InternVL forwards write image features into the token embeddings with
// `inputs_embeds.masked_scatter(mask, image_features)` (or `embeds[ids == image] = features`), which
// the exporter spells NonZero(mask) -> Transpose -> ScatterND. NonZero has a data-dependent shape:
// the WebGPU EP has no kernel for it and an NPU graph cannot be static with it. The k-th image token
// takes feature row k, so a running count of image tokens gives every token its row:
//   c = cumsum(flatten(ids == image))            (row k+1 for the k-th image token, 0 before the first)
//   out = Where(ids == image, Gather(Concat(0-row, rows), c), embeds)
// which equals the ScatterND exactly wherever the export runs. scan=matmul computes the count as a
// MatMul with an upper-triangular 0/1 matrix (NPUs have no CumSum; shapes are static there, so the
// matrix folds to a constant): the float count, rounded by +0.5 and a truncating Cast, stays exact
// under the 16-bit activation grid.
import { DataType, Graph, Model, Node, Tensor, Value } from '../ir/index.js';
import { definePass, PassStats } from './pass.js';
import { constScalar, constTensor, producer, rankOf, sameDim } from './pattern.js';

interface Match {
  scatter: Node;
  embeds: Value;
  /** [B, S] bool: input ids equal to the image token. */
  tokens: Value;
  /** The exporter's [B, S, 1] Unsqueeze of `tokens`, when there is one. */
  tokens3: Value | null;
  /** Feature rows [N, H], or the tensor whose flattening feeds the scatter (`flat`). */
  rows: Value;
  flat: boolean;
  hidden: number;
  matched: Node[];
}

const isInt = (v: Value | null | undefined) => v?.dtype === DataType.INT64 || v?.dtype === DataType.INT32;

/** Equal(ids, scalar constant) with integer ids: the image-token mask. */
function tokenMask(v: Value | null): Value | string {
  const eq = producer(v, 'Equal');
  if (!eq) return `the mask is not Equal(input_ids, image_token) (it is ${v?.producer?.opType ?? 'a graph input'})`;
  const [a, b] = [eq.input(0), eq.input(1)];
  const ids = constScalar(b) !== null ? a : constScalar(a) !== null ? b : null;
  if (!ids || !isInt(ids)) return `Equal '${eq.name}' does not compare integer ids with one constant token id`;
  if (rankOf(ids) !== 2) return `Equal '${eq.name}': ids of rank ${rankOf(ids) ?? 'unknown'}, expected [batch, sequence]`;
  return eq.outputs[0]!;
}

/** Unsqueeze over the last axis (attribute before opset 13, input after). */
function unsqueezesLast(n: Node): boolean {
  const axes = n.hasAttr('axes') ? n.attrInts('axes') : constTensor(n.input(1))?.toNumbers();
  const r = rankOf(n.outputs[0]);
  return !!axes && axes.length === 1 && (axes[0] === -1 || (r !== undefined && axes[0] === r - 1));
}

/** Element mask [B, S, H] = Expand*(Unsqueeze(tokens, -1)): the token mask and its [B, S, 1] form. */
function elementMask(m: Value, matched: Node[]): { tokens: Value; tokens3: Value } | string {
  let v: Value | null = m;
  for (let ex = producer(v, 'Expand'); ex; ex = producer(v, 'Expand')) {
    matched.push(ex);
    v = ex.input(0);
  }
  const un = producer(v, 'Unsqueeze');
  if (!un || !unsqueezesLast(un)) return `the element mask is not Expand(Unsqueeze(token mask, -1))`;
  const t = tokenMask(un.input(0));
  return typeof t === 'string' ? t : { tokens: t, tokens3: un.outputs[0]! };
}

/** Flat updates: [Slice(... 0:n)] of Reshape(x, [-1]); the tensor x. */
function flatSource(u: Value | null, matched: Node[]): Value | string {
  let v = u;
  const sl = producer(v, 'Slice');
  if (sl) {
    const starts = constTensor(sl.input(1))?.toNumbers(),
      axes = sl.input(3) ? constTensor(sl.input(3))?.toNumbers() : [0],
      steps = sl.input(4) ? constTensor(sl.input(4))?.toNumbers() : [1];
    if (starts?.join() !== '0' || axes?.join() !== '0' || steps?.join() !== '1') return `updates Slice '${sl.name}' does not take a prefix`;
    matched.push(sl);
    v = sl.input(0);
  }
  const rs = producer(v, 'Reshape');
  const shape = constTensor(rs?.input(1))?.toNumbers();
  if (!rs || shape?.join() !== '-1') return `updates are not the flattened image features (Reshape(x, [-1]))`;
  matched.push(rs);
  return rs.input(0)!;
}

function match(scatter: Node): Match | string {
  const at = `ScatterND '${scatter.name}'`;
  if (scatter.attrString('reduction', 'none') !== 'none') return `${at}: reduction is not 'none'`;
  const [embeds, idx, upd] = [scatter.input(0), scatter.input(1), scatter.input(2)];
  if (!embeds || rankOf(embeds) !== 3) return `${at}: data of rank ${rankOf(embeds) ?? 'unknown'}, expected [batch, sequence, hidden]`;
  const hidden = embeds.shape![2];
  if (typeof hidden !== 'number') return `${at}: hidden size '${String(hidden)}' is not a number`;
  const tr = producer(idx, 'Transpose');
  const nz = producer(tr?.input(0), 'NonZero');
  if (!tr || tr.attrInts('perm', []).join() !== '1,0' || !nz) return `${at}: indices are not Transpose(NonZero(mask), [1, 0])`;
  const matched = [scatter, tr, nz];
  const mask = nz.input(0)!;
  const rank = rankOf(mask);
  let m: Match;
  if (rank === 3) {
    // masked_scatter: an element mask and the features' elements in order.
    const em = elementMask(mask, matched);
    if (typeof em === 'string') return `${at}: ${em}`;
    const x = flatSource(upd, matched);
    if (typeof x === 'string') return `${at}: ${x}`;
    if (!sameDim(x.shape?.at(-1), hidden)) return `${at}: feature rows of ${String(x.shape?.at(-1))}, embeddings of ${hidden}`;
    m = { scatter, embeds, ...em, rows: x, flat: true, hidden, matched };
  } else if (rank === 2) {
    // embeds[ids == image] = features: a token mask and feature rows.
    const t = tokenMask(mask);
    if (typeof t === 'string') return `${at}: ${t}`;
    if (!upd || rankOf(upd) !== 2 || !sameDim(upd.shape![1], hidden)) return `${at}: updates are not [N, ${hidden}] feature rows`;
    m = { scatter, embeds, tokens: t, tokens3: null, rows: upd, flat: false, hidden, matched };
  } else return `${at}: mask of rank ${rank ?? 'unknown'}`;
  if (m.rows.dtype !== embeds.dtype) return `${at}: features and embeddings differ in element type`;
  return m;
}

class Emit {
  constructor(
    readonly g: Graph,
    readonly at: Node,
  ) {}
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, unknown> = {}, elemType?: DataType): Value {
    const n = this.g.addNode(
      { opType, name: `${this.at.name}/${opType}`, inputs, outputs: [`${this.at.name}/${opType}_output`], attrs: attrs as never },
      this.at,
    );
    if (elemType !== undefined) n.outputs[0]!.type = { elemType };
    return n.outputs[0]!;
  }
  ints(vals: number[], scalar = false): Value {
    return this.g.addInitializer(Tensor.fromInt64(this.g.uniqueName(`${this.at.name}/const`), scalar ? [] : [vals.length], vals));
  }
  unsqueeze(x: Value, axis: number, opset: number): Value {
    return opset >= 13 ? this.op('Unsqueeze', [x, this.ints([axis])]) : this.op('Unsqueeze', [x], { axes: [axis] });
  }
}

/** Running count of image tokens over the flattened [B * S] mask (int64). */
function count(e: Emit, tokens: Value, scan: 'cumsum' | 'matmul', opset: number): Value {
  if (scan === 'cumsum') {
    const flat = e.op('Reshape', [e.op('Cast', [tokens], { to: DataType.INT64 }, DataType.INT64), e.ints([-1])], {}, DataType.INT64);
    return e.op('CumSum', [flat, e.ints([0], true)], {}, DataType.INT64);
  }
  const r = e.op('Range', [e.ints([0], true), e.op('Size', [tokens]), e.ints([1], true)], {}, DataType.INT64);
  const le = e.op('LessOrEqual', [e.unsqueeze(r, 1, opset), e.unsqueeze(r, 0, opset)], {}, DataType.BOOL);
  const tri = e.op('Cast', [le], { to: DataType.FLOAT }, DataType.FLOAT);
  const row = e.op('Reshape', [e.op('Cast', [tokens], { to: DataType.FLOAT }, DataType.FLOAT), e.ints([1, -1])]);
  const f = e.op('Reshape', [e.op('MatMul', [row, tri]), e.ints([-1])]);
  const half = e.g.addInitializer(Tensor.fromFloat32(e.g.uniqueName(`${e.at.name}/half`), [], Float32Array.of(0.5)));
  return e.op('Cast', [e.op('Add', [f, half])], { to: DataType.INT64 }, DataType.INT64);
}

function rewrite(g: Graph, m: Match, scan: 'cumsum' | 'matmul', opset: number): void {
  const e = new Emit(g, m.scatter);
  const rows = m.flat ? e.op('Reshape', [m.rows, e.ints([-1, m.hidden])]) : m.rows;
  const zero = g.addInitializer(
    Tensor.fromNumbers(g.uniqueName(`${m.scatter.name}/zero_row`), m.embeds.dtype!, [1, m.hidden], new Float64Array(m.hidden)),
  );
  const padded = e.op('Concat', [zero, rows], { axis: 0 });
  const picked = e.op('Gather', [padded, count(e, m.tokens, scan, opset)], { axis: 0 });
  const shaped = e.op('Reshape', [picked, e.op('Shape', [m.embeds])]);
  const cond = m.tokens3 ?? e.unsqueeze(m.tokens, -1, opset);
  const out = m.scatter.outputs[0]!;
  m.scatter.setOutput(0, null);
  g.addNode({ opType: 'Where', name: `${m.scatter.name}/Where`, inputs: [cond, shaped, m.embeds], outputs: [out] }, m.scatter);
  g.removeDead(m.matched);
}

export const maskedScatter = definePass({
  name: 'masked-scatter',
  description: 'masked_scatter of image features into token embeddings (NonZero/ScatterND) -> running count, Gather, Where',
  options: {
    scan: {
      type: 'enum',
      values: ['cumsum', 'matmul'] as const,
      default: 'cumsum',
      description: 'running count as CumSum, or as a MatMul with a triangular matrix (NPUs: no CumSum, static shapes)',
    },
  },
  statistics: { rewritten: 'masked_scatter forms rewritten', nonZeroLeft: 'NonZero nodes left in the graph' },
  run(model: Model, options): PassStats {
    const stats: PassStats = { counts: { rewritten: 0, nonZeroLeft: 0 }, skipped: [] };
    const opset = model.opset('') ?? 13;
    for (const g of model.graph.allGraphs()) {
      for (const n of [...g.nodes]) {
        if (n.opType !== 'ScatterND' || n.domain !== '' || !n.outputs[0] || n.outputs[0].producer !== n) continue;
        const m =
          opset < 12 && options.scan === 'matmul'
            ? `ScatterND '${n.name}': scan=matmul needs opset 12 (LessOrEqual), model is ${opset}`
            : match(n);
        if (typeof m === 'string') {
          if (!m.includes('indices are not')) stats.skipped!.push(m);
          continue;
        }
        rewrite(g, m, options.scan, opset);
        stats.counts.rewritten!++;
      }
      for (const n of g.nodes)
        if (n.opType === 'NonZero' && n.domain === '') {
          stats.counts.nonZeroLeft!++;
          stats.skipped!.push(`NonZero '${n.name}' is not the index of a masked_scatter of image features (left as it is)`);
        }
    }
    return stats;
  },
});
