// Shape and dtype rules per op. A rule reads input types and (for small int tensors) symbolic
// values, and returns output types and values. Unknown stays unknown: null dims, undefined rank.
import { AttrType, DataType, Dim, Node, TensorType, isFloat } from '../../ir/index.js';
import { add, broadcast, div, known, mul, product, quotient, sub } from './sym.js';

export interface Out {
  type?: TensorType;
  /** Symbolic contents of a small int tensor (rank 0 or 1). */
  value?: Dim[];
}

export interface RuleCtx {
  node: Node;
  type(i: number): TensorType | undefined;
  shape(i: number): Dim[] | undefined;
  dtype(i: number): DataType | undefined;
  /** Symbolic contents of input i (constants, Shape results, their arithmetic). */
  value(i: number): Dim[] | undefined;
  /** Input i as known numbers (every element known), else undefined. */
  ints(i: number): number[] | undefined;
  has(i: number): boolean;
  opset: number;
}

export type Rule = (c: RuleCtx) => Out[];

export const rules: Record<string, Rule> = {};

const t = (elemType: DataType | undefined, shape?: Dim[]): TensorType | undefined =>
  elemType === undefined ? undefined : shape ? { elemType, shape } : { elemType };

const same: Rule = (c) => [{ type: t(c.dtype(0), c.shape(0)) }];
const ints = (c: RuleCtx, i: number, attr: string): number[] | undefined =>
  c.has(i) ? c.ints(i) : c.node.hasAttr(attr) ? c.node.attrInts(attr) : undefined;
const normAxis = (a: number, r: number) => (a < 0 ? a + r : a);
const MAX_ARITH_VALUE_LEN = 16;

function reg(ops: string[], r: Rule, domain = ''): void {
  for (const op of ops) rules[domain ? `${domain}::${op}` : op] = r;
}

// ---- elementwise -------------------------------------------------------------------------------

reg(['Relu', 'Sigmoid', 'Tanh', 'Sqrt', 'Erf', 'Exp', 'Log', 'Neg', 'Abs', 'Reciprocal', 'Floor', 'Ceil',
  'Round', 'Sign', 'Sin', 'Cos', 'Tan', 'Softmax', 'LogSoftmax', 'Clip', 'LeakyRelu', 'Elu', 'Selu', 'HardSigmoid',
  'HardSwish', 'Softplus', 'Softsign', 'Mish', 'Celu', 'Gelu', 'Trilu', 'CumSum', 'Hardmax', 'Shrink',
  'ThresholdedRelu', 'InstanceNormalization', 'LRN', 'LpNormalization', 'MeanVarianceNormalization',
  'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh', 'Asinh', 'Acosh', 'Atanh', 'Swish'], same);
reg(['FastGelu', 'QuickGelu', 'Gelu', 'BiasGelu', 'RotaryEmbedding', 'MRotaryEmbedding'], same, 'com.microsoft');
reg(['Not', 'IsNaN', 'IsInf'], (c) => [{ type: t(DataType.BOOL, c.shape(0)) }]);

function valueArith(c: RuleCtx, fn: (a: Dim, b: Dim) => Dim): Dim[] | undefined {
  const a = c.value(0), b = c.value(1);
  if (!a || !b) return undefined;
  const n = Math.max(a.length, b.length);
  if ((a.length !== 1 && a.length !== n) || (b.length !== 1 && b.length !== n) || n > MAX_ARITH_VALUE_LEN) return undefined;
  return Array.from({ length: n }, (_, i) => fn(a[a.length === 1 ? 0 : i]!, b[b.length === 1 ? 0 : i]!));
}

function elementwise(outBool: boolean, arith?: (a: Dim, b: Dim) => Dim): Rule {
  return (c) => {
    const shapes: Dim[][] = [];
    let rankKnown = true;
    for (let i = 0; i < c.node.inputs.length; i++) {
      if (!c.has(i)) continue;
      const s = c.shape(i);
      if (!s) rankKnown = false;
      else shapes.push(s);
    }
    const dtype = outBool ? DataType.BOOL : c.dtype(0);
    const out: Out = { type: t(dtype, rankKnown ? broadcast(shapes) : undefined) };
    const dt = c.dtype(0);
    if (arith && dt !== undefined && !isFloat(dt)) out.value = valueArith(c, arith);
    return [out];
  };
}

const floorDivIntDim = (a: Dim, b: Dim) =>
  // ONNX integer Div truncates; on non-negative dims that is floor division.
  typeof a === 'number' && typeof b === 'number' ? (b === 0 ? null : Math.trunc(a / b)) : div(a, b);

