// The column-slice path (max_slice_mb) and worker threads must not change a method's output:
// GPTQ makes its Hessian factors once per weight and picks its candidate over the whole weight,
// mse-search is per column. Same model bytes for 0.01 MB and 8 MB slices on 1, 2 and 4 threads, equal
// to the method run on the whole weight at once.
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, encodeModel } from '../../ir/index.js';
import { rng, randn } from '../../runtime/ort.js';
import { quantizeInt4 } from '../../passes/quantize.js';
import { resolveOptions } from '../../passes/pass.js';
import { getMethod } from '../../passes/quant/methods/index.js';
import { packMatMulNBits } from '../../passes/quant/matmulnbits.js';
import type { CalibrationData } from '../../passes/quant/types.js';
import { lowRankPays } from '../../passes/quant/methods/gptq-lowrank.js';
import { weights } from './helpers.js';

const K = 96,
  N = 100,
  // d reads a wider input from few rows: GPTQ's diagonal + low-rank factorization (rows < K / 3.5)
  KD = 320;
/** Activations with a shared factor per row (correlated inputs, where GPTQ's feedback pays) plus noise. */
function activations(seed: number, rows: number, shared: number, K0 = K): Float32Array {
  const K = K0,
    r = rng(seed),
    g = randn(r, rows),
    a = randn(r, K),
    x = randn(r, rows * K);
  for (let i = 0; i < rows; i++) for (let k = 0; k < K; k++) x[i * K + k] = shared * g[i]! * a[k]! + x[i * K + k]!;
  return x;
}
const calib = new Map<string, CalibrationData>([
  ['a.weight', { x: activations(1, 96, 3), rows: 96 }],
  ['b.weight', { x: activations(2, 64, 0), rows: 64 }],
  ['c.weight', { x: activations(3, 40, 1), rows: 40 }], // under 64 rows: GPTQ without validation
  ['d.weight', { x: activations(4, 80, 2, KD), rows: 80 }],
]);
const w = { a: weights(11, K * N, 0.02), b: weights(12, K * N, 0.02), c: weights(13, K * N, 0.02), d: weights(14, KD * N, 0.02) };
const kOf = (name: string) => (name === 'd' ? KD : K);

function model(): Model {
  const b = new GraphBuilder({ opset: 17 });
  const A = b.input('A', DataType.FLOAT, [2, K]);
  const D = b.input('D', DataType.FLOAT, [2, KD]);
  for (const name of ['a', 'b', 'c', 'd'] as const)
    b.output(
      b.op1('MatMul', [name === 'd' ? D : A, b.constF32(`${name}.weight`, [kOf(name), N], w[name])], { name }),
      `Y${name}`,
      DataType.FLOAT,
      [2, N],
    );
  return b.build();
}

describe('output independent of max_slice_mb and threads', () => {
  for (const method of ['gptq', 'mse-search']) {
    for (const sym of [true, false]) {
      it(`${method} ${sym ? 'sym' : 'asym'}: same bytes for 0.01 / 8 MB slices, 1 / 2 / 4 threads, = whole weight`, async () => {
        expect(lowRankPays(60, KD) && lowRankPays(80, KD)).toBe(true); // d's fit (3/4 of the rows) and full factors
        const encoded: Buffer[] = [];
        for (const [slice, threads] of [
          [8, 1],
          [0.01, 1],
          [0.01, 2],
          [8, 2],
          [0.01, 4],
        ] as const) {
          const m = model();
          const st = await quantizeInt4.run(
            m,
            resolveOptions(quantizeInt4, { method, bits: 4, block: 32, sym, max_slice_mb: slice, threads }),
            { calibration: (n) => calib.get(n) },
          );
          expect(st.counts.matmul).toBe(4);
          encoded.push(Buffer.from(encodeModel(m)));
          if (slice === 8 && threads === 1) {
            for (const name of ['a', 'b', 'c', 'd'] as const) {
              const q = getMethod(method).quantize(
                w[name],
                kOf(name),
                N,
                { bits: 4, blockSize: 32, symmetric: sym },
                calib.get(`${name}.weight`),
              );
              const want = packMatMulNBits(q, `${name}.weight`, DataType.FLOAT);
              const got = m.graph.initializers.find((t) => t.name === want.B.name)!;
              expect(Buffer.from(got.bytes()).equals(Buffer.from(want.B.bytes()))).toBe(true);
            }
          }
        }
        for (const e of encoded.slice(1)) expect(e.equals(encoded[0]!)).toBe(true);
      }, 60_000);
    }
  }
});
