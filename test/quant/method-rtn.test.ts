import { describe, expect, it } from 'vitest';
import { rng, randn } from '../../runtime/ort.js';
import { dequantize, type QuantParams } from '../../passes/quant/types.js';
import { rtnQuantize, rtnReference } from '../../passes/quant/methods/rtn.js';
import { allMethods, getMethod } from '../../passes/quant/methods/index.js';

const f = Math.fround;

/** A column-vector weight [K, 1]. */
function col(values: number[]): Float32Array {
  return Float32Array.from(values);
}

describe('rtn: onnxruntime MLAS arithmetic on known values', () => {
  const sym4: QuantParams = { bits: 4, blockSize: 16, symmetric: true };
  const asym4: QuantParams = { bits: 4, blockSize: 16, symmetric: false };

  it('symmetric: the largest-magnitude value maps to code 0, scale = m / -8', () => {
    const q = rtnQuantize(col([0.1, -0.4, 0.2, 0, ...new Array(12).fill(0)]), 16, 1, sym4);
    expect(q.scales[0]).toBe(f(0.05));
    expect(Array.from(q.codes.subarray(0, 4))).toEqual([10, 0, 12, 8]);
    expect(q.zeroPoints).toBeUndefined();
    const p = rtnQuantize(col([0.8, -0.2, ...new Array(14).fill(0)]), 16, 1, sym4);
    expect(p.scales[0]).toBe(f(-0.1));
    expect(Array.from(p.codes.subarray(0, 2))).toEqual([0, 10]);
  });

  it('symmetric tie picks the negative extreme; the positive one clamps to 15', () => {
    const q = rtnQuantize(col([0.8, -0.8, ...new Array(14).fill(0)]), 16, 1, sym4);
    expect(q.scales[0]).toBe(f(0.1));
    expect(Array.from(q.codes.subarray(0, 2))).toEqual([15, 0]);
  });

  it('asymmetric: range includes 0, scale = (max-min)/15, zp = round(-min/scale)', () => {
    const q = rtnQuantize(col([-0.3, 0.45, 0.05, ...new Array(13).fill(0)]), 16, 1, asym4);
    expect(q.scales[0]).toBe(f(f(f(0.45) + f(0.3)) / 15));
    expect(q.zeroPoints![0]).toBe(6);
    expect(Array.from(q.codes.subarray(0, 4))).toEqual([0, 15, 7, 6]);
    // all-positive block: min forced to 0 -> zp 0
    const p = rtnQuantize(col(new Array(16).fill(0).map((_, i) => (i + 1) / 16)), 16, 1, asym4);
    expect(p.zeroPoints![0]).toBe(0);
    expect(p.codes[15]).toBe(15);
  });

  it('all-zero blocks: scale 0, codes = zero point; K padded with zp codes', () => {
    const K = 20,
      N = 3; // 2 blocks of 16, the second holds 4 real rows
    const w = new Float32Array(K * N);
    for (let k = 16; k < K; k++) w[k * N + 1] = k % 2 ? 0.5 : -0.25;
    for (const p of [sym4, asym4, { bits: 8, blockSize: 16, symmetric: true } as QuantParams]) {
      const q = rtnQuantize(w, K, N, p);
      const zp0 = p.symmetric ? 1 << (p.bits - 1) : 0;
      expect(q.kBlocks).toBe(2);
      expect(q.codes.length).toBe(N * 32);
      expect(q.scales[0]).toBe(0);
      expect(Object.is(q.scales[0], 0)).toBe(true);
      expect(q.codes.subarray(0, 32).every((c) => c === zp0)).toBe(true);
      const zp1 = q.zeroPoints ? q.zeroPoints[1 * 2 + 1]! : 1 << (p.bits - 1);
      expect(q.codes.subarray(32 + 20, 64).every((c) => c === zp1)).toBe(true);
      expect(Array.from(dequantize(q))).toEqual(Array.from(w).map((v) => (v === 0 ? 0 : expect.closeTo(v, 6))));
    }
  });

  it('8-bit symmetric uses -128 grid', () => {
    const q = rtnQuantize(col([1.28, -0.64, 0.01, ...new Array(13).fill(0)]), 16, 1, { bits: 8, blockSize: 16, symmetric: true });
    expect(q.scales[0]).toBe(f(-0.01));
    expect(Array.from(q.codes.subarray(0, 3))).toEqual([0, 192, 127]);
  });
});

