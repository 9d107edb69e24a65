// fp16 that cannot overflow. onnxruntime's CPU EP is no fp16 reference (it runs fp16 ops without fp16
// kernels in fp32 and drops the Casts between them, at every optimization level), so the oracle is
// the exact fp16-storage emulation (emulate-fp16) run in onnxruntime, checked here against the CPU's
// own fp16 results where they agree and against hand-computed fp16 overflow where they do not.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, float32ToFloat16Array, saveModel } from '../../ir/index.js';
import { compareTensors, randn, rng, runModel } from '../../runtime/ort.js';
import { activationRanges } from '../../runtime/fp16.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import { TMP, clone, run, weights } from './helpers.js';

const f16 = (name: string, dims: number[], v: Float32Array) =>
  Tensor.fromBytes(name, DataType.FLOAT16, dims, new Uint8Array(float32ToFloat16Array(v).buffer));

/** x*x*0.001 in fp16: x = 300 gives 90000 in between, past fp16's 65504. */
function squareModel(): Model {
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', DataType.FLOAT16, [1, 8]);
  const k = b.initializer(f16('k', [], Float32Array.of(0.001)));
  b.output(b.op1('Mul', [b.op1('Mul', [x, x]), k]), 'z', DataType.FLOAT16, [1, 8]);
  return b.build();
}

async function emulate(model: Model, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const m = clone(model);
  await runPipeline(m, parsePipeline('emulate-fp16'));
  expect(validateModel(m)).toEqual([]);
  return run(m, feeds);
}

/** One attention head with the scale on the scores (SigLIP/HF eager): q.k^T reaches ~1e5 before
 * the scale brings it back, as in models with large query/key activations. */
function attentionModel(): Model {
  const S = 16,
    D = 64;
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', DataType.FLOAT, [S, D]);
  const q = b.op1('MatMul', [x, b.constF32('wq', [D, D], weights(1, D * D, 8))], { name: 'q_proj' });
  const k = b.op1('MatMul', [x, b.constF32('wk', [D, D], weights(2, D * D, 8))], { name: 'k_proj' });
  const v = b.op1('MatMul', [x, b.constF32('wv', [D, D], weights(3, D * D, 0.1))], { name: 'v_proj' });
  const kt = b.op1('Transpose', [k], { attrs: { perm: [1, 0] } });
  const scores = b.op1('MatMul', [q, kt], { name: 'qk' });
  const p = b.op1('Softmax', [b.op1('Mul', [scores, b.constScalarF32('scale', 1 / 4096)])], { attrs: { axis: -1 } });
  b.output(b.op1('MatMul', [p, v], { name: 'pv' }), 'y', DataType.FLOAT, [S, D]);
  return b.build();
}

describe('fp16 emulation and measured ranges', () => {
  it('emulate-fp16 rounds every stored value: the overflow the CPU EP hides shows as inf', async () => {
    const m = squareModel();
    const feeds = { x: f16('x', [1, 8], new Float32Array(8).fill(300)) };
    const file = path.join(TMP, 'square.onnx');
    saveModel(m, file, { externalData: false });
    for (const level of ['disabled', 'basic', 'all'] as const) {
      // fp32 inside: 90000 * 0.001 = 90 (the fp16 constant 0.001 is 0.0010004), rounded to fp16.
      expect((await runModel(file, feeds, { graphOptimizationLevel: level })).z!.toNumbers()[0]).toBeCloseTo(90.06, 1);
    }
    expect((await emulate(m, feeds)).z!.toNumbers()[0]).toBe(Infinity);
    // Within range the emulation equals the CPU's fp16 result exactly.
    const small = {
      x: f16(
        'x',
        [1, 8],
        Float32Array.from({ length: 8 }, (_, i) => i * 7.25 - 20),
      ),
    };
    expect(Array.from((await emulate(m, small)).z!.toNumbers())).toEqual(Array.from((await runModel(file, small)).z!.toNumbers()));
  });

  it('activation ranges: |x|max of every float value, over all input sets', async () => {
    const m = attentionModel();
    const sets = [0, 1].map((s) => ({ x: Tensor.fromFloat32('x', [16, 64], randn(rng(10 + s), 16 * 64, 1)) }));
    const r = await activationRanges(clone(m), sets);
    let want = 0;
    for (const s of sets) {
      const q = await run(withOutput(m, 'qk'), s);
      for (const x of q.qk!.toNumbers()) want = Math.max(want, Math.abs(x));
    }
    expect(r.get(m.graph.nodes.find((n) => n.name === 'qk')!.outputs[0]!.name)).toBeCloseTo(want, 0);
    expect(r.get('y')).toBeGreaterThan(0);
  });

  it('to-fp16 with measured ranges keeps the overflowing score MatMul fp32; the verdict holds at every level and in emulation', async () => {
    const fp = attentionModel();
    const feeds = { x: Tensor.fromFloat32('x', [16, 64], randn(rng(7), 16 * 64, 1)) };
    const want = (await run(fp, feeds)).y!;
    const ranges = await activationRanges(clone(fp), [{ x: Tensor.fromFloat32('x', [16, 64], randn(rng(8), 16 * 64, 1)) }]);
    const qkMax = ranges.get(fp.graph.nodes.find((n) => n.name === 'qk')!.outputs[0]!.name)!;
    expect(qkMax).toBeGreaterThan(65504);

    const naive = clone(fp);
    await runPipeline(naive, parsePipeline('to-fp16'));
    const safe = clone(fp);
    const rep = await runPipeline(safe, parsePipeline('to-fp16'), { activationRanges: ranges });
    expect(rep[0]!.stats.counts.keptByRange).toBeGreaterThan(0);
    const qk = safe.graph.nodes.find((n) => n.name === 'qk')!;
    expect(qk.inputs.map((v) => v!.dtype)).toEqual([DataType.FLOAT, DataType.FLOAT]);
    expect(safe.graph.nodes.find((n) => n.name === 'v_proj')!.input(0)!.dtype).toBe(DataType.FLOAT16);

    // Naive fp16: the CPU EP hides the overflow, the emulation does not.
    const naiveEmu = compareTensors(want, (await emulate(naive, feeds)).y!);
    expect(naiveEmu.cosine).toBeLessThan(0.9);
    const figures: number[] = [];
    const file = path.join(TMP, 'safe.onnx');
    saveModel(safe, file, { externalData: false });
    for (const level of ['disabled', 'basic', 'all'] as const)
      figures.push(compareTensors(want, (await runModel(file, feeds, { graphOptimizationLevel: level })).y!).cosine);
    figures.push(compareTensors(want, (await emulate(safe, feeds)).y!).cosine);
    console.log(
      `attention fp16: naive emulated cosine ${naiveEmu.cosine.toFixed(4)}; range-aware disabled/basic/all/emulated ${figures.map((c) => c.toFixed(5)).join(' / ')}`,
    );
    for (const c of figures) expect(c).toBeGreaterThan(0.999);
    fs.rmSync(file);
  });
});

/** The model with the output of node `name` exposed as a graph output named `name`. */
function withOutput(m: Model, name: string): Model {
  const c = clone(m);
  const v = c.graph.nodes.find((n) => n.name === name)!.outputs[0]!;
  c.graph.values.delete(v.name);
  v.name = name;
  c.graph.values.set(name, v);
  v.type = { elemType: DataType.FLOAT, shape: [16, 16] };
  c.graph.outputs.push(v);
  return c;
}
