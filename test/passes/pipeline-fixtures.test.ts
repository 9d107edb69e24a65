// The default pipeline on the tiny MLLM fixtures: onnxruntime outputs agree before and after
// (cosine >= 0.99999), with node counts per pass; with static input shapes every shape
// computation folds away.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, Model, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { DEFAULT_PIPELINE } from '../../passes/pipelines.js';
import { compareOutputs, concreteShape, randomInputs, runModel } from '../../runtime/ort.js';
import { decoder, embeddings, projector, visionEncoder } from '../../fixtures/tiny-mllm.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-pipe-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const DIMS = { batch: 1, height: 56, width: 84, grid_h: 4, grid_w: 6, seq: 5, total_seq: 5, past_seq: 0, num_image_tokens: 24 };
const FIXTURES: [string, () => Model][] = [
  ['vision_encoder', () => visionEncoder()],
  ['projector', () => projector()],
  ['embed_tokens', () => embeddings()],
  ['decoder', () => decoder({}, { kvCache: true })],
];

async function runDefault(name: string, model: Model, staticShapes: boolean) {
  const feeds = randomInputs(model, { dims: DIMS, intHigh: 8 });
  if (staticShapes) for (const v of model.graph.inputs) if (v.type?.shape) v.type.shape = concreteShape(v.type.shape, { dims: DIMS });
  const a = path.join(tmp, `${name}-a.onnx`),
    b = path.join(tmp, `${name}-b.onnx`);
  saveModel(model, a);
  const before = await runModel(a, feeds);
  const reports = await runPipeline(model, parsePipeline(DEFAULT_PIPELINE), { verifyEach: true });
  saveModel(model, b);
  const after = await runModel(b, feeds);
  const cmp = compareOutputs(before, after);
  for (const c of cmp) expect(c.cosine, `${name}/${c.name}`).toBeGreaterThanOrEqual(0.99999);
  for (const [k, t] of Object.entries(before))
    if (t.dtype !== DataType.FLOAT) expect(compareOutputs({ [k]: t }, after)[0]!.maxAbsError).toBe(0);
  const line = `${name}${staticShapes ? ' (static)' : ''}: ${reports.map((r) => `${r.pass} ${r.nodesBefore}->${r.nodesAfter}`).join(', ')}; min cosine ${Math.min(...cmp.map((c) => c.cosine)).toFixed(7)}, max abs ${Math.max(...cmp.map((c) => c.maxAbsError)).toExponential(2)}`;
  return { reports, line };
}

describe('default pipeline on the tiny MLLM fixtures', () => {
  it('keeps outputs (cosine >= 0.99999) with dynamic shapes', async () => {
    const lines: string[] = [];
    for (const [name, make] of FIXTURES) {
      const { reports, line } = await runDefault(name, make(), false);
      lines.push(line);
      expect(reports[0]!.nodesBefore).toBeGreaterThanOrEqual(reports[reports.length - 1]!.nodesAfter);
    }
    console.log(`default pipeline:\n  ${lines.join('\n  ')}`);
  });

  it('folds every shape computation away once input shapes are static', async () => {
    const lines: string[] = [];
    for (const [name, make] of FIXTURES) {
      const model = make();
      const { reports, line } = await runDefault(`${name}-static`, model, true);
      lines.push(line);
      const left = model.graph.nodes.filter((n) => n.opType === 'Shape');
      expect(
        left.map((n) => n.name),
        name,
      ).toEqual([]);
      expect(
        model.graph.nodes.some((n) => n.opType === 'Constant'),
        name,
      ).toBe(false);
      const typed = reports.filter((r) => r.pass === 'infer-shapes').pop()!.stats.counts;
      expect(typed.unknown, name).toBe(0);
      expect(typed.symbolicDims, name).toBe(0);
    }
    console.log(`default pipeline, static shapes:\n  ${lines.join('\n  ')}`);
  });

  it('is deterministic: two runs save identical bytes', async () => {
    const bytes: Buffer[] = [];
    for (const k of [1, 2]) {
      const m = decoder({}, { kvCache: true });
      await runPipeline(m, parsePipeline(DEFAULT_PIPELINE));
      const f = path.join(tmp, `det-${k}.onnx`);
      saveModel(m, f);
      bytes.push(fs.readFileSync(f));
    }
    expect(bytes[0]!.equals(bytes[1]!)).toBe(true);
  });
});
