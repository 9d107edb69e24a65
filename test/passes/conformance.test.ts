// Every core pass and the default pipeline keep the spec's expected outputs on a sample of the
// ONNX conformance corpus, checked in onnxruntime (not with our own evaluator).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../ir/index.js';
import { DEFAULT_PIPELINE } from '../../passes/pipelines.js';
import { CONFORMANCE, checkCase, conformanceSample, originalPasses } from './harness.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-core-conf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const PIPELINES = ['cleanup', 'infer-shapes', 'fold-constants', DEFAULT_PIPELINE];

describe('core passes on the conformance sample', () => {
  it('keep output_K.pb wherever onnxruntime reproduces it on the original', async () => {
    const cases = conformanceSample();
    const counts = Object.fromEntries(PIPELINES.map((p) => [p, { passed: 0, ortUnsupported: 0, failed: 0 }]));
    const folded = { cases: 0, nodes: 0 };
    const failures: string[] = [];
    for (const [ci, c] of cases.entries()) {
      const dir = path.join(CONFORMANCE, c);
      const data = await originalPasses(dir, loadModel(path.join(dir, 'model.onnx')));
      for (const [pi, spec] of PIPELINES.entries()) {
        if (!data) {
          counts[spec]!.ortUnsupported++;
          continue;
        }
        const r = await checkCase(dir, data, spec, path.join(tmp, `${ci}-${pi}.onnx`));
        if (r.failure) {
          counts[spec]!.failed++;
          failures.push(`${c} [${spec}]: ${r.failure}`);
        } else counts[spec]!.passed++;
        const fold = r.reports.find((x) => x.pass === 'fold-constants');
        if (spec === DEFAULT_PIPELINE && fold && fold.stats.counts.folded! + fold.stats.counts.shapesFolded! > 0) {
          folded.cases++;
          folded.nodes += fold.stats.counts.folded! + fold.stats.counts.shapesFolded!;
        }
      }
    }
    console.log(
      `core passes, ${cases.length} conformance models: ${JSON.stringify(counts)}; default pipeline folded ${folded.nodes} nodes in ${folded.cases} models`,
    );
    expect(failures).toEqual([]);
    for (const spec of PIPELINES) expect(counts[spec]!.passed).toBeGreaterThan(200);
  });
});
