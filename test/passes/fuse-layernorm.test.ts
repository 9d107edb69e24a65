import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Value } from '../../ir/index.js';
import { fuseLayerNorm } from '../../passes/fuse-layernorm.js';
import { randn, rng } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const C = 16;

interface Variant {
  opset?: number;
  constNodes?: boolean;
  recip?: 'reciprocal' | 'div1';
  square?: 'pow' | 'mul';
  swapAffine?: boolean;
  noBeta?: boolean;
  gammaDims?: number[];
  // near misses
  epsAfterSqrt?: boolean;
  axis?: number;
  extraUse?: 'mean' | 'normalized';
  exponent?: number;
}

function build(v: Variant) {
  const opset = v.opset ?? 17;
  const b = new GraphBuilder({ opset });
  const r = rng(3);
  const x = b.input('x', DataType.FLOAT, [2, 5, C]);
  const c = (name: string, val: number): Value =>
    v.constNodes ? b.constant(Tensor.fromFloat32(name, [], Float32Array.of(val))) : b.constScalarF32(name, val);
  const axes = v.axis ?? -1;
  const mean = (inp: Value) =>
    opset >= 18
      ? b.op1('ReduceMean', [inp, b.constInt64(`axes${b.graph.nodes.length}`, [axes])], { attrs: { keepdims: 1 } })
      : b.op1('ReduceMean', [inp], { attrs: { axes: [axes], keepdims: 1 } });
  const mu = mean(x);
  const d = b.op1('Sub', [x, mu]);
  const sq = v.square === 'mul' ? b.op1('Mul', [d, d]) : b.op1('Pow', [d, c('two', v.exponent ?? 2)]);
  const variance = mean(sq);
  let s: Value;
  if (v.epsAfterSqrt) s = b.op1('Add', [b.op1('Sqrt', [variance]), c('eps', 1e-5)]);
  else s = b.op1('Sqrt', [b.op1('Add', [variance, c('eps', 1e-5)])]);
  let n: Value;
  if (v.recip === 'reciprocal') n = b.op1('Mul', [d, b.op1('Reciprocal', [s])]);
  else if (v.recip === 'div1') n = b.op1('Mul', [b.op1('Div', [c('one', 1), s]), d]);
  else n = b.op1('Div', [d, s]);
  const gdims = v.gammaDims ?? [C];
  const g = b.constF32(
    'gamma',
    gdims,
    Float32Array.from(randn(r, C, 0.2), (t) => t + 1),
  );
  let y = v.swapAffine ? b.op1('Mul', [g, n]) : b.op1('Mul', [n, g]);
  if (!v.noBeta) {
    const beta = b.constF32('beta', [C], randn(r, C, 0.1));
    y = v.swapAffine ? b.op1('Add', [beta, y]) : b.op1('Add', [y, beta]);
  }
  b.output(b.op1('Relu', [y]), 'y', DataType.FLOAT, [2, 5, C]);
  if (v.extraUse === 'mean') b.output(mu, 'mu', DataType.FLOAT, [2, 5, 1]);
  if (v.extraUse === 'normalized') b.output(b.op1('Neg', [n]), 'nn', DataType.FLOAT, [2, 5, C]);
  return b.build();
}

