// gemm-to-matmul-add on the ONNX spec's Gemm tests (B and C made constant from the test data, so
// every transA/transB/alpha/beta/bias form is checked against the expected output) and on the
// PyTorch Linear export; matmul-add-to-gemm on small 2-D graphs and near misses.
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { DataType, GraphBuilder, loadModel, saveModel, type Dim, type Model } from '../../ir/index.js';
import { gemmToMatMulAdd, matmulAddToGemm } from '../../passes/gemm-matmul.js';
import { allClose, compareOutputs, loadTestDataSet, randn, rng, runModel } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts, runPass, tmpDir } from './fuse-util.js';
import { CONFORMANCE } from '../conformance-root.js';

afterAll(cleanup);
const CONF = CONFORMANCE;

/** Turn graph inputs into initializers holding the test data (what an exported Linear looks like). */
function freeze(m: Model, feeds: Record<string, import('../../ir/index.js').Tensor>, names: string[]) {
  for (const n of names) {
    const v = m.graph.inputs.find((x) => x.name === n)!;
    m.graph.inputs = m.graph.inputs.filter((x) => x !== v);
    m.graph.setInitializer(v, feeds[n]!.clone(n));
    delete feeds[n];
  }
}

describe('gemm-to-matmul-add', () => {
  const gemmTests = fs
    .readdirSync(path.join(CONF, 'node'))
    .filter((d) => d.startsWith('test_gemm_'))
    .sort();
  it.each(gemmTests)('%s with constant B (and constant C) matches the expected output', async (name) => {
    for (const constC of [false, true]) {
      const dir = path.join(CONF, 'node', name);
      const m = loadModel(path.join(dir, 'model.onnx'));
      const data = loadTestDataSet(path.join(dir, 'test_data_set_0'), m);
      const names = m.graph.inputs.map((v) => v.name);
      freeze(m, data.inputs, constC ? names.slice(1) : [names[1]!]);
      const stats = await runPass(m, gemmToMatMulAdd);
      expect(stats.counts.gemm).toBe(1);
      expect(opCounts(m).Gemm).toBeUndefined();
      expect(opCounts(m).MatMul).toBe(1);
      const file = path.join(tmpDir, `${name}-${constC}.onnx`);
      saveModel(m, file);
      const out = await runModel(file, data.inputs);
      const [k, expected] = Object.entries(data.outputs)[0]!;
      expect(allClose(expected, out[m.graph.outputs[0]!.name] ?? out[k]!, 1e-4, 1e-5)).toBe(true);
    }
  });

  it('nn.Linear as torch exports it (Gemm transB=1, weight [out, in]) and alpha/beta', async () => {
    for (const [alpha, beta] of [
      [1, 1],
      [0.5, 2],
    ]) {
      const b = new GraphBuilder({ opset: 17 });
      const r = rng(2);
      const x = b.input('x', DataType.FLOAT, ['batch', 12]);
      const w = b.constF32('fc.weight', [20, 12], randn(r, 240, 0.1));
      const bias = b.constF32('fc.bias', [20], randn(r, 20, 0.1));
      b.output(b.op1('Gemm', [x, w, bias], { attrs: { alpha: { float: alpha }, beta: { float: beta }, transB: 1 } }), 'y', DataType.FLOAT, [
        'batch',
        20,
      ]);
      const m = b.build();
      const res = await fuseAndCompare(m, gemmToMatMulAdd, {}, { dims: { batch: 3 } });
      expect(res.stats.counts.gemm).toBe(1);
      expect(opCounts(m)).toEqual({ MatMul: 1, Add: 1 });
      expect(m.graph.nodes.find((n) => n.opType === 'MatMul')!.inputs[1]!.initializer!.dims).toEqual([12, 20]);
      expect(res.minCosine).toBeGreaterThanOrEqual(0.99999);
      console.log(
        `gemm-to-matmul-add Linear alpha=${alpha} beta=${beta}: cosine ${res.minCosine.toFixed(8)}, max abs ${res.maxAbs.toExponential(2)}`,
      );
    }
  });

  it('two Gemms on one weight share one transposed copy', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(4);
    const w = b.constF32('tied.weight', [10, 6], randn(r, 60, 0.1));
    for (const name of ['x', 'y']) {
      const x = b.input(name, DataType.FLOAT, [3, 6]);
      b.output(b.op1('Gemm', [x, w], { attrs: { transB: 1 } }), `${name}_out`, DataType.FLOAT, [3, 10]);
    }
    const m = b.build();
    const res = await fuseAndCompare(m, gemmToMatMulAdd);
    expect(res.stats.counts.gemm).toBe(2);
    expect(m.graph.initializers.map((t) => t.dims.join('x'))).toEqual(['6x10']);
    expect(res.minCosine).toBeGreaterThanOrEqual(0.99999);
  });

  it('leaves opset-6 Gemm (PyTorch test_Linear) and non-constant B (addmm) alone', async () => {
    for (const f of ['pytorch-converted/test_Linear', 'pytorch-operator/test_operator_addmm']) {
      const m = loadModel(path.join(CONF, f, 'model.onnx'));
      const st = await runPass(m, gemmToMatMulAdd);
      expect(st.counts.gemm).toBe(0);
      expect(st.skipped!.length).toBe(opCounts(m).Gemm);
    }
  });
});

