// AWQ's graph side (methods/awq.ts holds the search): for each activation that feeds quantized
// MatMuls, search the per-channel scales s over all of its weights at once, then divide the norm
// that produces the activation by s (its scale, and its bias for LayerNorm) and hand the pass the
// row scales to multiply into each weight as it is read (weights stay streamed in slices) and the
// calibration rows divided by s (for awq+gptq). An activation qualifies when its producer is a
// LayerNormalization, SimplifiedLayerNormalization, Skip(Simplified)LayerNormalization, or the
// written-out RMSNorm Mul(gamma, x) / LayerNorm Add(Mul(x, gamma), beta) with constant 1-D scales,
// and every consumer of it (but Shape/Size) is a quantized MatMul whose weight nothing else reads (a tied lm_head is
// not: its table is the embedding's too). A per-input-channel factor inside a MatMulNBits weight is
// not expressible, so the other weights keep s = 1, and the notes say which and why.
import { DataType, Node, Tensor, Value } from '../../ir/index.js';
import { eachSlice, type Candidate } from './candidates.js';
import { dropIfUnused } from './graph-util.js';
import { awqSearch } from './methods/awq.js';
import type { CalibrationData, QuantParams } from './types.js';

const FLOATS = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16]);

/** Which inputs of the norm node to divide by s. */
interface NormSite {
  node: Node;
  inputs: number[];
}

function channelConst(v: Value | null | undefined, K: number): boolean {
  const t = v?.initializer;
  return !!t && t.dims.length === 1 && t.dims[0] === K && FLOATS.has(t.dtype);
}

/** The constants to divide by s so that `a` comes out divided by s; undefined when none. */
export function normSite(a: Value, K: number): NormSite[] | undefined {
  const p = a.producer;
  if (!p || p.outputs[0] !== a) return undefined;
  const opt = (i: number) => (p.input(i) ? [i] : []);
  switch (p.opType) {
    case 'LayerNormalization':
      return channelConst(p.input(1), K) && (!p.input(2) || channelConst(p.input(2), K))
        ? [{ node: p, inputs: [1, ...opt(2)] }]
        : undefined;
    case 'SimplifiedLayerNormalization':
      return channelConst(p.input(1), K) ? [{ node: p, inputs: [1] }] : undefined;
    case 'SkipLayerNormalization':
    case 'SkipSimplifiedLayerNormalization': {
      const beta = p.opType === 'SkipLayerNormalization' ? 3 : -1;
      if (!channelConst(p.input(2), K) || (beta > 0 && p.input(beta) && !channelConst(p.input(beta), K))) return undefined;
      return [{ node: p, inputs: [2, ...(beta > 0 ? opt(beta) : [])] }];
    }
    case 'Mul': {
      // RMSNorm written out: gamma * normalised
      const i = channelConst(p.input(0), K) ? 0 : channelConst(p.input(1), K) ? 1 : -1;
      return i >= 0 && !p.input(1 - i)?.initializer ? [{ node: p, inputs: [i] }] : undefined;
    }
    case 'Add': {
      // LayerNorm written out: Mul(normalised, gamma) + beta
      const i = channelConst(p.input(0), K) ? 0 : channelConst(p.input(1), K) ? 1 : -1;
      const mul = i >= 0 ? p.input(1 - i) : null;
      const mp = mul?.producer;
      if (!mul || mp?.opType !== 'Mul' || mul.consumers.length !== 1 || mul.isGraphOutput) return undefined;
      const g = channelConst(mp.input(0), K) ? 0 : channelConst(mp.input(1), K) ? 1 : -1;
      return g >= 0
        ? [
            { node: p, inputs: [i] },
            { node: mp, inputs: [g] },
          ]
        : undefined;
    }
    default:
      return undefined;
  }
}

export interface AwqFold {
  /** Weight name -> s per input row (multiply row k of the weight by s[k] before quantizing). */
  rowScale: Map<string, Float32Array>;
  /** Calibration rows as the folded graph computes them (divided by s). */
  calibration: (weight: string, node: Node) => CalibrationData | undefined;
  notes: string[];
}

