// Small graph edits shared by the quantization format passes.
import { DataType, Graph, Node, Value, isFloat } from '../../ir/index.js';

/** Remove an initializer once nothing uses it: quantized weights replace their fp32 source as we go. */
export function dropIfUnused(v: Value | null | undefined): boolean {
  if (!v || !v.initializer || v.uses.length || v.isGraphOutput || v.isGraphInput) return false;
  v.graph.removeInitializer(v);
  return true;
}

/** Remove a node whose outputs nothing reads, then its now-unused constant inputs. */
export function removeDeadNode(n: Node): boolean {
  if (n.outputs.some((o) => o && (o.uses.length || o.isGraphOutput))) return false;
  const ins = [...n.inputs];
  n.graph.removeNode(n, true);
  for (const v of ins) dropIfUnused(v);
  return true;
}

/** A value's float element type: its own, or that of the tensor it comes from. */
export function floatTypeOf(v: Value | null | undefined, fallback: DataType): DataType {
  const t = v?.dtype ?? v?.initializer?.dtype;
  return t === DataType.FLOAT || t === DataType.FLOAT16 || t === DataType.BFLOAT16 ? t : fallback;
}

/** Glob (`*`, `?`) to an anchored regex. */
export function globToRegex(glob: string): RegExp {
  const esc = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}

/** A pattern matches a node by exact name, op type, or glob over the node name or its weight's name. */
export function matchesAny(patterns: readonly string[], node: Node, weightName?: string): boolean {
  return patterns.some((p) => {
    if (p === node.name || p === node.opType || (weightName && p === weightName)) return true;
    if (!/[*?]/.test(p)) return false;
    const re = globToRegex(p);
    return re.test(node.name) || (weightName !== undefined && re.test(weightName));
  });
}

/** Nodes of a whole-MLLM graph computed from its images alone (vision encoder and projector): they
 * read a float image input (rank 4) through data, and no integer input (token ids, masks). Shape and
 * Size read shapes only, so what follows them alone carries no data. */
export function imageOnlyNodes(g: Graph): Set<Node> {
  const IMG = 1,
    IDS = 2;
  const flags = new Map<Value, number>();
  for (const v of g.inputs) {
    if (v.initializer) continue;
    if (v.dtype !== undefined && isFloat(v.dtype) && v.shape?.length === 4) flags.set(v, IMG);
    else if (v.dtype !== undefined && !isFloat(v.dtype)) flags.set(v, IDS);
  }
  const out = new Set<Node>();
  for (const n of g.nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size') continue;
    let f = 0;
    for (const i of n.inputs) if (i) f |= flags.get(i) ?? 0;
    if (!f) continue;
    for (const o of n.outputs) if (o) flags.set(o, f);
    if (f === IMG) out.add(n);
  }
  return out;
}
