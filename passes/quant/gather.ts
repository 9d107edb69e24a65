// com.microsoft::GatherBlockQuantized for embedding tables [V, H], blocks along H (quantize_axis=1,
// gather_axis=0). Two storage forms:
//  - 'int4': data INT4 (symmetric, default zero point 0) or UINT4 + UINT4 zero points, [V, H];
//  - 'uint8': data uint8 [V, H*bits/8] packed low bits first, default zero point 2^(bits-1), packed
//    uint8 zero points [V, ceil(k_blocks*bits/8)]: byte for byte the MatMulNBits B of the transposed
//    table, so a tied embedding and lm_head can share one initializer. onnxruntime's WebGPU kernel
//    reads 4-bit uint8 zero points as pairs over the flattened scales, so there k_blocks must be even.
import { DataType, Tensor, packInt4 } from '../../ir/index.js';
import { floatTensor, packB, packZeroPoints, zeroPointRowBytes } from './matmulnbits.js';
import type { QuantizedWeight } from './types.js';

export type GatherForm = 'int4' | 'uint8';

export interface GatherWeights {
  data: Tensor;
  scales: Tensor;
  zeroPoints?: Tensor;
  attrs: { bits: number; block_size: number; gather_axis: number; quantize_axis: number };
}

/** `q` quantizes the table transposed: K = H (hidden), N = V (rows); H must be a multiple of the block. */
export function packGatherBlockQuantized(q: QuantizedWeight, base: string, scaleType: DataType, form: GatherForm): GatherWeights {
  const { K: H, N: V, kBlocks, bits } = q;
  if (kBlocks * q.blockSize !== H) throw new Error(`embedding width ${H} is not a multiple of block ${q.blockSize}`);
  const attrs = { bits, block_size: q.blockSize, gather_axis: 0, quantize_axis: 1 };
  const scales = floatTensor(`${base}_scales`, [V, kBlocks], q.scales, scaleType);
  if (form === 'int4' && bits === 4) {
    const mid = 1 << (bits - 1);
    const dtype = q.symmetric ? DataType.INT4 : DataType.UINT4;
    const vals = q.symmetric ? Int16Array.from(q.codes, (c) => c - mid) : q.codes;
    const out: GatherWeights = { data: Tensor.fromBytes(`${base}_Q4`, dtype, [V, H], packInt4(vals)), scales, attrs };
    if (!q.symmetric) out.zeroPoints = Tensor.fromBytes(`${base}_zero_points`, DataType.UINT4, [V, kBlocks], packInt4(q.zeroPoints!));
    return out;
  }
  const out: GatherWeights = { data: Tensor.fromBytes(`${base}_Q${bits}`, DataType.UINT8, [V, (H * bits) / 8], packB(q)), scales, attrs };
  if (!q.symmetric) {
    out.zeroPoints = Tensor.fromBytes(
      `${base}_zero_points`,
      DataType.UINT8,
      [V, zeroPointRowBytes(kBlocks, bits)],
      packZeroPoints(q.zeroPoints!, V, kBlocks, bits),
    );
  }
  return out;
}
