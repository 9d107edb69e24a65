// Default npu pipeline: opset 21 (INT4 and 16-bit Q/DQ), fusions QNN has ops for (LayerNormalization,
// Gelu), weights as blocked DequantizeLinear (block a multiple of 8 for int4, as HTP needs);
// activation Q/DQ and shape fixing follow in finalize/variants.
import { PREPARE, fusions } from '../pipeline-common.js';
import { weightsPassEmbeddings, type StepSpec, type SubModel } from '../target.js';

export const NPU_FUSIONS = ['fuse-layernorm', 'fuse-gelu'];

export function npuPipeline(sm: SubModel): StepSpec[] {
  const p = sm.plan;
  const steps: StepSpec[] = [{ pass: 'upgrade-opset', options: { to: 21 } }, ...PREPARE, { pass: 'position-ids-input' }, { pass: 'fold-batchnorm' }, ...fusions(NPU_FUSIONS)];
  if (p.weightBits) {
    steps.push({ pass: 'quantize-weights', options: {
      bits: p.weightBits, block: sm.opts.blockSize, method: sm.opts.method, format: 'qdq', role: sm.role, embeddings: weightsPassEmbeddings(p), scales: 'fp32',
      ...(sm.opts.threads ? { threads: sm.opts.threads } : {}),
    } });
  }
  steps.push({ pass: 'cleanup' }, { pass: 'infer-shapes' });
  return steps;
}
