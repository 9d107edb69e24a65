// Accuracy of the data-free (mse-search) and calibration (gptq) methods against RTN, on synthetic
// LLM-like weights and activations and on the fixture decoder run in onnxruntime.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Tensor, saveModel, type Model } from '../../ir/index.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { rng, randn, runModel, tensorToFloat64 } from '../../runtime/ort.js';
import { collectCalibration, matmulActivations, syntheticCalibrationSets } from '../../runtime/calibrate.js';
import { dequantize, type CalibrationData, type QuantParams } from '../../passes/quant/types.js';
import { getMethod } from '../../passes/quant/methods/index.js';
import { rtnQuantize } from '../../passes/quant/methods/rtn.js';
import { mseSearchQuantize } from '../../passes/quant/methods/mse-search.js';
import { gptqQuantize } from '../../passes/quant/methods/gptq.js';
import { quantizeInt4 } from '../../passes/quantize.js';
import { resolveOptions } from '../../passes/pass.js';

const P4: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-qacc-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) { const d = a[i]! - b[i]!; s += d * d; }
  return s / a.length;
}

/** mean over rows and outputs of (X (W - Wq))^2. */
function outputMse(x: Float32Array, rows: number, w: Float32Array, wq: Float32Array, K: number, N: number): number {
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
function llmWeight(K: number, N: number, seed: number): Float32Array {
  const w = randn(rng(seed), K * N, 0.02);
  for (let n = 3; n < N; n += 41) for (let k = 0; k < K; k++) w[k * N + n]! *= 6;
  for (let k = 5; k < K; k += 67) for (let n = 0; n < N; n++) w[k * N + n]! *= 4;
  return w;
}

/** Low-rank correlated activations plus noise, with a few high-magnitude channels (as in LLMs). */
function llmActivations(rows: number, K: number, seed: number): Float32Array {
  const rank = 48, A = randn(rng(4242), rank * K, 1 / Math.sqrt(rank));
  const r = rng(seed), z = randn(r, rows * rank), noise = randn(r, rows * K, 0.3);
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

/** Per-block brute force over 2000 scales (both grid orientations) with rounding at each: the optimum. */
function bruteForceSym(w: Float32Array, K: number, N: number, bs: number): number {
  let tot = 0;
  const x = new Float64Array(bs);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < K / bs; b++) {
      let m = 0;
      for (let i = 0; i < bs; i++) { x[i] = w[(b * bs + i) * N + n]!; if (Math.abs(x[i]!) > Math.abs(m)) m = x[i]!; }
      let best = Infinity;
      for (let t = 0; t < 1000; t++) {
        for (const L of [-(6 + t * 0.006), 5 + t * 0.006]) {
          const s = m / L;
          let e = 0;
          for (let i = 0; i < bs; i++) { const q = Math.min(7, Math.max(-8, Math.round(x[i]! / s))); e += (x[i]! - q * s) ** 2; }
          if (e < best) best = e;
        }
      }
      tot += best;
    }
  }
  return tot / (K * N);
}

