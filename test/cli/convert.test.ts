import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, saveModel } from '../../ir/index.js';
import { randomInputs, runModel, compareOutputs } from '../../runtime/ort.js';
import { CONFORMANCE, cli, mlpModel, snapshot, tmpDir } from './helpers.js';

const dir = tmpDir('convert');
let src: string;
beforeAll(() => {
  src = path.join(dir, 'src', 'mlp.onnx');
  saveModel(mlpModel(), src, { externalData: false });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function outputsOf(file: string) {
  return runModel(file, randomInputs(loadModel(file), { seed: 3, dims: { batch: 5 } }));
}

const bytes = (f: string) => fs.readFileSync(f);

describe('convert', () => {
  it('moves weights into external data and back with identical outputs', async () => {
    const ext = path.join(dir, 'ext', 'model.onnx');
    const r = await cli('convert', src, '-o', ext, '--external-data', '--threshold', '1024');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toMatch(/^wrote .*model\.onnx \(.*\), 2 tensors in .*model\.onnx\.data \(6\.00 KiB\)\n$/);
    expect(fs.statSync(`${ext}.data`).size).toBe(4096 + 2048);

    const back = path.join(dir, 'back', 'model.onnx');
    const j = JSON.parse((await cli('convert', ext, '-o', back, '--no-external-data', '--json')).stdout);
    expect(j).toMatchObject({ input: ext, output: back, externalTensors: 0, dataFiles: [] });
    const named = JSON.parse(
      (await cli('convert', src, '-o', path.join(dir, 'named', 'm.onnx'), '--external-data', '--location', 'm.bin', '--json')).stdout,
    );
    expect(named.dataFiles).toEqual([{ file: path.join(dir, 'named', 'm.bin'), bytes: 6144 }]);
    expect(fs.existsSync(`${back}.data`)).toBe(false);
    // Back inline, the model is the source byte for byte.
    expect(bytes(back).equals(bytes(src))).toBe(true);

    const want = await outputsOf(src);
    for (const f of [ext, back]) {
      for (const c of compareOutputs(want, await outputsOf(f))) {
        expect(c.maxAbsError).toBe(0);
        expect(c.shapeMatch).toBe(true);
      }
    }
  });

  it('re-saving a converted model gives identical bytes (model and data)', async () => {
    const a = path.join(dir, 'a', 'm.onnx'),
      b = path.join(dir, 'b', 'm.onnx');
    expect((await cli('convert', src, '-o', a, '--external-data', '--threshold', '100', '--location', 'w.bin')).code).toBe(0);
    // Without flags the layout of the source is kept (external stays external).
    expect((await cli('convert', a, '-o', b, '--threshold', '100', '--location', 'w.bin')).code).toBe(0);
    expect(bytes(b).equals(bytes(a))).toBe(true);
    expect(bytes(path.join(dir, 'b', 'w.bin')).equals(bytes(path.join(dir, 'a', 'w.bin')))).toBe(true);
    expect(fs.statSync(path.join(dir, 'a', 'w.bin')).size).toBeGreaterThan(6144);
  });

  it('re-saves a conformance model and keeps its outputs', async () => {
    const f = path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d/model.onnx');
    const o1 = path.join(dir, 'conv', 'm1.onnx'),
      o2 = path.join(dir, 'conv', 'm2.onnx');
    expect((await cli('convert', f, '-o', o1)).code).toBe(0);
    expect((await cli('convert', o1, '-o', o2)).code).toBe(0);
    expect(bytes(o2).equals(bytes(o1))).toBe(true);
    const v = await cli('verify', f, o1, '--inputs', path.dirname(f), '--json');
    expect(v.code).toBe(0);
    expect(JSON.parse(v.stdout).outputs[0]).toMatchObject({ cosine: 1, maxAbsError: 0 });
  });

  it('never overwrites its input or the input data file', async () => {
    const ext = path.join(dir, 'keep', 'model.onnx');
    expect((await cli('convert', src, '-o', ext, '--external-data')).code).toBe(0);
    const before = snapshot(dir);
    const other = path.join(dir, 'keep', 'other.onnx');
    for (const args of [
      ['-o', ext],
      ['-o', path.join(dir, 'keep', '.', 'model.onnx')],
      ['-o', `${ext}.data`],
      ['-o', other, '--location', 'model.onnx.data'],
      ['-o', other, '--external-data', '--location', 'model.onnx'],
    ]) {
      const r = await cli('convert', ext, ...args);
      expect(r.code).toBe(2);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/refusing to overwrite/);
      expect(lines[0]).toContain('model.onnx');
    }
    expect(snapshot(dir)).toEqual(before);
  });

  it('rejects bad options and output paths with exit 2 and writes nothing', async () => {
    const out = path.join(dir, 'bad', 'm.onnx');
    fs.writeFileSync(path.join(dir, 'a-file'), 'x');
    fs.mkdirSync(path.join(dir, 'a-dir.onnx'));
    const before = snapshot(dir);
    for (const o of [path.join(dir, 'a-dir.onnx'), path.join(dir, 'a-file', 'm.onnx')]) {
      const r = await cli('convert', src, '-o', o);
      expect(r.code, o).toBe(2);
      expect(r.stderr.trimEnd().split('\n')).toEqual([expect.stringContaining(o)]);
    }
    for (const args of [
      ['--threshold', '-5'],
      ['--threshold', 'lots'],
      ['--external-data', '--location', '/tmp/x.data'],
      ['--external-data', '--location', '../x.data'],
      ['--external-data', '--location', 'w/x.data'],
      [],
    ]) {
      const r = await cli('convert', src, ...(args.length ? ['-o', out, ...args] : []));
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    }
    expect(snapshot(dir)).toEqual(before);
  });
});
