// infer-shapes: dtypes and shapes with symbolic dims for every value the op rules cover, plus the
// symbolic contents of small int shape tensors, so Reshape(Concat(Shape(x)[0], ...)) gets
// [batch, ...]. Inferred facts merge with declared ones: a number beats a name, a declared name
// beats an expression or unknown. Graph inputs are never touched.
import { DataType, Dim, Graph, Model, Node, TensorType, Value, isFloat } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';
import { rules, type RuleCtx } from './shape/rules.js';

const MAX_VALUE_LEN = 64;

function mergeDim(declared: Dim | undefined, inferred: Dim): Dim {
  if (typeof inferred === 'number') return inferred;
  if (typeof declared === 'number' && declared >= 0) return declared;
  if (typeof declared === 'string') return declared;
  return inferred;
}

function merge(declared: TensorType | undefined, inferred: TensorType): TensorType {
  const elemType = inferred.elemType || declared?.elemType || DataType.UNDEFINED;
  if (!inferred.shape) return declared?.shape ? { elemType, shape: [...declared.shape] } : { elemType };
  if (!declared?.shape || declared.shape.length !== inferred.shape.length) return { elemType, shape: [...inferred.shape] };
  return { elemType, shape: inferred.shape.map((d, i) => mergeDim(declared.shape![i], d)) };
}

const sameType = (a: TensorType | undefined, b: TensorType | undefined) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

export class ShapeInference {
  values = new Map<Value, Dim[]>();
  changed = 0;
  missingRules = new Set<string>();
  failures: string[] = [];

  constructor(
    readonly opset: number,
    readonly writeValueInfo: boolean,
  ) {}

  valueOf(v: Value | null): Dim[] | undefined {
    if (!v) return undefined;
    const known = this.values.get(v);
    if (known) return known;
    // An initializer that is also a graph input is only a default: the caller may override it.
    const t = v.isGraphInput ? null : v.initializer;
    if (t && !isFloat(t.dtype) && t.dtype !== DataType.STRING && t.dims.length <= 1 && t.size <= MAX_VALUE_LEN) {
      const vals = Array.from(t.toNumbers());
      this.values.set(v, vals);
      return vals;
    }
    return undefined;
  }

  graph(g: Graph): void {
    for (const n of g.nodes) {
      for (const sg of n.subgraphs()) this.graph(sg);
      this.node(n);
    }
  }

  node(n: Node): void {
    const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}::${n.opType}` : n.opType;
    const rule = rules[key];
    if (!rule) {
      this.missingRules.add(key);
      return;
    }
    const self = this;
    const ctx: RuleCtx = {
      node: n,
      opset: this.opset,
      type: (i) => n.input(i)?.type,
      shape: (i) => n.input(i)?.type?.shape,
      dtype: (i) => n.input(i)?.type?.elemType || undefined,
      value: (i) => self.valueOf(n.input(i)),
      ints: (i) => {
        const v = self.valueOf(n.input(i));
        return v && v.every((d) => typeof d === 'number') ? (v as number[]) : undefined;
      },
      has: (i) => !!n.input(i),
    };
    let outs;
    try {
      outs = rule(ctx);
    } catch (e) {
      this.failures.push(`${n.name} (${n.opType}): ${(e as Error).message}`);
      return;
    }
    outs.forEach((o, i) => {
      const v = n.output(i);
      if (!v) return;
      if (o.value && o.value.length <= MAX_VALUE_LEN) this.values.set(v, o.value);
      if (!o.type || !o.type.elemType) return;
      const merged = merge(v.type, o.type);
      if (!sameType(merged, v.type)) {
        v.type = merged;
        this.changed++;
      }
      if (this.writeValueInfo && !v.isGraphOutput) v.hasValueInfo = true;
    });
  }
}

export function countTyped(model: Model): { typed: number; unknown: number; symbolicDims: number; unknownDims: number } {
  let typed = 0,
    unknown = 0,
    symbolicDims = 0,
    unknownDims = 0;
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      for (const o of n.outputs) {
        if (!o) continue;
        if (o.type?.elemType && o.type.shape) {
          typed++;
          for (const d of o.type.shape) {
            if (typeof d === 'string') symbolicDims++;
            else if (d === null) unknownDims++;
          }
        } else unknown++;
      }
    }
  }
  return { typed, unknown, symbolicDims, unknownDims };
}

export const inferShapes = definePass({
  name: 'infer-shapes',
  description: 'infer dtypes and (symbolic) shapes of every value, tracking small shape tensors symbolically',
  options: {
    writeValueInfo: { type: 'bool', default: true, description: 'record inferred types as value_info in the saved model' },
  },
  statistics: {
    valuesTyped: 'values with a known dtype and rank',
    unknown: 'values left untyped',
    symbolicDims: 'symbolic dims',
    unknownDims: 'unknown dims',
    changed: 'values whose type changed',
  },
  run(model, options): PassStats {
    const inf = new ShapeInference(model.opset('') ?? 21, options.writeValueInfo);
    inf.graph(model.graph);
    const c = countTyped(model);
    const stats: PassStats = {
      counts: { valuesTyped: c.typed, unknown: c.unknown, symbolicDims: c.symbolicDims, unknownDims: c.unknownDims, changed: inf.changed },
    };
    if (inf.missingRules.size) stats.skipped = [`no shape rule for: ${[...inf.missingRules].sort().join(', ')}`];
    if (inf.failures.length) (stats.skipped ??= []).push(...inf.failures.slice(0, 10));
    return stats;
  },
});
