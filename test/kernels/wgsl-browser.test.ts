// The WGSL kernels in headless Chromium's WebGPU (SwiftShader here) against the CPU references:
// shapes that are not multiples of the tiles (GEMV rows of 8, GEMM 32x32 tiles, words of 8 codes),
// every block size, symmetric and uint8 zero points, on each path the adapter has. Correctness only.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH, WebGpuBrowser } from '../../runtime/webgpu-browser.js';
import { checkKernels, pathsFor, type AdapterFeatures, type CheckResult, type KernelCase } from '../../kernels/harness.js';

const HAVE_BROWSER = fs.existsSync(CHROMIUM_PATH);
let browser: WebGpuBrowser;
beforeAll(async () => {
  if (HAVE_BROWSER) browser = await WebGpuBrowser.launch();
});
afterAll(async () => {
  await browser?.close();
});

const CASES: KernelCase[] = [
  { op: 'gemv', M: 1, K: 512, N: 64, blockSize: 32, zeroPoints: false },
  { op: 'gemv', M: 1, K: 200, N: 37, blockSize: 64, zeroPoints: true },
  { op: 'gemv', M: 3, K: 390, N: 21, blockSize: 128, zeroPoints: false },
  { op: 'gemm', M: 37, K: 200, N: 45, blockSize: 32, zeroPoints: true },
  { op: 'gemm', M: 5, K: 131, N: 33, blockSize: 64, zeroPoints: false },
  { op: 'gather', M: 11, K: 96, N: 50, blockSize: 32, zeroPoints: true },
  { op: 'gather', M: 6, K: 256, N: 9, blockSize: 128, zeroPoints: false },
];

describe.skipIf(!HAVE_BROWSER)('WGSL int4 kernels match their CPU references in the browser', () => {
  let results: CheckResult[] = [];
  let adapter: AdapterFeatures;
  beforeAll(async () => {
    const r = await checkKernels(browser, CASES);
    results = r.results;
    adapter = r.adapter;
  });

  for (const c of CASES) {
    it(`${c.op} M=${c.M} K=${c.K} N=${c.N} block ${c.blockSize}${c.zeroPoints ? ' zp' : ''}`, () => {
      const mine = results.filter(
        (r) =>
          r.op === c.op &&
          r.shape.startsWith(c.op === 'gather' ? `${c.M} ids of ${c.N}x${c.K}` : `M=${c.M} K=${c.K} N=${c.N}`) &&
          r.shape.includes(`block ${c.blockSize}`),
      );
      // f32 and an f16 path always; subgroups on the GEMV where the adapter has them.
      expect(mine.map((r) => r.path)).toContain('f32');
      expect(mine.some((r) => r.path === 'f16' || r.path === 'f16-text')).toBe(true);
      // The subgroups GEMV wherever the adapter's subgroups fit a row (SwiftShader: size 4).
      if (c.op === 'gemv' && pathsFor('gemv', adapter).includes('subgroups')) expect(mine.map((r) => r.path)).toContain('subgroups');
      for (const r of mine) {
        expect(r.errors, `${r.kernel} ${r.path}`).toEqual([]);
        expect(r.relError, `${r.kernel} ${r.path}`).toBeLessThan(r.tolerance);
      }
    });
  }
});
