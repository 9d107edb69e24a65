// The product end to end in onnxruntime-node: the fixture MLLM compiled for mobile, npu (run on
// the CPU EP) and webgpu (fp16, checked in node; the browser run is in webgpu.test.ts).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, loadModel } from '../../ir/index.js';
import { byTaskMetrics, verifyModels } from '../../runtime/verify.js';
import { feedsFor, runFeeds } from '../../targets/run-feeds.js';
import { compile, type CompileResult } from '../../targets/compile.js';
import { WEBGPU_PROFILES } from '../../targets/webgpu/profiles.js';
import { FLOATS, largestInitializer, manifestMatchesFiles, readTree, tempDir, tinyMllm } from './helpers.js';

let tmp: string, src: string;
const results: Partial<Record<'mobile' | 'npu' | 'webgpu', CompileResult>> = {};

beforeAll(async () => {
  tmp = tempDir('compile');
  src = tinyMllm(tmp);
  results.mobile = await compile(src, { target: 'mobile', out: path.join(tmp, 'mobile'), imageSizes: ['56x56'] });
  // npu with a tiling policy: the vision encoder and projector at the plan's tile size (shrunk to 56 to
  // keep the fixture fast) and encoder batches 4 and 1.
  results.npu = await compile(src, { target: 'npu', out: path.join(tmp, 'npu'), policy: 'internvl', policyOptions: { tileSize: 56 } });
  results.webgpu = await compile(src, { target: 'webgpu', out: path.join(tmp, 'webgpu'), imageSizes: ['56x56'] });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Re-run every emitted model against its source in onnxruntime-node, independently of compile(). */
async function rerun(target: 'mobile' | 'npu' | 'webgpu') {
  const r = results[target]!;
  const figures: string[] = [];
  for (const m of r.manifest.models) {
    const source = path.join(src, `${m.name}.onnx`);
    // Static (npu) models fix their own dims; dynamic ones get a prompt of 5 after 3 cached tokens.
    const dims: Record<string, number> =
      target === 'npu' ? {} : { seq: 5, past_seq: 3, total_seq: 8, height: 56, width: 56, grid_h: 4, grid_w: 4 };
    // A decoder: on what `edgec run` feeds it (other prompts than compile's), in the target's KV
    // layout, judged by the decoder task metrics.
    // (Dynamic targets' manifests carry no window: compile's defaults.)
    const o = { context: 256, prefillChunk: 16, ...(r.manifest.options as { context?: number; prefillChunk?: number }) };
    const siblings = r.manifest.models.map((x) => ({ name: x.name, role: x.role, file: path.join(src, `${x.name}.onnx`) }));
    const win =
      m.role === 'decoder'
        ? await runFeeds(
            loadModel(source),
            { source, role: m.role, siblings, opts: { context: o.context, prefillChunk: o.prefillChunk, imageSizes: [], fix: {} } },
            99,
            target === 'npu' ? 'static' : 'dynamic',
          )
        : undefined;
    const sets = win && feedsFor(win, loadModel(path.join(r.outDir, m.file)));
    if (m.role === 'decoder') expect(sets?.sets.length).toBeGreaterThan(0);
    const check = await verifyModels(source, path.join(r.outDir, m.file), { seed: 99, threshold: m.verification!.threshold, dims, sets });
    const res = sets ? byTaskMetrics(check) : check;
    for (const o of res.outputs)
      figures.push(`${target} ${m.file} ${o.name}: cos ${o.cosine.toFixed(5)} max|d| ${o.maxAbsError.toExponential(2)}`);
    expect(
      res.passed,
      res.outputs
        .map((o) => o.problem)
        .filter(Boolean)
        .join('; '),
    ).toBe(true);
  }
  console.log(figures.join('\n'));
}

describe('compile: fixture MLLM', () => {
  it('mobile artifact runs in onnxruntime-node within the thresholds', async () => {
    const r = results.mobile!;
    expect(r.manifest.models.map((m) => m.role).sort()).toEqual(['decoder', 'embeddings', 'projector', 'vision-encoder']);
    const dec = r.manifest.models.find((m) => m.role === 'decoder')!;
    expect(dec.ops['com.microsoft:MatMulNBits']).toBeGreaterThan(0);
    const mnb = loadModel(path.join(r.outDir, dec.file)).graph.nodes.filter((n) => n.opType === 'MatMulNBits');
    expect(mnb.every((n) => n.attrInt('accuracy_level') === 4 && n.attrInt('block_size') === 32 && n.attrInt('bits') === 4)).toBe(true);
    expect(r.manifest.verification.passed).toBe(true);
    expect((dec.quantization as { observed: unknown }).observed).toEqual({
      matMulNBits: { bits4_block32_acc4: 15 },
      gatherBlockQuantized: {},
      dequantizeLinearWeights: {},
      activations: 'fp32',
    });
    const cfg = fs
      .readFileSync(path.join(r.outDir, 'required_operators.config'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(cfg).toEqual([...cfg].sort());
    expect(cfg.some((l) => /^com\.microsoft;1;.*MatMulNBits/.test(l))).toBe(true);
    for (const l of cfg) expect(l).toMatch(/^[a-z.]+;\d+;[A-Za-z]+(,[A-Za-z]+)*$/);
    await rerun('mobile');
  });

  it('npu artifact: static shapes, QDQ-only weights, prefill/decode variants, runs on the CPU EP', async () => {
    const r = results.npu!;
    const files = r.manifest.models.map((m) => m.file).sort();
    expect(files).toEqual([
      'decoder_model_merged_decode.onnx',
      'decoder_model_merged_prefill16.onnx',
      'embed_tokens_decode.onnx',
      'embed_tokens_prefill16.onnx',
      'projector_56x56_b1.onnx',
      'projector_56x56_b4.onnx',
      'vision_encoder_56x56_b1.onnx',
      'vision_encoder_56x56_b4.onnx',
    ]);
    for (const f of files) {
      const m = loadModel(path.join(r.outDir, f));
      for (const g of m.graph.allGraphs()) {
        for (const v of g.values.values()) {
          const dyn = v.type?.shape?.some((d) => typeof d !== 'number');
          expect(dyn ? `${f}: ${v.name} [${v.type!.shape}]` : '').toBe('');
        }
        for (const n of g.nodes) {
          // Weights reach compute ops only through DequantizeLinear of integer tensors.
          if (['MatMul', 'Gemm', 'Conv', 'Gather'].includes(n.opType)) {
            const w = n.opType === 'Gather' ? n.input(0) : n.input(1);
            if (w?.initializer) expect(`${f}: ${n.name} weight ${w.name} is a plain initializer`).toBe('');
            if (w?.producer?.opType === 'DequantizeLinear' && w.producer.input(0)?.initializer)
              expect(FLOATS.has(w.producer.input(0)!.initializer!.dtype)).toBe(false);
          }
        }
        for (const t of g.initializers) {
          if (!FLOATS.has(t.dtype) || t.size < 2) continue;
          // Float tensors left are DQ scales only.
          expect(g.values.get(t.name)!.consumers.every((c) => c.opType === 'DequantizeLinear' || c.opType === 'QuantizeLinear')).toBe(true);
        }
      }
      expect(m.graph.nodes.some((n) => n.opType === 'QuantizeLinear' && n.input(2)?.initializer?.dtype === DataType.UINT16)).toBe(true);
    }
    // prefill and decode read the same weights file.
    const prefill = r.manifest.models.find((m) => m.variant === 'prefill16' && m.role === 'decoder')!;
    const decode = r.manifest.models.find((m) => m.variant === 'decode' && m.role === 'decoder')!;
    expect(decode.externalData.filter((f) => prefill.externalData.includes(f))).toContain('decoder_model_merged.onnx.data');
    expect((prefill.session as { providerOptions: Record<string, string> }).providerOptions.backend_path).toBe('libQnnHtp.so');
    const vis = r.manifest.models.filter((m) => m.role === 'vision-encoder');
    expect(Object.fromEntries(vis.map((m) => [m.file, m.inputs[0]!.shape]))).toEqual({
      'vision_encoder_56x56_b1.onnx': [1, 3, 56, 56],
      'vision_encoder_56x56_b4.onnx': [4, 3, 56, 56],
    });
    expect(vis[0]!.externalData.filter((f) => vis[1]!.externalData.includes(f))).toContain('vision_encoder.onnx.data');
    const pre = r.manifest.preprocessing as {
      imageSizes: string[];
      tiling: { policy: string; batchSizes: number[]; variants: unknown; example: { tiles: unknown[]; calls: unknown[] } };
    };
    expect(pre.imageSizes).toEqual(['56x56']);
    expect(pre.tiling.policy).toBe('internvl');
    expect(pre.tiling.batchSizes).toEqual([4, 1]);
    expect(pre.tiling.variants).toEqual({
      visionEncoder: { '56x56': { 1: 'vision_encoder_56x56_b1.onnx', 4: 'vision_encoder_56x56_b4.onnx' } },
      projector: { '56x56': { 1: 'projector_56x56_b1.onnx', 4: 'projector_56x56_b4.onnx' } },
    });
    // 1344x896: aspect 1.5 = 3:2 exactly -> 3x2 grid + thumbnail = 7 tiles; plan batches of 4 -> [0-3], [4-6]
    // (one slot padded), run as b4 + three b1 calls so no padded slot is computed.
    expect(pre.tiling.example.tiles.length).toBe(7);
    expect(pre.tiling.example.calls).toEqual([
      {
        batch: 0,
        tiles: [0, 1, 2, 3],
        shape: [4, 3, 56, 56],
        encoder: 'vision_encoder_56x56_b4.onnx',
        projector: 'projector_56x56_b4.onnx',
      },
      ...[4, 5, 6].map((t) => ({
        batch: 1,
        tiles: [t],
        shape: [1, 3, 56, 56],
        encoder: 'vision_encoder_56x56_b1.onnx',
        projector: 'projector_56x56_b1.onnx',
      })),
    ]);
    await rerun('npu');
  });

  it('webgpu fp16 (q4f16) artifact verifies in onnxruntime-node', async () => {
    const r = results.webgpu!;
    const dec = r.manifest.models.find((m) => m.role === 'decoder')!;
    expect(dec.file).toBe('onnx/decoder_model_merged_q4f16.onnx');
    expect(dec.externalData).toEqual(['decoder_model_merged_q4f16.onnx_data']);
    expect(dec.session.preferredOutputLocation).toEqual({
      'present.0.key': 'gpu-buffer',
      'present.0.value': 'gpu-buffer',
      'present.1.key': 'gpu-buffer',
      'present.1.value': 'gpu-buffer',
    });
    expect(dec.session.enableGraphCapture).toBeUndefined();
    expect(dec.ops['com.microsoft:MatMulNBits']).toBeGreaterThan(0);
    expect(r.manifest.models.find((m) => m.role === 'embeddings')!.ops['com.microsoft:GatherBlockQuantized']).toBe(1);
    const m = loadModel(path.join(r.outDir, dec.file));
    expect([...m.graph.values.values()].some((v) => v.dtype === DataType.FLOAT16)).toBe(true);
    // --image-sizes 56x56 made the image dims static; the decoder keeps its dynamic dims.
    expect(r.manifest.models.find((x) => x.role === 'vision-encoder')!.inputs[0]!.shape).toEqual(['batch', 3, 56, 56]);
    // The decoder's batch dim is named as transformers.js sizes an empty KV cache (transformers-js.test.ts).
    expect(dec.inputs[0]!.shape).toEqual(['batch_size', 'seq', 128]);
    await rerun('webgpu');
  });

  it('webgpu: --image-sizes gives one static vision encoder and projector per size, sharing weights', async () => {
    const vis = path.join(tmp, 'vision-only');
    fs.mkdirSync(vis);
    for (const f of ['vision_encoder.onnx', 'projector.onnx']) fs.copyFileSync(path.join(src, f), path.join(vis, f));
    const r = await compile(vis, { target: 'webgpu', out: path.join(tmp, 'webgpu-sizes'), imageSizes: ['56x56', '84x84'] });
    // 14-pixel patches: a 4x4 grid at 56, 6x6 at 84; batch stays dynamic (not asked for).
    expect(Object.fromEntries(r.manifest.models.map((m) => [m.file, m.inputs[0]!.shape]))).toEqual({
      'onnx/vision_encoder_56x56_fp16.onnx': ['batch', 3, 56, 56],
      'onnx/vision_encoder_84x84_fp16.onnx': ['batch', 3, 84, 84],
      'onnx/projector_56x56_fp16.onnx': ['batch', 4, 4, 64],
      'onnx/projector_84x84_fp16.onnx': ['batch', 6, 6, 64],
    });
    const [a, b] = r.manifest.models.filter((m) => m.name === 'vision_encoder');
    expect(a!.externalData.filter((f) => b!.externalData.includes(f))).toEqual(['vision_encoder.onnx_data']);
    expect(r.manifest.preprocessing).toEqual({
      imageSizes: ['56x56', '84x84'],
      files: { '56x56': 'onnx/vision_encoder_56x56_fp16.onnx', '84x84': 'onnx/vision_encoder_84x84_fp16.onnx' },
    });
    expect(r.manifest.verification.passed).toBe(true);
  });

  it('webgpu fp16 with a tiny binding limit: every weight split under it, still verified', async () => {
    const limit = 8 * 1024;
    const profile = { ...WEBGPU_PROFILES.default!, name: 'tiny-8k', maxBindingBytes: limit, maxBufferBytes: limit };
    const r = await compile(src, { target: 'webgpu', out: path.join(tmp, 'webgpu-tiny'), profile, imageSizes: ['56x56'] });
    expect(r.manifest.models.find((m) => m.role === 'decoder')!.file).toBe('onnx/decoder_model_merged_q4f16.onnx');
    const t = Object.fromEntries(r.manifest.models.map((m) => [m.name, m.transforms]));
    console.log(`fp16 split at ${limit} B: ${JSON.stringify(t)}`);
    expect(t.vision_encoder!.splitMatMul).toBeGreaterThan(0);
    expect(t.embed_tokens!.splitGather).toBe(1);
    expect(largestInitializer(r.outDir)).toBeLessThanOrEqual(limit);
    expect(r.manifest.verification.passed).toBe(true);
  });

  it('manifest sha256 values match the files; compiling again gives identical bytes', async () => {
    for (const t of ['mobile', 'npu', 'webgpu'] as const)
      expect(manifestMatchesFiles(results[t]!.outDir)).toEqual({ ok: true, problems: [] });
    const again = await compile(src, {
      target: 'npu',
      out: path.join(tmp, 'npu-again'),
      policy: 'internvl',
      policyOptions: { tileSize: 56 },
    });
    const a = readTree(results.npu!.outDir),
      b = readTree(again.outDir);
    expect(Object.keys(b)).toEqual(Object.keys(a));
    expect(Object.keys(a)).toEqual(expect.arrayContaining(['manifest.json', 'report.html', 'decoder_model_merged.onnx.data']));
    expect(a['report.html']!.toString()).toContain('decoder_model_merged_prefill16.onnx');
    for (const f of Object.keys(a)) expect(b[f]!.equals(a[f]!), f).toBe(true);
    const text = fs.readFileSync(path.join(again.outDir, 'manifest.json'), 'utf8');
    expect(text).not.toContain(tmp);
    for (const t of ['mobile', 'webgpu'] as const) {
      const x = readTree(results[t]!.outDir);
      const y = readTree(
        (await compile(src, { target: t, out: path.join(tmp, `${t}-again`), imageSizes: ['56x56'], verify: false })).outDir,
      );
      expect(Object.keys(y)).toEqual(Object.keys(x));
      // Only the verification figures differ (not run the second time): every model byte is the same.
      for (const f of Object.keys(x).filter((n) => n !== 'manifest.json' && n !== 'report.html'))
        expect(y[f]!.equals(x[f]!), `${t} ${f}`).toBe(true);
    }
  });
});
