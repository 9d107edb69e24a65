// `edgec kernels bench|check`: our WGSL int4 kernels in headless Chromium's WebGPU, against
// onnxruntime-web's MatMulNBits (bench) or the CPU references (check).
import type { Command } from 'commander';
import { CheckError, InputError } from '../../ir/index.js';
import { DEFAULT_SHAPES, benchKernels, parseShape } from '../../kernels/bench.js';
import { checkKernels, type KernelCase } from '../../kernels/harness.js';
import type { RegisterCommand } from './index.js';
import { table } from '../format.js';

const CHECK_CASES: KernelCase[] = [
  { op: 'gemv', M: 1, K: 896, N: 96, blockSize: 32, zeroPoints: false },
  { op: 'gemv', M: 1, K: 200, N: 37, blockSize: 64, zeroPoints: true },
  { op: 'gemv', M: 2, K: 390, N: 21, blockSize: 128, zeroPoints: false },
  { op: 'gemm', M: 37, K: 200, N: 45, blockSize: 32, zeroPoints: true },
  { op: 'gemm', M: 64, K: 256, N: 96, blockSize: 128, zeroPoints: false },
  { op: 'gather', M: 11, K: 96, N: 50, blockSize: 32, zeroPoints: true },
  { op: 'gather', M: 6, K: 256, N: 9, blockSize: 128, zeroPoints: false },
];

// Loaded on demand: playwright-core is only needed when a browser runs.
async function launchBrowser() {
  const { WebGpuBrowser } = await import('../../runtime/webgpu-browser.js');
  return WebGpuBrowser.launch();
}

export const registerKernels: RegisterCommand = (program: Command, setExit) => {
  const k = program
    .command('kernels')
    .description('WGSL int4 kernels (MatMulNBits GEMV/GEMM, GatherBlockQuantized) in headless Chromium WebGPU')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec kernels check                                   # our kernels against their CPU references
  $ edgec kernels bench --shapes 4096x4096,1x4096x11008   # ours vs onnxruntime-web's MatMulNBits, GB/s`,
    );
  k.command('bench')
    .description(
      "ours vs onnxruntime-web's MatMulNBits (WebGPU EP) per shape, GB/s of weights and the fraction of a plain copy's bandwidth",
    )
    .option('--shapes <list>', `comma-separated KxN (decode GEMV) or MxKxN (GEMM) (default ${DEFAULT_SHAPES.join(',')})`)
    .option('--block-size <n>', 'quantization block (32, 64, 128)', '32')
    .option('--runs <n>', 'onnxruntime-web runs per shape', '3')
    .option('--json', 'print JSON')
    .action(async (o: { shapes?: string; blockSize: string; runs: string; json?: boolean }) => {
      const shapes = o.shapes ? o.shapes.split(',') : undefined;
      try {
        shapes?.forEach(parseShape);
      } catch (e) {
        throw new InputError(`--shapes: ${(e as Error).message}`);
      }
      const blockSize = Number(o.blockSize);
      if (![32, 64, 128].includes(blockSize)) throw new InputError(`--block-size must be 32, 64 or 128, got '${o.blockSize}'`);
      const browser = await launchBrowser();
      try {
        const r = await benchKernels(browser, { shapes, blockSize, ortRuns: Math.max(1, Number(o.runs) || 3) });
        if (o.json) {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        process.stdout.write(`adapter ${r.adapter.adapter}, timer ${r.timer}, copy ${r.copyGBs.toFixed(2)} GB/s, block ${r.blockSize}\n`);
        const rows = [['shape', 'kernel', 'ours ms', 'ort ms', 'ort/ours', 'weights GB/s', 'of copy', 'rel err']];
        for (const x of r.rows)
          rows.push([
            x.shape,
            x.kernel,
            x.oursMs.toFixed(3),
            x.ortMs.toFixed(3),
            `${x.ratio.toFixed(2)}x`,
            x.weightGBs.toFixed(3),
            `${(x.copyFraction * 100).toFixed(1)}%`,
            x.relError.toExponential(1),
          ]);
        process.stdout.write(`${table(rows, '', [false, false, true, true, true, true, true, true]).join('\n')}\n`);
      } finally {
        await browser.close();
      }
    });
  k.command('check')
    .description('run every kernel on each path the adapter has (f32, f16 or its compile check, subgroups) against the CPU references')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const browser = await launchBrowser();
      try {
        const r = await checkKernels(browser, CHECK_CASES);
        const bad = r.results.filter((x) => !x.ok);
        if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        else {
          const rows = [['kernel', 'path', 'shape', 'rel err', 'limit', 'ok']];
          for (const x of r.results)
            rows.push([
              x.kernel,
              x.path,
              x.shape,
              x.errors.length ? x.errors[0]!.slice(0, 60) : x.relError.toExponential(1),
              x.tolerance.toExponential(0),
              x.ok ? 'ok' : 'FAIL',
            ]);
          process.stdout.write(`adapter ${r.adapter.adapter}\n${table(rows).join('\n')}\n`);
        }
        if (bad.length)
          throw new CheckError(
            `${bad.length} kernel runs exceed their tolerance`,
            bad.map((x) => `${x.kernel} ${x.path} ${x.shape}: ${x.relError}`),
          );
      } finally {
        await browser.close();
      }
      setExit(0);
    });
};
