// The mobile target: onnxruntime CPU EP (+ XNNPACK) in a reduced build for phones.
import type { Role } from '../../ir/summary.js';
import { requestedVariants } from '../dims.js';
import type { RolePlan, Target, TargetOptions } from '../target.js';
import { MOBILE_CAPABILITIES } from './capabilities.js';
import { mobileFileName, mobileFinalize, mobileSessionOptions, requiredOperators } from './emit.js';
import { targetPipeline } from '../pipelines.js';
import { MOBILE_PROFILES } from './profiles.js';
import { COSINE_THRESHOLDS } from '../../runtime/metrics.js';

function plan(role: Role, o: TargetOptions): RolePlan {
  const vision = role === 'vision-encoder' || role === 'projector' || role === 'classifier';
  if (o.quant === 'none' || o.quant === 'fp16') return { weightBits: 0, format: 'none', activations: 'fp32', embeddings: 'float' };
  if (o.quant === 'int8' || (!o.quant && vision)) return { weightBits: 8, format: 'qdq', activations: 'fp32', embeddings: 'float' };
  return { weightBits: 4, format: 'matmulnbits', activations: 'fp32', embeddings: 'block-quantized' };
}

export const mobile: Target = {
  name: 'mobile',
  kvLayout: 'dynamic',
  description: 'phone CPU via onnxruntime (CPU EP + XNNPACK, reduced build): MatMulNBits int4 accuracy_level 4, fp32 activations',
  capabilities: MOBILE_CAPABILITIES,
  staticShapes: false,
  profiles: MOBILE_PROFILES,
  defaultProfile: 'android-arm64',
  thresholds: COSINE_THRESHOLDS,
  plan,
  pipeline: (sm) => targetPipeline('mobile', sm),
  finalize: (m) => mobileFinalize(m),
  // Dynamic shapes unless --fix or --image-sizes asks for static ones.
  variants: requestedVariants,
  fileName: mobileFileName,
  externalData: { maxFileBytes: Infinity, location: (file) => `${file}.data` },
  genaiConfig: true,
  sessionOptions: mobileSessionOptions,
  extraFiles: (models) => [{ path: 'required_operators.config', content: requiredOperators(models) }],
};
