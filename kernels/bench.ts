// `edgec kernels bench`: our WGSL MatMulNBits kernels against onnxruntime-web's own MatMulNBits
// (WebGPU EP) on the same shapes and the same weights, in the same browser run, both timed by GPU
// timestamps where the adapter has them; plus GB/s of weights read and the fraction of a plain
// buffer copy's bandwidth measured in the same run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataType, GraphBuilder, Tensor, saveModel } from '../ir/index.js';
import {
  AdapterFeatures,
  KernelCase,
  KernelPage,
  KernelPath,
  TimedKernel,
  adapterFeatures,
  copyBandwidth,
  pathsFor,
  timeKernel,
} from './harness.js';
import { randomFloats, randomWeights, seeded, zpRowBytes } from './layout.js';

/** What the bench needs from the browser besides running kernels: onnxruntime-web's profiler. */
export interface OrtWebProfiler extends KernelPage {
  profile(
    modelFile: string,
    feeds: Record<string, Tensor>,
    opts: { ep: 'webgpu'; runs: number },
  ): Promise<{
    wallMs: number[];
    nodes: { op: string; us: number }[];
    gpuNodes: { op: string; us: number }[];
  }>;
}

export interface BenchShape {
  M: number;
  K: number;
  N: number;
  label: string;
}

/** Decoder GEMVs of 0.5B / 1.5B / 3B models and a 128-token prefill GEMM. */
export const DEFAULT_SHAPES = ['896x896', '1536x8960', '3072x3072', '128x896x896'];

/** "KxN" (a decode GEMV, M = 1) or "MxKxN". */
export function parseShape(s: string): BenchShape {
  const p = s.trim().split('x').map(Number);
  if (!(p.length === 2 || p.length === 3) || p.some((v) => !Number.isInteger(v) || v <= 0)) {
    throw new Error(`bad shape '${s}': write KxN for a GEMV or MxKxN for a GEMM, e.g. 1536x8960 or 128x896x896`);
  }
  const [M, K, N] = p.length === 2 ? [1, p[0]!, p[1]!] : [p[0]!, p[1]!, p[2]!];
  return { M, K, N, label: `${M > 1 ? `${M}x` : ''}${K}x${N}` };
}

export interface BenchOptions {
  shapes?: string[];
  blockSize?: number;
  /** onnxruntime-web runs per shape after one warm-up (default 3). */
  ortRuns?: number;
  /** Seconds each of our timed passes aims at (default 0.3). */
  targetSeconds?: number;
}

export interface BenchRow {
  shape: string;
  M: number;
  K: number;
  N: number;
  kernel: string;
  path: KernelPath;
  oursMs: number;
  ortMs: number;
  /** onnxruntime-web time / ours: above 1 means ours is faster. */
  ratio: number;
  /** Weight bytes read per second by our kernel. */
  weightGBs: number;
  /** weightGBs over the copy kernel's read bandwidth. */
  copyFraction: number;
  ortTimer: 'gpu-timestamp' | 'host-kernel' | 'wall';
  relError: number;
}

export interface BenchResult {
  adapter: AdapterFeatures;
  timer: 'timestamp' | 'wall';
  copyGBs: number;
  blockSize: number;
  rows: BenchRow[];
}

function ortModel(dir: string, c: KernelCase, seed: number): string {
  const w = randomWeights(c, seed);
  const b = new GraphBuilder({ opset: 17, opsets: { 'com.microsoft': 1 } });
  const A = b.input('A', DataType.FLOAT, [c.M, c.K]);
  const ins = [
    A,
    b.initializer(Tensor.fromBytes('B', DataType.UINT8, [c.N, w.kBlocks, c.blockSize / 2], w.b)),
    b.initializer(Tensor.fromFloat32('scales', [c.N * w.kBlocks], w.scales)),
  ];
  if (w.zp) ins.push(b.initializer(Tensor.fromBytes('zero_points', DataType.UINT8, [c.N, zpRowBytes(w.kBlocks)], w.zp)));
  const y = b.op('MatMulNBits', ins, {
    domain: 'com.microsoft',
    name: 'matmul',
    attrs: { K: c.K, N: c.N, bits: 4, block_size: c.blockSize },
  })[0]!;
  b.output(y, 'Y', DataType.FLOAT, [c.M, c.N]);
  const file = path.join(dir, `mnb_${c.M}x${c.K}x${c.N}.onnx`);
  saveModel(b.build(), file, { externalData: false });
  return file;
}

/** Time one path: a single dispatch first to size the timed passes. */
async function timeOurs(page: KernelPage, c: KernelCase, p: KernelPath, targetSeconds: number, a: AdapterFeatures): Promise<TimedKernel> {
  const first = await timeKernel(page, c, p, 1, 1, 1, a);
  const reps = Math.max(1, Math.min(100, Math.round(targetSeconds / first.seconds)));
  return timeKernel(page, c, p, reps, 3, 1, a);
}

export async function benchKernels(page: OrtWebProfiler, opts: BenchOptions = {}): Promise<BenchResult> {
  const shapes = (opts.shapes ?? DEFAULT_SHAPES).map(parseShape);
  const blockSize = opts.blockSize ?? 32;
  const adapter = await adapterFeatures(page);
  const copy = await copyBandwidth(page, 32 * 1024 * 1024, 4, 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-kbench-'));
  const rows: BenchRow[] = [];
  try {
    for (const [i, s] of shapes.entries()) {
      const c: KernelCase = { op: s.M === 1 ? 'gemv' : 'gemm', M: s.M, K: s.K, N: s.N, blockSize, zeroPoints: false };
      const seed = 100 + i;
      // f32 on both sides (the onnxruntime model is f32); subgroups where the adapter has them.
      const paths = pathsFor(c.op, adapter).filter((p) => p === 'f32' || p === 'subgroups');
      let best: TimedKernel | undefined,
        bestPath: KernelPath = 'f32';
      for (const p of paths) {
        const t = await timeOurs(page, c, p, opts.targetSeconds ?? 0.3, adapter);
        if (!best || t.seconds < best.seconds) {
          best = t;
          bestPath = p;
        }
      }
      const file = ortModel(dir, c, seed);
      const a = Tensor.fromFloat32('A', [s.M, s.K], randomFloats(seeded(seed + 1), s.M * s.K));
      const prof = await page.profile(file, { A: a }, { ep: 'webgpu', runs: opts.ortRuns ?? 3 });
      const gpu = prof.gpuNodes.reduce((n, x) => n + x.us, 0);
      const host = prof.nodes.filter((x) => x.op === 'MatMulNBits').reduce((n, x) => n + x.us, 0);
      const wall = [...prof.wallMs].sort((x, y) => x - y)[prof.wallMs.length >> 1] ?? 0;
      const [ortMs, ortTimer] =
        gpu > 0 ? [gpu / 1e3, 'gpu-timestamp' as const] : host > 0 ? [host / 1e3, 'host-kernel' as const] : [wall, 'wall' as const];
      const weightGBs = best!.weightBytes / best!.seconds / 1e9;
      rows.push({
        shape: s.label,
        M: s.M,
        K: s.K,
        N: s.N,
        kernel: best!.name,
        path: bestPath,
        oursMs: best!.seconds * 1e3,
        ortMs,
        ratio: ortMs / (best!.seconds * 1e3),
        weightGBs,
        copyFraction: weightGBs / (copy.bytesPerSecond / 1e9),
        ortTimer,
        relError: best!.relError,
      });
      fs.rmSync(file, { force: true });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { adapter, timer: copy.timer, copyGBs: copy.bytesPerSecond / 1e9, blockSize, rows };
}
