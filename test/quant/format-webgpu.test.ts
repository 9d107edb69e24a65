// The emitted formats on onnxruntime-web's WebGPU EP (headless Chromium, SwiftShader adapter: fp32
// only, no shader-f16) against onnxruntime-node CPU on the same files: layouts that the CPU kernels
// accept but the WebGPU kernels read differently would show here as silent numeric errors.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, saveModel } from '../../ir/index.js';
import { compareTensors, randn, randomInputs, rng, runModel } from '../../runtime/ort.js';
import { CHROMIUM_PATH, WebGpuBrowser } from '../../runtime/webgpu-browser.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { decoder } from '../../fixtures/tiny-mllm.js';
import { TMP, cleanup, clone, matmulModel, weights } from './helpers.js';

const HAVE_BROWSER = fs.existsSync(CHROMIUM_PATH);
let browser: WebGpuBrowser;
beforeAll(async () => {
  if (HAVE_BROWSER) browser = await WebGpuBrowser.launch();
});
afterAll(async () => {
  await browser?.close();
  cleanup();
});

let n = 0;
async function both(model: Model, pipeline: string, feeds: Record<string, Tensor>) {
  const m = clone(model);
  await runPipeline(m, parsePipeline(pipeline));
  const f = path.join(TMP, `webgpu${n++}.onnx`);
  saveModel(m, f, { externalData: false });
  return { cpu: await runModel(f, feeds), gpu: await browser.run(f, feeds), model: m };
}

describe.skipIf(!HAVE_BROWSER)('WebGPU EP reads our layouts like the CPU EP', () => {
  const cases = [
    { q: 'bits=4,block=32,sym=true', K: 80 },
    { q: 'bits=4,block=128,sym=false', K: 200 },
    { q: 'bits=8,block=16,sym=true', K: 48 },
    { q: 'bits=8,block=32,sym=false', K: 96 },
  ];
  for (const { q, K } of cases) {
    it(`MatMulNBits ${q} K=${K}`, async () => {
      const feeds = { A: Tensor.fromFloat32('A', [5, K], randn(rng(K), 5 * K)) };
      const r = await both(matmulModel(K, 24, 5, K + 1), `quantize-int4{${q}}`, feeds);
      const c = compareTensors(r.cpu.Y!, r.gpu.Y!);
      expect(c.relError).toBeLessThan(1e-5);
    });
  }

  const V = 40,
    H = 64;
  function embedLm(): Model {
    const b = new GraphBuilder({ opset: 17 });
    const I = b.input('ids', DataType.INT64, [1, 6]);
    const E = b.constF32('embed_tokens.weight', [V, H], weights(11, V * H));
    const h = b.op1('Gather', [E, I], { name: 'embed' });
    b.output(h, 'h', DataType.FLOAT, [1, 6, H]);
    b.output(
      b.op1('MatMul', [b.op1('Tanh', [h]), b.op1('Transpose', [E], { attrs: { perm: [1, 0] } })], { name: 'lm_head' }),
      'logits',
      DataType.FLOAT,
      [1, 6, V],
    );
    return b.build();
  }
  for (const q of ['block=32,sym=true', 'block=16,sym=false', 'bits=8,block=32,sym=false']) {
    it(`GatherBlockQuantized + lm_head ${q}`, async () => {
      const feeds = { ids: Tensor.fromInt64('ids', [1, 6], [1, 4, 9, 16, 25, 39]) };
      const r = await both(embedLm(), `quantize-int4{${q}}`, feeds);
      expect(r.model.graph.nodes.some((x) => x.opType === 'GatherBlockQuantized')).toBe(true);
      expect(compareTensors(r.cpu.h!, r.gpu.h!).maxAbsError).toBe(0);
      expect(compareTensors(r.cpu.logits!, r.gpu.logits!).relError).toBeLessThan(1e-5);
    });
  }

  it('fixture decoder q4 block 32 (fp32 activations): WebGPU logits == CPU logits', async () => {
    const fp = decoder({}, { kvCache: true });
    const feeds = randomInputs(fp, { dims: { batch: 1, seq: 6, past_seq: 3, total_seq: 9 }, seed: 3 });
    const r = await both(fp, 'quantize-int4{block=32,accuracy_level=0}', feeds);
    const c = compareTensors(r.cpu.logits!, r.gpu.logits!);
    console.log(`decoder q4 WebGPU vs CPU: logits cosine ${c.cosine.toFixed(7)}, rel ${c.relError.toExponential(2)}`);
    expect(c.cosine).toBeGreaterThan(0.99999);
  });
});
