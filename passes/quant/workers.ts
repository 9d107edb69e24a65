// A worker_threads pool that quantizes many weights in parallel. Methods are pure functions of
// (weight, params, calibration), so results are byte-identical whatever the thread count; they
// come back in job order. Weights travel as transfers: a job's Float32Array is detached after
// submission when it owns its whole ArrayBuffer, otherwise it is copied once into one that it does.
// Streamed RTN units (rtn-stream.ts) carry no weight: a worker reads its file range itself into its
// window of one WebAssembly memory shared by the pool, and the kernel writes the results there.
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { getMethod } from './methods/index.js';
import type { CalibrationData, QuantExec, QuantizedWeight, QuantParams } from './types.js';
import { SHARED_MAX_PAGES, bindKernel } from './methods/rtn-simd.js';
import { runRtnUnit, type RtnUnitJob } from './rtn-stream.js';
import { runGptqStep, type GptqStep, type GptqStepResult } from './methods/gptq.js';

export interface QuantJob {
  /** Method name from the registry (methods/index.ts). */
  method: string;
  /** Float weight [K, N] row-major. Detached when running on workers (see above). */
  w: Float32Array;
  K: number;
  N: number;
  params: QuantParams;
  calib?: CalibrationData;
}

export interface PoolOptions {
  /** Worker threads; 0 or 1 quantizes on the calling thread. */
  threads?: number;
}

/** @internal message shapes shared with quant-worker.ts */
export type WorkerRequest =
  | (QuantJob & { id: number; kind?: undefined })
  | (RtnUnitJob & { id: number; kind: 'rtn-unit'; memory?: WebAssembly.Memory })
  | { id: number; kind: 'gptq'; step: GptqStep };
export type WorkerReply =
  { id: number; q: QuantizedWeight | ErrorSums | GptqStepResult; error?: undefined } | { id: number; error: string; q?: undefined };
/** @internal workerData of quant-worker.ts */
export interface WorkerInit {
  thread: number;
}

export interface ErrorSums {
  se: number;
  ss: number;
}

export interface QuantPool {
  readonly threads: number;
  quantize(job: QuantJob): Promise<QuantizedWeight>;
  /**
   * The memory streamed RTN works in (shared by the workers, made on first use): the caller lays
   * out the outputs and `threads` windows in it, growing it as needed, and reads the outputs back
   * once units are done.
   */
  readonly memory: WebAssembly.Memory;
  /** One unit of a streamed RTN weight (rtn-stream.ts); a worker reads its file range itself. */
  rtnUnit(job: RtnUnitJob): Promise<ErrorSums>;
  /** One step of GPTQ over a weight's column slices (methods/gptq.ts); its plan's arrays are shared, not copied. */
  gptq(step: GptqStep): Promise<GptqStepResult>;
  close(): Promise<void>;
}

let bundled: Promise<string> | undefined;

/** The compiled entry next to this file, or (running from .ts sources under vitest) its bundled code. */
async function workerScript(): Promise<{ script: URL | string; eval: boolean }> {
  if (!import.meta.url.endsWith('.ts')) return { script: new URL('./quant-worker.js', import.meta.url), eval: false };
  // Only reached from TypeScript sources, i.e. under vitest/vite, which ships esbuild. The bundle is
  // CommonJS so the worker can take it as `eval` code: no file to write or clean up.
  bundled ??= (import('esbuild' as string) as Promise<{ build(o: object): Promise<{ outputFiles: { text: string }[] }> }>)
    .then((esbuild) =>
      esbuild.build({
        entryPoints: [fileURLToPath(new URL('./quant-worker.ts', import.meta.url))],
        bundle: true,
        platform: 'node',
        format: 'cjs',
        write: false,
        logLevel: 'silent',
      }),
    )
    .then((r) => r.outputFiles[0]!.text);
  return { script: await bundled, eval: true };
}

function ownBuffer(w: Float32Array): Float32Array {
  const b = w.buffer;
  if (b instanceof ArrayBuffer && w.byteOffset === 0 && w.byteLength === b.byteLength) return w;
  return w.slice();
}

export async function createQuantPool(opts: PoolOptions = {}): Promise<QuantPool> {
  const threads = Math.max(0, Math.floor(opts.threads ?? 1));
  return threads <= 1 ? inlinePool() : workerPool(threads);
}

