// The quantize pass's output side: each quantized weight becomes MatMulNBits, DequantizeLinear-21 +
// MatMul, or GatherBlockQuantized (a tied embedding reads the lm_head's packed B), with a layer
// report; a weight shared by several nodes is packed once and its initializers reused.
import { DataType, Graph, Model, Tensor, Value, f16ToF32, f32ToF16, packInt4, readRange, type ExternalRef } from '../../ir/index.js';
import type { Candidate } from './candidates.js';
import { packGatherBlockQuantized, type GatherForm } from './gather.js';
import { dropIfUnused, floatTypeOf, removeDeadNode } from './graph-util.js';
import { MS_DOMAIN, floatTensor, packMatMulNBits, packZeroPoints, zeroPointRowBytes } from './matmulnbits.js';
import { packQdq } from './qdq.js';
import type { LayerReport } from './report.js';
import { weightKey, type QuantSettings } from './settings.js';
import type { Quantized, QuantizedWeight } from './types.js';

/** What emitting reports into the pass statistics. */
export interface EmitStats {
  counts: Record<string, number>;
  notes?: string[];
  layers: LayerReport[];
}

export class WeightEmitter {
  /** Initializers made per weight key (and per consuming graph for QDQ's DequantizeLinear). */
  private readonly cache = new Map<string, Value[]>();

  constructor(
    private readonly model: Model,
    private readonly s: QuantSettings,
    private readonly stats: EmitStats,
  ) {}

  /** Whether `c`'s streamed codes and fp32 scales can stay in the spill file (MatMulNBits, fp32 scales). */
  takesSpilled(c: Candidate): boolean {
    return (
      this.s.format === 'matmulnbits' && c.kind !== 'gather' && !c.tiedGather && this.s.scales !== 'fp16' && actTypeOf(c) === DataType.FLOAT
    );
  }

  /** Replace `c`'s node by its quantized form; `first` when this is the weight's first consumer. */
  emit(c: Candidate, quantized: Quantized, first: boolean): void {
    const { s, stats } = this;
    const { q, packed, relError, spilled } = quantized.spilled && !this.takesSpilled(c) ? unspill(quantized) : quantized;
    // Emitted initializers differ by consumer kind even when the codes are shared.
    const key = `${weightKey(c, s)}|${c.kind === 'gather' ? 'gather' : 'matmul'}`;
    const actType = actTypeOf(c);
    const wantF16 = s.scales === 'fp16' || (s.scales === 'auto' && actType === DataType.FLOAT16);
    if (first && wantF16) roundScalesToF16(q);
    const scaleType =
      s.scales === 'fp32' ? DataType.FLOAT : wantF16 && (s.format === 'qdq' || actType === DataType.FLOAT16) ? DataType.FLOAT16 : actType;
    // A weight shared by several nodes is packed once; later nodes reuse its initializers.
    const layer: LayerReport = {
      node: c.node.name,
      weight: c.w.value.name,
      kind: c.kind === 'gather' ? 'embedding' : c.lmHead ? 'lm_head' : 'linear',
      shape: [c.K, c.N],
      bits: s.bitsOf(c),
      block: s.blockOf(c),
      symmetric: s.sym,
      format: c.kind === 'gather' ? 'GatherBlockQuantized' : s.format === 'qdq' ? 'DequantizeLinear' : 'MatMulNBits',
      relError,
      bytesBefore: first ? c.w.tensor.byteLength : 0,
      bytesAfter: 0,
    };
    const g = c.node.graph;
    const weightValue = c.w.value,
      transposer = c.w.transposedByNode;
    if (c.kind === 'gather') {
      layer.bytesAfter = emitGather(g, c, q, packed, actType, this.cache, key, s.embedForm);
      if (s.embedForm === 'uint8' && !s.sym && q.bits === 4 && q.kBlocks % 2)
        stats.notes!.push(
          `${c.node.name}: odd block count ${q.kBlocks} with packed 4-bit zero points runs on the CPU EP but not on WebGPU (it reads them as pairs)`,
        );
    } else if (s.format === 'matmulnbits') {
      const made = emitMatMulNBits(this.model, c, q, spilled ?? packed, actType, s.accuracyLevel, this.cache, key);
      layer.bytesAfter = made.bytes;
      layer.node = made.node.name;
      if (c.tiedGather) this.emitTied(c.tiedGather, layer, made.B, q, actType);
    } else {
      const made = emitQdqMatMul(c, q, packed, scaleType, actType, this.cache, key);
      layer.bytesAfter = made.bytes;
      layer.node = made.node.name;
    }
    stats.counts[c.kind]!++;
    if (!c.tiedGather) stats.layers.push(layer);
    if (transposer) removeDeadNode(transposer);
    dropIfUnused(weightValue);
  }

