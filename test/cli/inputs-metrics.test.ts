// Inputs shared by verify/compile (test-data sets, images, tokens, realistic synthetic dims), task
// metrics, role guesses and calibration range methods.
import fs from 'node:fs';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, encodeTensor, guessRole, loadModel, saveModel } from '../../ir/index.js';
import { writeTinyMllm } from '../../fixtures/tiny-mllm.js';
import { IMAGE_PRESETS, decodeImage, defaultDims, dimKinds, imageToChw, loadInputs, testDataSets } from '../../runtime/inputs.js';
import { METRIC_THRESHOLDS, TaskAccumulator } from '../../runtime/metrics.js';
import { RangeCollector } from '../../runtime/calibrate.js';
import { randn, rng } from '../../runtime/ort.js';
import { verifyModels } from '../../runtime/verify.js';
import { CONFORMANCE, ROOT, cli, tmpDir } from './helpers.js';

const dir = tmpDir('inputs');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const tiny = writeTinyMllm(path.join(dir, 'mllm'));
const EXPORT = path.join(ROOT, 'fixtures/export');
const DECODER = path.join(EXPORT, 'decoder_nokv/model.onnx');

/** A conv classifier as torchvision exports it: image [N,3,H,W] -> ... -> logits [N, C]. */
function classifier(perturb = 0) {
  const rand = rng(3);
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('input', DataType.FLOAT, ['batch', 3, 'height', 'width']);
  const w = randn(rand, 8 * 3 * 3 * 3, 0.3);
  const c = b.op1('Conv', [x, b.initializer(Tensor.fromFloat32('conv.weight', [8, 3, 3, 3], w))], { attrs: { pads: [1, 1, 1, 1] } });
  const r = b.op1('Relu', [c]);
  const p = b.op1('GlobalAveragePool', [r]);
  const f = b.op1('Flatten', [p]);
  const fc = randn(rand, 8 * 10, 1);
  for (let i = 0; perturb && i < fc.length; i += 2) fc[i]! += perturb;
  const y = b.op1('MatMul', [f, b.initializer(Tensor.fromFloat32('fc.weight', [8, 10], fc))]);
  b.output(y, 'logits', DataType.FLOAT, ['batch', 10]);
  return b.build();
}

describe('realistic synthetic inputs', () => {
  it('never bind a spatial or sequence dim to 1 (tiny MLLM sub-models, conformance Conv2d with dims made symbolic)', () => {
    const figures: string[] = [];
    const models = Object.values(tiny).map((f) => loadModel(f));
    const conv = loadModel(path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d/model.onnx'));
    conv.graph.inputs[0]!.type!.shape = ['N', 3, 'H', 'W'];
    for (const m of [...models, conv]) {
      const kinds = dimKinds(m);
      for (const batch of [1, 2]) {
        const dims = defaultDims(m, {}, batch);
        for (const [d, k] of kinds) {
          if (k === 'batch') expect(dims[d]).toBe(batch);
          if (['height', 'width', 'sequence', 'past', 'total', 'grid'].includes(k)) expect(dims[d], `${d} (${k})`).toBeGreaterThan(1);
          if (k === 'height' || k === 'width') expect(dims[d]).toBeGreaterThanOrEqual(16);
          if (k === 'sequence') expect(dims[d]).toBeGreaterThanOrEqual(64);
        }
        if (batch === 1) figures.push(JSON.stringify(dims));
      }
      const sets = loadInputs(m).sets;
      for (const s of sets) for (const t of Object.values(s)) expect(t.dims.every((d) => d >= 1)).toBe(true);
    }
    // The tiny vision encoder's position table is a 4x4 grid of 14-pixel patches: 56x56 images.
    expect(defaultDims(loadModel(tiny.vision_encoder))).toMatchObject({ height: 56, width: 56 });
    console.log(`synthetic dims: ${figures.join(' ')}`);
  });

  it('refuses a spatial or sequence dim below the minimum, naming the dim and the flag', async () => {
    const m = loadModel(tiny.vision_encoder);
    expect(() => defaultDims(m, { dims: { height: 1 }, dimFlag: '--fix' })).toThrow(
      /symbolic dim 'height' \(height\) = 1 is below the minimum 28 .*pass --fix height=N/,
    );
    const r = await cli('verify', tiny.vision_encoder, tiny.vision_encoder, '--dim', 'width=1');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^edgec: symbolic dim 'width' \(width\) = 1 is below the minimum 28 for a meaningful check: pass --dim width=N with N >= 28\n$/,
    );
    // One new token says something only on top of a cache.
    const dec = loadModel(tiny.decoder);
    expect(() => defaultDims(dec, { dims: { seq: 1, past_seq: 0 } })).toThrow(/'seq' \(sequence\) = 1 is below the minimum 2/);
    expect(defaultDims(dec, { dims: { seq: 1, past_seq: 8 } })).toMatchObject({ seq: 1, past_seq: 8, total_seq: 9 });
  });
});

