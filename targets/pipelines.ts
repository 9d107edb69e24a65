// Target pipelines as data. Every target runs the same frame (prepare, its fusions, quantize-weights
// when the role plan quantizes weights, to-fp16 when it asks for fp16 activations, then tidy and
// type); a row of TARGET_PIPELINES says only where a target differs. The quantize options come from
// the role plan (bits, format, embeddings, scale precision) and --block-size/--method.
import { weightsPassEmbeddings, type RolePlan, type StepSpec, type SubModel, type TargetName } from './target.js';

export interface PipelineRow {
  /** What the target is: one line for help and reports. */
  summary: string;
  /** Steps before the fusions. */
  prepare: StepSpec[];
  /** Fusions whose fused ops the target runs (unregistered passes are reported, not run). */
  fusions: (string | StepSpec)[];
  /** quantize-weights options the target adds when weights become MatMulNBits. */
  matmulnbits?: Record<string, unknown>;
  /** quantize-weights options the target adds in any format. */
  weights?: Record<string, unknown>;
}

/** Tidy, type, fold, then tidy what folding freed. */
const PREPARE: StepSpec[] = [{ pass: 'cleanup' }, { pass: 'infer-shapes' }, { pass: 'fold-constants' }, { pass: 'cleanup' }];
/** masked_scatter of image features (NonZero/ScatterND) -> a running count (CumSum) that every EP runs. */
const SCATTER: StepSpec = { pass: 'masked-scatter' };
/** Fusions leave shared shape chains behind, and their contrib-op outputs need types. */
const FINISH: StepSpec[] = [{ pass: 'cleanup' }, { pass: 'infer-shapes' }];
/** Transformer fusions onnxruntime's WebGPU and CPU EPs have kernels for (ORT fuses at load only for CPU/CUDA). */
const TRANSFORMER_FUSIONS = ['fuse-layernorm', 'fuse-rmsnorm', 'fuse-gelu', 'fuse-rotary', 'fuse-attention', 'fuse-skip-layernorm'];

export const TARGET_PIPELINES: Record<TargetName, PipelineRow> = {
  webgpu: {
    summary: 'WebGPU EP fusions, MatMulNBits 4/8-bit, GatherBlockQuantized embeddings, fp16 activations (q4f16) unless --no-fp16',
    prepare: [...PREPARE, SCATTER],
    // Gemma 2's soft-capped attention stays unfused: the WebGPU EP ignores GroupQueryAttention's softcap.
    fusions: TRANSFORMER_FUSIONS.map((pass) => (pass === 'fuse-attention' ? { pass, options: { softcap: false } } : pass)),
  },
  mobile: {
    // accuracy_level 4: the int8 dot-product path of MLAS/KleidiAI. Vision weights are 8-bit QDQ
    // (8-bit MatMulNBits fails on Android builds); activations stay fp32.
    summary: 'CPU EP fusions, MatMulNBits 4-bit accuracy_level 4 for language weights, 8-bit QDQ vision weights, fp32 activations',
    prepare: [...PREPARE, SCATTER],
    fusions: TRANSFORMER_FUSIONS,
    matmulnbits: { accuracyLevel: 4 },
    // Conv weights int8 per output channel in either format (DQ -> Conv runs on the CPU EP and
    // XNNPACK): without them conv nets' artifacts were 1.14-1.15x their source.
    weights: { conv: true },
  },
  npu: {
    // Opset 21 for INT4 and 16-bit Q/DQ; activation Q/DQ and shape fixing follow in finalize/variants.
    // RMSNorm fused (QNN RmsNorm) so that 1/rms, whose range the calibration tokens do not bound, is no uint16 activation.
    summary: 'opset 21, QNN fusions (LayerNormalization, RmsNorm, Gelu), weights as blocked DequantizeLinear; activation QDQ in finalize',
    prepare: [
      { pass: 'upgrade-opset', options: { to: 21 } },
      ...PREPARE,
      { pass: 'masked-scatter', options: { scan: 'matmul' } },
      { pass: 'position-ids-input' },
      { pass: 'fold-batchnorm' },
    ],
    fusions: ['fuse-layernorm', 'fuse-rmsnorm', 'fuse-gelu'],
  },
};

/** The steps of a target's pipeline for one sub-model. */
export function targetPipeline(target: TargetName, sm: SubModel): StepSpec[] {
  const row = TARGET_PIPELINES[target];
  const p = sm.plan;
  const steps: StepSpec[] = [...row.prepare, ...row.fusions.map((f) => (typeof f === 'string' ? { pass: f } : f))];
  if (p.vision) {
    // A whole MLLM in one graph: its vision side quantized as the target's vision encoders are.
    if (p.vision.weightBits) steps.push(quantizeStep(row, sm, p.vision, 'vision'));
    if (p.weightBits) steps.push(quantizeStep(row, sm, p, 'language'));
  } else if (p.weightBits) steps.push(quantizeStep(row, sm, p));
  if (p.activations === 'fp16') steps.push({ pass: 'to-fp16' });
  return [...steps, ...FINISH];
}

function quantizeStep(row: PipelineRow, sm: SubModel, p: RolePlan, part?: 'vision' | 'language'): StepSpec {
  return {
    pass: 'quantize-weights',
    options: {
      bits: p.weightBits,
      block: sm.opts.blockSize,
      method: sm.opts.method,
      format: p.format,
      role: sm.role,
      embeddings: weightsPassEmbeddings(p),
      scales: p.activations === 'fp16' ? 'fp16' : 'fp32',
      ...(part ? { part } : {}),
      ...(p.format === 'matmulnbits' ? row.matmulnbits : {}),
      ...row.weights,
      ...(sm.opts.threads ? { threads: sm.opts.threads } : {}),
    },
  };
}

/** A target's name used as a named pipeline (`compile --pipeline webgpu`). */
export function isTargetPipeline(name: string): name is TargetName {
  return Object.hasOwn(TARGET_PIPELINES, name);
}
