import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, encodeTensor, saveModel } from '../../ir/index.js';
import { randomInputs } from '../../runtime/ort.js';
import { verifyModels } from '../../runtime/verify.js';
import { CONFORMANCE, cli, mlpModel, tmpDir } from './helpers.js';

const dir = tmpDir('verify');
const ref = path.join(dir, 'ref.onnx');
const same = path.join(dir, 'same', 'model.onnx');
const bad = path.join(dir, 'bad.onnx');
const slightly = path.join(dir, 'slightly.onnx');
beforeAll(() => {
  saveModel(mlpModel(), ref);
  saveModel(mlpModel(), same, { externalData: true, threshold: 0 });
  saveModel(mlpModel(0.5), bad);
  saveModel(mlpModel(1e-4), slightly);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('verifyModels', () => {
  it('passes a faithful copy with cosine 1 and zero error', async () => {
    const r = await verifyModels(ref, same, { dims: { batch: 3 } });
    expect(r.passed).toBe(true);
    expect(r.outputs).toHaveLength(1);
    expect(r.outputs[0]).toMatchObject({ name: 'out', cosine: 1, maxAbsError: 0, relError: 0, shapeMatch: true, elements: 24 });
    expect(r.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [3, 16], source: 'random' }]);
  });

  it('fails a perturbed weight, passes a tiny perturbation', async () => {
    const r = await verifyModels(ref, bad);
    expect(r.passed).toBe(false);
    expect(r.outputs[0]!.cosine).toBeLessThan(0.99);
    // An unquantized fp32 candidate is held to the exact threshold (README "Verification thresholds").
    expect(r.threshold).toBe(0.9999);
    expect(r.outputs[0]!.problem).toMatch(/^cosine .* < 0\.9999$/);
    const s = await verifyModels(ref, slightly);
    expect(s.passed).toBe(true);
    expect(s.outputs[0]!.maxAbsError).toBeGreaterThan(0);
    expect(s.outputs[0]!.cosine).toBeGreaterThan(0.999999);
  });

  it('a candidate onnxruntime cannot run fails the check (exit 1), named as asked', async () => {
    const broken = mlpModel();
    // An op the CPU provider has no kernel for: session creation fails on the candidate only.
    broken.graph.nodes[0]!.domain = 'org.edgec.missing';
    broken.opsetImports.push({ domain: 'org.edgec.missing', version: 1 });
    const f = path.join(dir, 'broken.onnx');
    saveModel(broken, f);
    await expect(verifyModels(ref, f, { candidateName: 'artifact/model.onnx' })).rejects.toThrow(
      /^artifact\/model\.onnx: does not run in onnxruntime: /,
    );
    const r = await cli('verify', ref, f);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('broken.onnx: does not run in onnxruntime');
  });

  it('feeds fixed inputs as given', async () => {
    const x = Tensor.fromFloat32('features', [2, 16], new Float32Array(32).fill(1));
    const r = await verifyModels(ref, bad, { fixed: { features: x } });
    expect(r.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [2, 16], source: 'fixed' }]);
    expect(r.outputs[0]!.elements).toBe(16);
  });

  it('takes symbolic dims from a static-shape candidate', async () => {
    const fixed = mlpModel();
    fixed.graph.inputs[0]!.type!.shape = [4, 16];
    const f = path.join(dir, 'fixed.onnx');
    saveModel(fixed, f);
    const r = await verifyModels(ref, f);
    expect(r.inputs[0]!.shape).toEqual([4, 16]);
    expect(r.passed).toBe(true);
  });

  it('feeds an fp16-I/O candidate the same values rounded to fp16', async () => {
    const f = path.join(dir, 'fp16io.onnx');
    saveModel(mlpModel(0, true), f);
    const r = await verifyModels(ref, f, { dims: { batch: 4 } });
    expect(r.passed).toBe(true);
    expect(r.outputs[0]!.cosine).toBeGreaterThan(0.99999);
    expect(r.outputs[0]!.maxAbsError).toBeGreaterThan(0);
    expect(r.outputs[0]!.maxAbsError).toBeLessThan(0.01);
  });

  it('fails a missing output and a shape mismatch', async () => {
    const b = new GraphBuilder();
    const x = b.input('features', DataType.FLOAT, ['batch', 16]);
    b.output(b.op1('Relu', [x]), 'other', DataType.FLOAT, ['batch', 16]);
    const f = path.join(dir, 'missing.onnx');
    saveModel(b.build(), f);
    const r = await verifyModels(ref, f);
    expect(r.passed).toBe(false);
    expect(r.outputs[0]).toMatchObject({ name: 'out', problem: 'missing from the candidate' });
    expect(r.extraOutputs).toEqual(['other']);
    const cliRun = await cli('verify', ref, f, '--json');
    expect(cliRun.code).toBe(1);
    expect(JSON.parse(cliRun.stdout).outputs[0]).toMatchObject({
      name: 'out',
      cosine: 0,
      maxAbsError: null,
      problem: 'missing from the candidate',
    });

    const s = new GraphBuilder();
    const sx = s.input('features', DataType.FLOAT, ['batch', 16]);
    s.output(s.op1('Relu', [sx]), 'out', DataType.FLOAT, ['batch', 16]);
    const g = path.join(dir, 'shape.onnx');
    saveModel(s.build(), g);
    const q = await verifyModels(ref, g);
    expect(q.passed).toBe(false);
    expect(q.outputs[0]!.shapeMatch).toBe(false);
    expect(q.outputs[0]!.problem).toBe('shape [1,16] differs from the reference [1,8]');
  });
});

