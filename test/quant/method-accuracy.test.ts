// Accuracy of the data-free (mse-search) and calibration (gptq) methods against RTN, on synthetic
// LLM-like weights and activations and on the fixture decoder run in onnxruntime.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Tensor, saveModel, type Model } from '../../ir/index.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { rng, randn, runModel, tensorToFloat64 } from '../../runtime/ort.js';
import { collectCalibration, syntheticCalibrationSets } from '../../runtime/calibrate.js';
import { matmulActivations, normScaleEstimates } from '../../passes/quant/norm-scales.js';
import { dequantize, type CalibrationData, type QuantParams } from '../../passes/quant/types.js';
import { rtnQuantize } from '../../passes/quant/methods/rtn.js';
import { channelEnergy, mseSearchQuantize } from '../../passes/quant/methods/mse-search.js';
import { gptqQuantize } from '../../passes/quant/methods/gptq.js';
import { quantizeInt4 } from '../../passes/quantize.js';
import { resolveOptions } from '../../passes/pass.js';
import { llmActivations, llmWeight, outputMse } from './llm-like.js';

const P4: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-qacc-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s / a.length;
}

/** Per-block brute force over 2000 scales (both grid orientations) with rounding at each: the optimum. */
function bruteForceSym(w: Float32Array, K: number, N: number, bs: number): number {
  let tot = 0;
  const x = new Float64Array(bs);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < K / bs; b++) {
      let m = 0;
      for (let i = 0; i < bs; i++) {
        x[i] = w[(b * bs + i) * N + n]!;
        if (Math.abs(x[i]!) > Math.abs(m)) m = x[i]!;
      }
      let best = Infinity;
      for (let t = 0; t < 1000; t++) {
        for (const L of [-(6 + t * 0.006), 5 + t * 0.006]) {
          const s = m / L;
          let e = 0;
          for (let i = 0; i < bs; i++) {
            const q = Math.min(7, Math.max(-8, Math.round(x[i]! / s)));
            e += (x[i]! - q * s) ** 2;
          }
          if (e < best) best = e;
        }
      }
      tot += best;
    }
  }
  return tot / (K * N);
}

describe('mse-search (data-free) vs rtn', () => {
  const K = 256,
    N = 128,
    w = llmWeight(K, N, 3);

  it('never worse than RTN on any block, and reaches the brute-force optimum', () => {
    const r = rtnQuantize(w, K, N, P4),
      s = mseSearchQuantize(w, K, N, P4);
    const dr = dequantize(r),
      ds = dequantize(s);
    let worse = 0;
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < K / 32; b++) {
        let er = 0,
          es = 0;
        for (let k = b * 32; k < b * 32 + 32; k++) {
          er += (dr[k * N + n]! - w[k * N + n]!) ** 2;
          es += (ds[k * N + n]! - w[k * N + n]!) ** 2;
        }
        if (es > er * (1 + 1e-5) + 1e-14) worse++;
      }
    }
    expect(worse).toBe(0);
    const eR = mse(w, dr),
      eS = mse(w, ds),
      eOpt = bruteForceSym(w, K, N, 32);
    console.info(
      `[mse-search] N(0,.02)+outliers block32 sym4: weight MSE rtn ${eR.toExponential(3)} mse-search ${eS.toExponential(3)} (x${(eS / eR).toFixed(3)}), brute-force optimum ${eOpt.toExponential(3)} (x${(eOpt / eR).toFixed(3)})`,
    );
    expect(eS / eR).toBeLessThan(0.92);
    expect(eS).toBeLessThanOrEqual(eOpt * 1.005);
  });

  it('cuts output error on random X and on activation-like X; asymmetric and block 128 too', () => {
    const rows = 128,
      xr = randn(rng(8), rows * K),
      xa = llmActivations(rows, K, 9);
    const lines: string[] = [],
      ratios: number[] = [];
    for (const p of [P4, { ...P4, symmetric: false }, { ...P4, blockSize: 128 }] as QuantParams[]) {
      const dr = dequantize(rtnQuantize(w, K, N, p)),
        ds = dequantize(mseSearchQuantize(w, K, N, p));
      const wR = mse(w, dr),
        wS = mse(w, ds);
      const oR = outputMse(xr, rows, w, dr, K, N),
        oS = outputMse(xr, rows, w, ds, K, N);
      const aR = outputMse(xa, rows, w, dr, K, N),
        aS = outputMse(xa, rows, w, ds, K, N);
      lines.push(
        `block${p.blockSize} ${p.symmetric ? 'sym' : 'asym'}: weight x${(wS / wR).toFixed(3)}, output(random X) x${(oS / oR).toFixed(3)}, output(LLM-like X) x${(aS / aR).toFixed(3)}`,
      );
      ratios.push(wS / wR, oS / oR);
    }
    console.info(`[mse-search] vs rtn: ${lines.join('; ')}`);
    for (const r of ratios) expect(r).toBeLessThan(0.98);
  });

  it('weighted by activation energy per input channel: lower held-out output error than weight MSE alone', () => {
    const rows = 256,
      calib: CalibrationData = { x: llmActivations(rows, K, 21), rows },
      held = llmActivations(128, K, 22);
    const lines: string[] = [];
    for (const p of [P4, { ...P4, symmetric: false }] as QuantParams[]) {
      const oR = outputMse(held, 128, w, dequantize(rtnQuantize(w, K, N, p)), K, N);
      const oS = outputMse(held, 128, w, dequantize(mseSearchQuantize(w, K, N, p)), K, N);
      const oW = outputMse(held, 128, w, dequantize(mseSearchQuantize(w, K, N, p, channelEnergy(calib, K))), K, N);
      lines.push(`block32 ${p.symmetric ? 'sym' : 'asym'}: unweighted x${(oS / oR).toFixed(3)}, weighted x${(oW / oR).toFixed(3)}`);
      expect(oW).toBeLessThan(oS * 0.9);
      expect(oW).toBeLessThan(oR * 0.8);
    }
    console.info(`[mse-search] output error vs rtn on LLM-like X (x8 channels): ${lines.join('; ')}`);
    expect(() => channelEnergy({ x: new Float32Array(10), rows: 2 }, K)).toThrow(/expected rows\*K/);
  });
});

