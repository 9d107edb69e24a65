// Per-value activation ranges of a float32 model, measured in onnxruntime on given inputs: `to-fp16`
// keeps in float32 every op whose values leave a safe fp16 range (passes/emulate-fp16.ts is the
// exact fp16 check of the result).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DataType, InputError, Model, Tensor, Value, saveModel } from '../ir/index.js';
import { toOrtTensor } from './ort.js';

export interface RangeOptions {
  /** Elements exposed per onnxruntime run (bounds the memory of one run). Default 32M. */
  maxElements?: number;
  intraOpNumThreads?: number;
}

/** Largest finite |x| (and whether a non-finite value was seen) of every float32 value a node
 * produces, over all input sets. The model is saved next to its source so external data is read in place. */
export async function activationRanges(
  model: Model,
  sets: Record<string, Tensor>[],
  opts: RangeOptions = {},
): Promise<Map<string, number>> {
  const g = model.graph;
  const values: Value[] = [];
  // Values of unknown type are exposed too (exports rarely carry value_info); non-float results are skipped.
  const maybeFloat = (v: Value) => v.type?.elemType === undefined || v.type.elemType === DataType.FLOAT;
  for (const n of g.nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size' || n.opType === 'Constant') continue;
    for (const o of n.outputs) if (o && maybeFloat(o) && !o.isGraphOutput) values.push(o);
  }
  for (const o of g.outputs) if (maybeFloat(o)) values.push(o);
  const ranges = new Map<string, number>();
  if (!sets.length || !values.length) return ranges;
  // One run exposes values up to a budget of elements (sizes from declared shapes, unknown dims
  // counted as 1024), so a small model costs one run per input set and a big one stays bounded.
  const budget = opts.maxElements ?? 32 * 2 ** 20;
  const groups: string[][] = [];
  let cur: string[] = [],
    size = 0;
  for (const v of values) {
    const n = (v.shape ?? [null, null]).reduce<number>((a, d) => a * (typeof d === 'number' && d > 0 ? d : 1024), 1);
    if (cur.length && size + n > budget) {
      groups.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(v.name);
    size += n;
  }
  if (cur.length) groups.push(cur);
  const dir = model.sourcePath ? path.dirname(model.sourcePath) : fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-ranges-'));
  const tmp = path.join(dir, `.edgec-ranges-${process.pid}-${Date.now().toString(36)}.onnx`);
  const originalOutputs = [...g.outputs];
  g.setOutputs([...originalOutputs, ...values.filter((v) => !v.isGraphOutput)]);
  let session: ort.InferenceSession | undefined;
  try {
    saveModel(model, tmp, { externalData: false, reuseExternal: true });
    session = await ort.InferenceSession.create(tmp, {
      graphOptimizationLevel: 'disabled',
      intraOpNumThreads: opts.intraOpNumThreads ?? 1,
      logSeverityLevel: 4,
    });
    for (const feeds of sets) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const name of session.inputNames) {
        const t = feeds[name];
        if (!t) throw new InputError(`input set has no input '${name}'`);
        ortFeeds[name] = toOrtTensor(t);
      }
      for (const names of groups) {
        const res = await session.run(ortFeeds, names);
        for (const k of names) {
          if ((res[k] as ort.Tensor).type !== 'float32') continue;
          const d = (res[k] as ort.Tensor).data as Float32Array;
          let m = ranges.get(k) ?? 0;
          for (let j = 0; j < d.length; j++) {
            const a = Math.abs(d[j]!);
            if (a > m) m = a; // NaN compares false; +-inf is kept (a value fp16 cannot hold either)
          }
          ranges.set(k, m);
        }
      }
    }
  } finally {
    await session?.release();
    g.setOutputs(originalOutputs);
    fs.rmSync(tmp, { force: true });
    if (!model.sourcePath) fs.rmSync(dir, { recursive: true, force: true });
  }
  return ranges;
}
