// Our own constant evaluator: an op table that fold-constants consults. Other files add ops with
// registerEvaluator (e.g. eval/resize.ts). Values are computed in float64 and encoded back to
// the output dtype, which rounds exactly as the dtype's storage does.
import { DataType, Node, Tensor, decodeToNumbers, encodeFromNumbers, numElements, isFloat } from '../../ir/index.js';

export type Evaluator = (node: Node, inputs: (Tensor | null)[]) => Tensor[];

export const evaluators: Record<string, Evaluator> = {};

/** Key: `opType` for the ONNX domain, `domain::opType` otherwise. */
export function registerEvaluator(opType: string, fn: Evaluator, domain = ''): void {
  evaluators[domain && domain !== 'ai.onnx' ? `${domain}::${opType}` : opType] = fn;
}

export function getEvaluator(node: Node): Evaluator | undefined {
  const d = node.domain === 'ai.onnx' ? '' : node.domain;
  return evaluators[d ? `${d}::${node.opType}` : node.opType];
}

/** Thrown when an evaluator meets a case it does not implement; folding skips the node. */
export class Unsupported extends Error {}

const NUMERIC = new Set<DataType>([
  DataType.FLOAT,
  DataType.DOUBLE,
  DataType.FLOAT16,
  DataType.BFLOAT16,
  DataType.INT8,
  DataType.UINT8,
  DataType.INT16,
  DataType.UINT16,
  DataType.INT32,
  DataType.UINT32,
  DataType.INT64,
  DataType.UINT64,
  DataType.BOOL,
]);

export function supportedDtype(t: DataType): boolean {
  return NUMERIC.has(t);
}

/** Numbers of a tensor; int64 beyond 2^53 keeps its sign and magnitude approximately (clamps stay clamps). */
export function nums(t: Tensor): Float64Array {
  if (!NUMERIC.has(t.dtype)) throw new Unsupported(`dtype ${t.dtype}`);
  return decodeToNumbers(t.dtype, t.bytes(), t.size);
}

const INT_RANGE: Partial<Record<DataType, [number, number]>> = {
  // As doubles: int64's max and uint64's max round to 2^63 and 2^64.
  [DataType.INT64]: [-(2 ** 63), 2 ** 63],
  [DataType.UINT64]: [0, 2 ** 64],
};

/** Encode numbers as dtype. int64 saturates at its range (INT64_MAX survives a round trip). */
export function make(dtype: DataType, dims: number[], values: ArrayLike<number>, name = ''): Tensor {
  if (!NUMERIC.has(dtype)) throw new Unsupported(`dtype ${dtype}`);
  const r = INT_RANGE[dtype];
  if (r) {
    const n = values.length;
    const big = dtype === DataType.INT64 ? new BigInt64Array(n) : new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      big[i] =
        v >= r[1]
          ? dtype === DataType.INT64
            ? 9223372036854775807n
            : 18446744073709551615n
          : v <= r[0]
            ? BigInt(r[0])
            : BigInt(Math.trunc(v));
    }
    return Tensor.fromBytes(name, dtype, dims, new Uint8Array(big.buffer));
  }
  if (dtype === DataType.BOOL)
    return Tensor.fromNumbers(
      name,
      dtype,
      dims,
      Array.from(values, (v) => (v ? 1 : 0)),
    );
  if (!isFloat(dtype)) {
    // Integer storage wraps like C casts; truncate first so 2.7 -> 2.
    return Tensor.fromNumbers(
      name,
      dtype,
      dims,
      Array.from(values, (v) => Math.trunc(v)),
    );
  }
  return Tensor.fromBytes(name, dtype, dims, encodeFromNumbers(dtype, values));
}

export function strides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i]!;
  }
  return s;
}

export function broadcastShapes(...shapes: number[][]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) throw new Unsupported(`shapes [${shapes.join('] [')}] do not broadcast`);
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** Read `src` (shape `dims`) broadcast to `out` shape. */
export function broadcastTo(src: Float64Array, dims: number[], out: number[]): Float64Array {
  const n = numElements(out);
  if (dims.length === out.length && dims.every((d, i) => d === out[i])) return src;
  const res = new Float64Array(n);
  const os = strides(out);
  const padded = [...new Array(out.length - dims.length).fill(1), ...dims];
  const ss = strides(padded);
  for (let i = 0; i < n; i++) {
    let off = 0,
      rem = i;
    for (let k = 0; k < out.length; k++) {
      const c = Math.floor(rem / os[k]!);
      rem -= c * os[k]!;
      if (padded[k] !== 1) off += c * ss[k]!;
    }
    res[i] = src[off]!;
  }
  return res;
}

export function normAxis(a: number, rank: number): number {
  const r = a < 0 ? a + rank : a;
  if (r < 0 || r > Math.max(rank - 1, 0)) throw new Unsupported(`axis ${a} out of range for rank ${rank}`);
  return r;
}