/** Search and fold, one activation at a time; `cands` are the weights to be quantized. */
export async function awqFold(
  cands: readonly Candidate[],
  p: (c: Candidate) => QuantParams,
  calibration: (weight: string, node: Node) => CalibrationData | undefined,
  maxSliceMb: number,
): Promise<AwqFold> {
  const rowScale = new Map<string, Float32Array>();
  const notes: string[] = [];
  const unfolded: string[] = [];
  const byAct = new Map<Value, Candidate[]>();
  for (const c of cands) {
    if (c.kind === 'gather') continue;
    const a = c.node.input(0)!;
    (byAct.get(a) ?? byAct.set(a, []).get(a)!).push(c);
  }
  let folded = 0;
  for (const [a, group] of byAct) {
    const K = group[0]!.K,
      names = group.map((c) => c.w.value.name);
    const why = foldBlocker(a, group, K);
    const calib = calibration(names[0]!, group[0]!.node);
    if (why || !calib) {
      unfolded.push(`${names.join('+')} (${why ?? 'no calibration rows'})`);
      continue;
    }
    const ws = await Promise.all(group.map((c) => sampledColumns(c, maxSliceMb)));
    const r = awqSearch(ws, calib, p(group[0]!));
    if (r.alpha === 0) continue;
    for (const site of normSite(a, K)!) for (const i of site.inputs) divideInput(site.node, i, r.s);
    for (const n of names) rowScale.set(n, r.s);
    folded++;
    notes.push(`awq: ${names.join('+')} alpha ${r.alpha.toFixed(1)}, sampled output error x${(r.err / r.err0).toFixed(3)} of unscaled`);
  }
  notes.push(`awq: scales folded into ${folded} norm(s)`);
  if (unfolded.length)
    notes.push(
      `awq: ${unfolded.length} weight group(s) quantized unscaled: ${unfolded.slice(0, 6).join('; ')}${unfolded.length > 6 ? '; ...' : ''}`,
    );
  // Rows divided by s when asked for: calibration hands out a fresh sample per activation (it may come
  // from a spill file), so nothing here may be keyed by the sample object, and only the last is kept.
  let last: { c: CalibrationData; scaled: CalibrationData } | undefined;
  return {
    rowScale,
    calibration: (w, node) => {
      const c = calibration(w, node),
        s = rowScale.get(w);
      if (!c || !s) return c;
      if (last?.c !== c) {
        const x = new Float32Array(c.x.length);
        for (let i = 0; i < x.length; i++) x[i] = c.x[i]! / s[i % s.length]!;
        last = { c, scaled: { x, rows: c.rows } };
      }
      return last.scaled;
    },
    notes,
  };
}

/** Why the scales of `a` cannot be folded; undefined when they can. */
function foldBlocker(a: Value, group: Candidate[], K: number): string | undefined {
  if (!normSite(a, K)) return `input not produced by a norm with constant scales`;
  if (a.isGraphOutput) return 'the norm output is a graph output';
  const nodes = new Set(group.map((c) => c.node));
  // Shape and Size read no values: scaling does not reach them
  if (a.consumers.some((n) => !nodes.has(n) && !(n.domain === '' && (n.opType === 'Shape' || n.opType === 'Size'))))
    return 'the norm output has consumers that are not quantized MatMuls';
  for (const c of group) {
    if (c.kind !== 'matmul') return 'a Gemm reads it';
    if (c.tiedGather) return 'tied to the embedding table';
    const users = c.w.value.consumers.filter((n) => n !== c.w.transposedByNode && !nodes.has(n));
    if (users.length) return `weight ${c.w.value.name} is read elsewhere too`;
  }
  return undefined;
}

/** Evenly spaced output columns of a weight (at most the search's 512), read slice by slice. */
async function sampledColumns(c: Candidate, maxSliceMb: number): Promise<{ w: Float32Array; K: number; N: number }> {
  const take = Math.min(c.N, 512),
    cols = Array.from({ length: take }, (_, i) => Math.floor(((i + 0.5) * c.N) / take));
  const out = new Float32Array(c.K * take);
  let j = 0;
  await eachSlice(c, maxSliceMb, async (w, n0, ns) => {
    for (; j < take && cols[j]! < n0 + ns; j++) for (let k = 0; k < c.K; k++) out[k * take + j] = w[k * ns + cols[j]! - n0]!;
  });
  return { w: out, K: c.K, N: take };
}

/** The node's input i (a 1-D constant) divided by s, as a new initializer (others may share the old). */
function divideInput(node: Node, i: number, s: Float32Array): void {
  const old = node.input(i)!,
    t = old.initializer!;
  const v = t.toFloat32().map((x, k) => x / s[k]!);
  node.setInput(i, node.graph.addInitializer(Tensor.fromNumbers(`${old.name}_awq`, t.dtype, [...t.dims], v)));
  dropIfUnused(old);
}
