// fold-batchnorm, lower-contrib, position-ids-input and weight discovery, each checked in
// onnxruntime: the graph before and after gives the same outputs.
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor } from '../../ir/index.js';
import { foldBatchNorm } from '../../passes/fold-batchnorm.js';
import { lowerContrib } from '../../passes/lower-contrib.js';
import { positionIdsInput } from '../../passes/position-ids-input.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { quantizeInt4 } from '../../passes/quantize.js';
import { foldConstants } from '../../passes/fold-constants.js';
import { positionIdsFromMask } from '../../targets/position-ids.js';
import { randomInputs } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts, runPass } from './fuse-util.js';
import { seededRandom } from './npu-util.js';

afterAll(cleanup);

describe('fold-batchnorm', () => {
  it('folds BN into the Conv before it and lowers a lone BN to Mul + Add, same outputs', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const r = seededRandom(3);
    const x = b.input('x', DataType.FLOAT, [1, 3, 8, 8]);
    const bn = (name: string, c: number, v: ReturnType<typeof b.input>) =>
      b.op1(
        'BatchNormalization',
        [
          v,
          b.constF32(`${name}.g`, [c], r.array(c, 0.5, 1.5)),
          b.constF32(`${name}.b`, [c], r.array(c, -0.5, 0.5)),
          b.constF32(`${name}.m`, [c], r.array(c, -1, 1)),
          b.constF32(`${name}.v`, [c], r.array(c, 1e-4, 2)),
        ],
        { attrs: { epsilon: { float: 1e-5 } } },
      );
    const conv = b.op1('Conv', [x, b.constF32('w', [4, 3, 3, 3], r.array(108, -1, 1)), b.constF32('cb', [4], r.array(4, -1, 1))], {
      attrs: { pads: [1, 1, 1, 1] },
    });
    const y = bn('bn1', 4, conv);
    b.output(bn('bn2', 4, b.op1('Relu', [y])), 'y', DataType.FLOAT, [1, 4, 8, 8]);
    const model = b.build();
    await runPass(model, inferShapes);
    const res = await fuseAndCompare(model, foldBatchNorm);
    expect(res.stats.counts).toMatchObject({ foldedIntoConv: 1, loweredToMulAdd: 1 });
    expect(opCounts(model).BatchNormalization).toBeUndefined();
    expect(res.minCosine).toBeGreaterThan(0.99999);
    expect(res.maxAbs).toBeLessThan(1e-4);
  });
});

describe('lower-contrib', () => {
  it('turns every contrib Gelu/LayerNorm form into ai.onnx ops with the same outputs (opset 21 and 17)', async () => {
    for (const opset of [21, 17]) {
      const b = new GraphBuilder({ opset, opsets: { 'com.microsoft': 1 } });
      const r = seededRandom(5);
      const x = b.input('x', DataType.FLOAT, [2, 3, 16]);
      const skip = b.input('skip', DataType.FLOAT, [2, 3, 16]);
      const ms = { domain: 'com.microsoft' };
      const g = b.constF32('gamma', [16], r.array(16, 0.5, 1.5)),
        be = b.constF32('beta', [16], r.array(16, -0.2, 0.2)),
        bias = b.constF32('bias', [16], r.array(16, -0.2, 0.2));
      const a = b.op1('FastGelu', [x, bias], ms);
      const c = b.op1('Gelu', [a], ms);
      const d = b.op1('QuickGelu', [c], { ...ms, attrs: { alpha: { float: 1.702 } } });
      const e = b.op1('BiasGelu', [d, bias], ms);
      const [ln, , , sum] = b.op('SkipLayerNormalization', [e, skip, g, be, bias], {
        ...ms,
        outputs: 4,
        attrs: { epsilon: { float: 1e-5 } },
      });
      const [rms] = b.op('SkipSimplifiedLayerNormalization', [ln!, sum!, g], { ...ms, outputs: 1, attrs: { epsilon: { float: 1e-6 } } });
      const out = b.op1('SimplifiedLayerNormalization', [rms!, g], { attrs: { epsilon: { float: 1e-6 }, axis: -1 } });
      b.output(out, 'y', DataType.FLOAT, [2, 3, 16]);
      b.output(sum!, 'residual', DataType.FLOAT, [2, 3, 16]);
      const model = b.build();
      const res = await fuseAndCompare(model, lowerContrib);
      expect(res.stats.counts.lowered).toBe(7);
      expect(model.graph.nodes.filter((n) => n.domain === 'com.microsoft' || n.opType.includes('Simplified'))).toEqual([]);
      expect(res.minCosine).toBeGreaterThan(0.99999);
      expect(res.maxAbs).toBeLessThan(1e-4);
    }
  });

  it('keeps the ops a target runs', async () => {
    const b = new GraphBuilder({ opset: 21, opsets: { 'com.microsoft': 1 } });
    const x = b.input('x', DataType.FLOAT, [4]);
    b.output(b.op1('FastGelu', [b.op1('Gelu', [x], { domain: 'com.microsoft' })], { domain: 'com.microsoft' }), 'y', DataType.FLOAT, [4]);
    const model = b.build();
    const stats = await runPass(model, lowerContrib, { keep: ['FastGelu'] });
    expect(stats.counts.lowered).toBe(1);
    expect(model.graph.nodes.map((n) => `${n.domain}:${n.opType}`).sort()).toEqual([':Gelu', 'com.microsoft:FastGelu']);
  });
});

