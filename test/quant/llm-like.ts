// Synthetic LLM-like weights and activations, and the output error the quantization tests score.
import { rng, randn } from '../../runtime/ort.js';

/** mean over rows and outputs of (X (W - Wq))^2. */
export function outputMse(x: Float32Array, rows: number, w: Float32Array, wq: Float32Array, K: number, N: number): number {
  const d = new Float64Array(K * N);
  for (let i = 0; i < d.length; i++) d[i] = w[i]! - wq[i]!;
  const acc = new Float64Array(N);
  let s = 0;
  for (let r = 0; r < rows; r++) {
    acc.fill(0);
    for (let k = 0; k < K; k++) {
      const xv = x[r * K + k]!;
      if (xv === 0) continue;
      for (let n = 0; n < N; n++) acc[n]! += xv * d[k * N + n]!;
    }
    for (let n = 0; n < N; n++) s += acc[n]! * acc[n]!;
  }
  return s / (rows * N);
}

/** N(0, 0.02) weights, a few output columns x6 and a few input rows x4 (outlier channels). */
export function llmWeight(K: number, N: number, seed: number): Float32Array {
  const w = randn(rng(seed), K * N, 0.02);
  for (let n = 3; n < N; n += 41) for (let k = 0; k < K; k++) w[k * N + n]! *= 6;
  for (let k = 5; k < K; k += 67) for (let n = 0; n < N; n++) w[k * N + n]! *= 4;
  return w;
}

/** Low-rank correlated activations plus noise, with a few high-magnitude channels (as in LLMs). */
export function llmActivations(rows: number, K: number, seed: number): Float32Array {
  const rank = 48,
    A = randn(rng(4242), rank * K, 1 / Math.sqrt(rank));
  const r = rng(seed),
    z = randn(r, rows * rank),
    noise = randn(r, rows * K, 0.3);
  const x = new Float32Array(rows * K);
  for (let i = 0; i < rows; i++) {
    for (let k = 0; k < K; k++) {
      let s = noise[i * K + k]!;
      for (let j = 0; j < rank; j++) s += z[i * rank + j]! * A[j * K + k]!;
      x[i * K + k] = s * (k % 53 === 7 ? 8 : 1);
    }
  }
  return x;
}
