// to-fp16 against onnxruntime: fp32 I/O kept, norm statistics kept fp32 (fp16 would overflow).
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor } from '../../ir/index.js';
import { compareTensors, randn, randomInputs, rng } from '../../runtime/ort.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import { decoder, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { cleanup, clone, floats, run, weights } from './helpers.js';

afterAll(cleanup);

async function apply(model: Model, pipeline: string): Promise<Model> {
  const m = clone(model);
  await runPipeline(m, parsePipeline(pipeline));
  expect(validateModel(m)).toEqual([]);
  return m;
}

/** Decomposed RMSNorm (Pow/ReduceMean/Add/Sqrt/Div) then a projection and Softmax. */
function normModel(): Model {
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', DataType.FLOAT, [4, 64]);
  const two = b.constScalarF32('two', 2),
    eps = b.constScalarF32('eps', 1e-6);
  const ms = b.op1('ReduceMean', [b.op1('Pow', [x, two])], { attrs: { axes: [-1], keepdims: 1 } });
  const rms = b.op1('Sqrt', [b.op1('Add', [ms, eps])]);
  const y = b.op1('Mul', [b.op1('Div', [x, rms]), b.constF32('g', [64], weights(1, 64))]);
  const z = b.op1('MatMul', [y, b.constF32('w', [64, 32], weights(2, 64 * 32, 0.1))]);
  b.output(z, 'z', DataType.FLOAT, [4, 32]);
  b.output(b.op1('Softmax', [z], { attrs: { axis: -1 } }), 'p', DataType.FLOAT, [4, 32]);
  return b.build();
}

describe('to-fp16', () => {
  // onnxruntime's CPU EP runs fp16 ops without fp16 kernels through inserted fp32 casts, so the
  // overflow itself only shows on GPUs; here the check is that the statistics chain reads fp32 and
  // that the converted graph still matches at |x| ~ 1000 (x^2 ~ 1e6 > 65504, the fp16 maximum).
  it('norm statistics (Pow -> ReduceMean -> Add -> Sqrt -> Div) and Softmax stay fp32', async () => {
    const fp = normModel();
    const feeds = { x: Tensor.fromFloat32('x', [4, 64], randn(rng(3), 256, 1000)) };
    const want = (await run(fp, feeds)).z!;
    const safe = await apply(fp, 'to-fp16');
    expect(safe.graph.inputs[0]!.dtype).toBe(DataType.FLOAT);
    expect(safe.graph.outputs.map((v) => v.dtype)).toEqual([DataType.FLOAT, DataType.FLOAT]);
    expect(safe.graph.initializers.find((t) => t.name === 'w')!.dtype).toBe(DataType.FLOAT16);
    const byOp = (m: Model, op: string) => m.graph.nodes.find((n) => n.opType === op)!;
    for (const op of ['Pow', 'ReduceMean', 'Sqrt', 'Softmax']) expect(byOp(safe, op).input(0)!.dtype).toBe(DataType.FLOAT);
    expect(byOp(safe, 'MatMul').input(0)!.dtype).toBe(DataType.FLOAT16);
    const c = compareTensors(want, (await run(safe, feeds)).z!);
    expect(c.cosine).toBeGreaterThan(0.9999);
    const naive = await apply(fp, 'to-fp16{keep_norms=false}');
    for (const op of ['Pow', 'ReduceMean', 'Sqrt', 'Softmax']) expect(byOp(naive, op).input(0)!.dtype).toBe(DataType.FLOAT16);
  });

  it('fixture decoder fp16: logits cosine >= 0.999', async () => {
    const fp = decoder({}, { kvCache: true });
    const feeds = randomInputs(fp, { dims: { batch: 1, seq: 8, past_seq: 4, total_seq: 12 }, seed: 9 });
    const m = await apply(fp, 'to-fp16');
    const c = compareTensors((await run(fp, feeds)).logits!, (await run(m, feeds)).logits!);
    console.log(`decoder fp16: logits cosine ${c.cosine.toFixed(6)}`);
    expect(c.cosine).toBeGreaterThanOrEqual(0.999);
    expect(m.graph.outputs.every((v) => v.dtype === DataType.FLOAT)).toBe(true);
    // The causal mask's finfo(float32).min is clamped to the fp16 lowest value, not turned into -inf.
    const where = m.graph.nodes.find((n) => n.opType === 'Where')!;
    const fill = where.constInput(1) ?? where.input(1)!.producer!.attrTensor('value')!;
    expect(fill.dtype).toBe(DataType.FLOAT16);
    expect(floats(fill)[0]).toBe(-65504);
  });

  it('fixture vision encoder fp16 (Resize kept fp32): image_features cosine >= 0.999', async () => {
    const v = visionEncoder();
    const feeds = randomInputs(v, { dims: { batch: 1, height: 56, width: 70 }, seed: 4 });
    const m = await apply(v, 'to-fp16');
    const resize = m.graph.nodes.find((n) => n.opType === 'Resize')!;
    expect(resize.input(0)!.dtype).toBe(DataType.FLOAT);
    const c = compareTensors((await run(v, feeds)).image_features!, (await run(m, feeds)).image_features!);
    expect(c.cosine).toBeGreaterThanOrEqual(0.999);
  });

  it('keep_io_types=false: fp16 inputs and outputs', async () => {
    const fp = normModel();
    const m = await apply(fp, 'to-fp16{keep_io_types=false}');
    expect(m.graph.inputs[0]!.dtype).toBe(DataType.FLOAT16);
    expect(m.graph.outputs.map((v) => v.dtype)).toEqual([DataType.FLOAT16, DataType.FLOAT16]);
    const x = randn(rng(5), 256);
    const want = (await run(fp, { x: Tensor.fromFloat32('x', [4, 64], x) })).z!;
    const got = (await run(m, { x: Tensor.fromNumbers('x', DataType.FLOAT16, [4, 64], x) })).z!;
    expect(got.dtype).toBe(DataType.FLOAT16);
    expect(compareTensors(want, got).cosine).toBeGreaterThan(0.999);
  });
});
