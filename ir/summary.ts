// Model summary: what `edgec inspect` shows and what targets and reports build on. Pure: reads the
// IR (never external data bytes) and returns a JSON-able object.
import { DataType, dtypeName, isFloat } from './dtype.js';
import { AttrType, Dim, Graph, Model, Node, Value } from './graph.js';
import { Tensor } from './tensor.js';

/** `classifier`: image/features in, class scores [B, C] out; `mllm`: vision encoder, projector and
 * decoder in one graph (pixels and ids in, logits out). */
export type Role = 'vision-encoder' | 'projector' | 'embeddings' | 'decoder' | 'classifier' | 'mllm' | 'unknown';
export const ROLES: readonly Role[] = ['vision-encoder', 'projector', 'embeddings', 'decoder', 'classifier', 'mllm', 'unknown'];

export interface IOSummary {
  name: string;
  dtype: string;
  /** null: rank unknown. Dims are numbers, symbolic names, or null (unknown). */
  shape: Dim[] | null;
}

export interface DtypeTotals {
  tensors: number;
  elements: number;
  bytes: number;
}

export interface TensorSummary {
  name: string;
  dtype: string;
  shape: number[];
  bytes: number;
  external: boolean;
}

export interface DynamicIO {
  name: string;
  kind: 'input' | 'output';
  /** Axes that are not fixed numbers: a symbolic name or null (unknown); rank unknown gives axis -1. */
  dims: { axis: number; dim: string | null }[];
}

export interface ModelSummary {
  irVersion: number;
  producer: { name: string; version: string };
  opsets: { domain: string; version: number }[];
  inputs: IOSummary[];
  outputs: IOSummary[];
  nodes: { total: number; mainGraph: number; inSubgraphs: number; subgraphs: number };
  /** Op counts over all graphs, most frequent first; non-default domains as `domain:Op`. */
  ops: Record<string, number>;
  /** Initializers and Constant-node tensors, in all graphs. */
  parameters: DtypeTotals & { byDtype: Record<string, DtypeTotals> };
  externalData: { tensors: number; bytes: number; files: { location: string; tensors: number; bytes: number }[] };
  largestTensors: TensorSummary[];
  dynamic: { symbols: string[]; values: DynamicIO[] };
  role: { role: Role; evidence: string[] };
}

/** Graph inputs the caller feeds (pre-IR-4 models also list initializers as inputs). */
export function feedInputs(g: Graph): Value[] {
  return g.inputs.filter((v) => !v.initializer);
}

export const opKey = (n: Node): string => (n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType);

function io(v: Value): IOSummary {
  return { name: v.name, dtype: v.type ? dtypeName(v.type.elemType) : 'unknown', shape: v.type?.shape ? [...v.type.shape] : null };
}

/** Every constant tensor: initializers and Constant-node values (exporters put weights in either). */
function allConstants(model: Model): Tensor[] {
  const out: Tensor[] = [];
  for (const g of model.graph.allGraphs()) {
    out.push(...g.initializers);
    for (const n of g.nodes) {
      const a = n.opType === 'Constant' && !n.domain ? n.attr('value') : undefined;
      if (a?.type === AttrType.TENSOR) out.push(a.value.name ? a.value : a.value.clone(n.output(0)?.name ?? n.name));
    }
  }
  return out;
}

