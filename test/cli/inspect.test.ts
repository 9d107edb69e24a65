import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, saveModel, summarize } from '../../ir/index.js';
import { CONFORMANCE, cli, mlpModel, tmpDir } from './helpers.js';

const dir = tmpDir('inspect');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function save(m: Model, name: string, externalData = false): string {
  const f = path.join(dir, name);
  saveModel(m, f, { externalData, threshold: 1024 });
  return f;
}

describe('inspect on conformance models', () => {
  it('prints a table for a PyTorch Conv2d export', async () => {
    const f = path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d/model.onnx');
    const r = await cli('inspect', f);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe(f);
    expect(r.stdout).toMatch(/ir_version\s+3\s+producer pytorch 0\.3/);
    expect(r.stdout).toMatch(/opsets\s+ai\.onnx 6/);
    // Initializers listed as inputs (IR 3) are weights, not inputs to feed.
    expect(lines).toContain('  0  float32  [2, 3, 7, 5]');
    expect(lines).toContain('  3  float32  [2, 4, 5, 4]');
    expect(lines).toContain('  Conv  1');
    expect(r.stdout).toContain('parameters  76 in 2 tensors, 304 B');
    expect(lines).toContain('  1  float32  [4, 3, 3, 2]  288 B');
    // A stride-1 Conv is no patch embedding.
    expect(r.stdout).toMatch(/role\s+unknown/);
  });

  it('--json gives the same facts as numbers', async () => {
    const f = path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d/model.onnx');
    const j = JSON.parse((await cli('inspect', f, '--json')).stdout);
    expect(j.irVersion).toBe(3);
    expect(j.producer).toEqual({ name: 'pytorch', version: '0.3' });
    expect(j.opsets).toEqual([{ domain: 'ai.onnx', version: 6 }]);
    expect(j.inputs).toEqual([{ name: '0', dtype: 'float32', shape: [2, 3, 7, 5] }]);
    expect(j.ops).toEqual({ Conv: 1 });
    expect(j.parameters).toEqual({ tensors: 2, elements: 76, bytes: 304, byDtype: { float32: { tensors: 2, elements: 76, bytes: 304 } } });
    expect(j.largestTensors.map((t: { name: string; bytes: number }) => [t.name, t.bytes])).toEqual([
      ['1', 288],
      ['2', 16],
    ]);
    expect(j.externalData).toEqual({ tensors: 0, bytes: 0, files: [] });
    expect(j.dynamic).toEqual({ symbols: [], values: [] });
  });

  it('counts nodes inside Loop and If bodies', async () => {
    const loop = JSON.parse((await cli('inspect', path.join(CONFORMANCE, 'node/test_loop11/model.onnx'), '--json')).stdout);
    expect(loop.nodes).toEqual({ total: 10, mainGraph: 1, inSubgraphs: 9, subgraphs: 1 });
    expect(loop.ops.Loop).toBe(1);
    // The Loop body's Constant nodes hold its only tensors: float32[5] and an int64 scalar.
    expect(loop.parameters.byDtype).toEqual({
      float32: { tensors: 1, elements: 5, bytes: 20 },
      int64: { tensors: 1, elements: 1, bytes: 8 },
    });
    const iff = JSON.parse((await cli('inspect', path.join(CONFORMANCE, 'node/test_if/model.onnx'), '--json')).stdout);
    expect(iff.nodes.subgraphs).toBe(2);
    expect(iff.nodes.mainGraph).toBe(1);
    expect(iff.nodes.inSubgraphs).toBe(iff.nodes.total - 1);
    expect(iff.nodes.inSubgraphs).toBeGreaterThanOrEqual(2);
    const text = (await cli('inspect', path.join(CONFORMANCE, 'node/test_loop11/model.onnx'))).stdout;
    expect(text).toMatch(/nodes\s+10 \(9 in 1 subgraphs\)/);
  });

  it('names the embedding role of a PyTorch Embedding export', async () => {
    const j = JSON.parse((await cli('inspect', path.join(CONFORMANCE, 'pytorch-converted/test_Embedding/model.onnx'), '--json')).stdout);
    expect(j.role.role).toBe('embeddings');
  });
});

