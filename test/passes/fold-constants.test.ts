// fold-constants and our evaluator, checked against the spec's expected outputs and onnxruntime.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { allClose, randomInputs, runModel, compareOutputs } from '../../runtime/ort.js';
import { CONFORMANCE, conformanceSample, nodeCount, originalPasses } from './harness.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fold-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function fold(model: Model, spec = 'fold-constants') {
  const reports = await runPipeline(model, parsePipeline(spec), { verifyEach: true });
  return reports[reports.length - 1]!.stats;
}

async function ortOutputs(model: Model, name: string, feeds: Record<string, Tensor> = {}) {
  const file = path.join(tmp, name);
  saveModel(model, file);
  return runModel(file, feeds);
}

describe('evaluator against the conformance corpus', () => {
  it('folds the sample with test inputs made constant and reproduces output_K.pb', async () => {
    const counts = { candidates: 0, fullyFolded: 0, outputsMatched: 0, partlyFolded: 0 };
    const bad: string[] = [];
    for (const [ci, c] of conformanceSample().entries()) {
      const dir = path.join(CONFORMANCE, c);
      const model = loadModel(path.join(dir, 'model.onnx'));
      const data = await originalPasses(dir, model);
      if (!data) continue;
      counts.candidates++;
      const set = data.sets[0]!;
      // The test inputs become initializers; the graph keeps no runtime inputs (IR 4 allows
      // initializers that are not inputs).
      model.irVersion = Math.max(model.irVersion, 4);
      for (const v of [...model.graph.inputs]) {
        const t = set.inputs[v.name];
        if (!t || v.initializer) continue;
        model.graph.inputs = model.graph.inputs.filter((x) => x !== v);
        model.graph.setInitializer(v, t.clone(v.name));
      }
      await fold(model, 'fold-constants{maxBytes=67108864}');
      if (nodeCount(model) > 0) counts.partlyFolded++;
      else {
        counts.fullyFolded++;
        for (const [k, exp] of Object.entries(set.outputs)) {
          const got = model.graph.value(k).initializer;
          if (got && allClose(exp, got)) counts.outputsMatched++;
          else bad.push(`${c}: output ${k} ${got ? `[${got.dims}] differs` : 'missing'}`);
        }
      }
      // onnxruntime runs what is left (or only initializers) and agrees.
      let ort;
      try {
        ort = await ortOutputs(model, `conf-${ci}.onnx`);
      } catch (e) {
        bad.push(`${c}: onnxruntime rejects the folded model: ${(e as Error).message.split('\n')[0]}`);
        continue;
      }
      for (const [k, exp] of Object.entries(set.outputs))
        if (!ort[k] || !allClose(exp, ort[k]!)) bad.push(`${c}: onnxruntime output ${k} differs after folding`);
    }
    console.log(`evaluator on conformance sample: ${JSON.stringify(counts)}`);
    expect(bad).toEqual([]);
    expect(counts.fullyFolded).toBeGreaterThan(60);
  });
});

