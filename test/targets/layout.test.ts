// Layouts runtimes load unchanged: webgpu in transformers.js's layout (onnx/ + dtype suffixes +
// the source's config/tokenizer files), onnxruntime-genai's genai_config.json on mobile and npu,
// and the oldest onnxruntime version in every manifest (--runtime-version lowers for it).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckError, loadModel } from '../../ir/index.js';
import { compile } from '../../targets/compile.js';
import { runArtifact } from '../../targets/run.js';
import { listFiles, manifestMatchesFiles, tempDir, tinyMllm } from './helpers.js';

describe('artifact layouts', () => {
  let tmp: string, src: string;
  beforeAll(() => {
    tmp = tempDir('layout');
    src = tinyMllm(tmp);
    fs.writeFileSync(
      path.join(src, 'config.json'),
      JSON.stringify({
        model_type: 'tiny_mllm',
        text_config: { model_type: 'llama', num_attention_heads: 4 },
        bos_token_id: 1,
        eos_token_id: 2,
        pad_token_id: 0,
      }),
    );
    fs.writeFileSync(
      path.join(src, 'preprocessor_config.json'),
      JSON.stringify({ image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], size: { height: 56, width: 56 } }),
    );
    fs.writeFileSync(path.join(src, 'tokenizer.json'), JSON.stringify({ version: '1.0', model: { type: 'WordLevel', vocab: { a: 0 } } }));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('webgpu: transformers.js layout, config files carried over, oldest runtime stated', async () => {
    const r = await compile(src, { target: 'webgpu', out: path.join(tmp, 'webgpu'), imageSizes: ['56x56'] });
    const files = listFiles(r.outDir);
    expect(files).toEqual(
      expect.arrayContaining([
        'config.json',
        'preprocessor_config.json',
        'tokenizer.json',
        'manifest.json',
        'report.html',
        'onnx/decoder_model_merged_q4f16.onnx',
        'onnx/decoder_model_merged_q4f16.onnx_data',
        'onnx/embed_tokens_q4f16.onnx',
        'onnx/vision_encoder_fp16.onnx',
        'onnx/projector_fp16.onnx',
      ]),
    );
    expect(files.filter((f) => f.endsWith('.onnx')).every((f) => f.startsWith('onnx/'))).toBe(true);
    expect(fs.readFileSync(path.join(r.outDir, 'config.json'))).toEqual(fs.readFileSync(path.join(src, 'config.json')));
    expect(manifestMatchesFiles(r.outDir)).toEqual({ ok: true, problems: [] });
    // External data stays beside its model (the location ONNX resolves relative to the model file).
    const dec = r.manifest.models.find((m) => m.role === 'decoder')!;
    expect(dec.externalData).toEqual(['decoder_model_merged_q4f16.onnx_data']);
    expect(r.manifest.runtime).toEqual({ onnxruntime: '1.22', because: ['GroupQueryAttention with position_ids/attention_bias inputs'] });
    // The layout runs as is.
    const run = await runArtifact(r.outDir, { ids: [1, 5, 9], maxNewTokens: 3 });
    expect(run.tokens.length).toBe(3);
    // Its stand-in tokenizer.json (no decoder) gives no text, and says why.
    expect(run.text).toBeUndefined();
    expect(run.noText).toMatch(/tokenizer\.json: is not a tokenizer this version reads/);
  });

  it('--runtime-version 1.20: no GatherBlockQuantized bits attribute, no attention-bias GQA; manifest says 1.20', async () => {
    const r = await compile(src, { target: 'webgpu', out: path.join(tmp, 'webgpu-120'), imageSizes: ['56x56'], runtimeVersion: '1.20' });
    expect(r.manifest.runtime).toEqual({ onnxruntime: '1.20', because: ['GatherBlockQuantized'], requested: '1.20' });
    for (const m of r.manifest.models) {
      const g = loadModel(path.join(r.outDir, m.file)).graph;
      for (const n of g.nodes) {
        if (n.opType === 'GatherBlockQuantized') expect(n.attr('bits')).toBeUndefined();
        if (n.opType === 'GroupQueryAttention') expect(n.inputs.length).toBeLessThanOrEqual(9);
      }
    }
    expect(r.manifest.verification.passed).toBe(true);
    await expect(compile(src, { target: 'webgpu', out: path.join(tmp, 'bad'), runtimeVersion: 'latest' })).rejects.toThrow(
      /--runtime-version 'latest' is not X.Y/,
    );
    // 8-bit weights cannot be written for 1.20: the check names the node and the version.
    const err = await compile(src, {
      target: 'webgpu',
      out: path.join(tmp, 'w8'),
      quant: 'int8',
      imageSizes: ['56x56'],
      runtimeVersion: '1.20',
      verify: false,
    }).catch((e) => e as CheckError);
    expect(err).toBeInstanceOf(CheckError);
    expect((err as CheckError).details.join('\n')).toMatch(/8-bit MatMulNBits needs onnxruntime >= 1.21 \(--runtime-version 1.20\)/);
  });

  it('mobile and npu: onnxruntime-genai genai_config.json', async () => {
    const mob = await compile(src, { target: 'mobile', out: path.join(tmp, 'mobile'), imageSizes: ['56x56'], verify: false });
    const g = JSON.parse(fs.readFileSync(path.join(mob.outDir, 'genai_config.json'), 'utf8'));
    expect(g.model).toMatchObject({
      type: 'llama',
      vocab_size: 512,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 0,
      decoder: {
        filename: 'decoder_model_merged.onnx',
        head_size: 32,
        hidden_size: 128,
        num_attention_heads: 4,
        num_hidden_layers: 2,
        num_key_value_heads: 2,
        inputs: { inputs_embeds: 'inputs_embeds', past_key_names: 'past_key_values.%d.key' },
        outputs: { logits: 'logits', present_value_names: 'present.%d.value' },
      },
      embedding: { filename: 'embed_tokens.onnx' },
      vision: { filename: 'vision_encoder.onnx' },
    });
    expect(g.search).toMatchObject({ do_sample: false, num_beams: 1 });
    const npu = await compile(src, { target: 'npu', out: path.join(tmp, 'npu'), imageSizes: ['56x56'], verify: false });
    const n = JSON.parse(fs.readFileSync(path.join(npu.outDir, 'genai_config.json'), 'utf8'));
    expect(n.model.context_length).toBe(256);
    expect(
      n.model.decoder.pipeline.map((p: Record<string, { filename: string; run_on_prompt: boolean }>) => Object.values(p)[0]!.filename),
    ).toEqual(['decoder_model_merged_prefill16.onnx', 'decoder_model_merged_decode.onnx']);
    expect(n.model.decoder.sliding_window).toMatchObject({ window_size: 16, alignment: 'left' });
    expect(manifestMatchesFiles(npu.outDir)).toEqual({ ok: true, problems: [] });
  });
});
