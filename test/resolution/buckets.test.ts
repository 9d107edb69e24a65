// Resolution buckets: four fixed-shape variants of the fixture vision encoder (batch 1 and 4 at
// two tile sizes) share one weights file; each runs in onnxruntime with outputs equal to the
// dynamic model, and a tiling plan's encoder batches map onto the variant files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckError, InputError, loadModel, saveModel } from '../../ir/index.js';
import { visionEncoder } from '../../fixtures/tiny-mllm.js';
import { assignVariants, compileBuckets } from '../../targets/buckets.js';
import { planImage } from '../../targets/plan/index.js';
import { compareOutputs, randomInputs, runModel } from '../../runtime/ort.js';
import { dynamicReport } from '../../passes/fix-shapes.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-buckets-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('resolution buckets', () => {
  it('batch 1 and 4 at 56x56 and 84x84 share one weights file and match the dynamic model', async () => {
    const src = path.join(tmp, 'src', 'vision_encoder.onnx');
    saveModel(visionEncoder(), src);
    const out = path.join(tmp, 'out');
    const buckets = [1, 4].flatMap((batch) => [56, 84].map((s) => ({ batch, height: s, width: s })));
    const m = await compileBuckets(src, out, buckets, { verify: true });

    // One weights file, written once; no variant copies it.
    const files = fs.readdirSync(out).sort();
    const dataFiles = files.filter((f) => f.endsWith('.data'));
    expect(dataFiles).toContain(m.weights.file);
    const wBytes = fs.statSync(path.join(out, m.weights.file)).size;
    expect(wBytes).toBe(m.weights.bytes);
    const own = m.variants.map((v) => v.ownData?.bytes ?? 0);
    // What a variant stores itself is only what it folded for its shape (the resized position table).
    for (const v of m.variants) expect(v.ownData?.bytes ?? 0).toBeLessThan(wBytes / 10);
    expect(dataFiles).toHaveLength(1 + m.variants.filter((v) => v.ownData).length);

    for (const v of m.variants) {
      const model = loadModel(path.join(out, v.file));
      // Every large initializer either lives in the shared file or in the variant's own folded data.
      let shared = 0;
      for (const t of model.graph.initializers) {
        if (t.data.kind !== 'external') continue;
        const loc = t.data.ref.location;
        expect([m.weights.file, `${v.file}.data`]).toContain(loc);
        if (loc === m.weights.file) shared++;
      }
      expect(shared).toBe(v.sharedTensors);
      expect(v.sharedTensors).toBeGreaterThan(10);
      expect(dynamicReport(model)).toEqual({ symbolicDims: 0, unknownDims: 0, shapeNodes: 0, dataDependent: [] });
      expect(v.verification!.cosine).toBeGreaterThanOrEqual(0.99999);
      expect(v.verification!.maxAbsError).toBeLessThan(1e-4);
    }
    // The shared offsets are those of the dynamic model: same file, same ranges.
    const dyn = loadModel(path.join(out, m.dynamic.file));
    const ranges = new Map(
      dyn.graph.initializers
        .filter((t) => t.data.kind === 'external')
        .map((t) => [t.name, t.data.kind === 'external' ? `${t.data.ref.offset}+${t.data.ref.length}` : '']),
    );
    for (const v of m.variants) {
      for (const t of loadModel(path.join(out, v.file)).graph.initializers) {
        if (t.data.kind === 'external' && t.data.ref.location === m.weights.file)
          expect(`${t.data.ref.offset}+${t.data.ref.length}`).toBe(ranges.get(t.name));
      }
    }

    // Independent check of one variant against the source model (not the shared-weights copy).
    const v4 = m.variants.find((v) => v.key === 'b4_84x84')!;
    const feeds = randomInputs(loadModel(path.join(out, v4.file)), { seed: 3 });
    const cmp = compareOutputs(await runModel(src, feeds), await runModel(path.join(out, v4.file), feeds));
    expect(cmp[0]!.cosine).toBeGreaterThanOrEqual(0.99999);

    const sizes = files.filter((f) => f.endsWith('.onnx') || f.endsWith('.data')).map((f) => `${f} ${fs.statSync(path.join(out, f)).size}`);
    const separate = m.variants.length * wBytes;
    console.log(
      `buckets: ${sizes.join(', ')}\n  shared weights ${wBytes} B once vs ${separate} B for ${m.variants.length} separate copies; variant-own data ${own.join('/')} B; ` +
        m.variants
          .map(
            (v) =>
              `${v.key}: nodes ${v.nodes.before}->${v.nodes.after}, cos ${v.verification!.cosine.toFixed(7)}, max abs ${v.verification!.maxAbsError.toExponential(2)}`,
          )
          .join('; '),
    );

    // A plan's batches map to variant files; a missing shape is a failed check.
    expect(m.lookup).toEqual({
      '56x56': { 1: 'vision_encoder.b1_56x56.onnx', 4: 'vision_encoder.b4_56x56.onnx' },
      '84x84': { 1: 'vision_encoder.b1_84x84.onnx', 4: 'vision_encoder.b4_84x84.onnx' },
    });
    const plan = planImage('internvl', { width: 300, height: 100 }, { tileSize: 84, patchSize: 14, batch: 4 });
    // aspect 3: 3x1 exact (6x2 = 12 ties but 30000 <= 0.5*84^2*12) -> 3 tiles + thumbnail = one batch of 4.
    expect(assignVariants(m, plan)).toEqual([{ batch: 0, tiles: [0, 1, 2, 3], file: 'vision_encoder.b4_84x84.onnx' }]);
    expect(() => assignVariants(m, planImage('internvl', { width: 300, height: 100 }, { tileSize: 448 }))).toThrow(CheckError);

    // Deterministic: a second compile gives the same bytes.
    const m2 = await compileBuckets(src, path.join(tmp, 'out2'), buckets);
    expect(m2.weights.sha256).toBe(m.weights.sha256);
    expect(m2.variants.map((v) => v.sha256)).toEqual(m.variants.map((v) => v.sha256));
    // Built in a temp folder and moved in; never written next to the source it reads.
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await expect(compileBuckets(src, path.dirname(src), buckets)).rejects.toThrow(InputError);
    expect(fs.readdirSync(path.dirname(src))).toEqual(['vision_encoder.onnx']);
  });
});
