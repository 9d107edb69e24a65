// `edgec quantize` end to end in-process: JSON report, sizes, exit codes.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { saveModel, loadModel } from '../../ir/index.js';
import { compareTensors, randomInputs, runModel } from '../../runtime/ort.js';
import { Command } from 'commander';
import { main } from '../../cli/main.js';
import { QUANTIZE_FLAGS, registerQuantize } from '../../cli/commands/quantize.js';
import { passOptionsFromFlags } from '../../cli/pass-flags.js';
import { quantizeWeights } from '../../passes/quantize.js';
import { resolveOptions } from '../../passes/pass.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { TMP, cleanup } from './helpers.js';

afterAll(cleanup);

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
    out += String(s);
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
    err += String(s);
    return true;
  });
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
    expect(
      j.layers.every(
        (l: { relError: number; bytesAfter: number; bytesBefore: number }) => l.relError > 0 && l.bytesAfter < l.bytesBefore / 6,
      ),
    ).toBe(true);
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

  it('flags are generated from the pass schema: one per option, no defaults of their own', () => {
    const program = new Command();
    registerQuantize(program, () => {});
    const cmd = program.commands.find((c) => c.name() === 'quantize')!;
    const flags = cmd.options.map((o) => o.long);
    const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    for (const k of Object.keys(quantizeWeights.options)) expect(flags).toContain(k === 'block' ? '--block-size' : `--${kebab(k)}`);
    expect(flags).toEqual(expect.arrayContaining(['--asym', '--no-embeddings', '--no-tie']));
    // No flag given: the pass resolves exactly its own defaults (threads included: 1).
    cmd.parseOptions(['-o', 'x.onnx']);
    const none = passOptionsFromFlags(quantizeWeights, cmd.opts(), QUANTIZE_FLAGS);
    expect(none).toEqual({});
    expect(resolveOptions(quantizeWeights, none).threads).toBe(1);
  });

  it('flags map onto pass options; --sym and --asym exclude each other', () => {
    const program = new Command();
    registerQuantize(program, () => {});
    const cmd = program.commands.find((c) => c.name() === 'quantize')!;
    cmd.parseOptions([
      '-o',
      'x.onnx',
      '--block-size',
      '64',
      '--asym',
      '--no-embeddings',
      '--embed-bits',
      '8',
      '--exclude',
      'a',
      'b',
      '--threads',
      '3',
    ]);
    const flags = QUANTIZE_FLAGS;
    expect(passOptionsFromFlags(quantizeWeights, cmd.opts(), flags)).toEqual({
      block: '64',
      sym: false,
      embeddings: false,
      embedBits: '8',
      exclude: ['a', 'b'],
      threads: '3',
    });
    expect(() => passOptionsFromFlags(quantizeWeights, { sym: true, asym: true }, flags)).toThrow(/--sym and --asym exclude each other/);
  });
});