describe('mse-search (data-free) vs rtn', () => {
  const K = 256, N = 128, w = llmWeight(K, N, 3);

  it('never worse than RTN on any block, and reaches the brute-force optimum', () => {
    const r = rtnQuantize(w, K, N, P4), s = mseSearchQuantize(w, K, N, P4);
    const dr = dequantize(r), ds = dequantize(s);
    let worse = 0;
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < K / 32; b++) {
        let er = 0, es = 0;
        for (let k = b * 32; k < b * 32 + 32; k++) { er += (dr[k * N + n]! - w[k * N + n]!) ** 2; es += (ds[k * N + n]! - w[k * N + n]!) ** 2; }
        if (es > er * (1 + 1e-5) + 1e-14) worse++;
      }
    }
    expect(worse).toBe(0);
    const eR = mse(w, dr), eS = mse(w, ds), eOpt = bruteForceSym(w, K, N, 32);
    console.info(`[mse-search] N(0,.02)+outliers block32 sym4: weight MSE rtn ${eR.toExponential(3)} mse-search ${eS.toExponential(3)} (x${(eS / eR).toFixed(3)}), brute-force optimum ${eOpt.toExponential(3)} (x${(eOpt / eR).toFixed(3)})`);
    expect(eS / eR).toBeLessThan(0.92);
    expect(eS).toBeLessThanOrEqual(eOpt * 1.005);
  });

  it('cuts output error on random X and on activation-like X; asymmetric and block 128 too', () => {
    const rows = 128, xr = randn(rng(8), rows * K), xa = llmActivations(rows, K, 9);
    const lines: string[] = [], ratios: number[] = [];
    for (const p of [P4, { ...P4, symmetric: false }, { ...P4, blockSize: 128 }] as QuantParams[]) {
      const dr = dequantize(rtnQuantize(w, K, N, p)), ds = dequantize(mseSearchQuantize(w, K, N, p));
      const wR = mse(w, dr), wS = mse(w, ds);
      const oR = outputMse(xr, rows, w, dr, K, N), oS = outputMse(xr, rows, w, ds, K, N);
      const aR = outputMse(xa, rows, w, dr, K, N), aS = outputMse(xa, rows, w, ds, K, N);
      lines.push(`block${p.blockSize} ${p.symmetric ? 'sym' : 'asym'}: weight x${(wS / wR).toFixed(3)}, output(random X) x${(oS / oR).toFixed(3)}, output(LLM-like X) x${(aS / aR).toFixed(3)}`);
      ratios.push(wS / wR, oS / oR);
    }
    console.info(`[mse-search] vs rtn: ${lines.join('; ')}`);
    for (const r of ratios) expect(r).toBeLessThan(0.98);
  });
});

describe('gptq (calibration) vs rtn', () => {
  it('cuts held-out output error ||XW - XWq||^2 by far more than 20%', () => {
    const K = 256, N = 128, w = llmWeight(K, N, 5);
    const calib: CalibrationData = { x: llmActivations(512, K, 10), rows: 512 };
    const held = llmActivations(192, K, 11);
    const lines: string[] = [];
    for (const p of [P4, { ...P4, symmetric: false }, { ...P4, blockSize: 128 }] as QuantParams[]) {
      const oR = outputMse(held, 192, w, dequantize(rtnQuantize(w, K, N, p)), K, N);
      const oS = outputMse(held, 192, w, dequantize(mseSearchQuantize(w, K, N, p)), K, N);
      const oG = outputMse(held, 192, w, dequantize(gptqQuantize(w, K, N, p, calib)), K, N);
      lines.push(`block${p.blockSize} ${p.symmetric ? 'sym' : 'asym'}: rtn ${oR.toExponential(3)}, mse-search x${(oS / oR).toFixed(3)}, gptq x${(oG / oR).toFixed(3)}`);
      expect(oG / oR).toBeLessThan(0.8);
    }
    console.info(`[gptq] held-out output MSE vs rtn: ${lines.join('; ')}`);
  });

  it('codes respect the format: integer zero points, codes in range, padding = zp', () => {
    const K = 100, N = 12, w = llmWeight(K, N, 6);
    const q = gptqQuantize(w, K, N, { bits: 4, blockSize: 32, symmetric: false }, { x: llmActivations(64, K, 12), rows: 64 });
    expect(q.kBlocks).toBe(4);
    expect(q.codes.every((c) => c <= 15)).toBe(true);
    for (let n = 0; n < N; n++) for (let k = K; k < 128; k++) expect(q.codes[n * 128 + k]).toBe(q.zeroPoints![n * 4 + 3]);
    expect(() => gptqQuantize(w, K, N, P4, undefined)).toThrow(/calibration/);
  });
});

