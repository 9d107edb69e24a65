// HF rotate_half rotary embedding -> com.microsoft RotaryEmbedding (interleaved = 0):
//   out = t * cos + cat(-t[..., d/2:], t[..., :d/2]) * sin        (halves by Slice, or Split)
// with cos/sin gathered from a constant cache by position_ids or computed in the graph from inv_freq
// (rotary-tables.ts). Partial rotary (Phi-3, rotary dim r < head size D):
//   cat(rope(t[..., :r]), t[..., r:]) -> one op with rotary_embedding_dim = r.
// t is [B, N, S, D]. When it is Transpose(Reshape(x [B, S, N*D])) the op runs on the 3-D x
// (num_heads = N) and the Reshape/Transpose move after it, which leaves the attention fusion a 3-D
// query/key to take; otherwise the op takes t itself (4-D BNSH input).
import path from 'node:path';
import {
  DataType,
  InputError,
  Tensor,
  readModelConfig,
  textConfigField,
  type Dim,
  type Graph,
  type Model,
  type Node,
  type Value,
} from '../ir/index.js';
import type { OptionSchema, OptionsOf, PassContext } from './pass.js';
import { constTensor, other, producer, replaceOutput, sameDim, splitHeads } from './pattern.js';
import { tableSource, type TableSource } from './rotary-tables.js';
import { defineRule, fusionPass, skip, Skip, type Match } from './rule.js';
import { rotaryHeadsRule } from './rotary-heads.js';

/** Table rows for cos/sin computed in the graph when the model says nothing (transformers' Llama default is 2048). */
export const DEFAULT_MAX_POSITIONS = 4096;
/** Past this, a table is a size claim to refuse, not to allocate (4M positions x 64 x 4 B = 1 GiB per table). */
const MAX_POSITIONS = 1 << 22;

const OPTIONS = {
  maxPositions: {
    type: 'int',
    default: undefined,
    min: 1,
    max: MAX_POSITIONS,
    description:
      `rows of the cos/sin tables made for cos/sin computed in the graph (positions the fused op accepts; default: ` +
      `max_position_embeddings of the config.json beside the model, else the fixed attention_mask length, else ${DEFAULT_MAX_POSITIONS})`,
  },
} as const satisfies OptionSchema;
type Opts = OptionsOf<typeof OPTIONS>;

interface TableRows {
  rows: number;
  from: string;
}

/** Rows of a table computed from inv_freq, and where the count comes from (a cache keeps its own). */
export function tableRows(model: Model, given: number | undefined, ctx: PassContext): TableRows {
  if (given !== undefined) return { rows: given, from: 'maxPositions option' };
  const cfg = ctx.modelDir ? readModelConfig(ctx.modelDir) : null;
  const v = cfg ? textConfigField(cfg, 'max_position_embeddings') : undefined;
  if (cfg && v !== undefined && v !== null) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_POSITIONS)
      throw new InputError(
        `max_position_embeddings ${JSON.stringify(v)} is not an integer in 1..${MAX_POSITIONS}; fix it, or give fuse-rotary{maxPositions=N}`,
        cfg.file,
      );
    return { rows: v, from: `max_position_embeddings of ${path.relative(ctx.modelDir!, cfg.file)}` };
  }
  // Static shapes: positions come from the mask (cumsum - 1), so never reach its length.
  const t = model.graph.inputs.find((i) => i.name === 'attention_mask')?.shape?.[1];
  if (typeof t === 'number' && t > 0) return { rows: t, from: 'the fixed attention_mask length' };
  return { rows: DEFAULT_MAX_POSITIONS, from: 'the default: no max_position_embeddings in a config.json beside the model' };
}

/** One-element constant as a number (index constants may be declared float in hand-made graphs). */
function num(v: Value | null | undefined): number | null {
  const t = constTensor(v);
  return t && t.size === 1 && t.dtype !== DataType.STRING ? t.toNumbers()[0]! : null;
}

/** [start, end) of a step-1 Slice along the last axis of a rank-`rank` input, else null. */
function sliceLast(n: Node | null, rank: number): [number, number] | null {
  if (!n || n.opType !== 'Slice' || n.domain !== '' || n.inputs.length < 4) return null;
  const [start, end, axis] = [num(n.inputs[1]), num(n.inputs[2]), num(n.inputs[3])];
  const step = n.inputs[4] ? num(n.inputs[4]) : 1;
  if (start === null || end === null || step !== 1 || (axis !== -1 && axis !== rank - 1)) return null;
  return [start, end];
}

