// to-fp16: float32 compute and weights -> float16 (the "f16" of q4f16). Graph inputs and outputs keep
// float32 through Casts at the boundary. Ops that overflow or lose too much in fp16 (norms, Softmax,
// the Pow -> ReduceMean statistics of decomposed norms) and ops without fp16 in the schema stay fp32
// with Casts on the edges. Quantized weights follow their activations (MatMulNBits scales and bias,
// GatherBlockQuantized and DequantizeLinear scales become fp16).
// With measured activation ranges (PassContext.activationRanges, from runtime/fp16.ts on calibration
// or verification inputs), every node that reads or writes a value beyond `max_abs`, and every
// reduction whose sum can pass it, stays fp32 too: the block list alone misses a residual stream or
// a score matrix that leaves fp16's range in a given model.
import { AttrType, DataType, Graph, Model, Node, Tensor, Value, float32ToFloat16Array } from '../ir/index.js';
import { definePass, type PassContext, type PassStats } from './pass.js';
import { dropIfUnused, matchesAny } from './quant/graph-util.js';

const NORMS = [
  'LayerNormalization',
  'SimplifiedLayerNormalization',
  'SkipLayerNormalization',
  'SkipSimplifiedLayerNormalization',
  'RMSNormalization',
  'GroupNormalization',
  'InstanceNormalization',
  'BatchNormalization',
  'Softmax',
  'LogSoftmax',
];
/** No float16 in the ONNX schema, or no fp16 kernel on common EPs (the transformers.js fp16 blocklist). */
const NO_FP16 = [
  'Range',
  'RandomNormal',
  'RandomNormalLike',
  'RandomUniform',
  'RandomUniformLike',
  'Bernoulli',
  'Multinomial',
  'NonMaxSuppression',
  'TopK',
  'RoiAlign',
  'Resize',
  'Upsample',
  'CumSum',
  'EyeLike',
];
/** Inputs that must be float32 whatever the node computes in. */
const FP32_SLOTS: Record<string, number[]> = { Resize: [2], Upsample: [1] };
const F16_MAX = 65504;

type Prec = 'fp32' | 'fp16';

const isFloat32 = (t: DataType | undefined) => t === DataType.FLOAT;

function constTensorDtype(n: Node): DataType | undefined {
  const t = n.attrTensor('value');
  if (t) return t.dtype;
  if (n.hasAttr('value_float') || n.hasAttr('value_floats')) return DataType.FLOAT;
  return n.hasAttr('value_int') || n.hasAttr('value_ints') ? DataType.INT64 : undefined;
}

/** Element types of every value: declared where known, else propagated forward op by op. */
function elemTypes(g: Graph): Map<Value, DataType> {
  const T = new Map<Value, DataType>();
  for (const v of g.values.values()) {
    const t = v.type?.elemType ?? v.initializer?.dtype;
    if (t) T.set(v, t);
  }
  for (const n of g.nodes) {
    const ins = n.inputs.map((v) => (v ? (T.get(v) ?? v.type?.elemType ?? v.initializer?.dtype) : undefined));
    n.outputs.forEach((o, i) => {
      if (!o || T.has(o)) return;
      let t: DataType | undefined;
      switch (n.opType) {
        case 'Shape':
        case 'Size':
        case 'NonZero':
        case 'ArgMax':
        case 'ArgMin':
          t = DataType.INT64;
          break;
        case 'Equal':
        case 'Less':
        case 'LessOrEqual':
        case 'Greater':
        case 'GreaterOrEqual':
        case 'Not':
        case 'And':
        case 'Or':
        case 'Xor':
        case 'IsNaN':
        case 'IsInf':
          t = DataType.BOOL;
          break;
        case 'Cast':
          t = n.attrInt('to');
          break;
        case 'Constant':
          t = constTensorDtype(n);
          break;
        case 'ConstantOfShape':
          t = n.attrTensor('value')?.dtype ?? DataType.FLOAT;
          break;
        case 'TopK':
          t = i === 1 ? DataType.INT64 : ins[0];
          break;
        case 'DequantizeLinear':
        case 'MatMulNBits':
        case 'GatherBlockQuantized':
          t = ins[2 - (n.opType === 'DequantizeLinear' ? 1 : 0)];
          break;
        case 'Where':
          t = ins[1] ?? ins[2];
          break;
        case 'Gather':
        case 'GatherElements':
        case 'GatherND':
        case 'Expand':
        case 'Reshape':
        case 'Slice':
        case 'Squeeze':
        case 'Unsqueeze':
        case 'Transpose':
        case 'Tile':
        case 'Pad':
        case 'Identity':
        case 'Flatten':
          t = ins[0];
          break;
        default:
          t = ins.find((x) => x === DataType.FLOAT || x === DataType.FLOAT16) ?? ins.find((x) => x !== undefined);
      }
      if (t !== undefined) T.set(o, t);
    });
  }
  return T;
}

