import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Value } from '../../ir/index.js';
import { fuseGelu } from '../../passes/fuse-gelu.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);

type Build = (b: GraphBuilder, x: Value, c: (v: number) => Value) => Value;

// Erf forms: torch nn.GELU, HF's hand-written variants, Mul by 1/sqrt2.
const erfForms: [string, Build][] = [
  [
    'torch: Mul(Mul(x, 1+erf), 0.5)',
    (b, x, c) => b.op1('Mul', [b.op1('Mul', [x, b.op1('Add', [b.op1('Erf', [b.op1('Div', [x, c(Math.SQRT2)])]), c(1)])]), c(0.5)]),
  ],
  [
    '0.5*x first: Mul(Mul(0.5, x), 1+erf)',
    (b, x, c) => b.op1('Mul', [b.op1('Mul', [c(0.5), x]), b.op1('Add', [c(1), b.op1('Erf', [b.op1('Mul', [x, c(Math.SQRT1_2)])])])]),
  ],
  [
    'Megatron: Div by 1.41421, erf(.).float()',
    (b, x, c) =>
      b.op1('Mul', [
        b.op1('Mul', [x, c(0.5)]),
        b.op1('Add', [b.op1('Cast', [b.op1('Erf', [b.op1('Div', [x, c(1.41421)])])], { attrs: { to: DataType.FLOAT } }), c(1)]),
      ]),
  ],
  [
    'Mul(x, Mul(1+erf, 0.5))',
    (b, x, c) => b.op1('Mul', [x, b.op1('Mul', [b.op1('Add', [b.op1('Erf', [b.op1('Div', [x, c(Math.SQRT2)])]), c(1)]), c(0.5)])]),
  ],
];
const tanhForms: [string, Build][] = [
  [
    'HF NewGELU: Pow(x, 3)',
    (b, x, c) => {
      const inner = b.op1('Mul', [c(Math.sqrt(2 / Math.PI)), b.op1('Add', [x, b.op1('Mul', [c(0.044715), b.op1('Pow', [x, c(3)])])])]);
      return b.op1('Mul', [b.op1('Mul', [c(0.5), x]), b.op1('Add', [c(1), b.op1('Tanh', [inner])])]);
    },
  ],
  [
    'HF gelu_fast / Megatron openai_gelu: x*0.79788*(1 + 0.044715*x*x)',
    (b, x, c) => {
      const inner = b.op1('Mul', [
        b.op1('Mul', [x, c(0.7978845608)]),
        b.op1('Add', [b.op1('Mul', [b.op1('Mul', [x, c(0.044715)]), x]), c(1)]),
      ]);
      return b.op1('Mul', [b.op1('Mul', [x, c(0.5)]), b.op1('Add', [b.op1('Tanh', [inner]), c(1)])]);
    },
  ],
  [
    'torch gelu(approximate=tanh): x*(x*x)',
    (b, x, c) => {
      const cube = b.op1('Mul', [x, b.op1('Mul', [x, x])]);
      const inner = b.op1('Mul', [b.op1('Add', [x, b.op1('Mul', [c(0.044715), cube])]), c(Math.sqrt(2 / Math.PI))]);
      return b.op1('Mul', [c(0.5), b.op1('Mul', [x, b.op1('Add', [c(1), b.op1('Tanh', [inner])])])]);
    },
  ],
];

function build(f: Build, opts: { opset?: number; constNodes?: boolean; extra?: (b: GraphBuilder, x: Value) => void } = {}) {
  const b = new GraphBuilder({ opset: opts.opset ?? 17 });
  const x = b.input('x', DataType.FLOAT, [3, 64]);
  let k = 0;
  const c = (v: number) => (opts.constNodes ? b.constant(Tensor.fromFloat32('', [], Float32Array.of(v))) : b.constScalarF32(`c${k++}`, v));
  b.output(f(b, x, c), 'y', DataType.FLOAT, [3, 64]);
  opts.extra?.(b, x);
  return b.build();
}

describe('fuse-gelu', () => {
  it.each(erfForms)('erf form %s -> com.microsoft Gelu', async (name, f) => {
    for (const constNodes of [false, true]) {
      const m = build(f, { constNodes });
      const r = await fuseAndCompare(m, fuseGelu, {}, { dims: {} });
      expect(r.stats.counts.gelu).toBe(1);
      expect(r.nodesAfter).toBe(1);
      expect(m.graph.nodes[0]!.domain).toBe('com.microsoft');
      expect(m.opset('com.microsoft')).toBe(1);
      expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
      if (!constNodes) console.log(`fuse-gelu erf ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
    }
  });

  it('uses ONNX Gelu at opset 20', async () => {
    const m = build(erfForms[0]![1], { opset: 20 });
    const r = await fuseAndCompare(m, fuseGelu);
    expect(opCounts(m)).toEqual({ Gelu: 1 });
    expect(m.graph.nodes[0]!.domain).toBe('');
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
  });

  it.each(tanhForms)('tanh form %s -> FastGelu', async (name, f) => {
    const m = build(f);
    const r = await fuseAndCompare(m, fuseGelu);
    expect(r.stats.counts.fastgelu).toBe(1);
    expect(opCounts(m)).toEqual({ FastGelu: 1 });
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-gelu tanh ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  const misses: [string, Build, ((b: GraphBuilder, x: Value) => void)?][] = [
    [
      'wrong constant (erf(x/2))',
      (b, x, c) => b.op1('Mul', [b.op1('Mul', [x, b.op1('Add', [b.op1('Erf', [b.op1('Div', [x, c(2)])]), c(1)])]), c(0.5)]),
    ],
    [
      'erf of a different value than the one multiplied',
      (b, x, c) =>
        b.op1('Mul', [b.op1('Mul', [b.op1('Neg', [x]), b.op1('Add', [b.op1('Erf', [b.op1('Div', [x, c(Math.SQRT2)])]), c(1)])]), c(0.5)]),
    ],
    [
      '1 + erf also used elsewhere',
      (b, x, c) => {
        const one = b.op1('Add', [b.op1('Erf', [b.op1('Div', [x, c(Math.SQRT2)])]), c(1)]);
        b.output(b.op1('Neg', [one]), 'extra', DataType.FLOAT, [3, 64]);
        return b.op1('Mul', [b.op1('Mul', [x, one]), c(0.5)]);
      },
    ],
    [
      'tanh with 0.5 missing',
      (b, x, c) => {
        const inner = b.op1('Mul', [c(Math.sqrt(2 / Math.PI)), b.op1('Add', [x, b.op1('Mul', [c(0.044715), b.op1('Pow', [x, c(3)])])])]);
        return b.op1('Mul', [x, b.op1('Add', [c(1), b.op1('Tanh', [inner])])]);
      },
    ],
  ];
  it.each(misses)('leaves alone: %s', async (_, f) => {
    const m = build(f);
    const r = await fuseAndCompare(m, fuseGelu);
    expect(r.stats.counts.gelu! + r.stats.counts.fastgelu!).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.minCosine).toBe(1);
  });
});
