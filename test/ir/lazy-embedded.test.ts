// Embedded weights are read like external ones: the loader leaves large raw_data in the .onnx as
// file ranges, the writer streams them back; bytes equal protobufjs's whole-message encode, and
// onnxruntime gives the same outputs on the re-saved file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, decodeModel, encodeModel, loadModel, saveModel, summarize } from '../../ir/index.js';
import { ModelProto } from '../../ir/onnx-schema.js';
import { LAZY_RAW_MIN } from '../../ir/scan.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-lazy-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const seq = (n: number, s: number) => Float32Array.from({ length: n }, (_, k) => Math.sin(k * 0.37 + s) * 0.1);

/** Two MatMul weights over the lazy threshold, a small bias, typed float_data, and an If whose
 * branches hold their own initializers (sub-graph tensors stay in memory). */
function model() {
  const b = new GraphBuilder({ opset: 17 });
  let x = b.input('x', DataType.FLOAT, [2, 128]);
  for (let i = 0; i < 2; i++) x = b.op1('MatMul', [x, b.initializer(Tensor.fromFloat32(`w${i}`, [128, 128], seq(128 * 128, i)))]);
  x = b.op1('Add', [x, b.initializer(Tensor.fromFloat32('bias', [128], seq(128, 9)))]);
  const typed = new Tensor('scale', DataType.FLOAT, [1], { kind: 'typed', field: 'float_data', values: [0.5] });
  x = b.op1('Mul', [x, b.initializer(typed)]);
  b.output(x, 'y', DataType.FLOAT, [2, 128]);
  return b.build();
}

describe('embedded raw_data stays in the file', () => {
  const src = path.join(root, 'src', 'm.onnx');
  fs.mkdirSync(path.dirname(src), { recursive: true });
  fs.writeFileSync(src, encodeModel(model()));

  it('loads large raw_data as ranges of the .onnx, small tensors in memory', () => {
    const m = loadModel(src);
    const kinds = Object.fromEntries(m.graph.initializers.map((t) => [t.name, t.data.kind]));
    expect(kinds).toEqual({ w0: 'external', w1: 'external', bias: 'raw', scale: 'typed' });
    const w1 = m.graph.value('w1').initializer!;
    expect(w1.byteLength).toBeGreaterThanOrEqual(LAZY_RAW_MIN);
    expect(w1.isExternal).toBe(false);
    expect(w1.data.kind === 'external' && w1.data.ref.embedded && w1.data.ref.file).toBe(path.resolve(src));
    expect(Array.from(w1.toFloat32())).toEqual(Array.from(seq(128 * 128, 1)));
    // inspect counts no external data for it.
    expect(summarize(m).externalData.tensors).toBe(0);
  });

  it('re-saves inline byte for byte, streaming the ranges', () => {
    const out = path.join(root, 'inline', 'm.onnx');
    const r = saveModel(loadModel(src), out, { externalData: false });
    expect(fs.readFileSync(out).equals(fs.readFileSync(src))).toBe(true);
    expect(r.modelBytes).toBe(fs.statSync(src).size);
    // And equal to the in-memory decode then encode.
    expect(Buffer.from(encodeModel(decodeModel(fs.readFileSync(src), src))).equals(fs.readFileSync(out))).toBe(true);
  });

  it('moves the ranges to external data when asked, and onnxruntime agrees on both files', async () => {
    const out = path.join(root, 'ext', 'm.onnx');
    const r = saveModel(loadModel(src), out, { externalData: true });
    expect(r.externalTensors).toBe(2);
    const x = new ort.Tensor('float32', seq(256, 3), [2, 128]);
    const run = async (f: string) => (await (await ort.InferenceSession.create(f)).run({ x })).y!.data as Float32Array;
    expect(Array.from(await run(out))).toEqual(Array.from(await run(src)));
  });

  it('keeps sub-graph initializers and other fields as the schema decodes them', () => {
    const m = model();
    const then = new GraphBuilder({ opset: 17 });
    then.output(
      then.op1('Identity', [then.initializer(Tensor.fromFloat32('big_then', [128, 128], seq(128 * 128, 5)))]),
      'o',
      DataType.FLOAT,
      [128, 128],
    );
    const els = new GraphBuilder({ opset: 17 });
    els.output(
      els.op1('Identity', [els.initializer(Tensor.fromFloat32('big_else', [128, 128], seq(128 * 128, 6)))]),
      'o',
      DataType.FLOAT,
      [128, 128],
    );
    const cond = m.graph.addInitializer(Tensor.fromBytes('cond', DataType.BOOL, [], Uint8Array.of(1)));
    m.graph.addNode({
      opType: 'If',
      inputs: [cond],
      outputs: ['branch'],
      attrs: { then_branch: then.build().graph, else_branch: els.build().graph },
    });
    m.docString = 'doc';
    m.metadataProps = [{ key: 'k', value: 'v' }];
    const f = path.join(root, 'sub', 'm.onnx');
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, encodeModel(m));
    const back = loadModel(f);
    expect(back.docString).toBe('doc');
    expect(back.metadataProps).toEqual([{ key: 'k', value: 'v' }]);
    const g = back.graph.nodes.find((n) => n.opType === 'If')!.attributes.find((a) => a.name === 'then_branch')!.value;
    expect(g.initializers[0].data.kind).toBe('raw');
    expect(Buffer.from(encodeModel(back)).equals(fs.readFileSync(f))).toBe(true);
  });

  it('falls back to a whole-file decode on what it does not expect (the graph field twice)', () => {
    const bytes = Buffer.concat([fs.readFileSync(src), ModelProto.encode({ graph: { name: 'second' } }).finish()]);
    const f = path.join(root, 'twice', 'm.onnx');
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, bytes);
    const m = loadModel(f);
    expect(m.graph.name).toBe('second');
    expect(Buffer.from(encodeModel(m)).equals(Buffer.from(encodeModel(decodeModel(bytes, f))))).toBe(true);
  });
});

describe('on real torch.onnx.export models (fixtures/export)', () => {
  const exports = path.resolve(__dirname, '../../fixtures/export');
  const models = fs.readdirSync(exports).filter((d) => fs.existsSync(path.join(exports, d, 'model.onnx')));

  it('leaves their large weights in the file and re-saves exactly what a whole-file decode would', () => {
    expect(models.length).toBeGreaterThanOrEqual(9);
    let lazy = 0;
    for (const name of models) {
      const f = path.join(exports, name, 'model.onnx');
      const m = loadModel(f);
      for (const t of m.graph.initializers) if (t.data.kind === 'external' && t.data.ref.embedded) lazy++;
      const out = path.join(root, 'exports', name, 'model.onnx');
      saveModel(m, out, { externalData: false });
      const whole = Buffer.from(encodeModel(decodeModel(fs.readFileSync(f), f)));
      expect(fs.readFileSync(out).equals(whole), name).toBe(true);
    }
    // 68 of 371 initializers in the corpus are 64 KiB or more.
    expect(lazy).toBe(68);
  });
});
