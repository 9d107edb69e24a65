// quantize-int4 and to-fp16 on the fixture decoder (fixtures/tiny-mllm.ts): logits against fp32,
// file size, bits per weight, policy (role defaults, exclude, lm_head bits), streaming from external data.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, Graph, GraphBuilder, Model, Tensor, encodeModel, loadModel, saveModel } from '../../ir/index.js';
import { compareTensors, randomInputs } from '../../runtime/ort.js';
import { parsePipeline, runPipeline, type StepReport } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import type { QuantizeStats } from '../../passes/quantize.js';
import { totals } from '../../passes/quant/report.js';
import { rtnReference } from '../../passes/quant/methods/rtn.js';
import { packMatMulNBits } from '../../passes/quant/matmulnbits.js';
import { decoder, embeddings as embeddingsModel, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { TMP, cleanup, clone, matmulModel, run, weights } from './helpers.js';

afterAll(cleanup);

const fp = decoder({}, { kvCache: true });
const feeds = randomInputs(fp, { dims: { batch: 1, seq: 8, past_seq: 4, total_seq: 12 }, seed: 5 });
let ref: Record<string, Tensor>;
beforeAll(async () => {
  ref = await run(fp, feeds);
});

async function apply(model: Model, pipeline: string): Promise<{ m: Model; reports: StepReport[] }> {
  const m = clone(model);
  const reports = await runPipeline(m, parsePipeline(pipeline));
  expect(validateModel(m)).toEqual([]);
  return { m, reports };
}

function fileSize(m: Model, name: string): number {
  const f = path.join(TMP, name);
  saveModel(m, f, { externalData: false });
  return fs.statSync(f).size;
}

/** Stored bits per weight of the quantized weights: codes + scales + zero points, from initializer bytes. */
function bitsPerWeight(m: Model): number {
  let bytes = 0,
    weights = 0;
  for (const n of m.graph.nodes) {
    if (n.opType === 'MatMulNBits') {
      weights += n.attrInt('K') * n.attrInt('N');
      for (const i of [1, 2, 3]) bytes += n.constInput(i)?.byteLength ?? 0;
    } else if (n.opType === 'DequantizeLinear') {
      weights += n.constInput(0)!.size;
      for (const i of [0, 1, 2]) bytes += n.constInput(i)?.byteLength ?? 0;
    }
  }
  return (bytes * 8) / weights;
}

describe('fixture decoder', () => {
  it('RTN block 32 MatMulNBits: logits cosine >= 0.99, size ratio', async () => {
    const { m, reports } = await apply(fp, 'quantize-int4{block=32}');
    const stats = reports[0]!.stats as QuantizeStats;
    expect(stats.role).toBe('decoder');
    expect(stats.counts.matmul).toBe(15);
    expect(m.graph.nodes.filter((n) => n.opType === 'MatMulNBits').length).toBe(15);
    // Attention score/context MatMuls have no constant weight: named in skipped, left alone.
    expect(stats.skipped!.some((s) => s.includes('4 MatMul(s) with a non-constant B'))).toBe(true);
    // Rotary caches are gathered by position ids: not embeddings.
    expect(stats.counts.gather).toBe(0);
    const out = await run(m, feeds);
    const c = compareTensors(ref.logits!, out.logits!);
    const present = compareTensors(ref['present.1.value']!, out['present.1.value']!);
    const ratio = fileSize(m, 'q4.onnx') / fileSize(fp, 'fp32.onnx');
    const t = totals(stats.layers);
    console.log(
      `decoder q4 block32 RTN: logits cosine ${c.cosine.toFixed(5)} rel ${c.relError.toExponential(2)}, present.1.value cosine ${present.cosine.toFixed(5)}, file ${ratio.toFixed(3)}x of fp32, quantized weights ${t.bitsPerWeight.toFixed(3)} bits/weight, layer rel err mean ${t.meanRelError.toFixed(4)}`,
    );
    expect(c.cosine).toBeGreaterThanOrEqual(0.99);
    expect(stats.layers.every((l) => l.relError > 0 && l.relError < 0.2)).toBe(true);
    expect(ratio).toBeLessThan(0.35);
  });

  it('q4f16: quantize + to-fp16 keeps I/O fp32, norms fp32, <= 4.5 bits/weight', async () => {
    const { m, reports } = await apply(fp, 'quantize-int4{block=32},to-fp16');
    expect(m.graph.inputs.find((v) => v.name === 'inputs_embeds')!.dtype).toBe(DataType.FLOAT);
    expect(m.graph.outputs.every((v) => v.dtype === DataType.FLOAT)).toBe(true);
    for (const n of m.graph.nodes.filter((x) => x.opType === 'MatMulNBits')) expect(n.constInput(2)!.dtype).toBe(DataType.FLOAT16);
    // RMSNorm statistics (Pow -> ReduceMean -> Add -> Sqrt -> Div) and Softmax read fp32.
    for (const n of m.graph.nodes.filter((x) => x.opType === 'ReduceMean' || x.opType === 'Softmax')) {
      expect(n.input(0)!.dtype).toBe(DataType.FLOAT);
    }
    const bpw = bitsPerWeight(m);
    const out = await run(m, feeds);
    const c = compareTensors(ref.logits!, out.logits!);
    const ratio = fileSize(m, 'q4f16.onnx') / fileSize(fp, 'fp32b.onnx');
    console.log(
      `decoder q4f16 block32: logits cosine ${c.cosine.toFixed(5)}, ${bpw.toFixed(3)} bits/weight, file ${ratio.toFixed(3)}x of fp32; to-fp16 counts ${JSON.stringify(reports[1]!.stats.counts)}`,
    );
    expect(bpw).toBeLessThanOrEqual(4.5);
    expect(c.cosine).toBeGreaterThanOrEqual(0.99);
  });

  it('QDQ (opset 17 -> 21 upgrade) with fp16 scales: cosine >= 0.99, <= 4.5 bits/weight', async () => {
    const { m } = await apply(fp, 'quantize-int4{block=32,format=qdq,scales=fp16}');
    expect(m.opset('')).toBe(21);
    expect(m.graph.nodes.filter((n) => n.opType === 'DequantizeLinear').length).toBe(15);
    const bpw = bitsPerWeight(m);
    const c = compareTensors(ref.logits!, (await run(m, feeds)).logits!);
    console.log(`decoder qdq int4 block32 fp16 scales: logits cosine ${c.cosine.toFixed(5)}, ${bpw.toFixed(3)} bits/weight`);
    expect(bpw).toBeLessThanOrEqual(4.5);
    expect(c.cosine).toBeGreaterThanOrEqual(0.99);
  });

  it('policy: exclude glob, lm_head 8-bit, asymmetric', async () => {
    const { m, reports } = await apply(fp, 'quantize-int4{block=32,sym=false,lm_head_bits=8,exclude=*down_proj*}');
    const stats = reports[0]!.stats as QuantizeStats;
    expect(stats.counts.excluded).toBe(2);
    expect(m.graph.nodes.filter((n) => n.opType === 'MatMulNBits').length).toBe(13);
    const lm = m.graph.nodes.find((n) => n.opType === 'MatMulNBits' && n.attrInt('N') === 512)!;
    expect(lm.attrInt('bits')).toBe(8);
    expect(stats.layers.find((l) => l.kind === 'lm_head')!.bits).toBe(8);
    const c = compareTensors(ref.logits!, (await run(m, feeds)).logits!);
    expect(c.cosine).toBeGreaterThanOrEqual(0.99);
  });

  it('policy: include by glob and exact weight name; exclude by op type', async () => {
    const inc = await apply(fp, 'quantize-int4{block=32,include=*q_proj*;lm_head.weight}');
    expect(inc.reports[0]!.stats.counts.excluded).toBe(12);
    expect((inc.reports[0]!.stats as QuantizeStats).layers.map((l) => l.weight)).toEqual([
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.1.self_attn.q_proj.weight',
      'lm_head.weight',
    ]);
    const byOp = await apply(fp, 'quantize-int4{block=32,exclude=MatMul}');
    expect(byOp.reports[0]!.stats.counts.excluded).toBe(15);
    expect(byOp.m.graph.nodes.some((n) => n.opType === 'MatMulNBits')).toBe(false);
  });

  it('streams from external data: fp32 weights dropped, result saves and runs', async () => {
    const src = path.join(TMP, 'ext', 'decoder.onnx');
    fs.mkdirSync(path.dirname(src), { recursive: true });
    saveModel(fp, src, { externalData: true, threshold: 1024 });
    const m = loadModel(src);
    expect(m.graph.initializers.some((t) => t.isExternal)).toBe(true);
    await runPipeline(m, parsePipeline('quantize-int4{block=32}'));
    const leftFp32 = m.graph.initializers.filter(
      (t) => t.dtype === DataType.FLOAT && t.dims.length === 2 && t.dims[0]! >= 128 && /proj|lm_head/.test(t.name),
    );
    expect(leftFp32).toEqual([]);
    const out = path.join(TMP, 'ext-out', 'decoder.onnx');
    saveModel(m, out, { externalData: true });
    const c = compareTensors(ref.logits!, (await run(loadModel(out), feeds)).logits!);
    expect(c.cosine).toBeGreaterThanOrEqual(0.99);
  });
});

describe('role defaults', () => {
  it('vision encoder: 8-bit by default', async () => {
    const v = visionEncoder();
    const { m, reports } = await apply(v, 'quantize-int4');
    expect((reports[0]!.stats as QuantizeStats).role).toBe('vision-encoder');
    const q = m.graph.nodes.filter((n) => n.opType === 'MatMulNBits');
    expect(q.length).toBeGreaterThan(0);
    expect(q.every((n) => n.attrInt('bits') === 8)).toBe(true);
    const f = randomInputs(v, { dims: { batch: 1, height: 56, width: 56 }, seed: 2 });
    const c = compareTensors((await run(v, f)).image_features!, (await run(m, f)).image_features!);
    console.log(`vision encoder int8 block32: image_features cosine ${c.cosine.toFixed(5)}`);
    expect(c.cosine).toBeGreaterThanOrEqual(0.999);
  });
});

describe('determinism and sharing', () => {
  it('threads=2 gives the same bytes as threads=1; a shared weight is packed once', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const W = b.constF32('shared.weight', [64, 48], weights(21, 64 * 48));
    const y1 = b.op1('MatMul', [b.input('a', DataType.FLOAT, [2, 64]), W], { name: 'first' });
    const y2 = b.op1('MatMul', [b.input('b', DataType.FLOAT, [2, 64]), W], { name: 'second' });
    b.output(y1, 'y1', DataType.FLOAT, [2, 48]);
    b.output(y2, 'y2', DataType.FLOAT, [2, 48]);
    const fpm = b.build();
    const one = await apply(fpm, 'quantize-int4{block=16,sym=false}');
    const two = await apply(fpm, 'quantize-int4{block=16,sym=false,threads=2}');
    expect(Buffer.from(encodeModel(two.m)).equals(Buffer.from(encodeModel(one.m)))).toBe(true);
    // Column slices of 5 KB (5 columns of K=64 fp32, the last one shorter): same bytes, same error.
    const sliced = await apply(fpm, 'quantize-int4{block=16,sym=false,max_slice_mb=0.005,threads=2}');
    expect(Buffer.from(encodeModel(sliced.m)).equals(Buffer.from(encodeModel(one.m)))).toBe(true);
    expect((sliced.reports[0]!.stats as QuantizeStats).layers[0]!.relError).toBeCloseTo(
      (one.reports[0]!.stats as QuantizeStats).layers[0]!.relError,
      12,
    );
    const q = one.m.graph.nodes.filter((n) => n.opType === 'MatMulNBits');
    expect(q.length).toBe(2);
    expect(q[0]!.input(1)).toBe(q[1]!.input(1));
    const layers = (one.reports[0]!.stats as QuantizeStats).layers;
    expect(layers.map((l) => l.bytesBefore)).toEqual([64 * 48 * 4, 0]);
    expect(layers[1]!.relError).toBe(layers[0]!.relError);
    const feeds = { a: Tensor.fromFloat32('a', [2, 64], weights(1, 128)), b: Tensor.fromFloat32('b', [2, 64], weights(2, 128)) };
    const want = await run(fpm, feeds),
      got = await run(one.m, feeds);
    expect(compareTensors(want.y2!, got.y2!).cosine).toBeGreaterThan(0.99);
  });

  it('column slices of [N, K]-stored weights (Gemm transB, embedding table) give the same bytes', async () => {
    for (const [model, opts] of [
      [matmulModel(64, 40, 2, 9, { gemm: 'transB-bias' }), 'block=32'],
      [embeddingsModel(), 'block=16,sym=false'],
    ] as const) {
      const whole = await apply(model, `quantize-int4{${opts}}`);
      const sliced = await apply(model, `quantize-int4{${opts},max_slice_mb=0.003}`);
      expect(Buffer.from(encodeModel(sliced.m)).equals(Buffer.from(encodeModel(whole.m)))).toBe(true);
    }
  });

  it('float16 weights ([K, N] and [N, K]) are read in slices too: same bytes, codes of the decoded values', async () => {
    for (const gemm of [undefined, 'transB-bias'] as const) {
      const { m: f16 } = await apply(matmulModel(64, 40, 2, 9, { gemm }), 'to-fp16');
      const w = f16.graph.initializers.find((t) => t.name.endsWith('.weight'))!;
      expect(w.dtype).toBe(DataType.FLOAT16);
      const whole = await apply(f16, 'quantize-int4{bits=4,block=16}');
      const sliced = await apply(f16, 'quantize-int4{bits=4,block=16,max_slice_mb=0.003}');
      expect(Buffer.from(encodeModel(sliced.m)).equals(Buffer.from(encodeModel(whole.m)))).toBe(true);
      let v = w.toFloat32();
      if (gemm) v = Float32Array.from({ length: 64 * 40 }, (_, i) => v[(i % 40) * 64 + Math.floor(i / 40)]! * 0.5);
      const want = packMatMulNBits(rtnReference(v, 64, 40, { bits: 4, blockSize: 16, symmetric: true }), w.name, DataType.FLOAT16);
      const got = sliced.m.graph.nodes.find((n) => n.opType === 'MatMulNBits')!;
      expect(Buffer.from(got.constInput(1)!.bytes()).equals(Buffer.from(want.B.bytes()))).toBe(true);
      expect(Buffer.from(got.constInput(2)!.bytes()).equals(Buffer.from(want.scales.bytes()))).toBe(true);
    }
  });

  for (const format of ['matmulnbits', 'qdq']) {
    it(`${format}: one outer weight used inside both If branches is packed once, in the outer graph`, async () => {
      const b = new GraphBuilder({ opset: 17 });
      const x = b.input('x', DataType.FLOAT, [2, 64]);
      const cond = b.input('c', DataType.BOOL, []);
      const W = b.constF32('W', [64, 32], weights(1, 64 * 32));
      const branch = (name: string, op: string) => {
        const g = new Graph(name);
        g.parent = b.graph;
        const y = g.createValue(`${name}_y`, { elemType: DataType.FLOAT, shape: [2, 32] });
        const h = g.createValue(`${name}_h`);
        g.addNode({ opType: op, inputs: [x], outputs: [h] });
        g.addNode({ opType: 'MatMul', name: `${name}_proj`, inputs: [h, W], outputs: [y] });
        g.outputs.push(y);
        return g;
      };
      b.output(
        b.op1('If', [cond], { attrs: { then_branch: branch('then', 'Relu'), else_branch: branch('else', 'Neg') } }),
        'y',
        DataType.FLOAT,
        [2, 32],
      );
      const fpm = b.build();
      const { m, reports } = await apply(fpm, `quantize-int4{block=32,format=${format}}`);
      expect(reports[0]!.stats.counts.matmul).toBe(2);
      expect(m.graph.initializers.map((t) => t.name).sort()).toEqual(format === 'qdq' ? ['W_DQ_Q4', 'W_DQ_scales'] : ['W_Q4', 'W_scales']);
      for (const c of [0, 1]) {
        const feeds = { x: Tensor.fromFloat32('x', [2, 64], weights(2, 128)), c: Tensor.fromNumbers('c', DataType.BOOL, [], [c]) };
        expect(compareTensors((await run(fpm, feeds)).y!, (await run(m, feeds)).y!).cosine).toBeGreaterThan(0.99);
      }
    });
  }
});
