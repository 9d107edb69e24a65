import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Value } from '../../ir/index.js';
import { fuseRmsNorm } from '../../passes/fuse-rmsnorm.js';
import { randn, rng } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const C = 32;

interface Variant {
  form?: 'div1' | 'reciprocal' | 'div' | 'pow';
  dtype?: 'f32' | 'f16-cast';
  swap?: boolean;
  epsAfterSqrt?: boolean;
  axis?: number;
  extraUse?: boolean;
  epsInput?: boolean;
}

function build(v: Variant) {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(5);
  const half = v.dtype === 'f16-cast';
  const x0 = b.input('x', half ? DataType.FLOAT16 : DataType.FLOAT, [1, 7, C]);
  const epsIn = v.epsInput ? b.input('eps', DataType.FLOAT, []) : null;
  const x = half ? b.op1('Cast', [x0], { attrs: { to: DataType.FLOAT } }) : x0;
  const variance = b.op1('ReduceMean', [b.op1('Pow', [x, b.constScalarF32('two', 2)])], { attrs: { axes: [v.axis ?? -1], keepdims: 1 } });
  const eps = epsIn ?? b.constScalarF32('eps', 1e-6);
  const s =
    v.form === 'pow'
      ? variance
      : v.epsAfterSqrt
        ? b.op1('Add', [b.op1('Sqrt', [variance]), eps])
        : b.op1('Sqrt', [b.op1('Add', [variance, eps])]);
  let n: Value;
  if (v.form === 'pow') n = b.op1('Mul', [b.op1('Pow', [b.op1('Add', [eps, variance]), b.constScalarF32('mhalf', -0.5)]), x]);
  else if (v.form === 'div') n = b.op1('Div', [x, s]);
  else n = b.op1('Mul', [x, v.form === 'reciprocal' ? b.op1('Reciprocal', [s]) : b.op1('Div', [b.constScalarF32('one', 1), s])]);
  if (half) n = b.op1('Cast', [n], { attrs: { to: DataType.FLOAT16 } });
  const gv = Float32Array.from(randn(r, C, 0.2), (t) => t + 1);
  const g = half ? b.initializer(Tensor.fromNumbers('w', DataType.FLOAT16, [C], gv)) : b.constF32('w', [C], gv);
  const y = v.swap ? b.op1('Mul', [n, g]) : b.op1('Mul', [g, n]);
  b.output(y, 'y', half ? DataType.FLOAT16 : DataType.FLOAT, [1, 7, C]);
  if (v.extraUse) b.output(b.op1('Neg', [variance]), 'v', DataType.FLOAT, [1, 7, 1]);
  return b.build();
}

describe('fuse-rmsnorm', () => {
  const fused: [string, Variant][] = [
    ['Div(1, Sqrt) (torch rsqrt), weight first', { form: 'div1' }],
    ['Reciprocal form, weight second', { form: 'reciprocal', swap: true }],
    ['Div(x, Sqrt) form', { form: 'div' }],
    ['rsqrt as Pow(v + eps, -0.5), eps first', { form: 'pow' }],
    ['fp16 model with fp32 Casts', { form: 'div1', dtype: 'f16-cast' }],
  ];
  it.each(fused)('fuses %s', async (name, v) => {
    const m = build(v);
    const r = await fuseAndCompare(m, fuseRmsNorm);
    expect(r.stats.counts.rmsnorm).toBe(1);
    expect(opCounts(m).SimplifiedLayerNormalization).toBe(1);
    expect(r.nodesAfter).toBe(1);
    const n = m.graph.nodes[0]!;
    expect(n.domain).toBe('');
    expect(n.inputs[0]!.name).toBe('x');
    expect(n.attrFloat('epsilon')).toBeCloseTo(1e-6, 12);
    expect(n.attrInt('axis')).toBe(-1);
    expect(n.attrInt('stash_type')).toBe(1);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-rmsnorm ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  const misses: [string, Variant][] = [
    ['eps added after Sqrt', { epsAfterSqrt: true }],
    ['eps a graph input, not a constant', { epsInput: true }],
    ['reduction over axis 1', { axis: 1 }],
    ['variance used elsewhere', { extraUse: true }],
  ];
  it.each(misses)('leaves alone: %s', async (_, v) => {
    const m = build(v);
    const r = await fuseAndCompare(
      m,
      fuseRmsNorm,
      {},
      { fixed: v.epsInput ? { eps: Tensor.fromFloat32('eps', [], Float32Array.of(1e-6)) } : {} },
    );
    expect(r.stats.counts.rmsnorm).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.stats.skipped!.length).toBeGreaterThan(0);
    expect(r.minCosine).toBe(1);
  });
});
