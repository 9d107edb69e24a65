// Reference implementations of the ops constant folding meets in exported graphs: shape
// arithmetic (Shape/Gather/Slice/Concat/Reshape...), elementwise math with broadcasting,
// casts, ranges and small reductions. Each op follows the ONNX spec of its latest opset and the
// older attribute forms where exporters still write them.
import { AttrType, DataType, Node, Tensor, numElements, isFloat } from '../../ir/index.js';
import { Unsupported, broadcastShapes, broadcastTo, make, nums, normAxis, registerEvaluator, strides } from './index.js';

const isInt = (t: DataType) => !isFloat(t) && t !== DataType.BOOL;

function need(t: Tensor | null | undefined, what: string): Tensor {
  if (!t) throw new Unsupported(`missing ${what}`);
  return t;
}

/** Integer list from an input tensor or an ints attribute (older opsets). */
function intsFrom(node: Node, inputs: (Tensor | null)[], idx: number, attr: string): number[] | undefined {
  const t = inputs[idx];
  if (t) return Array.from(nums(t));
  if (node.hasAttr(attr)) return node.attrInts(attr);
  return undefined;
}

// ---- elementwise ------------------------------------------------------------------------------

function binary(op: string, fn: (a: number, b: number, dtype: DataType) => number, outBool = false) {
  registerEvaluator(op, (node, inputs) => {
    const a = need(inputs[0], 'A'),
      b = need(inputs[1], 'B');
    const out = broadcastShapes(a.dims, b.dims);
    const x = broadcastTo(nums(a), a.dims, out),
      y = broadcastTo(nums(b), b.dims, out);
    const r = new Float64Array(numElements(out));
    for (let i = 0; i < r.length; i++) r[i] = fn(x[i]!, y[i]!, a.dtype);
    return [make(outBool ? DataType.BOOL : a.dtype, out, r)];
  });
}

const truncDiv = (a: number, b: number, t: DataType) => {
  if (!isInt(t)) return a / b;
  if (b === 0) throw new Unsupported('integer division by zero');
  return Math.trunc(a / b);
};

binary('Add', (a, b) => a + b);
binary('Sub', (a, b) => a - b);
binary('Mul', (a, b) => a * b);
binary('Div', truncDiv);
binary('Equal', (a, b) => (a === b ? 1 : 0), true);
binary('Less', (a, b) => (a < b ? 1 : 0), true);
binary('Greater', (a, b) => (a > b ? 1 : 0), true);
binary('LessOrEqual', (a, b) => (a <= b ? 1 : 0), true);
binary('GreaterOrEqual', (a, b) => (a >= b ? 1 : 0), true);
binary('And', (a, b) => (a && b ? 1 : 0), true);
binary('Or', (a, b) => (a || b ? 1 : 0), true);
binary('Xor', (a, b) => (!!a !== !!b ? 1 : 0), true);

registerEvaluator('Pow', (_node, inputs) => {
  const a = need(inputs[0], 'X'),
    b = need(inputs[1], 'Y');
  const out = broadcastShapes(a.dims, b.dims);
  const x = broadcastTo(nums(a), a.dims, out),
    y = broadcastTo(nums(b), b.dims, out);
  const r = new Float64Array(x.length);
  for (let i = 0; i < r.length; i++) r[i] = Math.pow(x[i]!, y[i]!);
  return [make(a.dtype, out, r)];
});

registerEvaluator('Mod', (node, inputs) => {
  const a = need(inputs[0], 'A'),
    b = need(inputs[1], 'B');
  const fmod = node.attrInt('fmod', 0) === 1;
  const out = broadcastShapes(a.dims, b.dims);
  const x = broadcastTo(nums(a), a.dims, out),
    y = broadcastTo(nums(b), b.dims, out);
  const r = new Float64Array(x.length);
  for (let i = 0; i < r.length; i++) {
    if (!fmod && isInt(a.dtype)) {
      if (y[i] === 0) throw new Unsupported('integer modulo by zero');
      const m = x[i]! % y[i]!;
      r[i] = m !== 0 && m < 0 !== y[i]! < 0 ? m + y[i]! : m;
    } else r[i] = x[i]! % y[i]!;
  }
  return [make(a.dtype, out, r)];
});