describe('edgec verify', () => {
  it('exit 0 and a table when outputs match', async () => {
    const r = await cli('verify', ref, same, '--dim', 'batch=2');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^out\s+1\.000000\s+0\.000e\+0\s+0\.000e\+0\s+ok\s+ok$/m);
    expect(r.stdout).toContain('inputs: features[2,16] random');
    expect(r.stdout).toContain('passed: 1 outputs');
  });

  it('exit 1 on a perturbed weight; --json gives per-output figures', async () => {
    const r = await cli('verify', ref, bad);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toMatch(/^edgec: verification failed: 1 of 1 outputs .*\(out\)$/);
    const j = await cli('verify', ref, bad, '--json', '--seed', '9');
    expect(j.code).toBe(1);
    const o = JSON.parse(j.stdout);
    expect(o.passed).toBe(false);
    expect(o.outputs[0].cosine).toBeLessThan(0.99);
    expect(o.outputs[0].maxAbsError).toBeGreaterThan(0.1);
    // A lower threshold accepts the same candidate when no task metric applies (role unknown).
    const low = await cli('verify', ref, bad, '--seed', '9', '--role', 'unknown', '--threshold', String(o.outputs[0].cosine - 0.01));
    expect(low.code).toBe(0);
  });

  it('same seed gives the same figures, another seed other ones', async () => {
    const a = JSON.parse((await cli('verify', ref, bad, '--json', '--seed', '5')).stdout).outputs[0];
    const b = JSON.parse((await cli('verify', ref, bad, '--json', '--seed', '5')).stdout).outputs[0];
    const c = JSON.parse((await cli('verify', ref, bad, '--json', '--seed', '6')).stdout).outputs[0];
    expect(b).toEqual(a);
    expect(c.cosine).not.toBe(a.cosine);
  });

  it('reads inputs from a folder of <name>.pb and from ONNX test data', async () => {
    const inputs = path.join(dir, 'inputs');
    fs.mkdirSync(inputs);
    const feeds = randomInputs(mlpModel(), { seed: 11, dims: { batch: 7 } });
    fs.writeFileSync(path.join(inputs, 'features.pb'), encodeTensor(feeds.features!));
    const j = JSON.parse((await cli('verify', ref, same, '--inputs', inputs, '--json')).stdout);
    expect(j.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: [7, 16], source: 'file' }]);
    expect(j.passed).toBe(true);

    const conv = path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d');
    const t = JSON.parse((await cli('verify', `${conv}/model.onnx`, `${conv}/model.onnx`, '--inputs', conv, '--json')).stdout);
    expect(t.inputs).toEqual([{ name: '0', dtype: 'float32', shape: [2, 3, 7, 5], source: 'file' }]);
    expect(t.outputs[0]).toMatchObject({ name: '3', cosine: 1, maxAbsError: 0 });
  });

  it('bad options and incomplete inputs are exit 2 with one line', async () => {
    const empty = path.join(dir, 'empty-inputs');
    fs.mkdirSync(empty);
    const wrong = path.join(dir, 'wrong-inputs');
    fs.mkdirSync(wrong);
    fs.writeFileSync(path.join(wrong, 'features.pb'), encodeTensor(Tensor.fromFloat32('features', [2, 15], new Float32Array(30))));
    const r = await cli('verify', ref, same, '--inputs', wrong);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`edgec: ${wrong}: tensor for input 'features' is float32[2,15], the model takes float32[batch,16]\n`);
    const junk = path.join(dir, 'junk-inputs');
    fs.mkdirSync(junk);
    fs.writeFileSync(path.join(junk, 'features.pb'), new Uint8Array());
    for (const args of [
      ['--inputs', junk],
      ['--threshold', '2'],
      ['--threshold', 'x'],
      ['--seed', '-1'],
      ['--dim', 'batch'],
      ['--dim', 'batch=0'],
      ['--inputs', empty],
      ['--inputs', path.join(dir, 'nope')],
      ['--inputs', ref],
    ]) {
      const r = await cli('verify', ref, same, ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trimEnd().split('\n'), args.join(' ')).toHaveLength(1);
    }
  });
});
