// GPTQ and mse-search in WebAssembly SIMD (methods/gptq.ts with the LDL form of the error feedback,
// simd-linalg.ts, simd-search.ts) against the first implementations in plain float64 JavaScript
// (gptq-reference.ts, mseSearchReference): the same codes up to float32 rounding, and output error
// ||X (W - Wq)||^2 no worse, on calibration and held-out rows.
import { describe, expect, it } from 'vitest';
import { dequantize, type CalibrationData, type QuantExec, type QuantParams } from '../../passes/quant/types.js';
import {
  gptq,
  gptqFactors,
  gptqQuantize,
  runGptqStep,
  scoreStride,
  scoredColumns,
  type GptqOptions,
  type GptqStep,
} from '../../passes/quant/methods/gptq.js';
import { gptqReferenceQuantize } from '../../passes/quant/methods/gptq-reference.js';
import { Linalg } from '../../passes/quant/methods/simd-linalg.js';
import { uIndex, uLayout } from '../../passes/quant/methods/gptq-lowrank.js';
import { channelEnergy, mseSearchQuantize, mseSearchReference } from '../../passes/quant/methods/mse-search.js';
import { rng, randn } from '../../runtime/ort.js';
import { llmActivations, llmWeight, outputMse } from './llm-like.js';

describe('SIMD linear algebra', () => {
  it('gemm and the upper Cholesky factor agree with float64 loops', () => {
    const L = new Linalg(1 << 22);
    const f = L.f32();
    const r = randn(rng(1), 4096);
    f.set(r);
    // C [7 x 32] at 8192 (row stride 48) += 0.5 * A^T B, A [5 x 12] at 0, B [5 x 40] at 4096
    const ref = new Float64Array(7 * 32);
    for (let m = 0; m < 7; m++)
      for (let n = 0; n < 32; n++) {
        let s = 0;
        for (let k = 0; k < 5; k++) s += f[k * 12 + m]! * f[1024 + k * 40 + n]!;
        ref[m * 32 + n] = f[2048 + m * 48 + n]! + 0.5 * s;
      }
    L.gemm(8192, 48 * 4, 0, 12 * 4, 4096, 40 * 4, 7, 32, 5, 0.5);
    for (let m = 0; m < 7; m++) for (let n = 0; n < 32; n++) expect(L.f32()[2048 + m * 48 + n]).toBeCloseTo(ref[m * 32 + n]!, 5);

    const K = 128,
      rows = 300,
      h = rows * K * 4;
    L.f32().set(randn(rng(2), rows * K));
    L.syrkUpper(0, rows, K, h);
    const H = L.f32().slice(h / 4, h / 4 + K * K);
    for (let i = 0; i < K; i++) H[i * K + i]! += 1;
    L.f32().set(H, h / 4);
    expect(L.choleskyUpper(h, K)).toBe(true);
    const R = L.f32().slice(h / 4, h / 4 + K * K);
    for (let i = 0; i < K; i += 7)
      for (let j = i; j < K; j += 5) {
        let s = 0;
        for (let k = 0; k <= i; k++) s += R[k * K + i]! * R[k * K + j]!;
        expect(Math.abs(s - H[i * K + j]!)).toBeLessThan(1e-5 * H[j * K + j]!);
      }
    // not positive definite: reported, not factored
    L.f32().fill(0, h / 4, h / 4 + K * K);
    expect(L.choleskyUpper(h, K)).toBe(false);
  });
});

