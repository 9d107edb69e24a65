// The com.microsoft::MatMulNBits 4-bit layout as the webgpu target emits it (passes/quant/matmulnbits.ts):
// B [N, k_blocks, block/2] bytes, row n = column n of the [K, N] weight, codes along K low nibble
// first; scales [N * k_blocks]; optional packed uint8 zero points [N, ceil(k_blocks/2)], absent = 8.
// GatherBlockQuantized's uint8 form of a [V, H] table is byte for byte the same with N = V, K = H.
// This layer only imports nothing of ours, so it carries its own small packer and seeded generator.

export interface QuantShape {
  /** Reduction length (columns of A). */
  K: number;
  /** Output features (rows of B). */
  N: number;
  /** Codes per scale, a multiple of 32 (the kernels read whole 8-code words and 32-code tiles). */
  blockSize: number;
  /** uint8 zero points present (asymmetric); absent means the implicit 8. */
  zeroPoints: boolean;
}

export interface PackedWeights extends QuantShape {
  kBlocks: number;
  /** B bytes [N][kBlocks][blockSize/2]. */
  b: Uint8Array;
  scales: Float32Array;
  /** Packed zero points [N][ceil(kBlocks/2)] (asymmetric only). */
  zp?: Uint8Array;
}

export const kBlocksOf = (s: QuantShape): number => Math.ceil(s.K / s.blockSize);
export const zpRowBytes = (kBlocks: number): number => Math.ceil(kBlocks / 2);

export function checkShape(s: QuantShape): void {
  if (!(s.blockSize >= 32 && s.blockSize % 32 === 0 && (s.blockSize & (s.blockSize - 1)) === 0)) {
    throw new Error(`block size ${s.blockSize}: the kernels take powers of two >= 32`);
  }
  if (!(s.K > 0 && s.N > 0 && Number.isInteger(s.K) && Number.isInteger(s.N))) throw new Error(`bad shape K=${s.K} N=${s.N}`);
}

/** Deterministic xorshift32 in [0, 1). */
export function seeded(seed: number): () => number {
  let x = (seed * 2654435761) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

export function randomFloats(rand: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

/** Random codes, scales and zero points in the MatMulNBits layout; padding codes past K are random too
 * (a kernel that reads them without masking A shows up as an error). */
export function randomWeights(s: QuantShape, seed: number): PackedWeights {
  checkShape(s);
  const rand = seeded(seed);
  const kBlocks = kBlocksOf(s);
  const b = new Uint8Array((s.N * kBlocks * s.blockSize) / 2);
  for (let i = 0; i < b.length; i++) b[i] = (rand() * 256) | 0;
  const scales = new Float32Array(s.N * kBlocks);
  for (let i = 0; i < scales.length; i++) scales[i] = 0.002 + rand() * 0.02;
  const out: PackedWeights = { ...s, kBlocks, b, scales };
  if (s.zeroPoints) {
    const zp = new Uint8Array(s.N * zpRowBytes(kBlocks));
    for (let i = 0; i < zp.length; i++) zp[i] = (rand() * 256) | 0;
    out.zp = zp;
  }
  return out;
}

/** Code q and zero point z of element (n, k): the dequantized weight is (q - z) * scale. */
export function codeAt(w: PackedWeights, n: number, k: number): number {
  const byte = w.b[(n * w.kBlocks * w.blockSize + k) >> 1]!;
  return k & 1 ? byte >> 4 : byte & 15;
}

export function zeroAt(w: PackedWeights, n: number, blk: number): number {
  if (!w.zp) return 8;
  const byte = w.zp[n * zpRowBytes(w.kBlocks) + (blk >> 1)]!;
  return blk & 1 ? byte >> 4 : byte & 15;
}

/** Bytes a kernel must read for the weights: B, scales at `scaleBytes` each, zero points. */
export function weightBytes(w: QuantShape, scaleBytes = 4): number {
  const kb = kBlocksOf(w);
  return (w.N * kb * w.blockSize) / 2 + w.N * kb * scaleBytes + (w.zeroPoints ? w.N * zpRowBytes(kb) : 0);
}

// ---- fp16 bits, for the f16 path's inputs and outputs --------------------------------------------

const f32b = new Float32Array(1);
const u32b = new Uint32Array(f32b.buffer);

export function toHalf(v: number): number {
  f32b[0] = v;
  const x = u32b[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >> shift;
    const rem = mant & ((1 << shift) - 1),
      half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function fromHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1,
    e = (h >> 10) & 0x1f,
    m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function halfArray(v: Float32Array): Uint16Array {
  return Uint16Array.from(v, toHalf);
}

/** Round every value through fp16 (what the f16 path's inputs really hold). */
export function roundHalf(v: Float32Array): Float32Array {
  return Float32Array.from(v, (x) => fromHalf(toHalf(x)));
}
