// Decoders `edgec run` drives are judged per call on the runtime's feeds and through their own KV
// cache. Per call, every call gets the reference's past, so a wrong present.* output cannot show in
// the logits; only the closed loop sees it. A decoder whose KV output is scaled after the attention
// read it (its own logits untouched) proves the point.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tensor, loadModel, saveModel } from '../../ir/index.js';
import { byTaskMetrics, verifyModels } from '../../runtime/verify.js';
import { compile, type CompileResult } from '../../targets/compile.js';
import { feedsFor, runFeeds, type RunSpec } from '../../targets/run-feeds.js';
import { throughCache } from '../../targets/through-cache.js';
import { tempDir, tinyMllm } from './helpers.js';

let tmp: string, src: string, mobile: CompileResult;
beforeAll(async () => {
  tmp = tempDir('cache');
  src = tinyMllm(tmp);
  mobile = await compile(src, { target: 'mobile', out: path.join(tmp, 'mobile'), imageSizes: ['56x56'] });
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function spec(): RunSpec & { opts: { seed: number } } {
  const siblings = mobile.manifest.models.map((x) => ({ name: x.name, role: x.role, file: path.join(src, `${x.name}.onnx`) }));
  return {
    source: path.join(src, 'decoder_model_merged.onnx'),
    role: 'decoder',
    siblings,
    opts: { context: 256, prefillChunk: 16, imageSizes: [{ width: 56, height: 56 }], fix: {}, seed: 5 },
  };
}

/** The artifact's decoder with every present.* output multiplied by `k` on its way out. */
function scaledKv(k: number): string {
  const dec = mobile.manifest.models.find((m) => m.role === 'decoder')!;
  const m = loadModel(path.join(mobile.outDir, dec.file));
  const g = m.graph;
  const factor = g.addInitializer(Tensor.fromFloat32('kv_factor', [], new Float32Array([k])));
  const outs = g.outputs.map((v) => {
    if (!/^present\./.test(v.name)) return v;
    const name = v.name;
    const out = g.addNode({ opType: 'Mul', inputs: [v, factor], outputs: [`${name}_scaled`] }).output(0)!;
    g.renameValue(v, `${name}_inner`);
    g.renameValue(out, name);
    return out;
  });
  g.setOutputs(outs);
  const file = path.join(tmp, `scaled-${k}.onnx`);
  saveModel(m, file, { externalData: false });
  return file;
}

describe('through its own KV cache', () => {
  it('compile judges every target by it: the manifest carries the closed-loop figures', () => {
    const dec = mobile.manifest.models.find((m) => m.role === 'decoder')!;
    const c = dec.verification!.throughCache!;
    expect(c.passed).toBe(true);
    expect(c.steps).toBeGreaterThanOrEqual(16);
    const kl = c.metrics!.find((m) => m.name === 'kl')!;
    // 4-bit random-weight fixture: closed-loop KL well under the 0.05 threshold, above zero.
    expect(kl.value).toBeGreaterThan(1e-4);
    expect(kl.value).toBeLessThanOrEqual(0.05);
    expect(dec.verification!.judgedBy).toMatch(/own KV cache/);
  });

  it('a wrong KV output passes per-call verification and fails through the cache', async () => {
    const s = spec();
    const file = scaledKv(0.25);
    const w = (await runFeeds(loadModel(s.source), s, 77, 'dynamic'))!;
    const perCall = byTaskMetrics(await verifyModels(s.source, file, { seed: 1, threshold: 0.99, sets: feedsFor(w, loadModel(file))! }));
    expect(perCall.passed, perCall.outputs.map((o) => `${o.name}: ${o.problem}`).join('; ')).toBe(true);
    const unscaled = await throughCache(s, scaledKv(1), 'dynamic');
    const scaled = await throughCache(s, file, 'dynamic');
    const kl = (c: typeof scaled) => c!.metrics.find((m) => m.name === 'kl')!.value;
    console.log(`through the cache: KV x1 kl ${kl(unscaled)}, KV x0.25 kl ${kl(scaled)}`);
    expect(unscaled!.passed).toBe(true);
    expect(scaled!.passed).toBe(false);
    expect(kl(scaled)).toBeGreaterThan(10 * kl(unscaled));
  }, 120_000);

  it('recorded run feeds stay within their byte budget, keeping a call of each kind', async () => {
    const s = spec();
    const all = (await runFeeds(loadModel(s.source), s, 77, 'dynamic'))!;
    const bytes = (f: typeof all.prefill) => f.reduce((a, x) => a + Object.values(x).reduce((b, t) => b + t.byteLength, 0), 0);
    const budget = Math.floor(bytes([...all.prefill, ...all.decode]) / 3);
    const capped = (await runFeeds(loadModel(s.source), s, 77, 'dynamic', budget))!;
    expect(capped.prefill.length).toBeGreaterThanOrEqual(1);
    expect(capped.decode.length).toBeGreaterThanOrEqual(1);
    expect(capped.prefill.length + capped.decode.length).toBeLessThan(all.prefill.length + all.decode.length);
    expect(bytes([...capped.prefill, ...capped.decode])).toBeLessThanOrEqual(
      Math.max(budget, bytes([capped.prefill[0]!, capped.decode[0]!])),
    );
    expect(capped.used.from.join(' ')).toMatch(/later calls dropped/);
  });
});