function variadic(op: string, fn: (acc: number, v: number) => number, finish?: (v: number, n: number) => number) {
  registerEvaluator(op, (_node, inputs) => {
    const ts = inputs.filter((t): t is Tensor => !!t);
    if (!ts.length) throw new Unsupported('no inputs');
    const out = broadcastShapes(...ts.map((t) => t.dims));
    const r = Float64Array.from(broadcastTo(nums(ts[0]!), ts[0]!.dims, out));
    for (const t of ts.slice(1)) {
      const v = broadcastTo(nums(t), t.dims, out);
      for (let i = 0; i < r.length; i++) r[i] = fn(r[i]!, v[i]!);
    }
    if (finish) for (let i = 0; i < r.length; i++) r[i] = finish(r[i]!, ts.length);
    return [make(ts[0]!.dtype, out, r)];
  });
}

const nanMin = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b));
const nanMax = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b));
variadic('Min', nanMin);
variadic('Max', nanMax);
variadic('Sum', (a, b) => a + b);
variadic(
  'Mean',
  (a, b) => a + b,
  (v, n) => v / n,
);

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; use the series / continued fraction split.
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let sum = x,
      term = x;
    const x2 = x * x;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz) for the tail.
  let f = ax,
    c = ax,
    d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? 1e-300 : 1 / d;
    c = ax + an / c;
    if (c === 0) c = 1e-300;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  return x < 0 ? erfc - 1 : 1 - erfc;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function unary(op: string, fn: (x: number) => number, outDtype?: DataType) {
  registerEvaluator(op, (_node, inputs) => {
    const a = need(inputs[0], 'X');
    const x = nums(a);
    const r = new Float64Array(x.length);
    for (let i = 0; i < r.length; i++) r[i] = fn(x[i]!);
    return [make(outDtype ?? a.dtype, [...a.dims], r)];
  });
}

unary('Neg', (x) => -x);
unary('Abs', Math.abs);
unary('Sqrt', Math.sqrt);
unary('Reciprocal', (x) => 1 / x);
unary('Exp', Math.exp);
unary('Log', Math.log);
unary('Floor', Math.floor);
unary('Ceil', Math.ceil);
unary('Round', roundHalfEven);
unary('Relu', (x) => Math.max(x, 0));
unary('Sigmoid', (x) => 1 / (1 + Math.exp(-x)));
unary('Tanh', Math.tanh);
unary('Erf', erf);
unary('Sign', Math.sign);
unary('Sin', Math.sin);
unary('Cos', Math.cos);
unary('Not', (x) => (x ? 0 : 1), DataType.BOOL);
registerEvaluator('Identity', (_n, inputs) => [need(inputs[0], 'input').clone('')]);

registerEvaluator('Where', (_node, inputs) => {
  const c = need(inputs[0], 'condition'),
    a = need(inputs[1], 'X'),
    b = need(inputs[2], 'Y');
  const out = broadcastShapes(c.dims, a.dims, b.dims);
  const cv = broadcastTo(nums(c), c.dims, out),
    x = broadcastTo(nums(a), a.dims, out),
    y = broadcastTo(nums(b), b.dims, out);
  const r = new Float64Array(cv.length);
  for (let i = 0; i < r.length; i++) r[i] = cv[i] ? x[i]! : y[i]!;
  return [make(a.dtype, out, r)];
});

registerEvaluator('Clip', (node, inputs) => {
  const a = need(inputs[0], 'input');
  const lo = inputs[1] ? nums(inputs[1])[0]! : node.attrFloat('min', -Infinity);
  const hi = inputs[2] ? nums(inputs[2])[0]! : node.attrFloat('max', Infinity);
  const x = nums(a);
  return [
    make(
      a.dtype,
      [...a.dims],
      x.map((v) => Math.min(Math.max(v, lo), hi)),
    ),
  ];
});

// ---- casts and constants ----------------------------------------------------------------------

const INT_LIMITS: Partial<Record<DataType, [number, number]>> = {
  [DataType.INT8]: [-128, 127],
  [DataType.UINT8]: [0, 255],
  [DataType.INT16]: [-32768, 32767],
  [DataType.UINT16]: [0, 65535],
  [DataType.INT32]: [-2147483648, 2147483647],
  [DataType.UINT32]: [0, 4294967295],
  [DataType.INT64]: [-(2 ** 63), 2 ** 63 - 1],
  [DataType.UINT64]: [0, 2 ** 64 - 1],
};