describe('rtn: tuned kernels (WebAssembly SIMD and scalar) are byte-identical to the reference loop', () => {
  const P32: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
  const rand = rng(7);
  const cases: [number, number][] = [
    [256, 96],
    [100, 33],
    [64, 1],
    [257, 17],
  ];
  function weight(K: number, N: number): Float32Array {
    const w = randn(rand, K * N, 0.02);
    for (let n = 0; n < N; n += 7) for (let k = 0; k < K; k++) w[k * N + n]! *= 20; // outlier columns
    for (let i = 0; i < w.length; i += 97) w[i] = 0;
    for (let i = 5; i < w.length; i += 101) w[i] = -0;
    // exact ties and rounding boundaries
    for (let i = 11; i + N < w.length; i += 53) w[i + N] = -w[i]!;
    return w;
  }
  for (const bits of [4, 8] as const) {
    for (const symmetric of [true, false]) {
      for (const blockSize of [16, 32, 128]) {
        it(`bits=${bits} sym=${symmetric} block=${blockSize}`, () => {
          for (const [K, N] of cases) {
            const w = weight(K, N);
            const a = rtnReference(w, K, N, { bits, blockSize, symmetric });
            for (const simd of [true, false]) {
              const b = rtnQuantize(w, K, N, { bits, blockSize, symmetric }, simd);
              expect(Buffer.compare(Buffer.from(a.codes), Buffer.from(b.codes))).toBe(0);
              expect(Buffer.compare(Buffer.from(a.scales.buffer), Buffer.from(b.scales.buffer))).toBe(0);
              if (!symmetric) expect(Buffer.compare(Buffer.from(a.zeroPoints!), Buffer.from(b.zeroPoints!))).toBe(0);
            }
          }
        });
      }
    }
  }

  it('SIMD kernel streams several window bands and leaves no stale bytes between calls', () => {
    const K = 4096 + 20,
      N = 1102; // 3 bands of block rows, a partial last block, N % 4 = 2
    const w = weight(K, N);
    for (const p of [P32, { ...P32, symmetric: false }]) {
      const a = rtnReference(w, K, N, p);
      const big = rtnQuantize(w, K, N, p);
      expect(Buffer.from(big.codes).equals(Buffer.from(a.codes))).toBe(true);
      expect(Buffer.from(big.scales.buffer).equals(Buffer.from(a.scales.buffer))).toBe(true);
      expect(Buffer.from(big.zeroPoints ?? []).equals(Buffer.from(a.zeroPoints ?? []))).toBe(true);
    }
    const small = weight(96, 8); // after a bigger call, the reused wasm memory holds old codes
    expect(Buffer.from(rtnQuantize(small, 96, 8, P32).codes).equals(Buffer.from(rtnReference(small, 96, 8, P32).codes))).toBe(true);
  });

  it('error stays within half a step (one step for the clamped symmetric extreme)', () => {
    const K = 256,
      N = 64,
      w = weight(K, N);
    for (const symmetric of [true, false]) {
      const q = rtnQuantize(w, K, N, { bits: 4, blockSize: 32, symmetric });
      const d = dequantize(q);
      for (let k = 0; k < K; k++) {
        for (let n = 0; n < N; n++) {
          const s = Math.abs(q.scales[n * q.kBlocks + (k >> 5)]!);
          expect(Math.abs(d[k * N + n]! - w[k * N + n]!)).toBeLessThanOrEqual((symmetric ? 1 : 0.5) * s * (1 + 1e-5) + 1e-12);
        }
      }
    }
  });

  it('works on a subarray view with a byte offset', () => {
    const K = 64,
      N = 8,
      w = weight(K, N);
    const big = new Float32Array(K * N + 3);
    big.set(w, 3);
    const a = rtnQuantize(big.subarray(3), K, N, { bits: 4, blockSize: 32, symmetric: true });
    const b = rtnReference(w, K, N, { bits: 4, blockSize: 32, symmetric: true });
    expect(Buffer.from(a.codes).equals(Buffer.from(b.codes))).toBe(true);
  });

  it('rejects bad parameters', () => {
    expect(() => rtnQuantize(new Float32Array(64), 64, 1, { bits: 4, blockSize: 24, symmetric: true })).toThrow(/power of two/);
    expect(() => rtnQuantize(new Float32Array(63), 64, 1, { bits: 4, blockSize: 32, symmetric: true })).toThrow(/expected/);
  });
});

describe('method registry', () => {
  it('finds rtn by name and rejects unknown names', () => {
    expect(getMethod('rtn').needsCalibration).toBe(false);
    expect(allMethods().map((m) => m.name)).toContain('rtn');
    expect(() => getMethod('nope')).toThrow(/unknown quantization method 'nope'/);
  });
});
