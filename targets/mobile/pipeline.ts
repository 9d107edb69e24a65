// Default mobile pipeline: CPU-EP fusions, 4-bit MatMulNBits block 32 with accuracy_level 4 (the
// int8 dot-product path of MLAS/KleidiAI) for language weights, 8-bit QDQ for vision weights
// (8-bit MatMulNBits fails on Android builds), fp32 activations.
import { PREPARE, fusions } from '../pipeline-common.js';
import { weightsPassEmbeddings, type StepSpec, type SubModel } from '../target.js';

export const MOBILE_FUSIONS = ['fuse-layernorm', 'fuse-rmsnorm', 'fuse-gelu', 'fuse-skip-layernorm', 'fuse-rotary', 'fuse-attention'];

export function mobilePipeline(sm: SubModel): StepSpec[] {
  const p = sm.plan;
  const steps: StepSpec[] = [...PREPARE, ...fusions(MOBILE_FUSIONS)];
  if (p.weightBits) {
    steps.push({ pass: 'quantize-weights', options: {
      bits: p.weightBits, block: sm.opts.blockSize, method: sm.opts.method, format: p.format === 'qdq' ? 'qdq' : 'matmulnbits',
      role: sm.role, embeddings: weightsPassEmbeddings(p), scales: 'fp32', ...(p.format === 'matmulnbits' ? { accuracyLevel: 4 } : {}),
      ...(sm.opts.threads ? { threads: sm.opts.threads } : {}),
    } });
  }
  steps.push({ pass: 'cleanup' }, { pass: 'infer-shapes' });
  return steps;
}
