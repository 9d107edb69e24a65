// Standard-ONNX blocked weight: DequantizeLinear-21 (axis=0, block_size) on a [K, N] integer weight,
// scale (and zero point) [k_blocks, N]. 4-bit values pack two per byte over the row-major flatten,
// first element in the low nibble. DQ's zero point defaults to 0, so symmetric codes are stored
// signed (INT4/INT8) and asymmetric ones unsigned with an explicit zero point of the same type.
import { DataType, Node, Tensor, dtypeName, unpackInt4 } from '../../ir/index.js';
import { floatTensor } from './matmulnbits.js';
import type { QuantizedWeight } from './types.js';

export interface QdqWeights {
  x: Tensor;
  scale: Tensor;
  zeroPoint?: Tensor;
  attrs: { axis: number; block_size: number };
}

export function qdqWeightType(bits: number, symmetric: boolean): DataType {
  if (bits === 4) return symmetric ? DataType.INT4 : DataType.UINT4;
  return symmetric ? DataType.INT8 : DataType.UINT8;
}

const TILE = 64;

/**
 * Row-major [rows, cols] values `src[c*stride + r] - shift` (a column-major source), packed for
 * `dtype`: 4-bit two per byte, first in the low nibble; 8-bit one byte (two's complement for INT8).
 * Tiles of 64 columns keep the strided reads within a few pages.
 */
function packTransposed(dtype: DataType, rows: number, cols: number, src: Uint8Array, stride: number, shift: number): Uint8Array {
  const four = dtype === DataType.INT4 || dtype === DataType.UINT4;
  const out = new Uint8Array(four ? (rows * cols + 1) >> 1 : rows * cols);
  for (let c0 = 0; c0 < cols; c0 += TILE) {
    const c1 = Math.min(cols, c0 + TILE);
    for (let r = 0; r < rows; r++) {
      for (let c = c0, i = r * cols + c0; c < c1; c++, i++) {
        const v = src[c * stride + r]! - shift;
        if (!four) out[i] = v & 0xff;
        else out[i >> 1]! |= (v & 15) << ((i & 1) << 2);
      }
    }
  }
  return out;
}

/**
 * packTransposed for 4-bit codes already packed column-major (MatMulNBits B: column c's codes at
 * nibbles c*stride.., low first), rows and cols even: each 2x2 block of nibbles is two bytes in and
 * two bytes out. Subtracting 8 from a 4-bit code is xor 8 (`xor` 0x88 when shifting, else 0).
 */
function transposeNibbles(rows: number, cols: number, src: Uint8Array, stride: number, xor: number): Uint8Array {
  if (rows % 2 || cols % 2 || stride % 2)
    throw new Error(`packed 4-bit codes need an even shape, got [${rows}, ${cols}] with stride ${stride}`);
  const out = new Uint8Array((rows * cols) >> 1),
    half = stride >> 1,
    rowBytes = cols >> 1;
  for (let c0 = 0; c0 < cols; c0 += TILE) {
    const c1 = Math.min(cols, c0 + TILE);
    for (let r = 0; r < rows; r += 2) {
      for (let c = c0, j = c0 * half + (r >> 1), o = r * rowBytes + (c0 >> 1); c < c1; c += 2, j += stride, o++) {
        const a = src[j]!,
          b = src[j + half]!;
        out[o] = ((a & 15) | (b << 4)) ^ xor;
        out[o + rowBytes] = ((a >> 4) | (b & 0xf0)) ^ xor;
      }
    }
  }
  return out;
}

/** `packedB`: the codes as MatMulNBits B bytes (streamed quantization), used instead of q.codes. */
export function packQdq(q: QuantizedWeight, base: string, scaleType: DataType, packedB?: Uint8Array): QdqWeights {
  const { K, N, kBlocks, blockSize } = q;
  const Kp = kBlocks * blockSize;
  const dtype = qdqWeightType(q.bits, q.symmetric);
  const shift = q.symmetric ? 1 << (q.bits - 1) : 0;
  const s = new Float32Array(kBlocks * N);
  for (let n = 0; n < N; n++) for (let b = 0; b < kBlocks; b++) s[b * N + n] = q.scales[n * kBlocks + b]!;
  const out: QdqWeights = {
    x: Tensor.fromBytes(
      `${base}_DQ_Q${q.bits}`,
      dtype,
      [K, N],
      packedB && q.bits === 4
        ? transposeNibbles(K, N, packedB, Kp, shift ? 0x88 : 0)
        : packTransposed(dtype, K, N, packedB ?? q.codes, Kp, shift),
    ),
    scale: floatTensor(`${base}_DQ_scales`, [kBlocks, N], s, scaleType),
    attrs: { axis: 0, block_size: blockSize },
  };
  if (!q.symmetric) {
    if (!q.zeroPoints) throw new Error(`asymmetric quantized weight '${base}' has no zero points`);
    out.zeroPoint = Tensor.fromBytes(
      `${base}_DQ_zero_points`,
      dtype,
      [kBlocks, N],
      packTransposed(dtype, kBlocks, N, q.zeroPoints, kBlocks, 0),
    );
  }
  return out;
}

