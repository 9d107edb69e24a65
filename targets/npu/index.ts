// The npu target: QNN HTP style (static shapes, QDQ, 16-bit activations, int4/int8 weights).
import type { Role } from '../../ir/summary.js';
import type { RolePlan, Target, TargetOptions } from '../target.js';
import { NPU_CAPABILITIES } from './capabilities.js';
import { quantizeFoldedConstants } from './qdq.js';
import { npuFileName, npuFinalize, npuSessionOptions, npuVariants } from './emit.js';
import { targetPipeline } from '../pipelines.js';
import { NPU_PROFILES } from './profiles.js';
import { COSINE_THRESHOLDS } from '../../runtime/metrics.js';

function plan(role: Role, o: TargetOptions): RolePlan {
  const vision = role === 'vision-encoder' || role === 'projector' || role === 'classifier';
  // 'none' and 'fp16': float weights and activations, run by the HTP at fp16 precision.
  if (o.quant === 'none' || o.quant === 'fp16') return { weightBits: 0, format: 'none', activations: 'fp32', embeddings: 'float' };
  const bits: 4 | 8 = o.quant === 'int4' ? 4 : o.quant === 'int8' ? 8 : vision ? 8 : 4;
  return { weightBits: bits, format: 'qdq', activations: 'uint16', embeddings: 'qdq' };
}

export const npu: Target = {
  name: 'npu',
  description: 'phone NPU (QNN HTP style): static shapes, QDQ A16W4 decoder / A16W8 vision, chunked prefill + decode variants',
  capabilities: NPU_CAPABILITIES,
  staticShapes: true,
  profiles: NPU_PROFILES,
  defaultProfile: 'snapdragon-8-gen-3',
  thresholds: COSINE_THRESHOLDS,
  plan,
  pipeline: (sm) => targetPipeline('npu', sm),
  finalize: npuFinalize,
  finalizeVariant: (m, sm) => {
    if (sm.plan.format !== 'none') quantizeFoldedConstants(m);
  },
  variants: npuVariants,
  kvLayout: 'static',
  fileName: npuFileName,
  externalData: { maxFileBytes: Infinity, location: (file) => `${file}.data` },
  genaiConfig: true,
  sessionOptions: npuSessionOptions,
};
