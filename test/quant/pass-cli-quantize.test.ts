// `edgec quantize` end to end in-process: JSON report, sizes, exit codes.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { saveModel, loadModel } from '../../ir/index.js';
import { compareTensors, randomInputs, runModel } from '../../runtime/ort.js';
import { main } from '../../cli/main.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { TMP, cleanup } from './helpers.js';

afterAll(cleanup);

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => { out += String(s); return true; });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => { err += String(s); return true; });
  try {
    const code = await main(args);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe('edgec quantize', () => {
  const src = path.join(TMP, 'cli', 'decoder.onnx');
  fs.mkdirSync(path.dirname(src), { recursive: true });
  saveModel(decoder({}, { kvCache: true }), src, { externalData: false });

  it('--json: per-layer report, output runs', async () => {
    const out = path.join(TMP, 'cli', 'q4f16.onnx');
    const r = await cli(['quantize', src, '-o', out, '--block-size', '32', '--fp16', '--exclude', '*lm_head*', '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.role).toBe('decoder');
    expect(j.layers.length).toBe(14);
    expect(j.counts.excluded).toBe(1);
    expect(j.layers[0]).toMatchObject({ bits: 4, block: 32, symmetric: true, format: 'MatMulNBits' });
    expect(j.layers.every((l: { relError: number; bytesAfter: number; bytesBefore: number }) => l.relError > 0 && l.bytesAfter < l.bytesBefore / 6)).toBe(true);
    expect(j.sizeRatio).toBeLessThan(0.5);
    const m = loadModel(src);
    const feeds = randomInputs(m, { dims: { batch: 1, seq: 4, past_seq: 2, total_seq: 6 } });
    const c = compareTensors((await runModel(src, feeds)).logits!, (await runModel(out, feeds)).logits!);
    expect(c.cosine).toBeGreaterThan(0.99);
  });

  it('text report and bad usage exit codes', async () => {
    const out = path.join(TMP, 'cli', 'q.onnx');
    const ok = await cli(['quantize', src, '-o', out, '--asym', '--format', 'qdq', '--threads', '2']);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/15 layers, \d+ weights: .* bits\/weight/);
    expect(ok.out).toMatch(/wrote .*q\.onnx/);
    expect((await cli(['quantize', src, '-o', out, '--bits', '3'])).code).toBe(2);
    expect((await cli(['quantize', src, '-o', out, '--block-size', '48'])).code).toBe(2);
    expect((await cli(['quantize', src, '-o', out, '--method', 'nope'])).code).toBe(2);
    const missing = await cli(['quantize', path.join(TMP, 'none.onnx'), '-o', out]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/none\.onnx: no such file/);
  });

  it('--method gptq collects calibration activations (seeded sets without --calibration)', async () => {
    const out = path.join(TMP, 'cli', 'gptq.onnx');
    const r = await cli(['quantize', src, '-o', out, '--method', 'gptq', '--calibration-sets', '2', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.calibration).toMatch(/^2 seeded random input set\(s\).*, 15 weights$/);
    expect(j.layers.length).toBe(15);
  });
});
