// quantize-weights (formerly quantize-int4): block-wise 4/8-bit weight quantization of MatMul/Gemm
// weights (MatMulNBits or DequantizeLinear-21 + MatMul) and Gather embeddings (GatherBlockQuantized).
// Weights are read, quantized and replaced one tensor at a time; a replaced fp32 initializer is
// dropped at once. The parts: quant/candidates.ts (which weights, how they are read),
// quant/schedule.ts (order, sharing, threads, method dispatch), quant/rtn-streamer.ts (fp32 weights
// streamed through the SIMD RTN kernel: units of maxSliceMb go from the external file into the
// kernel, which packs the codes in the MatMulNBits layout and sums the error, on `threads` workers
// that read the file themselves), quant/emit.ts (the new nodes and initializers).
import type { Graph, Model, Node } from '../ir/index.js';
import { guessRole, type Role } from '../ir/summary.js';
import { definePass, type OptionSchema, type OptionsOf, type PassContext, type PassStats } from './pass.js';
import { findCandidates, markLmHeadAndTies, type Candidate } from './quant/candidates.js';
import { WeightEmitter } from './quant/emit.js';
import { convCandidates, quantizeConvWeights } from './quant/conv.js';
import { imageOnlyNodes, matchesAny } from './quant/graph-util.js';
import { MS_DOMAIN } from './quant/matmulnbits.js';
import { getMethod } from './quant/methods/index.js';
import { releaseGptqMemory } from './quant/methods/gptq.js';
import { isAwq } from './quant/methods/awq.js';
import { awqFold } from './quant/awq-fold.js';
import { normScaleEstimates } from './quant/norm-scales.js';
import type { LayerReport } from './quant/report.js';
import { RtnStreamer } from './quant/rtn-streamer.js';
import { quantizeAll } from './quant/schedule.js';
import { bitsOr, type QuantSettings } from './quant/settings.js';
import { parseBudget, planBudget, storeHalf, type BudgetPlan } from './quant/budget.js';
import type { CalibrationData } from './quant/types.js';
import { createQuantPool, quantExec } from './quant/workers.js';
import { upgradeOpset } from './upgrade-opset.js';
import { constantsToInitializers, materializeWeights } from './weights.js';

export interface QuantizeContext extends PassContext {
  /** Calibration activations for a weight (methods that need them); undefined when none were collected. */
  calibration?: (weight: string, node: Node) => CalibrationData | undefined;
}

export interface QuantizeStats extends PassStats {
  layers: LayerReport[];
  role: Role;
  /** With a budget: the format chosen for each weight, and the bits per weight reached. */
  budget?: BudgetPlan;
}

const ROLES = ['auto', 'decoder', 'vision-encoder', 'projector', 'embeddings', 'classifier', 'mllm', 'unknown'] as const;

const blockCheck = (v: unknown) => {
  const b = v as number;
  return b >= 16 && b <= 256 && (b & (b - 1)) === 0 ? undefined : `must be a power of two in 16..256, got ${b}`;
};
const bitsCheck = (v: unknown) => (v === undefined || v === 4 || v === 8 ? undefined : `must be 4 or 8, got ${String(v)}`);

