// Quantization speed and memory, as ratios measured in one run:
// (a) RTN block-32 kernel throughput (GB/s of fp32 input) on 1 and 2 threads, next to a plain
//     sequential read and a Float32Array.set copy of the same bytes (median of 3 after warm-up),
//     and the cost of the better methods (mse-search throughput, one GPTQ layer);
// (b) end to end on a >= 1 GB external-data model: a plain sequential read of its data file (16 MiB
//     fs.readSync chunks), then load + quantize-int4 + save on 1 and 2 threads, each in a child
//     process so the peak RSS is its own: pass throughput in GB/s of fp32 input (fp32 bytes of the
//     quantized weights / pass time) next to the read, and peak RSS against 0.25 x model + 256 MB;
//     then the QDQ format on 1 thread (streamed RTN repacked into the DequantizeLinear layout).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModel, saveModel } from '../ir/index.js';
import { rtnQuantize } from '../passes/quant/methods/rtn.js';
import { mseSearchQuantize } from '../passes/quant/methods/mse-search.js';
import { gptqQuantize } from '../passes/quant/methods/gptq.js';
import { createQuantPool, type QuantJob } from '../passes/quant/workers.js';
import { rng, randn } from '../runtime/ort.js';
import type { QuantizeStats } from '../passes/quantize.js';

export interface QuantizeBenchOptions {
  /** Model for the end-to-end run (e.g. fixtures/big-decoder.ts writeBigDecoder); skipped when absent. */
  modelFile?: string;
  /** Scratch folder for the quantized output. */
  work: string;
  /** fp32 bytes for the kernel runs (default 256 MiB). */
  kernelBytes?: number;
  /** Quantize pass method (default rtn). */
  method?: string;
  /** Run the kernel figures too (default true; a second model needs them once). */
  kernel?: boolean;
}

export interface KernelFigures {
  bytes: number;
  /** GB/s of fp32 input, median of 3. */
  copyGBs: number;
  readGBs: number;
  rtn1GBs: number;
  rtn2GBs: number;
  /** The data-free search on a 16 MiB slice of the same weights (GB/s of fp32 input). */
  mseSearchGBs: number;
  /** GPTQ of one 1024 x 1024 weight with 512 calibration rows (ms, with its held-out check). */
  gptqMs: number;
}

export interface EndToEndRun {
  threads: number;
  format: 'matmulnbits' | 'qdq';
  loadMs: number;
  passMs: number;
  saveMs: number;
  /** fp32 bytes of the weights the pass quantized. */
  fp32Bytes: number;
  /** fp32Bytes / passMs. */
  passGBs: number;
  /** fp32Bytes / (load + pass + save). */
  totalGBs: number;
  peakRssBytes: number;
  quantized: number;
  /** CPU time (user + system, every thread) of load + pass + save, ms: steadier than wall time on a shared machine. */
  cpuMs: number;
  /** The same for each phase: load, pass, save. */
  cpuPhasesMs: [number, number, number];
}

export interface EndToEndFigures {
  modelBytes: number;
  layout: 'external' | 'embedded';
  /** fs.copyFileSync of the model's files (ms, best of 2), in the same run. */
  copyMs: number;
  /** CPU time of that copy (ms). */
  copyCpuMs: number;
  /** 1-minute load average when the runs ended (2 cores here, shared). */
  loadAvg: number;
  /** Sequential fs.readSync of the external data file in 16 MiB chunks (GB/s), in the same run. */
  readGBs: number;
  runs: EndToEndRun[];
  /** The aim: peak RSS <= 0.25 x model + 256 MB. */
  rssBudgetBytes: number;
}