  private emitTied(tg: Candidate, layer: LayerReport, B: Value, q: QuantizedWeight, actType: DataType): void {
    const { stats } = this;
    const gl = emitTiedGather(tg, B, q, actType);
    stats.layers.push(layer);
    stats.layers.push({
      ...layer,
      node: gl.node,
      weight: tg.w.value.name,
      kind: 'embedding',
      shape: [tg.K, tg.N],
      format: 'GatherBlockQuantized',
      bytesBefore: tg.w.tensor.byteLength,
      bytesAfter: gl.bytes,
      sharedWith: B.name,
    });
    stats.counts.tied!++;
    stats.counts.gather!++;
    dropIfUnused(tg.w.value);
  }
}

function actTypeOf(c: Candidate): DataType {
  return c.kind === 'gather'
    ? floatTypeOf(c.w.value, DataType.FLOAT)
    : floatTypeOf(c.node.input(0), floatTypeOf(c.w.value, DataType.FLOAT));
}

/** Spilled outputs read back into memory, for the forms that repack or convert them. */
function unspill({ q, spilled, relError }: Quantized): Quantized {
  const read = (r: ExternalRef) => readRange(r.file, r.offset, r.length);
  const sc = read(spilled!.scales);
  const scales = new Float32Array(sc.length >> 2);
  new Uint8Array(scales.buffer).set(sc);
  return { q: { ...q, scales }, packed: read(spilled!.packed), relError };
}

function roundScalesToF16(q: QuantizedWeight): void {
  for (let i = 0; i < q.scales.length; i++) q.scales[i] = f16ToF32(f32ToF16(q.scales[i]!));
}

function bytesOf(vals: Value[] | undefined): number {
  return (vals ?? []).reduce((s, v) => s + (v.initializer?.byteLength ?? 0), 0);
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
  return c.node.graph.addInitializer(
    Tensor.fromNumbers(
      `${C.name}_beta`,
      t.dtype,
      [...t.dims],
      Float32Array.from(t.toFloat32(), (v) => v * beta),
    ),
  );
}

function emitMatMulNBits(
  model: Model,
  c: Candidate,
  q: QuantizedWeight,
  packedB: Uint8Array | { packed: ExternalRef; scales: ExternalRef } | undefined,
  actType: DataType,
  acc: number,
  cache: Map<string, Value[]>,
  key: string,
) {
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
  const specs = [
    { opType: 'MatMulNBits', domain: MS_DOMAIN, name, inputs: [c.node.input(0), B, S, Z ?? null, null, biasV], outputs: [mid], attrs },
  ];
  if (addend) specs.push({ opType: 'Add', domain: '', name: `${name}_bias`, inputs: [mid, addend], outputs: [Y], attrs: {} });
  const [node] = g.replaceNode(c.node, specs);
  model.requireOpset(MS_DOMAIN, 1);
  return { node: node!, B, bytes };
}

