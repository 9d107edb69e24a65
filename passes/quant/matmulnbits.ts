// com.microsoft::MatMulNBits layout (ContribOperators.md): B [N, k_blocks, blob] with each row n the
// column n of the [K, N] weight, 4-bit codes packed along K low nibble first; scales [N*k_blocks]
// in A's float type; packed uint8 zero points [N, ceil(k_blocks*bits/8)], each row byte-aligned.
// Absent zero points mean 2^(bits-1), so symmetric weights store (signed code + 2^(bits-1)).
import { DataType, Node, Tensor, dtypeName, float32ToFloat16Array, type ExternalRef } from '../../ir/index.js';
import type { QuantizedWeight } from './types.js';

export const MS_DOMAIN = 'com.microsoft';

/** Float storage for scales (and bias): fp32 or fp16 bits. */
export function floatTensor(name: string, dims: number[], values: Float32Array, dtype: DataType): Tensor {
  if (dtype === DataType.FLOAT) return Tensor.fromFloat32(name, dims, values);
  if (dtype === DataType.FLOAT16) {
    const h = float32ToFloat16Array(values);
    return Tensor.fromBytes(name, DataType.FLOAT16, dims, new Uint8Array(h.buffer));
  }
  throw new Error(`scales must be float32 or float16, not ${dtypeName(dtype)}`);
}

/** Rows of packed zero points: k_blocks codes per row, each row starting on a byte. */
export function zeroPointRowBytes(kBlocks: number, bits: number): number {
  return Math.ceil((kBlocks * bits) / 8);
}

export function packZeroPoints(zp: Uint8Array, N: number, kBlocks: number, bits: number): Uint8Array {
  if (bits === 8) return zp.slice();
  const row = zeroPointRowBytes(kBlocks, bits);
  const out = new Uint8Array(N * row);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const z = zp[n * kBlocks + b]! & 0xf;
      out[n * row + (b >> 1)]! |= b & 1 ? z << 4 : z;
    }
  }
  return out;
}

export function unpackZeroPoints(bytes: Uint8Array, N: number, kBlocks: number, bits: number): Uint8Array {
  if (bits === 8) return bytes.slice(0, N * kBlocks);
  const row = zeroPointRowBytes(kBlocks, bits);
  const out = new Uint8Array(N * kBlocks);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const byte = bytes[n * row + (b >> 1)]!;
      out[n * kBlocks + b] = b & 1 ? byte >> 4 : byte & 0xf;
    }
  }
  return out;
}

/** B bytes: codes are already [N][k_blocks*block] so packing is a straight nibble pack. */
export function packB(q: QuantizedWeight): Uint8Array {
  const Kp = q.kBlocks * q.blockSize;
  if (q.codes.length !== q.N * Kp) throw new Error(`quantized weight has ${q.codes.length} codes, expected N*Kp = ${q.N * Kp}`);
  if (q.bits === 8) return q.codes.slice();
  // Kp is a multiple of the block (>= 16), so codes pair up exactly.
  const c = q.codes,
    out = new Uint8Array(c.length >> 1);
  for (let i = 0, j = 0; i < out.length; i++, j += 2) out[i] = (c[j]! & 15) | ((c[j + 1]! & 15) << 4);
  return out;
}

export interface MatMulNBitsWeights {
  B: Tensor;
  scales: Tensor;
  zeroPoints?: Tensor;
  attrs: { K: number; N: number; bits: number; block_size: number };
}

/**
 * Initializers for one MatMulNBits weight; `base` names them `<base>_Q4`, `<base>_scales`, `<base>_zero_points`.
 * `packedB`: the B bytes already made (streamed quantization), used instead of packing q.codes.
 */
export function packMatMulNBits(
  q: QuantizedWeight,
  base: string,
  scaleType: DataType,
  packedB?: Uint8Array | { packed: ExternalRef; scales: ExternalRef },
): MatMulNBitsWeights {
  const blob = (q.blockSize * q.bits) / 8,
    dims = [q.N, q.kBlocks, blob],
    name = `${base}_Q${q.bits}`;
  const spilled = packedB && !(packedB instanceof Uint8Array) ? packedB : null;
  if (spilled && scaleType !== DataType.FLOAT) throw new Error(`spilled scales of '${base}' are float32, not ${dtypeName(scaleType)}`);
  const B = spilled
    ? new Tensor(name, DataType.UINT8, dims, { kind: 'external', ref: spilled.packed })
    : Tensor.fromBytes(name, DataType.UINT8, dims, (packedB as Uint8Array | undefined) ?? packB(q));
  const scales = spilled
    ? new Tensor(`${base}_scales`, DataType.FLOAT, [q.N * q.kBlocks], { kind: 'external', ref: spilled.scales })
    : floatTensor(`${base}_scales`, [q.N * q.kBlocks], q.scales, scaleType);
  const out: MatMulNBitsWeights = { B, scales, attrs: { K: q.K, N: q.N, bits: q.bits, block_size: q.blockSize } };
  if (!q.symmetric) {
    if (!q.zeroPoints) throw new Error(`asymmetric quantized weight '${base}' has no zero points`);
    const row = zeroPointRowBytes(q.kBlocks, q.bits);
    out.zeroPoints = Tensor.fromBytes(
      `${base}_zero_points`,
      DataType.UINT8,
      [q.N, row],
      packZeroPoints(q.zeroPoints, q.N, q.kBlocks, q.bits),
    );
  }
  return out;
}

/** Read a MatMulNBits node's constant weights back into a QuantizedWeight; a string says why not. */
export function readMatMulNBits(node: Node): QuantizedWeight | string {
  const K = node.attrInt('K'),
    N = node.attrInt('N'),
    bits = node.attrInt('bits', 4),
    blockSize = node.attrInt('block_size');
  if (bits !== 4 && bits !== 8) return `bits=${bits} (only 4 and 8 are handled)`;
  if (node.input(4)) return 'has g_idx';
  const B = node.constInput(1),
    S = node.constInput(2);
  if (!B || !S) return 'B or scales is not a constant';
  const kBlocks = Math.ceil(K / blockSize);
  const Kp = kBlocks * blockSize;
  if (B.dtype !== DataType.UINT8 || B.size !== (N * Kp * bits) / 8)
    return `B is ${dtypeName(B.dtype)}[${B.dims}], expected uint8 with ${(N * Kp * bits) / 8} bytes`;
  if (S.size !== N * kBlocks) return `scales have ${S.size} values, expected ${N * kBlocks}`;
  const raw = B.bytes();
  const codes = new Uint8Array(N * Kp);
  if (bits === 8) codes.set(raw.subarray(0, codes.length));
  else for (let i = 0; i < codes.length; i++) codes[i] = i & 1 ? raw[i >> 1]! >> 4 : raw[i >> 1]! & 0xf;
  const q: QuantizedWeight = { K, N, bits, blockSize, kBlocks, symmetric: true, codes, scales: S.toFloat32() };
  const zpIn = node.input(3);
  if (zpIn) {
    const Z = zpIn.initializer;
    if (!Z) return 'zero points are not a constant';
    if (Z.dtype !== DataType.UINT8) return `zero points are ${dtypeName(Z.dtype)} (float zero points cannot be expressed as integer codes)`;
    if (Z.size !== N * zeroPointRowBytes(kBlocks, bits))
      return `zero points have ${Z.size} bytes, expected ${N * zeroPointRowBytes(kBlocks, bits)}`;
    q.symmetric = false;
    q.zeroPoints = unpackZeroPoints(Z.bytes(), N, kBlocks, bits);
  }
  return q;
}