function castValues(x: Float64Array, to: DataType): Float64Array {
  if (to === DataType.BOOL) return x.map((v) => (v !== 0 ? 1 : 0));
  if (isInt(to)) {
    // Out-of-range float -> int casts are undefined behaviour in the runtimes: leave them to run.
    const [lo, hi] = INT_LIMITS[to] ?? [-Infinity, Infinity];
    for (const v of x)
      if (!Number.isFinite(v) || Math.trunc(v) < lo || Math.trunc(v) > hi)
        throw new Unsupported('cast of an out-of-range value to an integer type');
    return x.map(Math.trunc);
  }
  return x;
}

registerEvaluator('Cast', (node, inputs) => {
  const a = need(inputs[0], 'input');
  const to = node.attrInt('to') as DataType;
  if (node.attrInt('saturate', 1) !== 1) throw new Unsupported('saturate=0');
  return [make(to, [...a.dims], castValues(nums(a), to))];
});

registerEvaluator('CastLike', (_node, inputs) => {
  const a = need(inputs[0], 'input'),
    like = need(inputs[1], 'target_type');
  return [make(like.dtype, [...a.dims], castValues(nums(a), like.dtype))];
});

registerEvaluator('Constant', (node) => {
  const a = node.attributes[0];
  if (!a || node.attributes.length !== 1) throw new Unsupported('Constant needs exactly one attribute');
  switch (a.name) {
    case 'value':
      if (a.type !== AttrType.TENSOR) break;
      if (a.value.dtype === DataType.STRING) throw new Unsupported('string constant');
      return [a.value.clone('')];
    case 'value_float':
      return [make(DataType.FLOAT, [], [node.attrFloat('value_float')])];
    case 'value_floats':
      return [make(DataType.FLOAT, [node.attrFloats('value_floats').length], node.attrFloats('value_floats'))];
    case 'value_int':
      return [make(DataType.INT64, [], [node.attrInt('value_int')])];
    case 'value_ints': {
      const a2 = node.attr('value_ints');
      const vals = a2 && a2.type === AttrType.INTS ? a2.value : [];
      return [Tensor.fromInt64('', [vals.length], vals)];
    }
  }
  throw new Unsupported(`Constant attribute '${a.name}'`);
});

registerEvaluator('ConstantOfShape', (node, inputs) => {
  const shape = Array.from(nums(need(inputs[0], 'shape')));
  const v = node.attrTensor('value');
  const dtype = v?.dtype ?? DataType.FLOAT;
  const fill = v ? nums(v)[0]! : 0;
  return [make(dtype, shape, new Float64Array(numElements(shape)).fill(fill))];
});

registerEvaluator('Range', (_node, inputs) => {
  const s = need(inputs[0], 'start'),
    l = need(inputs[1], 'limit'),
    d = need(inputs[2], 'delta');
  const start = nums(s)[0]!,
    limit = nums(l)[0]!,
    delta = nums(d)[0]!;
  if (delta === 0) throw new Unsupported('Range delta 0');
  const n = Math.max(Math.ceil((limit - start) / delta), 0);
  const r = new Float64Array(n);
  for (let i = 0; i < n; i++) r[i] = start + i * delta;
  return [make(s.dtype, [n], r)];
});

// ---- shape ops ---------------------------------------------------------------------------------

registerEvaluator('Shape', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const r = a.dims.length;
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const start = clamp(node.attrInt('start', 0)),
    end = clamp(node.attrInt('end', r));
  const dims = a.dims.slice(start, Math.max(start, end));
  return [Tensor.fromInt64('', [dims.length], dims)];
});

registerEvaluator('Size', (_node, inputs) => [Tensor.fromInt64('', [], [need(inputs[0], 'data').size])]);

/** Copy with a new shape (same element order). */
function reshaped(a: Tensor, dims: number[]): Tensor {
  if (numElements(dims) !== a.size) throw new Unsupported(`cannot reshape [${a.dims}] to [${dims}]`);
  const t = new Tensor('', a.dtype, dims, a.data);
  return t;
}

