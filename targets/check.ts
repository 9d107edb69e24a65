// Target check: every node against the target's capability table, static shapes where the target
// needs them, tensors against the device's binding limit. Lists node names with reasons.
import { CheckError, DataType, InputError, Graph, Model, Node, Value, dtypeName, isFloat, numElements } from '../ir/index.js';
import type { DeviceProfile, Target } from './target.js';

export interface CheckIssue {
  /** Node name, or the value name for graph inputs/outputs and initializers. */
  node: string;
  op: string;
  kind: 'unsupported-op' | 'unsupported-dtype' | 'attribute-limit' | 'dynamic-dim' | 'over-limit';
  reason: string;
}

/** com.microsoft ops with no ai.onnx namesake, matched by name in passes and targets. */
const CONTRIB_ONLY = new Set([
  'MatMulNBits',
  'GatherBlockQuantized',
  'GroupQueryAttention',
  'MultiHeadAttention',
  'SkipLayerNormalization',
  'SkipSimplifiedLayerNormalization',
  'QuickGelu',
  'FastGelu',
  'BiasGelu',
]);

/** A contrib op name in another domain is a domain mix-up no runtime registers; refused before the
 * passes read it as the contrib op (a fuzzer finding: a MatMulNBits without its attributes). */
export function refuseMisplacedContribOps(model: Model, file: string): void {
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      if (!CONTRIB_ONLY.has(n.opType) || n.domain === 'com.microsoft') continue;
      throw new InputError(
        `node '${n.name}' is ${n.opType} in domain '${n.domain || 'ai.onnx'}'; the op exists only in com.microsoft`,
        file,
      );
    }
  }
}

const CAST_OPS = new Set(['Cast', 'CastLike', 'QuantizeLinear', 'DequantizeLinear', 'Shape', 'Size']);

function dynamicDims(v: Value): string | undefined {
  const s = v.type?.shape;
  if (!v.type) return undefined;
  if (!s) return 'rank unknown';
  const bad = s.map((d, i) => (typeof d === 'number' && d >= 0 ? null : `axis ${i} = ${d === null ? '?' : `'${d}'`}`)).filter(Boolean);
  return bad.length ? bad.join(', ') : undefined;
}

function valueBytes(v: Value): number | undefined {
  if (v.initializer) return v.initializer.byteLength;
  const s = v.type?.shape;
  if (!s || !v.type || !s.every((d) => typeof d === 'number')) return undefined;
  const bits = v.type.elemType === DataType.INT4 || v.type.elemType === DataType.UINT4 ? 4 : undefined;
  const n = numElements(s as number[]);
  if (bits) return Math.ceil(n / 2);
  const width: Partial<Record<DataType, number>> = {
    [DataType.FLOAT]: 4,
    [DataType.FLOAT16]: 2,
    [DataType.INT64]: 8,
    [DataType.INT32]: 4,
    [DataType.UINT8]: 1,
    [DataType.INT8]: 1,
    [DataType.UINT16]: 2,
    [DataType.INT16]: 2,
    [DataType.BOOL]: 1,
    [DataType.DOUBLE]: 8,
  };
  const w = width[v.type.elemType];
  return w === undefined ? undefined : n * w;
}

/** All reasons a model cannot run as a whole on `target` with `profile`. Empty = runs. */
export function checkModel(model: Model, target: Target, profile: DeviceProfile): CheckIssue[] {
  const issues: CheckIssue[] = [];
  const limit = Math.min(profile.maxBindingBytes, profile.maxBufferBytes);
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) checkNode(n, target, profile, issues);
    if (Number.isFinite(limit)) {
      for (const t of g.initializers) {
        if (t.byteLength > limit) {
          const users =
            g.values
              .get(t.name)
              ?.consumers.map((c) => `'${c.name}'`)
              .join(', ') || 'no node';
          issues.push({
            node: t.name,
            op: 'initializer',
            kind: 'over-limit',
            reason: `tensor of ${t.byteLength} bytes exceeds the ${profile.name} binding limit of ${limit} bytes (used by ${users})`,
          });
        }
      }
      for (const n of g.nodes) {
        for (const o of n.outputs) {
          const b = o ? valueBytes(o) : undefined;
          if (o && b !== undefined && b > limit)
            issues.push({
              node: n.name,
              op: n.opType,
              kind: 'over-limit',
              reason: `output '${o.name}' of ${b} bytes exceeds the ${profile.name} binding limit of ${limit} bytes`,
            });
        }
      }
    }
  }
  if (target.staticShapes) checkStatic(model.graph, issues);
  return issues;
}

function checkNode(n: Node, target: Target, profile: DeviceProfile, issues: CheckIssue[]): void {
  const table = target.capabilities;
  const entry = table.get(n);
  const op = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType;
  if (!entry) {
    issues.push({ node: n.name, op, kind: 'unsupported-op', reason: `${op} is not supported by ${table.ep}` });
    return;
  }
  const why = entry.limit?.(n);
  if (why) issues.push({ node: n.name, op, kind: 'attribute-limit', reason: why });
  if (CAST_OPS.has(n.opType)) return;
  for (const v of [...n.inputs, ...n.outputs]) {
    const t = v?.dtype;
    if (t === undefined || !isFloat(t)) continue;
    if (!table.floatTypes.includes(t)) {
      issues.push({
        node: n.name,
        op,
        kind: 'unsupported-dtype',
        reason: `'${v!.name}' is ${dtypeName(t)}; ${table.ep} computes in ${table.floatTypes.map(dtypeName).join('/')}`,
      });
      return;
    }
    if (t === DataType.FLOAT16 && profile.shaderF16 === false) {
      issues.push({ node: n.name, op, kind: 'unsupported-dtype', reason: `'${v!.name}' is float16 but ${profile.name} has no shader-f16` });
      return;
    }
  }
}

function checkStatic(g: Graph, issues: CheckIssue[]): void {
  for (const v of [...g.inputs, ...g.outputs]) {
    const d = dynamicDims(v);
    if (d)
      issues.push({
        node: v.name,
        op: v.isGraphInput ? 'graph input' : 'graph output',
        kind: 'dynamic-dim',
        reason: `dynamic shape (${d}); static-shape targets need every dim fixed (--fix name=N)`,
      });
  }
  for (const sg of g.allGraphs()) {
    for (const n of sg.nodes) {
      if (n.subgraphs().length)
        issues.push({ node: n.name, op: n.opType, kind: 'dynamic-dim', reason: `${n.opType} has a subgraph: control flow is not static` });
      for (const o of n.outputs) {
        if (!o || g.outputs.includes(o)) continue;
        const d = o.type?.shape ? dynamicDims(o) : undefined;
        if (d) {
          issues.push({ node: n.name, op: n.opType, kind: 'dynamic-dim', reason: `output '${o.name}' has a dynamic shape (${d})` });
          break;
        }
      }
    }
  }
}

/** Throw a CheckError listing every issue (one line each) unless fallback is allowed. */
export function enforce(issues: { model: string; issue: CheckIssue }[], targetName: string): void {
  if (!issues.length) return;
  const nodes = new Set(issues.map((i) => `${i.model}:${i.issue.node}`));
  throw new CheckError(
    `${nodes.size} node${nodes.size === 1 ? '' : 's'} cannot run on ${targetName} (use --allow-fallback to emit anyway): ${[...nodes].slice(0, 5).join(', ')}${nodes.size > 5 ? ', ...' : ''}`,
    issues.map((i) => `${i.model}: node '${i.issue.node}' (${i.issue.op}): ${i.issue.reason}`),
  );
}
