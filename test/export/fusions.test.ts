// Fusions on the real-export corpus (fixtures/export, torch.onnx.export of HF-style modules): the
// default optimize pipeline fuses what these exports spell out, and onnxruntime gives the same
// outputs before and after on every test set (fp32 tolerance). The counts are what edgec makes
// today: a count going down is a regression, one going up an improvement to record here.
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, saveModel, type Model } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { DEFAULT_PIPELINE } from '../../passes/pipelines.js';
import { compareTensors, loadTestDataSet, runModel } from '../../runtime/ort.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-export-fuse-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FUSED = new Set([
  'Attention',
  'MultiHeadAttention',
  'GroupQueryAttention',
  'RotaryEmbedding',
  'LayerNormalization',
  'SimplifiedLayerNormalization',
  'SkipLayerNormalization',
  'SkipSimplifiedLayerNormalization',
  'Gelu',
  'FastGelu',
  'QuickGelu',
]);

/** Fused ops each export gets (at least). */
const EXPECTED: Record<string, Record<string, number>> = {
  siglip_vit: { MultiHeadAttention: 2, SkipLayerNormalization: 5, FastGelu: 2 },
  // Its residual Adds' batch dim is known since Equal/Where shape values resolve torch's expand(-1).
  clip_vit: { LayerNormalization: 1, SkipLayerNormalization: 5, QuickGelu: 2, MultiHeadAttention: 2 },
  projector: { LayerNormalization: 1, FastGelu: 1 },
  // RotaryEmbedding: q and k of each of the 2 layers, cos/sin computed in the graph from inv_freq.
  // Without a cache: MultiHeadAttention on the repeated BNSH key/value with the model's mask as attention_bias.
  decoder_nokv: { SimplifiedLayerNormalization: 1, SkipSimplifiedLayerNormalization: 4, RotaryEmbedding: 4, MultiHeadAttention: 2 },
  // With past/present KV and transformers >= 4.40's causal + padding mask: one GroupQueryAttention per layer.
  decoder_kv: { SimplifiedLayerNormalization: 1, SkipSimplifiedLayerNormalization: 4, RotaryEmbedding: 4, GroupQueryAttention: 2 },
  // Phi-3: fused qkv_proj sliced into q/k/v, partial rotary (8 of 16 dims), fused gate_up_proj.
  decoder_phi3: { SimplifiedLayerNormalization: 1, SkipSimplifiedLayerNormalization: 4, RotaryEmbedding: 4, GroupQueryAttention: 2 },
  // Gemma 2 (MQA, head_dim 32 x 4 heads over hidden 64, gelu-tanh gate, (1 + w) norms): its soft-capped scores
  // (5 * tanh(s / 5)) become GroupQueryAttention's softcap.
  decoder_gemma2: {
    SimplifiedLayerNormalization: 1,
    SkipSimplifiedLayerNormalization: 4,
    RotaryEmbedding: 4,
    GroupQueryAttention: 2,
    FastGelu: 2,
  },
  mllm: { MultiHeadAttention: 4, SkipLayerNormalization: 5, FastGelu: 3, SkipSimplifiedLayerNormalization: 4, RotaryEmbedding: 4 },
};

function counts(m: Model): Record<string, number> {
  const c: Record<string, number> = {};
  for (const g of m.graph.allGraphs()) for (const n of g.nodes) if (FUSED.has(n.opType)) c[n.opType] = (c[n.opType] ?? 0) + 1;
  return c;
}

describe('fusions on real exports', () => {
  it.each(Object.keys(EXPECTED).filter((n) => fs.existsSync(path.join(ROOT, n, 'model.onnx'))))(
    '%s: fused as expected, outputs equal in onnxruntime',
    async (name) => {
      const src = path.join(ROOT, name, 'model.onnx');
      const m = loadModel(src);
      // modelDir: fuse-rotary sizes its tables by the config.json beside the decoders.
      const reports = await runPipeline(m, parsePipeline(DEFAULT_PIPELINE), { modelDir: path.join(ROOT, name) });
      const got = counts(m);
      for (const [op, n] of Object.entries(EXPECTED[name]!)) expect(got[op] ?? 0, `${name}: ${op}`).toBeGreaterThanOrEqual(n);
      const out = path.join(tmp, `${name}.onnx`);
      saveModel(m, out);
      // The cap is live on these inputs: the fused op without it gives other logits.
      const capped = m.graph.nodes.filter((n) => n.opType === 'GroupQueryAttention' && n.hasAttr('softcap'));
      if (name === 'decoder_gemma2') expect(capped.map((n) => n.attrFloat('softcap'))).toEqual([5, 5]);
      const uncapped = path.join(tmp, `${name}-uncapped.onnx`);
      if (capped.length) {
        for (const n of capped) n.attributes = n.attributes.filter((a) => a.name !== 'softcap');
        saveModel(m, uncapped);
      }
      // Every test set: the decoders' sets cover prefill, decode over a cache, a chunk and left padding.
      const sets = fs.readdirSync(path.join(ROOT, name)).filter((d) => d.startsWith('test_data_set_'));
      let worst = 0;
      for (const set of sets) {
        const { inputs } = loadTestDataSet(path.join(ROOT, name, set), loadModel(src));
        const before = await runModel(src, inputs),
          after = await runModel(out, inputs);
        for (const [k, ref] of Object.entries(before)) {
          const c = compareTensors(ref, after[k]!);
          let peak = 0;
          for (const v of ref.toNumbers()) peak = Math.max(peak, Math.abs(v));
          expect(c.shapeMatch).toBe(true);
          expect(c.maxAbsError, `${name} ${set}: output ${k}`).toBeLessThanOrEqual(1e-4 * Math.max(1, peak));
          worst = Math.max(worst, c.maxAbsError);
        }
        if (capped.length) {
          const c = compareTensors(before.logits!, (await runModel(uncapped, inputs)).logits!);
          expect(c.maxAbsError, `${name} ${set}: logits without softcap`).toBeGreaterThan(1e-2);
        }
      }
      const skipped = reports.filter((r) => r.pass.startsWith('fuse')).reduce((a, r) => a + (r.stats.skipped?.length ?? 0), 0);
      // A decoder fused with MultiHeadAttention says why GroupQueryAttention was not used.
      const notes = reports.filter((r) => r.pass === 'fuse-attention').flatMap((r) => r.stats.notes ?? []);
      const fallbacks = notes.filter((n) => n.includes('not GroupQueryAttention'));
      if (name === 'decoder_nokv' || name === 'mllm') expect(fallbacks.length).toBeGreaterThanOrEqual(2);
      for (const n of fallbacks) expect(n).toMatch(/not GroupQueryAttention: no KV cache/);
      if (name !== 'decoder_nokv' && name !== 'mllm') expect(fallbacks).toEqual([]);
      console.log(
        `${name}: ${JSON.stringify(got)}; max abs before/after ${worst.toExponential(2)}; ${skipped} fusion candidates left with a reason`,
      );
    },
  );
});
