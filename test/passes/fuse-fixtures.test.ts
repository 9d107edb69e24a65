// The fusions on the tiny MLLM fixtures (the patterns torch.onnx.export writes for SigLIP / Llama):
// each fires on every instance of its pattern (layers x per-layer count) and nowhere else, and the
// fused models give the same outputs in onnxruntime.
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { decoder, projector, tinyMllmConfig, visionEncoder } from '../../fixtures/tiny-mllm.js';
import type { Model } from '../../ir/index.js';
import { cleanup as cleanupPass } from '../../passes/cleanup.js';
import { foldConstants } from '../../passes/fold-constants.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { fuseLayerNorm } from '../../passes/fuse-layernorm.js';
import { fuseRmsNorm } from '../../passes/fuse-rmsnorm.js';
import { fuseGelu } from '../../passes/fuse-gelu.js';
import { fuseQuickGelu } from '../../passes/fuse-quickgelu.js';
import { fuseSkipLayerNorm } from '../../passes/fuse-skip-layernorm.js';
import { fuseRotary } from '../../passes/fuse-rotary.js';
import { fuseAttention } from '../../passes/fuse-attention.js';
import { cleanup, fuseAndCompare, opCounts, runPasses, tmpDir } from './fuse-util.js';
import type { Pass, PassStats } from '../../passes/pass.js';
import { Tensor, loadModel, saveModel } from '../../ir/index.js';
import { validateModel } from '../../passes/validate.js';
import { concreteShape, randomInputs, runModel, type InputSpec } from '../../runtime/ort.js';
import { CONFORMANCE } from '../conformance-root.js';

afterAll(cleanup);
const cfg = tinyMllmConfig();
const V = cfg.vision.layers,
  T = cfg.text.layers;
const DIMS = { batch: 2, height: 56, width: 84, grid_h: 4, grid_w: 6, seq: 5, past_seq: 3, total_seq: 8 };
type Steps = [Pass, Record<string, unknown>?][];
const PREP: Steps = [[cleanupPass], [inferShapes], [foldConstants], [cleanupPass], [inferShapes]];
const FUSE: Steps = [[fuseLayerNorm], [fuseRmsNorm], [fuseGelu], [fuseQuickGelu], [fuseSkipLayerNorm], [fuseRotary], [fuseAttention]];

/** The whole fusion pipeline as one pass, so fuseAndCompare runs it between the two sessions. */
function pipeline(steps: Steps, counts: Record<string, PassStats>): Pass {
  return {
    name: 'pipeline',
    description: 'fusions',
    options: {},
    async run(model: Model) {
      Object.assign(counts, await runPasses(model, steps, inferShapes));
      return { counts: {} };
    },
  };
}

// GroupQueryAttention on CPU takes a multi-token step over a non-empty cache only at batch 1, so the
// decoder runs prefill (empty cache), a one-token decode step, and a batch-1 chunk over a cache.
// Padded masks: right padding in the prompt, left padding in a decode step.
const DECODER_RUNS: InputSpec[] = [
  { dims: { ...DIMS, past_seq: 0, total_seq: 5 } },
  { dims: { ...DIMS, seq: 1, past_seq: 7, total_seq: 8 } },
  { dims: { ...DIMS, batch: 1 } },
  {
    dims: { ...DIMS, past_seq: 0, total_seq: 5 },
    fixed: { attention_mask: Tensor.fromInt64('attention_mask', [2, 5], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]) },
  },
  {
    dims: { ...DIMS, seq: 1, past_seq: 7, total_seq: 8 },
    fixed: { attention_mask: Tensor.fromInt64('attention_mask', [2, 8], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]) },
  },
];

async function fuse(model: Model, runs: InputSpec[] = [{ dims: DIMS }], fuse: Steps = FUSE) {
  const stats: Record<string, PassStats> = {};
  const r = await fuseAndCompare(model, pipeline([...PREP, ...fuse], stats), {}, runs);
  return { ...r, passes: stats, ops: opCounts(model), model };
}