export function summarize(model: Model, topN = 10): ModelSummary {
  const g = model.graph;
  const graphs = [...g.allGraphs()];
  const ops = new Map<string, number>();
  let total = 0;
  for (const sg of graphs)
    for (const n of sg.nodes) {
      total++;
      ops.set(opKey(n), (ops.get(opKey(n)) ?? 0) + 1);
    }
  const sortedOps = Object.fromEntries([...ops].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));

  const tensors = allConstants(model);
  const byDtype: Record<string, DtypeTotals> = {};
  const files = new Map<string, { location: string; tensors: number; bytes: number }>();
  let elements = 0,
    bytes = 0,
    extTensors = 0,
    extBytes = 0;
  for (const t of tensors) {
    const k = dtypeName(t.dtype);
    const d = (byDtype[k] ??= { tensors: 0, elements: 0, bytes: 0 });
    d.tensors++;
    d.elements += t.size;
    d.bytes += t.byteLength;
    elements += t.size;
    bytes += t.byteLength;
    if (t.data.kind === 'external' && !t.data.ref.embedded) {
      const ref = t.data.ref;
      const f = files.get(ref.location) ?? { location: ref.location, tensors: 0, bytes: 0 };
      f.tensors++;
      f.bytes += ref.length;
      files.set(ref.location, f);
      extTensors++;
      extBytes += ref.length;
    }
  }
  const largest = [...tensors]
    .sort((a, b) => b.byteLength - a.byteLength || (a.name < b.name ? -1 : 1))
    .slice(0, topN)
    .map((t) => ({ name: t.name, dtype: dtypeName(t.dtype), shape: [...t.dims], bytes: t.byteLength, external: t.isExternal }));

  const symbols = new Set<string>();
  const dynValues: DynamicIO[] = [];
  const scan = (v: Value, kind: 'input' | 'output') => {
    const shape = v.type?.shape;
    const dims =
      shape === undefined
        ? [{ axis: -1, dim: null }]
        : shape.flatMap((d, axis) => (typeof d === 'number' && d >= 0 ? [] : [{ axis, dim: typeof d === 'string' ? d : null }]));
    for (const d of dims) if (d.dim) symbols.add(d.dim);
    if (dims.length) dynValues.push({ name: v.name, kind, dims });
  };
  feedInputs(g).forEach((v) => scan(v, 'input'));
  g.outputs.forEach((v) => scan(v, 'output'));

  return {
    irVersion: model.irVersion,
    producer: { name: model.producerName, version: model.producerVersion },
    opsets: model.opsetImports.map((o) => ({ domain: o.domain || 'ai.onnx', version: o.version })),
    inputs: feedInputs(g).map(io),
    outputs: g.outputs.map(io),
    nodes: { total, mainGraph: g.nodes.length, inSubgraphs: total - g.nodes.length, subgraphs: graphs.length - 1 },
    ops: sortedOps,
    parameters: { tensors: tensors.length, elements, bytes, byDtype },
    externalData: { tensors: extTensors, bytes: extBytes, files: [...files.values()] },
    largestTensors: largest,
    dynamic: { symbols: [...symbols].sort(), values: dynValues },
    role: guessRole(model),
  };
}

// ---- role ------------------------------------------------------------------------------------

