// `edgec run` on tiling-policy artifacts: the image planned with the manifest's policy, tiles cut
// and resized as the plan says, encoder calls on the compiled (tile size, batch) variants, image
// embeddings in tile order before the prompt; `--compare` runs the same tiles on the fp32 source.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../../targets/compile.js';
import { runArtifact, tileImage } from '../../targets/run.js';
import { planImage } from '../../targets/plan/index.js';
import { SessionPool, encodeImage, generate } from '../../runtime/generate.js';
import { cropResize, decodeImage, encodePng, toPixelValues } from '../../runtime/image.js';
import { writeTinyMllmConfigs } from '../../fixtures/tiny-mllm.js';
import { cli } from '../cli/helpers.js';
import { tempDir, tinyMllm } from './helpers.js';

/** 168x112: InternVL at 56-pixel tiles picks the 3x2 grid (aspect 1.5), so each tile is an exact
 * 56x56 block of the image (no resampling), plus the thumbnail of the whole image. */
function patternPng(file: string, w = 168, h = 112): void {
  const d = new Float32Array(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const x = i % w,
      y = Math.floor(i / w);
    d[i * 3] = x / w;
    d[i * 3 + 1] = y / h;
    d[i * 3 + 2] = ((x * y) % 17) / 17;
  }
  fs.writeFileSync(file, encodePng({ width: w, height: h, data: d }));
}