export interface QuantizeBenchResult {
  kernel?: KernelFigures;
  endToEnd?: EndToEndFigures;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** One cold and two warm-up calls, then the median of 3 timed ones (ms). */
async function timeIt(fn: () => unknown | Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

function readSum(a: Float32Array): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  const n = a.length & ~3;
  for (let i = 0; i < n; i += 4) {
    s0 += a[i]!;
    s1 += a[i + 1]!;
    s2 += a[i + 2]!;
    s3 += a[i + 3]!;
  }
  return s0 + s1 + s2 + s3;
}

export async function benchKernel(bytes = 256 * 2 ** 20): Promise<KernelFigures> {
  const K = 4096,
    N = Math.max(2, Math.floor(bytes / 4 / K) & ~1);
  const w = randn(rng(1), K * N, 0.02);
  const gbs = (ms: number) => w.byteLength / 1e9 / (ms / 1e3);
  const dst = new Float32Array(w.length);
  const copyMs = await timeIt(() => dst.set(w));
  let sink = 0;
  const readMs = await timeIt(() => {
    sink += readSum(w);
  });
  const p = { bits: 4 as const, blockSize: 32, symmetric: true };
  const rtn1Ms = await timeIt(() => rtnQuantize(w, K, N, p));
  // Two threads: two halves of the output columns as two jobs. Inputs are prepared outside the
  // timed region (jobs transfer, so each run needs its own), results come back by transfer.
  const half = N / 2;
  const halves = [new Float32Array(K * half), new Float32Array(K * half)];
  for (let k = 0; k < K; k++) for (let h = 0; h < 2; h++) halves[h]!.set(w.subarray(k * N + h * half, k * N + (h + 1) * half), k * half);
  const pool = await createQuantPool({ threads: 2 });
  let rtn2Ms: number;
  try {
    const runs: QuantJob[][] = [];
    const next = () => runs.shift()!;
    for (let i = 0; i < 6; i++) runs.push(halves.map((h) => ({ method: 'rtn', w: h.slice(), K, N: half, params: p })));
    rtn2Ms = await timeIt(() => Promise.all(next().map((j) => pool.quantize(j))));
  } finally {
    await pool.close();
  }
  if (sink === 12345.678) console.log(sink); // keeps the read loop from being optimised away
  const slice = w.subarray(0, K * 1024);
  const mseMs = await timeIt(() => mseSearchQuantize(slice, K, 1024, p));
  const gw = w.subarray(0, 1024 * 1024),
    gx = randn(rng(2), 512 * 1024);
  const t0 = performance.now();
  gptqQuantize(gw, 1024, 1024, p, { x: gx, rows: 512 });
  const gptqMs = performance.now() - t0;
  return {
    bytes: w.byteLength,
    copyGBs: gbs(copyMs),
    readGBs: gbs(readMs),
    rtn1GBs: gbs(rtn1Ms),
    rtn2GBs: gbs(rtn2Ms),
    mseSearchGBs: slice.byteLength / 1e9 / (mseMs / 1e3),
    gptqMs,
  };
}

function modelBytes(modelFile: string): number {
  const dir = path.dirname(modelFile),
    base = path.basename(modelFile);
  return fs
    .readdirSync(dir)
    .filter((f) => f === base || f.startsWith(`${base}.data`) || f.endsWith('.data'))
    .reduce((s, f) => s + fs.statSync(path.join(dir, f)).size, 0);
}

/** Runs in a child so its peak RSS is its own. */
function childQuantize(modelFile: string, outDir: string, method: string, threads: number, format: EndToEndRun['format']): EndToEndRun {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [self, modelFile, outDir, method, String(threads), format], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`quantize child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** Where the weights lie, for the plain read: the data files, or the model itself when embedded. */
function dataFiles(modelFile: string): string[] {
  const dir = path.dirname(modelFile),
    base = path.basename(modelFile);
  const data = fs
    .readdirSync(dir)
    .filter((f) => f !== base && (f.startsWith(`${base}.data`) || f.endsWith('.data')))
    .map((f) => path.join(dir, f));
  return data.length ? data : [modelFile];
}

/** Sequential fs.readSync in 16 MiB chunks: bytes read and ms. */
function plainRead(files: string[]): { bytes: number; ms: number } {
  const buf = Buffer.allocUnsafe(16 << 20);
  let bytes = 0;
  const t0 = performance.now();
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) bytes += n;
    } finally {
      fs.closeSync(fd);
    }
  }
  return { bytes, ms: performance.now() - t0 };
}

const cpuBetween = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage) => (b.user - a.user + b.system - a.system) / 1e3;
const cpuSince = (c: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(c);
  return (u.user + u.system) / 1e3;
};

/** Copy files into a fresh folder: wall and CPU ms (the folder is removed after). */
function copyFiles(files: string[], dir: string): { ms: number; cpuMs: number } {
  fs.mkdirSync(dir, { recursive: true });
  const t0 = performance.now(),
    c0 = process.cpuUsage();
  for (const f of files) fs.copyFileSync(f, path.join(dir, path.basename(f)));
  const ms = performance.now() - t0,
    cpuMs = cpuSince(c0);
  fs.rmSync(dir, { recursive: true, force: true });
  return { ms, cpuMs };
}

export async function benchQuantize(opts: QuantizeBenchOptions): Promise<QuantizeBenchResult> {
  const kernel = opts.kernel === false ? undefined : await benchKernel(opts.kernelBytes);
  if (!opts.modelFile) return { kernel };
  const size = modelBytes(opts.modelFile);
  const out = path.join(opts.work, 'quantized');
  try {
    // Warm the page cache once, as the quantize runs find it, then time the read (best of 2).
    const files = dataFiles(opts.modelFile);
    plainRead(files);
    const reads = [plainRead(files), plainRead(files)];
    const read = reads.reduce((a, b) => (b.ms < a.ms ? b : a));
    const layout = files[0] === opts.modelFile ? 'embedded' : 'external';
    const copies = [0, 1].map(() => copyFiles([opts.modelFile!, ...(layout === 'external' ? files : [])], path.join(opts.work, 'copy')));
    const runs = (
      [
        [1, 'matmulnbits'],
        [2, 'matmulnbits'],
        [1, 'qdq'],
      ] as const
    ).map(([threads, format]) => childQuantize(opts.modelFile!, out, opts.method ?? 'rtn', threads, format));
    return {
      kernel,
      endToEnd: {
        modelBytes: size,
        layout,
        copyMs: Math.min(...copies.map((x) => x.ms)),
        copyCpuMs: Math.min(...copies.map((x) => x.cpuMs)),
        loadAvg: os.loadavg()[0]!,
        readGBs: read.bytes / 1e9 / (read.ms / 1e3),
        runs,
        rssBudgetBytes: 0.25 * size + 256e6,
      },
    };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** Printable lines for bench/run.ts. */
export function formatQuantizeBench(r: QuantizeBenchResult): string[] {
  const k = r.kernel,
    f = (x: number, d = 2) => x.toFixed(d);
  const lines = !k
    ? []
    : [
        `RTN int4 block 32 kernel, ${f(k.bytes / 2 ** 20, 0)} MiB fp32, median of 3 (GB/s of fp32 input)`,
        `  Float32Array.set copy      ${f(k.copyGBs)} GB/s`,
        `  sequential read-sum        ${f(k.readGBs)} GB/s`,
        `  rtn, 1 thread              ${f(k.rtn1GBs)} GB/s   = ${f(k.rtn1GBs / k.readGBs, 3)}x read, ${f(k.rtn1GBs / k.copyGBs, 3)}x copy (aim >= 1 GB/s)`,
        `  rtn, 2 worker threads      ${f(k.rtn2GBs)} GB/s   = ${f(k.rtn2GBs / k.rtn1GBs)}x 1 thread`,
        `  mse-search, 1 thread       ${f(k.mseSearchGBs * 1e3, 1)} MB/s = ${f(k.rtn1GBs / k.mseSearchGBs, 0)}x slower than rtn`,
        `  gptq 1024x1024, 512 rows   ${f(k.gptqMs, 0)} ms (K^2 N work: a 4096x4096 weight is ~64x that)`,
      ];
  const e = r.endToEnd;
  if (e) {
    const mib = (b: number) => f(b / 2 ** 20, 0);
    lines.push(
      `quantize-int4 (rtn, block 32) end to end, ${f(e.modelBytes / 1e9, 3)} GB model with ${e.layout === 'embedded' ? 'weights embedded in the .onnx' : 'external data'} (GB/s of fp32 input)`,
      `  plain read, 16 MiB readSync ${f(e.readGBs)} GB/s;  file copy ${f(e.copyMs, 0)} ms (CPU ${f(e.copyCpuMs, 0)} ms); load average ${f(e.loadAvg, 1)} on ${os.cpus().length} cores`,
      ...e.runs.flatMap((x) => [
        `  ${x.format === 'qdq' ? 'qdq, ' : ''}${x.threads} thread${x.threads > 1 ? 's' : ' '}: quantize pass  ${f(x.passGBs)} GB/s   = ${f(x.passGBs / e.readGBs, 3)}x read, ${f(x.passGBs / x.threads)} GB/s per thread (aim >= 1); ${x.quantized} weights, ${f(x.fp32Bytes / 1e9, 3)} GB fp32 in ${f(x.passMs, 0)} ms`,
        `             load+pass+save ${f(x.totalGBs)} GB/s   (load ${f(x.loadMs, 0)} ms, save ${f(x.saveMs, 0)} ms) = ${f((x.loadMs + x.passMs + x.saveMs) / e.copyMs)}x the file copy (aim <= 3x); CPU ${f(x.cpuMs, 0)} ms = ${f(x.cpuMs / e.copyCpuMs)}x the copy's (load/pass/save ${x.cpuPhasesMs.map((v) => f(v, 0)).join('/')})`,
        `             peak RSS       ${mib(x.peakRssBytes)} MiB = ${f(x.peakRssBytes / e.modelBytes, 3)}x model (aim <= 0.25x + 256 MB = ${mib(e.rssBudgetBytes)} MiB: ${x.peakRssBytes <= e.rssBudgetBytes ? 'met' : 'MISSED'})`,
      ]),
    );
  }
  return lines;
}