const INT_IDS = new Set<DataType>([DataType.INT64, DataType.INT32]);
const ATTENTION_OPS = new Set(['Softmax', 'Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'PackedAttention', 'SparseAttention']);
const MATMUL_OPS = new Set(['MatMul', 'Gemm', 'MatMulNBits', 'MatMulInteger', 'QLinearMatMul', 'FusedMatMul']);
/** Ops that carry a tensor through unchanged in meaning (normalisation, casts, layout). */
const PASS_THROUGH = new Set([
  'Cast',
  'Sub',
  'Mul',
  'Div',
  'Add',
  'Pad',
  'Transpose',
  'Identity',
  'QuantizeLinear',
  'DequantizeLinear',
  'Reshape',
  'Resize',
]);
const KV_NAME = /(^|[._/])(past|present)([._]|$)|key_values|kv_cache/i;

const label = (n: Node) => n.name || `(unnamed ${n.opType})`;
const fmtShape = (v: Value) => `${v.type ? dtypeName(v.type.elemType) : '?'}[${(v.type?.shape ?? []).map((d) => d ?? '?').join(',')}]`;
const lastDim = (v: Value | null | undefined): Dim | undefined => v?.type?.shape?.[v.type.shape.length - 1];
const isFloatValue = (v: Value) => v.type !== undefined && isFloat(v.type.elemType);
const isIntValue = (v: Value) => v.type !== undefined && INT_IDS.has(v.type.elemType);

/** Nodes reachable from `v` through at most `depth` pass-through ops, stopping at the first non-pass-through. */
function reachedOps(v: Value, depth: number): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  let frontier = [v];
  for (let i = 0; i <= depth && frontier.length; i++) {
    const next: Value[] = [];
    for (const f of frontier) {
      for (const n of f.consumers) {
        if (seen.has(n)) continue;
        seen.add(n);
        out.push(n);
        if (PASS_THROUGH.has(n.opType)) next.push(...n.outputs.filter((o): o is Value => o !== null));
      }
    }
    frontier = next;
  }
  return out;
}

// Attributes read leniently: a summary describes odd models too, it does not reject them.
function intAttr(n: Node, name: string): number | undefined {
  const a = n.attr(name);
  return a?.type === AttrType.INT ? Number(a.value) : undefined;
}

function intsAttr(n: Node, name: string): number[] | undefined {
  const a = n.attr(name);
  return a?.type === AttrType.INTS ? a.value.map(Number) : undefined;
}

/** [K, N] of a MatMul-like node: from its weight when constant, else from the value shapes. */
function matmulDims(n: Node): [Dim | undefined, Dim | undefined] {
  if (n.opType === 'MatMulNBits') return [intAttr(n, 'K'), intAttr(n, 'N')];
  const w = n.input(1)?.initializer?.dims;
  if (w && w.length >= 2) {
    const [a, b] = [w[w.length - 2]!, w[w.length - 1]!];
    return n.opType === 'Gemm' && intAttr(n, 'transB') ? [b, a] : [a, b];
  }
  return [lastDim(n.input(0)), lastDim(n.output(0))];
}

/** A Conv whose stride equals its kernel (>1): the patch embedding of a ViT (Conv3d for video ViTs). */
function patchEmbed(n: Node): string | undefined {
  if (n.opType !== 'Conv') return undefined;
  const w = n.input(1)?.type?.shape;
  const kernel = intsAttr(n, 'kernel_shape') ?? (w ?? []).slice(2).filter((d): d is number => typeof d === 'number');
  const strides = intsAttr(n, 'strides') ?? kernel.map(() => 1);
  if (kernel.length >= 2 && kernel.slice(-2).every((k) => k > 1) && kernel.every((k, i) => strides[i] === k))
    return `${kernel.join('x')} stride ${strides.join('x')}`;
  return undefined;
}

/** Gather of int ids from a 2-D float table (plain or block-quantized). */
function embeddingGather(n: Node, ids: Value): boolean {
  if ((n.opType !== 'Gather' && n.opType !== 'GatherBlockQuantized') || n.input(1) !== ids) return false;
  const table = n.input(0);
  const shape = table?.initializer?.dims ?? table?.type?.shape;
  if (!table || shape?.length !== 2 || !isConst(table)) return false;
  return n.opType === 'GatherBlockQuantized' || isFloatValue(table) || table.producer?.opType === 'DequantizeLinear';
}

/** Weights: an initializer, a Constant, or a dequantized constant. */
function isConst(v: Value | null): boolean {
  if (!v) return false;
  if (v.initializer) return true;
  const p = v.producer;
  return p?.opType === 'Constant' || (p?.opType === 'DequantizeLinear' && isConst(p.input(0)));
}

export function guessRole(model: Model): { role: Role; evidence: string[] } {
  const g = model.graph;
  const inputs = feedInputs(g);
  const nodes = [...g.allGraphs()].flatMap((sg) => sg.nodes);
  const has = (ops: Set<string>) => nodes.some((n) => ops.has(n.opType));
  const evidence: string[] = [];

  const logits = g.outputs.filter((v) => /logits/i.test(v.name));
  const kv = [...inputs, ...g.outputs].filter((v) => KV_NAME.test(v.name));
  const masks = inputs.filter((v) => /attention_mask|position_ids/i.test(v.name));
  const image = inputs.find((v) => isFloatValue(v) && v.type?.shape?.length === 4 && !KV_NAME.test(v.name));
  const ids0 = inputs.filter(isIntValue);

  // Whole MLLM: pixels and token ids in, logits out (its vision part keeps vision defaults).
  if (image && ids0.length && logits.some((v) => (v.type?.shape?.length ?? 3) === 3)) {
    return {
      role: 'mllm',
      evidence: [
        `image input '${image.name}' ${fmtShape(image)}, id input '${ids0[0]!.name}' ${fmtShape(ids0[0]!)} and output '${logits[0]!.name}' ${fmtShape(logits[0]!)}: vision encoder and decoder in one graph`,
      ],
    };
  }
  // Classifier: class scores [B, C] (no sequence axis), no mask, position or KV-cache inputs.
  const scores = g.outputs.filter((v) => isFloatValue(v) && v.type?.shape?.length === 2);
  const patchImage = image && reachedOps(image, 3).some((n) => patchEmbed(n) !== undefined);
  const named = scores.some((v) => /logit|class|prob|score/i.test(v.name));
  if (
    !kv.length &&
    !masks.length &&
    scores.length === g.outputs.length &&
    scores.length > 0 &&
    (logits.length || named || (image && !patchImage))
  ) {
    const o = logits[0] ?? scores[0]!;
    return {
      role: 'classifier',
      evidence: [
        `output '${o.name}' ${fmtShape(o)} has no sequence axis and there is no attention_mask/position/KV-cache input: class scores`,
      ],
    };
  }

  // Decoder: logits and/or a KV cache.
  if (logits.length) evidence.push(`output '${logits[0]!.name}' ${fmtShape(logits[0]!)} looks like logits`);
  if (kv.length)
    evidence.push(
      `${kv.length} KV-cache inputs/outputs (${kv
        .slice(0, 2)
        .map((v) => `'${v.name}'`)
        .join(', ')}${kv.length > 2 ? ', ...' : ''})`,
    );
  if (evidence.length) return { role: 'decoder', evidence };

  const ids = inputs.filter(isIntValue);
  const idGathers = ids.flatMap((v) => v.consumers.filter((n) => embeddingGather(n, v)).map((n) => ({ v, n })));

  // Decoder without telling names: ids or embeds -> attention -> a widening MatMul to a graph output.
  if (has(ATTENTION_OPS) && (idGathers.length || inputs.some((v) => isFloatValue(v) && v.type?.shape?.length === 3))) {
    for (const o of g.outputs) {
      const p = o.producer;
      if (!p || !MATMUL_OPS.has(p.opType)) continue;
      const [inDim, outDim] = matmulDims(p);
      if (typeof inDim === 'number' && typeof outDim === 'number' && outDim > inDim) {
        return {
          role: 'decoder',
          evidence: [
            `attention (${nodes.filter((n) => ATTENTION_OPS.has(n.opType)).length} ops) then ${p.opType} '${label(p)}' widening ${inDim} -> ${outDim} (vocab) into output '${o.name}'`,
          ],
        };
      }
    }
  }

  // Vision encoder: 4-D (or 5-D video) float image input feeding a patch-embedding Conv.
  for (const v of inputs) {
    const rank = v.type?.shape?.length;
    if (!isFloatValue(v) || (rank !== 4 && rank !== 5)) continue;
    for (const n of reachedOps(v, 3)) {
      const pe = patchEmbed(n);
      if (pe)
        return { role: 'vision-encoder', evidence: [`input '${v.name}' ${fmtShape(v)} feeds Conv '${label(n)}' (${pe}): patch embedding`] };
    }
  }

  // Embeddings: int ids -> Gather on a 2-D float table -> float output, nothing heavier.
  if (idGathers.length && !has(ATTENTION_OPS) && g.outputs.some(isFloatValue)) {
    const { v, n } = idGathers[0]!;
    const table = n.input(0)!;
    return {
      role: 'embeddings',
      evidence: [`int input '${v.name}' ${fmtShape(v)} indexes ${n.opType} '${label(n)}' on table '${table.name}' ${fmtShape(table)}`],
    };
  }

  // Projector: float features in, MatMul MLP, no Conv, no id lookup.
  const matmuls = nodes.filter((n) => MATMUL_OPS.has(n.opType) && n.inputs.some((v, i) => i > 0 && isConst(v))).length;
  if (
    inputs.length &&
    inputs.every(isFloatValue) &&
    matmuls &&
    !has(new Set(['Conv'])) &&
    !idGathers.length &&
    g.outputs.every(isFloatValue)
  ) {
    return {
      role: 'projector',
      evidence: [
        `float inputs (${inputs.map((v) => `'${v.name}' ${fmtShape(v)}`).join(', ')}), ${matmuls} MatMul/Gemm with constant weights, no Conv, no id lookup`,
      ],
    };
  }
  return { role: 'unknown', evidence: ['no vision patch-embed, id lookup, MatMul MLP or logits/KV-cache pattern found'] };
}