registerEvaluator('Reshape', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const shape = intsFrom(node, inputs, 1, 'shape');
  if (!shape) throw new Unsupported('no shape');
  const allowzero = node.attrInt('allowzero', 0) === 1;
  const out = shape.map((d, i) => (d === 0 && !allowzero ? a.dims[i]! : d));
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const known = out.reduce((p, d, i) => (i === neg ? p : p * d), 1);
    if (known === 0) throw new Unsupported('Reshape -1 with a zero dim');
    out[neg] = a.size / known;
  }
  return [reshaped(a, out)];
});

registerEvaluator('Flatten', (node, inputs) => {
  const a = need(inputs[0], 'input');
  const axis = node.attrInt('axis', 1);
  const ax = axis < 0 ? axis + a.dims.length : axis;
  const lead = numElements(a.dims.slice(0, ax));
  return [reshaped(a, [lead, numElements(a.dims.slice(ax))])];
});

registerEvaluator('Unsqueeze', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const axes = intsFrom(node, inputs, 1, 'axes');
  if (!axes) throw new Unsupported('no axes');
  const rank = a.dims.length + axes.length;
  const norm = axes.map((x) => normAxis(x, rank)).sort((x, y) => x - y);
  const out = [...a.dims];
  for (const ax of norm) out.splice(ax, 0, 1);
  return [reshaped(a, out)];
});

registerEvaluator('Squeeze', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const axes = intsFrom(node, inputs, 1, 'axes');
  const drop = new Set(axes ? axes.map((x) => normAxis(x, a.dims.length)) : a.dims.flatMap((d, i) => (d === 1 ? [i] : [])));
  for (const ax of drop) if (a.dims[ax] !== 1) throw new Unsupported(`Squeeze of dim ${ax} (size ${a.dims[ax]})`);
  return [
    reshaped(
      a,
      a.dims.filter((_, i) => !drop.has(i)),
    ),
  ];
});

/** Gather elements of `a` by computing each output's flat source index. */
function gatherBy(a: Tensor, out: number[], src: (idx: number[]) => number): Tensor {
  const x = nums(a);
  const n = numElements(out);
  const r = new Float64Array(n);
  const os = strides(out);
  const idx = new Array<number>(out.length).fill(0);
  for (let i = 0; i < n; i++) {
    let rem = i;
    for (let k = 0; k < out.length; k++) {
      idx[k] = Math.floor(rem / os[k]!);
      rem -= idx[k]! * os[k]!;
    }
    r[i] = x[src(idx)]!;
  }
  return make(a.dtype, out, r);
}

registerEvaluator('Transpose', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const rank = a.dims.length;
  const perm = node.attrInts('perm', [...Array(rank).keys()].reverse());
  const s = strides(a.dims);
  const out = perm.map((p) => a.dims[p]!);
  return [gatherBy(a, out, (idx) => idx.reduce((off, c, k) => off + c * s[perm[k]!]!, 0))];
});

registerEvaluator('Gather', (node, inputs) => {
  const a = need(inputs[0], 'data'),
    ind = need(inputs[1], 'indices');
  const axis = normAxis(node.attrInt('axis', 0), a.dims.length);
  const iv = nums(ind);
  const dimA = a.dims[axis]!;
  for (const v of iv) if (v < -dimA || v >= dimA) throw new Unsupported(`Gather index ${v} out of range`);
  const out = [...a.dims.slice(0, axis), ...ind.dims, ...a.dims.slice(axis + 1)];
  const s = strides(a.dims),
    is = strides(ind.dims);
  const q = ind.dims.length;
  return [
    gatherBy(a, out, (idx) => {
      let off = 0;
      for (let k = 0; k < axis; k++) off += idx[k]! * s[k]!;
      let flat = 0;
      for (let k = 0; k < q; k++) flat += idx[axis + k]! * is[k]!;
      let g = iv[flat]!;
      if (g < 0) g += dimA;
      off += g * s[axis]!;
      for (let k = axis + 1; k < a.dims.length; k++) off += idx[k + q - 1]! * s[k]!;
      return off;
    }),
  ];
});

