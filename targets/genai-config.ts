// genai_config.json for onnxruntime-genai (mobile and npu artifacts): the decoder's files, input
// and output names, KV cache naming and shape facts, the embedding and vision models, and greedy
// search defaults. Sizes come from the emitted graphs; token ids from the source's config.json /
// generation_config.json when carried over (omitted when unknown: genai then needs them added).
import fs from 'node:fs';
import path from 'node:path';
import type { Model } from '../ir/index.js';
import type { Manifest } from './manifest.js';

type Entry = Manifest['models'][number];

const kvRe = /^past_key_values\.(\d+)\.(key|value)$/;

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

const num = (v: unknown): number | undefined =>
  typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : undefined;

/** The config, or undefined when the artifact has no decoder with a KV cache. */
export function genaiConfig(
  m: Omit<Manifest, 'files'>,
  models: { file: string; model: Model }[],
  artifactDir: string,
): Record<string, unknown> | undefined {
  const decs = m.models.filter((e) => e.role === 'decoder');
  if (!decs.length) return undefined;
  const main = decs.find((e) => e.variant === 'decode') ?? decs[0]!;
  const kv = main.inputs.filter((i) => kvRe.test(i.name));
  if (!kv.length) return undefined;
  const hidden = main.inputs.find((i) => i.name === 'inputs_embeds')?.shape?.[2];
  const vocab = main.outputs.find((o) => o.name === 'logits')?.shape?.[2];
  const headSize = kv[0]!.shape?.[3],
    kvHeads = kv[0]!.shape?.[1];
  const layers = new Set(kv.map((i) => kvRe.exec(i.name)![1])).size;
  // Query heads: from the fused attention op when there is one, else the source config.
  const graph = models.find((x) => x.file === main.file)?.model;
  let heads: number | undefined;
  for (const n of graph?.graph.nodes ?? [])
    if (n.opType === 'GroupQueryAttention' || n.opType === 'MultiHeadAttention') heads ??= n.attrInt('num_heads');
  const cfg = { ...readJson(path.join(artifactDir, 'config.json')), ...readJson(path.join(artifactDir, 'generation_config.json')) };
  const text = (cfg.text_config as Record<string, unknown> | undefined) ?? cfg;
  heads ??= num(text.num_attention_heads) ?? (typeof hidden === 'number' && typeof headSize === 'number' ? hidden / headSize : undefined);
  const context =
    typeof main.inputs.find((i) => i.name === 'attention_mask')?.shape?.[1] === 'number'
      ? main.inputs.find((i) => i.name === 'attention_mask')!.shape![1]
      : num(text.max_position_embeddings);
  const session = (e: Entry) => {
    const s = e.session as { executionProviders?: unknown[]; intraOpNumThreads?: number };
    const providers = (s.executionProviders ?? [])
      .filter((p) => p !== 'cpu')
      .map((p) =>
        typeof p === 'string'
          ? { [p]: {} }
          : {
              [String((p as { name: string }).name)]: Object.fromEntries(
                Object.entries(p as Record<string, unknown>)
                  .filter(([k]) => k !== 'name')
                  .map(([k, v]) => [k, String(v)]),
              ),
            },
      );
    return {
      log_id: 'onnxruntime-genai',
      provider_options: providers,
      ...(s.intraOpNumThreads ? { intra_op_num_threads: s.intraOpNumThreads } : {}),
    };
  };
  const decIO = {
    inputs: {
      inputs_embeds: 'inputs_embeds',
      attention_mask: 'attention_mask',
      position_ids: 'position_ids',
      past_key_names: 'past_key_values.%d.key',
      past_value_names: 'past_key_values.%d.value',
    },
    outputs: { logits: 'logits', present_key_names: 'present.%d.key', present_value_names: 'present.%d.value' },
  };
  const prefill = decs.find((e) => /^prefill\d+$/.test(e.variant ?? ''));
  const decoder: Record<string, unknown> = {
    session_options: session(main),
    head_size: headSize,
    hidden_size: hidden,
    num_attention_heads: heads,
    num_hidden_layers: layers,
    num_key_value_heads: kvHeads,
    ...decIO,
  };
  if (prefill && decs.length > 1) {
    // Static NPU decoders: the prompt runs in fixed chunks, then 1-token steps, over a KV window
    // the runtime slides (left-padded chunks, padding masked).
    const chunk = prefill.inputs.find((i) => i.name === 'inputs_embeds')?.shape?.[1];
    decoder.sliding_window = { window_size: chunk, pad_value: 0, alignment: 'left', slide_key_value_cache: true, slide_inputs: true };
    decoder.pipeline = [
      { [prefill.file.replace(/\.onnx$/, '')]: { filename: prefill.file, ...decIO, run_on_prompt: true, run_on_token_gen: false } },
      { [main.file.replace(/\.onnx$/, '')]: { filename: main.file, ...decIO, run_on_prompt: false, run_on_token_gen: true } },
    ];
  } else decoder.filename = main.file;
  const model: Record<string, unknown> = {
    type: typeof text.model_type === 'string' ? text.model_type : 'llama',
    context_length: context,
    vocab_size: vocab,
    ...(num(cfg.bos_token_id) !== undefined ? { bos_token_id: num(cfg.bos_token_id) } : {}),
    ...(cfg.eos_token_id !== undefined ? { eos_token_id: cfg.eos_token_id } : {}),
    ...(num(cfg.pad_token_id) !== undefined ? { pad_token_id: num(cfg.pad_token_id) } : {}),
    decoder,
  };
  const emb = m.models.filter((e) => e.role === 'embeddings');
  const embOne = emb.find((e) => e.variant === 'decode') ?? emb[0];
  if (embOne)
    model.embedding = {
      filename: embOne.file,
      inputs: { input_ids: 'input_ids' },
      outputs: { embeddings: embOne.outputs[0]?.name ?? 'inputs_embeds' },
    };
  const vis = m.models.filter((e) => e.role === 'vision-encoder');
  if (vis[0]) {
    const proj = m.models.find((e) => e.role === 'projector' && e.variant === vis[0]!.variant);
    model.vision = {
      filename: vis[0].file,
      inputs: { pixel_values: vis[0].inputs[0]?.name ?? 'pixel_values' },
      outputs: { image_features: vis[0].outputs[0]?.name ?? 'image_features' },
      ...(proj ? { projector: { filename: proj.file, outputs: { image_embeds: proj.outputs[0]?.name } } } : {}),
    };
  }
  return {
    model,
    search: {
      do_sample: false,
      num_beams: 1,
      top_k: 1,
      top_p: 1.0,
      temperature: 1.0,
      repetition_penalty: 1.0,
      max_length: context,
      min_length: 0,
      past_present_share_buffer: false,
      early_stopping: true,
      length_penalty: 1.0,
      no_repeat_ngram_size: 0,
      num_return_sequences: 1,
      diversity_penalty: 0.0,
    },
  };
}