const options = {
  bits: {
    type: 'int',
    default: undefined,
    description: 'weight bits, 4 or 8 (default: 4, or 8 for a vision encoder or projector)',
    validate: bitsCheck,
  },
  block: { type: 'int', default: 32, description: 'block size along K (power of two, 16..256)', validate: blockCheck },
  sym: { type: 'bool', default: true, description: 'symmetric (no zero points) or asymmetric' },
  format: {
    type: 'enum',
    default: 'matmulnbits',
    values: ['matmulnbits', 'qdq'],
    description: 'MatMulNBits (WebGPU/CPU) or DequantizeLinear-21 + MatMul (NPU)',
  },
  method: { type: 'string', default: 'rtn', description: 'quantization method (passes/quant/methods)' },
  accuracyLevel: {
    aliases: ['accuracy_level'],
    type: 'int',
    default: 0,
    min: 0,
    max: 4,
    description: 'MatMulNBits accuracy_level (0 = unset, 4 = int8 activations)',
  },
  scales: {
    type: 'enum',
    default: 'auto',
    values: ['auto', 'fp32', 'fp16'],
    description: "scale precision; 'auto' follows the activation type. fp16 on an fp32 graph rounds the values (stored fp16 in QDQ)",
  },
  include: { type: 'list', default: [], description: 'only nodes matching these names, op types or globs' },
  exclude: { type: 'list', default: [], description: 'skip nodes matching these names, op types or globs (node or weight name)' },
  embeddings: { type: 'bool', default: undefined, description: 'quantize Gather embeddings (default: on for matmulnbits, off for qdq)' },
  embedBits: {
    aliases: ['embed_bits'],
    type: 'int',
    default: undefined,
    description: 'bits for embeddings (default: bits)',
    validate: bitsCheck,
  },
  lmHeadBits: {
    aliases: ['lm_head_bits'],
    type: 'int',
    default: undefined,
    description: 'bits for the lm_head (default: bits)',
    validate: bitsCheck,
  },
  embedForm: {
    aliases: ['embed_form'],
    type: 'enum',
    default: 'int4',
    values: ['int4', 'uint8'],
    description: 'GatherBlockQuantized data: INT4/UINT4 [V, H], or uint8 [V, H*bits/8] (the MatMulNBits byte layout)',
  },
  tie: { type: 'bool', default: true, description: 'a tied embedding and lm_head share one packed initializer' },
  part: {
    type: 'enum',
    default: 'all',
    values: ['all', 'vision', 'language'],
    description: 'a whole-MLLM graph: only the weights computed from the image alone (vision encoder, projector), or only the others',
  },
  conv: {
    type: 'bool',
    default: false,
    description: 'also Conv/ConvTranspose weights: int8 symmetric per output channel behind DequantizeLinear (float activations)',
  },
  role: { type: 'enum', default: 'auto', values: ROLES, description: 'sub-model role for defaults (auto: guessed from the graph)' },
  maxSliceMb: {
    aliases: ['max_slice_mb'],
    type: 'float',
    default: 8,
    min: 0.001,
    description: 'read and quantize weights in units (block rows or column slices) of at most about this many MB of fp32 (peak memory)',
  },
  budget: {
    type: 'string',
    default: undefined,
    description:
      'mixed precision under a size budget, bits per weight (4.5bpw) or bytes (3MB): each weight gets 4-bit blocks of 128/64/32, 8 bits or fp16 by measured output error per byte',
    validate: (v: unknown) => {
      if (v === undefined || v === '') return undefined;
      try {
        parseBudget(String(v));
        return undefined;
      } catch (e) {
        return (e as Error).message;
      }
    },
  },
  threads: {
    type: 'int',
    default: 1,
    min: 1,
    max: 64,
    description: 'worker threads quantizing weights in parallel (same output for any count)',
  },
} as const satisfies OptionSchema;

type QuantizeOptions = OptionsOf<typeof options>;

/** The options resolved against the model (role guessed, bits and embeddings defaulted by role and format). */
function settings(model: Model, o: QuantizeOptions): QuantSettings {
  const role: Role = o.role === 'auto' ? guessRole(model).role : o.role;
  const bits = bitsOr(o.bits, role === 'vision-encoder' || role === 'projector' || role === 'classifier' ? 8 : 4);
  const embedBits = bitsOr(o.embedBits, bits),
    lmBits = bitsOr(o.lmHeadBits, bits);
  return {
    role,
    format: o.format,
    bits,
    embedBits,
    lmBits,
    embeddings: o.embeddings ?? o.format === 'matmulnbits',
    block: o.block,
    sym: o.sym,
    method: getMethod(o.method),
    scales: o.scales,
    include: o.include,
    exclude: o.exclude,
    embedForm: o.embedForm,
    tie: o.tie,
    maxSliceMb: o.maxSliceMb,
    threads: o.threads,
    accuracyLevel: o.accuracyLevel,
    bitsOf: (c: Candidate) => (c.kind === 'gather' ? embedBits : c.lmHead ? lmBits : bits),
    blockOf: () => o.block,
  };
}

