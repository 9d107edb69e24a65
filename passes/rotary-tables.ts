// Where a rotary embedding's cos/sin operand comes from, and the half-width [P, d/2] table that
// com.microsoft RotaryEmbedding wants in its place. Two exporter forms:
//   cached: Unsqueeze(Gather(cache [P, d], position_ids), 1), the cache a constant, possibly
//           Slice'd from row 0 to the sequence length and Squeeze'd from [1, 1, P, d] first;
//   in-graph: Unsqueeze(Cos|Sin(Concat(f, f)), 1) with f = Transpose(inv_freq [1, d/2, 1] @
//           Cast(Unsqueeze(position_ids, 1)), [0, 2, 1]) (transformers >= 4.38 Llama/Qwen2/Phi-3),
//           or f = Cast(Unsqueeze(position_ids, -1)) * inv_freq.
// Either may be scaled by a scalar constant (Qwen3/LongRoPE attention scaling). A cache keeps its
// own row count. The in-graph form has no table: one of `maxPositions` rows (fuse-rotary picks it from
// the model) is computed here the way torch does it (an fp32 product, then cos/sin); onnxruntime
// refuses a position past it rather than reading out of bounds.
import { DataType, Tensor, type Node, type Value } from '../ir/index.js';
import { constScalar, constTensor, other, producer } from './pattern.js';

export interface TableSource {
  /** Same key, same table: q and k of every layer share one initializer. */
  key: string;
  pos: Value;
  nodes: Node[];
  /** Computed in the graph (no table of its own): `build` makes `maxPositions` rows. A cache keeps its own rows. */
  computed: boolean;
  /** The half-width table, or null when a constant cache does not repeat its halves (not rotate_half). */
  build(maxPositions: number, dtype: DataType): Tensor | null;
}

/** Axes of an Unsqueeze/Squeeze (attribute before opset 13, input after). */
function axesOf(n: Node): number[] | null {
  if (n.hasAttr('axes')) return n.attrInts('axes');
  const t = constTensor(n.inputs[1]);
  return t ? Array.from(t.toNumbers()) : null;
}

/** v through an optional Mul by a scalar constant: the scaled value and the factor. */
function unscale(v: Value, nodes: Node[]): { v: Value; scale: number } {
  const mul = producer(v, 'Mul');
  if (!mul) return { v, scale: 1 };
  for (const x of mul.inputs) {
    const c = x && constScalar(other(mul, x));
    if (x && c !== null && !constTensor(x)) {
      nodes.push(mul);
      return { v: x, scale: c };
    }
  }
  return { v, scale: 1 };
}

/** The [P, d] cos or sin operand of a rotary Mul: where it comes from, or null. */
export function tableSource(v: Value, d: number, fn: 'Cos' | 'Sin'): TableSource | null {
  const nodes: Node[] = [];
  const outer = unscale(v, nodes);
  const un = producer(outer.v, 'Unsqueeze');
  const ax = un && axesOf(un);
  if (!un || !ax || ax.length !== 1 || ax[0] !== 1) return null;
  nodes.push(un);
  const inner = unscale(un.inputs[0]!, nodes);
  const scale = outer.scale * inner.scale;
  const ga = producer(inner.v, 'Gather');
  if (ga) return cachedSource(ga, d, scale, nodes);
  const f = producer(inner.v, fn);
  return f ? freqSource(f, d, scale, nodes) : null;
}

function isPositions(pos: Value | null | undefined): pos is Value {
  return !!pos && pos.dtype === DataType.INT64 && pos.shape?.length === 2;
}

/** Gather(cache, position_ids, axis 0) with the cache a constant, reached through Squeeze and row-prefix Slice. */
function cachedSource(ga: Node, d: number, scale: number, nodes: Node[]): TableSource | null {
  const pos = ga.inputs[1];
  if (ga.attrInt('axis', 0) !== 0 || !isPositions(pos)) return null;
  nodes.push(ga);
  let c = ga.inputs[0]!;
  for (let n = c.producer; n && !constTensor(c); n = c.producer) {
    // A Slice from 0 along a row axis keeps rows 0.. in place, so Gather sees the same rows.
    if (n.opType === 'Slice' && sliceKeepsPrefix(n)) c = n.inputs[0]!;
    else if (n.opType === 'Squeeze') c = n.inputs[0]!;
    else return null;
    nodes.push(n);
  }
  const t = constTensor(c);
  if (!t || (t.dtype !== DataType.FLOAT && t.dtype !== DataType.FLOAT16) || t.dims.length < 2 || t.dims.at(-1) !== d) return null;
  if (t.dims.slice(0, -2).some((x) => x !== 1)) return null;
  const rows = t.dims.at(-2)!;
  return {
    key: `cache:${c.name}:${scale}`,
    pos,
    nodes,
    computed: false,
    build: (_max, dtype) => halfTable(t.toFloat32(), rows, d, scale, dtype, `${c.name}_half`),
  };
}

