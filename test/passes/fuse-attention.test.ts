import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, type Model, type Value } from '../../ir/index.js';
import { fuseAttention } from '../../passes/fuse-attention.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { randn, rng } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const N = 4,
  D = 8,
  C = N * D;

interface Variant {
  scale?: 'div' | 'mul' | 'none' | 'sdpa';
  mask?: boolean;
  mask2d?: boolean;
  softmaxAxis?: number;
  probsUsed?: boolean;
  scaleInput?: boolean;
  crossKv?: boolean;
}

function build(v: Variant): Model {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(21);
  const x = b.input('x', DataType.FLOAT, ['batch', 'seq', C]);
  const kvIn = v.crossKv ? b.input('memory', DataType.FLOAT, ['batch', 'mem', C]) : x;
  const proj = (name: string, inp: Value) =>
    b.op1('Add', [
      b.constF32(`${name}.bias`, [C], randn(r, C, 0.1)),
      b.op1('MatMul', [inp, b.constF32(`${name}.weight`, [C, C], randn(r, C * C, 0.2))]),
    ]);
  const shape4 = b.constInt64('shape4', [0, 0, N, D]);
  const heads = (t: Value) => b.op1('Transpose', [b.op1('Reshape', [t, shape4])], { attrs: { perm: [0, 2, 1, 3] } });
  const q = heads(proj('q', x)),
    k = heads(proj('k', kvIn)),
    val = heads(proj('v', kvIn));
  const kT = b.op1('Transpose', [k], { attrs: { perm: [0, 1, 3, 2] } });
  const sq = b.constScalarF32('sqrt_scale', Math.sqrt(1 / Math.sqrt(D)));
  let s = v.scale === 'sdpa' ? b.op1('MatMul', [b.op1('Mul', [q, sq]), b.op1('Mul', [kT, sq])]) : b.op1('MatMul', [q, kT]);
  const scaleIn = v.scaleInput ? b.input('scale', DataType.FLOAT, []) : null;
  if (v.scale === 'mul') s = b.op1('Mul', [s, b.constScalarF32('inv_sqrt_d', 1 / Math.sqrt(D))]);
  else if (v.scale !== 'none' && v.scale !== 'sdpa') s = b.op1('Div', [s, scaleIn ?? b.constScalarF32('sqrt_d', Math.sqrt(D))]);
  if (v.mask) s = b.op1('Add', [s, b.input('mask', DataType.FLOAT, ['batch', 1, 'seq', 'seq'])]);
  if (v.mask2d) s = b.op1('Add', [s, b.input('mask', DataType.FLOAT, ['seq', 'seq'])]);
  const p = b.op1('Softmax', [s], { attrs: { axis: v.softmaxAxis ?? -1 } });
  const ctx = b.op1('Transpose', [b.op1('MatMul', [p, val])], { attrs: { perm: [0, 2, 1, 3] } });
  b.output(b.op1('Reshape', [ctx, b.constInt64('shape3', [0, 0, C])]), 'y', DataType.FLOAT, ['batch', 'seq', C]);
  if (v.probsUsed) b.output(p, 'probs', DataType.FLOAT);
  const m = b.build();
  return m;
}

async function fuse(v: Variant) {
  const m = build(v);
  await inferShapes.run(m, { writeValueInfo: false }, {});
  const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: 6, mem: 9 } });
  return { m, r };
}

describe('fuse-attention', () => {
  it.each([
    ['Div by sqrt(D)', {}],
    ['Mul by 1/sqrt(D)', { scale: 'mul' }],
    ['no scaling (scale = 1)', { scale: 'none' }],
    ['torch SDPA export: sqrt(scale) on q and on k^T, with mask', { scale: 'sdpa', mask: true }],
    ['additive mask -> attention_bias', { mask: true }],
    ['cross attention (key/value from another sequence)', { crossKv: true }],
  ] as [string, Variant][])('fuses %s into MultiHeadAttention', async (name, v) => {
    const { m, r } = await fuse(v);
    expect(r.stats.counts.mha).toBe(1);
    const ops = opCounts(m);
    expect(ops.MultiHeadAttention).toBe(1);
    expect(ops.Softmax ?? 0).toBe(0);
    expect(ops.Transpose ?? 0).toBe(0);
    expect(ops.Reshape ?? 0).toBe(0);
    const mha = m.graph.nodes.find((n) => n.opType === 'MultiHeadAttention')!;
    expect(mha.attrInt('num_heads')).toBe(N);
    expect(mha.attrFloat('scale')).toBeCloseTo(v.scale === 'none' ? 1 : 1 / Math.sqrt(D), 6);
    expect(mha.inputs.length).toBe(v.mask ? 6 : 3);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-attention ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each([
    ['Softmax over axis 2', { softmaxAxis: 2 }],
    ['attention probabilities also an output', { probsUsed: true }],
    ['scale from a graph input', { scaleInput: true }],
    ['2-D [S, T] mask (not an attention_bias shape)', { mask2d: true }],
  ] as [string, Variant][])('leaves alone: %s', async (_, v) => {
    const m = build(v);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(
      m,
      fuseAttention,
      {},
      {
        dims: { batch: 2, seq: 6 },
        fixed: v.scaleInput ? { scale: (await import('../../ir/index.js')).Tensor.fromFloat32('scale', [], Float32Array.of(3)) } : {},
      },
    );
    expect(r.stats.counts.mha! + r.stats.counts.gqa! + r.stats.counts.mhaBnsh!).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.minCosine).toBe(1);
  });
});
