// A worker_threads pool that quantizes many weights in parallel. Methods are pure functions of
// (weight, params, calibration), so results are byte-identical whatever the thread count; they
// come back in job order. Weights travel as transfers: a job's Float32Array is detached after
// submission when it owns its whole ArrayBuffer, otherwise it is copied once into one that it does.
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { getMethod } from './methods/index.js';
import type { CalibrationData, QuantizedWeight, QuantParams } from './types.js';

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
export interface WorkerRequest extends QuantJob { id: number }
export type WorkerReply = { id: number; q: QuantizedWeight; error?: undefined } | { id: number; error: string; q?: undefined };

export interface QuantPool {
  readonly threads: number;
  quantize(job: QuantJob): Promise<QuantizedWeight>;
  close(): Promise<void>;
}

let bundled: Promise<string> | undefined;

/** The compiled entry next to this file, or (running from .ts sources under vitest) its bundled code. */
async function workerScript(): Promise<{ script: URL | string; eval: boolean }> {
  if (!import.meta.url.endsWith('.ts')) return { script: new URL('./quant-worker.js', import.meta.url), eval: false };
  // Only reached from TypeScript sources, i.e. under vitest/vite, which ships esbuild. The bundle is
  // CommonJS so the worker can take it as `eval` code: no file to write or clean up.
  bundled ??= (import('esbuild' as string) as Promise<{ build(o: object): Promise<{ outputFiles: { text: string }[] }> }>)
    .then((esbuild) => esbuild.build({
      entryPoints: [fileURLToPath(new URL('./quant-worker.ts', import.meta.url))],
      bundle: true, platform: 'node', format: 'cjs', write: false, logLevel: 'silent',
    }))
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
  if (threads <= 1) {
    return {
      threads: 1,
      quantize: async (j) => getMethod(j.method).quantize(j.w, j.K, j.N, j.params, j.calib),
      close: async () => {},
    };
  }
  const { script, eval: isCode } = await workerScript();
  const workers = Array.from({ length: threads }, () => new Worker(script, { eval: isCode }));
  const idle: Worker[] = [...workers];
  const queue: { req: WorkerRequest; resolve: (q: QuantizedWeight) => void; reject: (e: Error) => void }[] = [];
  const pending = new Map<Worker, (typeof queue)[number]>();
  let nextId = 0;
  let failed: Error | undefined;

  const pump = (): void => {
    while (idle.length && queue.length) {
      const w = idle.shift()!, task = queue.shift()!;
      pending.set(w, task);
      w.postMessage(task.req, [task.req.w.buffer as ArrayBuffer]);
    }
  };
  for (const w of workers) {
    w.on('message', (r: WorkerReply) => {
      const task = pending.get(w)!;
      pending.delete(w);
      idle.push(w);
      if (r.error !== undefined) task.reject(new Error(`quantizing with '${task.req.method}': ${r.error}`));
      else task.resolve(r.q);
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
    quantize(job) {
      if (failed) return Promise.reject(failed);
      getMethod(job.method); // unknown names fail here, with the registry's message
      return new Promise((resolve, reject) => {
        const req: WorkerRequest = { ...job, w: ownBuffer(job.w), id: nextId++ };
        queue.push({ req, resolve, reject });
        pump();
      });
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** Quantize every job; results in job order. */
export async function quantizeAll(jobs: QuantJob[], opts: PoolOptions = {}): Promise<QuantizedWeight[]> {
  const pool = await createQuantPool({ threads: Math.min(opts.threads ?? 1, jobs.length) });
  try {
    return await Promise.all(jobs.map((j) => pool.quantize(j)));
  } finally {
    await pool.close();
  }
}