describe('inspect on a built model with external data and symbolic dims', () => {
  it('reports external files, largest tensors, dynamic dims', async () => {
    const f = save(mlpModel(), 'mlp.onnx', true);
    const j = JSON.parse((await cli('inspect', f, '--json')).stdout);
    expect(j.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: ['batch', 16] }]);
    expect(j.outputs).toEqual([{ name: 'out', dtype: 'float32', shape: ['batch', 8] }]);
    expect(j.parameters.byDtype).toEqual({ float32: { tensors: 3, elements: 16 * 64 + 64 + 64 * 8, bytes: 4 * (16 * 64 + 64 + 64 * 8) } });
    // w1 (4096 B) and w2 (2048 B) pass the 1024-byte threshold, b1 (256 B) stays inline.
    expect(j.externalData).toEqual({ tensors: 2, bytes: 6144, files: [{ location: 'mlp.onnx.data', tensors: 2, bytes: 6144 }] });
    expect(j.largestTensors).toEqual([
      { name: 'w1', dtype: 'float32', shape: [16, 64], bytes: 4096, external: true },
      { name: 'w2', dtype: 'float32', shape: [64, 8], bytes: 2048, external: true },
      { name: 'b1', dtype: 'float32', shape: [64], bytes: 256, external: false },
    ]);
    expect(j.dynamic).toEqual({
      symbols: ['batch'],
      values: [
        { name: 'features', kind: 'input', dims: [{ axis: 0, dim: 'batch' }] },
        { name: 'out', kind: 'output', dims: [{ axis: 0, dim: 'batch' }] },
      ],
    });
    expect(j.ops).toEqual({ MatMul: 2, Add: 1, Relu: 1 });
    expect(j.role.role).toBe('projector');

    const text = (await cli('inspect', f)).stdout.split('\n');
    expect(text).toContain('  features  float32  [batch, 16]');
    expect(text).toContain('external data  2 tensors, 6.00 KiB');
    expect(text).toContain('  mlp.onnx.data  2 tensors  6.00 KiB');
    expect(text).toContain('  w1  float32  [16, 64]  4.00 KiB  external');
    expect(text).toContain('dynamic dims (batch)');
    expect(text).toContain('  input   features  0:batch');
  });

  it('qualifies ops of non-default domains and marks unknown dims', () => {
    const b = new GraphBuilder({ opset: 17, opsets: { 'com.microsoft': 1 } });
    const x = b.input('x', DataType.FLOAT, [null, 4]);
    const y = b.op1('FusedMatMul', [x, b.constF32('w', [4, 4], new Array(16).fill(0.5))], { domain: 'com.microsoft' });
    const z = b.op1('Relu', [y]);
    b.output(z, 'z', DataType.FLOAT);
    const s = summarize(b.build());
    expect(s.ops).toEqual({ 'com.microsoft:FusedMatMul': 1, Relu: 1 });
    expect(s.opsets).toEqual([
      { domain: 'ai.onnx', version: 17 },
      { domain: 'com.microsoft', version: 1 },
    ]);
    expect(s.dynamic.values).toEqual([
      { name: 'x', kind: 'input', dims: [{ axis: 0, dim: null }] },
      { name: 'z', kind: 'output', dims: [{ axis: -1, dim: null }] },
    ]);
  });
});

/** Sub-models of a small MLLM, one per role, written the way exporters write them. */
function roleModels(): Record<string, Model> {
  const w = (name: string, dims: number[]) =>
    Tensor.fromFloat32(
      name,
      dims,
      Float32Array.from({ length: dims.reduce((a, c) => a * c, 1) }, (_, i) => Math.sin(i)),
    );

  const v = new GraphBuilder();
  const px = v.input('pixel_values', DataType.FLOAT, ['batch', 3, 'height', 'width']);
  const norm = v.op1('Sub', [px, v.constScalarF32('mean', 0.5)]);
  const patches = v.op1('Conv', [norm, v.initializer(w('patch.weight', [16, 3, 4, 4]))], {
    attrs: { kernel_shape: [4, 4], strides: [4, 4] },
  });
  v.output(patches, 'image_features', DataType.FLOAT, ['batch', 16, null, null]);

  const e = new GraphBuilder();
  const ids = e.input('input_ids', DataType.INT64, ['batch', 'seq']);
  e.output(e.op1('Gather', [e.initializer(w('embed_tokens', [64, 16])), ids]), 'inputs_embeds', DataType.FLOAT, ['batch', 'seq', 16]);

  const d = (logitsName: string) => {
    const b = new GraphBuilder();
    const x = b.input('inputs_embeds', DataType.FLOAT, [1, 'seq', 16]);
    const q = b.op1('MatMul', [x, b.initializer(w('q', [16, 16]))]);
    const k = b.op1('Transpose', [b.op1('MatMul', [x, b.initializer(w('k', [16, 16]))])], { attrs: { perm: [0, 2, 1] } });
    const p = b.op1('Softmax', [b.op1('MatMul', [q, k])], { attrs: { axis: -1 } });
    const h = b.op1('MatMul', [p, x]);
    b.output(b.op1('MatMul', [h, b.initializer(w('lm_head', [16, 64]))]), logitsName, DataType.FLOAT, [1, 'seq', 64]);
    return b.build();
  };
  return {
    'vision-encoder': v.build(),
    embeddings: e.build(),
    projector: mlpModel(),
    decoder: d('logits'),
    'decoder (no telling names)': d('y'),
  };
}

