// Kernel harness: builds seeded weights and inputs, runs the WGSL kernels in a browser page
// (headless Chromium's WebGPU; the caller supplies the page), checks them against the CPU
// references and times them. No printing: results come back as data.
import { runOnPage, type PageJob, type PageRequest, type PageResult } from './gpu-page.js';
import { PackedWeights, QuantShape, fromHalf, halfArray, randomFloats, randomWeights, roundHalf, seeded, weightBytes } from './layout.js';
import { gatherBlockQuantizedRef, matMulNBitsRef, relError } from './reference.js';
import { GEMV, Kernel, ShaderOptions, copyKernel, gatherKernel, gemmKernel, gemvKernel } from './wgsl.js';

/** Something that can run a self-contained function in a WebGPU page (runtime/webgpu-browser.ts). */
export interface KernelPage {
  evaluate<R, A>(fn: (arg: A) => Promise<R>, arg: A): Promise<R>;
}

export type KernelOp = 'gemv' | 'gemm' | 'gather';
/** f32; f16 on the adapter's shader-f16; f16-text: the f16 shader with f16 aliased to f32 (compile check
 * on adapters without shader-f16); subgroups: the f32 GEMV reduced with subgroupAdd. */
export type KernelPath = 'f32' | 'f16' | 'f16-text' | 'subgroups';

export interface KernelCase extends QuantShape {
  op: KernelOp;
  /** Rows of A (gemv/gemm) or number of indices (gather). */
  M: number;
}

export interface CheckResult {
  kernel: string;
  op: KernelOp;
  path: KernelPath;
  shape: string;
  relError: number;
  tolerance: number;
  ok: boolean;
  errors: string[];
}

export interface AdapterFeatures {
  features: string[];
  subgroupMinSize: number;
  subgroupMaxSize: number;
  adapter: string;
}

const b64 = (u: ArrayBufferView): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('base64');

export async function adapterFeatures(page: KernelPage): Promise<AdapterFeatures> {
  const r = await page.evaluate(runOnPage, { features: [], jobs: [] });
  return { features: r.features, subgroupMinSize: r.subgroupMinSize, subgroupMaxSize: r.subgroupMaxSize, adapter: r.adapter };
}

/** The paths this adapter can run (f16-text stands in for f16 where shader-f16 is missing). */
export function pathsFor(op: KernelOp, a: AdapterFeatures): KernelPath[] {
  const paths: KernelPath[] = ['f32', a.features.includes('shader-f16') ? 'f16' : 'f16-text'];
  if (op === 'gemv' && a.features.includes('subgroups') && a.subgroupMaxSize > 0 && a.subgroupMaxSize <= GEMV.lanes)
    paths.push('subgroups');
  return paths;
}

function options(path: KernelPath, a?: AdapterFeatures): ShaderOptions {
  const o: ShaderOptions = { f16: path === 'f16' || path === 'f16-text', f16AsF32: path === 'f16-text', subgroups: path === 'subgroups' };
  if (o.subgroups && a && a.subgroupMinSize === a.subgroupMaxSize) o.subgroupSize = a.subgroupMaxSize;
  return o;
}

export function kernelFor(c: KernelCase, path: KernelPath, a?: AdapterFeatures): Kernel {
  const o = options(path, a);
  if (c.op === 'gemv') return gemvKernel(c, c.M, o);
  if (c.op === 'gemm') return gemmKernel(c, c.M, o);
  return gatherKernel(c, c.M, o);
}

export function shapeName(c: KernelCase): string {
  const dims = c.op === 'gather' ? `${c.M} ids of ${c.N}x${c.K}` : `M=${c.M} K=${c.K} N=${c.N}`;
  return `${dims} block ${c.blockSize}${c.zeroPoints ? ' zp' : ' sym'}`;
}

interface Prepared {
  job: PageJob;
  expect: Float32Array;
  half: boolean;
}

/** Inputs, the page job and the reference output for one case on one path. */
function prepare(c: KernelCase, path: KernelPath, seed: number, a: AdapterFeatures | undefined, reps = 0, trials = 0): Prepared {
  const kernel = kernelFor(c, path, a);
  const w = randomWeights(c, seed);
  const half = path === 'f16';
  // The f16 path computes from fp16 inputs: the reference sees the same rounded values.
  const ref: PackedWeights = half ? { ...w, scales: roundHalf(w.scales) } : w;
  const scales = half ? halfArray(w.scales) : w.scales;
  const buffers = [];
  let expect: Float32Array;
  const outCount = c.M * (c.op === 'gather' ? c.K : c.N);
  if (c.op === 'gather') {
    const rand = seeded(seed + 1);
    // Mostly valid rows, plus the edges, a negative index and out-of-range ones.
    const idx = Int32Array.from({ length: c.M }, (_, i) =>
      i === 0 ? c.N - 1 : i === 1 ? -1 : i === 2 ? c.N : i === 3 ? -c.N - 1 : (rand() * c.N) | 0,
    );
    expect = gatherBlockQuantizedRef(idx, ref);
    buffers.push({ b64: b64(idx), bytes: idx.byteLength });
  } else {
    let a = randomFloats(seeded(seed + 1), c.M * c.K);
    if (half) a = roundHalf(a);
    expect = matMulNBitsRef(a, c.M, ref);
    const aw = half ? halfArray(a) : a;
    buffers.push({ b64: b64(aw), bytes: aw.byteLength });
  }
  buffers.push({ b64: b64(w.b), bytes: w.b.byteLength });
  buffers.push({ b64: b64(scales), bytes: scales.byteLength });
  if (w.zp) buffers.push({ b64: b64(w.zp), bytes: w.zp.byteLength });
  buffers.push({ bytes: outCount * (half ? 2 : 4) });
  return { job: { name: kernel.name, wgsl: kernel.wgsl, dispatch: kernel.dispatch, buffers, read: true, reps, trials }, expect, half };
}

