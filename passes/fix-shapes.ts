// fix-shapes: make a dynamic-shape model static for NPUs (QNN needs fixed shapes). Binds symbolic
// dims (`batch=4;height=448;width=448`) and/or whole input shapes (`pixel_values=4x3x448x448`),
// then alternates infer-shapes and fold-constants until nothing changes, so every Shape-derived
// subgraph folds, including the position-embedding interpolation (Resize of a constant table to a
// now-constant size, evaluated by eval/resize.ts), and finally removes what folding left dead.
// Reports what stays dynamic: symbolic/unknown dims, Shape/Size nodes, data-dependent-shape ops.
import { Dim, Graph, InputError, Model, Value } from '../ir/index.js';
import { definePass, PassContext, PassError, PassStats, resolveOptions } from './pass.js';
import { getPass } from './registry.js';
import './eval/resize.js';

/** Input slots that decide an op's output shape: non-constant there means a data-dependent shape. */
const SHAPE_INPUTS: Record<string, number[]> = {
  Reshape: [1],
  Expand: [1],
  ConstantOfShape: [0],
  Tile: [1],
  Range: [0, 1, 2],
  Slice: [1, 2, 3, 4],
  Resize: [1, 2, 3],
  Upsample: [1],
  Pad: [1, 3],
  TopK: [1],
  OneHot: [1],
  Squeeze: [1],
  Unsqueeze: [1],
  ReduceSum: [1],
  ReduceMean: [1],
  ReduceMax: [1],
  ReduceMin: [1],
  ReduceProd: [1],
  ReduceL2: [1],
  Split: [1],
  CenterCropPad: [1],
};
/** Ops whose output shape depends on input values by definition. */
const ALWAYS_DYNAMIC = new Set(['NonZero', 'Unique', 'Compress', 'NonMaxSuppression', 'StringSplit', 'Loop', 'If', 'Scan']);

export interface DynamicReport {
  symbolicDims: number;
  /** Unknown dims, including every dim of node outputs whose rank is unknown (counted as one). */
  unknownDims: number;
  shapeNodes: number;
  dataDependent: string[];
}

const isConst = (v: Value | null) => !v || (!!v.initializer && !v.isGraphInput);

/** What keeps a model from being static (values with types, Shape/Size nodes, value-shaped ops). */
export function dynamicReport(model: Model): DynamicReport {
  let symbolicDims = 0,
    unknownDims = 0,
    shapeNodes = 0;
  const dataDependent: string[] = [];
  const countDims = (shape: Dim[] | undefined) => {
    if (!shape) {
      unknownDims++;
      return;
    }
    for (const d of shape) {
      if (typeof d === 'string') symbolicDims++;
      else if (d === null || d < 0) unknownDims++;
    }
  };
  for (const g of model.graph.allGraphs()) {
    const seen = new Set<Value>();
    const visit = (v: Value | null) => {
      if (!v || seen.has(v)) return;
      seen.add(v);
      countDims(v.type?.shape);
    };
    g.inputs.forEach(visit);
    g.outputs.forEach(visit);
    for (const n of g.nodes) {
      n.outputs.forEach(visit);
      if ((n.opType === 'Shape' || n.opType === 'Size') && !n.domain) shapeNodes++;
      if (ALWAYS_DYNAMIC.has(n.opType) || (SHAPE_INPUTS[n.opType] ?? []).some((i) => !isConst(n.input(i))))
        dataDependent.push(`${n.name} (${n.opType})`);
    }
  }
  return { symbolicDims, unknownDims, shapeNodes, dataDependent };
}

/** `a=1;b=2` or `a=1,b=2` (or a list of such) -> map. */
export function parseBindings(items: string[], what: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of items
    .flatMap((s) => s.split(/[,;|]/))
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = item.lastIndexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new InputError(`fix-shapes: ${what} entry '${item}' is not name=value`);
    out.set(item.slice(0, eq).trim(), item.slice(eq + 1).trim());
  }
  return out;
}

function positive(s: string, what: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new InputError(`fix-shapes: ${what} must be a positive integer, got '${s}'`);
  return Number(s);
}

