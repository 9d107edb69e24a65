// Dtype tables against known values and against onnxruntime's own Cast kernels.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DataType,
  Graph,
  Model,
  Tensor,
  bf16ToF32,
  byteLength,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  packInt4,
  unpackInt4,
  saveModel,
  float8ToF32,
} from '../../ir/index.js';
import { runModel, randn, rng } from '../../runtime/ort.js';

describe('fp16 and bf16', () => {
  it('matches known bit patterns', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2)).toBe(0xc000);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00); // rounds to inf
    expect(f32ToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16(0.1)).toBe(0x2e66);
    expect(f32ToF16(NaN) & 0x7e00).toBe(0x7e00);
    expect(f16ToF32(0x3555)).toBeCloseTo(0.333251953125, 12);
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(0.1)).toBe(0x3dcd);
    expect(bf16ToF32(0x4049)).toBeCloseTo(3.140625, 10);
    expect(float8ToF32(DataType.FLOAT8E4M3FN, 0x7e)).toBe(448);
    expect(float8ToF32(DataType.FLOAT8E5M2, 0x7b)).toBe(57344);
  });

  it('fp32 -> fp16 is bit-identical to onnxruntime Cast, fp16 -> fp32 exact', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-dt-'));
    try {
      const n = 4096;
      const g = new Graph('cast');
      const x = g.createValue('x', { elemType: DataType.FLOAT, shape: [n] });
      g.inputs.push(x);
      g.addNode({ opType: 'Cast', inputs: [x], outputs: ['y'], attrs: { to: DataType.FLOAT16 } });
      const y = g.value('y');
      y.type = { elemType: DataType.FLOAT16, shape: [n] };
      g.outputs.push(y);
      const m = new Model(g);
      m.opsetImports = [{ domain: '', version: 17 }];
      saveModel(m, path.join(dir, 'cast.onnx'));
      // Normal values, tiny subnormals, halfway cases and overflow.
      const v = randn(rng(7), n, 3);
      for (let i = 0; i < 512; i++) v[i] = v[i]! * 1e-5;
      for (let i = 512; i < 600; i++) v[i] = 65504 + (i - 512) * 4;
      for (let i = 600; i < 700; i++) v[i] = 1 + (2 * (i - 600) + 1) * 2 ** -11; // exact ties
      const out = await runModel(path.join(dir, 'cast.onnx'), { x: Tensor.fromFloat32('x', [n], v) });
      const ortBits = new Uint16Array(out.y!.bytes().slice().buffer);
      const ours = Uint16Array.from(v, f32ToF16);
      expect(Array.from(ours)).toEqual(Array.from(ortBits));
      for (let h = 0; h < 65536; h++) {
        const f = f16ToF32(h);
        if (!Number.isNaN(f)) expect(f32ToF16(f)).toBe(h);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('int4 packing', () => {
  it('puts the first element in the low nibble, pads odd counts', () => {
    expect(Array.from(packInt4([1, 2, 3]))).toEqual([0x21, 0x03]);
    expect(Array.from(packInt4([-8, 7]))).toEqual([0x78]);
    expect(Array.from(unpackInt4(new Uint8Array([0x78]), 2, true))).toEqual([-8, 7]);
    expect(Array.from(unpackInt4(new Uint8Array([0xf1]), 2, false))).toEqual([1, 15]);
    expect(byteLength(DataType.INT4, 5)).toBe(3);
    expect(byteLength(DataType.UINT2, 5)).toBe(2);
  });
});
