// Determinism under stress: every file of an artifact (models, external data, manifest.json,
// report.html, genai_config.json) is byte-identical across runs, worker thread counts (1, 2, 4),
// working directories (relative paths given from two different cwd) and the order of calibration
// sets. The manifest holds no time and no absolute path: data folders are named relative to the
// artifact. Small fixtures (the tiny MLLM, the exported projector) keep it to tens of seconds.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, cli } from '../cli/helpers.js';
import { listFiles, tempDir, tinyMllm } from '../targets/helpers.js';

const MAIN = path.join(ROOT, 'dist/cli/main.js');
const PROJECTOR = path.join(ROOT, 'fixtures/export/projector');
const root = tempDir('determinism');
let src = '';

beforeAll(() => {
  src = tinyMllm(root);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** sha256 of every file under `dir`, by '/' relative path. */
function digests(dir: string): Record<string, string> {
  return Object.fromEntries(
    listFiles(dir).map((f) => [
      f,
      crypto
        .createHash('sha256')
        .update(fs.readFileSync(path.join(dir, f)))
        .digest('hex'),
    ]),
  );
}

/** The real binary from `cwd`, so that relative paths resolve there (async: a blocked worker loses
 * its link to vitest). */
async function run(cwd: string, ...args: string[]): Promise<void> {
  fs.mkdirSync(cwd, { recursive: true });
  try {
    await promisify(execFile)(process.execPath, [MAIN, ...args], { cwd, encoding: 'utf8', timeout: 240_000, maxBuffer: 64 * 2 ** 20 });
  } catch (e) {
    const err = e as { code?: number; stderr?: string };
    expect.fail(`${args.join(' ')} in ${cwd}: exit ${err.code}: ${err.stderr}`);
  }
}

/** Every artifact equal to the first, file by file; none names the temp root (an absolute path). */
function expectIdentical(dirs: string[]): void {
  const first = digests(dirs[0]!);
  for (const d of dirs.slice(1)) expect(digests(d), d).toEqual(first);
  for (const f of ['manifest.json', 'report.html', 'genai_config.json']) {
    const p = path.join(dirs[0]!, f);
    if (fs.existsSync(p)) expect(fs.readFileSync(p, 'utf8'), f).not.toContain(root);
  }
}

describe('byte-identical artifacts', () => {
  it('quantize: two runs and --threads 1, 2, 4', async () => {
    const model = path.join(src, 'decoder_model_merged.onnx');
    const outs: string[] = [];
    for (const [i, threads] of ['1', '1', '2', '4'].entries()) {
      const out = path.join(root, `q${i}`);
      const r = await cli('quantize', model, '-o', path.join(out, 'model.onnx'), '--threads', threads, '--block-size', '32');
      expect(r.code, r.stderr).toBe(0);
      outs.push(out);
    }
    expect(listFiles(outs[0]!)).toEqual(['model.onnx']);
    expectIdentical(outs);
  }, 120_000);

  it('compile webgpu (verified): two runs from two working directories with relative paths, --threads 1, 2, 4', async () => {
    const base = path.join(root, 'cwd');
    fs.cpSync(src, path.join(base, 'models', 'tiny'), { recursive: true });
    // Same layout, reached from different places: models/tiny and the artifacts are siblings' children.
    const common = ['--target', 'webgpu', '--image-sizes', '56x56'];
    await run(path.join(base, 'a'), 'compile', '../models/tiny', '-o', 'out1', '--threads', '1', ...common);
    await run(path.join(base, 'b', 'deep'), 'compile', '../../models/tiny/', '-o', '../../a/out2', '--threads', '1', ...common);
    await run(base, 'compile', 'models/tiny', '-o', 'a/out3', '--threads', '2', ...common);
    await run(path.join(base, 'models'), 'compile', './tiny', '-o', '../a/out4', '--threads', '4', ...common);
    const dirs = ['out1', 'out2', 'out3', 'out4'].map((d) => path.join(base, 'a', d));
    expect(listFiles(dirs[0]!)).toEqual(expect.arrayContaining(['manifest.json', 'report.html', 'onnx/decoder_model_merged_q4f16.onnx']));
    expectIdentical(dirs);
  }, 240_000);

  it('calibration set order: renumbered sets give the same npu (percentile), gptq compile and gptq quantize bytes, named relative to the artifact', async () => {
    // The exporter's three projector sets (1x196, 2x256, 1x64 tokens), numbered 0,1,2 in one folder
    // and 2,0,1 in the other; each folder created in its own order.
    const layout = { x: { perm: [0, 1, 2], created: [0, 1, 2] }, y: { perm: [1, 2, 0], created: [2, 0, 1] } };
    for (const [d, { perm, created }] of Object.entries(layout)) {
      for (const i of created)
        fs.cpSync(path.join(PROJECTOR, `test_data_set_${perm[i]}`), path.join(root, d, 'cal', `test_data_set_${i}`), { recursive: true });
    }
    const model = path.join(PROJECTOR, 'model.onnx');
    for (const d of ['x', 'y']) {
      const cwd = path.join(root, d);
      await run(
        cwd,
        'compile',
        model,
        '--target',
        'npu',
        '--fix',
        'num_tokens=196',
        '--calibration',
        'cal',
        '--calibration-method',
        'percentile',
        '-o',
        'npu',
        '--no-verify',
      );
      // GPTQ keeps at most 512 calibration rows, spread over the sets in their order.
      await run(cwd, 'compile', model, '--target', 'mobile', '--method', 'gptq', '--calibration', 'cal', '-o', 'gptq', '--no-verify');
      await run(
        cwd,
        'quantize',
        model,
        '--method',
        'gptq',
        '--calibration',
        'cal',
        '-o',
        'q/model.onnx',
        '--threads',
        d === 'x' ? '1' : '2',
      );
    }
    for (const a of ['npu', 'gptq', 'q']) expectIdentical([path.join(root, 'x', a), path.join(root, 'y', a)]);
    const m = JSON.parse(fs.readFileSync(path.join(root, 'x', 'npu', 'manifest.json'), 'utf8')) as {
      models: { calibration?: { from: string[]; count: number } }[];
    };
    expect(m.models[0]!.calibration).toMatchObject({ from: ['../cal (3 test_data_set folders)'], count: 3 });
  }, 240_000);
});