/** Slice with starts 0, steps 1 and no slicing of the last axis. */
function sliceKeepsPrefix(n: Node): boolean {
  const rank = n.inputs[0]?.shape?.length;
  const num = (i: number) => (n.inputs[i] ? (constTensor(n.inputs[i])?.toNumbers() ?? null) : undefined);
  const starts = num(1),
    axes = num(3),
    steps = num(4);
  if (!starts || axes === null || steps === null || rank === undefined) return false;
  if (starts.some((s) => s !== 0) || (steps && steps.some((s) => s !== 1))) return false;
  const ax = axes ? Array.from(axes, (a) => (a < 0 ? a + rank : a)) : starts.map((_, i) => i);
  return !ax.includes(rank - 1);
}

/** First half of each row of a [rows, d] table whose halves are equal, scaled; null when they differ. */
function halfTable(src: Float32Array, rows: number, d: number, scale: number, dtype: DataType, name: string): Tensor | null {
  const h = d / 2;
  const out = new Float32Array(rows * h);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < h; i++) {
      const a = src[r * d + i]!;
      if (!Object.is(a, src[r * d + h + i])) return null;
      out[r * h + i] = scale === 1 ? a : Math.fround(a * scale);
    }
  return Tensor.fromNumbers(name, dtype, [rows, h], out);
}

/** Cos|Sin(Concat(f, f)) with f = position_ids x inv_freq as the exporter traced it. */
function freqSource(f: Node, d: number, scale: number, nodes: Node[]): TableSource | null {
  const cat = producer(f.inputs[0], 'Concat');
  if (!cat || cat.inputs.length !== 2 || cat.inputs[0] !== cat.inputs[1] || ![-1, 2].includes(cat.attrInt('axis'))) return null;
  nodes.push(f, cat);
  const outer = cat.inputs[0]!;
  const m = outerProduct(outer, d);
  if (!m) return null;
  nodes.push(...m.nodes);
  const inv = m.inv;
  const fun = f.opType === 'Cos' ? Math.cos : Math.sin;
  return {
    key: `freq:${f.opType}:${Array.from(inv).join(',')}:${scale}`,
    pos: m.pos,
    nodes,
    computed: true,
    build(maxPositions, dtype) {
      const h = d / 2;
      const out = new Float32Array(maxPositions * h);
      // torch: fp32 product (a MatMul with K = 1 is one product), then cos/sin of it.
      for (let p = 0; p < maxPositions; p++)
        for (let i = 0; i < h; i++) out[p * h + i] = Math.fround(Math.fround(fun(Math.fround(p * inv[i]!))) * scale);
      return Tensor.fromNumbers(`rotary_${f.opType.toLowerCase()}_cache_${d}`, dtype, [maxPositions, h], out);
    },
  };
}

/** f [B, S, d/2]: Transpose(MatMul(inv [.., d/2, 1], Cast(Unsqueeze(pos, 1))), [0, 2, 1]) or Cast(Unsqueeze(pos, -1)) * inv. */
function outerProduct(f: Value, d: number): { inv: Float32Array; pos: Value; nodes: Node[] } | null {
  const tr = producer(f, 'Transpose');
  if (tr) {
    const mm = producer(tr.inputs[0], 'MatMul');
    if (!mm || tr.attrInts('perm', []).join() !== '0,2,1') return null;
    const inv = invFreq(mm.inputs[0]!, d, -2);
    const p = castPositions(mm.inputs[1]!, 1);
    return inv && p ? { inv: inv.values, pos: p.pos, nodes: [tr, mm, ...inv.nodes, ...p.nodes] } : null;
  }
  const mul = producer(f, 'Mul');
  if (!mul) return null;
  for (const x of mul.inputs) {
    const p = x && castPositions(x, -1);
    const inv = p && invFreq(other(mul, x)!, d, -1);
    if (p && inv) return { inv: inv.values, pos: p.pos, nodes: [mul, ...inv.nodes, ...p.nodes] };
  }
  return null;
}

/** A constant of d/2 frequencies along axis `along` (every other dim 1), through Expand/Cast. */
function invFreq(v: Value, d: number, along: number): { values: Float32Array; nodes: Node[] } | null {
  const nodes: Node[] = [];
  let c = v;
  for (let n = c.producer; n && !constTensor(c); n = c.producer) {
    if (n.opType !== 'Expand' && !(n.opType === 'Cast' && n.attrInt('to') === DataType.FLOAT)) return null;
    nodes.push(n);
    c = n.inputs[0]!;
  }
  const t = constTensor(c);
  if (!t || t.dtype !== DataType.FLOAT || t.size !== d / 2 || (d > 2 && t.dims.at(along) !== d / 2)) return null;
  return { values: t.toFloat32(), nodes };
}

/** Cast(Unsqueeze(position_ids [B, S] int64, axis), float). */
function castPositions(v: Value, axis: number): { pos: Value; nodes: Node[] } | null {
  const cast = producer(v, 'Cast');
  const un = producer(cast?.inputs[0], 'Unsqueeze');
  const ax = un && axesOf(un);
  if (!cast || cast.attrInt('to') !== DataType.FLOAT || !un || !ax || ax.length !== 1) return null;
  const pos = un.inputs[0];
  if (!isPositions(pos) || (ax[0] !== axis && ax[0] !== (axis < 0 ? 3 + axis : axis))) return null;
  return { pos, nodes: [cast, un] };
}
