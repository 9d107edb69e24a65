// cleanup: remove what does not change the outputs: dead nodes, unused initializers (and unused
// initializer-backed graph inputs), Identity and no-op Cast/Reshape/Transpose/Expand/Dropout,
// duplicate initializers and common subexpressions. Graph output names never change: a node that
// produces a graph output is bypassed by renaming its producer's output, or kept.
import { createHash } from 'node:crypto';
import { AttrType, Attribute, Graph, Model, Node, Tensor, Value, readRange } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';

const NON_DETERMINISTIC = new Set([
  'RandomNormal',
  'RandomUniform',
  'RandomNormalLike',
  'RandomUniformLike',
  'Multinomial',
  'Bernoulli',
  'Dropout',
]);

type Counts = Record<string, number>;

/** Counts, and every value some graph (main or nested) lists as an output: those must stay,
 * including outer values a subgraph returns directly. */
interface Ctx {
  counts: Counts;
  pinned: Set<Value>;
}

/** Disconnect a node now (its uses must not keep others alive in this sweep) and drop it from
 * `nodes` in one `removeNodes` at the end: one splice per node would make removing most of a big
 * graph quadratic. */
function detach(node: Node, removed: Set<Node>): void {
  node.disconnect();
  removed.add(node);
}

/** Remove `node`, whose output `out` always equals `src`. False when a graph output name would break. */
function bypass(g: Graph, node: Node, out: Value, src: Value, ctx: Ctx, removed: Set<Node>): boolean {
  if (node.outputs.some((o) => o && o !== out && (o.uses.length || ctx.pinned.has(o)))) return false;
  if (!ctx.pinned.has(out)) {
    g.replaceAllUses(out, src);
    detach(node, removed);
    return true;
  }
  // `out` names a graph output: let src's producer produce `out` instead, when that is safe.
  const p = src.producer;
  if (ctx.pinned.has(src) || src.isGraphInput || src.initializer || !p || p.graph !== g || src.graph !== g) return false;
  node.setOutput(node.outputs.indexOf(out), null);
  detach(node, removed);
  g.replaceAllUses(src, out);
  p.setOutput(p.outputs.indexOf(src), out);
  g.forgetValue(src);
  return true;
}

function staticShape(v: Value | null): number[] | undefined {
  const s = v?.type?.shape;
  return s && s.every((d) => typeof d === 'number' && d >= 0) ? (s as number[]) : undefined;
}

const constInts = (v: Value | null): number[] | undefined =>
  v?.initializer && !v.isGraphInput ? Array.from(v.initializer.toNumbers()) : undefined;

/** Which no-op a node is, if any (its output 0 equals input 0). */
function noopKind(n: Node): string | undefined {
  if (n.domain && n.domain !== 'ai.onnx') return undefined;
  const x = n.input(0);
  if (!x) return undefined;
  switch (n.opType) {
    case 'Identity':
      return 'identity';
    case 'Dropout': {
      if (n.hasAttr('is_test') && n.attrInt('is_test') === 0) return undefined;
      const training = n.input(2);
      if (training && !(constInts(training)?.[0] === 0)) return undefined;
      return 'dropout';
    }
    case 'Cast':
      return x.type && x.type.elemType === n.attrInt('to') ? 'noopCast' : undefined;
    case 'Transpose': {
      const r = x.type?.shape?.length;
      const perm = n.hasAttr('perm') ? n.attrInts('perm') : r !== undefined && r <= 1 ? [] : undefined;
      return perm && perm.every((p, i) => p === i) && (r === undefined || perm.length === r || r <= 1) ? 'noopTranspose' : undefined;
    }
    case 'Reshape': {
      const s = staticShape(x),
        shape = constInts(n.input(1));
      if (!s || !shape || shape.length !== s.length) return undefined;
      const allowzero = n.attrInt('allowzero', 0) === 1;
      const ok = shape.every(
        (d, i) => d === s[i] || (d === 0 && !allowzero) || (d === -1 && shape.filter((k) => k === -1).length === 1 && !s.includes(0)),
      );
      return ok ? 'noopReshape' : undefined;
    }
    case 'Expand': {
      const s = x.type?.shape,
        shape = constInts(n.input(1));
      if (!s || !shape || shape.length > s.length) return undefined;
      const off = s.length - shape.length;
      return shape.every((d, i) => d === 1 || d === s[off + i]) ? 'noopExpand' : undefined;
    }
  }
  return undefined;
}

