// Element types: sizes, names, packing of sub-byte types, fp16/bf16 <-> fp32.

export enum DataType {
  UNDEFINED = 0, FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
  STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, COMPLEX64 = 14,
  COMPLEX128 = 15, BFLOAT16 = 16, FLOAT8E4M3FN = 17, FLOAT8E4M3FNUZ = 18, FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20, UINT4 = 21, INT4 = 22, FLOAT4E2M1 = 23, FLOAT8E8M0 = 24, UINT2 = 25, INT2 = 26,
}

const NAMES: Record<number, string> = {
  0: 'undefined', 1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
  8: 'string', 9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 14: 'complex64',
  15: 'complex128', 16: 'bfloat16', 17: 'float8e4m3fn', 18: 'float8e4m3fnuz', 19: 'float8e5m2',
  20: 'float8e5m2fnuz', 21: 'uint4', 22: 'int4', 23: 'float4e2m1', 24: 'float8e8m0', 25: 'uint2', 26: 'int2',
};

/** Bits per element; 0 for strings and undefined. */
const BITS: Record<number, number> = {
  0: 0, 1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 0, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
  14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
};

export function dtypeName(t: number): string {
  return NAMES[t] ?? `dtype(${t})`;
}

export function dtypeFromName(name: string): DataType {
  for (const [k, v] of Object.entries(NAMES)) if (v === name) return Number(k);
  const alias: Record<string, DataType> = { float: DataType.FLOAT, fp32: DataType.FLOAT, fp16: DataType.FLOAT16, double: DataType.DOUBLE, bf16: DataType.BFLOAT16 };
  if (name in alias) return alias[name]!;
  throw new Error(`unknown dtype '${name}'`);
}

export function isKnownDtype(t: number): boolean {
  return BITS[t] !== undefined;
}

export function dtypeBits(t: number): number {
  const b = BITS[t];
  if (b === undefined) throw new Error(`unknown dtype ${t}`);
  return b;
}

/** Bytes needed to store `count` elements of type t (sub-byte types packed, padded to a byte). */
export function byteLength(t: number, count: number): number {
  return Math.ceil((count * dtypeBits(t)) / 8);
}

export function isFloat(t: number): boolean {
  return t === DataType.FLOAT || t === DataType.FLOAT16 || t === DataType.DOUBLE || t === DataType.BFLOAT16 ||
    (t >= DataType.FLOAT8E4M3FN && t <= DataType.FLOAT8E5M2FNUZ) || t === DataType.FLOAT4E2M1 || t === DataType.FLOAT8E8M0;
}

export function numElements(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

// ---- fp16 / bf16 ----------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp32 -> fp16 bits, round to nearest even, with overflow to inf, subnormals and NaN kept. */
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24;
    else if (exp === 31) v = mant ? NaN : Infinity;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    t[h] = sign * v;
  }
  return t;
})();

export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff]!;
}

export function f32ToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  const rounding = 0x7fff + ((x >>> 16) & 1);
  return ((x + rounding) >>> 16) & 0xffff;
}

export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

export function float32ToFloat16Array(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]!);
  return out;
}

export function float16ToFloat32Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F16_TABLE[src[i]!]!;
  return out;
}

// ---- float8 (decode only; what conformance data and inspection need) -------------------------

export function float8ToF32(t: DataType, b: number): number {
  const sign = b & 0x80 ? -1 : 1;
  if (t === DataType.FLOAT8E4M3FN || t === DataType.FLOAT8E4M3FNUZ) {
    const fnuz = t === DataType.FLOAT8E4M3FNUZ;
    if (fnuz && b === 0x80) return NaN;
    if (!fnuz && (b & 0x7f) === 0x7f) return NaN;
    const exp = (b >>> 3) & 0xf, mant = b & 7, bias = fnuz ? 8 : 7;
    return sign * (exp === 0 ? mant * 2 ** (1 - bias - 3) : (1 + mant / 8) * 2 ** (exp - bias));
  }
  if (t === DataType.FLOAT8E5M2 || t === DataType.FLOAT8E5M2FNUZ) {
    const fnuz = t === DataType.FLOAT8E5M2FNUZ;
    if (fnuz && b === 0x80) return NaN;
    const exp = (b >>> 2) & 0x1f, mant = b & 3, bias = fnuz ? 16 : 15;
    if (!fnuz && exp === 31) return mant ? NaN : sign * Infinity;
    return sign * (exp === 0 ? mant * 2 ** (1 - bias - 2) : (1 + mant / 4) * 2 ** (exp - bias));
  }
  if (t === DataType.FLOAT8E8M0) return b === 0xff ? NaN : 2 ** (b - 127);
  throw new Error(`not a float8 type: ${dtypeName(t)}`);
}

// ---- 4-bit packing: two per byte, first element in the low nibble --------------------------

/** Pack 4-bit codes (0..15 for uint4, -8..7 for int4) into bytes, low nibble first. */
export function packInt4(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array((values.length + 1) >> 1);
  for (let i = 0; i < values.length; i++) {
    const q = values[i]! & 0xf;
    out[i >> 1]! |= i & 1 ? q << 4 : q;
  }
  return out;
}

