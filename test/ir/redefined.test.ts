// A value defined by two nodes (onnxruntime's rotary_mha_70b fusion-test graph defines 'One' twice):
// the loader keeps both, each use binding to the latest definition before it, and the saved model is
// valid SSA that onnxruntime runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, decodeModel, encodeModel, saveModel, type Value } from '../../ir/index.js';
import { randn, rng, runModel } from '../../runtime/ort.js';
import { validateModel } from '../../passes/validate.js';

describe('reader: a node output defined twice', () => {
  it('binds each use to the latest earlier definition (x + 1 + 2)', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [2]);
    const one = b.constant(Tensor.fromFloat32('v', [], Float32Array.of(1)), 'c1');
    const y1 = b.op1('Add', [x, one], { name: 'add1' });
    const two = b.constant(Tensor.fromFloat32('v', [], Float32Array.of(2)), 'c2');
    b.output(b.op1('Add', [y1, two], { name: 'add2' }), 'y', DataType.FLOAT, [2]);
    const m = b.build();
    // Give both Constants the same output name, as the test graph does.
    two.name = one.name;
    const bytes = encodeModel(m);
    const loaded = decodeModel(bytes, 'dup.onnx');
    expect(validateModel(loaded)).toEqual([]);
    const add = (n: string) => loaded.graph.nodes.find((k) => k.name === n)!;
    expect(add('add1').input(1)!.producer!.name).toBe('c1');
    expect(add('add2').input(1)!.producer!.name).toBe('c2');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-dup-'));
    try {
      saveModel(loaded, path.join(dir, 'm.onnx'));
      const y = await runModel(path.join(dir, 'm.onnx'), { x: Tensor.fromFloat32('x', [2], Float32Array.of(10, 20)) });
      expect(Array.from(y.y!.toNumbers())).toEqual([13, 23]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('reader: a dim declared -1', () => {
  it('is read as unknown, and the default pipeline folds and fuses around it', async () => {
    const { parsePipeline, runPipeline } = await import('../../passes/manager.js');
    const { DEFAULT_PIPELINE } = await import('../../passes/pipelines.js');
    const b = new GraphBuilder({ opset: 17 });
    const ids = b.input('ids', DataType.INT64, [-1, -1]);
    const table = b.constF32(
      'table',
      [8, 4],
      Array.from({ length: 32 }, (_, i) => i / 8),
    );
    const e = b.op1('Gather', [table, ids]);
    const pos = b.op1('Unsqueeze', [
      b.op1('Gather', [
        b.constF32(
          'pos',
          [3, 4],
          Array.from({ length: 12 }, (_, i) => i),
        ),
        b.constInt64('p', [0, 1, 2]),
      ]),
      b.constInt64('ax', [0]),
    ]);
    b.output(b.op1('Add', [e, pos]), 'y', DataType.FLOAT, [-1, -1, 4]);
    const m = decodeModel(encodeModel(b.build()), 'neg.onnx');
    expect(m.graph.inputs[0]!.shape).toEqual([null, null]);
    await runPipeline(m, parsePipeline(DEFAULT_PIPELINE));
    expect(validateModel(m)).toEqual([]);
  });
});

describe('reader: inputs declared [-1, -1] in a BERT embedding (onnxruntime EmbedLayerNormalization test form)', () => {
  // position_ids = Expand(Unsqueeze(Range(0, Shape(ids)[1], 1), 0), Shape(ids)): read as a size, -1 made
  // Range empty ([1, 0]) and the Expand of it to [-1, -1] crashed fold-constants.
  it('folds nothing from the -1 dims, fuses the LayerNorm and gives onnxruntime the same outputs', async () => {
    const H = 8;
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(5);
    const ids = b.input('input_ids', DataType.INT64, [-1, -1]);
    const seg = b.input('segment_ids', DataType.INT64, [-1, -1]);
    const shape = b.op1('Shape', [ids]);
    const seqLen = b.op1('Gather', [shape, b.constant(Tensor.fromInt64('one', [], [1]))], { attrs: { axis: 0 } });
    const range = b.op1('Range', [b.constant(Tensor.fromInt64('zero', [], [0])), seqLen, b.constant(Tensor.fromInt64('step', [], [1]))]);
    const pos = b.op1('Expand', [b.op1('Unsqueeze', [range, b.constInt64('ax0', [0])]), shape]);
    const emb = (name: string, rows: number, at: Value) => b.op1('Gather', [b.constF32(name, [rows, H], randn(r, rows * H)), at]);
    const sum = b.op1('Add', [b.op1('Add', [emb('word', 16, ids), emb('position', 8, pos)]), emb('segment', 2, seg)]);
    const mean = b.op1('ReduceMean', [sum], { attrs: { axes: [-1] } });
    const d = b.op1('Sub', [sum, mean]);
    const variance = b.op1('ReduceMean', [b.op1('Pow', [d, b.constScalarF32('two', 2)])], { attrs: { axes: [-1] } });
    const std = b.op1('Sqrt', [b.op1('Add', [variance, b.constScalarF32('eps', 1e-12)])]);
    const ln = b.op1('Add', [
      b.op1('Mul', [b.op1('Div', [d, std]), b.constF32('gamma', [H], randn(r, H))]),
      b.constF32('beta', [H], randn(r, H)),
    ]);
    b.output(ln, 'y', DataType.FLOAT, [-1, -1, H]);
    const m = decodeModel(encodeModel(b.build()), 'embed.onnx');
    const { parsePipeline, runPipeline } = await import('../../passes/manager.js');
    const { DEFAULT_PIPELINE } = await import('../../passes/pipelines.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-embed-'));
    try {
      saveModel(m, path.join(dir, 'before.onnx'));
      await runPipeline(m, parsePipeline(DEFAULT_PIPELINE));
      expect(validateModel(m)).toEqual([]);
      expect(m.graph.nodes.filter((n) => n.opType === 'LayerNormalization')).toHaveLength(1);
      saveModel(m, path.join(dir, 'after.onnx'));
      const feeds = {
        input_ids: Tensor.fromInt64('input_ids', [2, 5], [1, 5, 9, 15, 0, 3, 3, 7, 2, 11]),
        segment_ids: Tensor.fromInt64('segment_ids', [2, 5], [0, 0, 0, 1, 1, 0, 1, 1, 1, 1]),
      };
      const want = await runModel(path.join(dir, 'before.onnx'), feeds);
      const got = await runModel(path.join(dir, 'after.onnx'), feeds);
      expect(got.y!.dims).toEqual([2, 5, H]);
      const [a, g] = [want.y!.toNumbers(), got.y!.toNumbers()];
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - g[i]!)).toBeLessThan(1e-5);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
