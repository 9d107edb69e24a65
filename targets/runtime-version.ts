// The oldest onnxruntime that loads an artifact, and lowering for a pinned one (`--runtime-version
// X.Y`: apps pin their runtime; each transformers.js release ships a fixed onnxruntime-web).
// Versions are from onnxruntime's operator docs and release notes; the 1.20 rejections were
// measured with onnxruntime-node 1.20.1 on edgec artifacts (GatherBlockQuantized `bits`,
// 8-bit MatMulNBits, GroupQueryAttention with the attention-bias input).
import type { Model, Node } from '../ir/index.js';
import type { CheckIssue } from './check.js';

export interface Requirement {
  version: string;
  why: string;
}

/** What a node needs, or undefined when every supported runtime (>= 1.17) runs it. */
function nodeNeeds(n: Node): Requirement | undefined {
  const ms = n.domain === 'com.microsoft';
  if (ms && n.opType === 'MatMulNBits' && n.attrInt('bits', 4) === 8) return { version: '1.21', why: '8-bit MatMulNBits' };
  if (ms && n.opType === 'GatherBlockQuantized') {
    if (n.attr('bits') !== undefined) return { version: '1.21', why: "GatherBlockQuantized with the 'bits' attribute" };
    return { version: '1.20', why: 'GatherBlockQuantized' };
  }
  // position_ids / attention_bias inputs (index 9, 10) came after the 9-input form.
  if (ms && n.opType === 'GroupQueryAttention' && n.inputs.length > 9 && n.inputs.slice(9).some((v) => v))
    return { version: '1.22', why: 'GroupQueryAttention with position_ids/attention_bias inputs' };
  return undefined;
}

const OPSET_MIN: Record<number, string> = { 21: '1.18', 22: '1.20', 23: '1.22', 24: '1.23' };

export const cmpVersion = (a: string, b: string): number => {
  const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)];
  return x[0]! - y[0]! || (x[1] ?? 0) - (y[1] ?? 0);
};

export function parseRuntimeVersion(v: string): string {
  const m = /^(\d+)\.(\d+)$/.exec(v.trim());
  if (!m) throw new Error(`--runtime-version '${v}' is not X.Y (e.g. 1.20)`);
  return `${Number(m[1])}.${Number(m[2])}`;
}

/** The oldest onnxruntime that loads every model, with the features that set it. */
export function minRuntime(models: Model[]): { onnxruntime: string; because: string[] } {
  let v = '1.17';
  const why = new Map<string, string>();
  const need = (r: Requirement) => {
    if (cmpVersion(r.version, v) > 0) v = r.version;
    why.set(r.why, r.version);
  };
  for (const m of models) {
    const opset = m.opset('') ?? 0;
    for (const [o, ver] of Object.entries(OPSET_MIN)) if (opset >= Number(o)) need({ version: ver, why: `ai.onnx opset ${Number(o)}` });
    for (const g of m.graph.allGraphs())
      for (const n of g.nodes) {
        const r = nodeNeeds(n);
        if (r) need(r);
      }
  }
  const because = [...why]
    .filter(([, ver]) => ver === v)
    .map(([w]) => w)
    .sort();
  return { onnxruntime: v, because };
}

/** Rewrite what an older runtime spells differently; list what it cannot run at all. */
export function lowerForRuntime(model: Model, version: string): { counts: Record<string, number>; issues: CheckIssue[] } {
  const counts = { droppedBitsAttr: 0 };
  const issues: CheckIssue[] = [];
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      // Before 1.21 GatherBlockQuantized is 4-bit only and has no 'bits' attribute.
      if (
        n.domain === 'com.microsoft' &&
        n.opType === 'GatherBlockQuantized' &&
        cmpVersion(version, '1.21') < 0 &&
        n.attr('bits') !== undefined
      ) {
        if (n.attrInt('bits', 4) === 4) {
          n.removeAttr('bits');
          counts.droppedBitsAttr++;
        }
      }
      const r = nodeNeeds(n);
      if (r && cmpVersion(r.version, version) > 0) {
        issues.push({
          node: n.name || n.opType,
          op: `${n.domain}:${n.opType}`,
          kind: 'attribute-limit',
          reason: `${r.why} needs onnxruntime >= ${r.version} (--runtime-version ${version})`,
        });
      }
    }
    const opset = model.opset('') ?? 0;
    const need = Object.entries(OPSET_MIN)
      .filter(([o]) => opset >= Number(o))
      .map(([, v]) => v)
      .sort(cmpVersion)
      .pop();
    if (g === model.graph && need && cmpVersion(need, version) > 0)
      issues.push({
        node: '(model)',
        op: 'opset',
        kind: 'attribute-limit',
        reason: `ai.onnx opset ${opset} needs onnxruntime >= ${need} (--runtime-version ${version})`,
      });
  }
  return { counts, issues };
}

/** Passes that would write what the pinned runtime rejects. */
export function passesToSkip(version: string | undefined): string[] {
  // fuse-attention's GroupQueryAttention takes the causal/padding mask as attention_bias (1.22+).
  return version && cmpVersion(version, '1.22') < 0 ? ['fuse-attention'] : [];
}
