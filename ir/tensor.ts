// Tensor: dtype, dims and a data source that stays lazy (a view of the model bytes, a range of an
// external file, or the typed fields exactly as the file stored them, re-saved as they were).
import {
  DataType,
  byteLength as dtypeByteLength,
  decodeToNumbers,
  dtypeName,
  encodeFromNumbers,
  f16ToF32,
  bf16ToF32,
  numElements,
} from './dtype.js';
import { ExternalRef, forEachChunk, readRange } from './external-data.js';

export type TypedField = 'float_data' | 'int32_data' | 'int64_data' | 'double_data' | 'uint64_data';

export type TensorData =
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'external'; ref: ExternalRef }
  | { kind: 'typed'; field: TypedField; values: unknown[] }
  | { kind: 'strings'; values: Uint8Array[] };

/** Fields of TensorProto the IR does not interpret, kept for a faithful re-save. */
export interface TensorExtras {
  docString?: string;
  metadataProps?: { key: string; value: string }[];
  segment?: { begin?: unknown; end?: unknown };
}

export class Tensor {
  extras: TensorExtras = {};

  constructor(
    public name: string,
    public dtype: DataType,
    public dims: number[],
    public data: TensorData,
  ) {}

  static fromBytes(name: string, dtype: DataType, dims: number[], bytes: Uint8Array): Tensor {
    const need = dtypeByteLength(dtype, numElements(dims));
    if (bytes.length !== need) throw new Error(`tensor '${name}': ${bytes.length} bytes given, ${dtypeName(dtype)}[${dims}] needs ${need}`);
    return new Tensor(name, dtype, dims, { kind: 'raw', bytes });
  }

  static fromFloat32(name: string, dims: number[], values: Float32Array): Tensor {
    return Tensor.fromBytes(name, DataType.FLOAT, dims, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }

  static fromNumbers(name: string, dtype: DataType, dims: number[], values: ArrayLike<number>): Tensor {
    return Tensor.fromBytes(name, dtype, dims, encodeFromNumbers(dtype, values));
  }

  static fromInt64(name: string, dims: number[], values: ArrayLike<number | bigint>): Tensor {
    const b = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) b[i] = BigInt(values[i]!);
    return Tensor.fromBytes(name, DataType.INT64, dims, new Uint8Array(b.buffer));
  }

  get size(): number {
    return numElements(this.dims);
  }

  /** Bytes of packed little-endian storage (0 for strings). */
  get byteLength(): number {
    if (this.dtype === DataType.STRING) return 0;
    return dtypeByteLength(this.dtype, this.size);
  }

  /** Stored as external data (not raw_data the loader left in the model file). */
  get isExternal(): boolean {
    return this.data.kind === 'external' && !this.data.ref.embedded;
  }

  /** Packed little-endian bytes. External data is read from its file range now. */
  bytes(): Uint8Array {
    const d = this.data;
    switch (d.kind) {
      case 'raw':
        return d.bytes;
      case 'external':
        return readRange(d.ref.file, d.ref.offset, this.byteLength || d.ref.length);
      case 'typed':
        return typedToRaw(this.dtype, d.field, d.values, this.size);
      case 'strings':
        throw new Error(`tensor '${this.name}' holds strings, not bytes`);
    }
  }

  /** Visit the packed bytes in chunks without materialising the tensor (external data). */
  forEachChunk(chunkSize: number, fn: (chunk: Uint8Array, at: number) => void, scratch?: Uint8Array): void {
    const d = this.data;
    if (d.kind === 'external') {
      forEachChunk(d.ref.file, d.ref.offset, this.byteLength, chunkSize, fn, scratch);
      return;
    }
    const all = this.bytes();
    for (let at = 0; at < all.length; at += chunkSize) fn(all.subarray(at, Math.min(all.length, at + chunkSize)), at);
  }

  /** Values as float32 (float types only); copies so the result is aligned and owned. */
  toFloat32(): Float32Array {
    const raw = this.bytes();
    const n = this.size;
    if (this.dtype === DataType.FLOAT) {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(raw.subarray(0, n * 4));
      return out;
    }
    if (this.dtype === DataType.FLOAT16 || this.dtype === DataType.BFLOAT16) {
      const out = new Float32Array(n);
      const conv = this.dtype === DataType.FLOAT16 ? f16ToF32 : bf16ToF32;
      for (let i = 0; i < n; i++) out[i] = conv(raw[2 * i]! | (raw[2 * i + 1]! << 8));
      return out;
    }
    return Float32Array.from(decodeToNumbers(this.dtype, raw, n));
  }

  /** Values as numbers (int64 beyond 2^53 loses precision; use toBigInt64 there). */
  toNumbers(): Float64Array {
    return decodeToNumbers(this.dtype, this.bytes(), this.size);
  }

  toBigInt64(): BigInt64Array {
    if (this.dtype !== DataType.INT64) return BigInt64Array.from(this.toNumbers(), (v) => BigInt(v));
    const raw = this.bytes();
    const out = new BigInt64Array(this.size);
    new Uint8Array(out.buffer).set(raw.subarray(0, this.size * 8));
    return out;
  }

  strings(): string[] {
    if (this.data.kind !== 'strings') throw new Error(`tensor '${this.name}' is not a string tensor`);
    return this.data.values.map((b) => Buffer.from(b).toString('utf8'));
  }

  clone(name = this.name): Tensor {
    const t = new Tensor(name, this.dtype, [...this.dims], this.data);
    t.extras = { ...this.extras };
    return t;
  }
}

function longToBigInt(v: unknown, unsigned: boolean): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'string') return BigInt(v);
  const l = v as { low: number; high: number };
  const big = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
  return unsigned ? big : BigInt.asIntN(64, big);
}

/** Convert ONNX typed storage fields to packed little-endian bytes, per the onnx.proto rules. */
export function typedToRaw(dtype: DataType, field: TypedField, values: unknown[], count: number): Uint8Array {
  const nums = values as number[];
  switch (field) {
    case 'float_data': {
      const f = Float32Array.from(nums);
      return new Uint8Array(f.buffer);
    }
    case 'double_data': {
      const f = Float64Array.from(nums);
      return new Uint8Array(f.buffer);
    }
    case 'int64_data': {
      const b = BigInt64Array.from(values, (v) => longToBigInt(v, false));
      return new Uint8Array(b.buffer);
    }
    case 'uint64_data': {
      if (dtype === DataType.UINT32) return new Uint8Array(Uint32Array.from(values, (v) => Number(longToBigInt(v, true))).buffer);
      const b = BigUint64Array.from(values, (v) => longToBigInt(v, true));
      return new Uint8Array(b.buffer);
    }
    case 'int32_data': {
      switch (dtype) {
        case DataType.INT32:
          return new Uint8Array(Int32Array.from(nums).buffer);
        case DataType.INT16:
          return new Uint8Array(Int16Array.from(nums).buffer);
        case DataType.UINT16:
        case DataType.FLOAT16:
        case DataType.BFLOAT16:
          return new Uint8Array(Uint16Array.from(nums).buffer);
        case DataType.INT4:
        case DataType.UINT4:
        case DataType.INT2:
        case DataType.UINT2: {
          // Each int32 carries one byte of packed sub-byte elements.
          const out = new Uint8Array(dtypeByteLength(dtype, count));
          for (let i = 0; i < out.length && i < nums.length; i++) out[i] = nums[i]! & 0xff;
          return out;
        }
        default:
          return Uint8Array.from(nums, (v) => v & 0xff);
      }
    }
  }
  return encodeFromNumbers(dtype, nums);
}