/** One thread: the same interface, run on the calling thread. */
function inlinePool(): QuantPool {
  const memory = new WebAssembly.Memory({ initial: 1 });
  let k: ReturnType<typeof bindKernel> | undefined;
  return {
    threads: 1,
    memory,
    quantize: async (j) => getMethod(j.method).quantize(j.w, j.K, j.N, j.params, j.calib),
    rtnUnit: async (j) => runRtnUnit(j, (k ??= bindKernel(memory)), 0),
    gptq: async (s) => runGptqStep(s),
    close: async () => {},
  };
}

/** `threads` workers taking queued jobs in order; streamed units share one WebAssembly memory. */
async function workerPool(threads: number): Promise<QuantPool> {
  const { script, eval: isCode } = await workerScript();
  let memory: WebAssembly.Memory | undefined;
  const shared = () => (memory ??= new WebAssembly.Memory({ initial: 1, maximum: SHARED_MAX_PAGES, shared: true }));
  const workers = Array.from(
    { length: threads },
    (_, thread) => new Worker(script, { eval: isCode, workerData: { thread } satisfies WorkerInit }),
  );
  // Workers get the shared memory with their first streamed unit.
  const hasMemory = new Set<Worker>();
  const idle: Worker[] = [...workers];
  // resolve takes the reply shape matching req.kind
  const queue: { req: WorkerRequest; resolve: (q: never) => void; reject: (e: Error) => void }[] = [];
  const pending = new Map<Worker, (typeof queue)[number]>();
  let nextId = 0;
  let failed: Error | undefined;

  const pump = (): void => {
    while (idle.length && queue.length) {
      const w = idle.shift()!,
        task = queue.shift()!;
      pending.set(w, task);
      const r = task.req;
      if (r.kind === 'rtn-unit' && !hasMemory.has(w)) {
        hasMemory.add(w);
        r.memory = shared();
      }
      const transfer =
        r.kind === undefined
          ? [r.w.buffer]
          : r.kind === 'rtn-unit'
            ? r.bytes
              ? [r.bytes.buffer]
              : []
            : 'w' in r.step
              ? [r.step.w.buffer]
              : [];
      w.postMessage(r, transfer as ArrayBuffer[]);
    }
  };
  for (const w of workers) {
    w.on('message', (r: WorkerReply) => {
      const task = pending.get(w)!;
      pending.delete(w);
      idle.push(w);
      if (r.error !== undefined)
        task.reject(
          new Error(
            `quantizing with '${task.req.kind === 'rtn-unit' ? 'rtn' : task.req.kind === 'gptq' ? 'gptq' : task.req.method}': ${r.error}`,
          ),
        );
      else task.resolve(r.q as never);
      pump();
    });
    w.on('error', (e) => {
      failed = e;
      pending.get(w)?.reject(e);
      pending.delete(w);
      for (const t of queue.splice(0)) t.reject(e);
    });
  }
  return {
    threads,
    get memory() {
      return shared();
    },
    quantize(job) {
      if (failed) return Promise.reject(failed);
      getMethod(job.method); // unknown names fail here, with the registry's message
      return new Promise((resolve, reject) => {
        const req: WorkerRequest = { ...job, w: ownBuffer(job.w), id: nextId++ };
        queue.push({ req, resolve, reject });
        pump();
      });
    },
    rtnUnit(job) {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        // In-memory bytes travel as an owned copy of the unit alone: cloning a view clones its whole
        // buffer, and a Buffer's slice() is a view (transferring it would detach the model's bytes).
        queue.push({ req: { ...job, bytes: job.bytes && new Uint8Array(job.bytes), kind: 'rtn-unit', id: nextId++ }, resolve, reject });
        pump();
      });
    },
    gptq(step) {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        const s = 'w' in step ? { ...step, w: ownBuffer(step.w) } : step;
        queue.push({ req: { kind: 'gptq', step: s, id: nextId++ }, resolve, reject });
        pump();
      });
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** Methods' work on the pool's workers, or on the calling thread without a pool. */
export function quantExec(pool: QuantPool | null): QuantExec {
  return {
    quantize: async (m, w, K, N, p, calib) =>
      pool ? pool.quantize({ method: m.name, w: w.slice(), K, N, params: p, calib }) : m.quantize(w, K, N, p, calib),
    gptq: async <T extends GptqStepResult>(step: GptqStep) => (pool ? pool.gptq(step) : runGptqStep(step)) as T,
  };
}
