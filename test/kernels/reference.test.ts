// The CPU references against onnxruntime's own MatMulNBits and GatherBlockQuantized kernels on the
// same packed bytes: the references are what the WGSL kernels are judged by, so they are judged first.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, saveModel } from '../../ir/index.js';
import { runModel } from '../../runtime/ort.js';
import { randomFloats, randomWeights, seeded, zpRowBytes } from '../../kernels/layout.js';
import { gatherBlockQuantizedRef, matMulNBitsRef, relError } from '../../kernels/reference.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-kernels-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

describe('kernel references match onnxruntime', () => {
  const cases = [
    { K: 64, N: 24, M: 3, blockSize: 32, zeroPoints: false },
    { K: 200, N: 17, M: 5, blockSize: 64, zeroPoints: true },
    { K: 300, N: 9, M: 1, blockSize: 128, zeroPoints: true },
  ];
  for (const c of cases) {
    it(`MatMulNBits M=${c.M} K=${c.K} N=${c.N} block ${c.blockSize}${c.zeroPoints ? ' zp' : ''}`, async () => {
      const w = randomWeights(c, c.K);
      const b = new GraphBuilder({ opset: 17, opsets: { 'com.microsoft': 1 } });
      const A = b.input('A', DataType.FLOAT, [c.M, c.K]);
      const ins = [
        A,
        b.initializer(Tensor.fromBytes('B', DataType.UINT8, [c.N, w.kBlocks, c.blockSize / 2], w.b)),
        b.initializer(Tensor.fromFloat32('S', [c.N * w.kBlocks], w.scales)),
      ];
      if (w.zp) ins.push(b.initializer(Tensor.fromBytes('Z', DataType.UINT8, [c.N, zpRowBytes(w.kBlocks)], w.zp)));
      const y = b.op('MatMulNBits', ins, { domain: 'com.microsoft', attrs: { K: c.K, N: c.N, bits: 4, block_size: c.blockSize } })[0]!;
      b.output(y, 'Y', DataType.FLOAT, [c.M, c.N]);
      const f = path.join(TMP, `mnb${c.K}.onnx`);
      saveModel(b.build(), f, { externalData: false });
      const a = randomFloats(seeded(c.N), c.M * c.K);
      const out = await runModel(f, { A: Tensor.fromFloat32('A', [c.M, c.K], a) });
      expect(relError(out.Y!.toFloat32(), matMulNBitsRef(a, c.M, w))).toBeLessThan(1e-5);
    });
  }

  it('GatherBlockQuantized (uint8 form, zero points) with a negative index', async () => {
    const c = { K: 96, N: 30, blockSize: 32, zeroPoints: true };
    const w = randomWeights(c, 5);
    const b = new GraphBuilder({ opset: 17, opsets: { 'com.microsoft': 1 } });
    const I = b.input('ids', DataType.INT32, [6]);
    const ins = [
      b.initializer(Tensor.fromBytes('D', DataType.UINT8, [c.N, c.K / 2], w.b)),
      I,
      b.initializer(Tensor.fromFloat32('S', [c.N, w.kBlocks], w.scales)),
      b.initializer(Tensor.fromBytes('Z', DataType.UINT8, [c.N, zpRowBytes(w.kBlocks)], w.zp!)),
    ];
    const y = b.op('GatherBlockQuantized', ins, {
      domain: 'com.microsoft',
      attrs: { bits: 4, block_size: c.blockSize, gather_axis: 0, quantize_axis: 1 },
    })[0]!;
    b.output(y, 'Y', DataType.FLOAT, [6, c.K]);
    const f = path.join(TMP, 'gbq.onnx');
    saveModel(b.build(), f, { externalData: false });
    const ids = Int32Array.from([0, 29, 7, -1, 13, -30]);
    const out = await runModel(f, { ids: Tensor.fromBytes('ids', DataType.INT32, [6], new Uint8Array(ids.buffer)) });
    expect(relError(out.Y!.toFloat32(), gatherBlockQuantizedRef(ids, w))).toBe(0);
  });
});