function mmAdd(aShape: Dim[], bias: number[] | null, extraUse = false, graphB = false) {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(11);
  const K = 8,
    N = 6;
  const a = b.input('a', DataType.FLOAT, aShape);
  const w = graphB ? b.input('w', DataType.FLOAT, [K, N]) : b.constF32('w', [K, N], randn(r, K * N));
  const y = b.op1('MatMul', [a, w]);
  const c = bias
    ? b.constF32(
        'c',
        bias,
        randn(
          r,
          bias.reduce((p, q) => p * q, 1),
        ),
      )
    : b.input('c', DataType.FLOAT, [N]);
  b.output(b.op1('Add', [y, c]), 'out', DataType.FLOAT);
  if (extraUse) b.output(b.op1('Neg', [y]), 'neg', DataType.FLOAT);
  return b.build();
}

describe('matmul-add-to-gemm', () => {
  it.each([
    ['bias [N]', [5, 8], [6]],
    ['bias [1, N]', [5, 8], [1, 6]],
    ['bias [M, N]', [5, 8], [5, 6]],
    ['symbolic M, bias [N]', ['m', 8], [6]],
  ] as [string, Dim[], number[]][])('fuses %s', async (_, aShape, bias) => {
    const m = mmAdd(aShape, bias);
    const r = await fuseAndCompare(m, matmulAddToGemm, {}, { dims: { m: 5 } });
    expect(r.stats.counts.gemm).toBe(1);
    expect(opCounts(m)).toEqual({ Gemm: 1 });
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
  });

  it('fuses a non-constant weight and bias when shapes are known', async () => {
    const m = mmAdd([5, 8], null, false, true);
    const r = await fuseAndCompare(m, matmulAddToGemm);
    expect(opCounts(m)).toEqual({ Gemm: 1 });
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
  });

  it.each([
    ['3-D input', [2, 5, 8], [6]],
    ['bias [M] (broadcasts on the wrong axis)', [6, 8], [6, 1, 1]],
    ['bias [2, M, N] grows the output', [5, 8], [2, 5, 6]],
  ] as [string, Dim[], number[]][])('leaves alone: %s', async (_, aShape, bias) => {
    const m = mmAdd(aShape, bias);
    const r = await fuseAndCompare(m, matmulAddToGemm);
    expect(r.stats.counts.gemm).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
  });

  it('leaves alone: MatMul output used elsewhere', async () => {
    const m = mmAdd([5, 8], [6], true);
    const r = await fuseAndCompare(m, matmulAddToGemm);
    expect(r.stats.counts.gemm).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
  });

  it('round trip Gemm -> MatMul+Add -> Gemm keeps outputs', async () => {
    const m = mmAdd([5, 8], [6]);
    const before = path.join(tmpDir, 'rt0.onnx');
    saveModel(m, before);
    const feeds = { a: (await import('../../runtime/ort.js')).randomInputs(m).a! };
    const ref = await runModel(before, feeds);
    await runPass(m, matmulAddToGemm);
    await runPass(m, gemmToMatMulAdd);
    expect(opCounts(m)).toEqual({ MatMul: 1, Add: 1 });
    await runPass(m, matmulAddToGemm);
    const after = path.join(tmpDir, 'rt1.onnx');
    saveModel(m, after);
    const cmp = compareOutputs(ref, await runModel(after, feeds));
    expect(cmp[0]!.cosine).toBeGreaterThanOrEqual(0.99999);
  });
});
