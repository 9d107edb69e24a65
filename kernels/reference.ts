// CPU references of the kernels, written from the operator specs (ContribOperators.md): the WGSL
// results are checked against these, and these against onnxruntime (test/kernels/reference.test.ts).
import { PackedWeights, codeAt, zeroAt } from './layout.js';

/** MatMulNBits: Y[M, N] = A[M, K] x dequant(B)^T, accumulated in float64. */
export function matMulNBitsRef(a: Float32Array, M: number, w: PackedWeights): Float32Array {
  const { K, N, blockSize } = w;
  if (a.length !== M * K) throw new Error(`A has ${a.length} values, expected M*K = ${M * K}`);
  const y = new Float32Array(M * N);
  const col = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const blk = (k / blockSize) | 0;
      col[k] = (codeAt(w, n, k) - zeroAt(w, n, blk)) * w.scales[n * w.kBlocks + blk]!;
    }
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[m * K + k]! * col[k]!;
      y[m * N + n] = s;
    }
  }
  return y;
}

/** GatherBlockQuantized, uint8 form, gather_axis 0, quantize_axis last: rows of the [V = N, H = K]
 * table; indices outside [-V, V) give zero rows, negative ones count from the end. */
export function gatherBlockQuantizedRef(indices: Int32Array, w: PackedWeights): Float32Array {
  const { K: H, N: V, blockSize } = w;
  const out = new Float32Array(indices.length * H);
  indices.forEach((raw, i) => {
    const r = raw < 0 ? raw + V : raw;
    if (r < 0 || r >= V) return;
    for (let h = 0; h < H; h++) {
      const blk = (h / blockSize) | 0;
      out[i * H + h] = (codeAt(w, r, h) - zeroAt(w, r, blk)) * w.scales[r * w.kBlocks + blk]!;
    }
  });
  return out;
}

/** max |ref - x| / max |ref|: one bad element cannot hide in an average. */
export function relError(ref: Float32Array, x: Float32Array): number {
  if (ref.length !== x.length) return Infinity;
  let d = 0,
    m = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(ref[i]! - x[i]!);
    d = Number.isNaN(e) ? Infinity : Math.max(d, e);
    m = Math.max(m, Math.abs(ref[i]!));
  }
  return m ? d / m : d;
}