describe('fusions on the tiny MLLM fixtures', () => {
  it('vision encoder: LayerNorm, GELU, SkipLayerNorm, MultiHeadAttention on every layer', async () => {
    const r = await fuse(visionEncoder());
    expect(r.passes['fuse-layernorm']!.counts.layernorm).toBe(2 * V + 1);
    expect(r.passes['fuse-gelu']!.counts.gelu).toBe(V);
    expect(r.passes['fuse-quickgelu']!.counts).toEqual({ quickgelu: 0, silu: 0 });
    // Every LayerNorm: the first one's skip is the [1, N, C] position table, broadcast over the batch.
    expect(r.passes['fuse-skip-layernorm']!.counts.skipLayerNorm).toBe(2 * V + 1);
    expect(r.ops.LayerNormalization).toBeUndefined();
    expect(r.ops.SkipLayerNormalization).toBe(2 * V + 1);
    // out_proj and fc2 biases ride in the op (all but the first, whose skip is the position table).
    expect(r.model.graph.nodes.filter((n) => n.opType === 'SkipLayerNormalization' && n.inputs.length === 5)).toHaveLength(2 * V);
    expect(r.ops.Erf).toBeUndefined();
    expect(r.ops.ReduceMean).toBeUndefined();
    expect(r.passes['fuse-attention']!.counts).toEqual({ mha: V, mhaBnsh: 0, gqa: 0 });
    expect(r.ops.MultiHeadAttention).toBe(V);
    expect(r.ops.Softmax).toBeUndefined();
    expect(r.passes['fuse-rotary']!.counts.rotary).toBe(0);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`vision encoder: ${JSON.stringify(r.ops)} cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('projector: GELU', async () => {
    const r = await fuse(projector());
    expect(r.passes['fuse-gelu']!.counts.gelu).toBe(1);
    expect(r.passes['fuse-layernorm']!.counts.layernorm).toBe(0);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`projector: cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each(['div', 'reciprocal'] as const)(
    'decoder (RMSNorm %s form): RMSNorm, SkipSimplifiedLayerNorm, rotary, GroupQueryAttention on every layer',
    async (form) => {
      const r = await fuse(decoder({}, { rmsNorm: form }), DECODER_RUNS);
      expect(r.passes['fuse-rmsnorm']!.counts.rmsnorm).toBe(2 * T + 1);
      expect(r.passes['fuse-layernorm']!.counts.layernorm).toBe(0);
      expect(r.passes['fuse-gelu']!.counts.gelu).toBe(0);
      expect(r.passes['fuse-quickgelu']!.counts).toEqual({ quickgelu: 0, silu: T });
      expect(r.ops.Sigmoid).toBeUndefined();
      // Every norm but the first, whose input is inputs_embeds itself.
      expect(r.passes['fuse-skip-layernorm']!.counts.skipSimplifiedLayerNorm).toBe(2 * T);
      expect(r.ops.SimplifiedLayerNormalization).toBe(1);
      expect(r.ops.SkipSimplifiedLayerNormalization).toBe(2 * T);
      expect(r.passes['fuse-rotary']!.counts.rotary).toBe(2 * T);
      expect(r.ops.RotaryEmbedding).toBe(2 * T);
      expect(r.passes['fuse-attention']!.counts).toEqual({ mha: 0, mhaBnsh: 0, gqa: T });
      expect(r.ops.GroupQueryAttention).toBe(T);
      expect(r.ops.Softmax).toBeUndefined();
      console.log(`decoder ${form} ops: ${JSON.stringify(r.ops)}`);
      expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
      console.log(`decoder ${form}: cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
    },
  );

  it('decoder with static shapes (causal mask folded to a constant table): GroupQueryAttention with constant lengths', async () => {
    const m = decoder();
    const dims = { ...DIMS, batch: 1 };
    for (const v of m.graph.inputs) if (v.type?.shape) v.type.shape = concreteShape(v.type.shape, { dims });
    const r = await fuse(m, [
      { dims },
      { dims, fixed: { attention_mask: Tensor.fromInt64('attention_mask', [1, 8], [0, 1, 1, 1, 1, 1, 1, 1]) } },
    ]);
    expect(r.passes['fuse-attention']!.counts).toEqual({ mha: 0, mhaBnsh: 0, gqa: T });
    expect(r.ops.Shape).toBeUndefined();
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`decoder static: cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('decoder GroupQueryAttention with a left-padded prompt: every non-padded position exact', async () => {
    const m = decoder();
    const before = path.join(tmpDir, 'gqa-left.before.onnx'),
      after = path.join(tmpDir, 'gqa-left.after.onnx');
    saveModel(m, before);
    await runPasses(m, [...PREP, ...FUSE], inferShapes);
    expect(opCounts(m).GroupQueryAttention).toBe(T);
    saveModel(m, after);
    const mask = Tensor.fromInt64('attention_mask', [2, 5], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    const feeds = randomInputs(m, { seed: 3, dims: { ...DIMS, past_seq: 0, total_seq: 5 }, fixed: { attention_mask: mask } });
    const [a, b] = [(await runModel(before, feeds)).logits!.toFloat32(), (await runModel(after, feeds)).logits!.toFloat32()];
    const vocab = cfg.text.vocab;
    let real = 0;
    for (let row = 0; row < 10; row++) {
      if (row < 2) continue; // batch 0, positions 0-1: padding, every key masked
      for (let i = 0; i < vocab; i++) real = Math.max(real, Math.abs(a[row * vocab + i]! - b[row * vocab + i]!));
    }
    expect(real).toBeLessThan(1e-5);
    console.log(`decoder gqa left-padded prompt: max abs on non-padded rows ${real.toExponential(2)}`);
  });

  // Left padding in the prompt: the MHA form (mask as attention_bias) is exact on every row, padded ones included.
  const padded = Tensor.fromInt64('attention_mask', [2, 8], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  it('decoder with decoder=mha: MultiHeadAttention on the cached BNSH key/value, exact with a padded mask', async () => {
    const r = await fuse(
      decoder(),
      [...DECODER_RUNS, { dims: DIMS, fixed: { attention_mask: padded } }],
      [...FUSE.slice(0, -1), [fuseAttention, { decoder: 'mha' }]],
    );
    expect(r.passes['fuse-attention']!.counts).toEqual({ mha: 0, mhaBnsh: T, gqa: 0 });
    expect(r.ops.MultiHeadAttention).toBe(T);
    expect(r.ops.Softmax).toBeUndefined();
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`decoder mha: cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('decoder without KV cache: MultiHeadAttention with attention_bias', async () => {
    const r = await fuse(decoder({}, { kvCache: false }), [
      { dims: { ...DIMS, total_seq: 5 } },
      {
        dims: { ...DIMS, total_seq: 5 },
        fixed: { attention_mask: Tensor.fromInt64('attention_mask', [2, 5], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]) },
      },
    ]);
    expect(r.passes['fuse-attention']!.counts).toEqual({ mha: 0, mhaBnsh: T, gqa: 0 });
    expect(r.passes['fuse-rotary']!.counts.rotary).toBe(2 * T);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`decoder no cache: cosine ${r.minCosine.toFixed(8)} max abs ${r.maxAbs.toExponential(2)}`);
  });
});

// Nowhere else: the ONNX spec's PyTorch exports and the node tests nearest to the patterns
// (expanded LayerNorm functions, Softmax, ReduceMean, Erf, Tanh, Pow) give no fusion and stay as they are.
describe('fusions on the conformance corpus', () => {
  const ROOT = CONFORMANCE;
  const near = /layer_norm|softmax|reduce_mean|erf|tanh|pow|sqrt|reciprocal/;
  const dirs = [
    ...['pytorch-converted', 'pytorch-operator'].flatMap((s) => fs.readdirSync(path.join(ROOT, s)).map((d) => path.join(ROOT, s, d))),
    ...fs
      .readdirSync(path.join(ROOT, 'node'))
      .filter((d) => near.test(d))
      .map((d) => path.join(ROOT, 'node', d)),
  ].sort();
  it(`no fusion fires on ${dirs.length} conformance models`, async () => {
    const fired: string[] = [];
    let skippedReasons = 0;
    for (const d of dirs) {
      const m = loadModel(path.join(d, 'model.onnx'));
      const before = JSON.stringify(m.graph.nodes.map((n) => n.opType));
      for (const [name, st] of Object.entries(await runPasses(m, FUSE, inferShapes))) {
        if (Object.values(st.counts).some((n) => n)) fired.push(`${path.basename(d)}: ${name}`);
        skippedReasons += st.skipped?.length ?? 0;
      }
      expect(validateModel(m)).toEqual([]);
      expect(JSON.stringify(m.graph.nodes.map((n) => n.opType))).toBe(before);
    }
    expect(fired).toEqual([]);
    console.log(`conformance: ${dirs.length} models, 0 fusions, ${skippedReasons} near misses reported in stats.skipped`);
  });
});
