// The webgpu target: onnxruntime-web's WebGPU EP (transformers.js layout).
import type { Role } from '../../ir/summary.js';
import { requestedVariants } from '../dims.js';
import type { RolePlan, Target, TargetOptions } from '../target.js';
import { WEBGPU_CAPABILITIES } from './capabilities.js';
import { WEBGPU_MAX_CHUNK, transformersJsDims, webgpuFileName, webgpuFinalize, webgpuSessionOptions } from './emit.js';
import { targetPipeline } from '../pipelines.js';
import { WEBGPU_PROFILES } from './profiles.js';
import { COSINE_THRESHOLDS } from '../../runtime/metrics.js';

function plan(role: Role, o: TargetOptions): RolePlan {
  const activations = o.fp16 ? 'fp16' : 'fp32';
  const bits = (q: string | undefined, dflt: 0 | 4 | 8): 0 | 4 | 8 =>
    q === 'int4' ? 4 : q === 'int8' ? 8 : q === 'fp16' || q === 'none' ? 0 : dflt;
  // Vision towers lose accuracy under 4-bit and are compute-bound: fp16 weights (fp32 without f16).
  const dflt: 0 | 4 | 8 = role === 'vision-encoder' || role === 'projector' || role === 'classifier' ? 0 : 4;
  const weightBits = bits(o.quant, dflt);
  return {
    weightBits,
    format: weightBits ? 'matmulnbits' : 'none',
    // --quant none: nothing quantized, fp16 included (fp32 weights and activations); --quant fp16 for fp16.
    activations: o.quant === 'fp16' ? 'fp16' : o.quant === 'none' ? 'fp32' : activations,
    embeddings: weightBits ? 'block-quantized' : 'float',
  };
}

export const webgpu: Target = {
  name: 'webgpu',
  kvLayout: 'dynamic',
  description: 'browser WebGPU via onnxruntime-web (MatMulNBits q4f16, GatherBlockQuantized, transformers.js file layout)',
  capabilities: WEBGPU_CAPABILITIES,
  staticShapes: false,
  profiles: WEBGPU_PROFILES,
  defaultProfile: 'default',
  thresholds: COSINE_THRESHOLDS,
  plan,
  pipeline: (sm) => targetPipeline('webgpu', sm),
  finalize: webgpuFinalize,
  // After the variant's dims are bound: --fix names the source's dims.
  finalizeVariant: (m) => {
    transformersJsDims(m);
  },
  // Dynamic shapes unless --fix or --image-sizes asks for static ones.
  variants: requestedVariants,
  fileName: webgpuFileName,
  modelDir: 'onnx',
  externalData: { maxFileBytes: WEBGPU_MAX_CHUNK, location: (file) => `${file}_data` },
  sessionOptions: webgpuSessionOptions,
};
