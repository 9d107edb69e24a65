// Per-layer quantization report: what each weight became and what it cost in accuracy and bytes.
import type { Model, Node, Tensor, Value } from '../../ir/index.js';
import type { QuantizedWeight } from './types.js';

export interface LayerReport {
  /** Node that uses the weight (after the pass: the new node's name). */
  node: string;
  weight: string;
  /** linear (MatMul/Gemm), lm_head or embedding. */
  kind: 'linear' | 'lm_head' | 'embedding';
  /** Logical [K, N] of the weight (embeddings: [hidden, vocab]). */
  shape: [number, number];
  bits: number;
  block: number;
  symmetric: boolean;
  format: string;
  /**
   * ||W - dequant(Wq)|| / ||W|| over every element of the weight (exact, not sampled). Streamed RTN
   * computes it in the kernel: float32 differences summed per block and column, then in float64.
   */
  relError: number;
  bytesBefore: number;
  bytesAfter: number;
  /** Shares its packed weight with another layer (tied embedding / lm_head). */
  sharedWith?: string;
}

/** Sums of squared error and of squared weights over the unpadded [K, N] weight (row-major); the
 * relative error is sqrt(se / ss), and slices of one weight add up. */
export function errorSums(w: Float32Array, q: QuantizedWeight): { se: number; ss: number } {
  const { K, N, blockSize, kBlocks, bits, codes, scales, zeroPoints } = q;
  const Kp = kBlocks * blockSize,
    mid = 1 << (bits - 1);
  let se = 0,
    ss = 0;
  // Tiles of 64 columns: W rows stay contiguous, the strided code reads stay within 64 pages, and a
  // block's scales and zero points are loaded once per tile.
  const T = 64,
    sc = new Float64Array(T),
    zz = new Float64Array(T),
    cb = new Int32Array(T);
  for (let n0 = 0; n0 < N; n0 += T) {
    const w0 = Math.min(T, N - n0);
    for (let j = 0; j < w0; j++) cb[j] = (n0 + j) * Kp;
    for (let b = 0; b < kBlocks; b++) {
      for (let j = 0; j < w0; j++) {
        const bi = (n0 + j) * kBlocks + b;
        sc[j] = scales[bi]!;
        zz[j] = zeroPoints ? zeroPoints[bi]! : mid;
      }
      const k1 = Math.min(K, (b + 1) * blockSize);
      for (let k = b * blockSize; k < k1; k++) {
        const row = k * N + n0;
        for (let j = 0; j < w0; j++) {
          const x = w[row + j]!;
          const d = x - (codes[cb[j]! + k]! - zz[j]!) * sc[j]!;
          se += d * d;
          ss += x * x;
        }
      }
    }
  }
  return { se, ss };
}

export interface ReportTotals {
  layers: number;
  weights: number;
  bytesBefore: number;
  bytesAfter: number;
  /** Stored bits per quantized weight element (packed codes + scales + zero points). */
  bitsPerWeight: number;
  maxRelError: number;
  meanRelError: number;
}

export function totals(layers: readonly LayerReport[]): ReportTotals {
  let weights = 0,
    before = 0,
    after = 0,
    maxE = 0,
    sumE = 0;
  for (const l of layers) {
    weights += l.shape[0] * l.shape[1];
    before += l.bytesBefore;
    after += l.bytesAfter;
    maxE = Math.max(maxE, l.relError);
    sumE += l.relError;
  }
  return {
    layers: layers.length,
    weights,
    bytesBefore: before,
    bytesAfter: after,
    bitsPerWeight: weights ? (after * 8) / weights : 0,
    maxRelError: maxE,
    meanRelError: layers.length ? sumE / layers.length : 0,
  };
}

const fmtBytes = (b: number) =>
  b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`;

/** A plain-text table (the CLI prints it). */
export function formatReport(layers: readonly LayerReport[]): string[] {
  const rows = layers.map((l) => [
    l.weight,
    l.kind,
    `${l.shape[0]}x${l.shape[1]}`,
    `${l.bits}b/${l.block}${l.symmetric ? ' sym' : ' asym'}`,
    l.format,
    l.relError.toExponential(2),
    fmtBytes(l.bytesBefore),
    fmtBytes(l.bytesAfter) + (l.sharedWith ? ` (shares ${l.sharedWith})` : ''),
  ]);
  const head = ['weight', 'kind', 'KxN', 'quant', 'format', 'rel err', 'before', 'after'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(w[i]!))
      .join('  ')
      .trimEnd();
  const t = totals(layers);
  return [
    line(head),
    ...rows.map(line),
    `${t.layers} layers, ${t.weights} weights: ${fmtBytes(t.bytesBefore)} -> ${fmtBytes(t.bytesAfter)} (${t.bitsPerWeight.toFixed(3)} bits/weight), rel err mean ${t.meanRelError.toExponential(2)} max ${t.maxRelError.toExponential(2)}`,
  ];
}

/**
 * Re-measure `bytesAfter` from the model as it is now (after a later to-fp16 halved the scales, say):
 * the initializers of the layer's node, counting a shared packed weight once.
 */
export function remeasure(layers: LayerReport[], model: Model): void {
  const nodes = new Map<string, Node>();
  for (const g of model.graph.allGraphs()) for (const n of g.nodes) nodes.set(n.name, n);
  const seen = new Set<Tensor>();
  const bytes = (vals: (Value | null | undefined)[]) => {
    let s = 0;
    for (const v of vals) {
      const t = v?.initializer;
      if (t && !seen.has(t)) {
        seen.add(t);
        s += t.byteLength;
      }
    }
    return s;
  };
  for (const l of layers) {
    const n = nodes.get(l.node);
    if (!n) continue;
    if (n.opType === 'MatMulNBits') l.bytesAfter = bytes([n.input(1), n.input(2), n.input(3), n.input(5)]);
    else if (n.opType === 'GatherBlockQuantized') l.bytesAfter = bytes([n.input(0), n.input(2), n.input(3)]);
    else if (n.opType === 'MatMul') {
      let dq = n.input(1)?.producer;
      if (dq?.opType === 'Cast') dq = dq.input(0)?.producer;
      if (dq?.opType === 'DequantizeLinear') l.bytesAfter = bytes([dq.input(0), dq.input(1), dq.input(2)]);
    }
  }
}