describe('mse-search block search in SIMD vs the float64 JavaScript search', () => {
  it('same values and zero points: sym/asym, weighted or not, 4/8-bit, ragged N and K', () => {
    for (const [K, N, p] of [
      [256, 128, { bits: 4, blockSize: 32, symmetric: true }],
      [100, 13, { bits: 4, blockSize: 32, symmetric: false }],
      [300, 6, { bits: 8, blockSize: 128, symmetric: true }],
      [64, 9, { bits: 8, blockSize: 16, symmetric: false }],
    ] as [number, number, QuantParams][]) {
      const w = llmWeight(K, N, 7);
      for (const energy of [undefined, channelEnergy({ x: llmActivations(64, K, 3), rows: 64 }, K)]) {
        const a = mseSearchQuantize(w, K, N, p, energy),
          b = mseSearchReference(w, K, N, p, energy);
        // Exact ties between the two orientations of the symmetric grid (scale s with code c, or -s
        // with 2^bits - c) give the same values up to the last bit of the refit scale and may go either
        // way: compare values.
        const da = dequantize(a),
          db = dequantize(b);
        let off = 0;
        for (let i = 0; i < da.length; i++) if (Math.abs(da[i]! - db[i]!) > 1e-6 * Math.abs(db[i]!)) off++;
        expect(off).toBe(0);
        if (!p.symmetric) expect(Buffer.from(a.zeroPoints!).equals(Buffer.from(b.zeroPoints!))).toBe(true);
      }
    }
  });
});

describe('gptq (SIMD) vs the float64 JavaScript GPTQ', () => {
  const cases: [string, number, number, QuantParams][] = [
    ['K 256 N 128 block 32 sym', 256, 128, { bits: 4, blockSize: 32, symmetric: true }],
    ['K 300 N 45 block 128 asym', 300, 45, { bits: 4, blockSize: 128, symmetric: false }],
    ['K 200 N 33 block 256 8-bit sym', 200, 33, { bits: 8, blockSize: 256, symmetric: true }],
  ];
  for (const [name, K, N, p] of cases) {
    it(`${name}: same values (up to float32 rounding), output error no worse`, () => {
      const w = llmWeight(K, N, 5);
      const calib: CalibrationData = { x: llmActivations(512, K, 10), rows: 512 };
      const held = llmActivations(192, K, 11);
      const lines: string[] = [];
      for (const opts of [{ validate: false }, { validate: false, actOrder: false }, {}] as GptqOptions[]) {
        const qn = gptqQuantize(w, K, N, p, calib, opts),
          qo = gptqReferenceQuantize(w, K, N, p, calib, opts);
        const dn = dequantize(qn),
          dq = dequantize(qo);
        let same = 0;
        for (let i = 0; i < dn.length; i++) if (dn[i] === dq[i]) same++;
        const hn = outputMse(held, 192, w, dn, K, N),
          ho = outputMse(held, 192, w, dq, K, N);
        const cn = outputMse(calib.x, 512, w, dn, K, N),
          co = outputMse(calib.x, 512, w, dq, K, N);
        lines.push(
          `${JSON.stringify(opts)}: values equal ${((100 * same) / dn.length).toFixed(2)}%, held-out x${(hn / ho).toFixed(4)}, calibration x${(cn / co).toFixed(4)} of the reference`,
        );
        if (opts.actOrder !== false) expect(same / dn.length).toBeGreaterThan(0.99);
        expect(hn).toBeLessThanOrEqual(ho * 1.01);
        expect(cn).toBeLessThanOrEqual(co * 1.01);
      }
      console.info(`[gptq simd] ${name}: ${lines.join('; ')}`);
    });
  }

  it('rows under K / 3.5: diagonal + low-rank factors = the dense factorization; same values as the reference', () => {
    const K = 640,
      N = 48,
      rows = 128,
      p: QuantParams = { bits: 4, blockSize: 32, symmetric: false };
    const x = llmActivations(rows, K, 21);
    for (let r = 0; r < rows; r++) for (let k = 100; k < 110; k++) x[r * K + k] = 0; // unseen inputs
    const calib: CalibrationData = { x, rows };
    const lo = gptqFactors(calib, K, { factorization: 'low-rank' }, true),
      de = gptqFactors(calib, K, { factorization: 'dense' }, true);
    let dmax = 0,
      umax = 0;
    for (let j = 0; j < K; j++)
      for (let k = j & ~127; k < lo.Kq; k++) {
        const o = uIndex(uLayout(lo.Kq), j, k);
        if (k <= j) expect(lo.U![o]).toBe(0);
        else {
          dmax = Math.max(dmax, Math.abs(lo.U![o]! - de.U![o]!));
          umax = Math.max(umax, Math.abs(de.U![o]!));
        }
      }
    expect(dmax).toBeLessThan(1e-5 * umax);
    const w = llmWeight(K, N, 22),
      held = llmActivations(96, K, 23);
    const qn = gptqQuantize(w, K, N, p, calib, { validate: false }),
      qo = gptqReferenceQuantize(w, K, N, p, calib, { validate: false });
    const dn = dequantize(qn),
      dq = dequantize(qo);
    let same = 0;
    for (let i = 0; i < dn.length; i++) if (dn[i] === dq[i]) same++;
    expect(same / dn.length).toBeGreaterThan(0.99);
    expect(outputMse(held, 96, w, dn, K, N)).toBeLessThanOrEqual(outputMse(held, 96, w, dq, K, N) * 1.01);
  });

  it('unseen inputs and a singular Hessian: damped, feedback-free rows, no NaN', () => {
    const K = 96,
      N = 20,
      rows = 80;
    const x = randn(rng(3), rows * K);
    for (let r = 0; r < rows; r++) for (let k = 40; k < 60; k++) x[r * K + k] = 0; // never active
    for (let r = 0; r < rows; r++) x[r * K + 70] = x[r * K + 71]!; // two equal inputs
    const f = gptqFactors({ x, rows }, K, {}, true);
    expect(f.U!.every(Number.isFinite)).toBe(true);
    const q = gptqQuantize(llmWeight(K, N, 4), K, N, { bits: 4, blockSize: 32, symmetric: true }, { x, rows });
    expect(q.scales.every(Number.isFinite)).toBe(true);
  });
});

