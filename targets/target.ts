// The Target contract: what an execution provider runs (capability table), the devices it meets
// (profiles), how a sub-model of each role is compiled for it (pipeline + quantization defaults),
// and the runtime settings the artifact ships with.
import { DataType, Model, Node, type Progress } from '../ir/index.js';
import type { Role } from '../ir/summary.js';
import type { PolicyName } from './plan/types.js';
import type { Tiling } from './dims.js';
import { COSINE_THRESHOLDS } from '../runtime/metrics.js';
import type { InputsUsed, Preprocess } from '../runtime/inputs.js';
import type { RangeMethod } from '../runtime/calibrate.js';
import type { Layout } from './run-feeds.js';

export type TargetName = 'webgpu' | 'npu' | 'mobile';
export const TARGET_NAMES: readonly TargetName[] = ['webgpu', 'npu', 'mobile'];

export type QuantChoice = 'int4' | 'int8' | 'fp16' | 'none';

/** One op the EP runs. `limit` returns why a node is outside what the kernel accepts. */
export interface OpSupport {
  /** '' = ai.onnx. */
  domain: string;
  op: string;
  limit?: (node: Node) => string | undefined;
}

export class CapabilityTable {
  private ops = new Map<string, OpSupport>();

  constructor(
    readonly ep: string,
    entries: OpSupport[],
    /** Float element types compute ops may carry. */
    readonly floatTypes: readonly DataType[],
    /** Every ai.onnx op is available (the CPU EP). */
    readonly allDefaultDomain = false,
  ) {
    for (const e of entries) this.ops.set(key(e.domain, e.op), e);
  }

  /** Whether the EP runs (domain, op) at all ('' = ai.onnx). */
  supports(domain: string, op: string): boolean {
    const d = domain === 'ai.onnx' ? '' : domain;
    return this.ops.has(key(d, op)) || (this.allDefaultDomain && d === '');
  }

  get(node: Node): OpSupport | undefined {
    const d = node.domain === 'ai.onnx' ? '' : node.domain;
    const hit = this.ops.get(key(d, node.opType));
    if (hit) return hit;
    return this.allDefaultDomain && d === '' ? { domain: '', op: node.opType } : undefined;
  }
}

const key = (domain: string, op: string) => `${domain}:${op}`;

/** Build table entries for many plain ops of one domain. */
export function ops(domain: string, names: string, limits: Record<string, (n: Node) => string | undefined> = {}): OpSupport[] {
  return names
    .split(/\s+/)
    .filter(Boolean)
    .map((op) => ({ domain, op, limit: limits[op] }));
}

export interface DeviceProfile {
  name: string;
  description: string;
  /** Largest single tensor the device can bind (WebGPU maxStorageBufferBindingSize); Infinity if none. */
  maxBindingBytes: number;
  /** Largest buffer the device can create. */
  maxBufferBytes: number;
  /** WebGPU `shader-f16` (fp16 activations need it). */
  shaderF16?: boolean;
  /** int8 dot products (DP4A / SDOT) for accuracy_level 4. */
  int8Dot?: boolean;
}

/** Per-role quantization of weights and precision of activations. */
export interface RolePlan {
  /** Weight format: MatMulNBits (webgpu/mobile), QDQ (npu), none. */
  weightBits: 0 | 4 | 8;
  format: 'matmulnbits' | 'qdq' | 'none';
  /** Activation precision of the emitted graph. */
  activations: 'fp32' | 'fp16' | 'uint16';
  /** Embedding tables: 'block-quantized' = GatherBlockQuantized from the weights pass (webgpu/mobile);
   * 'qdq' = left float by the weights pass (QNN has no GatherBlockQuantized) and stored as a 16-bit
   * QDQ constant by the target's activation quantization (npu finalize); 'float' = not quantized.
   * The pipeline and the manifest both read this one field. */
  embeddings: EmbeddingPlan;
  /** A whole-MLLM graph (role mllm): the plan of its vision side (encoder and projector weights,
   * quantized as the target quantizes a vision encoder); the rest follows this plan. */
  vision?: RolePlan;
}

export type EmbeddingPlan = 'block-quantized' | 'qdq' | 'float';

/** Whether the weights pass quantizes Gather embeddings (quantize-weights `embeddings`). */
export const weightsPassEmbeddings = (p: RolePlan): boolean => p.embeddings === 'block-quantized';

