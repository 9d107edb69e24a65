// Rotary tables sized from the model (fuse-rotary): the corpus decoders compute cos/sin from inv_freq
// in the graph, so the fused op needs a table, of max_position_embeddings rows (the config.json the
// exporter writes beside them: 512). onnxruntime gives the source's outputs for positions up to the
// last row and refuses the next one; artifacts stay a fraction of their source's size; without a
// config the fixed attention_mask length or the default (4096) sizes the table, and the pass says which.
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InputError, Tensor, loadModel, saveModel, type Model } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { DEFAULT_PIPELINE } from '../../passes/pipelines.js';
import { compareTensors, randn, rng, runModel } from '../../runtime/ort.js';
import { compile } from '../../targets/compile.js';
import { fusionSummary } from '../../cli/commands/compile.js';
import { cli } from '../cli/helpers.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-rotary-tables-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const have = (name: string) => fs.existsSync(path.join(ROOT, name, 'model.onnx'));

function rotaryTables(m: Model): number[][] {
  const rot = m.graph.nodes.filter((n) => n.opType === 'RotaryEmbedding');
  return [...new Set(rot.flatMap((n) => [n.inputs[2]!, n.inputs[3]!]))].map((v) => v.initializer!.dims);
}

async function fused(src: string, modelDir: string | undefined, pipeline = DEFAULT_PIPELINE) {
  const m = loadModel(src);
  const reports = await runPipeline(m, parsePipeline(pipeline), modelDir ? { modelDir } : {});
  const notes = reports.filter((r) => r.pass === 'fuse-rotary').flatMap((r) => r.stats.notes ?? []);
  return { m, notes };
}

/** decoder_kv feeds: a random past of `past` positions (2 kv heads, head size 32) and `fresh` new tokens, no padding. */
function kvFeeds(past: number, fresh: number): Record<string, Tensor> {
  const r = rng(7);
  const feeds: Record<string, Tensor> = {
    input_ids: Tensor.fromInt64(
      'input_ids',
      [1, fresh],
      Array.from({ length: fresh }, (_, i) => 97 + i),
    ),
    attention_mask: Tensor.fromInt64('attention_mask', [1, past + fresh], new Array<number>(past + fresh).fill(1)),
  };
  for (let l = 0; l < 2; l++)
    for (const kv of ['key', 'value']) {
      const name = `past_key_values.${l}.${kv}`;
      feeds[name] = Tensor.fromFloat32(name, [1, 2, past, 32], randn(r, 2 * past * 32));
    }
  return feeds;
}

