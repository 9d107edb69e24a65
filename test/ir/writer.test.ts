// Saving: the 2 GB rule (through a lowered inlineLimit, not 2 GB of data), atomic writes that leave
// nothing behind on failure, and refusals that write nothing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, InputError, Tensor, loadModel, saveModel } from '../../ir/index.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-writer-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** Three 4 KiB float weights and a 128-byte bias (under the 1024-byte threshold). */
function model() {
  const b = new GraphBuilder({ opset: 17 });
  let x = b.input('x', DataType.FLOAT, [1, 32]);
  for (let i = 0; i < 3; i++) {
    const w = Tensor.fromFloat32(
      `w${i}`,
      [32, 32],
      Float32Array.from({ length: 1024 }, (_, k) => ((k * 7 + i) % 13) - 6),
    );
    x = b.op1('MatMul', [x, b.initializer(w)]);
  }
  x = b.op1('Add', [x, b.initializer(Tensor.fromFloat32('bias', [32], new Float32Array(32).fill(0.5)))]);
  b.output(x, 'y', DataType.FLOAT, [1, 32]);
  return b.build();
}

const listing = (d: string) => (fs.existsSync(d) ? fs.readdirSync(d).sort() : []);

describe('saveModel', () => {
  it('page-aligns tensors of 1 MiB and more in external data, 16-byte aligns the rest (no padding bloat)', () => {
    const b = new GraphBuilder({ opset: 17 });
    let x = b.input('x', DataType.FLOAT, [1, 512]);
    const big = Tensor.fromFloat32(
      'big',
      [512, 512],
      Float32Array.from({ length: 512 * 512 }, (_, k) => (k % 11) - 5),
    );
    const small = Tensor.fromFloat32(
      'small',
      [512],
      Float32Array.from({ length: 512 }, (_, k) => k % 3),
    );
    x = b.op1('Add', [b.op1('MatMul', [x, b.initializer(big)]), b.initializer(small)]);
    const odd = Tensor.fromFloat32('odd', [3], Float32Array.from([1, 2, 3]));
    x = b.op1('Mul', [x, b.initializer(odd)]);
    b.output(x, 'y', DataType.FLOAT, [1, 512]);
    const r = saveModel(b.build(), path.join(root, 'align', 'm.onnx'), { externalData: true, threshold: 0 });
    const refs = new Map(
      loadModel(r.modelFile)
        .graph.initializers.filter((t) => t.data.kind === 'external')
        .map((t) => [t.name, (t.data as { ref: { offset: number; length: number } }).ref]),
    );
    expect(refs.get('big')!.length).toBe(1 << 20);
    expect(refs.get('big')!.offset % 4096).toBe(0);
    for (const n of ['small', 'odd']) expect(refs.get(n)!.offset % 16, n).toBe(0);
    // The data file holds the bytes plus at most one page of padding before the big tensor and 15 bytes per small one.
    const data = fs.statSync(`${r.modelFile}.data`).size;
    expect(data).toBeLessThan((1 << 20) + 2048 + 12 + 4096 + 2 * 16);
  });

  it('goes to external data on its own when inline tensors would pass the protobuf limit', () => {
    for (const externalData of ['auto', false] as const) {
      const dir = path.join(root, `limit-${externalData}`);
      const r = saveModel(model(), path.join(dir, 'm.onnx'), { externalData, inlineLimit: 8192 });
      expect(r.externalTensors, String(externalData)).toBe(3);
      expect(listing(dir)).toEqual(['m.onnx', 'm.onnx.data']);
      const back = loadModel(r.modelFile);
      expect(back.graph.initializers.filter((t) => t.isExternal).map((t) => t.name)).toEqual(['w0', 'w1', 'w2']);
      expect(Array.from(back.graph.value('w2').initializer!.toFloat32())).toEqual(
        Array.from(model().graph.value('w2').initializer!.toFloat32()),
      );
    }
    // Under the limit the same call keeps everything inline.
    const r = saveModel(model(), path.join(root, 'under', 'm.onnx'), { externalData: false, inlineLimit: 1 << 20 });
    expect(r.externalTensors).toBe(0);
    expect(listing(path.join(root, 'under'))).toEqual(['m.onnx']);
  });

  it('leaves no temp or partial file when a save fails midway', () => {
    const src = path.join(root, 'src', 'm.onnx');
    saveModel(model(), src, { externalData: true, threshold: 1024 });
    const m = loadModel(src);
    // The source data shrinks after load: the second tensor's range can no longer be read.
    fs.truncateSync(`${src}.data`, 4096 + 100);
    const dir = path.join(root, 'failed');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'm.onnx'), 'old');
    expect(() => saveModel(m, path.join(dir, 'm.onnx'), { externalData: true })).toThrow(/end of file/);
    expect(listing(dir)).toEqual(['m.onnx']);
    expect(fs.readFileSync(path.join(dir, 'm.onnx'), 'utf8')).toBe('old');
  });

  it('refuses a data location that is the model file itself, creating nothing', () => {
    const dir = path.join(root, 'self');
    expect(() => saveModel(model(), path.join(dir, 'm.onnx'), { externalData: true, location: 'm.onnx' })).toThrow(InputError);
    expect(fs.existsSync(dir)).toBe(false);
  });
});
