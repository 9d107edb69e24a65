// Shared by the quantization format tests: tiny models, onnxruntime runs, and dequantizers written
// straight from the operator specs (ContribOperators.md, ONNX DequantizeLinear-21), independent of
// the packers under test.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, decodeModel, encodeModel, f16ToF32, saveModel } from '../../ir/index.js';
import { randn, rng, runModel } from '../../runtime/ort.js';

export const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-quant-'));
let fileNo = 0;

export function cleanup(): void {
  fs.rmSync(TMP, { recursive: true, force: true });
}
// Every test file that imports these helpers gets its own TMP; remove it when that file is done.
afterAll(cleanup);

/** Save and run in onnxruntime (graph optimizations off: the graph as written). */
export async function run(model: Model, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const f = path.join(TMP, `m${fileNo++}.onnx`);
  saveModel(model, f, { externalData: false });
  return runModel(f, feeds);
}

export function clone(model: Model): Model {
  return decodeModel(encodeModel(model), 'clone.onnx');
}

export function weights(seed: number, n: number, scale = 0.5): Float32Array {
  return randn(rng(seed), n, scale);
}

/** Y = A @ W (+ optional Gemm form) with W [K, N]. */
export function matmulModel(
  K: number,
  N: number,
  M: number,
  seed: number,
  opts: { gemm?: 'plain' | 'transB-bias'; opset?: number } = {},
): Model {
  const b = new GraphBuilder({ opset: opts.opset ?? 17 });
  const A = b.input('A', DataType.FLOAT, [M, K]);
  const w = weights(seed, K * N);
  let y;
  if (opts.gemm === 'transB-bias') {
    const wt = new Float32Array(K * N);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) wt[n * K + k] = w[k * N + n]!;
    const W = b.constF32('fc.weight', [N, K], wt);
    const C = b.constF32('fc.bias', [N], weights(seed + 1, N));
    y = b.op1('Gemm', [A, W, C], { attrs: { transB: 1, alpha: 0.5, beta: { float: 2 } }, name: 'fc' });
  } else if (opts.gemm === 'plain') {
    y = b.op1('Gemm', [A, b.constF32('fc.weight', [K, N], w)], { name: 'fc' });
  } else {
    y = b.op1('MatMul', [A, b.constF32('proj.weight', [K, N], w)], { name: 'proj' });
  }
  b.output(y, 'Y', DataType.FLOAT, [M, N]);
  return b.build();
}

export function floats(t: Tensor): Float32Array {
  if (t.dtype === DataType.FLOAT16) {
    const raw = t.bytes();
    return Float32Array.from({ length: t.size }, (_, i) => f16ToF32(raw[2 * i]! | (raw[2 * i + 1]! << 8)));
  }
  return t.toFloat32();
}

/** Max |a-b| / max |a|. */
export function relMaxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(a[i]!));
  }
  return m ? d / m : d;
}

export function relL2(ref: Float32Array, x: Float32Array): number {
  let se = 0,
    ss = 0;
  for (let i = 0; i < ref.length; i++) {
    se += (ref[i]! - x[i]!) ** 2;
    ss += ref[i]! ** 2;
  }
  return Math.sqrt(se / ss);
}

// ---- spec-text reference dequantizers --------------------------------------------------------

/**
 * MatMulNBits: B is [N][k_blocks][blob], blob = block_size*bits/8 bytes; inside a blob the block's
 * values along K, 4-bit "element 2i in the low nibble, element 2i+1 in the high nibble of byte i".
 * Zero points (uint8) are packed per row n the same way, ceil(k_blocks*bits/8) bytes per row; absent
 * means 2^(bits-1). Result: W [K, N] row-major, w = (q - zp) * scale[n*k_blocks + b].
 */
export function refDequantMatMulNBits(
  B: Uint8Array,
  scales: Float32Array,
  zp: Uint8Array | null,
  K: number,
  N: number,
  bits: number,
  block: number,
): Float32Array {
  const kb = Math.ceil(K / block),
    blob = (block * bits) / 8,
    zrow = Math.ceil((kb * bits) / 8);
  const W = new Float32Array(K * N);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / block),
        j = k % block;
      const byte = B[n * kb * blob + b * blob + Math.floor((j * bits) / 8)]!;
      const q = bits === 8 ? byte : j % 2 === 0 ? byte & 15 : byte >> 4;
      let z = 1 << (bits - 1);
      if (zp) {
        const zb = zp[n * zrow + Math.floor((b * bits) / 8)]!;
        z = bits === 8 ? zb : b % 2 === 0 ? zb & 15 : zb >> 4;
      }
      W[k * N + n] = (q - z) * scales[n * kb + b]!;
    }
  }
  return W;
}

/** Element i of a flattened tensor: 4-bit types two per byte, first in the 4 LSBs, int4 two's complement. */
export function refElement(bytes: Uint8Array, dtype: DataType, i: number): number {
  switch (dtype) {
    case DataType.INT4:
    case DataType.UINT4: {
      const nib = i % 2 === 0 ? bytes[i >> 1]! & 15 : bytes[i >> 1]! >> 4;
      return dtype === DataType.INT4 && nib >= 8 ? nib - 16 : nib;
    }
    case DataType.INT8:
      return bytes[i]! >= 128 ? bytes[i]! - 256 : bytes[i]!;
    case DataType.UINT8:
      return bytes[i]!;
    default:
      throw new Error(`unexpected ${dtype}`);
  }
}

/** DequantizeLinear-21, axis 0, block_size B on x [K, N]: y = (x - zp) * scale[floor(k/B), n]. */
export function refDequantDQ(x: Tensor, scale: Float32Array, zp: Tensor | null, block: number): Float32Array {
  const [K, N] = x.dims as [number, number];
  const xb = x.bytes(),
    zb = zp?.bytes();
  const W = new Float32Array(K * N);
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) {
      const si = Math.floor(k / block) * N + n;
      W[k * N + n] = (refElement(xb, x.dtype, k * N + n) - (zb ? refElement(zb, zp!.dtype, si) : 0)) * scale[si]!;
    }
  }
  return W;
}

/**
 * GatherBlockQuantized (gather_axis 0, blocks along the last axis): int4/uint4 data default zero
 * point 0; uint8 data holds 8/bits values per byte (low bits first) with default zero point
 * 2^(bits-1), zero points packed the same way. Returns the dequantized table [V, H].
 */
export function refDequantGather(
  data: Tensor,
  scales: Float32Array,
  zp: Tensor | null,
  bits: number,
  block: number,
  H: number,
): Float32Array {
  const V = data.dims[0]!;
  const kb = H / block;
  const out = new Float32Array(V * H);
  const db = data.bytes(),
    zb = zp?.bytes();
  const packed = data.dtype === DataType.UINT8;
  const perByte = 8 / bits;
  const elem = (bytes: Uint8Array, i: number) =>
    packed ? (bytes[Math.floor(i / perByte)]! >> ((i % perByte) * bits)) & ((1 << bits) - 1) : refElement(bytes, data.dtype, i);
  const zRow = packed ? Math.ceil(kb / perByte) * perByte : kb;
  for (let v = 0; v < V; v++) {
    for (let h = 0; h < H; h++) {
      const b = Math.floor(h / block);
      const z = zb ? elem(zb, v * zRow + b) : packed ? 1 << (bits - 1) : 0;
      out[v * H + h] = (elem(db, v * H + h) - z) * scales[v * kb + b]!;
    }
  }
  return out;
}