describe('gptq (calibration) vs rtn', () => {
  it('cuts held-out output error ||XW - XWq||^2 by far more than 20%', () => {
    const K = 256,
      N = 128,
      w = llmWeight(K, N, 5);
    const calib: CalibrationData = { x: llmActivations(512, K, 10), rows: 512 };
    const held = llmActivations(192, K, 11);
    const lines: string[] = [];
    for (const p of [P4, { ...P4, symmetric: false }, { ...P4, blockSize: 128 }] as QuantParams[]) {
      const oR = outputMse(held, 192, w, dequantize(rtnQuantize(w, K, N, p)), K, N);
      const oS = outputMse(held, 192, w, dequantize(mseSearchQuantize(w, K, N, p)), K, N);
      const oG = outputMse(held, 192, w, dequantize(gptqQuantize(w, K, N, p, calib)), K, N);
      lines.push(
        `block${p.blockSize} ${p.symmetric ? 'sym' : 'asym'}: rtn ${oR.toExponential(3)}, mse-search x${(oS / oR).toFixed(3)}, gptq x${(oG / oR).toFixed(3)}`,
      );
      expect(oG / oR).toBeLessThan(0.8);
    }
    console.info(`[gptq] held-out output MSE vs rtn: ${lines.join('; ')}`);
  });

  it('codes respect the format: integer zero points, codes in range, padding = zp', () => {
    const K = 100,
      N = 12,
      w = llmWeight(K, N, 6);
    const q = gptqQuantize(w, K, N, { bits: 4, blockSize: 32, symmetric: false }, { x: llmActivations(64, K, 12), rows: 64 });
    expect(q.kBlocks).toBe(4);
    expect(q.codes.every((c) => c <= 15)).toBe(true);
    for (let n = 0; n < N; n++) for (let k = K; k < 128; k++) expect(q.codes[n * 128 + k]).toBe(q.zeroPoints![n * 4 + 3]);
    expect(() => gptqQuantize(w, K, N, P4, undefined)).toThrow(/calibration/);
  });
});