registerEvaluator('Slice', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const rank = a.dims.length;
  const attrForm = node.hasAttr('starts');
  const starts = attrForm ? node.attrInts('starts') : Array.from(nums(need(inputs[1], 'starts')));
  const ends = attrForm ? node.attrInts('ends') : Array.from(nums(need(inputs[2], 'ends')));
  const axes = attrForm ? node.attrInts('axes', []) : inputs[3] ? Array.from(nums(inputs[3])) : [];
  const steps = attrForm ? [] : inputs[4] ? Array.from(nums(inputs[4])) : [];
  const st = new Array<number>(rank).fill(0),
    step = new Array<number>(rank).fill(1),
    out = [...a.dims];
  starts.forEach((s0, i) => {
    const ax = normAxis(axes.length ? axes[i]! : i, rank);
    const d = a.dims[ax]!;
    const k = steps[i] ?? 1;
    if (k === 0) throw new Unsupported('Slice step 0');
    let s = s0 < 0 ? s0 + d : s0,
      e = ends[i]! < 0 ? ends[i]! + d : ends[i]!;
    if (k > 0) {
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
      out[ax] = Math.max(0, Math.ceil((e - s) / k));
    } else {
      s = Math.min(Math.max(s, 0), d - 1);
      e = Math.min(Math.max(e, -1), d - 1);
      out[ax] = Math.max(0, Math.ceil((e - s) / k));
    }
    st[ax] = s;
    step[ax] = k;
  });
  const s = strides(a.dims);
  return [gatherBy(a, out, (idx) => idx.reduce((off, c, k) => off + (st[k]! + c * step[k]!) * s[k]!, 0))];
});

registerEvaluator('Concat', (node, inputs) => {
  const ts = inputs.filter((t): t is Tensor => !!t);
  if (!ts.length) throw new Unsupported('no inputs');
  const rank = ts[0]!.dims.length;
  const axis = normAxis(node.attrInt('axis'), rank);
  const out = [...ts[0]!.dims];
  out[axis] = ts.reduce((s, t) => s + t.dims[axis]!, 0);
  const outer = numElements(out.slice(0, axis)),
    inner = numElements(out.slice(axis + 1));
  const r = new Float64Array(numElements(out));
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const t of ts) {
      const x = nums(t);
      const len = t.dims[axis]! * inner;
      r.set(x.subarray(o * len, (o + 1) * len), at);
      at += len;
    }
  }
  return [make(ts[0]!.dtype, out, r)];
});

registerEvaluator('Expand', (_node, inputs) => {
  const a = need(inputs[0], 'input');
  const shape = Array.from(nums(need(inputs[1], 'shape')));
  const out = broadcastShapes(a.dims, shape);
  return [make(a.dtype, out, broadcastTo(nums(a), a.dims, out))];
});

registerEvaluator('Tile', (_node, inputs) => {
  const a = need(inputs[0], 'input');
  const reps = Array.from(nums(need(inputs[1], 'repeats')));
  const out = a.dims.map((d, i) => d * reps[i]!);
  const s = strides(a.dims);
  return [gatherBy(a, out, (idx) => idx.reduce((off, c, k) => off + (c % a.dims[k]!) * s[k]!, 0))];
});

// ---- reductions -------------------------------------------------------------------------------

function reduce(op: string, init: number, fn: (acc: number, v: number) => number, finish?: (acc: number, n: number) => number) {
  registerEvaluator(op, (node, inputs) => {
    const a = need(inputs[0], 'data');
    const rank = a.dims.length;
    const axesList = intsFrom(node, inputs, 1, 'axes');
    const keep = node.attrInt('keepdims', 1) === 1;
    let axes: number[];
    if (!axesList || !axesList.length) {
      if (node.attrInt('noop_with_empty_axes', 0) === 1) return [a.clone('')];
      axes = [...Array(rank).keys()];
    } else axes = axesList.map((x) => normAxis(x, rank));
    const red = new Set(axes);
    const keptDims = a.dims.map((d, i) => (red.has(i) ? 1 : d));
    const n = numElements(keptDims);
    const acc = new Float64Array(n).fill(init);
    const count = numElements(a.dims.filter((_, i) => red.has(i)));
    const x = nums(a);
    const s = strides(a.dims),
      ks = strides(keptDims);
    for (let i = 0; i < x.length; i++) {
      let rem = i,
        off = 0;
      for (let k = 0; k < rank; k++) {
        const c = Math.floor(rem / s[k]!);
        rem -= c * s[k]!;
        if (!red.has(k)) off += c * ks[k]!;
      }
      acc[off] = fn(acc[off]!, x[i]!);
    }
    if (finish) for (let i = 0; i < n; i++) acc[i] = finish(acc[i]!, count);
    const out = keep ? keptDims : a.dims.filter((_, i) => !red.has(i));
    return [make(a.dtype, out, acc)];
  });
}

