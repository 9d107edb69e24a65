// masked-scatter: the exporter's NonZero/ScatterND form of `masked_scatter` (and of `embeds[ids == image]
// = features`) rewritten to a running count + Gather + Where. onnxruntime runs the export and the
// rewrite on the exporter's own test sets: the outputs are identical, bit for bit.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, loadModel, saveModel, type Model } from '../../ir/index.js';
import '../../passes/builtin.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { loadTestDataSet, runModel } from '../../runtime/ort.js';

const DIR = path.resolve(__dirname, '../../fixtures/export/mllm');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-masked-scatter-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rewrite(model: Model, scan: string) {
  const reports = await runPipeline(model, parsePipeline(`cleanup,infer-shapes,masked-scatter{scan=${scan}}`), { verifyEach: true });
  return reports.at(-1)!.stats;
}

const ops = (m: Model) => new Set(m.graph.nodes.map((n) => n.opType));

function identical(a: Tensor, b: Tensor): boolean {
  const x = a.toFloat32(),
    y = b.toFloat32();
  return a.dims.join() === b.dims.join() && x.every((v, i) => Object.is(v, y[i]));
}

describe('masked-scatter on the whole-MLLM export', () => {
  it.each(['cumsum', 'matmul'])(
    'scan=%s: NonZero/ScatterND gone, logits identical on both exporter test sets',
    async (scan) => {
      const src = path.join(DIR, 'model.onnx');
      const model = loadModel(src);
      expect(ops(model)).toContain('NonZero');
      const stats = await rewrite(model, scan);
      expect(stats.counts).toEqual({ rewritten: 1, nonZeroLeft: 0 });
      expect(stats.skipped).toEqual([]);
      for (const op of ['NonZero', 'ScatterND']) expect(ops(model)).not.toContain(op);
      expect(ops(model)).toContain(scan === 'cumsum' ? 'CumSum' : 'MatMul');
      const out = path.join(tmp, `mllm-${scan}.onnx`);
      saveModel(model, out);
      for (const set of ['test_data_set_0', 'test_data_set_1']) {
        const data = loadTestDataSet(path.join(DIR, set), model);
        const ref = await runModel(src, data.inputs),
          got = await runModel(out, data.inputs);
        expect(identical(ref.logits!, got.logits!), set).toBe(true);
      }
    },
    60_000,
  );
});

/** embeds = table[ids]; embeds[mask] = features, as index_put exports it; or any mask op. */
function indexPut(maskOp: 'Equal' | 'Greater', opset = 17): Model {
  const b = new GraphBuilder({ opset });
  const ids = b.input('input_ids', DataType.INT64, ['batch', 'seq']);
  const feats = b.input('image_features', DataType.FLOAT, ['tokens', 8]);
  const table = b.constF32(
    'table',
    [16, 8],
    Array.from({ length: 128 }, (_, i) => Math.sin(i)),
  );
  const embeds = b.op1('Gather', [table, ids]);
  const mask = b.op1(maskOp, [ids, b.constInt64('image', [9], [])]);
  const idx = b.op1('Transpose', [b.op1('NonZero', [mask])], { attrs: { perm: [1, 0] } });
  b.output(b.op1('ScatterND', [embeds, idx, feats]), 'inputs_embeds', DataType.FLOAT, ['batch', 'seq', 8]);
  return b.build();
}

describe('masked-scatter matching', () => {
  const ids = Tensor.fromInt64('input_ids', [2, 5], [1, 9, 9, 3, 4, 9, 2, 9, 9, 5]);
  const feats = Tensor.fromFloat32(
    'image_features',
    [5, 8],
    Float32Array.from({ length: 40 }, (_, i) => 100 + i),
  );

  it.each([
    ['cumsum', 17],
    ['matmul', 17],
    ['cumsum', 11],
  ] as const)('index_put form (token mask, feature rows), scan=%s, opset %i: identical in onnxruntime', async (scan, opset) => {
    const model = indexPut('Equal', opset);
    const ref = path.join(tmp, `put-${scan}-${opset}-ref.onnx`),
      out = path.join(tmp, `put-${scan}-${opset}.onnx`);
    saveModel(model, ref);
    const stats = await rewrite(model, scan);
    expect(stats.counts.rewritten).toBe(1);
    expect(ops(model)).not.toContain('NonZero');
    saveModel(model, out);
    const feeds = { input_ids: ids, image_features: feats };
    const a = await runModel(ref, feeds),
      r = await runModel(out, feeds);
    expect(identical(a.inputs_embeds!, r.inputs_embeds!)).toBe(true);
    // Rows 0..4 of the features land on the five image tokens in order.
    const x = r.inputs_embeds!.toFloat32();
    expect([1, 2, 5, 7, 8].map((t) => x[t * 8])).toEqual([100, 108, 116, 124, 132]);
  });

  it('leaves a mask that is not Equal(ids, image token) alone, saying why', async () => {
    const model = indexPut('Greater');
    const stats = await rewrite(model, 'cumsum');
    expect(stats.counts).toEqual({ rewritten: 0, nonZeroLeft: 1 });
    expect(stats.skipped!.join('\n')).toMatch(/ScatterND '.*': the mask is not Equal\(input_ids, image_token\) \(it is Greater\)/);
    expect(ops(model)).toContain('NonZero');
  });

  it('scan=matmul refuses models below opset 12, saying why', async () => {
    const stats = await rewrite(indexPut('Equal', 11), 'matmul');
    expect(stats.counts.rewritten).toBe(0);
    expect(stats.skipped!.join('\n')).toMatch(/scan=matmul needs opset 12/);
  });
});

describe('whole-MLLM graph: the vision side keeps the vision plan', () => {
  it.each(['webgpu', 'mobile', 'npu'] as const)(
    '%s: encoder/projector weights quantized as a vision encoder, the decoder as a decoder',
    async (target) => {
      const { compile } = await import('../../targets/compile.js');
      const r = await compile(path.join(DIR, 'model.onnx'), {
        target,
        out: path.join(tmp, `plan-${target}`),
        verify: false,
        ...(target === 'npu'
          ? { imageSizes: ['224x224'], fix: { sequence_length: 90 }, calibration: path.join(DIR, 'test_data_set_1') }
          : {}),
      });
      const e = r.manifest.models[0]!;
      const m = loadModel(path.join(r.outDir, e.file));
      const consumerOps = (prefix: string) =>
        new Set(
          m.graph.nodes.filter((n) => n.name.startsWith(prefix) && /MatMul|Gemm/.test(n.opType)).map((n) => `${n.domain}:${n.opType}`),
        );
      const vision = consumerOps('/vision_tower/'),
        language = consumerOps('/layers.');
      expect(vision.size * language.size).toBeGreaterThan(0);
      // webgpu: fp16 vision weights (4-bit + fp16 activations took the logits to cosine 0.956); mobile
      // and npu: 8-bit QDQ vision weights; the decoder 4-bit MatMulNBits (QDQ on npu).
      if (target === 'webgpu') expect([...vision]).not.toContain('com.microsoft:MatMulNBits');
      else
        expect(m.graph.nodes.some((n) => n.opType === 'DequantizeLinear' && n.input(0)?.initializer?.dtype === DataType.INT8)).toBe(true);
      if (target !== 'npu') expect([...language].some((k) => k.endsWith('MatMulNBits'))).toBe(true);
      expect((e.quantization as { requested: { vision?: unknown } }).requested.vision).toEqual({
        weights: target === 'webgpu' ? 'none' : 'int8',
        format: target === 'webgpu' ? 'none' : 'qdq',
      });
    },
    120_000,
  );
});
