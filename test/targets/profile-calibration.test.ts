// The roofline against published decode speeds. Graphs of the published models' shapes are built
// with shape-only weights (external references that are never read), so an 8B graph costs a few MB.
//  - BlueLM-V-3B: 2.7B LLM, 4-bit weights, 24.4 tok/s on a Dimensity 9300 (arXiv 2411.10640) on its NPU;
//  - MiniCPM-Llama3-V 2.5: Llama-3-8B, Q4_K_M ~4.9 GB, 8.2 tok/s on a Snapdragon 8 Gen 3 CPU
//    (llama.cpp, arXiv 2408.01800 §5.3).
// Both predictions must land within 2x; the figures go to the test log for the notes.
import { describe, expect, it } from 'vitest';
import { DataType, Tensor, numElements } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { buildDecoder, type TextConfig } from '../../fixtures/tiny-mllm.js';
import type { WeightSource } from '../../fixtures/exporter-ops.js';
import { estimate } from '../../kernels/roofline.js';
import { PERF_DEVICES } from '../../targets/devices.js';
import { bindInputs, costNodes } from '../../targets/profile.js';

class ShapeOnly implements WeightSource {
  normal(name: string, dims: number[]): Tensor {
    const length = numElements(dims) * 4;
    return new Tensor(name, DataType.FLOAT, dims, {
      kind: 'external',
      ref: { file: '/nonexistent/shape-only.bin', location: 'shape-only.bin', offset: 0, length, extra: [] },
    });
  }
  aroundOne(name: string, dims: number[]): Tensor {
    return this.normal(name, dims);
  }
}

async function predictTokS(
  text: TextConfig,
  device: string,
  unit: 'cpu' | 'npu',
  past: number,
): Promise<{ tokS: number; weightGB: number }> {
  const model = buildDecoder(text, 0.02, new ShapeOnly(), { kvCache: true });
  // Costed as deployed: our own fusions (RMSNorm, rotary, GroupQueryAttention with an in-place KV
  // cache) run on the shape-only graph, as `compile` runs them on a real one.
  await runPipeline(model, parsePipeline('infer-shapes,fuse-rmsnorm,fuse-rotary,fuse-attention,infer-shapes'));
  expect(model.graph.nodes.filter((n) => n.opType === 'GroupQueryAttention')).toHaveLength(text.layers);
  const bind = bindInputs(model, { seq: 1, past, image: { width: 448, height: 448 } });
  // 4-bit block-32 weights with fp16 scales (4.5 bits); fp16 activations and KV cache.
  const { nodes, unresolved } = costNodes(model, bind, 4, 2);
  expect(unresolved).toBe(0);
  const e = estimate(nodes, PERF_DEVICES[device]!.units[unit]!);
  return { tokS: 1 / e.seconds, weightGB: e.weightBytes / 1e9 };
}

describe('roofline decode predictions against published figures', () => {
  it('BlueLM-V-3B (2.7B, 4-bit) on Dimensity 9300: 24.4 tok/s published', async () => {
    // The paper gives the parameter count only: Llama-style shapes that total 2.7B.
    const text: TextConfig = {
      hidden: 2560,
      layers: 31,
      heads: 20,
      kvHeads: 20,
      headDim: 128,
      intermediate: 6912,
      vocab: 100_000,
      maxPositions: 2048,
      ropeTheta: 10000,
      eps: 1e-6,
    };
    const { tokS, weightGB } = await predictTokS(text, 'dimensity-9300', 'npu', 512);
    console.log(
      `BlueLM-V-3B on dimensity-9300 npu: predicted ${tokS.toFixed(1)} tok/s (weights read ${weightGB.toFixed(2)} GB), published 24.4, ratio ${(tokS / 24.4).toFixed(2)}`,
    );
    expect(tokS / 24.4).toBeGreaterThan(0.5);
    expect(tokS / 24.4).toBeLessThan(2);
  });

  it('MiniCPM-Llama3-V 2.5 (Llama-3-8B, Q4_K_M) on Snapdragon 8 Gen 3: 8.2 tok/s published', async () => {
    const text: TextConfig = {
      hidden: 4096,
      layers: 32,
      heads: 32,
      kvHeads: 8,
      headDim: 128,
      intermediate: 14336,
      vocab: 128_256,
      maxPositions: 2048,
      ropeTheta: 500000,
      eps: 1e-5,
    };
    const { tokS, weightGB } = await predictTokS(text, 'snapdragon-8-gen-3', 'cpu', 512);
    console.log(
      `MiniCPM-Llama3-V 2.5 on snapdragon-8-gen-3 cpu: predicted ${tokS.toFixed(1)} tok/s (weights read ${weightGB.toFixed(2)} GB), published 8.2, ratio ${(tokS / 8.2).toFixed(2)}`,
    );
    expect(tokS / 8.2).toBeGreaterThan(0.5);
    expect(tokS / 8.2).toBeLessThan(2);
  });
});