/**
 * This process's own peak RSS. Linux keeps ru_maxrss across exec, so a child spawned by a large
 * parent would report the parent's peak; VmHWM belongs to the new address space.
 */
export function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [modelFile, outDir, method, threadsArg, format] = process.argv.slice(2) as [string, string, string, string, EndToEndRun['format']];
  const threads = Number(threadsArg);
  const { quantizeInt4 } = await import('../passes/quantize.js');
  const { resolveOptions } = await import('../passes/pass.js');
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const m = loadModel(modelFile);
  const t1 = performance.now(),
    c1 = process.cpuUsage();
  const stats = await quantizeInt4.run(m, resolveOptions(quantizeInt4, { method, block: 32, sym: true, threads, format }), {});
  const t2 = performance.now(),
    c2 = process.cpuUsage();
  // Embedded in, embedded out (a 4-bit model is an eighth of its source).
  const embedded = !fs.readdirSync(path.dirname(modelFile)).some((f) => f.endsWith('.data'));
  saveModel(m, path.join(outDir, 'model.onnx'), { externalData: !embedded });
  const t3 = performance.now(),
    c3 = process.cpuUsage();
  const quantized = (stats.counts.matmul ?? 0) + (stats.counts.gemm ?? 0) + (stats.counts.gather ?? 0);
  const fp32Bytes = (stats as QuantizeStats).layers.reduce((s, l) => s + l.bytesBefore, 0);
  const run: EndToEndRun = {
    threads,
    format,
    loadMs: t1 - t0,
    passMs: t2 - t1,
    saveMs: t3 - t2,
    fp32Bytes,
    passGBs: fp32Bytes / 1e9 / ((t2 - t1) / 1e3),
    totalGBs: fp32Bytes / 1e9 / ((t3 - t0) / 1e3),
    peakRssBytes: peakRss(),
    quantized,
    cpuMs: cpuSince(c0),
    cpuPhasesMs: [cpuBetween(c0, c1), cpuBetween(c1, c2), cpuBetween(c2, c3)],
  };
  console.log(JSON.stringify(run));
}