describe.runIf(have('decoder_kv') && have('decoder_nokv'))('rotary tables sized from the model', () => {
  it('decoder_kv: 512 rows from config.json; positions 0..511 equal the source in onnxruntime, 512 is refused', async () => {
    const dir = path.join(ROOT, 'decoder_kv');
    const src = path.join(dir, 'model.onnx');
    const { m, notes } = await fused(src, dir);
    expect(rotaryTables(m)).toEqual([
      [512, 16],
      [512, 16],
    ]);
    expect(notes).toEqual([expect.stringContaining('512 positions (max_position_embeddings of config.json)')]);
    expect(m.graph.nodes.filter((n) => n.opType === 'GroupQueryAttention')).toHaveLength(2);
    const out = path.join(tmp, 'kv.onnx');
    saveModel(m, out);
    let worst = 0;
    // Prefill from 0, decode near the end, and a chunk ending on the last row (positions 504..511).
    for (const [past, fresh] of [
      [0, 16],
      [300, 1],
      [504, 8],
    ] as const) {
      const feeds = kvFeeds(past, fresh);
      const before = await runModel(src, feeds),
        after = await runModel(out, feeds);
      for (const [k, ref] of Object.entries(before)) {
        const c = compareTensors(ref, after[k]!);
        expect(c.shapeMatch, k).toBe(true);
        expect(c.maxAbsError, `past ${past} + ${fresh}: ${k}`).toBeLessThanOrEqual(1e-4);
        worst = Math.max(worst, c.maxAbsError);
      }
    }
    console.log(`decoder_kv, 512-row tables: max abs before/after ${worst.toExponential(2)} over positions up to 511`);
    // Position 512: the source computes it, the fused op refuses rather than reading past the table.
    await expect(runModel(src, kvFeeds(512, 1))).resolves.toBeDefined();
    await expect(runModel(out, kvFeeds(512, 1))).rejects.toThrow(/out of range|position_ids/i);
  }, 60_000);

  it('without a config: the fixed attention_mask length, else 4096 rows; the option wins; the pass says which', async () => {
    const src = path.join(ROOT, 'decoder_nokv', 'model.onnx');
    const bare = await fused(src, path.join(tmp, 'nowhere'));
    expect(rotaryTables(bare.m)[0]).toEqual([4096, 16]);
    expect(bare.notes[0]).toContain('4096 positions (the default');
    // Shapes fixed first: positions (cumsum of the mask) stay below its 64 entries.
    const fixed = await fused(src, undefined, `fix-shapes{dims=batch_size=1;sequence_length=64},${DEFAULT_PIPELINE}`);
    expect(rotaryTables(fixed.m)[0]).toEqual([64, 16]);
    expect(fixed.notes[0]).toContain('64 positions (the fixed attention_mask length)');
    const given = await fused(
      src,
      path.join(ROOT, 'decoder_nokv'),
      DEFAULT_PIPELINE.replace('fuse-rotary', 'fuse-rotary{maxPositions=100}'),
    );
    expect(rotaryTables(given.m)[0]).toEqual([100, 16]);
  }, 60_000);

  it('a config.json edgec cannot use is named, with the fix', async () => {
    const dir = path.join(tmp, 'bad');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(ROOT, 'decoder_nokv', 'model.onnx'), path.join(dir, 'model.onnx'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ max_position_embeddings: -3 }));
    await expect(fused(path.join(dir, 'model.onnx'), dir)).rejects.toThrow(InputError);
    const r = await cli('optimize', path.join(dir, 'model.onnx'), '-o', path.join(tmp, 'bad-out.onnx'));
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/config\.json: max_position_embeddings -3 is not an integer .*maxPositions=N/);
    fs.writeFileSync(path.join(dir, 'config.json'), '{ not json');
    await expect(fused(path.join(dir, 'model.onnx'), dir)).rejects.toThrow(/config\.json: not valid JSON/);
  }, 60_000);

  // Model files (graph and external data) over the fp32 source's bytes. Measured with 512-row tables:
  // decoder_kv webgpu 0.165, mobile 0.198; decoder_nokv 0.174, 0.207 (4096 rows: 0.313, 0.496; 0.323, 0.505).
  const LIMITS: [string, 'webgpu' | 'mobile', number][] = [
    ['decoder_kv', 'webgpu', 0.19],
    ['decoder_kv', 'mobile', 0.22],
    ['decoder_nokv', 'webgpu', 0.19],
    ['decoder_nokv', 'mobile', 0.22],
  ];
  it.each(LIMITS)(
    '%s on %s: artifact under %s of the source',
    async (name, target, limit) => {
      const src = path.join(ROOT, name, 'model.onnx');
      const r = await compile(src, { target, out: path.join(tmp, `${name}-${target}`), verify: false });
      const bytes = r.manifest.files.filter((f) => /\.onnx(\.data)?$|\.onnx_data$/.test(f.path)).reduce((s, f) => s + f.bytes, 0);
      const ratio = bytes / fs.statSync(src).size;
      console.log(`${name} ${target}: ${bytes} B, ${ratio.toFixed(3)}x the source`);
      expect(ratio).toBeLessThanOrEqual(limit);
      expect(r.report.models[0]!.steps.find((s) => s.pass === 'fuse-rotary')!.notes).toEqual([
        expect.stringContaining('512 positions (max_position_embeddings of config.json)'),
      ]);
      // The one-line summary compile prints: the table size, and why a decoder without a cache is not GroupQueryAttention.
      const line = fusionSummary(r.report.models[0]!);
      expect(line).toContain('cos/sin tables of 512 positions (max_position_embeddings of config.json)');
      if (name === 'decoder_nokv') {
        expect(line).toContain('mhaBnsh 2');
        expect(line).toContain('; 2x MultiHeadAttention, not GroupQueryAttention: no KV cache');
      } else {
        expect(line).toContain('gqa 2');
        expect(line).not.toContain('not GroupQueryAttention');
      }
    },
    60_000,
  );
});
