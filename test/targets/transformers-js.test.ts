// A webgpu artifact loads with transformers.js's own code (@huggingface/transformers: from_pretrained
// on the local folder, remote models off, the onnxruntime-node backend) and its greedy `generate`
// gives the tokens `edgec run` gives. transformers.js makes the first step's empty KV cache from
// the session's input metadata: the dim named `batch_size` gets the batch and every other symbolic
// dim 0, so a past whose batch dim had another name was fed [0, heads, 0, dim] and
// GroupQueryAttention refused it ("past_key dimension 0 should be batch_size, got 0").
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AutoTokenizer, LlavaForConditionalGeneration, Tensor, env } from '@huggingface/transformers';
import { loadModel } from '../../ir/index.js';
import { writeTinyMllmConfigs } from '../../fixtures/tiny-mllm.js';
import { compile } from '../../targets/compile.js';
import { runArtifact } from '../../targets/run.js';
import { tempDir, tinyMllm } from './helpers.js';

describe('transformers.js loads a webgpu artifact', () => {
  let tmp: string, out: string;
  beforeAll(async () => {
    tmp = tempDir('tfjs');
    const src = tinyMllm(tmp);
    writeTinyMllmConfigs(src);
    out = path.join(tmp, 'webgpu');
    const r = await compile(src, { target: 'webgpu', out, imageSizes: ['56x56'] });
    expect(r.manifest.verification.passed).toBe(true);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('the default build fuses GroupQueryAttention and names every past batch dim batch_size', () => {
    const dec = loadModel(path.join(out, 'onnx', 'decoder_model_merged_q4f16.onnx')).graph;
    expect(dec.nodes.filter((n) => n.opType === 'GroupQueryAttention').length).toBe(2);
    const past = dec.inputs.filter((v) => v.name.startsWith('past_key_values.'));
    expect(past.length).toBe(4);
    for (const v of past) {
      expect(v.shape![0]).toBe('batch_size');
      expect(v.shape![2]).not.toBe('batch_size');
    }
    expect(dec.inputs.find((v) => v.name === 'attention_mask')!.shape![0]).toBe('batch_size');
  });

  it('from_pretrained + greedy generate: the same 8 tokens as edgec run', async () => {
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = tmp;
    const tokenizer = await AutoTokenizer.from_pretrained('webgpu');
    const model = await LlavaForConditionalGeneration.from_pretrained('webgpu', {
      dtype: { embed_tokens: 'q4f16', vision_encoder: 'fp16', decoder_model_merged: 'q4f16' },
      device: 'cpu',
    });
    try {
      const prompt = 'What is in the image?';
      const enc = tokenizer(prompt) as { input_ids: Tensor; attention_mask: Tensor };
      const ours = await runArtifact(out, { prompt, maxNewTokens: 8 });
      expect(Array.from(enc.input_ids.data as BigInt64Array, Number)).toEqual(ours.promptIds);
      const gen = (await model.generate({ ...enc, max_new_tokens: 8, do_sample: false })) as Tensor;
      const tokens = Array.from(gen.data as BigInt64Array, Number).slice(ours.promptIds.length);
      console.log(`transformers.js ${tokens.join(',')} | edgec run ${ours.tokens.join(',')} ${JSON.stringify(ours.text)}`);
      expect(tokens).toEqual(ours.tokens);
      expect(tokenizer.decode(tokens)).toBe(ours.text);
    } finally {
      await model.dispose();
    }
  });
});
