import { describe, expect, it } from 'vitest';
import { rng, randn } from '../../runtime/ort.js';
import { allMethods } from '../../passes/quant/methods/index.js';
import { createQuantPool, type QuantJob } from '../../passes/quant/workers.js';
import type { QuantizedWeight } from '../../passes/quant/types.js';

/** Every job on one pool; results in job order. */
async function quantizeAll(jobs: QuantJob[], threads: number): Promise<QuantizedWeight[]> {
  const pool = await createQuantPool({ threads });
  try {
    return await Promise.all(jobs.map((j) => pool.quantize(j)));
  } finally {
    await pool.close();
  }
}

function jobs(): QuantJob[] {
  const rand = rng(99);
  const out: QuantJob[] = [];
  const shapes: [number, number][] = [
    [128, 48],
    [96, 17],
    [256, 32],
    [64, 64],
    [160, 24],
    [32, 5],
  ];
  for (const m of allMethods()) {
    shapes.forEach(([K, N], i) => {
      const w = randn(rand, K * N, 0.02);
      const calib = m.needsCalibration ? { x: randn(rand, 64 * K), rows: 64 } : undefined;
      out.push({
        method: m.name,
        w,
        K,
        N,
        params: { bits: i % 3 === 2 ? 8 : 4, blockSize: i % 2 ? 16 : 32, symmetric: i % 2 === 0 },
        calib,
      });
    });
  }
  return out;
}

function bytes(q: QuantizedWeight): Buffer {
  return Buffer.concat([
    Buffer.from(q.codes),
    Buffer.from(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength),
    Buffer.from(q.zeroPoints ?? []),
  ]);
}

describe('quantization worker pool', () => {
  it('gives the same bytes, in job order, on 1 and 2 threads', async () => {
    const a = await quantizeAll(jobs(), 1);
    const b = await quantizeAll(jobs(), 2);
    expect(b.length).toBe(a.length);
    a.forEach((q, i) => {
      expect([b[i]!.K, b[i]!.N]).toEqual([q.K, q.N]);
      expect(bytes(b[i]!).equals(bytes(q))).toBe(true);
    });
  }, 30_000);

  it('transfers an owned buffer and copies a view once', async () => {
    const pool = await createQuantPool({ threads: 2 });
    try {
      const owned = randn(rng(1), 64 * 8, 0.02);
      const big = randn(rng(2), 64 * 8 + 16, 0.02);
      const view = big.subarray(16);
      const [q1, q2] = await Promise.all([
        pool.quantize({ method: 'rtn', w: owned, K: 64, N: 8, params: { bits: 4, blockSize: 32, symmetric: true } }),
        pool.quantize({ method: 'rtn', w: view, K: 64, N: 8, params: { bits: 4, blockSize: 32, symmetric: true } }),
      ]);
      expect(owned.length).toBe(0); // detached: transferred, not copied
      expect(view.length).toBe(64 * 8); // caller's view left intact
      expect(q1!.codes.length).toBe(8 * 64);
      expect(q2!.scales.length).toBe(8 * 2);
    } finally {
      await pool.close();
    }
  }, 30_000);

  it('reports a failing job with the method name', async () => {
    await expect(
      quantizeAll(
        [
          { method: 'rtn', w: new Float32Array(10), K: 64, N: 8, params: { bits: 4, blockSize: 32, symmetric: true } },
          { method: 'rtn', w: new Float32Array(64), K: 64, N: 1, params: { bits: 4, blockSize: 32, symmetric: true } },
        ],
        2,
      ),
    ).rejects.toThrow(/quantizing with 'rtn'.*expected K\*N/);
  }, 30_000);
});