/** Pow(x, 2) -> ReduceMean/ReduceSum and what follows up to the normalizing Div/Mul (decomposed norms). */
function normChains(g: Graph): Set<Node> {
  const keep = new Set<Node>();
  for (const n of g.nodes) {
    if (n.opType !== 'ReduceMean' && n.opType !== 'ReduceSum') continue;
    const p = n.input(0)?.producer;
    const squares = p && (p.opType === 'Pow' || (p.opType === 'Mul' && p.input(0) === p.input(1)));
    if (!squares) continue;
    keep.add(p!);
    keep.add(n);
    let cur: Node | undefined = n;
    for (let hops = 0; cur && hops < 4; hops++) {
      const next: Node | undefined = cur.outputs[0]?.consumers.length === 1 ? cur.outputs[0]!.consumers[0] : undefined;
      if (!next || !['Add', 'Sqrt', 'Reciprocal', 'Div'].includes(next.opType)) break;
      keep.add(next);
      cur = next;
    }
  }
  return keep;
}

const REDUCTIONS = new Set(['ReduceMean', 'ReduceSum', 'ReduceSumSquare', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp']);

/** Elements one output element of a reduction sums (unknown dims count as the whole last axis). */
function reducedCount(n: Node): number {
  const shape = n.input(0)?.shape;
  if (!shape) return 1;
  let axes: number[] | null = null;
  if (n.hasAttr('axes')) axes = n.attrInts('axes');
  else if (n.input(1)?.initializer) axes = Array.from(n.input(1)!.initializer!.toNumbers());
  const all = axes === null || axes.length === 0;
  if (all && n.attrInt('noop_with_empty_axes', 0) === 1) return 1;
  let c = 1;
  shape.forEach((d, i) => {
    if (!all && !axes!.some((a) => (a < 0 ? a + shape.length : a) === i)) return;
    c *= typeof d === 'number' && d > 0 ? d : 1;
  });
  return c;
}

/** Ops that accumulate or grow values inside one kernel (a GPU may hold the partial results in fp16). */
const GROWING = new Set([
  'MatMul',
  'Gemm',
  'Conv',
  'ConvTranspose',
  'Einsum',
  'MatMulNBits',
  'FusedMatMul',
  'Attention',
  'MultiHeadAttention',
  'GroupQueryAttention',
  'Pow',
  'Exp',
  ...REDUCTIONS,
]);

/**
 * Nodes whose float values leave a safe fp16 range on the measured inputs, with the reason. Growing
 * ops (products, sums, powers) must stay below `limit`; any other value below 8x that (at most half of
 * fp16's max: inputs the measurement did not see). A value beyond that read by a node would overflow
 * in the Cast to fp16 before it, so readers count too; a reduction is judged by the bound of its sum.
 */
function outOfRange(g: Graph, ranges: Map<string, number>, limit: number): Map<Node, string> {
  const out = new Map<Node, string>();
  const loose = Math.min(8 * limit, F16_MAX / 2);
  const fmt = (x: number) => (Number.isFinite(x) ? x.toPrecision(3) : String(x));
  for (const n of g.nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size') continue;
    const own = GROWING.has(n.opType) || (n.opType === 'Mul' && n.inputs.every((v) => v && !v.initializer)) ? limit : loose;
    for (const v of n.outputs) {
      const r = v ? ranges.get(v.name) : undefined;
      if (r !== undefined && r > own) {
        out.set(n, `writes |${v!.name}| ${fmt(r)}`);
        break;
      }
    }
    if (out.has(n)) continue;
    for (const v of n.inputs) {
      if (!v || v.initializer) continue;
      const r = ranges.get(v.name);
      if (r === undefined) continue;
      if (r > loose) {
        out.set(n, `reads |${v.name}| ${fmt(r)}`);
        break;
      }
      if (REDUCTIONS.has(n.opType) && v === n.input(0)) {
        const bound = (n.opType === 'ReduceSumSquare' || n.opType === 'ReduceL2' ? r * r : r) * reducedCount(n);
        if (bound > limit) {
          out.set(n, `sums up to ${fmt(bound)}`);
          break;
        }
      }
    }
  }
  return out;
}

function toF16Tensor(t: Tensor, name: string): Tensor {
  const v = t.toFloat32();
  for (let i = 0; i < v.length; i++) if (Number.isFinite(v[i]!) && Math.abs(v[i]!) > F16_MAX) v[i] = Math.sign(v[i]!) * F16_MAX;
  const h = float32ToFloat16Array(v);
  return Tensor.fromBytes(name, DataType.FLOAT16, [...t.dims], new Uint8Array(h.buffer));
}

/** A converted Constant/ConstantOfShape holds its value in float16. */
function constantToF16(n: Node): void {
  const t = n.attrTensor('value');
  if (t && t.dtype === DataType.FLOAT) n.setAttr({ name: 'value', type: AttrType.TENSOR, value: toF16Tensor(t, t.name) });
  else if (n.opType === 'ConstantOfShape' && !t)
    n.setAttr({ name: 'value', type: AttrType.TENSOR, value: Tensor.fromBytes('value', DataType.FLOAT16, [1], new Uint8Array(2)) });
  if (n.hasAttr('value_float')) {
    const f = n.attrFloat('value_float');
    n.removeAttr('value_float');
    n.setAttr({ name: 'value', type: AttrType.TENSOR, value: toF16Tensor(Tensor.fromFloat32('value', [], Float32Array.of(f)), 'value') });
  }
  if (n.hasAttr('value_floats')) {
    const f = Float32Array.from(n.attrFloats('value_floats'));
    n.removeAttr('value_floats');
    n.setAttr({ name: 'value', type: AttrType.TENSOR, value: toF16Tensor(Tensor.fromFloat32('value', [f.length], f), 'value') });
  }
}

/** Edges: one Cast per (value, wanted precision); initializers read in fp16 get an fp16 copy instead (returned). */
function castInputs(
  g: Graph,
  nodes: Node[],
  kept: (n: Node) => boolean,
  T: Map<Value, DataType>,
  prec: Map<Value, Prec>,
  stats: PassStats,
): Map<Value, Value> {
  const castCache = new Map<string, Value>();
  const f16Init = new Map<Value, Value>();
  const castTo = (v: Value, want: Prec, before: Node): Value => {
    const key = `${v.name}|${want}`;
    let c = castCache.get(key);
    if (!c) {
      const node = g.addNode(
        {
          opType: 'Cast',
          name: `${v.name}_to_${want}`,
          inputs: [v],
          outputs: [`${v.name}_${want}`],
          attrs: { to: want === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT },
        },
        before,
      );
      c = node.outputs[0]!;
      c.type = { elemType: want === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT, shape: v.type?.shape };
      castCache.set(key, c);
      stats.counts.casts!++;
    }
    return c;
  };
  for (const n of nodes) {
    const k = kept(n);
    n.inputs.forEach((v, i) => {
      if (!v || !isFloat32(T.get(v))) return;
      const want: Prec = k || FP32_SLOTS[n.opType]?.includes(i) ? 'fp32' : 'fp16';
      if (v.initializer) {
        if (want === 'fp32') return;
        let h = f16Init.get(v);
        if (!h) {
          h = g.addInitializer(toF16Tensor(v.initializer, `${v.name}_fp16`));
          f16Init.set(v, h);
          stats.counts.initializers!++;
        }
        n.setInput(i, h);
        return;
      }
      const have = prec.get(v) ?? 'fp32';
      if (have !== want) n.setInput(i, castTo(v, want, n));
    });
  }
  return f16Init;
}

/** Graph outputs keep their precision (fp32, or fp16 without keepIoTypes): a producer of the
 * other precision writes a renamed value and a Cast restores the name. */
function restoreOutputPrecision(g: Graph, ioPrec: Prec, T: Map<Value, DataType>, prec: Map<Value, Prec>, stats: PassStats): void {
  for (const out of [...g.outputs]) {
    const have = prec.get(out);
    if (!isFloat32(T.get(out)) || !have || have === ioPrec) continue;
    const p = out.producer;
    if (!p) continue;
    const inner = out.splitFromProducer(`${out.name}_${have}`, {
      elemType: have === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT,
      shape: out.type?.shape,
    });
    for (const u of [...out.uses]) u.node.setInput(u.index, inner);
    prec.set(inner, have);
    prec.set(out, ioPrec);
    g.after(p).add({
      opType: 'Cast',
      name: `${out.name}_to_${ioPrec}`,
      inputs: [inner],
      outputs: [out],
      attrs: { to: ioPrec === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT },
    });
    stats.counts.casts!++;
  }
}

export const toFp16 = definePass({
  name: 'to-fp16',
  description: 'Convert float32 compute and weights to float16, keeping graph I/O float32 and norms/Softmax in float32',
  options: {
    keepIoTypes: {
      aliases: ['keep_io_types'],
      type: 'bool',
      default: true,
      description: 'graph inputs/outputs stay float32 (Casts at the boundary)',
    },
    keepNorms: {
      aliases: ['keep_norms'],
      type: 'bool',
      default: true,
      description: 'keep norms, Softmax and Pow/ReduceMean statistics in float32',
    },
    keep: { type: 'list', default: [], description: 'more nodes to keep in float32 (names, op types or globs)' },
    maxAbs: {
      aliases: ['max_abs'],
      type: 'float',
      default: 4096,
      min: 1,
      max: F16_MAX,
      description:
        'with measured ranges: keep fp32 every product, sum or power whose result passes this |x|, and any op reading or writing 8x it (fp16 max 65504; the margin covers unseen inputs and fp16 accumulation in GPU kernels)',
    },
  },
  statistics: {
    converted: 'nodes computing in float16',
    keptFp32: 'nodes kept in float32',
    keptByRange: 'of those, kept because a measured range leaves safe fp16',
    casts: 'Casts inserted',
    initializers: 'initializers converted to float16',
  },
  run(model: Model, o, ctx: PassContext): PassStats {
    const stats: PassStats = { counts: { converted: 0, keptFp32: 0, keptByRange: 0, casts: 0, initializers: 0 }, skipped: [], notes: [] };
    const g = model.graph;
    if (g.nodes.some((n) => n.subgraphs().length)) {
      stats.skipped!.push('graphs with If/Loop/Scan subgraphs are left as they are');
      return stats;
    }
    const T = elemTypes(g);
    const keepList = o.keep;
    const chains = o.keepNorms ? normChains(g) : new Set<Node>();
    const byRange = ctx.activationRanges ? outOfRange(g, ctx.activationRanges, o.maxAbs) : new Map<Node, string>();
    const kept = (n: Node) =>
      NO_FP16.includes(n.opType) || (o.keepNorms && NORMS.includes(n.opType)) || chains.has(n) || matchesAny(keepList, n) || byRange.has(n);
    if (ctx.activationRanges) {
      stats.counts.keptByRange = byRange.size;
      const shown = [...byRange].slice(0, 8).map(([n, why]) => `${n.name || n.opType} (${why})`);
      if (byRange.size)
        stats.notes!.push(
          `kept fp32 by measured range (> ${o.maxAbs}): ${shown.join(', ')}${byRange.size > 8 ? `, +${byRange.size - 8} more` : ''}`,
        );
    } else stats.notes!.push('no measured activation ranges: only the block list and norm statistics stay fp32');

    // Precision of each float32 value after conversion (where it is produced).
    const prec = new Map<Value, Prec>();
    for (const v of g.inputs) if (isFloat32(T.get(v))) prec.set(v, o.keepIoTypes ? 'fp32' : 'fp16');
    const nodes = [...g.nodes];
    for (const n of nodes) {
      const k = kept(n);
      if (k) stats.counts.keptFp32!++;
      else stats.counts.converted!++;
      for (const out of n.outputs) if (out && isFloat32(T.get(out))) prec.set(out, k ? 'fp32' : 'fp16');
      if (k) continue;
      if (n.opType === 'Cast' && n.attrInt('to') === DataType.FLOAT) n.setAttr({ name: 'to', type: AttrType.INT, value: DataType.FLOAT16 });
      if (n.opType === 'Constant' || n.opType === 'ConstantOfShape') constantToF16(n);
    }

    const f16Init = castInputs(g, nodes, kept, T, prec, stats);
    // Converted initializers take the original names back when the fp32 original is no longer used.
    for (const [v, h] of f16Init) {
      if (dropIfUnused(v) && !g.values.has(v.name)) g.renameValue(h, v.name);
    }
    restoreOutputPrecision(g, o.keepIoTypes ? 'fp32' : 'fp16', T, prec, stats);
    for (const [v, p] of prec) {
      if (v.isGraphInput || v.isGraphOutput) continue;
      v.type = { elemType: p === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT, shape: v.type?.shape };
    }
    for (const v of g.inputs) if (!o.keepIoTypes && isFloat32(T.get(v)) && v.type) v.type = { ...v.type, elemType: DataType.FLOAT16 };
    if (!o.keepIoTypes) for (const v of g.outputs) if (isFloat32(T.get(v)) && v.type) v.type = { ...v.type, elemType: DataType.FLOAT16 };
    return stats;
  },
});
