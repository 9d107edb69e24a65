// paddle2onnx names every dynamic dim `p2o.DynamicDimension.N`: nothing in the name says image side
// or batch. --image-sizes binds them by position (axes 0, 2, 3 of an [N, C, H, W] image input): the
// corpus text detector and SigLIP encoder with their dims renamed that way compile as the named
// originals do, and the npu artifact matches torch's outputs on the exporter's test set.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel, saveModel } from '../../ir/index.js';
import { compareTensors, loadTestDataSet, runModel } from '../../runtime/ort.js';
import { compile } from '../../targets/compile.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-p2o-dims-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of a corpus model (and its test sets) with its I/O dims renamed as paddle2onnx names them. */
function paddleStyle(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const m = loadModel(path.join(ROOT, name, 'model.onnx'));
  const rename: Record<string, string> = {};
  for (const v of [...m.graph.inputs, ...m.graph.outputs]) {
    if (!v.type?.shape) continue;
    const shape = v.type.shape.map((d) =>
      typeof d === 'string' ? (rename[d] ??= `p2o.DynamicDimension.${Object.keys(rename).length}`) : d,
    );
    v.type = { ...v.type, shape };
  }
  saveModel(m, path.join(dir, 'model.onnx'));
  for (const d of fs.readdirSync(path.join(ROOT, name)).filter((d) => /^test_data_set_\d+$/.test(d)))
    fs.cpSync(path.join(ROOT, name, d), path.join(dir, d), { recursive: true });
  return dir;
}

function iou(a: Float32Array, b: Float32Array): number {
  let i = 0,
    u = 0;
  for (let k = 0; k < a.length; k++) {
    const p = a[k]! > 0.5,
      q = b[k]! > 0.5;
    i += +(p && q);
    u += +(p || q);
  }
  return u ? i / u : 1;
}

describe('--image-sizes binds dims by position', () => {
  it('npu text detector with p2o.DynamicDimension dims: the named original artifact byte for byte, and torch outputs kept', async () => {
    const dir = paddleStyle('textdet');
    const src = loadModel(path.join(dir, 'model.onnx'));
    expect(src.graph.inputs[0]!.type!.shape).toEqual(['p2o.DynamicDimension.0', 3, 'p2o.DynamicDimension.1', 'p2o.DynamicDimension.2']);
    const opts = { target: 'npu' as const, imageSizes: ['160x96'], verify: false };
    const p2o = await compile(path.join(dir, 'model.onnx'), { ...opts, out: path.join(tmp, 'p2o-npu'), calibration: dir });
    const named = await compile(path.join(ROOT, 'textdet', 'model.onnx'), {
      ...opts,
      out: path.join(tmp, 'named-npu'),
      calibration: path.join(ROOT, 'textdet'),
    });
    const e = p2o.manifest.models[0]!;
    expect(e.inputs[0]!.shape).toEqual([1, 3, 96, 160]);
    for (const f of ['model_static.onnx', 'model_static.onnx.data'])
      expect(fs.readFileSync(path.join(p2o.outDir, f)).equals(fs.readFileSync(path.join(named.outDir, f))), f).toBe(true);
    // Torch's probability map on the 1x3x96x160 test set, against the artifact run on its own.
    const set = loadTestDataSet(path.join(dir, 'test_data_set_0'), src);
    expect(set.inputs.x!.dims).toEqual([1, 3, 96, 160]);
    const got = (await runModel(path.join(p2o.outDir, e.file), set.inputs)).maps!;
    const torch = set.outputs!.maps!;
    expect(compareTensors(torch, got).cosine).toBeGreaterThan(0.999);
    expect(iou(torch.toFloat32(), got.toFloat32())).toBeGreaterThan(0.98);
  }, 120_000);

  it('webgpu SigLIP encoder with p2o.DynamicDimension dims: height and width baked in, verified on the test set that fits', async () => {
    const dir = paddleStyle('siglip_vit');
    const r = await compile(path.join(dir, 'model.onnx'), {
      target: 'webgpu',
      out: path.join(tmp, 'p2o-webgpu'),
      imageSizes: ['288x192'],
      inputs: [dir],
      roles: { 'model.onnx': 'vision-encoder' },
    });
    const e = r.manifest.models[0]!;
    expect(e.inputs[0]!.shape).toEqual(['p2o.DynamicDimension.0', 3, 192, 288]);
    expect(e.verification!.inputsUsed!.source).toBe('test-data');
    expect(e.verification!.inputsUsed!.count).toBe(1);
    expect(e.verification!.passed).toBe(true);
    // The 192x288 test set against torch's output, the artifact run on its own.
    const src = loadModel(path.join(dir, 'model.onnx'));
    const sets = fs.readdirSync(dir).filter((d) => /^test_data_set_\d+$/.test(d));
    const set = sets.map((d) => loadTestDataSet(path.join(dir, d), src)).find((s) => s.inputs.pixel_values!.dims[2] === 192)!;
    const got = (await runModel(path.join(r.outDir, e.file), set.inputs)).last_hidden_state!;
    expect(compareTensors(set.outputs!.last_hidden_state!, got).cosine).toBeGreaterThan(0.999);
  }, 120_000);
});
