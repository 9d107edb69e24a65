// worker_threads entry of the quantization pool (passes/quant/workers.ts): quantize one job per
// message and hand the codes, scales and zero points back as transfers.
import { parentPort } from 'node:worker_threads';
import { getMethod } from './methods/index.js';
import type { WorkerRequest, WorkerReply } from './workers.js';

const port = parentPort!;
port.on('message', (req: WorkerRequest) => {
  let reply: WorkerReply;
  try {
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
