// `edgec optimize`: per-pass table and JSON, exit codes, outputs unchanged in onnxruntime.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel, saveModel } from '../../ir/index.js';
import { compareOutputs, randomInputs, runModel } from '../../runtime/ort.js';
import { visionEncoder } from '../../fixtures/tiny-mllm.js';
import { cli, tmpDir } from '../cli/helpers.js';

const dir = tmpDir('optimize');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const src = path.join(dir, 'vision.onnx');
saveModel(visionEncoder(), src);

describe('edgec optimize', () => {
  it('prints one row per pass and writes a model with the same outputs', async () => {
    const out = path.join(dir, 'opt.onnx');
    const r = await cli('optimize', src, '-o', out, '--pipeline', 'cleanup,infer-shapes,fold-constants', '--verify-each');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^pass\s+nodes\s+\+added\s+-removed\s+init bytes\s+ms\s+counts$/);
    expect(lines[1]).toMatch(/^cleanup\s+230 -> 163\s+\+0\s+-67 .*commonSubexpressions=\d+/);
    expect(lines[2]).toMatch(/^infer-shapes\s+163 -> 163 .*valuesTyped=163/);
    expect(lines[3]).toMatch(/^fold-constants\s+163 -> \d+ .*(folded|constantsToInitializers)=\d+/);
    expect(lines[lines.length - 1]).toMatch(/^wrote .*opt\.onnx/);
    const m = loadModel(src);
    const feeds = randomInputs(m, { dims: { batch: 1, height: 28, width: 42 } });
    const cmp = compareOutputs(await runModel(src, feeds), await runModel(out, feeds));
    for (const c of cmp) expect(c.cosine).toBeGreaterThanOrEqual(0.99999);
  });

  it('--json gives the step reports; the default pipeline runs without --pipeline', async () => {
    const out = path.join(dir, 'opt2.onnx');
    const r = await cli('optimize', src, '-o', out, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.passes[0]).toMatchObject({ pass: 'cleanup', nodesBefore: 230 });
    for (const p of j.passes)
      expect(Object.keys(p)).toEqual(
        expect.arrayContaining(['nodesAdded', 'nodesRemoved', 'initializerBytesBefore', 'initializerBytesAfter', 'ms', 'stats']),
      );
    expect(j.passes.map((p: { pass: string }) => p.pass).slice(0, 3)).toEqual(['cleanup', 'infer-shapes', 'fold-constants']);
  });

  it('bad pipelines exit 2 with one line naming the problem, writing nothing', async () => {
    const out = path.join(dir, 'never.onnx');
    for (const [spec, re] of [
      ['cleanup,nope', /unknown pass 'nope'/],
      ['fold-constants{maxbytes=1}', /unknown option 'maxbytes'/],
    ] as const) {
      const r = await cli('optimize', src, '-o', out, '--pipeline', spec);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(re);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(fs.existsSync(out)).toBe(false);
  });
});
