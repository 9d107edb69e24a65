// The quantize pass's schedule: weights in candidate order, each quantized once per weight key
// (shared weights), streamed or in column slices through its method; with a pool up to `threads`
// weights are in flight and emitted in order, so the output does not depend on the thread count.
import type { Progress } from '../../ir/progress.js';
import { DataType } from '../../ir/index.js';
import { eachSlice, type Candidate } from './candidates.js';
import type { WeightEmitter } from './emit.js';
import { floatTypeOf } from './graph-util.js';
import { getMethod } from './methods/index.js';
import { errorSums } from './report.js';
import type { RtnStreamer } from './rtn-streamer.js';
import { weightKey, type QuantSettings } from './settings.js';
import type { CalibrationData, QuantExec, QuantMethod, Quantized, QuantizedWeight, SliceQuantizer, WeightSlices } from './types.js';

export interface ScheduleDeps {
  s: QuantSettings;
  /** Workers in flight at most (0: one weight at a time, done before the next is read). */
  inFlight: number;
  exec: QuantExec;
  streamer: RtnStreamer;
  emitter: WeightEmitter;
  calibration?: (weight: string, node: Candidate['node']) => CalibrationData | undefined;
  /** Per weight, factors to multiply its rows by as they are read (AWQ's folded scales). */
  rowScale?: Map<string, Float32Array>;
  skip(why: string): void;
  progress?: Progress;
}

/** Quantize and emit every candidate not tied to another; returns the weights that fell back to rtn. */
export async function quantizeAll(todo: readonly Candidate[], d: ScheduleDeps): Promise<string[]> {
  const { s } = d;
  const inFlight: { c: Candidate; q: Promise<Quantized>; first: boolean }[] = [];
  const fallbacks: string[] = [];
  const jobs = new Map<string, Promise<Quantized>>();
  const left = new Map<string, number>();
  for (const c of todo) left.set(weightKey(c, s), (left.get(weightKey(c, s)) ?? 0) + 1);
  let emitted = 0;
  const flush = async (keep: number) => {
    while (inFlight.length > keep) {
      const j = inFlight.shift()!;
      d.emitter.emit(j.c, await j.q, j.first);
      d.progress?.('quantize', ++emitted, todo.length, j.c.w.value.name);
      const key = weightKey(j.c, s);
      left.set(key, left.get(key)! - 1);
      if (!left.get(key)) jobs.delete(key);
    }
  };
  for (const c of todo) {
    if (c.kind === 'gather' && c.K % s.blockOf(c) !== 0) {
      d.skip(
        `${c.node.name || 'Gather'}: embedding width ${c.K} is not a multiple of block ${s.blockOf(c)} (GatherBlockQuantized needs whole blocks)`,
      );
      continue;
    }
    const actIn = c.kind === 'gather' ? c.w.value : c.node.input(0);
    if (floatTypeOf(actIn, DataType.FLOAT) === DataType.BFLOAT16) {
      d.skip(`${c.node.name}: bfloat16 activations are not handled`);
      continue;
    }
    const key = weightKey(c, s);
    let q = jobs.get(key);
    const first = !q;
    if (!q) {
      const calib = d.calibration?.(c.w.value.name, c.node);
      // Weights no calibration run reached (embeddings, Gemm) fall back to round-to-nearest.
      const m = s.method.needsCalibration && !calib ? getMethod('rtn') : s.method;
      if (m !== s.method) fallbacks.push(c.w.value.name);
      q = quantizeWeight(c, m, calib, d);
      // Without a pool the weight is done before the next one is read.
      if (!d.inFlight) await q;
      jobs.set(key, q);
    }
    inFlight.push({ c, q, first });
    await flush(d.inFlight);
  }
  await flush(0);
  return fallbacks;
}

/**
 * One weight: streamed when the method allows and the weight fits the kernel, else in column slices
 * (at most one slice of fp32 in memory per weight in flight) whose codes land in one QuantizedWeight.
 */
async function quantizeWeight(c: Candidate, m: QuantMethod, calib: CalibrationData | undefined, d: ScheduleDeps): Promise<Quantized> {
  if (m.streamable && d.streamer.fits(c)) return d.streamer.quantize(c);
  const { s, exec } = d;
  const { K, N } = c;
  const p = { bits: s.bitsOf(c), blockSize: s.blockOf(c), symmetric: s.sym };
  const rs = d.rowScale?.get(c.w.value.name);
  const weight: WeightSlices = {
    K,
    N,
    eachSlice: (f) =>
      eachSlice(c, s.maxSliceMb, (w, n0, ns) => {
        if (rs) for (let k = 0; k < K; k++) for (let n = 0, o = k * ns; n < ns; n++) w[o + n] = Math.fround(w[o + n]! * rs[k]!);
        return f(w, n0, ns);
      }),
  };
  const quantizeSlice: SliceQuantizer = m.prepare
    ? await m.prepare(weight, p, calib, exec)
    : (w, k, ns) => exec.quantize(m, w, k, ns, p, calib);
  let full: QuantizedWeight | null = null;
  let se = 0,
    ss = 0;
  await weight.eachSlice(async (w, n0, ns) => {
    const q = await quantizeSlice(w, K, ns);
    const e = errorSums(w, q);
    se += e.se;
    ss += e.ss;
    if (ns === N) {
      full = q;
      return;
    }
    full ??= {
      K,
      N,
      bits: q.bits,
      blockSize: q.blockSize,
      kBlocks: q.kBlocks,
      symmetric: q.symmetric,
      codes: new Uint8Array(N * q.kBlocks * q.blockSize),
      scales: new Float32Array(N * q.kBlocks),
      zeroPoints: q.zeroPoints ? new Uint8Array(N * q.kBlocks) : undefined,
    };
    full.codes.set(q.codes, n0 * q.kBlocks * q.blockSize);
    full.scales.set(q.scales, n0 * q.kBlocks);
    if (q.zeroPoints) full.zeroPoints!.set(q.zeroPoints, n0 * q.kBlocks);
  });
  return { q: full!, relError: ss === 0 ? Math.sqrt(se) : Math.sqrt(se / ss) };
}
