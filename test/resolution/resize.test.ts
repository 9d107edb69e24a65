// The Resize evaluator against the ONNX spec's own test data and against onnxruntime running
// Resize nodes over every mode x coordinate transformation x scales/sizes combination.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, Tensor, loadModel, saveModel } from '../../ir/index.js';
import { GraphBuilder } from '../../ir/builder.js';
import { allClose, compareTensors, loadTestDataSet, randn, rng, runModel } from '../../runtime/ort.js';
import { evalResize } from '../../passes/eval/resize.js';
import { Unsupported, getEvaluator } from '../../passes/eval/index.js';
import { CONFORMANCE } from '../conformance-root.js';

const CONF = path.join(CONFORMANCE, 'node');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-resize-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('Resize evaluator vs ONNX conformance data', () => {
  const dirs = fs
    .readdirSync(CONF)
    .filter((d) => d.startsWith('test_resize_'))
    .sort();
  it(`registers into the evaluator table and matches ${dirs.length} spec test cases (or onnxruntime where it departs from the spec data)`, async () => {
    expect(dirs.length).toBeGreaterThanOrEqual(20);
    const viaOrt: string[] = [];
    for (const d of dirs) {
      const file = path.join(CONF, d, 'model.onnx');
      const model = loadModel(file);
      const node = model.graph.nodes.find((n) => n.opType === 'Resize')!;
      expect(getEvaluator(node)).toBe(evalResize);
      const data = loadTestDataSet(path.join(CONF, d, 'test_data_set_0'), model);
      const ins = node.inputs.map((v) => (v ? (data.inputs[v.name] ?? v.initializer ?? null) : null));
      const [got] = evalResize(node, ins);
      const want = Object.values(data.outputs)[0]!;
      expect(got!.dims, d).toEqual(want.dims);
      if (allClose(want, got!, 1e-5, 1e-5)) continue;
      // Only acceptable where onnxruntime (which runs the unfolded graph) itself departs from the
      // spec data the same way: then folding must reproduce onnxruntime.
      const ort = Object.values(await runModel(file, data.inputs))[0]!;
      expect(allClose(want, ort, 1e-5, 1e-5), `${d}: onnxruntime matches the spec data but we do not`).toBe(false);
      expect(compareTensors(ort, got!).maxAbsError, d).toBeLessThan(1e-5);
      viaOrt.push(d);
    }
    // align_corners with a fractional scale * length: the spec's reference divides by 3.2, onnxruntime by 3.
    expect(viaOrt).toEqual(['test_resize_downsample_scales_cubic_align_corners', 'test_resize_downsample_scales_linear_align_corners']);
  });
});

describe('Resize evaluator vs onnxruntime', () => {
  it('nearest/linear/cubic x half_pixel/pytorch_half_pixel/align_corners/asymmetric/half_pixel_symmetric x up/down scales and sizes', async () => {
    const b = new GraphBuilder({ opset: 19 });
    const inShape = [2, 3, 7, 9];
    const x = b.input('x', DataType.FLOAT, inShape);
    const roi = b.constF32('roi', [0], []);
    const cases: { name: string; attrs: Record<string, number | string | { float: number }>; scales?: number[]; sizes?: number[] }[] = [];
    const coords = ['half_pixel', 'pytorch_half_pixel', 'align_corners', 'asymmetric', 'half_pixel_symmetric'];
    for (const mode of ['nearest', 'linear', 'cubic']) {
      for (const coord of coords) {
        cases.push({ name: `${mode}_${coord}_up`, attrs: { mode, coordinate_transformation_mode: coord }, scales: [1, 1, 2.0, 1.5] });
        cases.push({ name: `${mode}_${coord}_down`, attrs: { mode, coordinate_transformation_mode: coord }, scales: [1, 1, 0.6, 0.5] });
        cases.push({ name: `${mode}_${coord}_sizes`, attrs: { mode, coordinate_transformation_mode: coord }, sizes: [2, 3, 16, 5] });
      }
    }
    for (const nm of ['round_prefer_floor', 'round_prefer_ceil', 'floor', 'ceil'])
      cases.push({
        name: `nearest_${nm}`,
        attrs: { mode: 'nearest', nearest_mode: nm, coordinate_transformation_mode: 'asymmetric' },
        scales: [1, 1, 2.5, 0.75],
      });
    cases.push({
      name: 'cubic_a05_excl',
      attrs: { mode: 'cubic', cubic_coeff_a: { float: -0.5 }, exclude_outside: 1 },
      sizes: [2, 3, 11, 4],
    });
    cases.push({ name: 'cubic_excl_down', attrs: { mode: 'cubic', exclude_outside: 1 }, scales: [1, 1, 0.5, 0.8] });
    cases.push({ name: 'linear_axes', attrs: { mode: 'linear', axes: [2, 3] as unknown as string }, sizes: [5, 12] });
    for (const c of cases) {
      const sc = c.scales ? b.constF32(`${c.name}_scales`, [c.scales.length], c.scales) : null;
      const sz = c.sizes ? b.constInt64(`${c.name}_sizes`, c.sizes) : null;
      b.output(b.op1('Resize', [x, roi, sc, sz], { attrs: c.attrs, name: c.name }), c.name, DataType.FLOAT);
    }
    const model = b.build();
    const file = path.join(tmp, 'resize.onnx');
    saveModel(model, file);
    const xin = Tensor.fromFloat32('x', inShape, randn(rng(7), 2 * 3 * 7 * 9));
    const ref = await runModel(file, { x: xin });
    let worst = 0;
    const refused: string[] = [];
    for (const c of cases) {
      const node = model.graph.nodes.find((n) => n.name === c.name)!;
      let got: Tensor | undefined;
      try {
        [got] = evalResize(
          node,
          node.inputs.map((v) => (v === x ? xin : (v?.initializer ?? null))),
        );
      } catch (e) {
        expect(e).toBeInstanceOf(Unsupported);
        refused.push(c.name);
        continue;
      }
      const want = ref[c.name]!;
      expect(got!.dims, c.name).toEqual(want.dims);
      const cmp = compareTensors(want, got!);
      worst = Math.max(worst, cmp.maxAbsError);
      expect(cmp.maxAbsError, c.name).toBeLessThan(1e-5);
    }
    expect(cases.length).toBe(3 * 5 * 3 + 4 + 3);
    expect(worst).toBeLessThan(1e-5);
    // 7 * 0.6 = 4.2 rows: output row 0 maps to 0.5 +- float noise, a nearest tie decided by
    // evaluation order; the evaluator declines it (fold-constants then keeps the node).
    expect(refused).toEqual(['nearest_half_pixel_symmetric_down']);
  });

  it('leaves antialias=1 to onnxruntime (throws Unsupported, so folding skips the node)', () => {
    const b = new GraphBuilder({ opset: 19 });
    const x = b.input('x', DataType.FLOAT, [1, 1, 4, 4]);
    const y = b.op1('Resize', [x, null, b.constF32('s', [4], [1, 1, 0.5, 0.5])], { attrs: { mode: 'linear', antialias: 1 } });
    expect(() =>
      evalResize(y.producer!, [Tensor.fromFloat32('x', [1, 1, 4, 4], new Float32Array(16)), null, y.producer!.inputs[2]!.initializer]),
    ).toThrow(/antialias/);
  });
});
