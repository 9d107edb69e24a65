// AWQ (methods/awq.ts, quant/awq-fold.ts): the search never does worse than no scaling on the rows it
// scores; in the quantize pass the scales are folded into the norms and the model run in onnxruntime
// has lower logits error than RTN on held-out inputs; the same bytes on 1, 2 and 4 threads.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Tensor, encodeModel, saveModel, type Model } from '../../ir/index.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { runModel, tensorToFloat64 } from '../../runtime/ort.js';
import { collectCalibration, syntheticCalibrationSets } from '../../runtime/calibrate.js';
import { dequantize, type CalibrationData, type QuantParams } from '../../passes/quant/types.js';
import { rtnQuantize } from '../../passes/quant/methods/rtn.js';
import { awqQuantize, awqSearch } from '../../passes/quant/methods/awq.js';
import { quantizeInt4 } from '../../passes/quantize.js';
import { resolveOptions } from '../../passes/pass.js';
import { llmActivations, llmWeight, outputMse } from './llm-like.js';

const P4: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-awq-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('awq scale search', () => {
  it('cuts output error against RTN on LLM-like activations (x8 channels); alpha 0 on flat ones', () => {
    const K = 256,
      N = 128,
      w = llmWeight(K, N, 5);
    const calib: CalibrationData = { x: llmActivations(256, K, 10), rows: 256 };
    const held = llmActivations(128, K, 11);
    for (const p of [P4, { ...P4, symmetric: false }] as QuantParams[]) {
      const { q, r } = awqQuantize(w, K, N, p, calib);
      // the weight the scaled codes stand for: row k divided by s_k
      const d = dequantize(q);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) d[k * N + n]! /= r.s[k]!;
      const oA = outputMse(held, 128, w, d, K, N),
        oR = outputMse(held, 128, w, dequantize(rtnQuantize(w, K, N, p)), K, N);
      console.info(`[awq] ${p.symmetric ? 'sym' : 'asym'}: alpha ${r.alpha}, held-out output MSE x${(oA / oR).toFixed(3)} of rtn`);
      expect(r.alpha).toBeGreaterThan(0);
      expect(r.err).toBeLessThanOrEqual(r.err0);
      expect(oA).toBeLessThan(oR * 0.9);
    }
    // every channel alike: nothing to protect, the search keeps s = 1 or close to it
    const flat = new Float32Array(256 * K).map((_, i) => Math.sin(i * 1.7));
    const r = awqSearch([{ w, K, N }], { x: flat, rows: 256 }, P4);
    expect(r.err).toBeLessThanOrEqual(r.err0);
    expect(Math.max(...r.s) / Math.min(...r.s)).toBeLessThan(1.2);
  });
});

describe('awq in the quantize pass (fixture decoder, onnxruntime)', () => {
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

  async function logits(model: Model, file: string, feeds: Record<string, Tensor>[]): Promise<Float64Array[]> {
    saveModel(model, path.join(tmp, file), { externalData: false });
    const out: Float64Array[] = [];
    for (const f of feeds) out.push(tensorToFloat64((await runModel(path.join(tmp, file), f, { outputs: ['logits'] })).logits!));
    return out;
  }
  const mse = (a: Float64Array[], b: Float64Array[]) => {
    let s = 0,
      n = 0;
    a.forEach((x, i) => x.forEach((v, j) => ((s += (v - b[i]![j]!) ** 2), n++)));
    return s / n;
  };

  it('folds into the RMSNorms, beats RTN on held-out logits; 1/2/4 threads give the same bytes', async () => {
    const src = decoder({ weights: 'trained-like' });
    const calib = await collectCalibration(src, syntheticCalibrationSets(src, 32, spec(100)), { maxRows: 1024 });
    const evalSets = syntheticCalibrationSets(src, 3, spec(900));
    const ref = await logits(src, 'fp32.onnx', evalSets);
    const errs: Record<string, number> = {};
    for (const method of ['rtn', 'awq', 'awq+gptq']) {
      const encoded: Buffer[] = [];
      for (const threads of method === 'rtn' ? [1] : [1, 2, 4]) {
        const m = decoder({ weights: 'trained-like' });
        const st = await quantizeInt4.run(m, resolveOptions(quantizeInt4, { method, block: 32, sym: true, threads }), {
          calibration: (w) => calib.get(w),
        });
        encoded.push(Buffer.from(encodeModel(m)));
        if (threads > 1) continue;
        if (method !== 'rtn') {
          console.info(`[awq] ${method} notes: ${st.notes!.filter((n) => n.startsWith('awq')).join(' | ')}`);
          expect(st.notes!.some((n) => /^awq: scales folded into [1-9]/.test(n))).toBe(true);
          expect(st.notes!.some((n) => /o_proj.*quantized unscaled|unscaled.*o_proj/.test(n))).toBe(true);
          expect(m.graph.initializers.some((t) => /_awq$/.test(t.name))).toBe(true);
        }
        errs[method] = mse(ref, await logits(m, `${method}.onnx`, evalSets));
      }
      for (const e of encoded.slice(1)) expect(e.equals(encoded[0]!)).toBe(true);
    }
    console.info(
      `[awq] trained-like decoder, held-out logits MSE: rtn ${errs.rtn!.toExponential(3)}, awq x${(errs.awq! / errs.rtn!).toFixed(3)}, awq+gptq x${(errs['awq+gptq']! / errs.rtn!).toFixed(3)}`,
    );
    expect(errs.awq!).toBeLessThan(errs.rtn!);
    expect(errs['awq+gptq']!).toBeLessThan(errs.awq!);
  }, 240_000);
});
