// Roofline cost model: each node costs max(FLOPs / peak compute, bytes moved / bandwidth) plus a
// fixed dispatch overhead. Nodes come in as plain shapes (the caller binds symbolic dims), so this
// layer needs no graph and no weights: a graph of an 8B model's shapes costs a few KB.

export interface TensorCost {
  dims: number[];
  /** Bytes per element as stored (0.5 for 4-bit codes). */
  bytesPerElem: number;
  /** A constant (weights): read from memory on every call. */
  weight: boolean;
}

export interface CostNode {
  name: string;
  op: string;
  inputs: (TensorCost | null)[];
  outputs: TensorCost[];
  attrs: Record<string, number>;
}

/** One compute unit of a device as the roofline sees it. */
export interface ComputeUnit {
  /** Bytes per second one unit reaches from DRAM (measured by published studies, not the bus peak). */
  bandwidth: number;
  /** Operations per second for quantized (int8 dot) matmuls, fp16 and fp32 work. */
  int8Ops: number;
  fp16Flops: number;
  fp32Flops: number;
  /** Seconds of fixed cost per node (dispatch, synchronization). */
  overhead: number;
}

export type Precision = 'int8' | 'fp16' | 'fp32';

export interface NodeEstimate {
  name: string;
  op: string;
  flops: number;
  bytes: number;
  weightBytes: number;
  seconds: number;
  bound: 'memory' | 'compute' | 'overhead';
}

const numel = (d: number[]): number => d.reduce((a, b) => a * b, 1);
const bytesOf = (t: TensorCost | null): number => (t ? numel(t.dims) * t.bytesPerElem : 0);

const MATMUL_LIKE = new Set([
  'MatMul',
  'Gemm',
  'MatMulNBits',
  'MatMulInteger',
  'QLinearMatMul',
  'FusedMatMul',
  'Conv',
  'ConvInteger',
  'QLinearConv',
  'ConvTranspose',
]);
const ATTENTION = new Set(['Attention', 'MultiHeadAttention', 'GroupQueryAttention']);
const GATHERS = new Set(['Gather', 'GatherBlockQuantized']);

export function isMatMulLike(op: string): boolean {
  return MATMUL_LIKE.has(op);
}

/** FLOPs (multiply-adds count 2) of one node. */
export function nodeFlops(n: CostNode): number {
  const out = n.outputs[0]?.dims ?? [];
  const a = n.inputs[0]?.dims ?? [];
  switch (n.op) {
    case 'MatMul':
    case 'FusedMatMul':
    case 'MatMulInteger':
    case 'QLinearMatMul': {
      const K = a[a.length - 1] ?? 1;
      return 2 * numel(out) * K;
    }
    case 'Gemm': {
      const K = n.attrs.transA ? (a[0] ?? 1) : (a[1] ?? 1);
      return 2 * numel(out) * K;
    }
    case 'MatMulNBits':
      return 2 * numel(out) * (n.attrs.K ?? a[a.length - 1] ?? 1);
    case 'Conv':
    case 'ConvInteger':
    case 'QLinearConv': {
      const w = n.inputs[n.op === 'QLinearConv' ? 3 : 1]?.dims ?? [];
      return 2 * numel(out) * numel(w.slice(1));
    }
    default:
      if (ATTENTION.has(n.op)) {
        // Q [B, S, heads*D]; keys total = past + S (from the present/past K when given).
        const q = a;
        const S = q[1] ?? 1,
          hidden = q[2] ?? 1;
        const kvLen = attentionKeys(n) ?? S;
        return 4 * (q[0] ?? 1) * S * kvLen * hidden;
      }
      return numel(out);
  }
}

function attentionKeys(n: CostNode): number | undefined {
  // present key (output 1) is [B, kv_heads, total, D]
  const present = n.outputs[1]?.dims;
  if (present && present.length === 4) return present[2];
  return undefined;
}

/** Bytes a node moves: weights in full (gathers only the rows they fetch), activations in and out. */
export function nodeBytes(n: CostNode): { bytes: number; weightBytes: number } {
  if (GATHERS.has(n.op) && n.inputs[0]?.weight) {
    // Reads one row per index of the table (and of its scales and zero points).
    const rows = numel(n.inputs[1]?.dims ?? [1]);
    const rowBytes = (t: TensorCost | null | undefined): number => (t ? numel(t.dims.slice(1)) * t.bytesPerElem : 0);
    const w = rows * (rowBytes(n.inputs[0]) + (n.op === 'GatherBlockQuantized' ? rowBytes(n.inputs[2]) + rowBytes(n.inputs[3]) : 0));
    return { bytes: w + bytesOf(n.inputs[1] ?? null) + n.outputs.reduce((s, o) => s + bytesOf(o), 0), weightBytes: w };
  }
  let weightBytes = 0,
    act = 0;
  for (const t of n.inputs) {
    if (!t) continue;
    if (t.weight) weightBytes += bytesOf(t);
    else act += bytesOf(t);
  }
  for (const o of n.outputs) act += bytesOf(o);
  return { bytes: weightBytes + act, weightBytes };
}

export function precisionOf(n: CostNode): Precision {
  if (n.op === 'MatMulNBits' || n.op === 'MatMulInteger' || n.op === 'QLinearMatMul' || n.op === 'ConvInteger' || n.op === 'QLinearConv')
    return 'int8';
  const a = n.inputs[0];
  return a && a.bytesPerElem === 2 ? 'fp16' : 'fp32';
}

export function estimateNode(n: CostNode, unit: ComputeUnit): NodeEstimate {
  const flops = nodeFlops(n);
  const { bytes, weightBytes } = nodeBytes(n);
  const p = precisionOf(n);
  const peak = p === 'int8' ? unit.int8Ops : p === 'fp16' ? unit.fp16Flops : unit.fp32Flops;
  const tc = flops / peak,
    tm = bytes / unit.bandwidth;
  const body = Math.max(tc, tm);
  return {
    name: n.name,
    op: n.op,
    flops,
    bytes,
    weightBytes,
    seconds: body + unit.overhead,
    bound: unit.overhead > body ? 'overhead' : tc > tm ? 'compute' : 'memory',
  };
}

export interface Estimate {
  seconds: number;
  flops: number;
  bytes: number;
  weightBytes: number;
  byOp: { op: string; seconds: number; count: number }[];
  top: NodeEstimate[];
  matmulShare: number;
}

export function estimate(nodes: CostNode[], unit: ComputeUnit, topN = 10): Estimate {
  const est = nodes.map((n) => estimateNode(n, unit));
  const byOp = new Map<string, { seconds: number; count: number }>();
  let seconds = 0,
    flops = 0,
    bytes = 0,
    weightBytes = 0,
    mm = 0;
  for (const e of est) {
    seconds += e.seconds;
    flops += e.flops;
    bytes += e.bytes;
    weightBytes += e.weightBytes;
    if (isMatMulLike(e.op)) mm += e.seconds;
    const o = byOp.get(e.op) ?? { seconds: 0, count: 0 };
    o.seconds += e.seconds;
    o.count++;
    byOp.set(e.op, o);
  }
  return {
    seconds,
    flops,
    bytes,
    weightBytes,
    byOp: [...byOp].map(([op, o]) => ({ op, ...o })).sort((a, b) => b.seconds - a.seconds),
    top: [...est].sort((a, b) => b.seconds - a.seconds).slice(0, topN),
    matmulShare: seconds ? mm / seconds : 0,
  };
}