/** Per-weight formats under the budget: the plan overrides bits and block of every weight it names. */
function applyBudget(
  cands: Candidate[],
  budget: string,
  s: QuantSettings,
  calib: QuantizeContext['calibration'],
  stats: QuantizeStats,
): void {
  const plan = planBudget(cands, budget, s.sym, calib);
  // fp16 weights leave the candidates (stored once, whatever reads them); the rest get their format.
  const half = new Set(plan.choices.filter((ch) => ch.bits === 16).map((ch) => ch.weight));
  const stored = new Set<string>();
  for (const c of cands) {
    if (!half.has(c.w.value.name) || stored.has(c.w.value.name)) continue;
    storeHalf(c);
    stored.add(c.w.value.name);
  }
  cands.splice(0, cands.length, ...cands.filter((c) => !half.has(c.w.value.name)));
  const by = new Map(plan.choices.map((ch) => [ch.weight, ch]));
  const { bitsOf, blockOf } = s;
  s.bitsOf = (c) => (by.get(c.w.value.name)?.bits as 4 | 8 | undefined) ?? bitsOf(c);
  s.blockOf = (c) => by.get(c.w.value.name)?.block ?? blockOf(c);
  stats.budget = plan;
  const hist = new Map<string, number>();
  for (const ch of plan.choices) {
    const k = ch.bits === 16 ? 'fp16' : `${ch.bits}b/${ch.block}`;
    hist.set(k, (hist.get(k) ?? 0) + 1);
  }
  stats.notes!.push(
    `budget ${budget}: ${plan.bitsPerWeight.toFixed(3)} bits per weight (${plan.bytes} of ${plan.budgetBytes} bytes) over ${plan.choices.length} weights: ` +
      [...hist].map(([k, n]) => `${n} x ${k}`).join(', ') +
      (calib ? '' : '; no calibration activations: weight error alone'),
  );
}

/** Whether a node is in one part of a whole-MLLM graph (a graph without image input has no vision part). */
function inPart(part: 'all' | 'vision' | 'language'): (n: Node) => boolean {
  if (part === 'all') return () => true;
  const vision = new Map<Graph, Set<Node>>();
  return (n: Node) => {
    if (!vision.has(n.graph)) vision.set(n.graph, imageOnlyNodes(n.graph));
    return vision.get(n.graph)!.has(n) === (part === 'vision');
  };
}

/** Conv weights int8 per channel whatever the MatMul format, with the include/exclude and part filters. */
function quantizeConv(model: Model, o: QuantizeOptions, keep: (n: Node) => boolean, stats: QuantizeStats, skip: (why: string) => void) {
  const convs = convCandidates(
    model,
    (n) => keep(n) && (!o.include.length || matchesAny(o.include, n, n.input(1)?.name)) && !matchesAny(o.exclude, n, n.input(1)?.name),
  );
  if (!convs.length) return;
  // Per-axis DequantizeLinear needs opset 13.
  const from = model.opset('') ?? 1;
  if (from < 13) {
    const up = upgradeOpset(model, 13);
    if (up.blockers.length)
      return skip(`conv: per-channel DequantizeLinear needs opset 13 and the model (opset ${from}) cannot be converted`);
    stats.notes!.push(`opset ${from} -> 13 for per-channel Conv weights (${up.converted} nodes rewritten)`);
  }
  stats.counts.conv = quantizeConvWeights(convs);
}

/** DequantizeLinear with block_size needs opset 21: upgrade the model, or say why not (false). */
function ensureOpset21(model: Model, stats: QuantizeStats, skip: (why: string) => void): boolean {
  const up = upgradeOpset(model, 21);
  if (up.blockers.length) {
    skip(
      `DequantizeLinear with block_size needs opset 21 and the model (opset ${up.from}) cannot be converted: ${up.blockers.slice(0, 3).join('; ')}`,
    );
    return false;
  }
  stats.notes!.push(`opset ${up.from} -> 21 (${up.converted} nodes rewritten)`);
  return true;
}