// The fixture decoder quantized by the quantize-int4 pass (MatMulNBits run by onnxruntime), logits
// compared with fp32 on held-out inputs. Data-free: mse-search weighted by the norm-scale estimates
// (no input run); calibration: gptq on 64 seeded sets x 32 tokens (seeds 100..), different from the
// evaluation sets (seeds 900..). Measured logits-MSE ratios vs RTN (4-bit, block 32):
//   gaussian      sym: mse-search 0.866, gptq 0.864   asym: 0.887, 0.884
//   trained-like  sym: mse-search 0.750, gptq 0.712   asym: 0.811, 0.773
// Random-init Gaussian weights with isotropic activations leave little to gain; outlier channels
// (and heavy tails) are where activation-weighted search and calibration pay.
describe('fixture decoder in onnxruntime: logits vs fp32', () => {
  const seq = 32;
  const spec = (seed: number) => ({
    seed,
    dims: { batch: 1, seq, past_seq: 0, total_seq: seq },
    fixed: {
      attention_mask: Tensor.fromInt64('attention_mask', [1, seq], new Array(seq).fill(1)),
      position_ids: Tensor.fromInt64(
        'position_ids',
        [1, seq],
        Array.from({ length: seq }, (_, i) => i),
      ),
    },
  });
  /** Method, and where its per-weight statistics come from. */
  const runs = [
    { name: 'rtn', method: 'rtn', stats: 'none' },
    { name: 'mse-search (weights only)', method: 'mse-search', stats: 'none' },
    { name: 'mse-search (data-free)', method: 'mse-search', stats: 'norm' },
    { name: 'gptq (calibration)', method: 'gptq', stats: 'calib' },
  ] as const;
  type Row = { cos: number; mse: number; ratio: number };

  async function logits(model: Model, file: string, feeds: Record<string, Tensor>[]): Promise<Float64Array[]> {
    saveModel(model, path.join(tmp, file), { externalData: false });
    const out: Float64Array[] = [];
    for (const f of feeds) out.push(tensorToFloat64((await runModel(path.join(tmp, file), f, { outputs: ['logits'] })).logits!));
    fs.rmSync(path.join(tmp, file));
    return out;
  }

  function compare(ref: Float64Array[], got: Float64Array[]): { cos: number; mse: number } {
    let se = 0,
      n = 0,
      dot = 0,
      na = 0,
      nb = 0;
    ref.forEach((r, i) => {
      const g = got[i]!;
      for (let j = 0; j < r.length; j++) {
        se += (r[j]! - g[j]!) ** 2;
        dot += r[j]! * g[j]!;
        na += r[j]! ** 2;
        nb += g[j]! ** 2;
        n++;
      }
    });
    return { cos: dot / Math.sqrt(na * nb), mse: se / n };
  }

  async function measure(weights: 'gaussian' | 'trained-like'): Promise<Record<'sym' | 'asym', Record<string, Row>>> {
    const model = decoder({ weights });
    const nWeights = matmulActivations(model).size;
    const calib = await collectCalibration(model, syntheticCalibrationSets(model, 64, spec(100)), { maxRows: 2048 });
    const norm = normScaleEstimates(model);
    expect(calib.size).toBe(nWeights);
    expect(norm.size).toBe(nWeights - 4); // all but o_proj and down_proj read a norm's output
    const evalSets = syntheticCalibrationSets(model, 3, spec(900));
    const ref = await logits(model, `${weights}-fp32.onnx`, evalSets);
    const table = {} as Record<'sym' | 'asym', Record<string, Row>>;
    for (const sym of [true, false]) {
      const fmt = sym ? 'sym' : 'asym',
        rows: Record<string, Row> = {};
      for (const r of runs) {
        const qm = decoder({ weights });
        // 'norm': the pass reads the norm-scale estimates itself; weights-only: an empty statistic.
        const calibration = r.stats === 'calib' ? (w: string) => calib.get(w) : r.stats === 'norm' ? undefined : () => undefined;
        const st = await quantizeInt4.run(qm, resolveOptions(quantizeInt4, { method: r.method, block: 32, sym }), { calibration });
        if (r.stats === 'norm') expect(st.notes).toContain(`data-free channel scales from norm weights for ${norm.size} weight(s)`);
        expect(st.counts.matmul).toBe(nWeights);
        const c = compare(ref, await logits(qm, `${weights}-${fmt}-${r.method}-${r.stats}.onnx`, evalSets));
        rows[r.name] = { ...c, ratio: c.mse / (rows.rtn?.mse ?? c.mse) };
      }
      table[fmt] = rows;
      console.info(
        `[${weights} decoder, 4-bit block 32 ${fmt}] ` +
          runs
            .map(
              ({ name }) =>
                `${name}: cosine ${rows[name]!.cos.toFixed(5)}, logits MSE ${rows[name]!.mse.toExponential(3)} (x${rows[name]!.ratio.toFixed(3)} of rtn)`,
            )
            .join('; '),
      );
    }
    return table;
  }

  it('gaussian-init fixture: RTN cosine >= 0.99; every method below RTN', async () => {
    const t = await measure('gaussian');
    for (const fmt of ['sym', 'asym'] as const) {
      expect(t[fmt].rtn!.cos).toBeGreaterThanOrEqual(0.99);
      for (const r of runs.slice(1)) expect(t[fmt][r.name]!.ratio).toBeLessThan(0.95);
    }
  }, 240_000); // ~30 s alone; a loaded 2-core CI machine has taken over 60

  it('trained-like fixture: RTN cosine >= 0.99; data-free and calibration cut logits MSE >= 20% (sym), gptq in both formats', async () => {
    const t = await measure('trained-like');
    for (const fmt of ['sym', 'asym'] as const) {
      expect(t[fmt].rtn!.cos).toBeGreaterThanOrEqual(0.99);
      expect(t[fmt]['mse-search (weights only)']!.ratio).toBeLessThan(1);
      expect(t[fmt]['gptq (calibration)']!.ratio).toBeLessThan(0.8);
    }
    expect(t.sym['mse-search (data-free)']!.ratio).toBeLessThan(0.78);
    expect(t.asym['mse-search (data-free)']!.ratio).toBeLessThan(0.83);
    expect(t.sym['gptq (calibration)']!.ratio).toBeLessThan(0.73);
  }, 240_000);
});
