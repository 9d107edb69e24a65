// Resolution buckets through compile(): a tiling policy's tile sizes and encoder batches become
// fixed-shape vision variants sharing one weights file, and the manifest maps plans to them.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckError, InputError } from '../../ir/index.js';
import { parseCompileOptions } from '../../cli/commands/compile.js';
import { compile } from '../../targets/compile.js';
import { readTree, tempDir, tinyMllm } from './helpers.js';

let tmp: string, vis: string;

beforeAll(() => {
  tmp = tempDir('plan-variants');
  const src = tinyMllm(tmp);
  vis = path.join(tmp, 'vision-only');
  fs.mkdirSync(vis);
  for (const f of ['vision_encoder.onnx', 'projector.onnx']) fs.copyFileSync(path.join(src, f), path.join(vis, f));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Tiling {
  variants: { visionEncoder: Record<string, Record<string, string>> };
  example: {
    batches: { tiles: number[]; padded: number }[];
    calls: { batch: number; tiles: number[]; shape: number[]; padded?: number; encoder: string }[];
  };
}

describe('compile --policy: plan -> variant', () => {
  it('batch sizes 4 only: the remainder runs padded on the b4 variant; webgpu with --image-sizes fixes the batch too', async () => {
    // --fix batch=1 (a decoder's batch) does not override the batch the policy compiles the encoder at.
    const r = await compile(vis, {
      target: 'webgpu',
      out: path.join(tmp, 'webgpu'),
      imageSizes: ['56x56'],
      policy: 'internvl',
      policyOptions: { tileSize: 56 },
      batchSizes: [4],
      fix: { batch: 1 },
    });
    expect(Object.fromEntries(r.manifest.models.map((m) => [m.file, m.inputs[0]!.shape]))).toEqual({
      'onnx/vision_encoder_56x56_b4_fp16.onnx': [4, 3, 56, 56],
      'onnx/projector_56x56_b4_fp16.onnx': [4, 4, 4, 64],
    });
    const t = (r.manifest.preprocessing as { tiling: Tiling }).tiling;
    expect(t.variants.visionEncoder).toEqual({ '56x56': { 4: 'onnx/vision_encoder_56x56_b4_fp16.onnx' } });
    // 1344x896 at 56: 3x2 grid + thumbnail = 7 tiles -> plan batches [0-3] and [4-6] + 1 padded slot.
    expect(t.example.batches.map((b) => [b.tiles, b.padded])).toEqual([
      [[0, 1, 2, 3], 0],
      [[4, 5, 6], 1],
    ]);
    expect(t.example.calls.map((c) => [c.tiles, c.shape[0], c.padded ?? 0, c.encoder])).toEqual([
      [[0, 1, 2, 3], 4, 0, 'onnx/vision_encoder_56x56_b4_fp16.onnx'],
      [[4, 5, 6], 4, 1, 'onnx/vision_encoder_56x56_b4_fp16.onnx'],
    ]);
    const v = r.manifest.models.find((m) => m.role === 'vision-encoder')!.verification!;
    expect(v.inputs[0]!.shape).toEqual([4, 3, 56, 56]);
    expect(v.passed).toBe(true);
  });

  it('npu bluelm-v: every (tile size, batch) variant verified against the dynamic original, one weights file, same bytes twice', async () => {
    const opts = { target: 'npu' as const, policy: 'bluelm-v', policyOptions: { patch: 28 }, batchSizes: [2, 1] };
    const r = await compile(vis, { ...opts, out: path.join(tmp, 'npu') });
    const enc = r.manifest.models.filter((m) => m.role === 'vision-encoder');
    expect(enc.map((m) => [m.file, m.inputs[0]!.shape, m.verification!.inputs[0]!.shape, m.verification!.passed])).toEqual([
      ['vision_encoder_28x28_b2.onnx', [2, 3, 28, 28], [2, 3, 28, 28], true],
      ['vision_encoder_28x28_b1.onnx', [1, 3, 28, 28], [1, 3, 28, 28], true],
    ]);
    for (const m of enc)
      console.log(`${m.file}: ${m.verification!.outputs.map((o) => `${o.name} cos ${o.cosine} max|d| ${o.maxAbsError}`).join('; ')}`);
    // Both variants read the one weights file; each variant's own file holds only what it folded.
    const shared = enc.map((m) => m.externalData.filter((f) => f === 'vision_encoder.onnx.data'));
    expect(shared).toEqual([['vision_encoder.onnx.data'], ['vision_encoder.onnx.data']]);
    console.log(
      `npu bluelm-v buckets: ${r.manifest.files
        .filter((f) => f.path.startsWith('vision_encoder'))
        .map((f) => `${f.path} ${f.bytes} B`)
        .join(', ')}`,
    );
    const t = (r.manifest.preprocessing as { tiling: Tiling }).tiling;
    const calls = t.example.calls;
    // Every tile of the plan runs exactly once, on a variant of its own shape.
    expect(calls.flatMap((c) => c.tiles)).toEqual(t.example.batches.flatMap((b) => b.tiles));
    for (const c of calls) expect(c.encoder).toBe(`vision_encoder_28x28_b${c.shape[0]}.onnx`);
    expect(calls.every((c) => !c.padded)).toBe(true);
    const again = await compile(vis, { ...opts, out: path.join(tmp, 'npu-again') });
    const a = readTree(r.outDir),
      b = readTree(again.outDir);
    expect(Object.keys(b)).toEqual(Object.keys(a));
    for (const f of Object.keys(a)) expect(b[f]!.equals(a[f]!), f).toBe(true);
  });

  it('a plan needing a tile size that was not compiled is refused, naming the size', async () => {
    const err = await compile(vis, {
      target: 'npu',
      out: path.join(tmp, 'bad'),
      imageSizes: ['84x84'],
      policy: 'internvl',
      policyOptions: { tileSize: 56 },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckError);
    expect(String(err.message)).toContain('needs tiles of 56x56 (WxH) with no compiled variant (have: 84x84)');
    expect(fs.existsSync(path.join(tmp, 'bad'))).toBe(false);
    await expect(
      compile(vis, { target: 'npu', out: path.join(tmp, 'bad'), policy: 'internvl', policyOptions: { tileSise: 56 } }),
    ).rejects.toThrow(InputError);
    await expect(compile(vis, { target: 'npu', out: path.join(tmp, 'bad'), batchSizes: [4] })).rejects.toThrow(InputError);
  });

  it('CLI flags: --policy-option name=value and --batch-sizes', () => {
    const base = { target: 'npu', blockSize: '32', method: 'rtn', fix: [], verify: true, fp16: true, policy: 'internvl' };
    const o = parseCompileOptions(
      { ...base, policyOption: ['tileSize=56', 'thumbnail=false', 'downsample=0.5'], batchSizes: '4,1' },
      'm.onnx',
    );
    expect([o.policyOptions, o.batchSizes]).toEqual([{ tileSize: 56, thumbnail: false, downsample: 0.5 }, [4, 1]]);
    expect(() => parseCompileOptions({ ...base, policyOption: ['tileSize'] }, 'm.onnx')).toThrow(InputError);
    expect(() => parseCompileOptions({ ...base, policyOption: [], batchSizes: '4,0' }, 'm.onnx')).toThrow(InputError);
  });
});