describe('role guess', () => {
  for (const [role, model] of Object.entries(roleModels())) {
    it(`names the ${role}`, async () => {
      const f = save(model, `${role.replace(/\W+/g, '_')}.onnx`);
      const j = JSON.parse((await cli('inspect', f, '--json')).stdout);
      expect(j.role.role).toBe(role.split(' ')[0]);
      expect(j.role.evidence.length).toBeGreaterThan(0);
    });
  }

  it('sees through 4-bit weight formats (MatMulNBits, GatherBlockQuantized, QDQ)', () => {
    const u8 = (name: string, dims: number[]) =>
      Tensor.fromBytes(name, DataType.UINT8, dims, new Uint8Array(dims.reduce((a, c) => a * c, 1)));
    const scales = (name: string, n: number) => Tensor.fromFloat32(name, [n], new Float32Array(n).fill(0.1));
    const ms = { 'com.microsoft': 1 };

    const p = new GraphBuilder({ opsets: ms });
    const px = p.input('image_features', DataType.FLOAT, ['batch', 'n', 32]);
    const ph = p.op1('MatMulNBits', [px, p.initializer(u8('fc1.qweight', [64, 1, 16])), p.initializer(scales('fc1.scales', 64))], {
      domain: 'com.microsoft',
      attrs: { K: 32, N: 64, bits: 4, block_size: 32 },
    });
    p.output(ph, 'image_embeds', DataType.FLOAT, ['batch', 'n', 64]);
    expect(summarize(p.build()).role.role).toBe('projector');

    const e = new GraphBuilder({ opsets: ms });
    const ids = e.input('input_ids', DataType.INT64, ['batch', 'seq']);
    const table = e.initializer(Tensor.fromBytes('embed.q', DataType.UINT4, [64, 32], new Uint8Array(64 * 16)));
    e.output(
      e.op1('GatherBlockQuantized', [table, ids, e.initializer(scales('embed.scales', 64))], {
        domain: 'com.microsoft',
        attrs: { block_size: 32 },
      }),
      'inputs_embeds',
      DataType.FLOAT,
      ['batch', 'seq', 32],
    );
    expect(summarize(e.build()).role.role).toBe('embeddings');

    const d = new GraphBuilder({ opsets: ms });
    const x = d.input('inputs_embeds', DataType.FLOAT, [1, 'seq', 32]);
    const wq = d.op1('DequantizeLinear', [
      d.initializer(Tensor.fromBytes('q.w', DataType.INT8, [32, 32], new Uint8Array(1024))),
      d.constScalarF32('q.s', 0.01),
    ]);
    const att = d.op1('Softmax', [d.op1('MatMul', [x, wq])]);
    const lm = d.op1(
      'MatMulNBits',
      [att, d.initializer(u8('lm_head.qweight', [256, 1, 16])), d.initializer(scales('lm_head.scales', 256))],
      { domain: 'com.microsoft', attrs: { K: 32, N: 256, bits: 4, block_size: 32 } },
    );
    d.output(lm, 'y', DataType.FLOAT, [1, 'seq', 256]);
    const s = summarize(d.build());
    expect(s.role.role).toBe('decoder');
    expect(s.role.evidence[0]).toMatch(/MatMulNBits .* widening 32 -> 256/);
    expect(s.ops['com.microsoft:MatMulNBits']).toBe(1);
  });

  it('gives the evidence it used', () => {
    const s = summarize(roleModels()['vision-encoder']!);
    expect(s.role.evidence[0]).toMatch(/input 'pixel_values' float32\[batch,3,height,width\] feeds Conv .*4x4 stride 4x4/);
  });
});
