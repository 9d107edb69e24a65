import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Value } from '../../ir/index.js';
import { fuseQuickGelu } from '../../passes/fuse-quickgelu.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
type Build = (b: GraphBuilder, x: Value) => Value;

function build(f: Build, extra?: (b: GraphBuilder, x: Value) => void) {
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', DataType.FLOAT, [4, 48]);
  b.output(f(b, x), 'y', DataType.FLOAT, [4, 48]);
  extra?.(b, x);
  return b.build();
}
const c = (b: GraphBuilder, v: number) => b.constant(Tensor.fromFloat32('', [], Float32Array.of(v)));

describe('fuse-quickgelu', () => {
  it.each([
    [
      'CLIP quick_gelu x * sigmoid(1.702 x)',
      (b: GraphBuilder, x: Value) => b.op1('Mul', [x, b.op1('Sigmoid', [b.op1('Mul', [c(b, 1.702), x])])]),
      1.702,
      'quickgelu',
    ],
    ['SiLU sigmoid(x) * x', (b: GraphBuilder, x: Value) => b.op1('Mul', [b.op1('Sigmoid', [x]), x]), 1, 'silu'],
  ] as [string, Build, number, string][])('fuses %s', async (name, f, alpha, key) => {
    const m = build(f);
    const r = await fuseAndCompare(m, fuseQuickGelu);
    expect(r.stats.counts[key]).toBe(1);
    expect(opCounts(m)).toEqual({ QuickGelu: 1 });
    expect(m.graph.nodes[0]!.attrFloat('alpha')).toBeCloseTo(alpha, 6);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-quickgelu ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each([
    ['sigmoid of another value (gating)', (b: GraphBuilder, x: Value) => b.op1('Mul', [x, b.op1('Sigmoid', [b.op1('Neg', [x])])])],
    [
      'sigmoid output also used',
      (b: GraphBuilder, x: Value) => {
        const s = b.op1('Sigmoid', [x]);
        b.output(b.op1('Neg', [s]), 's', DataType.FLOAT, [4, 48]);
        return b.op1('Mul', [x, s]);
      },
    ],
  ] as [string, Build][])('leaves alone: %s', async (_, f) => {
    const m = build(f);
    const r = await fuseAndCompare(m, fuseQuickGelu);
    expect(r.stats.counts.quickgelu! + r.stats.counts.silu!).toBe(0);
    expect(r.identical).toBe(true);
  });

  it('silu=false keeps SiLU', async () => {
    const m = build((b, x) => b.op1('Mul', [b.op1('Sigmoid', [x]), x]));
    const r = await fuseAndCompare(m, fuseQuickGelu, { silu: false });
    expect(r.identical).toBe(true);
  });
});
