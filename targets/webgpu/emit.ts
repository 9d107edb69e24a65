// webgpu artifact details: transformers.js file names (<name>_q4f16.onnx, external data chunks
// <file>_data, _data_1, ... each under 2 GB), accuracy_level 4 only where the DP4A kernel applies,
// weights split under the binding limit, and the onnxruntime-web session options.
import { DataType, Model } from '../../ir/index.js';
import type { SubModel, Variant } from '../target.js';
import { splitLargeWeights } from './split.js';

/** Chrome's ArrayBuffer cap is 0x7fe00000; keep each external data chunk well under 2 GB. */
export const WEBGPU_MAX_CHUNK = 2_000_000_000;

/** transformers.js dtype of a compiled sub-model (decides its file suffix). */
export function tfjsDtype(sm: SubModel): string {
  const f16 = sm.plan.activations === 'fp16';
  if (sm.plan.weightBits === 4) return f16 ? 'q4f16' : 'q4';
  if (sm.plan.weightBits === 8) return f16 ? 'q8f16' : 'q8';
  return f16 ? 'fp16' : 'fp32';
}

const SUFFIX: Record<string, string> = { q4f16: '_q4f16', q4: '_q4', q8f16: '_q8f16', q8: '_quantized', fp16: '_fp16', fp32: '' };

export function webgpuFileName(sm: SubModel, v: Variant): string {
  return `${sm.name}${v.suffix ? `_${v.suffix}` : ''}${SUFFIX[tfjsDtype(sm)]}.onnx`;
}

function hasFloat16(model: Model): boolean {
  for (const g of model.graph.allGraphs()) {
    for (const v of g.values.values()) if (v.dtype === DataType.FLOAT16) return true;
  }
  return false;
}

export async function webgpuFinalize(model: Model, sm: SubModel): Promise<Record<string, number>> {
  // The plan says what was asked; the file name and manifest must say what the graph holds.
  if (sm.plan.activations === 'fp16' && !hasFloat16(model)) sm.plan = { ...sm.plan, activations: 'fp32' };
  let dp4a = 0;
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      if (n.opType !== 'MatMulNBits') continue;
      // DP4A program: accuracy_level 4, block % 32 == 0, K % 128 == 0, N % 16 == 0 (matmul_nbits.cc).
      const eligible =
        sm.profile.int8Dot !== false && n.attrInt('K') % 128 === 0 && n.attrInt('N') % 16 === 0 && n.attrInt('block_size') % 32 === 0;
      if (eligible) {
        n.setAttr({ name: 'accuracy_level', type: 2, value: 4 });
        dp4a++;
      } else n.removeAttr('accuracy_level');
    }
  }
  const split = splitLargeWeights(model, Math.min(sm.profile.maxBindingBytes, sm.profile.maxBufferBytes));
  return { dp4aMatMulNBits: dp4a, ...split };
}

/** transformers.js builds the empty KV cache of the first step from the session's input metadata:
 * the symbolic dim named `batch_size` gets the batch, every other one 0 (its resolveCacheShape).
 * A past batch dim under any other name becomes 0, which GroupQueryAttention refuses ("past_key
 * dimension 0 should be batch_size"), so that symbol is renamed `batch_size` throughout. */
export function transformersJsDims(model: Model): number {
  const past = model.graph.inputs.filter((v) => /^past_key_values\./.test(v.name));
  const batch = new Set(past.map((v) => v.type?.shape?.[0]).filter((d): d is string => typeof d === 'string' && d !== 'batch_size'));
  if (!batch.size) return 0;
  let renamed = 0;
  for (const g of model.graph.allGraphs()) {
    for (const v of g.values.values()) {
      const s = v.type?.shape;
      if (!s?.some((d) => typeof d === 'string' && batch.has(d))) continue;
      v.type = { ...v.type!, shape: s.map((d) => (typeof d === 'string' && batch.has(d) ? 'batch_size' : d)) };
      renamed++;
    }
  }
  return renamed;
}

function staticInputs(model: Model): boolean {
  return model.graph.inputs.every((v) => v.initializer || (v.type?.shape ?? [null]).every((d) => typeof d === 'number'));
}

export function webgpuSessionOptions(model: Model, sm: SubModel, externalData: string[]): Record<string, unknown> {
  const present = model.graph.outputs.map((v) => v.name).filter((n) => /^present/.test(n));
  const opts: Record<string, unknown> = {
    executionProviders: ['webgpu'],
    graphOptimizationLevel: 'all',
    externalData: externalData.map((p) => ({ path: p, data: p })),
    dtype: tfjsDtype(sm),
  };
  // KV outputs stay on the GPU between decode steps instead of a readback per token.
  if (present.length) opts.preferredOutputLocation = Object.fromEntries(present.map((n) => [n, 'gpu-buffer']));
  // Graph capture replays recorded dispatches: only valid when every input shape is fixed.
  if (staticInputs(model)) opts.enableGraphCapture = true;
  if (sm.plan.activations === 'fp16') opts.requiredFeatures = ['shader-f16'];
  return opts;
}