describe('gptq held-out check on sampled columns (N >= 1024)', () => {
  it('same bytes whole or in slices of any width, and every S-th column scored', async () => {
    const K = 64,
      N = 1100,
      p: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
    expect([1023, 1024, 3072, 8192].map(scoreStride)).toEqual([1, 2, 6, 16]);
    const w = llmWeight(K, N, 8);
    const calib: CalibrationData = { x: llmActivations(128, K, 12), rows: 128 };
    const c = scoredColumns(w, K, N, 0, N)!;
    expect(c.n).toBe(550);
    for (let j = 0; j < c.n; j += 37) for (let k = 0; k < K; k += 13) expect(c.w[k * c.n + j]).toBe(w[k * N + 2 * j]);
    const whole = gptqQuantize(w, K, N, p, calib);
    const exec = { gptq: async (s: GptqStep) => runGptqStep(s), quantize: async () => Promise.reject(new Error('unused')) } as QuantExec;
    for (const width of [7, 64, 333]) {
      const slice = (n0: number, ns: number) => {
        const out = new Float32Array(K * ns);
        for (let k = 0; k < K; k++) out.set(w.subarray(k * N + n0, k * N + n0 + ns), k * ns);
        return out;
      };
      const weight = {
        K,
        N,
        eachSlice: async (f: (w: Float32Array, n0: number, ns: number) => Promise<void>) => {
          for (let n0 = 0; n0 < N; n0 += width) await f(slice(n0, Math.min(width, N - n0)), n0, Math.min(width, N - n0));
        },
      };
      const run = await gptq.prepare!(weight, p, calib, exec);
      const codes = new Uint8Array(whole.codes.length),
        scales = new Float32Array(whole.scales.length);
      await weight.eachSlice(async (ws, n0, ns) => {
        const q = await run(ws, K, ns);
        codes.set(q.codes, n0 * whole.kBlocks * whole.blockSize);
        scales.set(q.scales, n0 * whole.kBlocks);
      });
      expect(Buffer.from(codes).equals(Buffer.from(whole.codes))).toBe(true);
      expect(Buffer.from(scales.buffer).equals(Buffer.from(whole.scales.buffer))).toBe(true);
    }
  });
});
