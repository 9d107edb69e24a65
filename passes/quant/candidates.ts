// Which weights the quantize pass takes: MatMul/Gemm with a constant 2-D float weight (or a
// Transpose of one), Gather embeddings indexed by fed ids, the lm_head and a tied embedding; and how
// a weight is read: column slices of the logical [K, N], streamed from external data.
import { DataType, Model, Node, Tensor, Value, bf16ToF32, dtypeName, f16ToF32, readRange } from '../../ir/index.js';
import type { Role } from '../../ir/summary.js';
import { matchesAny } from './graph-util.js';

/** A constant 2-D weight as a consumer sees it: an initializer, or Transpose(perm 1,0) of one. */
export interface ConstWeight {
  value: Value;
  tensor: Tensor;
  /** The initializer holds the weight transposed relative to what the consumer multiplies by. */
  transposedByNode: Node | null;
}

export function constWeight(v: Value | null): ConstWeight | null {
  if (!v) return null;
  if (v.initializer) return { value: v, tensor: v.initializer, transposedByNode: null };
  const p = v.producer;
  if (p && p.opType === 'Transpose' && (p.domain === '' || p.domain === 'ai.onnx')) {
    const src = p.input(0);
    const perm = p.attrInts('perm', [1, 0]);
    if (src?.initializer && src.initializer.dims.length === 2 && perm[0] === 1 && perm[1] === 0)
      return { value: src, tensor: src.initializer, transposedByNode: p };
  }
  return null;
}

