// Calibration inputs for a sub-model: `--calibration <dir>` (a sub-folder named after the
// sub-model when the folder serves a whole MLLM; inside, one sub-folder per input set or the .pb
// files of one set), else seeded random sets shaped like a prefill call.
import fs from 'node:fs';
import path from 'node:path';
import { DataType, Model, Tensor } from '../ir/index.js';
import { loadCalibrationSets, syntheticCalibrationSets } from '../runtime/calibrate.js';
import { DEFAULT_IMAGE, resolveDims } from './dims.js';
import type { SubModel } from './target.js';

/** Smallest table an int input indexes (keeps random ids in range). */
export function idBound(model: Model): number | undefined {
  let bound: number | undefined;
  for (const v of model.graph.inputs) {
    if (v.dtype !== DataType.INT64 && v.dtype !== DataType.INT32) continue;
    for (const u of v.uses) {
      if (!u.node.opType.startsWith('Gather') || u.index !== 1) continue;
      const src = u.node.input(0);
      const rows = src?.initializer?.dims[0] ?? src?.producer?.input(0)?.initializer?.dims[0] ?? src?.type?.shape?.[0];
      if (typeof rows === 'number' && rows > 0) bound = Math.min(bound ?? rows, rows);
    }
  }
  return bound;
}

/** `derived`: inputs the caller fills in itself (files need not hold them). */
export function calibrationSets(model: Model, sm: SubModel, count: number, derived: readonly string[] = []): Record<string, Tensor>[] {
  const dir = sm.opts.calibration;
  if (dir) return loadCalibrationSets(fs.existsSync(path.join(dir, sm.name)) ? path.join(dir, sm.name) : dir, model, derived);
  const { dims } = resolveDims(model, { seq: sm.opts.prefillChunk, context: sm.opts.context, image: sm.opts.imageSizes[0] ?? DEFAULT_IMAGE, patch: sm.patch, fix: sm.opts.fix });
  return syntheticCalibrationSets(model, count, { dims, seed: sm.opts.seed, intHigh: idBound(model) ?? 16 });
}
