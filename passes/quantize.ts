// quantize-int4: block-wise weight quantization of MatMul/Gemm weights (MatMulNBits or
// DequantizeLinear-21 + MatMul) and Gather embeddings (GatherBlockQuantized). Weights are read,
// quantized and replaced one tensor at a time; a replaced fp32 initializer is dropped at once.
// RTN of fp32 weights streams (quant/rtn-stream.ts): units of max_slice_mb go from the external
// file into the SIMD kernel, which packs the codes in the MatMulNBits layout and sums the error, on
// `threads` workers that read the file themselves; QDQ and GatherBlockQuantized repack those bytes.
import { DataType, Graph, Model, Node, Tensor, Value, bf16ToF32, dtypeName, f16ToF32, f32ToF16, packInt4, readRange } from '../ir/index.js';
import { guessRole, type Role } from '../ir/summary.js';
import type { Options, Pass, PassContext, PassStats } from './pass.js';
import { getMethod } from './quant/methods/index.js';
import { normScaleEstimates } from './quant/norm-scales.js';
import { createQuantPool } from './quant/workers.js';
import type { CalibrationData, QuantMethod, QuantizedWeight } from './quant/types.js';
import { MS_DOMAIN, floatTensor, packMatMulNBits, packZeroPoints, zeroPointRowBytes } from './quant/matmulnbits.js';
import { rtn } from './quant/methods/rtn.js';
import { gptq, runGptqStep, type GptqPlan, type GptqStep, type GptqStepResult } from './quant/methods/gptq.js';
import { SHARED_MAX_PAGES, bindKernel, simdAvailable, type BoundKernel } from './quant/methods/rtn-simd.js';
import { planUnits, runRtnUnit, unitRange, type RtnUnitJob } from './quant/rtn-stream.js';
import { packQdq } from './quant/qdq.js';
import { packGatherBlockQuantized, type GatherForm } from './quant/gather.js';
import { errorSums, type LayerReport } from './quant/report.js';
import { dropIfUnused, floatTypeOf, matchesAny, removeDeadNode } from './quant/graph-util.js';
import { upgradeOpset } from './upgrade-opset.js';
import { constantsToInitializers, materializeWeights } from './weights.js';

export interface QuantizeContext extends PassContext {
  /** Calibration activations for a weight (methods that need them); undefined when none were collected. */
  calibration?: (weight: string, node: Node) => CalibrationData | undefined;
}

export interface QuantizeStats extends PassStats {
  layers: LayerReport[];
  role: Role;
}

const ROLES = ['auto', 'decoder', 'vision-encoder', 'projector', 'embeddings', 'unknown'] as const;

const blockCheck = (v: unknown) => {
  const b = v as number;
  return b >= 16 && b <= 256 && (b & (b - 1)) === 0 ? undefined : `must be a power of two in 16..256, got ${b}`;
};
const bitsCheck = (v: unknown) => (v === undefined || v === 4 || v === 8 ? undefined : `must be 4 or 8, got ${String(v)}`);

/** A constant 2-D weight as a consumer sees it: an initializer, or Transpose(perm 1,0) of one. */
interface ConstWeight {
  value: Value;
  tensor: Tensor;
  /** The initializer holds the weight transposed relative to what the consumer multiplies by. */
  transposedByNode: Node | null;
}

function constWeight(v: Value | null): ConstWeight | null {
  if (!v) return null;
  if (v.initializer) return { value: v, tensor: v.initializer, transposedByNode: null };
  const p = v.producer;
  if (p && p.opType === 'Transpose' && (p.domain === '' || p.domain === 'ai.onnx')) {
    const src = p.input(0);
    const perm = p.attrInts('perm', [1, 0]);
    if (src?.initializer && src.initializer.dims.length === 2 && perm[0] === 1 && perm[1] === 0) return { value: src, tensor: src.initializer, transposedByNode: p };
  }
  return null;
}

interface Quantized {
  q: QuantizedWeight;
  /** MatMulNBits B bytes [N][kBlocks][blob] when streamed; q.codes is then empty. */
  packed?: Uint8Array;
  /** ||W - dequant|| / ||W|| over the whole weight. */
  relError: number;
}

interface Candidate {
  node: Node;
  kind: 'matmul' | 'gemm' | 'gather';
  w: ConstWeight;
  /** The stored tensor is [N, K] (Gemm transB, Transpose of an initializer, embedding table). */
  storedNK: boolean;
  K: number;
  N: number;
  lmHead: boolean;
  /** Gather candidate that shares its quantized table with this lm_head. */
  tiedGather?: Candidate;
  tiedTo?: Candidate;
}

const POSITIONAL = /position|pos_ids|rotary|cos_cache|sin_cache|inv_freq/i;

const isFloatDtype = (t: DataType) => t === DataType.FLOAT || t === DataType.FLOAT16 || t === DataType.BFLOAT16;

const CHUNK = 16 << 20;