describe('edgec run on tiling-policy artifacts', () => {
  let tmp: string, src: string, image: string;
  const tiled = { policy: 'internvl', policyOptions: { tileSize: 56 } };
  const prompt = 'What is in the image?';
  beforeAll(() => {
    tmp = tempDir('run-tiled');
    src = tinyMllm(tmp);
    writeTinyMllmConfigs(src);
    image = path.join(tmp, 'pattern.png');
    patternPng(image);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('the source run is InternVL preprocessing done by hand: 6 blocks row by row, then the thumbnail', async () => {
    const out = path.join(tmp, 'exact');
    // fp32, unquantized, static b4/b1 variants: only the tiling path differs from the source's.
    await compile(src, { target: 'webgpu', out, quant: 'none', fp16: false, imageSizes: ['56x56'], batchSizes: [4, 1], ...tiled });
    const r = await runArtifact(out, { image, prompt, maxNewTokens: 8, compare: src });
    expect(r.tiling).toEqual({ policy: 'internvl', image: { width: 168, height: 112 }, grids: ['3x2 main'], tiles: 7, encoderCalls: 4 });
    expect(r.imageTokens).toBe(28);
    // The compiled-variant calls (4 tiles, then 1+1+1) give the source's per-plan-batch result.
    expect(r.tokens).toEqual(r.reference!.tokens);
    expect(r.firstDivergence).toBeNull();
    expect(r.firstLogits!.cosine).toBeGreaterThan(0.99999);

    const img = decodeImage(image);
    const block = (c: number, row: number) => cropResize(img, { x0: c * 56, y0: row * 56, x1: (c + 1) * 56, y1: (row + 1) * 56 }, 56, 56);
    const tiles = [0, 1].flatMap((row) => [0, 1, 2].map((c) => block(c, row)));
    tiles.push(cropResize(img, { x0: 0, y0: 0, x1: 168, y1: 112 }, 56, 56));
    // An exact block: no resampling, the image's own pixels.
    expect(tiles[4]!.data[0]).toBe(img.data[(56 * 168 + 56) * 3]);
    const pool = new SessionPool('disabled');
    try {
      const rows: Float32Array[] = [];
      for (const t of tiles)
        rows.push(
          (
            await encodeImage(
              pool,
              path.join(src, 'vision_encoder.onnx'),
              path.join(src, 'projector.onnx'),
              toPixelValues(t),
              [1, 3, 56, 56],
            )
          ).data,
        );
      const data = new Float32Array(rows.reduce((n, x) => n + x.length, 0));
      rows.reduce((at, x) => {
        data.set(x, at);
        return at + x.length;
      }, 0);
      const files = { embed: path.join(src, 'embed_tokens.onnx'), decoder: path.join(src, 'decoder_model_merged.onnx') };
      const want = await generate(pool, files, { data, rows: 28 }, r.promptIds, { maxNewTokens: 8 });
      expect(r.reference!.tokens).toEqual(want.tokens);
      // Tile order matters: the thumbnail first gives other logits.
      const moved = new Float32Array(data.length);
      moved.set(data.subarray(24 * 128), 0);
      moved.set(data.subarray(0, 24 * 128), 4 * 128);
      const other = await generate(pool, files, { data: moved, rows: 28 }, r.promptIds, { maxNewTokens: 1 });
      expect(Math.max(...other.firstLogits.map((v, i) => Math.abs(v - want.firstLogits[i]!)))).toBeGreaterThan(1e-3);
    } finally {
      await pool.release();
    }
  });

  it('each target compiled with the policy against the fp32 source', async () => {
    const rows: string[] = [];
    for (const target of ['webgpu', 'mobile', 'npu'] as const) {
      const out = path.join(tmp, target);
      await compile(src, { target, out, ...tiled, ...(target === 'webgpu' ? { imageSizes: ['56x56'] } : {}) });
      const r = await runArtifact(out, { image, prompt, maxNewTokens: 8, compare: src });
      expect(r.imageTokens).toBe(28);
      expect(r.tiling!.tiles).toBe(7);
      const first = r.tokens.findIndex((t, i) => t !== r.reference!.tokens[i]);
      expect(r.firstDivergence).toBe(first < 0 ? null : first);
      rows.push(
        `tiled ${target}: ${r.tiling!.encoderCalls} encoder calls; ${r.tokens.join(',')} vs source ${r.reference!.tokens.join(',')}; first divergence ${r.firstDivergence}; first-step logits cos ${r.firstLogits!.cosine}`,
      );
      // 4-bit weights on random-init weights: the first step stays close (later greedy tokens flip on near ties).
      expect(r.firstLogits!.cosine).toBeGreaterThan(0.95);
    }
    console.log(rows.join('\n'));
  });

  it('BlueLM-V tiles are cells of the padded canvas (LLaVA-NeXT resize_and_pad done by hand)', () => {
    const file = path.join(tmp, 'wide.png');
    patternPng(file, 150, 60);
    const img = decodeImage(file);
    const plan = planImage('bluelm-v', { width: 150, height: 60 }, { patch: 56 });
    const g = plan.grids[0]!;
    // By hand: the whole image resized to fit (aspect kept, ceil), pasted centred on a black canvas.
    const cw = g.cols * 56,
      ch = g.rows * 56,
      s = Math.min(cw / 150, ch / 60);
    const rw = Math.min(cw, Math.ceil(150 * s)),
      rh = Math.min(ch, Math.ceil(60 * s));
    const px = Math.floor((cw - rw) / 2),
      py = Math.floor((ch - rh) / 2);
    const resized = cropResize(img, { x0: 0, y0: 0, x1: 150, y1: 60 }, rw, rh);
    const canvas = new Float32Array(cw * ch * 3);
    for (let y = 0; y < rh; y++) canvas.set(resized.data.subarray(y * rw * 3, (y + 1) * rw * 3), ((y + py) * cw + px) * 3);
    let padded = 0;
    for (const t of plan.tiles) {
      const got = tileImage(img, plan, t);
      if (t.kind === 'global') {
        expect(got.data).toEqual(cropResize(img, t.crop, 56, 56).data);
        continue;
      }
      let worst = 0;
      for (let y = 0; y < 56; y++)
        for (let x = 0; x < 56 * 3; x++) {
          const want = canvas[((t.row * 56 + y) * cw + t.col * 56) * 3 + x]!;
          worst = Math.max(worst, Math.abs(got.data[y * 56 * 3 + x]! - want));
          if (want === 0 && got.data[y * 56 * 3 + x] === 0) padded++;
        }
      expect(worst).toBeLessThan(1e-6);
    }
    expect(ch - rh + cw - rw).toBeGreaterThan(0);
    expect(padded).toBeGreaterThan(56 * 3);
  });

  it('cli: prints the plan; a tiled artifact runs text-only without --image', async () => {
    const r = await cli('run', path.join(tmp, 'mobile'), '--image', image, '--tokens', '508,5,6', '--max-new-tokens', '2');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/28 image tokens \(internvl: 168x112 -> 3x2 main, 7 tiles in \d+ encoder calls\) \+ 3 prompt tokens/);
    const text = await cli('run', path.join(tmp, 'mobile'), '--tokens', '508,5,6', '--max-new-tokens', '2', '--json');
    expect(text.code).toBe(0);
    expect((JSON.parse(text.stdout) as { imageTokens: number }).imageTokens).toBe(0);
  });
});