function removeNoops(g: Graph, ctx: Ctx): number {
  let n = 0;
  const removed = new Set<Node>();
  for (const node of [...g.nodes]) {
    const kind = noopKind(node);
    const out = node.output(0);
    if (!kind || !out) continue;
    if (bypass(g, node, out, node.input(0)!, ctx, removed)) {
      ctx.counts[kind] = (ctx.counts[kind] ?? 0) + 1;
      n++;
    }
  }
  g.removeNodes(removed);
  return n;
}

function removeDead(g: Graph, ctx: Ctx): number {
  let n = 0;
  const removed = new Set<Node>();
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const node = g.nodes[i]!;
    if (node.outputs.some((o) => o && (o.uses.length || ctx.pinned.has(o)))) continue;
    detach(node, removed);
    n++;
  }
  g.removeNodes(removed);
  ctx.counts.deadNodes! += n;
  return n;
}

function removeUnusedInitializers(g: Graph, isMain: boolean, ctx: Ctx): number {
  let n = 0;
  for (const name of [...g.initializerNames]) {
    const v = g.values.get(name);
    if (!v || v.uses.length || ctx.pinned.has(v)) continue;
    if (v.isGraphInput) {
      if (!isMain) continue;
      g.removeInput(v);
      ctx.counts.unusedInputs!++;
    }
    g.removeInitializer(v);
    ctx.counts.unusedInitializers!++;
    n++;
  }
  return n;
}

function tensorDigest(t: Tensor): string {
  const h = createHash('sha256');
  if (t.data.kind === 'strings') for (const s of t.data.values) h.update(s).update('\0');
  else t.forEachChunk(1 << 24, (c) => h.update(c));
  return h.digest('hex');
}

/** The first bytes, so equal-shaped weights that differ early are never read in full. */
function headKey(t: Tensor): string {
  const n = Math.min(4096, t.byteLength);
  const d = t.data;
  const head = d.kind === 'external' ? readRange(d.ref.file, d.ref.offset, n) : t.bytes().subarray(0, n);
  return createHash('sha256').update(head).digest('hex');
}

function dedupeInitializers(g: Graph, ctx: Ctx): number {
  const bySize = new Map<string, Value[]>();
  const sameSize = new Map<string, Value[]>();
  for (const name of g.initializerNames) {
    const v = g.values.get(name);
    if (!v?.initializer || v.isGraphInput || ctx.pinned.has(v) || v.initializer.data.kind === 'strings') continue;
    const t = v.initializer;
    const key = `${t.dtype}|${t.dims.join(',')}|${t.byteLength}`;
    if (!sameSize.has(key)) sameSize.set(key, []);
    sameSize.get(key)!.push(v);
  }
  for (const [size, vs] of sameSize) {
    if (vs.length < 2) continue;
    for (const v of vs) {
      const key = `${size}|${headKey(v.initializer!)}`;
      if (!bySize.has(key)) bySize.set(key, []);
      bySize.get(key)!.push(v);
    }
  }
  let n = 0;
  for (const group of bySize.values()) {
    if (group.length < 2) continue;
    const seen = new Map<string, Value>();
    for (const v of group) {
      const d = tensorDigest(v.initializer!);
      const keep = seen.get(d);
      if (!keep) {
        seen.set(d, v);
        continue;
      }
      g.replaceAllUses(v, keep);
      g.removeInitializer(v);
      n++;
    }
  }
  ctx.counts.duplicateInitializers! += n;
  return n;
}