describe('fuse-layernorm', () => {
  const fused: [string, Variant][] = [
    ['Div form, Constant-node scalars', { constNodes: true }],
    ['Reciprocal form, opset 18 axes input, swapped affine', { recip: 'reciprocal', opset: 18, swapAffine: true }],
    ['Div(1, Sqrt) form, Mul(d, d) square', { recip: 'div1', square: 'mul' }],
    ['no beta, gamma [1,1,C]', { noBeta: true, gammaDims: [1, 1, C] }],
    ['axis given as rank-1 when the rank is known', { axis: 2 }],
    ['opset 14, as torch exports nn.LayerNorm below 17 (model converted to opset 17)', { opset: 14 }],
    ['opset 11', { opset: 11, constNodes: true }],
  ];
  it.each(fused)('fuses %s', async (_, v) => {
    const m = build(v);
    const r = await fuseAndCompare(m, fuseLayerNorm);
    expect(r.stats.counts.layernorm).toBe(1);
    expect(opCounts(m).LayerNormalization).toBe(1);
    expect(m.opset('')).toBe(Math.max(v.opset ?? 17, 17));
    expect(r.nodesAfter).toBe(2 + (v.extraUse ? 1 : 0));
    const ln = m.graph.nodes.find((n) => n.opType === 'LayerNormalization')!;
    expect(ln.attrFloat('epsilon')).toBeCloseTo(1e-5, 10);
    expect(ln.inputs.length).toBe(v.noBeta ? 2 : 3);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    expect(r.maxAbs).toBeLessThan(1e-4);
    console.log(`fuse-layernorm ${_}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  const misses: [string, Variant][] = [
    ['eps added after Sqrt', { epsAfterSqrt: true }],
    ['reduction over axis 1', { axis: 1 }],
    ['mean also a graph output', { extraUse: 'mean' }],
    ['normalized value used elsewhere', { extraUse: 'normalized' }],
    ['Pow exponent 3', { exponent: 3 }],
  ];
  it.each(misses)('leaves alone: %s', async (_, v) => {
    const m = build(v);
    const r = await fuseAndCompare(m, fuseLayerNorm);
    expect(r.stats.counts.layernorm).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.stats.skipped!.length).toBeGreaterThan(0);
    expect(r.minCosine).toBe(1);
  });
});

describe('fuse-layernorm: fp16 with statistics in a wider float (Phi-3.5 vision)', () => {
  it.each([
    ['double', DataType.DOUBLE],
    ['float', DataType.FLOAT],
  ] as [string, DataType][])('fuses Cast(x - mean) to %s ... Cast back to fp16 into LayerNormalization', async (_, wide) => {
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(4);
    const x = b.input('x', DataType.FLOAT16, [2, 5, C]);
    const wideScalar = (name: string, v: number) => b.initializer(Tensor.fromNumbers(name, wide, [], [v]));
    const half = (name: string, vals: number[]) => b.initializer(Tensor.fromNumbers(name, DataType.FLOAT16, [C], vals));
    const d = b.op1('Cast', [b.op1('Sub', [x, b.op1('ReduceMean', [x], { attrs: { axes: [-1], keepdims: 1 } })])], { attrs: { to: wide } });
    const variance = b.op1('ReduceMean', [b.op1('Pow', [d, wideScalar('two', 2)])], { attrs: { axes: [-1], keepdims: 1 } });
    const n = b.op1('Div', [d, b.op1('Sqrt', [b.op1('Add', [variance, wideScalar('eps', 1e-5)])])]);
    const gamma = half(
      'gamma',
      Array.from(randn(r, C, 0.2), (t) => t + 1),
    );
    const y = b.op1('Add', [
      b.op1('Mul', [b.op1('Cast', [n], { attrs: { to: DataType.FLOAT16 } }), gamma]),
      half('beta', Array.from(randn(r, C, 0.1))),
    ]);
    b.output(y, 'y', DataType.FLOAT16, [2, 5, C]);
    const m = b.build();
    const res = await fuseAndCompare(m, fuseLayerNorm);
    expect(res.stats.counts.layernorm).toBe(1);
    const ops = opCounts(m);
    expect(ops.LayerNormalization).toBe(1);
    expect(ops.Cast ?? 0).toBe(0);
    // fp16 output: LayerNormalization's float statistics against the double ones, within fp16 rounding.
    expect(res.minCosine).toBeGreaterThanOrEqual(0.9999);
    expect(res.maxAbs).toBeLessThan(4e-3);
    console.log(`fuse-layernorm fp16 via ${_}: cosine ${res.minCosine.toFixed(7)}, max abs ${res.maxAbs.toExponential(2)}`);
  });
});