/** Split of the last axis into two equal halves (split attribute, input, or num_outputs). */
function splitsHalves(sp: Node, d: number): boolean {
  const ax = sp.attrInt('axis', 0);
  if (sp.outputs.length !== 2 || (ax !== -1 && ax !== 3)) return false;
  const sizes = sp.hasAttr('split')
    ? sp.attrInts('split')
    : sp.inputs[1]
      ? Array.from(constTensor(sp.inputs[1])?.toNumbers() ?? [0])
      : null;
  return !sizes || (sizes.length === 2 && sizes[0] === d / 2 && sizes[1] === d / 2);
}

interface Half {
  t: Value;
  nodes: Node[];
}

/** rot = Concat(Neg(x2), x1) with x1, x2 the halves of t's last axis: t, or a reason. */
function rotateHalf(rot: Value): Half | string | null {
  const cat = producer(rot, 'Concat');
  const neg = producer(cat?.inputs[0], 'Neg');
  if (!cat || cat.inputs.length !== 2 || !neg) return null;
  const x2 = neg.inputs[0]!,
    x1 = cat.inputs[1]!;
  const sp = producer(x1, 'Split');
  if (sp && x1 === sp.outputs[0] && x2 === sp.outputs[1]) {
    const t = sp.inputs[0]!,
      d = t.shape?.[3];
    if (typeof d !== 'number' || t.shape!.length !== 4 || !splitsHalves(sp, d)) return 'Split is not into the two halves of the last axis';
    return { t, nodes: [cat, neg, sp] };
  }
  const s1 = producer(x1, 'Slice'),
    s2 = producer(x2, 'Slice');
  if (!s1 || !s2 || s1.inputs[0] !== s2.inputs[0]) return null;
  const t = s1.inputs[0]!,
    d = t.shape?.[3];
  if (typeof d !== 'number' || t.shape!.length !== 4 || d % 2) return 'input is not 4-D with a known even head size';
  const a1 = sliceLast(s1, 4),
    a2 = sliceLast(s2, 4);
  const cax = cat.attrInt('axis');
  if (!a1 || !a2 || a1[0] !== 0 || a1[1] !== d / 2 || a2[0] !== d / 2 || a2[1] < d || (cax !== -1 && cax !== 3))
    return 'slices are not the two halves of the last axis (rotate_half)';
  return { t, nodes: [cat, neg, s1, s2] };
}

/** Phi-3 partial rotary: t = T[..., :r] and the result's only use is Concat(result, T[..., r:]). */
function partial(t: Value, out: Value): { full: Value; out: Value; nodes: Node[] } | null {
  const s = producer(t, 'Slice');
  const T = s?.inputs[0];
  const D = T?.shape?.[3],
    r = t.shape![3] as number;
  const a = sliceLast(s, 4);
  if (!s || !T || typeof D !== 'number' || !a || a[0] !== 0 || a[1] !== r || r >= D) return null;
  const cat = out.uses.length === 1 && !out.isGraphOutput ? out.uses[0]!.node : null;
  if (!cat || cat.opType !== 'Concat' || cat.inputs.length !== 2 || cat.inputs[0] !== out || ![-1, 3].includes(cat.attrInt('axis')))
    return null;
  const pass = producer(cat.inputs[1], 'Slice');
  const b = sliceLast(pass, 4);
  if (!pass || pass.inputs[0] !== T || !b || b[0] !== r || b[1] < D) return null;
  return { full: T, out: cat.outputs[0]!, nodes: [s, pass, cat] };
}

interface RotaryMatch extends Match {
  /** The op's input before the heads split (3-D), or the 4-D BNSH value itself. */
  x: Value;
  heads: number | null;
  /** Reshape/Transpose restoring [B, N, S, D] after a 3-D op. */
  view: NonNullable<ReturnType<typeof splitHeads>> | null;
  rotaryDim: number | null;
  out: Value;
  cos: TableSource;
  sin: TableSource;
  dtype: DataType;
  /** position_ids are [1, S] (HF's cache_position[None]) against a batch of B: the op needs them expanded. */
  expandBatch: boolean;
}

