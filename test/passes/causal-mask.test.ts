// transformers >= 4.40's decoder mask (causal over a cache of T - S, plus padding from attention_mask)
// is recognised, and masks that differ in what GroupQueryAttention would take over are not.
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Value } from '../../ir/index.js';
import { hfCausalPaddingMask } from '../../passes/causal-mask.js';
import { inferShapes } from '../../passes/infer-shapes.js';

const MIN = -3.4028234663852886e38;

interface Variant {
  /** Query rows at 0..S-1 instead of T-S..T-1: causal as if there were no cache. */
  rowsFromZero?: boolean;
  /** The padding term read from another [B, T] input than the one giving T. */
  otherPadding?: boolean;
  /** causal built as Where(j > i, min, 0) instead of ConstantOfShape(min) * Cast(j > i). */
  whereForm?: boolean;
}

function build(v: Variant) {
  const b = new GraphBuilder({ opset: 14 });
  const am = b.input('attention_mask', DataType.INT64, ['batch', 'total']);
  const other = b.input('other_mask', DataType.INT64, ['batch', 'total']);
  const x = b.input('x', DataType.FLOAT, ['batch', 'seq', 8]);
  const i64 = (name: string, vals: number[]) => b.constInt64(name, vals, vals.length === 1 ? [] : [vals.length]);
  const [zero, one] = [i64('zero', [0]), i64('one', [1])];
  const total = b.op1('Gather', [b.op1('Shape', [am]), one], { attrs: { axis: 0 } });
  const seq = b.op1('Gather', [b.op1('Shape', [x]), one], { attrs: { axis: 0 } });
  const start = v.rowsFromZero ? zero : b.op1('Sub', [total, seq]);
  const rows = v.rowsFromZero ? b.op1('Range', [start, seq, one]) : b.op1('Range', [start, total, one]);
  const gt = b.op1('Greater', [b.op1('Range', [zero, total, one]), b.op1('Reshape', [rows, b.constInt64('col', [-1, 1])])]);
  const u = (t: Value) => b.op1('Unsqueeze', [t, b.constInt64(`ax${b.graph.initializerNames.length}`, [0])]);
  const minC = b.constScalarF32('min', MIN);
  const table = v.whereForm
    ? b.op1('Where', [gt, minC, b.constScalarF32('zerof', 0)])
    : b.op1('Mul', [
        b.op1('ConstantOfShape', [b.op1('Concat', [u(seq), u(total)], { attrs: { axis: 0 } })], {
          attrs: { value: Tensor.fromFloat32('v', [1], Float32Array.of(MIN)) },
        }),
        b.op1('Cast', [gt], { attrs: { to: DataType.FLOAT } }),
      ]);
  const causal = b.op1('Unsqueeze', [table, b.constInt64('ax01', [0, 1])]);
  const pad = b.op1('Cast', [b.op1('Unsqueeze', [v.otherPadding ? other : am, b.constInt64('ax12', [1, 2])])], {
    attrs: { to: DataType.FLOAT },
  });
  const eq = b.op1('Equal', [b.op1('Add', [causal, pad]), b.constScalarF32('zf', 0)]);
  const mask = b.op1('Where', [eq, minC, causal]);
  b.output(mask, 'mask', DataType.FLOAT, ['batch', 1, 'seq', 'total']);
  return { m: b.build(), mask, am };
}

describe('hfCausalPaddingMask', () => {
  it.each([
    ['ConstantOfShape(min) * Cast(j > i)', {}],
    ['Where(j > i, min, 0)', { whereForm: true }],
  ] as [string, Variant][])('recognises %s', (_, v) => {
    const { mask, am } = build(v);
    expect(hfCausalPaddingMask(mask)).toBe(am);
  });

  it.each([
    ['causal rows not at T - S (no cache offset)', { rowsFromZero: true }],
    ['padding from another input', { otherPadding: true }],
  ] as [string, Variant][])('leaves alone: %s', (_, v) => {
    expect(hfCausalPaddingMask(build(v).mask)).toBeNull();
  });
});

describe("infer-shapes: torch's expand(-1)", () => {
  it('Where(shape == -1, 1, shape) keeps the named dims (repeat_kv)', async () => {
    const b = new GraphBuilder({ opset: 14 });
    const x = b.input('x', DataType.FLOAT, ['batch', 2, 'seq', 4]);
    const shape = b.op1('Shape', [x]);
    const dim = (i: number) => b.op1('Slice', [shape, b.constInt64(`s${i}`, [i]), b.constInt64(`e${i}`, [i + 1])]);
    // [batch, 2, 3, seq, 4] as torch writes expand(b, n, 3, t, d): Where(target == -1, 1, target).
    const want = b.op1('Concat', [dim(0), b.constInt64('m', [2, 3]), dim(2), b.constInt64('d', [4])], { attrs: { axis: 0 } });
    const eq = b.op1('Equal', [want, b.constInt64('neg', [-1])]);
    const fixed = b.op1('Where', [eq, b.constInt64('ones', [1, 1, 1, 1, 1]), want]);
    const y = b.op1('Expand', [b.op1('Unsqueeze', [x, b.constInt64('a', [2])]), fixed]);
    b.output(y, 'y', DataType.FLOAT);
    const m = b.build();
    await inferShapes.run(m, { writeValueInfo: false }, {});
    expect(y.shape).toEqual(['batch', 2, 3, 'seq', 4]);
  });
});