reg(['Add'], elementwise(false, add));
reg(['Sub'], elementwise(false, sub));
reg(['Mul'], elementwise(false, mul));
reg(['Div'], elementwise(false, floorDivIntDim));
reg(['Pow', 'Mod', 'PRelu', 'Sum', 'Mean', 'BitShift', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor'], elementwise(false));
reg(['Max'], elementwise(false, (a, b) => (typeof a === 'number' && typeof b === 'number' ? Math.max(a, b) : a === b ? a : null)));
reg(['Min'], elementwise(false, (a, b) => (typeof a === 'number' && typeof b === 'number' ? Math.min(a, b) : a === b ? a : null)));
/** A dim named by the model is a size, never negative: torch's expand(-1) traces as Where(shape == -1, 1, shape). */
const NAMED_DIM = /^[A-Za-z_][\w.:]*$/;
const neverEqual = (a: Dim, b: Dim) => typeof a === 'string' && NAMED_DIM.test(a) && typeof b === 'number' && b < 0;
const dimEqual = (a: Dim, b: Dim): Dim => {
  if (typeof a === 'number' && typeof b === 'number') return a === b ? 1 : 0;
  if (a !== null && a === b) return 1;
  return neverEqual(a, b) || neverEqual(b, a) ? 0 : null;
};
reg(['Equal'], elementwise(true, dimEqual));
reg(['Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor'], elementwise(true));

rules['Where'] = (c) => {
  const s = [c.shape(0), c.shape(1), c.shape(2)];
  const out: Out = { type: t(c.dtype(1), s.every(Boolean) ? broadcast(s as Dim[][]) : undefined) };
  const cond = c.value(0), x = c.value(1), y = c.value(2);
  if (cond && x && y) {
    const n = Math.max(cond.length, x.length, y.length);
    const at = (v: Dim[], i: number) => v[v.length === 1 ? 0 : i] ?? null;
    if ([cond, x, y].every((v) => v.length === 1 || v.length === n)) {
      out.value = Array.from({ length: n }, (_, i) => {
        const k = at(cond, i);
        return k === null || typeof k === 'string' ? (at(x, i) === at(y, i) ? at(x, i) : null) : k ? at(x, i) : at(y, i);
      });
    }
  }
  return [out];
};

reg(['Identity'], (c) => [{ type: c.type(0), value: c.value(0) }]);
reg(['Dropout'], (c) => [{ type: c.type(0) }, { type: t(DataType.BOOL, c.shape(0)) }]);

reg(['Cast'], (c) => {
  const to = c.node.attrInt('to') as DataType;
  const v = c.value(0);
  const keep = v && !isFloat(to) && to !== DataType.BOOL && c.dtype(0) !== undefined && !isFloat(c.dtype(0)!);
  return [{ type: t(to, c.shape(0)), value: keep ? v : undefined }];
});
reg(['CastLike'], (c) => [{ type: t(c.dtype(1), c.shape(0)) }]);

// ---- normalization -----------------------------------------------------------------------------

function statsShape(s: Dim[] | undefined, axis: number): Dim[] | undefined {
  if (!s) return undefined;
  const a = normAxis(axis, s.length);
  return s.map((d, i) => (i < a ? d : 1));
}

reg(['LayerNormalization', 'SimplifiedLayerNormalization'], (c) => {
  const axis = c.node.attrInt('axis', -1);
  const stash = c.node.attrInt('stash_type', 1) === 1 ? DataType.FLOAT : c.dtype(0);
  const st = statsShape(c.shape(0), axis);
  return [{ type: c.type(0) }, { type: t(stash, st) }, { type: t(stash, st) }];
});
reg(['SimplifiedLayerNormalization'], (c) => [{ type: c.type(0) }], 'com.microsoft');
reg(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization'], (c) => {
  const outs: Out[] = [{ type: c.type(0) }, {}, {}];
  if (c.node.outputs.length > 3) outs.push({ type: c.type(0) });
  return outs;
}, 'com.microsoft');
reg(['BatchNormalization'], (c) => [{ type: c.type(0) }]);
reg(['GroupNormalization'], same);

// ---- linear algebra ----------------------------------------------------------------------------

function matmulShape(a: Dim[] | undefined, b: Dim[] | undefined): Dim[] | undefined {
  if (!a || !b || !a.length || !b.length) return undefined;
  const A = a.length === 1 ? [1, a[0]!] : a, B = b.length === 1 ? [b[0]!, 1] : b;
  const batch = broadcast([A.slice(0, -2), B.slice(0, -2)]);
  const out = [...batch, A[A.length - 2]!, B[B.length - 1]!];
  if (a.length === 1) out.splice(out.length - 2, 1);
  if (b.length === 1) out.splice(out.length - 1, 1);
  return out;
}

reg(['MatMul'], (c) => [{ type: t(c.dtype(0), matmulShape(c.shape(0), c.shape(1))) }]);
reg(['MatMulInteger'], (c) => [{ type: t(DataType.INT32, matmulShape(c.shape(0), c.shape(1))) }]);
reg(['Gemm'], (c) => {
  const a = c.shape(0), b = c.shape(1);
  if (!a || !b || a.length !== 2 || b.length !== 2) return [{ type: t(c.dtype(0)) }];
  const m = c.node.attrInt('transA', 0) ? a[1]! : a[0]!;
  const n = c.node.attrInt('transB', 0) ? b[0]! : b[1]!;
  return [{ type: t(c.dtype(0), [m, n]) }];
});
reg(['MatMulNBits'], (c) => {
  const a = c.shape(0);
  const n = c.node.attrInt('N');
  return [{ type: t(c.dtype(0), a ? [...a.slice(0, -1), n] : undefined) }];
}, 'com.microsoft');
reg(['GatherBlockQuantized'], (c) => {
  const data = c.shape(0), ind = c.shape(1);
  const gAxis = c.node.attrInt('gather_axis', 0);
  const dtype = c.dtype(2);
  if (!data || !ind || normAxis(gAxis, data.length) !== 0 || data.length !== 2) return [{ type: t(dtype) }];
  const bits = c.node.attrInt('bits', 4);
  const packed = c.dtype(0) === DataType.UINT8 ? 8 / bits : 1;
  return [{ type: t(dtype, [...ind, mul(data[1]!, packed)]) }];
}, 'com.microsoft');

function windowDims(c: RuleCtx, spatial: Dim[], kernel: number[], ceil = false): Dim[] {
  const n = spatial.length;
  const strides = c.node.attrInts('strides', new Array(n).fill(1));
  const dil = c.node.attrInts('dilations', new Array(n).fill(1));
  const pads = c.node.attrInts('pads', new Array(2 * n).fill(0));
  const autoPad = c.node.hasAttr('auto_pad') ? c.node.attrString('auto_pad') : 'NOTSET';
  return spatial.map((d, i) => {
    const s = strides[i]!, dk = (kernel[i]! - 1) * dil[i]! + 1;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return known(d) ? Math.ceil(d / s) : s === 1 ? d : null;
    const p = autoPad === 'VALID' ? 0 : pads[i]! + pads[i + n]!;
    if (known(d)) {
      const raw = (d + p - dk) / s;
      let o = (ceil ? Math.ceil(raw) : Math.floor(raw)) + 1;
      // Pooling with ceil_mode drops a last window that starts in the end padding.
      if (ceil && (o - 1) * s >= d + pads[i]!) o--;
      return o;
    }
    if (ceil || d === null) return null;
    // floor((d + p - dk)/s) + 1 is exact symbolically when (p - dk) is a multiple of s.
    if ((p - dk) % s === 0) return add(div(d, s), (p - dk) / s + 1);
    return null;
  });
}

reg(['Conv', 'ConvInteger', 'QLinearConv'], (c) => {
  const wIdx = c.node.opType === 'QLinearConv' ? 3 : 1;
  const x = c.shape(0), w = c.shape(wIdx);
  const dtype = c.node.opType === 'ConvInteger' ? DataType.INT32 : c.node.opType === 'QLinearConv' ? c.dtype(7) : c.dtype(0);
  if (!x || !w || x.length < 3) return [{ type: t(dtype) }];
  const kernel = c.node.hasAttr('kernel_shape') ? c.node.attrInts('kernel_shape') : w.slice(2);
  if (!kernel.every((k) => typeof k === 'number')) return [{ type: t(dtype, x.map(() => null)) }];
  return [{ type: t(dtype, [x[0]!, w[0]!, ...windowDims(c, x.slice(2), kernel as number[])]) }];
});

reg(['MaxPool', 'AveragePool', 'LpPool'], (c) => {
  const x = c.shape(0);
  if (!x || x.length < 3) return [{ type: t(c.dtype(0)) }, { type: t(DataType.INT64) }];
  const kernel = c.node.attrInts('kernel_shape');
  const s: Dim[] = [x[0]!, x[1]!, ...windowDims(c, x.slice(2), kernel, c.node.attrInt('ceil_mode', 0) === 1)];
  return [{ type: t(c.dtype(0), s) }, { type: t(DataType.INT64, s) }];
});
reg(['GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool'], (c) => {
  const x = c.shape(0);
  return [{ type: t(c.dtype(0), x ? x.map((d, i) => (i < 2 ? d : 1)) : undefined) }];
});

// ---- shape manipulation ------------------------------------------------------------------------

reg(['Shape'], (c) => {
  const s = c.shape(0);
  if (!s) return [{ type: t(DataType.INT64, [null]) }];
  const r = s.length;
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const start = clamp(c.node.attrInt('start', 0)), end = clamp(c.node.attrInt('end', r));
  const v = s.slice(start, Math.max(start, end));
  return [{ type: t(DataType.INT64, [v.length]), value: v }];
});
reg(['Size'], (c) => {
  const s = c.shape(0);
  return [{ type: t(DataType.INT64, []), value: s ? [product(s)] : undefined }];
});

rules['Reshape'] = (c) => {
  const x = c.shape(0);
  let shape = c.value(1);
  if (!shape && c.node.hasAttr('shape')) shape = c.node.attrInts('shape');
  if (!shape) {
    const ss = c.shape(1);
    return [{ type: t(c.dtype(0), ss && known(ss[0]) ? new Array<Dim>(ss[0]).fill(null) : undefined) }];
  }
  const allowzero = c.node.attrInt('allowzero', 0) === 1;
  const out: Dim[] = shape.map((d, i) => (d === 0 && !allowzero ? (x ? x[i] ?? null : null) : d));
  const neg = out.indexOf(-1);
  if (neg >= 0) out[neg] = x ? quotient(x, out.filter((_, i) => i !== neg)) : null;
  const fixed = out.map((d) => (typeof d === 'number' && d < 0 ? null : d));
  const v = c.value(0);
  const value = v && fixed.length <= 1 && (fixed.length === 0 || fixed[0] === 1 || fixed[0] === v.length) ? v : undefined;
  return [{ type: t(c.dtype(0), fixed), value }];
};

rules['Flatten'] = (c) => {
  const x = c.shape(0);
  if (!x) return [{ type: t(c.dtype(0), [null, null]) }];
  const a = normAxis(c.node.attrInt('axis', 1), x.length);
  return [{ type: t(c.dtype(0), [product(x.slice(0, a)), product(x.slice(a))]) }];
};

rules['Transpose'] = (c) => {
  const x = c.shape(0);
  if (!x) return [{ type: t(c.dtype(0)) }];
  const perm = c.node.attrInts('perm', [...x.keys()].reverse());
  return [{ type: t(c.dtype(0), perm.map((p) => x[p] ?? null)) }];
};

rules['Concat'] = (c) => {
  const shapes: Dim[][] = [];
  const n = c.node.inputs.length;
  for (let i = 0; i < n; i++) {
    if (!c.has(i)) continue;
    const s = c.shape(i);
    if (!s) return [{ type: t(c.dtype(0)) }];
    shapes.push(s);
  }
  if (!shapes.length) return [{ type: t(c.dtype(0)) }];
  const r = shapes[0]!.length;
  const axis = normAxis(c.node.attrInt('axis'), r);
  const out = shapes[0]!.map((_, i) => {
    if (i === axis) return shapes.reduce<Dim>((s, x) => add(s, x[i] ?? null), 0);
    const k = shapes.map((x) => x[i] ?? null).find((d) => typeof d === 'number') ?? shapes[0]![i]!;
    return k;
  });
  let value: Dim[] | undefined;
  if (r === 1 && known(out[0])) {
    // Parts with unknown contents but known length still place the known parts right.
    const vals: Dim[] = [];
    for (let i = 0; i < n; i++) {
      if (!c.has(i)) continue;
      const len = c.shape(i)![0];
      vals.push(...(c.value(i) ?? (known(len) ? new Array<Dim>(len).fill(null) : [])));
    }
    if (vals.length === out[0]) value = vals;
  }
  return [{ type: t(c.dtype(0), out), value }];
};

rules['Split'] = (c) => {
  const x = c.shape(0);
  const nOut = c.node.outputs.length;
  if (!x) return c.node.outputs.map(() => ({ type: t(c.dtype(0)) }));
  const axis = normAxis(c.node.attrInt('axis', 0), x.length);
  let sizes: Dim[] | undefined = ints(c, 1, 'split');
  const d = x[axis]!;
  if (!sizes && c.has(1)) sizes = new Array(nOut).fill(null);
  if (!sizes) {
    if (known(d)) {
      const chunk = Math.ceil(d / nOut);
      sizes = Array.from({ length: nOut }, (_, i) => Math.max(0, Math.min(chunk, d - chunk * i)));
    } else if (d !== null && !c.node.hasAttr('num_outputs')) sizes = new Array(nOut).fill(div(d, nOut));
    else sizes = new Array(nOut).fill(null);
  }
  return sizes.map((s) => ({ type: t(c.dtype(0), x.map((k, i) => (i === axis ? s : k))) }));
};

/** Length of a sliced dim; null when the dim is symbolic and the slice is not a plain copy. */
function sliceLen(d: Dim, s: number, e: number, step: number): Dim {
  const BIG = 2 ** 52;
  // A symbolic dim survives only a full copy: d - s would be wrong whenever d < s.
  if (!known(d)) return step === 1 && s === 0 && e >= BIG ? d : null;
  if (step > 0) {
    const st = Math.min(Math.max(s < 0 ? s + d : s, 0), d), en = Math.min(Math.max(e < 0 ? e + d : e, 0), d);
    return Math.max(0, Math.ceil((en - st) / step));
  }
  const st = Math.min(Math.max(s < 0 ? s + d : s, 0), d - 1), en = Math.min(Math.max(e < 0 ? e + d : e, -1), d - 1);
  return Math.max(0, Math.ceil((en - st) / step));
}

rules['Slice'] = (c) => {
  const x = c.shape(0);
  if (!x) return [{ type: t(c.dtype(0)) }];
  const attrForm = c.node.hasAttr('starts');
  const starts = attrForm ? c.node.attrInts('starts') : c.ints(1);
  const ends = attrForm ? c.node.attrInts('ends') : c.ints(2);
  const axes = attrForm ? c.node.attrInts('axes', []) : c.has(3) ? c.ints(3) : [];
  const steps = attrForm ? [] : c.has(4) ? c.ints(4) : [];
  if (!starts || !ends || !axes || !steps) {
    // Axes known: only those dims change.
    const out = x.map(() => null as Dim);
    if (axes && axes.length) x.forEach((d, i) => { if (!axes.map((a) => normAxis(a, x.length)).includes(i)) out[i] = d; });
    return [{ type: t(c.dtype(0), out) }];
  }
  const out = [...x];
  const picks: [number, number, number][] = [];
  starts.forEach((s, i) => {
    const ax = normAxis(axes.length ? axes[i]! : i, x.length);
    const step = steps[i] ?? 1;
    out[ax] = sliceLen(x[ax]!, s, ends[i]!, step);
    picks.push([ax, s, step]);
  });
  let value: Dim[] | undefined;
  const v = c.value(0);
  if (v && x.length === 1 && known(out[0])) {
    const d = v.length;
    const [, s0, step] = picks[0] ?? [0, 0, 1];
    const st = step > 0 ? Math.min(Math.max(s0 < 0 ? s0 + d : s0, 0), d) : Math.min(Math.max(s0 < 0 ? s0 + d : s0, 0), d - 1);
    value = Array.from({ length: out[0] }, (_, i) => v[st + i * step] ?? null);
  }
  return [{ type: t(c.dtype(0), out), value }];
};

rules['Gather'] = (c) => {
  const x = c.shape(0), ind = c.shape(1);
  if (!x || !ind) return [{ type: t(c.dtype(0)) }];
  const axis = normAxis(c.node.attrInt('axis', 0), x.length);
  const out = [...x.slice(0, axis), ...ind, ...x.slice(axis + 1)];
  let value: Dim[] | undefined;
  const v = c.value(0), idx = c.ints(1);
  if (v && x.length === 1 && idx && ind.length <= 1) value = idx.map((i) => v[i < 0 ? i + v.length : i] ?? null);
  return [{ type: t(c.dtype(0), out), value }];
};
rules['GatherElements'] = (c) => [{ type: t(c.dtype(0), c.shape(1)) }];

function axesOf(c: RuleCtx): number[] | undefined {
  return ints(c, 1, 'axes');
}

rules['Unsqueeze'] = (c) => {
  const x = c.shape(0), axes = axesOf(c);
  if (!x || !axes) return [{ type: t(c.dtype(0)) }];
  const r = x.length + axes.length;
  const out = [...x];
  for (const a of axes.map((a) => normAxis(a, r)).sort((p, q) => p - q)) out.splice(a, 0, 1);
  const v = c.value(0);
  return [{ type: t(c.dtype(0), out), value: v && r === 1 ? v : undefined }];
};

rules['Squeeze'] = (c) => {
  const x = c.shape(0), axes = axesOf(c);
  if (!x) return [{ type: t(c.dtype(0)) }];
  let drop: Set<number>;
  if (axes) drop = new Set(axes.map((a) => normAxis(a, x.length)));
  else {
    if (x.some((d) => !known(d))) return [{ type: t(c.dtype(0)) }];
    drop = new Set(x.flatMap((d, i) => (d === 1 ? [i] : [])));
  }
  const out = x.filter((_, i) => !drop.has(i));
  const v = c.value(0);
  return [{ type: t(c.dtype(0), out), value: v && out.length === 0 ? v : undefined }];
};

rules['Expand'] = (c) => {
  const x = c.shape(0);
  const shape = c.value(1);
  if (!x) return [{ type: t(c.dtype(0)) }];
  if (!shape) {
    const ss = c.shape(1);
    if (!ss || !known(ss[0])) return [{ type: t(c.dtype(0)) }];
    const r = Math.max(ss[0], x.length);
    return [{ type: t(c.dtype(0), broadcast([x, new Array<Dim>(r).fill(null)])) }];
  }
  return [{ type: t(c.dtype(0), broadcast([x, shape])) }];
};

rules['Tile'] = (c) => {
  const x = c.shape(0), reps = c.value(1);
  if (!x) return [{ type: t(c.dtype(0)) }];
  return [{ type: t(c.dtype(0), x.map((d, i) => (reps ? mul(d, reps[i] ?? null) : null))) }];
};

rules['Pad'] = (c) => {
  const x = c.shape(0);
  if (!x) return [{ type: t(c.dtype(0)) }];
  const pads = c.has(1) ? c.ints(1) : c.node.hasAttr('pads') ? c.node.attrInts('pads') : undefined;
  const axes = c.has(3) ? c.ints(3) : [...x.keys()];
  if (!pads || !axes) return [{ type: t(c.dtype(0), x.map(() => null)) }];
  const out = [...x];
  const n = axes.length;
  axes.forEach((a, i) => {
    const ax = normAxis(a, x.length);
    out[ax] = add(x[ax]!, pads[i]! + pads[i + n]!);
  });
  return [{ type: t(c.dtype(0), out) }];
};

rules['Range'] = (c) => {
  const s = c.value(0), l = c.value(1), d = c.value(2);
  let n: Dim = null;
  if (s && l && d) {
    const [a, b, k] = [s[0]!, l[0]!, d[0]!];
    if (typeof a === 'number' && typeof b === 'number' && typeof k === 'number' && k !== 0) n = Math.max(Math.ceil((b - a) / k), 0);
    else if (k === 1 && typeof b === 'string') {
      // limit - start is the length only when it cannot be negative: no subtraction left over.
      const len = sub(b, a);
      n = typeof len === 'string' && !len.includes('-') ? len : typeof len === 'number' && len >= 0 ? len : null;
    }
  }
  return [{ type: t(c.dtype(0), [n]) }];
};

rules['ConstantOfShape'] = (c) => {
  const shape = c.value(0);
  const v = c.node.attrTensor('value');
  const dtype = v?.dtype ?? DataType.FLOAT;
  if (shape) {
    const len = shape.length === 0 ? 1 : shape[0]!;
    const small = shape.length <= 1 && v && !isFloat(dtype) && known(len) && len <= 64;
    return [{ type: t(dtype, shape), value: small ? new Array<Dim>(len).fill(Number(v.toNumbers()[0])) : undefined }];
  }
  const ss = c.shape(0);
  return [{ type: t(dtype, ss && known(ss[0]) ? new Array<Dim>(ss[0]).fill(null) : undefined) }];
};

rules['Constant'] = (c) => {
  const a = c.node.attributes[0];
  if (!a) return [{}];
  switch (a.name) {
    case 'value':
      if (a.type === AttrType.TENSOR) {
        const tensor = a.value;
        const small = tensor.dtype !== DataType.STRING && !isFloat(tensor.dtype) && tensor.dims.length <= 1 && tensor.size <= 64;
        return [{ type: t(tensor.dtype, [...tensor.dims]), value: small ? Array.from(tensor.toNumbers()) : undefined }];
      }
      break;
    case 'value_float': return [{ type: t(DataType.FLOAT, []) }];
    case 'value_floats': return [{ type: t(DataType.FLOAT, [c.node.attrFloats('value_floats').length]) }];
    case 'value_int': return [{ type: t(DataType.INT64, []), value: [c.node.attrInt('value_int')] }];
    case 'value_ints': return [{ type: t(DataType.INT64, [c.node.attrInts('value_ints').length]), value: c.node.attrInts('value_ints') }];
    case 'value_string': return [{ type: t(DataType.STRING, []) }];
    case 'value_strings': return [{ type: t(DataType.STRING, [a.type === AttrType.STRINGS ? a.value.length : null]) }];
  }
  return [{}];
};

function reduceRule(axesFromInput: (c: RuleCtx) => boolean, outDtype?: DataType): Rule {
  return (c) => {
    const x = c.shape(0);
    const dtype = outDtype ?? c.dtype(0);
    if (!x) return [{ type: t(dtype) }];
    const keep = c.node.attrInt('keepdims', 1) === 1;
    const axes = axesFromInput(c) ? (c.has(1) ? c.ints(1) : []) : c.node.attrInts('axes', []);
    if (!axes) return [{ type: t(dtype, keep ? x.map(() => null) : undefined) }];
    if (!axes.length && c.node.attrInt('noop_with_empty_axes', 0) === 1) return [{ type: t(dtype, x) }];
    const red = new Set(axes.length ? axes.map((a) => normAxis(a, x.length)) : x.keys());
    const out: Out = { type: t(dtype, keep ? x.map((d, i) => (red.has(i) ? 1 : d)) : x.filter((_, i) => !red.has(i))) };
    // Products and sums of shape vectors (numel of a Shape slice) stay symbolic.
    const v = c.value(0);
    const op = c.node.opType;
    if (v && x.length === 1 && (op === 'ReduceProd' || op === 'ReduceSum')) out.value = [op === 'ReduceProd' ? product(v) : v.reduce<Dim>((p, d) => add(p, d), 0)];
    return [out];
  };
}
const inputAxes = (c: RuleCtx) => c.node.inputs.length > 1 || !c.node.hasAttr('axes');
reg(['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum',
  'ReduceLogSumExp', 'ReduceSumSquare'], reduceRule(inputAxes));

function argRule(c: RuleCtx): Out[] {
  const x = c.shape(0);
  if (!x) return [{ type: t(DataType.INT64) }];
  const a = normAxis(c.node.attrInt('axis', 0), x.length);
  const keep = c.node.attrInt('keepdims', 1) === 1;
  return [{ type: t(DataType.INT64, keep ? x.map((d, i) => (i === a ? 1 : d)) : x.filter((_, i) => i !== a)) }];
}
reg(['ArgMax', 'ArgMin'], argRule);

rules['TopK'] = (c) => {
  const x = c.shape(0);
  const k = c.ints(1);
  if (!x) return [{ type: t(c.dtype(0)) }, { type: t(DataType.INT64) }];
  const a = normAxis(c.node.attrInt('axis', -1), x.length);
  const s = x.map((d, i) => (i === a ? (k ? k[0]! : null) : d));
  return [{ type: t(c.dtype(0), s) }, { type: t(DataType.INT64, s) }];
};
rules['NonZero'] = (c) => [{ type: t(DataType.INT64, [c.shape(0)?.length ?? null, null]) }];

rules['Resize'] = (c) => {
  const x = c.shape(0);
  if (!x) return [{ type: t(c.dtype(0)) }];
  const policy = c.node.hasAttr('keep_aspect_ratio_policy') ? c.node.attrString('keep_aspect_ratio_policy') : 'stretch';
  const axes = c.node.attrInts('axes', [...x.keys()]).map((a) => normAxis(a, x.length));
  const sizes = c.has(3) ? c.value(3) : undefined;
  const out = [...x];
  if (sizes && policy === 'stretch') {
    axes.forEach((a, i) => { out[a] = sizes[i] ?? null; });
    return [{ type: t(c.dtype(0), out) }];
  }
  const scalesIn = c.node.input(c.opset >= 11 ? 2 : 1);
  const scales = scalesIn && !scalesIn.isGraphInput ? scalesIn.initializer?.toNumbers() : undefined;
  if (scales && scales.length) {
    axes.forEach((a, i) => {
      const s = scales[i]!, d = x[a]!;
      out[a] = known(d) ? Math.floor(d * s) : Number.isInteger(s) ? mul(d, s) : null;
    });
    return [{ type: t(c.dtype(0), out) }];
  }
  return [{ type: t(c.dtype(0), x.map(() => null)) }];
};

reg(['QuantizeLinear'], (c) => {
  const od = c.node.attrInt('output_dtype', 0);
  return [{ type: t(od ? (od as DataType) : c.has(2) ? c.dtype(2) : DataType.UINT8, c.shape(0)) }];
});
reg(['DequantizeLinear'], (c) => [{ type: t(c.dtype(1), c.shape(0)) }]);

// ---- attention ---------------------------------------------------------------------------------

reg(['MultiHeadAttention'], (c) => {
  const q = c.shape(0), v = c.has(2) ? c.shape(2) : undefined;
  if (!q || q.length !== 3) return [{ type: t(c.dtype(0)) }];
  let hidden: Dim = q[2]!;
  if (v) hidden = v.length === 3 ? v[2]! : v.length === 4 ? mul(v[1]!, v[3]!) : null;
  return [{ type: t(c.dtype(0), [q[0]!, q[1]!, hidden]) }];
}, 'com.microsoft');

reg(['GroupQueryAttention'], (c) => {
  const q = c.shape(0);
  if (!q || q.length !== 3) return [{ type: t(c.dtype(0)) }];
  const nh = c.node.attrInt('num_heads'), kvh = c.node.attrInt('kv_num_heads');
  const packed = !c.has(1);
  const hs = div(q[2]!, packed ? nh + 2 * kvh : nh);
  const present: Dim[] = [q[0]!, kvh, null, hs];
  return [{ type: t(c.dtype(0), [q[0]!, q[1]!, mul(hs, nh)]) }, { type: t(c.dtype(0), present) }, { type: t(c.dtype(0), present) }];
}, 'com.microsoft');

// ---- control flow ------------------------------------------------------------------------------

rules['If'] = (c) => {
  const a = c.node.attr('then_branch'), b = c.node.attr('else_branch');
  if (a?.type !== AttrType.GRAPH || b?.type !== AttrType.GRAPH) return [];
  return a.value.outputs.map((o, i) => {
    const t1 = o.type, t2 = b.value.outputs[i]?.type;
    if (!t1?.elemType || !t2 || t1.elemType !== t2.elemType) return {};
    if (!t1.shape || !t2.shape || t1.shape.length !== t2.shape.length) return { type: { elemType: t1.elemType } };
    return { type: { elemType: t1.elemType, shape: t1.shape.map((d, k) => (d === t2.shape![k] ? d : null)) } };
  });
};

rules['Einsum'] = (c) => {
  const eq = c.node.attrString('equation').replace(/\s/g, '');
  const [lhs, rhs] = eq.split('->');
  const terms = lhs!.split(',');
  if (eq.includes('...') || rhs === undefined) return [{ type: t(c.dtype(0)) }];
  const dims = new Map<string, Dim[]>();
  for (const [i, term] of terms.entries()) {
    const s = c.shape(i);
    if (!s || s.length !== term.length) return [{ type: t(c.dtype(0)) }];
    [...term].forEach((ch, k) => dims.set(ch, [...(dims.get(ch) ?? []), s[k]!]));
  }
  return [{ type: t(c.dtype(0), [...rhs].map((ch) => broadcast((dims.get(ch) ?? [null]).map((d) => [d]))[0]!)) }];
};

// ---- less common ops of the conformance corpus -------------------------------------------------

reg(['ScatterElements', 'ScatterND', 'Scatter', 'ReverseSequence'], same);
reg(['RandomUniformLike', 'RandomNormalLike', 'Bernoulli', 'EyeLike'], (c) => {
  const dt = c.node.hasAttr('dtype') ? (c.node.attrInt('dtype') as DataType) : c.dtype(0);
  return [{ type: t(dt, c.shape(0)) }];
});
rules['Det'] = (c) => [{ type: t(c.dtype(0), c.shape(0)?.slice(0, -2)) }];
rules['NonMaxSuppression'] = () => [{ type: t(DataType.INT64, [null, 3]) }];
rules['Compress'] = (c) => {
  const x = c.shape(0);
  if (!c.node.hasAttr('axis')) return [{ type: t(c.dtype(0), [null]) }];
  if (!x) return [{ type: t(c.dtype(0)) }];
  const a = normAxis(c.node.attrInt('axis'), x.length);
  return [{ type: t(c.dtype(0), x.map((d, i) => (i === a ? null : d))) }];
};

rules['DepthToSpace'] = (c) => {
  const x = c.shape(0), b = c.node.attrInt('blocksize');
  if (!x || x.length !== 4) return [{ type: t(c.dtype(0)) }];
  return [{ type: t(c.dtype(0), [x[0]!, div(x[1]!, b * b), mul(x[2]!, b), mul(x[3]!, b)]) }];
};
rules['SpaceToDepth'] = (c) => {
  const x = c.shape(0), b = c.node.attrInt('blocksize');
  if (!x || x.length !== 4) return [{ type: t(c.dtype(0)) }];
  return [{ type: t(c.dtype(0), [x[0]!, mul(x[1]!, b * b), div(x[2]!, b), div(x[3]!, b)]) }];
};

rules['GatherND'] = (c) => {
  const x = c.shape(0), ind = c.shape(1);
  const bd = c.node.attrInt('batch_dims', 0);
  const last = ind?.[ind.length - 1];
  if (!x || !ind || !known(last)) return [{ type: t(c.dtype(0)) }];
  return [{ type: t(c.dtype(0), [...ind.slice(0, -1), ...x.slice(bd + last)]) }];
};

rules['OneHot'] = (c) => {
  const ind = c.shape(0), depth = c.value(1);
  if (!ind) return [{ type: t(c.dtype(2)) }];
  const r = ind.length + 1;
  const a = normAxis(c.node.attrInt('axis', -1), r);
  const out = [...ind];
  out.splice(a, 0, depth ? depth[0]! : null);
  return [{ type: t(c.dtype(2), out) }];
};

rules['DynamicQuantizeLinear'] = (c) => [{ type: t(DataType.UINT8, c.shape(0)) }, { type: t(DataType.FLOAT, []) }, { type: t(DataType.UINT8, []) }];
rules['QLinearMatMul'] = (c) => [{ type: t(c.dtype(7), matmulShape(c.shape(0), c.shape(3))) }];

rules['ConvTranspose'] = (c) => {
  const x = c.shape(0), w = c.shape(1);
  if (!x || !w || x.length < 3) return [{ type: t(c.dtype(0)) }];
  const n = x.length - 2;
  const group = c.node.attrInt('group', 1);
  const kernel = c.node.hasAttr('kernel_shape') ? c.node.attrInts('kernel_shape') : w.slice(2);
  const chans = mul(w[1]!, group);
  if (c.node.hasAttr('output_shape')) {
    const os = c.node.attrInts('output_shape');
    return [{ type: t(c.dtype(0), [x[0]!, chans, ...os.slice(-n)]) }];
  }
  const strides = c.node.attrInts('strides', new Array(n).fill(1));
  const dil = c.node.attrInts('dilations', new Array(n).fill(1));
  const outPad = c.node.attrInts('output_padding', new Array(n).fill(0));
  const pads = c.node.attrInts('pads', new Array(2 * n).fill(0));
  const autoPad = c.node.hasAttr('auto_pad') ? c.node.attrString('auto_pad') : 'NOTSET';
  const spatial = x.slice(2).map((d, i) => {
    const k = kernel[i];
    if (typeof k !== 'number') return null;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return mul(d, strides[i]!);
    const p = autoPad === 'VALID' ? 0 : pads[i]! + pads[i + n]!;
    return add(mul(sub(d, 1), strides[i]!), outPad[i]! + (k - 1) * dil[i]! + 1 - p);
  });
  return [{ type: t(c.dtype(0), [x[0]!, chans, ...spatial]) }];
};