export interface Candidate {
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
  if (dtype === DataType.FLOAT) {
    new Uint8Array(dst.buffer, dst.byteOffset, dst.length * 4).set(bytes);
    return;
  }
  const conv = dtype === DataType.FLOAT16 ? f16ToF32 : bf16ToF32;
  for (let i = 0; i < dst.length; i++) dst[i] = conv(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
}

/**
 * Columns [n0, n1) of the float [K, N] weight, row-major [K, n1-n0]. The stored tensor is [K, N], or
 * [N, K] when storedNK. Read by byte range or in chunks (external data is streamed from its file,
 * never held whole) and decoded as it comes.
 */
export function readSlice(c: Candidate, n0: number, n1: number): Float32Array {
  const t = c.w.tensor,
    eb = t.dtype === DataType.FLOAT ? 4 : 2;
  const { K, N } = c;
  const ns = n1 - n0;
  const out = new Float32Array(K * ns);
  if (c.storedNK) {
    // Rows n0..n1 of [N, K] are contiguous; transpose them in 64-wide tiles.
    const d = t.data;
    const bytes =
      d.kind === 'external' ? readRange(d.ref.file, d.ref.offset + n0 * K * eb, ns * K * eb) : t.bytes().subarray(n0 * K * eb, n1 * K * eb);
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
  // Only the slice's columns of each row are decoded (decoding whole rows made reading a weight in S
  // slices cost S whole weights, on the thread that feeds the workers).
  const rowBytes = N * eb,
    rows = Math.max(1, Math.floor(CHUNK / rowBytes));
  t.forEachChunk(rows * rowBytes, (chunk, at) => {
    const r0 = at / rowBytes,
      nr = chunk.length / rowBytes;
    for (let r = 0; r < nr; r++)
      decodeFloats(t.dtype, chunk.subarray(r * rowBytes + n0 * eb, r * rowBytes + n1 * eb), out.subarray((r0 + r) * ns, (r0 + r + 1) * ns));
  });
  return out;
}

/** Output feeds a graph output directly or through shape-only ops, or the names say lm_head. */
export function looksLikeLmHead(n: Node, weightName: string): boolean {
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
  const t = c.w.tensor,
    i = c.storedNK ? n * c.K + k : k * c.N + n,
    d = t.data;
  const b = d.kind === 'external' ? readRange(d.ref.file, d.ref.offset + i * 4, 4) : t.bytes().subarray(i * 4, i * 4 + 4);
  return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
}

export function sameTransposed(a: Candidate, gather: Candidate, sliceMb: number): boolean {
  if (a.K !== gather.K || a.N !== gather.N) return false;
  if (a.w.value === gather.w.value) return a.storedNK === gather.storedNK;
  // Untied weights differ almost everywhere: a few sampled elements settle it without reading them.
  if (a.w.tensor.dtype === DataType.FLOAT && gather.w.tensor.dtype === DataType.FLOAT) {
    for (let s = 0; s < 16; s++) {
      const k = (s * 7919) % a.K,
        n = (s * 104729) % a.N;
      if (!Object.is(valueAt(a, k, n), valueAt(gather, k, n))) return false;
    }
  }
  const step = Math.max(1, Math.floor((sliceMb * 2 ** 20) / (a.K * 4)));
  for (let n0 = 0; n0 < a.N; n0 += step) {
    const x = readSlice(a, n0, Math.min(a.N, n0 + step)),
      y = readSlice(gather, n0, Math.min(a.N, n0 + step));
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/** Classify a node; records why it is left alone when it looks like a candidate but is not one. */
export function candidate(n: Node, embeddings: boolean, nonConst: string[], skip: (why: string) => void): Candidate | null {
  if (n.domain !== '' && n.domain !== 'ai.onnx') return null;
  const label = n.name || n.opType;
  if (n.opType === 'MatMul' || n.opType === 'Gemm') {
    const w = constWeight(n.input(1));
    if (!w) {
      nonConst.push(label);
      return null;
    }
    const dims = w.tensor.dims;
    if (dims.length !== 2) {
      skip(`${label}: weight '${w.value.name}' has rank ${dims.length}, only 2-D weights are quantized`);
      return null;
    }
    if (!isFloatDtype(w.tensor.dtype)) {
      skip(`${label}: weight '${w.value.name}' is ${dtypeName(w.tensor.dtype)}, not a float type`);
      return null;
    }
    let storedNK = !!w.transposedByNode;
    if (n.opType === 'Gemm') {
      if (n.attrInt('transA', 0) !== 0) {
        skip(`${label}: Gemm with transA=1 is left as it is`);
        return null;
      }
      if (n.attrInt('transB', 0) === 1) storedNK = !storedNK;
      const C = n.input(2);
      if (C && !C.initializer && n.attrFloat('beta', 1) !== 1) {
        skip(`${label}: Gemm with a non-constant C and beta != 1`);
        return null;
      }
    }
    const [K, N] = storedNK ? [dims[1]!, dims[0]!] : [dims[0]!, dims[1]!];
    if (n.input(0)?.shape?.length === 1) {
      skip(`${label}: 1-D activation (MatMulNBits needs [..., K])`);
      return null;
    }
    const aK = n.input(0)?.shape?.at(-1);
    if (typeof aK === 'number' && aK !== K) {
      skip(`${label}: activation width ${aK} does not match weight K ${K}`);
      return null;
    }
    return { node: n, kind: n.opType === 'MatMul' ? 'matmul' : 'gemm', w, storedNK, K, N, lmHead: false };
  }
  if (n.opType === 'Gather' && embeddings) {
    const t = n.input(0)?.initializer;
    if (!t || t.dims.length !== 2 || !isFloatDtype(t.dtype)) return null;
    if (n.attrInt('axis', 0) !== 0) {
      skip(`${label}: Gather on axis ${n.attrInt('axis', 0)} is not an embedding lookup`);
      return null;
    }
    // Token embeddings are indexed by a fed id tensor; rotary caches and position tables are not weights to quantize.
    const ids = n.input(1);
    if (!ids?.isGraphInput || POSITIONAL.test(ids.name) || POSITIONAL.test(n.input(0)!.name)) return null;
    return {
      node: n,
      kind: 'gather',
      w: { value: n.input(0)!, tensor: t, transposedByNode: null },
      storedNK: true,
      K: t.dims[1]!,
      N: t.dims[0]!,
      lmHead: false,
    };
  }
  return null;
}

export interface CandidateFilter {
  embeddings: boolean;
  include: readonly string[];
  exclude: readonly string[];
}

export interface Candidates {
  cands: Candidate[];
  /** Nodes left out by include/exclude. */
  excluded: number;
  /** MatMuls whose B is not constant (activation x activation). */
  nonConst: string[];
}

/** Every candidate of every graph, in graph order; `skip` records candidates left alone, and why. */
export function findCandidates(model: Model, f: CandidateFilter, skip: (why: string) => void): Candidates {
  const cands: Candidate[] = [];
  const nonConst: string[] = [];
  let excluded = 0;
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      const c = candidate(n, f.embeddings, nonConst, skip);
      if (!c) continue;
      if ((f.include.length && !matchesAny(f.include, n, c.w.value.name)) || matchesAny(f.exclude, n, c.w.value.name)) {
        excluded++;
        continue;
      }
      cands.push(c);
    }
  }
  return { cands, excluded, nonConst };
}

export interface TieSettings {
  role: Role;
  tie: boolean;
  format: 'matmulnbits' | 'qdq';
  embedBits: 4 | 8;
  lmBits: 4 | 8;
  sym: boolean;
  blockOf(c: Candidate): number;
  maxSliceMb: number;
}

/** Mark the lm_head, and tie it to the embedding it transposes: one quantized table when both use the same bits. */
export function markLmHeadAndTies(cands: Candidate[], s: TieSettings): void {
  const gathers = cands.filter((c) => c.kind === 'gather');
  for (const c of cands) {
    if (c.kind === 'gather') continue;
    c.lmHead = (s.role === 'decoder' || s.role === 'mllm' || s.role === 'unknown') && looksLikeLmHead(c.node, c.w.value.name);
    // Asymmetric tying is not offered: the shared 3-D form needs zero points shaped like its
    // [V, k_blocks, 1] scales, which onnxruntime's WebGPU kernel reads as 4-bit pairs and rejects.
    if (!c.lmHead || !s.tie || s.format !== 'matmulnbits' || s.embedBits !== s.lmBits || !s.sym) continue;
    const gq = gathers.find((gc) => !gc.tiedTo && sameTransposed(c, gc, s.maxSliceMb));
    if (gq && gq.K % s.blockOf(c) === 0 && gq.node.input(1)?.shape) {
      c.tiedGather = gq;
      gq.tiedTo = c;
    }
  }
}

/** Visit the weight in column slices [K, ns] of about `maxSliceMb` of fp32, Gemm's alpha folded in. */
export async function eachSlice(
  c: Candidate,
  maxSliceMb: number,
  f: (w: Float32Array, n0: number, ns: number) => Promise<void>,
): Promise<void> {
  const alpha = c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1;
  const step = Math.max(1, Math.floor((maxSliceMb * 2 ** 20) / (c.K * 4)));
  for (let n0 = 0; n0 < c.N; n0 += step) {
    const n1 = Math.min(c.N, n0 + step);
    const w = readSlice(c, n0, n1);
    if (alpha !== 1) for (let i = 0; i < w.length; i++) w[i] = Math.fround(w[i]! * alpha);
    await f(w, n0, n1 - n0);
  }
}