function substitute(shape: Dim[] | undefined, dims: Map<string, number>): Dim[] | undefined {
  return shape?.map((d) => (typeof d === 'string' && dims.has(d) ? dims.get(d)! : d));
}

function graphInputs(g: Graph): Value[] {
  return g.inputs.filter((v) => !v.initializer);
}

/** The dims to bind by name, and whole input shapes, checked against the graph's inputs (a named input
 * shape also binds the symbolic dims it replaces). */
function bindings(dims: string[], inputs: string[], ins: Value[]): { dimVals: Map<string, number>; shapes: Map<string, number[]> } {
  const dimVals = new Map<string, number>();
  for (const [k, v] of parseBindings(dims, 'dims')) dimVals.set(k, positive(v, `dim '${k}'`));
  const shapes = new Map<string, number[]>();
  for (const [k, v] of parseBindings(inputs, 'inputs'))
    shapes.set(
      k,
      v.split(/[xX*]/).map((d) => positive(d.trim(), `dim of input '${k}'`)),
    );

  const known = new Set<string>();
  for (const v of ins) for (const d of v.type?.shape ?? []) if (typeof d === 'string') known.add(d);
  for (const name of dimVals.keys())
    if (!known.has(name))
      throw new PassError('fix-shapes', `no input has a dim named '${name}' (symbolic dims: ${[...known].join(', ') || 'none'})`);
  for (const [name, shape] of shapes) {
    const v = ins.find((x) => x.name === name);
    if (!v) throw new PassError('fix-shapes', `no graph input '${name}' (inputs: ${ins.map((x) => x.name).join(', ')})`);
    const cur = v.type?.shape;
    if (cur && cur.length !== shape.length)
      throw new PassError('fix-shapes', `input '${name}' has rank ${cur.length}, got shape ${shape.join('x')}`);
    cur?.forEach((d, i) => {
      if (typeof d === 'number' && d >= 0 && d !== shape[i])
        throw new PassError('fix-shapes', `input '${name}' dim ${i} is ${d}, cannot set ${shape[i]}`);
      if (typeof d === 'string') {
        const prev = dimVals.get(d);
        if (prev !== undefined && prev !== shape[i])
          throw new PassError('fix-shapes', `dim '${d}' = ${prev} conflicts with ${name}[${i}] = ${shape[i]}`);
        dimVals.set(d, shape[i]!);
      }
    });
  }
  return { dimVals, shapes };
}

/** Bind: input shapes, then the same names wherever declared types carry them. */
function bindTypes(g: Graph, ins: Value[], shapes: Map<string, number[]>, dimVals: Map<string, number>): void {
  for (const v of ins) {
    if (!v.type) continue;
    const whole = shapes.get(v.name);
    v.type = { ...v.type, shape: whole ? [...whole] : substitute(v.type.shape, dimVals) };
  }
  for (const sg of g.allGraphs()) {
    for (const v of sg.values.values())
      if (!sg.inputs.includes(v) && v.type?.shape) v.type = { ...v.type, shape: substitute(v.type.shape, dimVals) };
    for (const v of sg.outputs) if (v.type?.shape) v.type = { ...v.type, shape: substitute(v.type.shape, dimVals) };
  }
}