export interface TargetOptions {
  quant?: QuantChoice;
  blockSize: number;
  method: string;
  fp16: boolean;
  /** Static decoders: KV length (past + new tokens) and tokens per prefill call. */
  context: number;
  prefillChunk: number;
  /** Static vision encoders: one variant per size. */
  imageSizes: { width: number; height: number }[];
  fix: Record<string, number>;
  /** Calibration data: test_data_set_N folders or images (targets/calibration.ts), else the
   * verification data, else synthetic sets. */
  calibration?: string;
  /** Verification (and default calibration) data: test-data folders, images, token file. */
  inputs?: string[];
  images?: string[];
  tokens?: string;
  preprocess?: Preprocess;
  /** Activation range method for npu calibration. */
  calibrationMethod?: RangeMethod;
  seed: number;
  /** Worker threads quantizing weights (same bytes for any count; default 1). */
  threads?: number;
  policy?: PolicyName;
  /** Fixed-shape vision variants a tiling policy asks for (set when --policy is given). */
  tiling?: Tiling;
}

/** A pass by name with options, as in a textual pipeline. */
export interface StepSpec {
  pass: string;
  options?: Record<string, unknown>;
}

/** One emitted file of a sub-model: '' suffix = the model as compiled; static targets emit several. */
export interface Variant {
  suffix: string;
  dims: Record<string, number>;
}

export interface SubModel {
  /** File stem (`decoder_model_merged`). */
  name: string;
  role: Role;
  plan: RolePlan;
  profile: DeviceProfile;
  opts: TargetOptions;
  /** Source file (verification reference, calibration runs). */
  source: string;
  /** Vision patch size found in the folder (derives grid dims from image sizes). */
  patch?: number;
  /** Every sub-model of the folder (this one included): source file and role, for calibration and
   * verification runs that feed one stage with what the stages before it make. */
  siblings?: { name: string; role: Role; file: string }[];
  /** Set by calibration: what the activation ranges / GPTQ statistics were measured on. */
  calibrationUsed?: InputsUsed;
  /** Progress of long target work (calibration runs). */
  progress?: Progress;
}

/** Minimum cosine per role when comparing artifact and original outputs. */
export type Thresholds = Record<Role, number>;

export interface Target {
  name: TargetName;
  description: string;
  capabilities: CapabilityTable;
  /** Every dim must be a number (NPU compilers). */
  staticShapes: boolean;
  profiles: Record<string, DeviceProfile>;
  defaultProfile: string;
  thresholds: Thresholds;
  plan(role: Role, opts: TargetOptions): RolePlan;
  /** Default pass pipeline for a sub-model. */
  pipeline(sm: SubModel): StepSpec[];
  /** Target-level rewrites after the pipeline (splits, accuracy levels, activation QDQ); returns counts. */
  finalize(model: Model, sm: SubModel): Promise<Record<string, number>>;
  /** Rewrites of one variant after its dims are bound (constants that folded out of shape arithmetic). */
  finalizeVariant?(model: Model, sm: SubModel): void;
  /** How the target's runtime holds a decoder's KV cache: npu's fixed window, or a past that grows
   * call by call (decoders `edgec run` drives are calibrated and verified on those calls). */
  kvLayout: Layout;
  /** Files to emit for a compiled sub-model (static targets: one per shape bucket). */
  variants(model: Model, sm: SubModel): Variant[];
  /** Artifact file name of a sub-model variant. */
  fileName(sm: SubModel, variant: Variant): string;
  /** External data: largest chunk file, and its name for a model file. */
  externalData: { maxFileBytes: number; location(file: string): string };
  /** Runtime session options shipped in the manifest for one emitted model. */
  sessionOptions(model: Model, sm: SubModel, externalData: string[]): Record<string, unknown>;
  /** Write an onnxruntime-genai genai_config.json for the decoder. */
  genaiConfig?: boolean;
  /** Folder of the artifact the model files go in ('' = its root; transformers.js wants onnx/). */
  modelDir?: string;
  /** Extra artifact files (e.g. required_operators.config) from every emitted model. */
  extraFiles?(models: Model[]): { path: string; content: string }[];
}

export function roleThreshold(t: Target, role: Role, plan: RolePlan): number {
  // Unquantized fp32 graphs only move by float reassociation (the same table as `verify`).
  if (plan.weightBits === 0 && plan.activations === 'fp32') return COSINE_THRESHOLDS.exact;
  return t.thresholds[role];
}