describe('position-ids-input', () => {
  it('cuts CumSum(mask) - 1 (masked, sliced to the new tokens) into a position_ids input', async () => {
    // HF-style: pos = cumsum(mask) - 1; pos[mask == 0] = 1; pos[:, -seq:]; cos table gathered by pos.
    const b = new GraphBuilder({ opset: 17 });
    const ids = b.input('input_ids', DataType.INT64, ['batch', 'seq']);
    const mask = b.input('attention_mask', DataType.INT64, ['batch', 'total']);
    const one = b.constInt64('one', [1], []);
    const cs = b.op1('CumSum', [mask, b.constInt64('axis', [1], [])]);
    const pos = b.op1('Where', [b.op1('Equal', [mask, b.constInt64('zero', [0], [])]), one, b.op1('Sub', [cs, one])]);
    const seq = b.op1('Gather', [b.op1('Shape', [ids]), b.constInt64('i1', [1], [])], { attrs: { axis: 0 } });
    const start = b.op1('Unsqueeze', [b.op1('Neg', [seq]), b.constInt64('ax0', [0])]);
    const sliced = b.op1('Slice', [pos, start, b.constInt64('end', [2 ** 30]), b.constInt64('ax1', [1])]);
    const table = b.constF32('cos_cache', [64, 8], seededRandom(9).array(512, -1, 1));
    const emb = b.op1('Gather', [b.constF32('emb', [32, 8], seededRandom(8).array(256, -1, 1)), ids]);
    b.output(b.op1('Mul', [emb, b.op1('Gather', [table, sliced])]), 'y', DataType.FLOAT, ['batch', 'seq', 8]);
    const model = b.build();
    await runPass(model, inferShapes);
    const feeds = randomInputs(model, { seed: 2, dims: { batch: 2, seq: 3, total: 7 }, intHigh: 32 });
    // A left-padded row: the padding positions get 1, the rest count from 0.
    feeds.attention_mask = Tensor.fromInt64('attention_mask', [2, 7], [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
    const ref = await fuseAndCompare(
      model,
      positionIdsInput,
      {},
      {},
      { ...feeds, position_ids: positionIdsFromMask(feeds.attention_mask, 3) },
    );
    expect(ref.stats.counts.positionIdsInputs).toBe(1);
    expect(opCounts(model).CumSum).toBeUndefined();
    expect(model.graph.inputs.find((v) => v.name === 'position_ids')?.type).toEqual({ elemType: DataType.INT64, shape: ['batch', 'seq'] });
    expect(ref.minCosine).toBe(1);
    expect(Array.from(positionIdsFromMask(feeds.attention_mask, 3).toNumbers())).toEqual([4, 5, 6, 2, 3, 4]);
  });
});

describe('every weight seen', () => {
  it('quantizes MatMul weights held in Constant nodes (over 1 MiB) and behind Transpose/Reshape/Cast', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const r = seededRandom(11);
    const x = b.input('x', DataType.FLOAT, [2, 512]);
    // paddle2onnx: weights as Constant nodes, the largest 512 x 640 fp32 (1.25 MiB).
    const w1 = b.constant(Tensor.fromFloat32('linear_0.w_0', [512, 640], r.array(512 * 640, -0.05, 0.05)), 'linear_0.w_0');
    const h = b.op1('MatMul', [x, w1]);
    // A weight stored [N, K] in fp16 and cast, reshaped from 1-D, then transposed.
    const raw = Tensor.fromNumbers('w2_flat', DataType.FLOAT16, [64 * 640], r.array(64 * 640, -0.05, 0.05));
    const w2 = b.op1(
      'Transpose',
      [b.op1('Reshape', [b.op1('Cast', [b.initializer(raw)], { attrs: { to: DataType.FLOAT } }), b.constInt64('shp', [64, 640])])],
      { attrs: { perm: [1, 0] } },
    );
    b.output(b.op1('MatMul', [h, w2]), 'y', DataType.FLOAT, [2, 64]);
    const model = b.build();
    const before = (await fuseAndCompare(model, foldConstants)).cmp;
    expect(before.every((c) => c.cosine > 0.99999)).toBe(true);
    expect(model.graph.nodes.filter((n) => n.opType === 'Constant')).toEqual([]);
    const q = await fuseAndCompare(model, quantizeInt4, { bits: 8, block: 32 });
    expect(q.stats.counts.matmul).toBe(2);
    expect(q.minCosine).toBeGreaterThan(0.999);
  });
});
