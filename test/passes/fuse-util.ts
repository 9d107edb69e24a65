// Shared by the fuse-* tests: run a model in onnxruntime, apply a pass, check the graph is valid,
// run again on the same seeded inputs and compare every output.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { saveModel, type Model, type Tensor } from '../../ir/index.js';
import { resolveOptions, type Pass, type PassStats } from '../../passes/pass.js';
import { validateModel } from '../../passes/validate.js';
import { compareOutputs, randomInputs, runModel, type Comparison, type InputSpec } from '../../runtime/ort.js';

export const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fuse-'));
export const cleanup = () => fs.rmSync(tmpDir, { recursive: true, force: true });
let counter = 0;

export function opCounts(model: Model): Record<string, number> {
  const c: Record<string, number> = {};
  for (const g of model.graph.allGraphs()) for (const n of g.nodes) c[n.opType] = (c[n.opType] ?? 0) + 1;
  return c;
}

export function nodeCount(model: Model): number {
  let k = 0;
  for (const g of model.graph.allGraphs()) k += g.nodes.length;
  return k;
}

export async function runPass(model: Model, pass: Pass, options: Record<string, unknown> = {}): Promise<PassStats> {
  const stats = await pass.run(model, resolveOptions(pass, options), {});
  for (const g of model.graph.allGraphs()) g.sortTopologically();
  expect(validateModel(model)).toEqual([]);
  return stats;
}

export interface FusionCheck {
  stats: PassStats;
  cmp: Comparison[];
  nodesBefore: number;
  nodesAfter: number;
  minCosine: number;
  maxAbs: number;
  /** The saved model is byte-identical after the pass (what a near miss must give). */
  identical: boolean;
}

/** Run before, fuse, run after; outputs compared on seeded random inputs (one set per spec). */
export async function fuseAndCompare(
  model: Model,
  pass: Pass,
  options: Record<string, unknown> = {},
  spec: InputSpec | InputSpec[] = {},
  feeds?: Record<string, Tensor>,
): Promise<FusionCheck> {
  const id = counter++;
  const before = path.join(tmpDir, `m${id}.before.onnx`);
  const after = path.join(tmpDir, `m${id}.after.onnx`);
  saveModel(model, before);
  const specs = Array.isArray(spec) ? spec : [spec];
  const inputs = feeds ? [feeds] : specs.map((s) => randomInputs(model, { seed: 7, ...s }));
  const refs = [];
  for (const f of inputs) refs.push(await runModel(before, f));
  const nodesBefore = nodeCount(model);
  const stats = await runPass(model, pass, options);
  saveModel(model, after);
  const cmp: Comparison[] = [];
  for (let i = 0; i < inputs.length; i++) cmp.push(...compareOutputs(refs[i]!, await runModel(after, inputs[i]!)));
  return {
    stats,
    cmp,
    nodesBefore,
    nodesAfter: nodeCount(model),
    identical: fs.readFileSync(before).equals(fs.readFileSync(after)),
    minCosine: Math.min(...cmp.map((c) => c.cosine)),
    maxAbs: Math.max(...cmp.map((c) => c.maxAbsError)),
  };
}

/** The manager's loop for a list of passes (infer-shapes before those that need shapes, validity
 * after each), without pulling in every registered pass. */
export async function runPasses(
  model: Model,
  steps: [Pass, Record<string, unknown>?][],
  inferShapes: Pass,
): Promise<Record<string, PassStats>> {
  const out: Record<string, PassStats> = {};
  for (const [pass, opts] of steps) {
    if (pass.requires?.includes('shapes')) await inferShapes.run(model, resolveOptions(inferShapes, {}), {});
    out[pass.name] = await runPass(model, pass, opts ?? {});
  }
  return out;
}