describe('fixture decoder in onnxruntime', () => {
  const seq = 32;
  const spec = (seed: number) => ({
    seed, dims: { batch: 1, seq, past_seq: 0, total_seq: seq },
    fixed: {
      attention_mask: Tensor.fromInt64('attention_mask', [1, seq], new Array(seq).fill(1)),
      position_ids: Tensor.fromInt64('position_ids', [1, seq], Array.from({ length: seq }, (_, i) => i)),
    },
  });

  async function logits(model: Model, file: string, feeds: Record<string, Tensor>[]): Promise<Float64Array[]> {
    saveModel(model, path.join(tmp, file), { externalData: false });
    const out: Float64Array[] = [];
    for (const f of feeds) out.push(tensorToFloat64((await runModel(path.join(tmp, file), f, { outputs: ['logits'] })).logits!));
    return out;
  }

  it('per-weight and end-to-end logits error: rtn vs mse-search vs gptq (block 32, 4-bit)', async () => {
    const model = decoder();
    const calSets = syntheticCalibrationSets(model, 16, spec(100));
    const evalSets = syntheticCalibrationSets(model, 3, spec(900));
    const calib = await collectCalibration(model, calSets, { maxRows: 512 });
    const held = await collectCalibration(model, evalSets, { maxRows: 96 });
    const weights = [...matmulActivations(model).keys()];
    expect(calib.size).toBe(weights.length);
    for (const c of calib.values()) expect(c.rows).toBe(512);
    const ref = await logits(model, 'fp32.onnx', evalSets);

    const methods = ['rtn', 'mse-search', 'gptq'] as const;
    const wErr = { rtn: 0, 'mse-search': 0, gptq: 0 }, oErr = { rtn: 0, 'mse-search': 0, gptq: 0 }, lErr = { rtn: 0, 'mse-search': 0, gptq: 0 };
    const passErr = { rtn: 0, 'mse-search': 0, gptq: 0 };
    for (const m of methods) {
      const qm = decoder();
      for (const name of weights) {
        const v = qm.graph.value(name), t = v.initializer!;
        const [K, N] = t.dims as [number, number];
        const w = t.toFloat32();
        const d = dequantize(getMethod(m).quantize(w, K, N, P4, calib.get(name)));
        wErr[m] += mse(w, d) / weights.length;
        const h = held.get(name)!;
        oErr[m] += outputMse(h.x, h.rows, w, d, K, N) / weights.length;
        qm.graph.setInitializer(v, Tensor.fromFloat32(name, [K, N], d));
      }
      const got = await logits(qm, `${m}.onnx`, evalSets);
      lErr[m] = got.reduce((s, g, i) => s + mse(ref[i]!, g), 0) / got.length;
      // The same method through the quantize pass: MatMulNBits nodes run by onnxruntime.
      const pm = decoder();
      const st = await quantizeInt4.run(pm, resolveOptions(quantizeInt4, { method: m, block: 32, sym: true }), { calibration: (w) => calib.get(w) });
      expect(st.counts.matmul).toBe(weights.length);
      const viaPass = await logits(pm, `${m}-pass.onnx`, evalSets);
      passErr[m] = viaPass.reduce((s, g, i) => s + mse(ref[i]!, g), 0) / viaPass.length;
      expect(Math.abs(passErr[m] - lErr[m]) / lErr[m]).toBeLessThan(0.02);
    }
    const refVar = ref.reduce((s, r) => s + mse(r, new Float64Array(r.length)), 0) / ref.length;
    console.info(`[fixture decoder ${weights.length} MatMul weights, 4-bit block 32 sym] mean weight MSE: ${methods.map((m) => `${m} ${wErr[m].toExponential(3)}`).join(', ')}; ` +
      `mean held-out output MSE: ${methods.map((m) => `${m} ${oErr[m].toExponential(3)}`).join(', ')}; ` +
      `logits MSE vs fp32 (mean logit^2 ${refVar.toExponential(3)}): ${methods.map((m) => `${m} ${lErr[m].toExponential(3)}`).join(', ')}; ` +
      `same through quantize-int4 (MatMulNBits in onnxruntime): ${methods.map((m) => `${m} ${passErr[m].toExponential(3)}`).join(', ')}`);
    expect(wErr['mse-search']).toBeLessThan(wErr.rtn);
    // The fixture's activations are close to isotropic (random embeddings through random weights), so
    // error feedback has little to exploit here; the >= 20% cut is shown on anisotropic activations above.
    expect(oErr.gptq).toBeLessThan(oErr.rtn);
    expect(lErr['mse-search']).toBeLessThan(lErr.rtn);
    expect(lErr.gptq).toBeLessThan(lErr.rtn);
  }, 60_000);
});