function emitQdqMatMul(
  c: Candidate,
  q: QuantizedWeight,
  packedB: Uint8Array | undefined,
  scaleType: DataType,
  actType: DataType,
  cache: Map<string, Value[]>,
  weightKey: string,
) {
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
    const dq = g.addNode(
      {
        opType: 'DequantizeLinear',
        name: `${base}_DequantizeLinear`,
        inputs: [inits[0]!, inits[1]!, inits[2] ?? null],
        outputs: [`${base}_DQ`],
        attrs: { axis: 0, block_size: q.blockSize },
      },
      c.node,
    );
    let wv = dq.outputs[0]!;
    wv.type = { elemType: scaleType, shape: [q.K, q.N] };
    if (scaleType !== actType) {
      const cast = g.addNode(
        { opType: 'Cast', name: `${base}_DQ_Cast`, inputs: [wv], outputs: [`${base}_DQ_cast`], attrs: { to: actType } },
        c.node,
      );
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
function gatherFromPacked(
  q: QuantizedWeight,
  packed: Uint8Array,
  base: string,
  actType: DataType,
  form: GatherForm,
): { data: Tensor; scales: Tensor; zeroPoints?: Tensor } {
  const { K: H, N: V, kBlocks, bits } = q;
  const scales = floatTensor(`${base}_scales`, [V, kBlocks], q.scales, actType);
  if (form === 'int4' && bits === 4) {
    let data = packed;
    if (q.symmetric) {
      data = new Uint8Array(packed.length);
      const s = new Uint32Array(packed.buffer, packed.byteOffset, packed.length >> 2),
        d = new Uint32Array(data.buffer);
      for (let i = 0; i < s.length; i++) d[i] = s[i]! ^ 0x88888888;
    }
    const out = { data: Tensor.fromBytes(`${base}_Q4`, q.symmetric ? DataType.INT4 : DataType.UINT4, [V, H], data), scales };
    return q.symmetric
      ? out
      : { ...out, zeroPoints: Tensor.fromBytes(`${base}_zero_points`, DataType.UINT4, [V, kBlocks], packInt4(q.zeroPoints!)) };
  }
  const out = { data: Tensor.fromBytes(`${base}_Q${bits}`, DataType.UINT8, [V, (H * bits) / 8], packed), scales };
  if (q.symmetric) return out;
  return {
    ...out,
    zeroPoints: Tensor.fromBytes(
      `${base}_zero_points`,
      DataType.UINT8,
      [V, zeroPointRowBytes(kBlocks, bits)],
      packZeroPoints(q.zeroPoints!, V, kBlocks, bits),
    ),
  };
}

function emitGather(
  g: Graph,
  c: Candidate,
  q: QuantizedWeight,
  packed: Uint8Array | undefined,
  actType: DataType,
  cache: Map<string, Value[]>,
  key: string,
  form: GatherForm,
): number {
  let vals = cache.get(key);
  let bytes = 0;
  if (!vals) {
    const p = packed
      ? gatherFromPacked(q, packed, c.w.value.name, actType, form)
      : packGatherBlockQuantized(q, c.w.value.name, actType, form);
    const home = c.w.value.graph;
    vals = [home.addInitializer(p.data), home.addInitializer(p.scales), ...(p.zeroPoints ? [home.addInitializer(p.zeroPoints)] : [])];
    bytes = bytesOf(vals);
    cache.set(key, vals);
  }
  g.replaceNode(c.node, [
    {
      opType: 'GatherBlockQuantized',
      domain: MS_DOMAIN,
      name: `${c.node.name || 'Gather'}_Q${q.bits}`,
      inputs: [vals[0]!, c.node.input(1), vals[1]!, vals[2] ?? null],
      outputs: [c.node.outputs[0]!],
      attrs: { bits: q.bits, block_size: q.blockSize, gather_axis: 0, quantize_axis: 1 },
    },
  ]);
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
    {
      opType: 'GatherBlockQuantized',
      domain: MS_DOMAIN,
      name,
      inputs: [B, c.node.input(1), scales],
      outputs: [mid],
      attrs: { bits: q.bits, block_size: q.blockSize, gather_axis: 0, quantize_axis: 2 },
    },
    { opType: 'Reshape', domain: '', name: `${name}_reshape`, inputs: [mid, shape], outputs: [Y], attrs: {} },
  ]);
  return { node: node!.name, bytes: bytesOf(vals) };
}
