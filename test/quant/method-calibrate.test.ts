import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, encodeTensor, loadModel, saveModel } from '../../ir/index.js';
import { decoder, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { runModel, tensorToFloat64 } from '../../runtime/ort.js';
import { collectCalibration, loadCalibrationSets, syntheticCalibrationSets, weightCalibration } from '../../runtime/calibrate.js';
import { matmulActivations, normScaleEstimates } from '../../passes/quant/norm-scales.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import type { CalibrationData } from '../../passes/quant/types.js';
import type { QuantizeContext } from '../../passes/quantize.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-qcal-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const seq = 8;
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

describe('collectCalibration', () => {
  it('returns the activations onnxruntime computes, for an external-data model, and cleans up', async () => {
    const dir = path.join(tmp, 'ext');
    saveModel(decoder(), path.join(dir, 'decoder.onnx'), { externalData: true, threshold: 0 });
    const before = fs.readdirSync(dir).sort();
    const model = loadModel(path.join(dir, 'decoder.onnx'));
    const sets = syntheticCalibrationSets(model, 2, spec(5));
    const calib = await collectCalibration(model, sets, { maxRows: 64 });
    expect(fs.readdirSync(dir).sort()).toEqual(before); // temp model removed, data file untouched
    expect(model.graph.outputs.map((o) => o.name)).toEqual(loadModel(path.join(dir, 'decoder.onnx')).graph.outputs.map((o) => o.name));

    const acts = matmulActivations(model);
    expect(calib.size).toBe(acts.size);
    const q = calib.get('model.layers.0.self_attn.q_proj.weight')!;
    expect(q.rows).toBe(2 * seq); // 16 rows <= cap: all kept, set by set
    // q_proj's input is the first RMSNorm output: check a row against a direct run exposing it.
    const probe = decoder();
    const a = acts.get('model.layers.0.self_attn.q_proj.weight')!;
    probe.graph.outputs.push(probe.graph.value(a.name));
    saveModel(probe, path.join(tmp, 'probe.onnx'), { externalData: false });
    const ref = tensorToFloat64((await runModel(path.join(tmp, 'probe.onnx'), sets[1]!, { outputs: [a.name] }))[a.name]!);
    const K = 128;
    for (let i = 0; i < seq * K; i++) expect(q.x[seq * K + i]).toBeCloseTo(ref[i]!, 5);
    // k/v share q's input: same rows
    expect(Array.from(calib.get('model.layers.0.self_attn.k_proj.weight')!.x)).toEqual(Array.from(q.x));
  }, 30_000);

  it('caps rows deterministically and reads a --calibration folder of input sets', async () => {
    const model = decoder();
    const sets = syntheticCalibrationSets(model, 3, spec(9));
    const calDir = path.join(tmp, 'cal');
    sets.forEach((s, i) => {
      const d = path.join(calDir, `test_data_set_${i}`);
      fs.mkdirSync(d, { recursive: true });
      for (const [name, t] of Object.entries(s)) fs.writeFileSync(path.join(d, `${name}.pb`), encodeTensor(t));
    });
    // Other folders beside the sets (the source images, notes) are not sets.
    fs.mkdirSync(path.join(calDir, 'sources'));
    fs.writeFileSync(path.join(calDir, 'sources', 'notes.txt'), 'not a set');
    const loaded = loadCalibrationSets(calDir, model);
    expect(loaded.length).toBe(3);
    const a = await collectCalibration(model, loaded, { maxRows: 10 });
    const b = await collectCalibration(model, sets, { maxRows: 10 });
    for (const [w, c] of a) {
      expect(c.rows).toBe(10);
      expect(Buffer.from(c.x.buffer).equals(Buffer.from(b.get(w)!.x.buffer))).toBe(true);
    }
    expect(() => loadCalibrationSets(path.join(tmp, 'nope'), model)).toThrow(/calibration folder not found/);
    // Bad sets: one line naming the folder or file at fault.
    const lacking = path.join(calDir, 'test_data_set_1', 'position_ids.pb');
    fs.rmSync(lacking);
    expect(() => loadCalibrationSets(calDir, model)).toThrow(
      new RegExp(`^${path.join(calDir, 'test_data_set_1')}: has no tensor for input 'position_ids'$`),
    );
    fs.writeFileSync(lacking, Buffer.from([0xff, 0xff, 0xff]));
    expect(() => loadCalibrationSets(calDir, model)).toThrow(/position_ids\.pb.*not a TensorProto/);
  }, 30_000);
});

describe('normScaleEstimates (data-free activation scale)', () => {
  const gamma = (m: ReturnType<typeof decoder>, name: string) => m.graph.value(name).initializer!.toFloat32();

  it('weightCalibration: only a data-aware method loads sets; it hands out what collectCalibration measures', async () => {
    const model = decoder();
    let loads = 0;
    const load = () => {
      loads++;
      return syntheticCalibrationSets(model, 2, spec(7));
    };
    expect(await weightCalibration(model, 'rtn', load)).toBeUndefined();
    expect(loads).toBe(0);
    const wc = (await weightCalibration(model, 'gptq', load, { maxRows: 32 }))!;
    expect(loads).toBe(1);
    const direct = await collectCalibration(model, syntheticCalibrationSets(model, 2, spec(7)), { maxRows: 32 });
    expect(wc.sets).toBe(2);
    expect(wc.weights).toBe(direct.size);
    const w = 'model.layers.1.mlp.down_proj.weight';
    expect(wc.calibration(w)!.rows).toBe(direct.get(w)!.rows);
    expect(Array.from(wc.calibration(w)!.x)).toEqual(Array.from(direct.get(w)!.x));
  });

  it('samples over the memory budget spill to an unlinked file and read back identical; GPTQ output unchanged', async () => {
    const model = decoder({ weights: 'trained-like' });
    const sets = syntheticCalibrationSets(model, 3, spec(11));
    const inMemory = await collectCalibration(model, sets, { maxRows: 16 });
    const before = fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('edgec-acts-')).length;
    const wc = (await weightCalibration(model, 'gptq', () => sets, { maxRows: 16, memoryBytes: 4096 }))!;
    // Every sample went to disk, and nothing of it is left in the temp folder (unlinked while open).
    expect(wc.spilledBytes).toBeGreaterThan(4096);
    expect(fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('edgec-acts-')).length).toBe(before);
    for (const [w, c] of inMemory) {
      const d = wc.calibration(w)!;
      expect(d.rows).toBe(c.rows);
      expect(Buffer.from(d.x.buffer, d.x.byteOffset, d.x.byteLength).equals(Buffer.from(c.x.buffer, c.x.byteOffset, c.x.byteLength))).toBe(
        true,
      );
    }
    const quantized = async (calibration: (w: string) => CalibrationData | undefined, method = 'gptq') => {
      const m = decoder({ weights: 'trained-like' });
      const ctx: QuantizeContext = { calibration };
      await runPipeline(m, parsePipeline(`quantize-weights{method=${method},bits=4,block=32}`), ctx);
      const out = path.join(tmp, `spill-${Math.random().toString(36).slice(2)}.onnx`);
      saveModel(m, out, { externalData: false });
      return fs.readFileSync(out);
    };
    const a = await quantized((w) => inMemory.get(w));
    const b = await quantized(wc.calibration);
    wc.release();
    expect(a.equals(b)).toBe(true);
    // GPTQ used the samples: its codes are not round-to-nearest's.
    expect(a.equals(await quantized(wc.calibration, 'rtn'))).toBe(false);
  }, 60_000);

  it('reads |gamma| of the RMSNorm feeding each MatMul, in both exported forms; nothing for other inputs', () => {
    for (const rmsNorm of ['div', 'reciprocal'] as const) {
      const m = decoder({ weights: 'trained-like' }, { rmsNorm });
      const est = normScaleEstimates(m);
      expect([...est.keys()].filter((w) => /o_proj|down_proj/.test(w))).toEqual([]);
      expect(est.size).toBe(matmulActivations(m).size - 4);
      const g = gamma(m, 'model.layers.1.post_attention_layernorm.weight');
      for (const w of ['model.layers.1.mlp.gate_proj.weight', 'model.layers.1.mlp.up_proj.weight']) {
        const e = est.get(w)!;
        expect(e.rows).toBe(1);
        expect(Array.from(e.x)).toEqual(Array.from(g, Math.abs));
      }
      expect(Array.from(est.get('lm_head.weight')!.x)).toEqual(Array.from(gamma(m, 'model.norm.weight'), Math.abs));
      // trained-like: the outlier channels stand out in the estimate (x4..x8 against ~1)
      expect(Math.max(...est.get('lm_head.weight')!.x)).toBeGreaterThan(4);
    }
  });

  it('LayerNorm written out (gamma, beta) and fused LayerNormalization: sqrt(gamma^2 + beta^2)', () => {
    const v = visionEncoder();
    const fc1 = normScaleEstimates(v).get('vision_model.encoder.layers.0.mlp.fc1.weight')!;
    const g = gamma(v, 'vision_model.encoder.layers.0.layer_norm2.weight'),
      b = gamma(v, 'vision_model.encoder.layers.0.layer_norm2.bias');
    fc1.x.forEach((x, k) => expect(x).toBeCloseTo(Math.hypot(g[k]!, b[k]!), 6));

    const K = 8,
      bld = new GraphBuilder({ opset: 17 });
    const x = bld.input('x', DataType.FLOAT, [1, 2, K]);
    const sc = Float32Array.from({ length: K }, (_, k) => k - 3),
      bias = Float32Array.from({ length: K }, (_, k) => 0.5 * k);
    const ln = bld.op1('LayerNormalization', [x, bld.constF32('ln.scale', [K], sc), bld.constF32('ln.bias', [K], bias)], {
      attrs: { axis: -1 },
    });
    bld.output(bld.op1('MatMul', [ln, bld.constF32('w', [K, 4], new Float32Array(K * 4).fill(0.1))]), 'y', DataType.FLOAT, [1, 2, 4]);
    const est = normScaleEstimates(bld.build()).get('w')!;
    est.x.forEach((e, k) => expect(e).toBeCloseTo(Math.hypot(sc[k]!, bias[k]!), 6));
  });
});
