// Calibration inputs for a sub-model, and where they came from: `--calibration DIR` (ONNX
// test_data_set_N folders or PNG/JPEG images; a sub-folder named after the sub-model when the
// folder serves a whole MLLM), else the verification data (--inputs/--images/--tokens), else
// realistic synthetic sets, which compile reports loudly ("accuracy on real data unknown").
import fs from 'node:fs';
import path from 'node:path';
import { DataType, InputError, Model, Tensor } from '../ir/index.js';
import { imageFiles, loadInputs, shapesOf, type InputsSpec, type InputsUsed } from '../runtime/inputs.js';
import { inContentOrder } from '../runtime/calibrate.js';
import type { SubModel } from './target.js';

export const SYNTHETIC_CALIBRATION = 'calibrated on synthetic inputs: accuracy on real data unknown';

/** Smallest table an int input indexes (keeps random ids in range). */
export function idBound(model: Model): number | undefined {
  let bound: number | undefined;
  for (const v of model.graph.inputs) {
    if ((v.dtype !== DataType.INT64 && v.dtype !== DataType.INT32) || /position|mask/i.test(v.name)) continue;
    for (const u of v.uses) {
      if (!u.node.opType.startsWith('Gather') || u.index !== 1) continue;
      const src = u.node.input(0);
      const rows = src?.initializer?.dims[0] ?? src?.producer?.input(0)?.initializer?.dims[0] ?? src?.type?.shape?.[0];
      if (typeof rows === 'number' && rows > 0) bound = Math.min(bound ?? rows, rows);
    }
  }
  return bound;
}

/** A folder's own sub-folder for this sub-model, when it has one. */
export function forSubModel(dir: string, name: string): string {
  const sub = path.join(dir, name);
  return fs.existsSync(sub) && fs.statSync(sub).isDirectory() ? sub : dir;
}

/** Where a sub-model's user data lives: --inputs/--images/--tokens, per sub-model sub-folder. */
export function userInputs(sm: SubModel): Pick<InputsSpec, 'inputs' | 'images' | 'tokens' | 'preprocess'> {
  const o = sm.opts;
  return {
    inputs: o.inputs?.map((d) => forSubModel(d, sm.name)),
    images: sm.role === 'vision-encoder' || sm.role === 'classifier' || sm.role === 'mllm' ? o.images : undefined,
    tokens: sm.role === 'decoder' || sm.role === 'mllm' ? o.tokens : undefined,
    preprocess: o.preprocess,
  };
}

/** Calibration sets for a sub-model; records their source on `sm.calibrationUsed`.
 * `derived`: inputs the caller fills in itself (files need not hold them). */
export function calibrationSets(model: Model, sm: SubModel, count: number, derived: readonly string[] = []): Record<string, Tensor>[] {
  const o = sm.opts;
  const image = o.imageSizes[0];
  const base: InputsSpec = { dims: o.fix, dimFlag: '--fix', image, seed: o.seed, intHigh: idBound(model) ?? 16, optional: derived };
  let spec: InputsSpec;
  if (o.calibration) {
    const dir = forSubModel(o.calibration, sm.name);
    let images: string[] | undefined;
    try {
      images = imageFiles([dir]);
    } catch {
      images = undefined;
    }
    const hasSets = fs.readdirSync(dir).some((f) => /^test_data_set_\d+$/.test(f) || f.endsWith('.pb'));
    if (!hasSets && !images)
      throw new InputError('calibration folder holds no test_data_set_N folder, .pb tensors or PNG/JPEG images', dir);
    spec = { ...base, ...(hasSets ? { inputs: [dir] } : { images: [dir], preprocess: o.preprocess }) };
  } else {
    spec = { ...base, ...userInputs(sm) };
  }
  const { sets, used } = loadInputs(model, spec, { synthCount: count });
  const sorted = inContentOrder(sets);
  sm.calibrationUsed = { ...used, shapes: shapesOf(sorted) };
  return sorted;
}

export type { InputsUsed };