describe('fold-constants', () => {
  it('folds a torch-style shape chain once shapes are static, keeping output names', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [2, 6, 8]);
    const s = b.op1('Shape', [x]);
    const d0 = b.op1('Gather', [s, b.constant(Tensor.fromInt64('', [], [0]))], { attrs: { axis: 0 } });
    const d1 = b.op1('Gather', [s, b.constant(Tensor.fromInt64('', [], [1]))], { attrs: { axis: 0 } });
    const half = b.op1('Div', [d1, b.constant(Tensor.fromInt64('', [], [2]))]);
    const shape = b.op1(
      'Concat',
      [b.op1('Unsqueeze', [d0, b.constInt64('ax', [0])]), b.op1('Unsqueeze', [half, b.constInt64('ax2', [0])]), b.constInt64('m1', [-1])],
      { attrs: { axis: 0 } },
    );
    const r = b.op1('Reshape', [x, shape]);
    b.output(r, 'y', DataType.FLOAT);
    b.output(shape, 'shape_out', DataType.INT64);
    const m = b.build();
    const feeds = randomInputs(m);
    const before = await ortOutputs(m, 'chain-before.onnx', feeds);
    const { counts } = await fold(m);
    expect(counts.shapesFolded).toBe(1);
    expect(m.graph.nodes.map((n) => n.opType)).toEqual(['Reshape']);
    expect(Array.from(m.graph.value('shape_out').initializer!.toNumbers())).toEqual([2, 3, -1]);
    const after = await ortOutputs(m, 'chain-after.onnx', feeds);
    for (const c of compareOutputs(before, after)) expect(c.maxAbsError).toBe(0);
  });

  it('respects maxBytes for blow-ups (ConstantOfShape, Tile, Expand) unless raised', async () => {
    const build = () => {
      const b = new GraphBuilder({ opset: 17 });
      const x = b.input('x', DataType.FLOAT, [1024, 512]);
      const big = b.op1('ConstantOfShape', [b.constInt64('shp', [1024, 512])], {
        attrs: { value: Tensor.fromFloat32('', [1], Float32Array.of(0.5)) },
      });
      const tiled = b.op1('Tile', [b.constF32('row', [1, 512], new Float32Array(512).fill(2)), b.constInt64('reps', [1024, 1])]);
      const ex = b.op1('Expand', [b.constF32('one', [1], [3]), b.constInt64('eshp', [1024, 512])]);
      b.output(b.op1('Add', [b.op1('Mul', [x, big]), b.op1('Add', [tiled, ex])]), 'y', DataType.FLOAT);
      return b.build();
    };
    const m = build();
    const { counts: c, skipped } = await fold(m);
    expect(c.tooLarge).toBe(3);
    expect(skipped).toEqual(['result over maxBytes=1048576: ConstantOfShape x1, Tile x1, Expand x1']);
    expect(m.graph.nodes.map((n) => n.opType).sort()).toEqual(['Add', 'Add', 'ConstantOfShape', 'Expand', 'Mul', 'Tile']);
    const m2 = build();
    const feeds = randomInputs(m2);
    const before = await ortOutputs(m2, 'big-before.onnx', feeds);
    const c2 = (await fold(m2, 'fold-constants{maxBytes=8388608}')).counts;
    expect(c2.folded).toBe(4);
    const after = await ortOutputs(m2, 'big-after.onnx', feeds);
    for (const r of compareOutputs(before, after)) expect(r.maxAbsError).toBe(0);
  });

  it('never folds DequantizeLinear/QuantizeLinear or random ops, and leaves initializer-backed inputs alone', async () => {
    const b = new GraphBuilder({ opset: 21 });
    const x = b.input('x', DataType.FLOAT, [4]);
    const q = b.initializer(Tensor.fromNumbers('q', DataType.INT8, [4], [1, -2, 3, -4]));
    const dq = b.op1('DequantizeLinear', [q, b.constScalarF32('s', 0.5)]);
    const rnd = b.op1('RandomUniform', [], { attrs: { shape: [4] } });
    const over = b.constF32('over', [4], [1, 1, 1, 1]);
    b.graph.inputs.push(over);
    const neg = b.op1('Neg', [over]);
    b.output(b.op1('Add', [b.op1('Add', [x, dq]), b.op1('Mul', [rnd, neg])]), 'y', DataType.FLOAT);
    const m = b.build();
    const c = (await fold(m)).counts;
    expect(c.folded).toBe(0);
    expect(m.graph.nodes.map((n) => n.opType).sort()).toEqual(['Add', 'Add', 'DequantizeLinear', 'Mul', 'Neg', 'RandomUniform']);
  });

  it('evaluates int64 extremes, negative indices, integer division, masks, splits and pads like onnxruntime', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const data = b.constInt64('data', [10, 20, 30, 40, 50, -7]);
    const sl = b.op1('Slice', [
      data,
      b.constInt64('st', [-4]),
      b.constInt64('en', [9223372036854775807n]),
      b.constInt64('ax', [0]),
      b.constInt64('stp', [2]),
    ]);
    const rev = b.op1('Slice', [
      data,
      b.constInt64('st2', [-1]),
      b.constInt64('en2', [-9223372036854775807n]),
      b.constInt64('ax2', [0]),
      b.constInt64('stp2', [-1]),
    ]);
    const g = b.op1('Gather', [data, b.constInt64('idx', [-1, 0, 2])], { attrs: { axis: 0 } });
    const dv = b.op1('Div', [data, b.constInt64('three', [3], [])]);
    const md = b.op1('Mod', [data, b.constInt64('four', [-4], [])]);
    const cast = b.op1('Cast', [b.constF32('f', [4], [-2.7, 2.7, 7.9, -0.5])], { attrs: { to: DataType.INT32 } });
    const rg = b.op1('Range', [b.constInt64('r0', [10], []), b.constInt64('r1', [1], []), b.constInt64('r2', [-3], [])]);
    const rs = b.op1('ReduceSum', [b.constF32('rsv', [2, 3], [1, 2, 3, 4, 5, 6]), b.constInt64('rax', [1])], { attrs: { keepdims: 0 } });
    const tr = b.op1(
      'Transpose',
      [
        b.constF32(
          'tv',
          [2, 3, 2],
          Array.from({ length: 12 }, (_, i) => i),
        ),
      ],
      { attrs: { perm: [2, 0, 1] } },
    );
    const wh = b.op1('Where', [b.op1('Equal', [data, b.constInt64('m7', [-7], [])]), b.constInt64('one', [1], []), data]);
    const erf = b.op1('Erf', [b.constF32('ev', [5], [-3, -0.5, 0, 0.7, 2.5])]);
    const pw = b.op1('Pow', [b.constF32('pb', [3], [2, 9, 0.5]), b.constF32('pe', [1], [0.5])]);
    const grid = b.constF32(
      'grid',
      [2, 3, 4],
      Array.from({ length: 24 }, (_, i) => i + 1),
    );
    const triu = b.op1('Trilu', [grid, b.constInt64('k1', [1], [])]);
    const tril = b.op1('Trilu', [grid, b.constInt64('km1', [-1], [])], { attrs: { upper: 0 } });
    const [sp0, sp1] = b.op('Split', [grid, b.constInt64('spl', [1, 3])], { attrs: { axis: 2 }, outputs: 2 });
    const pad = b.op1('Pad', [grid, b.constInt64('pads', [0, 1, -1, 1, 0, 2]), b.constF32('pv', [], [9])]);
    for (const [v, n] of [
      [triu, 'triu'],
      [tril, 'tril'],
      [sp0!, 'sp0'],
      [sp1!, 'sp1'],
      [pad, 'pad'],
    ] as const)
      b.output(v, n, DataType.FLOAT);
    for (const [v, n, t] of [
      [sl, 'sl', DataType.INT64],
      [rev, 'rev', DataType.INT64],
      [g, 'g', DataType.INT64],
      [dv, 'dv', DataType.INT64],
      [md, 'md', DataType.INT64],
      [cast, 'cast', DataType.INT32],
      [rg, 'rg', DataType.INT64],
      [rs, 'rs', DataType.FLOAT],
      [tr, 'tr', DataType.FLOAT],
      [wh, 'wh', DataType.INT64],
      [erf, 'erf', DataType.FLOAT],
      [pw, 'pw', DataType.FLOAT],
    ] as const) {
      b.output(v, n, t);
    }
    const m = b.build();
    const ref = await ortOutputs(m, 'ints-before.onnx');
    const c = (await fold(m)).counts;
    expect(c.unsupported).toBe(0);
    expect(nodeCount(m)).toBe(0);
    for (const [k, t] of Object.entries(ref)) {
      const got = m.graph.value(k).initializer!;
      expect(got.dims, k).toEqual(t.dims);
      expect(allClose(t, got, 1e-6, 1e-7), `${k}: ${Array.from(got.toNumbers())} vs ${Array.from(t.toNumbers())}`).toBe(true);
    }
  });
});
