// fix-shapes: the fixture vision encoder (exporter-style: Shape -> Gather -> Div sizes, a cubic
// Resize of the position table) and exporter-style projector/decoder become fully static and
// give onnxruntime outputs equal to the dynamic model at the same shapes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model, loadModel, saveModel } from '../../ir/index.js';
import { decoder, projector, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { compareOutputs, randomInputs, runModel } from '../../runtime/ort.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { getPass } from '../../passes/registry.js';
import { PassError, resolveOptions } from '../../passes/pass.js';
import { dynamicReport, fixShapes } from '../../passes/fix-shapes.js';
import { validateModel } from '../../passes/validate.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fixshapes-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const nodeCount = (m: Model) => [...m.graph.allGraphs()].reduce((s, g) => s + g.nodes.length, 0);
const ops = (m: Model) => new Set([...m.graph.allGraphs()].flatMap((g) => g.nodes.map((n) => n.opType)));

async function fixAndCompare(name: string, make: () => Model, dims: Record<string, number>) {
  const dynFile = path.join(tmp, `${name}-dyn.onnx`);
  saveModel(make(), dynFile);
  const m = make();
  const before = nodeCount(m);
  const stats = await fixShapes.run(
    m,
    resolveOptions(fixShapes, {
      dims: Object.entries(dims)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
    }),
    {},
  );
  expect(validateModel(m)).toEqual([]);
  const fixedFile = path.join(tmp, `${name}-fixed.onnx`);
  saveModel(m, fixedFile);
  const reloaded = loadModel(fixedFile);
  const feeds = randomInputs(reloaded, { seed: 11, dims });
  const cmp = compareOutputs(await runModel(dynFile, feeds), await runModel(fixedFile, feeds));
  return { stats, before, after: nodeCount(m), cmp, reloaded };
}

describe('fix-shapes on the fixture vision encoder', () => {
  const report: string[] = [];
  afterAll(() => console.log(`fix-shapes vision encoder:\n  ${report.join('\n  ')}`));

  for (const [batch, height, width] of [
    [2, 56, 84],
    [1, 112, 112],
  ] as const) {
    it(`batch ${batch} at ${height}x${width}: static, no Shape/Resize left, onnxruntime outputs equal the dynamic model`, async () => {
      const r = await fixAndCompare(`vit-${height}x${width}`, () => visionEncoder(), { batch, height, width });
      const dyn = dynamicReport(r.reloaded);
      expect(dyn).toEqual({ symbolicDims: 0, unknownDims: 0, shapeNodes: 0, dataDependent: [] });
      for (const op of ['Shape', 'Gather', 'Resize', 'Concat', 'Unsqueeze', 'Constant']) expect(ops(r.reloaded).has(op), op).toBe(false);
      expect(r.reloaded.graph.inputs[0]!.type!.shape).toEqual([batch, 3, height, width]);
      expect(r.reloaded.graph.outputs[0]!.type!.shape).toEqual([batch, height / 14, width / 14, 64]);
      // The position table is folded through Resize, Transpose and Reshape: [1, (h/14)*(w/14), C].
      expect(r.reloaded.graph.initializers.some((t) => t.dims.join() === [1, (height / 14) * (width / 14), 64].join())).toBe(true);
      expect(r.stats.counts.shapeNodesBefore).toBeGreaterThan(0);
      expect(r.stats.counts.symbolicDimsBefore).toBeGreaterThan(0);
      expect(r.stats.counts.shapeNodesAfter).toBe(0);
      for (const c of r.cmp) {
        expect(c.shapeMatch).toBe(true);
        expect(c.cosine).toBeGreaterThanOrEqual(0.99999);
        expect(c.maxAbsError).toBeLessThan(1e-4);
      }
      report.push(
        `${batch}x3x${height}x${width}: nodes ${r.before} -> ${r.after}, symbolic dims ${r.stats.counts.symbolicDimsBefore} -> 0, Shape nodes ${r.stats.counts.shapeNodesBefore} -> 0, data-dependent ops ${r.stats.counts.dataDependentBefore} -> 0, cosine ${r.cmp[0]!.cosine.toFixed(8)}, max abs ${r.cmp[0]!.maxAbsError.toExponential(2)}`,
      );
    });
  }

  it('runs from a textual pipeline (dims separated by ;) with validity checks after the pass', async () => {
    const m = visionEncoder();
    const [rep] = await runPipeline(m, parsePipeline('fix-shapes{dims=batch=1;height=42;width=70,requireStatic=true}'), {
      verifyEach: true,
    });
    expect(rep!.stats.counts.symbolicDimsAfter).toBe(0);
    expect(m.graph.inputs[0]!.type!.shape).toEqual([1, 3, 42, 70]);
  });
});

describe('fix-shapes on other exporter-style graphs', () => {
  it('projector (2x2 merge via Shape/Div/Reshape) and KV-cache decoder (Range/Where masks, rotary Gather) fold fully', async () => {
    const p = await fixAndCompare('projector', () => projector(), { batch: 2, grid_h: 4, grid_w: 6 });
    expect(dynamicReport(p.reloaded)).toEqual({ symbolicDims: 0, unknownDims: 0, shapeNodes: 0, dataDependent: [] });
    const d = await fixAndCompare('decoder', () => decoder(), { batch: 1, seq: 8, past_seq: 16, total_seq: 24 });
    expect(dynamicReport(d.reloaded)).toEqual({ symbolicDims: 0, unknownDims: 0, shapeNodes: 0, dataDependent: [] });
    for (const c of [...p.cmp, ...d.cmp]) {
      expect(c.cosine, c.name).toBeGreaterThanOrEqual(0.99999);
      expect(c.maxAbsError, c.name).toBeLessThan(1e-4);
    }
    console.log(
      `fix-shapes projector: nodes ${p.before} -> ${p.after}; decoder (seq 8, past 16): nodes ${d.before} -> ${d.after}, max abs ${Math.max(...d.cmp.map((c) => c.maxAbsError)).toExponential(2)}`,
    );
  });

  it('per-input shapes bind the names they cover; an unbound dim is reported, and requireStatic fails', async () => {
    const m = decoder({}, { kvCache: false });
    const st = await fixShapes.run(m, resolveOptions(fixShapes, { inputs: 'inputs_embeds=1x8x128;position_ids=1x8' }), {});
    expect(st.counts.dimsBound).toBe(2);
    expect(st.skipped!.join(' ')).toMatch(/symbolic .* dims remain/);
    expect(st.skipped!.join(' ')).toMatch(/Range/);
    expect(validateModel(m)).toEqual([]);
    await expect(
      fixShapes.run(decoder({}, { kvCache: false }), resolveOptions(fixShapes, { dims: 'batch=1,seq=8', requireStatic: true }), {}),
    ).rejects.toThrow(PassError);
  });

  it('rejects bindings that do not fit the model', async () => {
    const run = (o: Record<string, unknown>) =>
      expect(Promise.resolve().then(() => fixShapes.run(visionEncoder(), resolveOptions(fixShapes, o), {}))).rejects;
    await run({ dims: 'frames=2' }).toThrow(/no input has a dim named 'frames'/);
    await run({ inputs: 'pixel_values=1x4x56x56' }).toThrow(/dim 1 is 3/);
    await run({ inputs: 'pixel_values=1x3x56' }).toThrow(/rank 4/);
    await run({ dims: 'batch=2', inputs: 'pixel_values=1x3x56x56' }).toThrow(/conflicts/);
    await run({ dims: 'batch=0' }).toThrow(/positive integer/);
    expect(getPass('fix-shapes')).toBe(fixShapes);
  });
});