function decodeOut(b64s: string | undefined, half: boolean): Float32Array {
  if (!b64s) return new Float32Array();
  const u = new Uint8Array(Buffer.from(b64s, 'base64'));
  if (half) return Float32Array.from(new Uint16Array(u.buffer, u.byteOffset, u.byteLength >> 1), fromHalf);
  return new Float32Array(u.buffer, u.byteOffset, u.byteLength >> 2).slice();
}

/** Run every case on every path the adapter offers and compare with the CPU reference. */
export async function checkKernels(
  page: KernelPage,
  cases: KernelCase[],
  seed = 1,
): Promise<{ adapter: AdapterFeatures; results: CheckResult[] }> {
  const adapter = await adapterFeatures(page);
  const prepared: { c: KernelCase; path: KernelPath; p: Prepared }[] = [];
  for (const [i, c] of cases.entries()) {
    for (const path of pathsFor(c.op, adapter)) prepared.push({ c, path, p: prepare(c, path, seed + i * 7919, adapter) });
  }
  const features = [...new Set(prepared.flatMap((x) => kernelFor(x.c, x.path, adapter).features))];
  const req: PageRequest = { features, jobs: prepared.map((x) => x.p.job) };
  const res: PageResult = await page.evaluate(runOnPage, req);
  const results = prepared.map((x, i): CheckResult => {
    const r = res.results[i]!;
    const got = decodeOut(r.out, x.p.half);
    const err = r.errors.length ? Infinity : relError(x.p.expect, got);
    const tolerance = x.p.half ? 1e-2 : 1e-3;
    return {
      kernel: r.name,
      op: x.c.op,
      path: x.path,
      shape: shapeName(x.c),
      relError: err,
      tolerance,
      ok: err < tolerance,
      errors: r.errors,
    };
  });
  return { adapter, results };
}

export interface TimedKernel {
  name: string;
  /** Seconds per dispatch (median of trials). */
  seconds: number;
  timer: 'timestamp' | 'wall';
  /** Weight bytes read per call (B, scales, zero points). */
  weightBytes: number;
  /** Relative error of the timed run's own output against the reference. */
  relError: number;
}

/** Time one case on one path (its output is checked too, so a fast wrong kernel cannot pass). */
export async function timeKernel(
  page: KernelPage,
  c: KernelCase,
  path: KernelPath,
  reps: number,
  trials: number,
  seed = 1,
  a?: AdapterFeatures,
): Promise<TimedKernel> {
  const p = prepare(c, path, seed, a, reps, trials);
  const kernel = kernelFor(c, path, a);
  const res = await page.evaluate(runOnPage, { features: kernel.features, jobs: [p.job] });
  const r = res.results[0]!;
  if (r.errors.length || r.seconds === undefined) throw new Error(`${kernel.name}: ${r.errors[0] ?? 'not timed'}`);
  return {
    name: kernel.name,
    seconds: r.seconds,
    timer: r.timer!,
    weightBytes: weightBytes(c, p.half ? 2 : 4),
    relError: relError(p.expect, decodeOut(r.out, p.half)),
  };
}

/** Bytes per second a plain copy of `bytes` reaches (bytes read, not read + written). */
export async function copyBandwidth(
  page: KernelPage,
  bytes: number,
  reps: number,
  trials: number,
): Promise<{ bytesPerSecond: number; timer: 'timestamp' | 'wall' }> {
  const k = copyKernel(bytes);
  const res = await page.evaluate(runOnPage, {
    features: [],
    jobs: [{ name: k.name, wgsl: k.wgsl, dispatch: k.dispatch, buffers: [{ bytes }, { bytes }], read: false, reps, trials }],
  });
  const r = res.results[0]!;
  if (r.errors.length || !r.seconds) throw new Error(`copy kernel: ${r.errors[0] ?? 'not timed'}`);
  return { bytesPerSecond: bytes / r.seconds, timer: r.timer! };
}