export const quantizeWeights = definePass({
  name: 'quantize-weights',
  aliases: ['quantize-int4'],
  description:
    'Block-wise 4/8-bit weight quantization of MatMul/Gemm (MatMulNBits or DequantizeLinear-21) and Gather embeddings (GatherBlockQuantized)',
  options,
  statistics: {
    matmul: 'MatMul weights quantized',
    gemm: 'Gemm weights quantized',
    conv: 'Conv/ConvTranspose weights quantized (int8 per output channel)',
    gather: 'embedding tables quantized (GatherBlockQuantized)',
    tied: "embeddings sharing the lm_head's packed weight",
    excluded: 'weights left out by include/exclude',
    skipped: 'candidates left as they are (see skipped)',
  },
  async run(model: Model, o, ctx: QuantizeContext): Promise<QuantizeStats> {
    const s = settings(model, o);
    const { format, method } = s;
    const stats: QuantizeStats = {
      counts: { matmul: 0, gemm: 0, conv: 0, gather: 0, tied: 0, excluded: 0, skipped: 0 },
      skipped: [],
      notes: [],
      layers: [],
      role: s.role,
    };
    const skip = (why: string) => {
      stats.skipped!.push(why);
      stats.counts.skipped!++;
    };
    stats.notes!.push(
      `role ${s.role}: ${s.bits}-bit weights, block ${s.block}, ${s.sym ? 'symmetric' : 'asymmetric'}, ${format}, method ${method.name}`,
    );
    if (method.needsCalibration && !ctx.calibration) {
      skip(`method '${method.name}' needs calibration activations and none were given; model left unchanged`);
      return stats;
    }
    let calibration = ctx.calibration;
    if (!calibration && method.usesChannelScale) {
      // Data-free: the channel scale the norm weights imply stands in for activations.
      const scales = normScaleEstimates(model);
      calibration = (w) => scales.get(w);
      stats.notes!.push(`data-free channel scales from norm weights for ${scales.size} weight(s)`);
    }
    // Weights held in Constant nodes or behind Transpose/Reshape/Cast of a constant are weights too.
    const constants = constantsToInitializers(model),
      materialized = materializeWeights(model);
    if (constants || materialized)
      stats.notes!.push(
        `${constants} Constant node(s) made initializers, ${materialized} weight(s) behind Transpose/Reshape/Cast materialized`,
      );
    const found = findCandidates(model, s, skip);
    const { nonConst } = found;
    const keep = inPart(o.part);
    const cands = found.cands.filter((c) => keep(c.node));
    stats.counts.excluded! += found.excluded + found.cands.length - cands.length;
    if (o.conv) quantizeConv(model, o, keep, stats, skip);
    if (nonConst.length)
      skip(
        `${nonConst.length} MatMul(s) with a non-constant B left as they are (activation x activation): ${nonConst.slice(0, 8).join(', ')}${nonConst.length > 8 ? ', ...' : ''}`,
      );
    if (!cands.length) return stats;
    if (format === 'qdq' && (model.opset('') ?? 1) < 21 && cands.some((c) => c.kind !== 'gather') && !ensureOpset21(model, stats, skip))
      return stats;
    markLmHeadAndTies(cands, s);
    if (o.budget) applyBudget(cands, o.budget, s, ctx.calibration, stats);
    let rowScale: Map<string, Float32Array> | undefined;
    if (isAwq(method) && calibration) {
      const fold = await awqFold(
        cands.filter((c) => !c.tiedTo),
        (c) => ({ bits: s.bitsOf(c), blockSize: s.blockOf(c), symmetric: s.sym }),
        calibration,
        s.maxSliceMb,
      );
      stats.notes!.push(...fold.notes);
      calibration = fold.calibration;
      rowScale = fold.rowScale;
    }

    const pool = s.threads > 1 ? await createQuantPool({ threads: s.threads }) : null;
    const emitter = new WeightEmitter(model, s, stats);
    const streamer = new RtnStreamer(cands, { ...s, spillable: (c) => emitter.takesSpilled(c) }, pool);
    let fallbacks: string[];
    try {
      fallbacks = await quantizeAll(
        cands.filter((c) => !c.tiedTo),
        {
          s,
          inFlight: pool ? s.threads : 0,
          exec: quantExec(pool),
          streamer,
          emitter,
          calibration,
          rowScale,
          skip,
          progress: ctx.progress,
        },
      );
    } finally {
      streamer.close();
      await pool?.close();
      releaseGptqMemory();
    }
    if (fallbacks.length)
      stats.notes!.push(
        `${fallbacks.length} weight(s) without calibration activations quantized with rtn: ${fallbacks.slice(0, 6).join(', ')}${fallbacks.length > 6 ? ', ...' : ''}`,
      );
    if (format === 'matmulnbits' || stats.counts.gather) model.requireOpset(MS_DOMAIN, 1);
    if (format === 'qdq' && model.irVersion < 10) model.irVersion = 10;
    return stats;
  },
});

/** The former name (the pass is registered under both). */
export const quantizeInt4 = quantizeWeights;
