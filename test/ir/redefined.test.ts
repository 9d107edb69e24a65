// A value defined by two nodes (onnxruntime's rotary_mha_70b fusion-test graph defines 'One' twice):
// the loader keeps both, each use binding to the latest definition before it, and the saved model is
// valid SSA that onnxruntime runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, decodeModel, encodeModel, saveModel } from '../../ir/index.js';
import { runModel } from '../../runtime/ort.js';
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