reduce('ReduceSum', 0, (a, v) => a + v);
reduce('ReduceProd', 1, (a, v) => a * v);
reduce(
  'ReduceMean',
  0,
  (a, v) => a + v,
  (a, n) => a / n,
);
reduce('ReduceMax', -Infinity, nanMax);
reduce('ReduceMin', Infinity, nanMin);

// ---- masks, splits and padding (causal masks and static-shape leftovers) -----------------------

registerEvaluator('Trilu', (node, inputs) => {
  const a = need(inputs[0], 'input');
  const k = inputs[1] ? nums(inputs[1])[0]! : 0;
  const upper = node.attrInt('upper', 1) === 1;
  const r = a.dims.length;
  if (r < 2) throw new Unsupported('Trilu needs rank >= 2');
  const rows = a.dims[r - 2]!,
    cols = a.dims[r - 1]!;
  const x = nums(a);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = i % cols,
      row = Math.floor(i / cols) % rows;
    out[i] = (upper ? c - row >= k : c - row <= k) ? x[i]! : 0;
  }
  return [make(a.dtype, [...a.dims], out)];
});

registerEvaluator('Split', (node, inputs) => {
  const a = need(inputs[0], 'input');
  const axis = normAxis(node.attrInt('axis', 0), a.dims.length);
  const d = a.dims[axis]!;
  const n = node.outputs.length;
  let sizes = intsFrom(node, inputs, 1, 'split');
  if (!sizes) {
    const chunk = Math.ceil(d / n);
    sizes = Array.from({ length: n }, (_, i) => Math.max(0, Math.min(chunk, d - chunk * i)));
  }
  if (sizes.reduce((s, v) => s + v, 0) !== d) throw new Unsupported('Split sizes do not add up');
  const st = strides(a.dims);
  let at = 0;
  return sizes.map((len) => {
    const start = at;
    at += len;
    const out = a.dims.map((x, i) => (i === axis ? len : x));
    return gatherBy(a, out, (idx) => idx.reduce((off, c, k) => off + (k === axis ? c + start : c) * st[k]!, 0));
  });
});

registerEvaluator('Pad', (node, inputs) => {
  const a = need(inputs[0], 'data');
  const mode = node.hasAttr('mode') ? node.attrString('mode') : 'constant';
  if (mode !== 'constant') throw new Unsupported(`Pad mode ${mode}`);
  const rank = a.dims.length;
  const pads = intsFrom(node, inputs, 1, 'pads');
  if (!pads) throw new Unsupported('no pads');
  const fill = inputs[2] ? nums(inputs[2])[0]! : node.attrFloat('value', 0);
  const axes = inputs[3] ? Array.from(nums(inputs[3])).map((x) => normAxis(x, rank)) : [...Array(rank).keys()];
  const before = new Array<number>(rank).fill(0),
    after = new Array<number>(rank).fill(0);
  axes.forEach((ax, i) => {
    before[ax] = pads[i]!;
    after[ax] = pads[i + axes.length]!;
  });
  const out = a.dims.map((d, i) => d + before[i]! + after[i]!);
  if (out.some((d) => d < 0)) throw new Unsupported('Pad removes more than the dim');
  const x = nums(a),
    s = strides(a.dims),
    os = strides(out);
  const r = new Float64Array(numElements(out)).fill(fill);
  for (let i = 0; i < r.length; i++) {
    let off = 0,
      inside = true,
      rem = i;
    for (let k = 0; k < rank; k++) {
      const c = Math.floor(rem / os[k]!) - before[k]!;
      rem %= os[k]!;
      if (c < 0 || c >= a.dims[k]!) {
        inside = false;
        break;
      }
      off += c * s[k]!;
    }
    if (inside) r[i] = x[off]!;
  }
  return [make(a.dtype, out, r)];
});