/** A dim known on both sides must agree; an unknown side is left to the op, which checks position_ids against (B, S) at run time. */
function dimFits(p: Dim | undefined, x: Dim | undefined): boolean {
  return p === null || p === undefined || x === null || x === undefined || sameDim(p, x);
}

function match(add: Node): RotaryMatch | Skip | null {
  const [m1, m2] = [producer(add.inputs[0], 'Mul'), producer(add.inputs[1], 'Mul')];
  if (!m1 || !m2) return null;
  for (const [pm, pr] of [
    [m1, m2],
    [m2, m1],
  ] as const) {
    for (const rot of pr.inputs) {
      const h = rot && rotateHalf(rot);
      if (!h) continue;
      const where = `rotary at '${add.name}'`;
      if (typeof h === 'string') return skip(`${where}: ${h}`);
      if (!pm.inputs.includes(h.t)) return skip(`${where}: cos term does not multiply the same input`);
      return complete(add, h, pm, pr, rot!, where);
    }
  }
  return null;
}

function complete(add: Node, h: Half, pm: Node, pr: Node, rot: Value, where: string): RotaryMatch | Skip {
  const d = h.t.shape![3] as number;
  const cos = tableSource(other(pm, h.t)!, d, 'Cos'),
    sin = tableSource(other(pr, rot)!, d, 'Sin');
  if (!cos || !sin)
    return skip(`${where}: cos/sin are neither Unsqueeze(Gather(constant cache, position_ids), 1) nor computed from a constant inv_freq`);
  if (cos.pos !== sin.pos) return skip(`${where}: cos and sin use different positions`);
  const dtype = h.t.dtype;
  if (dtype !== DataType.FLOAT && dtype !== DataType.FLOAT16) return skip(`${where}: input is not float or float16`);
  let out = add.outputs[0]!;
  // Only the per-use nodes: the shared cos/sin chain and the heads view go once dead (replaceOutput).
  const nodes = [...h.nodes, pm, pr, add];
  let t = h.t,
    rotaryDim: number | null = null;
  const p = partial(h.t, out);
  if (p) [t, out, rotaryDim] = [p.full, p.out, d];
  if (p) nodes.push(...p.nodes);
  const view = splitHeads(t);
  const s4 = t.shape!;
  const heads = view ? view.n : typeof s4[1] === 'number' ? s4[1] : null;
  if (rotaryDim && heads === null) return skip(`${where}: partial rotary needs a known head count`);
  const ps = cos.pos.shape!;
  const expandBatch = ps[0] === 1 && s4[0] !== 1;
  if (!(expandBatch || dimFits(ps[0], s4[0])) || !dimFits(ps[1], s4[2]))
    return skip(`${where}: position_ids ${JSON.stringify(ps)} are neither [B, S] nor [1, S] of the input ${JSON.stringify(s4)}`);
  return { x: view ? view.x : t, heads, view, rotaryDim, out, cos, sin, dtype, expandBatch, nodes, outputs: [out] };
}

/** Per graph: the tables made so far by source key (null: the constant's halves differ). */
type Tables = Map<string, Value | null>;
/** Per graph: tables, [1, S] position_ids expanded to [B, S] per batch dim, rows of computed tables (once needed). */
interface RotaryState {
  tables: Tables;
  positions: Map<string, Value>;
  rows?: TableRows;
}

/** The table for a source, made on first use; `made` lists computed tables made now (for the note). */
function table(g: Graph, s: TableSource, m: RotaryMatch, state: RotaryState, rows: () => TableRows, made: string[]): Value | null {
  const key = `${s.key}:${m.dtype}`;
  if (!state.tables.has(key)) {
    const t = s.build(s.computed ? rows().rows : 0, m.dtype);
    state.tables.set(key, t ? g.addInitializer(t) : null);
    if (t && s.computed) made.push(t.name);
  }
  return state.tables.get(key)!;
}