/** Unpack `count` 4-bit values; signed=true sign-extends (int4). */
export function unpackInt4(bytes: Uint8Array, count: number, signed: boolean): Int8Array {
  const out = new Int8Array(count);
  for (let i = 0; i < count; i++) {
    const b = bytes[i >> 1]!;
    let q = i & 1 ? b >> 4 : b & 0xf;
    if (signed && q > 7) q -= 16;
    out[i] = q;
  }
  return out;
}

export function unpackInt2(bytes: Uint8Array, count: number, signed: boolean): Int8Array {
  const out = new Int8Array(count);
  for (let i = 0; i < count; i++) {
    let q = (bytes[i >> 2]! >> ((i & 3) * 2)) & 3;
    if (signed && q > 1) q -= 4;
    out[i] = q;
  }
  return out;
}

/** Decode little-endian raw bytes of any numeric type into float64 numbers (for comparisons). */
export function decodeToNumbers(t: DataType, raw: Uint8Array, count: number): Float64Array {
  const out = new Float64Array(count);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (t) {
    case DataType.FLOAT: for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true); break;
    case DataType.DOUBLE: for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true); break;
    case DataType.FLOAT16: for (let i = 0; i < count; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true)); break;
    case DataType.BFLOAT16: for (let i = 0; i < count; i++) out[i] = bf16ToF32(dv.getUint16(i * 2, true)); break;
    case DataType.UINT8: case DataType.BOOL: for (let i = 0; i < count; i++) out[i] = raw[i]!; break;
    case DataType.INT8: for (let i = 0; i < count; i++) out[i] = dv.getInt8(i); break;
    case DataType.UINT16: for (let i = 0; i < count; i++) out[i] = dv.getUint16(i * 2, true); break;
    case DataType.INT16: for (let i = 0; i < count; i++) out[i] = dv.getInt16(i * 2, true); break;
    case DataType.INT32: for (let i = 0; i < count; i++) out[i] = dv.getInt32(i * 4, true); break;
    case DataType.UINT32: for (let i = 0; i < count; i++) out[i] = dv.getUint32(i * 4, true); break;
    case DataType.INT64: for (let i = 0; i < count; i++) out[i] = Number(dv.getBigInt64(i * 8, true)); break;
    case DataType.UINT64: for (let i = 0; i < count; i++) out[i] = Number(dv.getBigUint64(i * 8, true)); break;
    case DataType.INT4: case DataType.UINT4: out.set(unpackInt4(raw, count, t === DataType.INT4)); break;
    case DataType.INT2: case DataType.UINT2: out.set(unpackInt2(raw, count, t === DataType.INT2)); break;
    case DataType.FLOAT8E4M3FN: case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2:
    case DataType.FLOAT8E5M2FNUZ: case DataType.FLOAT8E8M0:
      for (let i = 0; i < count; i++) out[i] = float8ToF32(t, raw[i]!); break;
    default: throw new Error(`cannot decode ${dtypeName(t)} as numbers`);
  }
  return out;
}

/** Encode numbers into little-endian raw bytes of type t (numeric, non-packed types and 4-bit). */
export function encodeFromNumbers(t: DataType, values: ArrayLike<number>): Uint8Array {
  const n = values.length;
  if (t === DataType.INT4 || t === DataType.UINT4) return packInt4(Array.from(values, (v) => Math.round(v)));
  const out = new Uint8Array(byteLength(t, n));
  const dv = new DataView(out.buffer);
  switch (t) {
    case DataType.FLOAT: for (let i = 0; i < n; i++) dv.setFloat32(i * 4, values[i]!, true); break;
    case DataType.DOUBLE: for (let i = 0; i < n; i++) dv.setFloat64(i * 8, values[i]!, true); break;
    case DataType.FLOAT16: for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToF16(values[i]!), true); break;
    case DataType.BFLOAT16: for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToBf16(values[i]!), true); break;
    case DataType.UINT8: case DataType.BOOL: for (let i = 0; i < n; i++) out[i] = values[i]!; break;
    case DataType.INT8: for (let i = 0; i < n; i++) dv.setInt8(i, values[i]!); break;
    case DataType.UINT16: for (let i = 0; i < n; i++) dv.setUint16(i * 2, values[i]!, true); break;
    case DataType.INT16: for (let i = 0; i < n; i++) dv.setInt16(i * 2, values[i]!, true); break;
    case DataType.INT32: for (let i = 0; i < n; i++) dv.setInt32(i * 4, values[i]!, true); break;
    case DataType.UINT32: for (let i = 0; i < n; i++) dv.setUint32(i * 4, values[i]!, true); break;
    case DataType.INT64: for (let i = 0; i < n; i++) dv.setBigInt64(i * 8, BigInt(Math.trunc(values[i]!)), true); break;
    case DataType.UINT64: for (let i = 0; i < n; i++) dv.setBigUint64(i * 8, BigInt(Math.trunc(values[i]!)), true); break;
    default: throw new Error(`cannot encode ${dtypeName(t)} from numbers`);
  }
  return out;
}