export const fixShapes = definePass({
  name: 'fix-shapes',
  description: 'bind symbolic dims / input shapes and fold all shape arithmetic (incl. position-embedding Resize) into constants',
  options: {
    dims: { type: 'list', default: [], description: "symbolic dim values, e.g. 'batch=4;height=448;width=448'" },
    inputs: { type: 'list', default: [], description: "whole input shapes, e.g. 'pixel_values=4x3x448x448'" },
    foldMaxBytes: {
      type: 'int',
      default: 256 << 20,
      min: 0,
      description: 'largest tensor folding may create (position tables grow with resolution)',
    },
    requireStatic: { type: 'bool', default: false, description: 'fail when anything dynamic remains (NPU targets)' },
    maxRounds: { type: 'int', default: 8, min: 1, max: 64, description: 'infer-shapes/fold-constants rounds at most' },
  },
  statistics: {
    dimsBound: 'symbolic dims given a value',
    rounds: 'infer-shapes/fold-constants rounds',
    folded: 'nodes folded',
    shapesFolded: 'Shape/Size folded',
    removedByCleanup: 'nodes and initializers cleanup removed',
    nodesBefore: 'nodes before',
    nodesAfter: 'nodes after',
    symbolicDimsBefore: 'symbolic dims before',
    symbolicDimsAfter: 'symbolic dims after',
    unknownDimsAfter: 'unknown dims after',
    shapeNodesBefore: 'Shape/Size nodes before',
    shapeNodesAfter: 'Shape/Size nodes after',
    dataDependentBefore: 'data-dependent shapes before',
    dataDependentAfter: 'data-dependent shapes after',
  },
  async run(model: Model, options, ctx: PassContext): Promise<PassStats> {
    const infer = getPass('infer-shapes'),
      fold = getPass('fold-constants'),
      cleanup = getPass('cleanup');
    if (!infer || !fold || !cleanup)
      throw new PassError('fix-shapes', 'needs the infer-shapes, fold-constants and cleanup passes registered');
    const g = model.graph;
    const ins = graphInputs(g);
    const { dimVals, shapes } = bindings(options.dims, options.inputs, ins);

    const inferOpts = resolveOptions(infer, {});
    // Measured on inferred types, so "before" counts every dynamic value, not only declared ones.
    await infer.run(model, inferOpts, ctx);
    const before = dynamicReport(model);
    const nodesBefore = [...g.allGraphs()].reduce((s, x) => s + x.nodes.length, 0);
    bindTypes(g, ins, shapes, dimVals);

    const foldOpts = resolveOptions(fold, { maxBytes: options.foldMaxBytes, shapes: true });
    let folded = 0,
      shapesFolded = 0,
      rounds = 0;
    const foldSkips = new Set<string>();
    for (; rounds < options.maxRounds;) {
      rounds++;
      await infer.run(model, inferOpts, ctx);
      const st = await fold.run(model, foldOpts, ctx);
      st.skipped?.forEach((s) => foldSkips.add(s));
      const n = (st.counts.folded ?? 0) + (st.counts.shapesFolded ?? 0);
      folded += st.counts.folded ?? 0;
      shapesFolded += st.counts.shapesFolded ?? 0;
      for (const sg of g.allGraphs()) sg.sortTopologically();
      if (n === 0) break;
    }
    const cl = await cleanup.run(model, resolveOptions(cleanup, {}), ctx);
    await infer.run(model, inferOpts, ctx);

    const after = dynamicReport(model);
    const nodesAfter = [...g.allGraphs()].reduce((s, x) => s + x.nodes.length, 0);
    const stats: PassStats = {
      counts: {
        dimsBound: dimVals.size,
        rounds,
        folded,
        shapesFolded,
        removedByCleanup: Object.values(cl.counts).reduce((s, x) => s + x, 0),
        nodesBefore,
        nodesAfter,
        symbolicDimsBefore: before.symbolicDims,
        symbolicDimsAfter: after.symbolicDims,
        unknownDimsAfter: after.unknownDims,
        shapeNodesBefore: before.shapeNodes,
        shapeNodesAfter: after.shapeNodes,
        dataDependentBefore: before.dataDependent.length,
        dataDependentAfter: after.dataDependent.length,
      },
    };
    const left: string[] = [];
    if (after.symbolicDims || after.unknownDims) left.push(`${after.symbolicDims} symbolic and ${after.unknownDims} unknown dims remain`);
    if (after.shapeNodes) left.push(`${after.shapeNodes} Shape/Size nodes remain`);
    if (after.dataDependent.length)
      left.push(
        `data-dependent shapes at ${after.dataDependent.slice(0, 5).join(', ')}${after.dataDependent.length > 5 ? ` (+${after.dataDependent.length - 5})` : ''}`,
      );
    if (left.length) {
      stats.skipped = [...left, ...foldSkips];
      if (options.requireStatic) throw new PassError('fix-shapes', `model is not static: ${left.join('; ')}`);
    }
    return stats;
  },
});
