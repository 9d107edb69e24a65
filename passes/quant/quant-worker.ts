// worker_threads entry of the quantization pool (passes/quant/workers.ts): quantize one job per
// message and hand the codes, scales and zero points back as transfers; a streamed RTN unit writes
// its results into the memory shared with the pool and sends back only its error sums.
import { parentPort, workerData } from 'node:worker_threads';
import { getMethod } from './methods/index.js';
import { bindKernel, type BoundKernel } from './methods/rtn-simd.js';
import { runRtnUnit } from './rtn-stream.js';
import { runGptqStep } from './methods/gptq.js';
import type { WorkerInit, WorkerRequest, WorkerReply } from './workers.js';

const port = parentPort!;
const init = workerData as WorkerInit;
let kernel: BoundKernel | undefined;
port.on('message', (req: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    if (req.kind === 'rtn-unit') {
      if (req.memory) kernel = bindKernel(req.memory);
      port.postMessage({ id: req.id, q: runRtnUnit(req, kernel!, init.thread) } satisfies WorkerReply);
      return;
    }
    if (req.kind === 'gptq') {
      const r = runGptqStep(req.step);
      // Plans hold shared memory; codes and held-out errors go back as transfers.
      const out = 'codes' in r ? [r.codes, r.scales, ...(r.zeroPoints ? [r.zeroPoints] : [])] : Array.isArray(r) ? r : [];
      port.postMessage(
        { id: req.id, q: r } satisfies WorkerReply,
        out.map((a) => a.buffer as ArrayBuffer),
      );
      return;
    }
    const q = getMethod(req.method).quantize(req.w, req.K, req.N, req.params, req.calib);
    reply = { id: req.id, q };
    const transfer: ArrayBuffer[] = [q.codes.buffer as ArrayBuffer, q.scales.buffer as ArrayBuffer];
    if (q.zeroPoints) transfer.push(q.zeroPoints.buffer as ArrayBuffer);
    port.postMessage(reply, transfer);
  } catch (e) {
    reply = { id: req.id, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
    port.postMessage(reply);
  }
});