function attrKey(a: Attribute): string | undefined {
  switch (a.type) {
    case AttrType.GRAPH:
    case AttrType.GRAPHS:
    case AttrType.SPARSE_TENSOR:
    case AttrType.SPARSE_TENSORS:
    case AttrType.TYPE_PROTO:
    case AttrType.TYPE_PROTOS:
    case AttrType.TENSORS:
      return undefined;
    case AttrType.TENSOR:
      return a.value.byteLength > 1 << 16 ? undefined : `${a.name}=T${a.value.dtype}[${a.value.dims}]${tensorDigest(a.value)}`;
    case AttrType.STRING:
      return `${a.name}=S${Buffer.from(a.value).toString('hex')}`;
    case AttrType.STRINGS:
      return `${a.name}=SS${a.value.map((s) => Buffer.from(s).toString('hex')).join(',')}`;
    default:
      return `${a.name}=${a.type}:${JSON.stringify(a.value, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`;
  }
}

function eliminateCommon(g: Graph, ctx: Ctx): number {
  const ids = new Map<Value, number>();
  const id = (v: Value | null) => {
    if (!v) return -1;
    if (!ids.has(v)) ids.set(v, ids.size);
    return ids.get(v)!;
  };
  const seen = new Map<string, Node>();
  const removed = new Set<Node>();
  let n = 0;
  for (const node of [...g.nodes]) {
    if (NON_DETERMINISTIC.has(node.opType) || node.subgraphs().length) continue;
    const attrs = [...node.attributes].sort((a, b) => (a.name < b.name ? -1 : 1)).map(attrKey);
    if (attrs.some((k) => k === undefined)) continue;
    const key = `${node.domain}|${node.opType}|${node.inputs.map(id).join(',')}|${node.outputs.map((o) => (o ? 1 : 0)).join('')}|${attrs.join(';')}`;
    const first = seen.get(key);
    if (!first) {
      seen.set(key, node);
      continue;
    }
    if (node.outputs.some((o, i) => o && (ctx.pinned.has(o) || !first.outputs[i]))) continue;
    node.outputs.forEach((o, i) => {
      if (o) g.replaceAllUses(o, first.outputs[i]!);
    });
    detach(node, removed);
    n++;
  }
  g.removeNodes(removed);
  ctx.counts.commonSubexpressions! += n;
  return n;
}

function cleanupGraph(g: Graph, isMain: boolean, ctx: Ctx): number {
  let total = 0;
  for (let round = 0; round < 20; round++) {
    const n =
      dedupeInitializers(g, ctx) +
      eliminateCommon(g, ctx) +
      removeNoops(g, ctx) +
      removeDead(g, ctx) +
      removeUnusedInitializers(g, isMain, ctx);
    total += n;
    if (!n) break;
  }
  return total;
}

export const cleanup = definePass({
  name: 'cleanup',
  description: 'remove dead nodes, unused initializers, Identity and no-op ops, duplicate initializers and common subexpressions',
  options: {},
  statistics: {
    deadNodes: 'nodes whose outputs nothing reads',
    unusedInitializers: 'initializers nothing reads',
    unusedInputs: 'initializer-backed graph inputs nothing reads',
    duplicateInitializers: 'initializers equal to an earlier one',
    commonSubexpressions: 'nodes computing what an earlier node computes',
    identity: 'Identity nodes',
    dropout: 'inference-mode Dropout nodes',
    noopCast: 'Casts to the same type',
    noopReshape: 'Reshapes to the same shape',
    noopTranspose: 'identity Transposes',
    noopExpand: 'Expands that change nothing',
  },
  run(model: Model): PassStats {
    const counts: Counts = {
      deadNodes: 0,
      unusedInitializers: 0,
      unusedInputs: 0,
      duplicateInitializers: 0,
      commonSubexpressions: 0,
      identity: 0,
      dropout: 0,
      noopCast: 0,
      noopReshape: 0,
      noopTranspose: 0,
      noopExpand: 0,
    };
    // Inner graphs first: their uses of outer values decide what stays alive outside.
    const graphs = [...model.graph.allGraphs()].reverse();
    const ctx: Ctx = { counts, pinned: new Set(graphs.flatMap((g) => g.outputs)) };
    for (let round = 0; round < 5; round++) {
      let n = 0;
      for (const g of graphs) n += cleanupGraph(g, g === model.graph, ctx);
      if (!n) break;
    }
    return { counts };
  },
});