describe('user inputs', () => {
  it('every test_data_set_N is a set; other folders beside them are not', async () => {
    const m = classifier();
    const f = path.join(dir, 'cls', 'model.onnx');
    saveModel(m, f);
    const rand = rng(5);
    for (let i = 0; i < 3; i++) {
      const d = path.join(dir, 'cls', `test_data_set_${i}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'input_0.pb'), encodeTensor(Tensor.fromFloat32('input', [1, 3, 32, 32], randn(rand, 3 * 32 * 32))));
    }
    fs.mkdirSync(path.join(dir, 'cls', 'images'));
    fs.writeFileSync(path.join(dir, 'cls', 'images', 'readme.txt'), 'sources');
    expect(testDataSets(path.join(dir, 'cls')).map((d) => path.basename(d))).toEqual([
      'test_data_set_0',
      'test_data_set_1',
      'test_data_set_2',
    ]);
    const r = await verifyModels(f, f, { inputs: [path.join(dir, 'cls')] });
    expect(r.inputsUsed).toMatchObject({ source: 'test-data', count: 3, synthetic: false });
    expect(r.role).toBe('classifier');
    expect(r.metrics.map((x) => [x.name, x.value, x.passed])).toEqual([
      ['logits: top1', 1, true],
      ['logits: top5', 1, true],
    ]);
    const j = JSON.parse((await cli('verify', f, f, '--inputs', path.join(dir, 'cls'), '--json')).stdout);
    expect(j.inputsUsed.count).toBe(3);
  });

  it('decodes PNG and JPEG and normalises with the preset, as computed by hand', () => {
    const W = 4,
      H = 2;
    const png = new PNG({ width: W, height: H });
    for (let i = 0; i < W * H; i++) png.data.set([i * 30, 255 - i * 30, 100, 255], i * 4);
    const pf = path.join(dir, 'a.png');
    fs.writeFileSync(pf, PNG.sync.write(png));
    const img = decodeImage(pf);
    expect([img.width, img.height]).toEqual([W, H]);
    const { mean, std } = IMAGE_PRESETS.clip!;
    const chw = imageToChw(img, W, H, mean, std);
    // Same size: no interpolation, channel c of pixel i is (v/255 - mean) / std.
    expect(chw[0]).toBeCloseTo((0 / 255 - mean[0]!) / std[0]!, 5);
    expect(chw[W * H + 5]).toBeCloseTo(((255 - 150) / 255 - mean[1]!) / std[1]!, 5);
    // Half-size: each output pixel is the mean of a 2x1 pair in x (half-pixel centres).
    const half = imageToChw(img, 2, 1, [0, 0, 0], [1, 1, 1]);
    expect(half[0]).toBeCloseTo((0 + 30 + 120 + 150) / 4 / 255, 5);
    const jf = path.join(dir, 'b.jpg');
    const raw = Buffer.alloc(16 * 16 * 4, 200);
    fs.writeFileSync(jf, jpeg.encode({ data: raw, width: 16, height: 16 }, 95).data);
    const j = decodeImage(jf);
    expect(Math.abs(j.data[0]! - 200)).toBeLessThan(3);
    expect(() => decodeImage(path.join(dir, 'cls', 'images', 'readme.txt'))).toThrow(/neither PNG nor JPEG/);
  });

  it('--images feeds the classifier; --tokens feeds the decoder teacher-forced with perplexity', async () => {
    const f = path.join(dir, 'cls', 'model.onnx');
    const r = await cli(
      'verify',
      f,
      f,
      '--images',
      path.join(dir, 'a.png'),
      '--images',
      path.join(dir, 'b.jpg'),
      '--preset',
      'imagenet',
      '--dim',
      'height=32',
      '--dim',
      'width=32',
      '--json',
    );
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.inputsUsed).toMatchObject({ source: 'images', count: 2 });
    expect(j.inputsUsed.from[0]).toMatch(/2 images resized to 32x32, imagenet mean\/std/);
    const tok = path.join(dir, 'tokens.txt');
    fs.writeFileSync(
      tok,
      `${Array.from({ length: 24 }, (_, i) => (i * 37) % 272).join(' ')}\n${Array.from({ length: 12 }, (_, i) => (i * 11) % 272).join(',')}\n`,
    );
    // The tiny decoder takes embeddings, not ids: refused with the reason.
    await expect(verifyModels(tiny.decoder, tiny.decoder, { tokens: tok })).rejects.toThrow(
      /the model takes no token ids \(inputs: inputs_embeds, /,
    );
    const d = await verifyModels(DECODER, DECODER, { tokens: tok });
    expect(d.inputsUsed).toMatchObject({ source: 'tokens', count: 2 });
    const ppl = d.metrics.find((x) => x.name === 'logits: perplexity')!;
    expect(ppl.count).toBe(23 + 11);
    expect(d.metrics.find((x) => x.name === 'logits: perplexityRatio')!.value).toBeCloseTo(1, 6);
    expect(d.metrics.find((x) => x.name === 'logits: kl')!.value).toBeLessThan(1e-9);
  });
});

describe('task metrics', () => {
  it('a perturbed classifier loses top-1 agreement and fails, a faithful one keeps it', async () => {
    const a = path.join(dir, 'cls-a.onnx'),
      b = path.join(dir, 'cls-b.onnx');
    saveModel(classifier(), a);
    saveModel(classifier(1.5), b);
    const r = await verifyModels(a, b, { dims: { height: 32, width: 32, batch: 16 } });
    const top1 = r.metrics.find((m) => m.name === 'logits: top1')!;
    expect(top1.count).toBe(16);
    expect(top1.value).toBeLessThan(METRIC_THRESHOLDS.top1);
    expect(r.passed).toBe(false);
    // top-1 agreement counted independently here.
    const { runModel } = await import('../../runtime/ort.js');
    const x = loadInputs(loadModel(a), { dims: { height: 32, width: 32, batch: 16 } }).sets[0]!;
    const ra = (await runModel(a, x)).logits!.toFloat32(),
      rb = (await runModel(b, x)).logits!.toFloat32();
    const arg = (v: Float32Array, r0: number) => {
      let k = 0;
      for (let i = 1; i < 10; i++) if (v[r0 * 10 + i]! > v[r0 * 10 + k]!) k = i;
      return k;
    };
    let same = 0;
    for (let i = 0; i < 16; i++) if (arg(ra, i) === arg(rb, i)) same++;
    expect(top1.value).toBeCloseTo(same / 16, 10);
  });

  it('decoder KL matches a direct computation; flat references leave next-token agreement unjudged', () => {
    const V = 5;
    const ref = Tensor.fromFloat32('logits', [1, 2, V], Float32Array.from([3, 0, 0, 0, 0, 0.1, 0, 0, 0, 0]));
    const cand = Tensor.fromFloat32('logits', [1, 2, V], Float32Array.from([2, 0, 1, 0, 0, 0, 0.1, 0, 0, 0]));
    const acc = new TaskAccumulator('decoder');
    acc.add(ref, cand);
    const sm = (v: number[]) => {
      const e = v.map(Math.exp);
      const s = e.reduce((a, b) => a + b);
      return e.map((x) => x / s);
    };
    const kl = (p: number[], q: number[]) => p.reduce((s, x, i) => s + x * Math.log(x / q[i]!), 0);
    const want = (kl(sm([3, 0, 0, 0, 0]), sm([2, 0, 1, 0, 0])) + kl(sm([0.1, 0, 0, 0, 0]), sm([0, 0.1, 0, 0, 0]))) / 2;
    const m = acc.metrics();
    expect(m.find((x) => x.name === 'kl')!.value).toBeCloseTo(want, 10);
    // Only position 0 is decisive (0.1 logit gap is not), and its argmax is kept.
    expect(m.find((x) => x.name === 'nextToken')).toMatchObject({ value: 1, count: 1 });
  });

  it('decoder metrics skip left padding (attention_mask 0): no runtime reads those logits', () => {
    const V = 4;
    // Row 1 position 0 is padding, and its candidate is far off; every real position agrees exactly.
    const ref = Tensor.fromFloat32('logits', [2, 2, V], Float32Array.from([4, 0, 0, 0, 0, 4, 0, 0, 4, 0, 0, 0, 0, 0, 4, 0]));
    const cand = Tensor.fromFloat32('logits', [2, 2, V], Float32Array.from([4, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 9, 0, 0, 4, 0]));
    const mask = Tensor.fromInt64('attention_mask', [2, 2], [1, 1, 0, 1]);
    const ids = Tensor.fromInt64('input_ids', [2, 2], [0, 1, 3, 2]);
    const acc = new TaskAccumulator('decoder');
    acc.add(ref, cand, ids, mask);
    const m = acc.metrics();
    expect(m.find((x) => x.name === 'kl')).toMatchObject({ value: 0, count: 3 });
    expect(m.find((x) => x.name === 'nextToken')).toMatchObject({ value: 1, count: 3 });
    // Teacher forcing scores row 0 (0 -> 1) only: a pad is never a context nor a target.
    expect(m.find((x) => x.name === 'perplexity')).toMatchObject({ count: 1 });
    const all = new TaskAccumulator('decoder');
    all.add(ref, cand);
    expect(all.metrics().find((x) => x.name === 'kl')!.value).toBeGreaterThan(1);
  });
});

describe('roles', () => {
  it('tells a classifier with a logits output from a decoder, and finds a whole MLLM graph', () => {
    expect(guessRole(classifier()).role).toBe('classifier');
    expect(guessRole(loadModel(tiny.decoder)).role).toBe('decoder');
    expect(guessRole(loadModel(tiny.vision_encoder)).role).toBe('vision-encoder');
    // pixels and ids in, logits [B, S, V] out: one graph.
    const b = new GraphBuilder({ opset: 17 });
    const px = b.input('pixel_values', DataType.FLOAT, ['batch', 3, 'height', 'width']);
    const ids = b.input('input_ids', DataType.INT64, ['batch', 'seq']);
    const emb = b.op1('Gather', [b.initializer(Tensor.fromFloat32('embed', [32, 8], randn(rng(1), 256))), ids]);
    const pooled = b.op1('ReduceMean', [px], { attrs: { axes: [1, 2, 3], keepdims: 0 } });
    const h = b.op1('Add', [
      emb,
      b.op1('Unsqueeze', [
        b.op1('Unsqueeze', [pooled, b.initializer(Tensor.fromInt64('a1', [1], [1]))]),
        b.initializer(Tensor.fromInt64('a2', [1], [2])),
      ]),
    ]);
    b.output(b.op1('MatMul', [h, b.initializer(Tensor.fromFloat32('lm', [8, 32], randn(rng(2), 256)))]), 'logits', DataType.FLOAT, [
      'batch',
      'seq',
      32,
    ]);
    expect(guessRole(b.build()).role).toBe('mllm');
  });

  it('compile --role overrides the guess; a role naming no model is refused', async () => {
    const f = path.join(dir, 'cls-a.onnx');
    const out = path.join(dir, 'cls-mobile');
    const r = await cli('compile', f, '--target', 'mobile', '-o', out, '--role', 'cls-a.onnx=vision-encoder', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).manifest.models[0].role).toBe('vision-encoder');
    const bad = await cli('compile', f, '--target', 'mobile', '-o', out, '--role', 'nope.onnx=decoder');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--role names 'nope', which is not among the models \(cls-a\.onnx\)/);
  });
});

describe('calibration ranges', () => {
  it('percentile matches the sorted-sample percentile; entropy clips a lone outlier; minmax keeps it', () => {
    const rand = rng(9);
    const x = randn(rand, 100_000);
    x[17] = 40;
    const sorted = Array.from(x, Math.abs).sort((a, b) => a - b);
    const exact = sorted[Math.ceil(0.99 * sorted.length) - 1]!;
    const p = new RangeCollector('percentile', 99);
    p.add('x', x.subarray(0, 50_000));
    p.add('x', x.subarray(50_000));
    const [, hi] = p.ranges().get('x')!;
    // Within one histogram bin (40 / 2048) of the exact percentile.
    expect(Math.abs(hi - exact)).toBeLessThan(40 / 2048 + 1e-6);
    const mm = new RangeCollector('minmax');
    mm.add('x', x);
    expect(mm.ranges().get('x')![1]).toBe(40);
    const e = new RangeCollector('entropy');
    e.add('x', x);
    const [elo, ehi] = e.ranges().get('x')!;
    expect(ehi).toBeLessThan(10);
    expect(ehi).toBeGreaterThan(2);
    expect(elo).toBeLessThan(-2);
  });
});

describe('one rule for decoder logits: judged by their next-token distributions, on every path', () => {
  /** The trained decoder with its logits shifted (softmax unchanged, cosine down) or sharpened (cosine 1, distributions changed). */
  function edited(kind: 'shift' | 'sharpen'): string {
    const m = loadModel(DECODER);
    const g = m.graph;
    const c = g.addInitializer(Tensor.fromFloat32(`${kind}_c`, [], new Float32Array([kind === 'shift' ? 4 : 3])));
    const outs = g.outputs.map((v) => {
      if (v.name !== 'logits') return v;
      const out = g.addNode({ opType: kind === 'shift' ? 'Add' : 'Mul', inputs: [v, c], outputs: ['logits_edited'] }).output(0)!;
      g.renameValue(v, 'logits_raw');
      g.renameValue(out, 'logits');
      return out;
    });
    g.setOutputs(outs);
    const file = path.join(dir, `decoder-${kind}.onnx`);
    saveModel(m, file);
    return file;
  }
  const inputs = [path.join(EXPORT, 'decoder_nokv')];

  it('shifted logits (same softmax, cosine under 0.99) pass; sharpened ones (cosine 1) fail on KL', async () => {
    const shift = await verifyModels(DECODER, edited('shift'), { inputs, role: 'decoder', threshold: 0.99 });
    const sharp = await verifyModels(DECODER, edited('sharpen'), { inputs, role: 'decoder', threshold: 0.99 });
    const kl = (r: typeof shift) => r.metrics.find((m) => m.name === 'logits: kl')!;
    expect(shift.outputs[0]!.cosine).toBeLessThan(0.99);
    expect(kl(shift).value).toBeLessThan(1e-6);
    expect(shift.passed).toBe(true);
    expect(sharp.outputs[0]!.cosine).toBeGreaterThan(0.9999);
    expect(kl(sharp).passed).toBe(false);
    expect(sharp.passed).toBe(false);
    expect(sharp.outputs[0]!.problem).toMatch(/^kl /);
  });
});