function intValues(t: Tensor): Int16Array {
  const raw = t.bytes();
  switch (t.dtype) {
    case DataType.INT4:
    case DataType.UINT4:
      return Int16Array.from(unpackInt4(raw, t.size, t.dtype === DataType.INT4));
    case DataType.INT8:
      return Int16Array.from(new Int8Array(raw.buffer, raw.byteOffset, t.size));
    case DataType.UINT8:
      return Int16Array.from(raw.subarray(0, t.size));
    default:
      throw new Error(`not an integer weight type: ${dtypeName(t.dtype)}`);
  }
}

/**
 * Read a blocked DequantizeLinear of a constant [K, N] weight back into unsigned codes. Signed
 * types shift by 2^(bits-1) (so zero point 0 becomes the implicit 8/128 of MatMulNBits); an unsigned
 * weight without a zero point gets explicit zero points of 0. A string says why it cannot.
 */
export function readQdq(dq: Node): QuantizedWeight | string {
  const X = dq.constInput(0),
    S = dq.constInput(1);
  if (!X || !S) return 'weight or scale is not a constant';
  const bits =
    X.dtype === DataType.INT4 || X.dtype === DataType.UINT4 ? 4 : X.dtype === DataType.INT8 || X.dtype === DataType.UINT8 ? 8 : 0;
  if (!bits) return `weight type ${dtypeName(X.dtype)} is not int4/uint4/int8/uint8`;
  if (X.dims.length !== 2) return `weight has rank ${X.dims.length}, expected 2`;
  const [K, N] = X.dims as [number, number];
  const axis = dq.attrInt('axis', 1),
    blockSize = dq.attrInt('block_size', 0);
  if ((axis !== 0 && axis !== -2) || blockSize <= 0) return `not blocked along K (axis=${axis}, block_size=${blockSize})`;
  if (blockSize < 16 || blockSize & (blockSize - 1)) return `block_size ${blockSize} is not a power of two >= 16`;
  const kBlocks = Math.ceil(K / blockSize);
  if (S.dims.join() !== `${kBlocks},${N}`) return `scale shape [${S.dims}] is not [${kBlocks},${N}]`;
  const signed = X.dtype === DataType.INT4 || X.dtype === DataType.INT8;
  const shift = signed ? 1 << (bits - 1) : 0;
  const zpT = dq.input(2) ? dq.constInput(2) : null;
  if (dq.input(2) && !zpT) return 'zero point is not a constant';
  const zpv = zpT ? intValues(zpT) : null;
  const symmetric = signed && (!zpv || zpv.every((z) => z === 0));
  const Kp = kBlocks * blockSize;
  const x = intValues(X);
  const sv = S.toFloat32();
  const scales = new Float32Array(N * kBlocks);
  const zeroPoints = symmetric ? undefined : new Uint8Array(N * kBlocks);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      scales[n * kBlocks + b] = sv[b * N + n]!;
      if (zeroPoints) zeroPoints[n * kBlocks + b] = (zpv ? zpv[b * N + n]! : 0) + shift;
    }
  }
  const codes = new Uint8Array(N * Kp);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < Kp; k++) {
      // Padding codes dequantize to 0: they equal the block's zero point.
      codes[n * Kp + k] = k < K ? x[k * N + n]! + shift : zeroPoints ? zeroPoints[n * kBlocks + Math.floor(k / blockSize)]! : shift;
    }
  }
  return { K, N, bits, blockSize, kBlocks, symmetric, codes, scales, zeroPoints };
}

/** Symmetric int8 per-channel codes and scales along `axis` (-1: per tensor), as onnxruntime's QDQ
 * quantizer writes weights (scale = max|w| / 127 per channel, codes in [-127, 127], zero point 0). */
export function quantizeInt8(t: Tensor, axis: number): { q: Int8Array; scales: Float32Array } {
  const w = t.toFloat32();
  const dims = t.dims;
  const channels = axis < 0 ? 1 : dims[axis]!;
  const inner = axis < 0 ? w.length : dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const amax = new Float32Array(channels);
  for (let i = 0; i < w.length; i++) {
    const c = axis < 0 ? 0 : Math.floor(i / inner) % channels;
    amax[c] = Math.max(amax[c]!, Math.abs(w[i]!));
  }
  const scales = Float32Array.from(amax, (a) => (a > 0 ? a / 127 : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const c = axis < 0 ? 0 : Math.floor(i / inner) % channels;
    q[i] = Math.max(-127, Math.min(127, Math.round(w[i]! / scales[c]!)));
  }
  return { q, scales };
}

/** The output-channel axis of a Conv (0: [M, C/g, k...]) or ConvTranspose (1: [C, M/g, k...] when
 * group = 1; grouped ones have no single output axis: -1, per tensor). */
export function convWeightAxis(n: Node): number {
  return n.opType === 'Conv' ? 0 : n.attrInt('group', 1) === 1 ? 1 : -1;
}