/** [1, S] position_ids broadcast over the batch, as the Mul by cos/sin did: Expand(pos, [B, 1]), B from the input. */
function batchPositions(g: Graph, m: RotaryMatch, cache: Map<string, Value>, before: Node): Value {
  const b = m.x.shape![0];
  const key = `${m.cos.pos.name}|${typeof b === 'string' ? b : m.x.name}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const p = `${m.cos.pos.name}/edgec_batch`;
  const add = (opType: string, inputs: Value[], attrs?: Record<string, number>) =>
    g.addNode({ opType, name: `${p}/${opType}`, inputs, outputs: [`${p}/${opType}_output_0`], attrs }, before).outputs[0]!;
  const i64 = (name: string, v: number) => g.addInitializer(Tensor.fromInt64(`${p}/${name}`, [1], [v]));
  const batch = add('Slice', [add('Shape', [m.x]), i64('zero', 0), i64('one', 1)]);
  const out = add('Expand', [m.cos.pos, add('Concat', [batch, i64('one_col', 1)], { axis: 0 })]);
  cache.set(key, out);
  return out;
}

function rewrite(model: Model, g: Graph, m: RotaryMatch, state: RotaryState, opts: Opts, ctx: PassContext): string | Skip {
  const rows = () => (state.rows ??= tableRows(model, opts.maxPositions, ctx));
  const made: string[] = []; // tables computed from inv_freq made by this rewrite
  const cosH = table(g, m.cos, m, state, rows, made),
    sinH = table(g, m.sin, m, state, rows, made);
  if (!cosH || !sinH) return skip(`rotary at '${m.out.name}': cache halves differ (not the rotate_half layout)`);
  if (made.length) m.note = `cos/sin tables of ${state.rows!.rows} positions (${state.rows!.from})`;
  model.requireOpset('com.microsoft', 1);
  const anchor = m.out.producer!;
  const base = anchor.name.replace(/\/[^/]*$/, '');
  const attrs: Record<string, number> = { interleaved: 0 };
  if (m.heads !== null) attrs.num_heads = m.heads;
  if (m.rotaryDim !== null) attrs.rotary_embedding_dim = m.rotaryDim;
  const spec = {
    opType: 'RotaryEmbedding',
    domain: 'com.microsoft',
    name: `${base}/RotaryEmbedding`,
    inputs: [m.x, m.expandBatch ? batchPositions(g, m, state.positions, anchor) : m.cos.pos, cosH, sinH],
    attrs,
  };
  if (!m.view) {
    replaceOutput(g, m.out, spec, m.nodes);
    return 'rotary';
  }
  const rot = g.addNode({ ...spec, outputs: [`${base}/RotaryEmbedding_output_0`] }, anchor);
  rot.outputs[0]!.type = m.x.type && { ...m.x.type, shape: m.x.type.shape && [...m.x.type.shape] };
  const rs = g.addNode(
    {
      opType: 'Reshape',
      name: `${base}/RotaryEmbedding/Reshape`,
      inputs: [rot.outputs[0]!, m.view.reshape.inputs[1]!],
      outputs: [`${base}/RotaryEmbedding/Reshape_output_0`],
      attrs: Object.fromEntries(m.view.reshape.attributes.map((a) => [a.name, a])),
    },
    anchor,
  );
  rs.outputs[0]!.type = m.view.reshape.outputs[0]!.type;
  const transpose = {
    opType: 'Transpose',
    name: `${base}/RotaryEmbedding/Transpose`,
    inputs: [rs.outputs[0]!],
    attrs: { perm: [0, 2, 1, 3] },
  };
  replaceOutput(g, m.out, transpose, m.nodes);
  return 'rotary';
}

export const rotaryRule = defineRule<RotaryMatch, RotaryState, Opts>({
  name: 'rotary',
  anchors: ['Add'],
  counts: { rotary: 'rotate_half rotary embeddings fused into RotaryEmbedding' },
  where: (add) => `rotary at '${add.name}'`,
  state: () => ({ tables: new Map(), positions: new Map() }),
  match: (add) => match(add),
  rewrite: (m, { model, graph, state, options, pass }) => rewrite(model, graph, m, state, options, pass),
  finish({ graph, state }) {
    for (const [, v] of state.tables) if (v && !v.uses.length) graph.removeInitializer(v);
  },
});

export const fuseRotary = fusionPass({
  name: 'fuse-rotary',
  description:
    'HF rotate_half rotary embedding (cos/sin from a cache or from inv_freq, partial rotary) -> com.microsoft RotaryEmbedding; ' +
    'computed cos/sin get tables of max_position_embeddings rows (config.json) unless maxPositions says otherwise; ' +
    'one already on split heads runs on the 3-D projection',
  options: OPTIONS,
  requires: ['shapes'],
  rules: [rotaryRule, rotaryHeadsRule],
});