/** Stored little-endian fp32, fp16 or bf16 values into dst (dst.length values). */
function decodeFloats(dtype: DataType, bytes: Uint8Array, dst: Float32Array): void {
  if (dtype === DataType.FLOAT) { new Uint8Array(dst.buffer, dst.byteOffset, dst.length * 4).set(bytes); return; }
  const conv = dtype === DataType.FLOAT16 ? f16ToF32 : bf16ToF32;
  for (let i = 0; i < dst.length; i++) dst[i] = conv(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
}

/**
 * Columns [n0, n1) of the float [K, N] weight, row-major [K, n1-n0]. The stored tensor is [K, N], or
 * [N, K] when storedNK. Read by byte range or in chunks (external data is streamed from its file,
 * never held whole) and decoded as it comes.
 */
function readSlice(c: Candidate, n0: number, n1: number): Float32Array {
  const t = c.w.tensor, eb = t.dtype === DataType.FLOAT ? 4 : 2;
  const { K, N } = c;
  const ns = n1 - n0;
  const out = new Float32Array(K * ns);
  if (c.storedNK) {
    // Rows n0..n1 of [N, K] are contiguous; transpose them in 64-wide tiles.
    const d = t.data;
    const bytes = d.kind === 'external' ? readRange(d.ref.file, d.ref.offset + n0 * K * eb, ns * K * eb) : t.bytes().subarray(n0 * K * eb, n1 * K * eb);
    const src = new Float32Array(ns * K);
    decodeFloats(t.dtype, bytes, src);
    for (let k0 = 0; k0 < K; k0 += 64) {
      const k1 = Math.min(K, k0 + 64);
      for (let n = 0; n < ns; n++) for (let k = k0; k < k1; k++) out[k * ns + n] = src[n * K + k]!;
    }
    return out;
  }
  if (ns === N) {
    t.forEachChunk(CHUNK, (chunk, at) => decodeFloats(t.dtype, chunk, out.subarray(at / eb, (at + chunk.length) / eb)));
    return out;
  }
  const rowBytes = N * eb, rows = Math.max(1, Math.floor(CHUNK / rowBytes));
  const tmp = new Float32Array(rows * N);
  t.forEachChunk(rows * rowBytes, (chunk, at) => {
    const r0 = at / rowBytes, nr = chunk.length / rowBytes;
    decodeFloats(t.dtype, chunk, tmp.subarray(0, nr * N));
    for (let r = 0; r < nr; r++) out.set(tmp.subarray(r * N + n0, r * N + n1), (r0 + r) * ns);
  });
  return out;
}

function roundScalesToF16(q: QuantizedWeight): void {
  for (let i = 0; i < q.scales.length; i++) q.scales[i] = f16ToF32(f32ToF16(q.scales[i]!));
}

/** Output feeds a graph output directly or through shape-only ops, or the names say lm_head. */
function looksLikeLmHead(n: Node, weightName: string): boolean {
  if (/lm_head|output_proj|logits/i.test(n.name) || /lm_head/i.test(weightName)) return true;
  let v = n.outputs[0];
  for (let hops = 0; v && hops < 3; hops++) {
    if (v.isGraphOutput) return true;
    const next = v.consumers.find((c) => ['Reshape', 'Cast', 'Identity', 'Squeeze'].includes(c.opType));
    v = next?.outputs[0] ?? null;
  }
  return false;
}

/** Logical element (k, n) of an fp32 weight, read alone. */
function valueAt(c: Candidate, k: number, n: number): number {
  const t = c.w.tensor, i = c.storedNK ? n * c.K + k : k * c.N + n, d = t.data;
  const b = d.kind === 'external' ? readRange(d.ref.file, d.ref.offset + i * 4, 4) : t.bytes().subarray(i * 4, i * 4 + 4);
  return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
}

function sameTransposed(a: Candidate, gather: Candidate, sliceMb: number): boolean {
  if (a.K !== gather.K || a.N !== gather.N) return false;
  if (a.w.value === gather.w.value) return a.storedNK === gather.storedNK;
  // Untied weights differ almost everywhere: a few sampled elements settle it without reading them.
  if (a.w.tensor.dtype === DataType.FLOAT && gather.w.tensor.dtype === DataType.FLOAT) {
    for (let s = 0; s < 16; s++) {
      const k = (s * 7919) % a.K, n = (s * 104729) % a.N;
      if (!Object.is(valueAt(a, k, n), valueAt(gather, k, n))) return false;
    }
  }
  const step = Math.max(1, Math.floor((sliceMb * 2 ** 20) / (a.K * 4)));
  for (let n0 = 0; n0 < a.N; n0 += step) {
    const x = readSlice(a, n0, Math.min(a.N, n0 + step)), y = readSlice(gather, n0, Math.min(a.N, n0 + step));
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

export const quantizeInt4: Pass = {
  name: 'quantize-int4',
  description: 'Block-wise 4/8-bit weight quantization of MatMul/Gemm (MatMulNBits or DequantizeLinear-21) and Gather embeddings (GatherBlockQuantized)',
  options: {
    bits: { type: 'int', default: undefined, description: 'weight bits, 4 or 8 (default: 4, or 8 for a vision encoder or projector)', validate: bitsCheck },
    block: { type: 'int', default: 32, description: 'block size along K (power of two, 16..256)', validate: blockCheck },
    sym: { type: 'bool', default: true, description: 'symmetric (no zero points) or asymmetric' },
    format: { type: 'enum', default: 'matmulnbits', values: ['matmulnbits', 'qdq'], description: 'MatMulNBits (WebGPU/CPU) or DequantizeLinear-21 + MatMul (NPU)' },
    method: { type: 'string', default: 'rtn', description: 'quantization method (passes/quant/methods)' },
    accuracy_level: { type: 'int', default: 0, min: 0, max: 4, description: 'MatMulNBits accuracy_level (0 = unset, 4 = int8 activations)' },
    scales: { type: 'enum', default: 'auto', values: ['auto', 'fp32', 'fp16'], description: "scale precision; 'auto' follows the activation type. fp16 on an fp32 graph rounds the values (stored fp16 in QDQ)" },
    include: { type: 'list', default: [], description: 'only nodes matching these names, op types or globs' },
    exclude: { type: 'list', default: [], description: 'skip nodes matching these names, op types or globs (node or weight name)' },
    embeddings: { type: 'bool', default: undefined, description: 'quantize Gather embeddings (default: on for matmulnbits, off for qdq)' },
    embed_bits: { type: 'int', default: undefined, description: 'bits for embeddings (default: bits)', validate: bitsCheck },
    lm_head_bits: { type: 'int', default: undefined, description: 'bits for the lm_head (default: bits)', validate: bitsCheck },
    embed_form: { type: 'enum', default: 'int4', values: ['int4', 'uint8'], description: "GatherBlockQuantized data: INT4/UINT4 [V, H], or uint8 [V, H*bits/8] (the MatMulNBits byte layout)" },
    tie: { type: 'bool', default: true, description: 'a tied embedding and lm_head share one packed initializer' },
    role: { type: 'enum', default: 'auto', values: ROLES, description: 'sub-model role for defaults (auto: guessed from the graph)' },
    max_slice_mb: { type: 'float', default: 8, min: 0.001, description: 'read and quantize weights in units (block rows or column slices) of at most about this many MB of fp32 (peak memory)' },
    threads: { type: 'int', default: 1, min: 1, max: 64, description: 'worker threads quantizing weights in parallel (same output for any count)' },
  },
  async run(model: Model, o: Options, ctx: QuantizeContext): Promise<QuantizeStats> {
    const role: Role = o.role === 'auto' ? guessRole(model).role : (o.role as Role);
    const format = o.format as 'matmulnbits' | 'qdq';
    const bits = (o.bits as 4 | 8 | undefined) ?? (role === 'vision-encoder' || role === 'projector' ? 8 : 4);
    const embedBits = (o.embed_bits as 4 | 8 | undefined) ?? bits;
    const lmBits = (o.lm_head_bits as 4 | 8 | undefined) ?? bits;
    const embeddings = (o.embeddings as boolean | undefined) ?? format === 'matmulnbits';
    const block = o.block as number, sym = o.sym as boolean;
    const method: QuantMethod = getMethod(o.method as string);
    const stats: QuantizeStats = { counts: { matmul: 0, gemm: 0, gather: 0, tied: 0, excluded: 0, skipped: 0 }, skipped: [], notes: [], layers: [], role };
    const skip = (why: string) => { stats.skipped!.push(why); stats.counts.skipped!++; };
    stats.notes!.push(`role ${role}: ${bits}-bit weights, block ${block}, ${sym ? 'symmetric' : 'asymmetric'}, ${format}, method ${method.name}`);
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
    const constants = constantsToInitializers(model), materialized = materializeWeights(model);
    if (constants || materialized) stats.notes!.push(`${constants} Constant node(s) made initializers, ${materialized} weight(s) behind Transpose/Reshape/Cast materialized`);
    const cands: Candidate[] = [];
    const nonConst: string[] = [];
    for (const g of model.graph.allGraphs()) {
      for (const n of g.nodes) {
        const c = candidate(n, embeddings, nonConst, skip);
        if (!c) continue;
        const include = o.include as string[], exclude = o.exclude as string[];
        if ((include.length && !matchesAny(include, n, c.w.value.name)) || matchesAny(exclude, n, c.w.value.name)) { stats.counts.excluded!++; continue; }
        cands.push(c);
      }
    }
    if (nonConst.length) skip(`${nonConst.length} MatMul(s) with a non-constant B left as they are (activation x activation): ${nonConst.slice(0, 8).join(', ')}${nonConst.length > 8 ? ', ...' : ''}`);
    if (!cands.length) return stats;

    if (format === 'qdq' && (model.opset('') ?? 1) < 21 && cands.some((c) => c.kind !== 'gather')) {
      const up = upgradeOpset(model, 21);
      if (up.blockers.length) {
        skip(`DequantizeLinear with block_size needs opset 21 and the model (opset ${up.from}) cannot be converted: ${up.blockers.slice(0, 3).join('; ')}`);
        return stats;
      }
      stats.notes!.push(`opset ${up.from} -> 21 (${up.converted} nodes rewritten)`);
    }

    // Tied embedding / lm_head: one quantized table when both use the same bits.
    const gathers = cands.filter((c) => c.kind === 'gather');
    for (const c of cands) {
      if (c.kind === 'gather') continue;
      c.lmHead = (role === 'decoder' || role === 'unknown') && looksLikeLmHead(c.node, c.w.value.name);
      // Asymmetric tying is not offered: the shared 3-D form needs zero points shaped like its
      // [V, k_blocks, 1] scales, which onnxruntime's WebGPU kernel reads as 4-bit pairs and rejects.
      if (!c.lmHead || !o.tie || format !== 'matmulnbits' || embedBits !== lmBits || !sym) continue;
      const gq = gathers.find((gc) => !gc.tiedTo && sameTransposed(c, gc, o.max_slice_mb as number));
      if (gq && gq.K % block === 0 && gq.node.input(1)?.shape) { c.tiedGather = gq; gq.tiedTo = c; }
    }

    const cache = new Map<string, Value[]>();
    const threads = o.threads as number;
    const pool = threads > 1 ? await createQuantPool({ threads }) : null;
    const params = (b: 4 | 8) => ({ bits: b, blockSize: block, symmetric: sym });
    const bitsOf = (c: Candidate): 4 | 8 => (c.kind === 'gather' ? embedBits : c.lmHead ? lmBits : bits);
    const keyOf = (c: Candidate) => `${c.w.value.name}|${c.storedNK}|${bitsOf(c)}|${c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1}`;
    const sliceCols = (c: Candidate) => Math.max(1, Math.floor(((o.max_slice_mb as number) * 2 ** 20) / (c.K * 4)));
    const unitBytes = (o.max_slice_mb as number) * 2 ** 20;
    let mem: WebAssembly.Memory | undefined, kernel: BoundKernel | undefined;
    const memory = () => (mem ??= pool?.memory ?? new WebAssembly.Memory({ initial: 1 }));
    const align = (x: number) => (x + 15) & ~15;
    const firstUnitBytes = (c: Candidate) => unitRange({ ...planUnits(c.storedNK, c.K, c.N, block, unitBytes)[0]!, storedNK: c.storedNK, K: c.K, N: c.N, blockSize: block }).length;
    const outBytes = (c: Candidate) => align((c.N * c.K * bitsOf(c)) / 8) + align((c.N * c.K * 4) / block) + align((c.N * c.K) / block);
    const maxBytes = SHARED_MAX_PAGES * 65536;
    const shapeStreams = (c: Candidate) => c.K % block === 0 && c.N % 4 === 0 && firstUnitBytes(c) <= 256 * 2 ** 20 && outBytes(c) <= maxBytes / 4;
    // The streaming memory: a window per thread, then the outputs (B, scales, zero points) of each
    // weight in flight, first fit, freed once copied out.
    const windowStride = align(Math.max(0, ...cands.filter(shapeStreams).map(firstUnitBytes)) + 32);
    const streams = (c: Candidate, m: QuantMethod) => m === rtn && c.w.tensor.dtype === DataType.FLOAT && c.w.tensor.data.kind !== 'typed'
      && shapeStreams(c) && windowStride * Math.max(1, threads) + outBytes(c) <= maxBytes && simdAvailable();
    const live = new Map<{ start: number; end: number }, Promise<unknown>>();
    const alloc = (bytes: number) => {
      let at = windowStride * Math.max(1, threads);
      for (const r of [...live.keys()].sort((x, y) => x.start - y.start)) {
        if (r.start >= at + bytes) break;
        at = Math.max(at, r.end);
      }
      return { start: at, end: at + bytes };
    };
    const streamWeight = async (c: Candidate): Promise<Quantized> => {
      let region = alloc(outBytes(c));
      while (region.end > maxBytes && live.size) {
        await Promise.race([...live.values()]).catch(() => {});
        region = alloc(outBytes(c));
      }
      const have = memory().buffer.byteLength;
      if (region.end > have) memory().grow(Math.ceil((region.end - have) / 65536));
      const run = streamOne(c, region.start);
      live.set(region, run);
      try {
        return await run;
      } finally {
        live.delete(region);
      }
    };
    const streamOne = async (c: Candidate, at: number): Promise<Quantized> => {
      const { K, N } = c, b = bitsOf(c), kBlocks = K / block, blob = (block * b) / 8, cells = N * kBlocks;
      const t = c.w.tensor, d = t.data;
      const target = { codes: at, scales: at + align(cells * blob), zeroPoints: at + align(cells * blob) + align(cells * 4), kBlocks };
      const raw = d.kind === 'external' ? null : t.bytes();
      const base = { storedNK: c.storedNK, K, N, bits: b, blockSize: block, symmetric: sym, alpha: c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1, target, windows: 0, windowStride };
      const jobs: RtnUnitJob[] = planUnits(c.storedNK, K, N, block, unitBytes).map((u) => {
        const { start, length } = unitRange({ ...base, ...u });
        return { ...base, ...u, ...(d.kind === 'external' ? { file: d.ref.file, offset: d.ref.offset + start } : { offset: 0, bytes: raw!.subarray(start, start + length) }) };
      });
      const sums = pool ? await Promise.all(jobs.map((j) => pool.rtnUnit(j))) : jobs.map((j) => runRtnUnit(j, (kernel ??= bindKernel(memory())), 0));
      let se = 0, ss = 0;
      for (const e of sums) { se += e.se; ss += e.ss; }
      const buf = memory().buffer;
      const q: QuantizedWeight = {
        K, N, bits: b, blockSize: block, kBlocks, symmetric: sym, codes: new Uint8Array(0),
        scales: new Float32Array(buf, target.scales, cells).slice(), zeroPoints: sym ? undefined : new Uint8Array(buf, target.zeroPoints, cells).slice(),
      };
      return { q, packed: new Uint8Array(buf, target.codes, cells * blob).slice(), relError: ss === 0 ? Math.sqrt(se) : Math.sqrt(se / ss) };
    };
    /**
     * Other weights (methods other than rtn, float16 weights, shapes the kernel leaves) in column
     * slices (output columns are independent: blocks run along K), so at most one slice of fp32 is in
     * memory per weight in flight; the codes land in one QuantizedWeight. GPTQ makes its Hessian
     * factors once per weight and, when it validates, reads the slices twice: once to score its
     * candidates on held-out rows over the whole weight, once to apply the winner.
     */
    const eachSlice = async (c: Candidate, f: (w: Float32Array, n0: number, ns: number) => Promise<void>): Promise<void> => {
      const alpha = c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1;
      const step = sliceCols(c);
      for (let n0 = 0; n0 < c.N; n0 += step) {
        const n1 = Math.min(c.N, n0 + step);
        const w = readSlice(c, n0, n1);
        if (alpha !== 1) for (let i = 0; i < w.length; i++) w[i] = Math.fround(w[i]! * alpha);
        await f(w, n0, n1 - n0);
      }
    };
    const gptqStep = async <T extends GptqStepResult>(s: GptqStep): Promise<T> => (pool ? pool.gptq(s) : runGptqStep(s)) as Promise<T>;
    const quantizeWeight = async (c: Candidate, m: QuantMethod, calib: CalibrationData | undefined): Promise<Quantized> => {
      if (streams(c, m)) return streamWeight(c);
      const { K, N } = c;
      const p = params(bitsOf(c));
      let plan: GptqPlan | undefined;
      if (m === gptq) {
        plan = await gptqStep<GptqPlan>({ op: 'plan', calib: calib!, K });
        if (plan.held) {
          const errs = [0, 1, 2].map(() => new Float64Array(N));
          await eachSlice(c, async (w, n0, ns) => {
            const e = await gptqStep<Float64Array[]>({ op: 'scores', w, K, N: ns, params: p, plan: plan! });
            e.forEach((x, i) => errs[i]!.set(x, n0));
          });
          plan = await gptqStep<GptqPlan>({ op: 'choose', plan, errs, calib: calib! });
        }
      }
      let full: QuantizedWeight | null = null;
      let se = 0, ss = 0;
      await eachSlice(c, async (w, n0, ns) => {
        const q = plan ? await gptqStep<QuantizedWeight>({ op: 'apply', w: w.slice(), K, N: ns, params: p, plan })
          : pool ? await pool.quantize({ method: m.name, w: w.slice(), K, N: ns, params: p, calib }) : m.quantize(w, K, ns, p, calib);
        const e = errorSums(w, q);
        se += e.se;
        ss += e.ss;
        if (ns === N) { full = q; return; }
        full ??= { K, N, bits: q.bits, blockSize: q.blockSize, kBlocks: q.kBlocks, symmetric: q.symmetric, codes: new Uint8Array(N * q.kBlocks * q.blockSize), scales: new Float32Array(N * q.kBlocks), zeroPoints: q.zeroPoints ? new Uint8Array(N * q.kBlocks) : undefined };
        full.codes.set(q.codes, n0 * q.kBlocks * q.blockSize);
        full.scales.set(q.scales, n0 * q.kBlocks);
        if (q.zeroPoints) full.zeroPoints!.set(q.zeroPoints, n0 * q.kBlocks);
      });
      return { q: full!, relError: ss === 0 ? Math.sqrt(se) : Math.sqrt(se / ss) };
    };
    let emitted = 0;
    const emit = (c: Candidate, { q, packed, relError }: Quantized, first: boolean): void => {
      // Emitted initializers differ by consumer kind even when the codes are shared.
      const key = `${keyOf(c)}|${c.kind === 'gather' ? 'gather' : 'matmul'}`;
      const actType = c.kind === 'gather' ? floatTypeOf(c.w.value, DataType.FLOAT) : floatTypeOf(c.node.input(0), floatTypeOf(c.w.value, DataType.FLOAT));
      const wantF16 = o.scales === 'fp16' || (o.scales === 'auto' && actType === DataType.FLOAT16);
      if (first && wantF16) roundScalesToF16(q);
      const scaleType = o.scales === 'fp32' ? DataType.FLOAT : wantF16 && (format === 'qdq' || actType === DataType.FLOAT16) ? DataType.FLOAT16 : actType;
      // A weight shared by several nodes is packed once; later nodes reuse its initializers.
      const layer: LayerReport = {
        node: c.node.name, weight: c.w.value.name, kind: c.kind === 'gather' ? 'embedding' : c.lmHead ? 'lm_head' : 'linear',
        shape: [c.K, c.N], bits: bitsOf(c), block, symmetric: sym, format: c.kind === 'gather' ? 'GatherBlockQuantized' : format === 'qdq' ? 'DequantizeLinear' : 'MatMulNBits',
        relError, bytesBefore: first ? c.w.tensor.byteLength : 0, bytesAfter: 0,
      };
      const g = c.node.graph;
      const weightValue = c.w.value, transposer = c.w.transposedByNode;
      if (c.kind === 'gather') {
        layer.bytesAfter = emitGather(g, c, q, packed, actType, cache, key, o.embed_form as GatherForm);
        if (o.embed_form === 'uint8' && !sym && q.bits === 4 && q.kBlocks % 2) stats.notes!.push(`${c.node.name}: odd block count ${q.kBlocks} with packed 4-bit zero points runs on the CPU EP but not on WebGPU (it reads them as pairs)`);
      } else if (format === 'matmulnbits') {
        const made = emitMatMulNBits(model, c, q, packed, actType, o.accuracy_level as number, cache, key);
        layer.bytesAfter = made.bytes;
        layer.node = made.node.name;
        if (c.tiedGather) {
          const tg = c.tiedGather;
          const gl = emitTiedGather(tg, made.B, q, actType);
          stats.layers.push(layer);
          stats.layers.push({ ...layer, node: gl.node, weight: tg.w.value.name, kind: 'embedding', shape: [tg.K, tg.N], format: 'GatherBlockQuantized', bytesBefore: tg.w.tensor.byteLength, bytesAfter: gl.bytes, sharedWith: made.B.name });
          stats.counts.tied!++;
          stats.counts.gather!++;
          dropIfUnused(tg.w.value);
        }
      } else {
        const made = emitQdqMatMul(c, q, packed, scaleType, actType, cache, key);
        layer.bytesAfter = made.bytes;
        layer.node = made.node.name;
      }
      stats.counts[c.kind]!++;
      if (!c.tiedGather) stats.layers.push(layer);
      if (transposer) removeDeadNode(transposer);
      dropIfUnused(weightValue);
      ctx.progress?.('quantize', ++emitted, todo.length, c.w.value.name);
    };

    // In candidate order; with a pool, up to `threads` weights are in flight and emitted in order,
    // so the output does not depend on the thread count. A shared weight is quantized once.
    const inFlight: { c: Candidate; q: Promise<Quantized>; first: boolean }[] = [];
    const fallbacks: string[] = [];
    const jobs = new Map<string, Promise<Quantized>>();
    const left = new Map<string, number>();
    const todo = cands.filter((c) => !c.tiedTo);
    for (const c of todo) left.set(keyOf(c), (left.get(keyOf(c)) ?? 0) + 1);
    const flush = async (keep: number) => {
      while (inFlight.length > keep) {
        const j = inFlight.shift()!;
        emit(j.c, await j.q, j.first);
        const key = keyOf(j.c);
        left.set(key, left.get(key)! - 1);
        if (!left.get(key)) jobs.delete(key);
      }
    };
    try {
      for (const c of todo) {
        if (c.kind === 'gather' && c.K % block !== 0) { skip(`${c.node.name || 'Gather'}: embedding width ${c.K} is not a multiple of block ${block} (GatherBlockQuantized needs whole blocks)`); continue; }
        const actIn = c.kind === 'gather' ? c.w.value : c.node.input(0);
        if (floatTypeOf(actIn, DataType.FLOAT) === DataType.BFLOAT16) { skip(`${c.node.name}: bfloat16 activations are not handled`); continue; }
        const key = keyOf(c);
        let q = jobs.get(key);
        const first = !q;
        if (!q) {
          const calib = calibration?.(c.w.value.name, c.node);
          // Weights no calibration run reached (embeddings, Gemm) fall back to round-to-nearest.
          const m = method.needsCalibration && !calib ? getMethod('rtn') : method;
          if (m !== method) fallbacks.push(c.w.value.name);
          q = quantizeWeight(c, m, calib);
          // Without a pool the weight is done before the next one is read.
          if (!pool) await q;
          jobs.set(key, q);
        }
        inFlight.push({ c, q, first });
        await flush(pool ? threads : 0);
      }
      await flush(0);
    } finally {
      await pool?.close();
    }
    if (fallbacks.length) stats.notes!.push(`${fallbacks.length} weight(s) without calibration activations quantized with rtn: ${fallbacks.slice(0, 6).join(', ')}${fallbacks.length > 6 ? ', ...' : ''}`);
    if (format === 'matmulnbits' || stats.counts.gather) model.requireOpset(MS_DOMAIN, 1);
    if (format === 'qdq' && model.irVersion < 10) model.irVersion = 10;
    return stats;
  },
};

function bytesOf(vals: Value[] | undefined): number {
  return (vals ?? []).reduce((s, v) => s + (v.initializer?.byteLength ?? 0), 0);
}

/** Classify a node; records why it is left alone when it looks like a candidate but is not one. */
function candidate(n: Node, embeddings: boolean, nonConst: string[], skip: (why: string) => void): Candidate | null {
  if (n.domain !== '' && n.domain !== 'ai.onnx') return null;
  const label = n.name || n.opType;
  if (n.opType === 'MatMul' || n.opType === 'Gemm') {
    const w = constWeight(n.input(1));
    if (!w) { nonConst.push(label); return null; }
    const dims = w.tensor.dims;
    if (dims.length !== 2) { skip(`${label}: weight '${w.value.name}' has rank ${dims.length}, only 2-D weights are quantized`); return null; }
    if (!isFloatDtype(w.tensor.dtype)) { skip(`${label}: weight '${w.value.name}' is ${dtypeName(w.tensor.dtype)}, not a float type`); return null; }
    let storedNK = !!w.transposedByNode;
    if (n.opType === 'Gemm') {
      if (n.attrInt('transA', 0) !== 0) { skip(`${label}: Gemm with transA=1 is left as it is`); return null; }
      if (n.attrInt('transB', 0) === 1) storedNK = !storedNK;
      const C = n.input(2);
      if (C && !C.initializer && n.attrFloat('beta', 1) !== 1) { skip(`${label}: Gemm with a non-constant C and beta != 1`); return null; }
    }
    const [K, N] = storedNK ? [dims[1]!, dims[0]!] : [dims[0]!, dims[1]!];
    if (n.input(0)?.shape?.length === 1) { skip(`${label}: 1-D activation (MatMulNBits needs [..., K])`); return null; }
    const aK = n.input(0)?.shape?.at(-1);
    if (typeof aK === 'number' && aK !== K) { skip(`${label}: activation width ${aK} does not match weight K ${K}`); return null; }
    return { node: n, kind: n.opType === 'MatMul' ? 'matmul' : 'gemm', w, storedNK, K, N, lmHead: false };
  }
  if (n.opType === 'Gather' && embeddings) {
    const t = n.input(0)?.initializer;
    if (!t || t.dims.length !== 2 || !isFloatDtype(t.dtype)) return null;
    if (n.attrInt('axis', 0) !== 0) { skip(`${label}: Gather on axis ${n.attrInt('axis', 0)} is not an embedding lookup`); return null; }
    // Token embeddings are indexed by a fed id tensor; rotary caches and position tables are not weights to quantize.
    const ids = n.input(1);
    if (!ids?.isGraphInput || POSITIONAL.test(ids.name) || POSITIONAL.test(n.input(0)!.name)) return null;
    return { node: n, kind: 'gather', w: { value: n.input(0)!, tensor: t, transposedByNode: null }, storedNK: true, K: t.dims[1]!, N: t.dims[0]!, lmHead: false };
  }
  return null;
}

const graphIds = new WeakMap<Graph, number>();
let nextGraphId = 0;
function graphId(g: Graph): number {
  let id = graphIds.get(g);
  if (id === undefined) graphIds.set(g, (id = nextGraphId++));
  return id;
}

function biasValues(c: Candidate): Float32Array | null {
  if (c.kind !== 'gemm') return null;
  const C = c.node.input(2);
  if (!C?.initializer) return null;
  const t = C.initializer;
  if (t.size !== c.N || (t.dims.length > 1 && t.dims.at(-1) !== c.N)) return null;
  const beta = c.node.attrFloat('beta', 1);
  return Float32Array.from(t.toFloat32(), (v) => Math.fround(v * beta));
}

/** Gemm's C when it cannot be a bias vector: added after the product (beta folded into a constant). */
function gemmAddend(c: Candidate): Value | null {
  if (c.kind !== 'gemm' || !c.node.input(2) || biasValues(c)) return null;
  const C = c.node.input(2)!;
  const beta = c.node.attrFloat('beta', 1);
  if (beta === 1 || !C.initializer) return C;
  const t = C.initializer;
  return c.node.graph.addInitializer(Tensor.fromNumbers(`${C.name}_beta`, t.dtype, [...t.dims], Float32Array.from(t.toFloat32(), (v) => v * beta)));
}

function emitMatMulNBits(model: Model, c: Candidate, q: QuantizedWeight, packedB: Uint8Array | undefined, actType: DataType, acc: number, cache: Map<string, Value[]>, key: string) {
  const g = c.node.graph;
  let vals = cache.get(key);
  let bytes = 0;
  if (!vals) {
    const packed = packMatMulNBits(q, c.w.value.name, actType, packedB);
    const home = c.w.value.graph;
    vals = [home.addInitializer(packed.B), home.addInitializer(packed.scales)];
    if (packed.zeroPoints) vals.push(home.addInitializer(packed.zeroPoints));
    bytes = bytesOf(vals);
    cache.set(key, vals);
  }
  const [B, S, Z] = vals as [Value, Value, Value | undefined];
  const bias = biasValues(c);
  const biasV = bias ? g.addInitializer(floatTensor(`${c.node.input(2)!.name}_bias`, [c.N], bias, actType)) : null;
  if (biasV) bytes += biasV.initializer!.byteLength;
  const attrs: Record<string, number> = { K: q.K, N: q.N, bits: q.bits, block_size: q.blockSize };
  if (acc) attrs.accuracy_level = acc;
  const addend = gemmAddend(c);
  const Y = c.node.outputs[0]!;
  const name = `${c.node.name || c.node.opType}_Q${q.bits}`;
  const mid = addend ? g.createValue(`${name}_output`, { elemType: actType }) : Y;
  const specs = [{ opType: 'MatMulNBits', domain: MS_DOMAIN, name, inputs: [c.node.input(0), B, S, Z ?? null, null, biasV], outputs: [mid], attrs }];
  if (addend) specs.push({ opType: 'Add', domain: '', name: `${name}_bias`, inputs: [mid, addend], outputs: [Y], attrs: {} });
  const [node] = g.replaceNode(c.node, specs);
  model.requireOpset(MS_DOMAIN, 1);
  return { node: node!, B, bytes };
}

function emitQdqMatMul(c: Candidate, q: QuantizedWeight, packedB: Uint8Array | undefined, scaleType: DataType, actType: DataType, cache: Map<string, Value[]>, weightKey: string) {
  const g = c.node.graph;
  // The DequantizeLinear output is visible in its own graph only: one per consuming graph.
  const key = `${weightKey}|${graphId(g)}`;
  let inits = cache.get(weightKey);
  let bytes = 0;
  if (!inits) {
    const p = packQdq(q, c.w.value.name, scaleType, packedB);
    const home = c.w.value.graph;
    inits = [home.addInitializer(p.x), home.addInitializer(p.scale), ...(p.zeroPoint ? [home.addInitializer(p.zeroPoint)] : [])];
    bytes = bytesOf(inits);
    cache.set(weightKey, inits);
  }
  let vals = cache.get(key);
  if (!vals) {
    const base = c.w.value.name;
    const dq = g.addNode({ opType: 'DequantizeLinear', name: `${base}_DequantizeLinear`, inputs: [inits[0]!, inits[1]!, inits[2] ?? null], outputs: [`${base}_DQ`], attrs: { axis: 0, block_size: q.blockSize } }, c.node);
    let wv = dq.outputs[0]!;
    wv.type = { elemType: scaleType, shape: [q.K, q.N] };
    if (scaleType !== actType) {
      const cast = g.addNode({ opType: 'Cast', name: `${base}_DQ_Cast`, inputs: [wv], outputs: [`${base}_DQ_cast`], attrs: { to: actType } }, c.node);
      wv = cast.outputs[0]!;
      wv.type = { elemType: actType, shape: [q.K, q.N] };
    }
    vals = [wv];
    cache.set(key, vals);
  }
  const W = vals[0]!;
  if (c.kind === 'matmul') {
    c.node.setInput(1, W);
    return { node: c.node, bytes };
  }
  const bias = biasValues(c);
  const addend = bias ? g.addInitializer(floatTensor(`${c.node.input(2)!.name}_bias`, [c.N], bias, actType)) : gemmAddend(c);
  if (bias) bytes += addend!.initializer!.byteLength;
  const Y = c.node.outputs[0]!;
  const name = c.node.name || 'Gemm';
  const mid = addend ? g.createValue(`${name}_matmul`, { elemType: actType }) : Y;
  const specs = [{ opType: 'MatMul', domain: '', name: `${name}_MatMul`, inputs: [c.node.input(0), W], outputs: [mid], attrs: {} }];
  if (addend) specs.push({ opType: 'Add', domain: '', name: `${name}_bias`, inputs: [mid, addend], outputs: [Y], attrs: {} });
  const [node] = g.replaceNode(c.node, specs);
  return { node: node!, bytes };
}

/**
 * GatherBlockQuantized initializers from streamed MatMulNBits-layout bytes, as packGatherBlockQuantized
 * makes them from codes: the 'int4' form's signed nibbles are code - 8, i.e. code ^ 8.
 */
function gatherFromPacked(q: QuantizedWeight, packed: Uint8Array, base: string, actType: DataType, form: GatherForm): { data: Tensor; scales: Tensor; zeroPoints?: Tensor } {
  const { K: H, N: V, kBlocks, bits } = q;
  const scales = floatTensor(`${base}_scales`, [V, kBlocks], q.scales, actType);
  if (form === 'int4' && bits === 4) {
    let data = packed;
    if (q.symmetric) {
      data = new Uint8Array(packed.length);
      const s = new Uint32Array(packed.buffer, packed.byteOffset, packed.length >> 2), d = new Uint32Array(data.buffer);
      for (let i = 0; i < s.length; i++) d[i] = s[i]! ^ 0x88888888;
    }
    const out = { data: Tensor.fromBytes(`${base}_Q4`, q.symmetric ? DataType.INT4 : DataType.UINT4, [V, H], data), scales };
    return q.symmetric ? out : { ...out, zeroPoints: Tensor.fromBytes(`${base}_zero_points`, DataType.UINT4, [V, kBlocks], packInt4(q.zeroPoints!)) };
  }
  const out = { data: Tensor.fromBytes(`${base}_Q${bits}`, DataType.UINT8, [V, (H * bits) / 8], packed), scales };
  if (q.symmetric) return out;
  return { ...out, zeroPoints: Tensor.fromBytes(`${base}_zero_points`, DataType.UINT8, [V, zeroPointRowBytes(kBlocks, bits)], packZeroPoints(q.zeroPoints!, V, kBlocks, bits)) };
}

function emitGather(g: Graph, c: Candidate, q: QuantizedWeight, packed: Uint8Array | undefined, actType: DataType, cache: Map<string, Value[]>, key: string, form: GatherForm): number {
  let vals = cache.get(key);
  let bytes = 0;
  if (!vals) {
    const p = packed ? gatherFromPacked(q, packed, c.w.value.name, actType, form) : packGatherBlockQuantized(q, c.w.value.name, actType, form);
    const home = c.w.value.graph;
    vals = [home.addInitializer(p.data), home.addInitializer(p.scales), ...(p.zeroPoints ? [home.addInitializer(p.zeroPoints)] : [])];
    bytes = bytesOf(vals);
    cache.set(key, vals);
  }
  g.replaceNode(c.node, [{
    opType: 'GatherBlockQuantized', domain: MS_DOMAIN, name: `${c.node.name || 'Gather'}_Q${q.bits}`,
    inputs: [vals[0]!, c.node.input(1), vals[1]!, vals[2] ?? null], outputs: [c.node.outputs[0]!],
    attrs: { bits: q.bits, block_size: q.blockSize, gather_axis: 0, quantize_axis: 1 },
  }]);
  return bytes;
}

/**
 * The embedding reads the lm_head's MatMulNBits B [V, k_blocks, blob] as uint8 data with
 * quantize_axis=2 (one block per innermost row), then reshapes [..., k_blocks, block] to [..., H].
 */
function emitTiedGather(c: Candidate, B: Value, q: QuantizedWeight, actType: DataType): { node: string; bytes: number } {
  const g = c.node.graph;
  const { kBlocks, N: V } = q;
  const base = c.w.value.name;
  const scales = g.addInitializer(floatTensor(`${base}_gbq_scales`, [V, kBlocks, 1], q.scales, actType));
  const vals = [scales];
  const idxRank = c.node.input(1)!.shape!.length;
  const shape = g.addInitializer(Tensor.fromInt64(`${base}_gbq_shape`, [idxRank + 1], [...new Array(idxRank).fill(0), q.K]));
  vals.push(shape);
  const name = `${c.node.name || 'Gather'}_Q${q.bits}`;
  const Y = c.node.outputs[0]!;
  const mid = g.createValue(`${name}_blocks`, { elemType: actType });
  const [node] = g.replaceNode(c.node, [
    { opType: 'GatherBlockQuantized', domain: MS_DOMAIN, name, inputs: [B, c.node.input(1), scales], outputs: [mid], attrs: { bits: q.bits, block_size: q.blockSize, gather_axis: 0, quantize_axis: 2 } },
    { opType: 'Reshape', domain: '', name: `${name}_reshape`, inputs: [mid, shape], outputs: [Y], attrs: {} },
  ]);
  return { node: node!.name, bytes: bytesOf(vals) };
}
