// Default webgpu pipeline: fusions the WebGPU EP has kernels for (ORT only fuses at load for
// CPU/CUDA, so the fused graph must be produced offline), MatMulNBits 4/8-bit block 32,
// GatherBlockQuantized embeddings, then fp16 activations (q4f16) unless --no-fp16.
import { PREPARE, fusions } from '../pipeline-common.js';
import { weightsPassEmbeddings, type StepSpec, type SubModel } from '../target.js';

export const WEBGPU_FUSIONS = ['fuse-layernorm', 'fuse-rmsnorm', 'fuse-gelu', 'fuse-skip-layernorm', 'fuse-rotary', 'fuse-attention'];

export function webgpuPipeline(sm: SubModel): StepSpec[] {
  const p = sm.plan;
  const steps: StepSpec[] = [...PREPARE, ...fusions(WEBGPU_FUSIONS)];
  if (p.weightBits) {
    steps.push({ pass: 'quantize-weights', options: {
      bits: p.weightBits, block: sm.opts.blockSize, method: sm.opts.method, format: 'matmulnbits', role: sm.role,
      embeddings: weightsPassEmbeddings(p), scales: p.activations === 'fp16' ? 'fp16' : 'fp32',
      ...(sm.opts.threads ? { threads: sm.opts.threads } : {}),
    } });
  }
  if (p.activations === 'fp16') steps.push({ pass: 'to-fp16' });
  steps.push({ pass: 'cleanup' }, { pass: 'infer-shapes' });
  return steps;
}
