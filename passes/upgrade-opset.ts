// Default-domain opset converter: rewrites nodes whose signatures changed between the model's opset
// and the target (attributes that became inputs, changed defaults and semantics), then stamps the
// new version. Ops it cannot convert exactly are listed and the model is left unchanged.
import { AttrType, DataType, Graph, Model, Node, Tensor, Value, dtypeFromName } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';

const EXPERIMENTAL = new Set([
  'ATen',
  'Affine',
  'Crop',
  'DynamicSlice',
  'GRUUnit',
  'GivenTensorFill',
  'ImageScaler',
  'ParametricSoftplus',
  'Scale',
  'ScaledTanh',
  'MeanVarianceNormalization_1',
]);
const BROADCAST_OPS = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'And', 'Or', 'Xor', 'Equal', 'Greater', 'Less', 'PRelu']);
const REDUCE_18 = new Set([
  'ReduceMean',
  'ReduceMax',
  'ReduceMin',
  'ReduceProd',
  'ReduceL1',
  'ReduceL2',
  'ReduceLogSum',
  'ReduceLogSumExp',
  'ReduceSumSquare',
]);
const SOFTMAX_LIKE = new Set(['Softmax', 'LogSoftmax', 'Hardmax']);
export const MAX_TARGET_OPSET = 21;

const isDefault = (n: Node) => n.domain === '' || n.domain === 'ai.onnx';

function int64(g: Graph, name: string, values: number[], dims: number[] = [values.length]): Value {
  return g.addInitializer(Tensor.fromInt64(name, dims, values));
}

function scalarLike(g: Graph, name: string, dtype: DataType, v: number): Value {
  return g.addInitializer(Tensor.fromNumbers(name, dtype, [], [v]));
}

/** Why a node cannot be converted from `from` to `to`, or undefined when it can. */
function blocker(n: Node, from: number, to: number): string | undefined {
  const crosses = (v: number) => from < v && to >= v;
  if (EXPERIMENTAL.has(n.opType)) return `${n.opType} is an experimental op removed from the standard`;
  if (n.opType === 'Scan' && crosses(9)) return 'Scan-8 has a batch axis that Scan-9 removed';
  if (n.opType === 'BatchNormalization' && crosses(9) && n.attrInt('spatial', 1) === 0)
    return 'BatchNormalization spatial=0 has no equivalent after opset 9';
  if (n.opType === 'BatchNormalization' && crosses(14) && n.outputs.filter(Boolean).length > 1)
    return 'training-mode BatchNormalization outputs changed at opset 14';
  if ((n.opType === 'Clip' && crosses(11)) || (n.opType === 'Pad' && crosses(11) && n.attrFloat('value', 0) !== 0)) {
    if (n.input(0)?.dtype === undefined) return `${n.opType} needs its input type to turn attributes into inputs`;
  }
  if ((n.opType === 'Resize' || n.opType === 'Upsample') && crosses(11) && resizeNearestMode(n) === null) {
    return `${n.opType} scales must be constant and all >= 1 or all <= 1 to choose the opset-11 nearest_mode`;
  }
  if (BROADCAST_OPS.has(n.opType) && crosses(7) && n.hasAttr('axis') && n.attrInt('broadcast', 0) === 1) {
    const a = n.input(0)?.shape,
      b = n.input(1);
    if (!a || !(b?.initializer || b?.shape)) return `${n.opType} axis-broadcast needs known ranks`;
  }
  if (n.opType === 'GroupNormalization' && crosses(21)) {
    const C = n.input(0)?.shape?.[1];
    if (typeof C !== 'number' || !n.constInput(1) || !n.constInput(2))
      return 'GroupNormalization-18 needs constant scale/bias and a known channel count to become per-channel';
  }
  return undefined;
}

/** Opset 10 Resize/Upsample in onnxruntime: asymmetric coordinates, truncation when upsampling and
 * ceil when downsampling; opset 11 spells that as nearest_mode floor / ceil. */
function resizeNearestMode(n: Node): string | null {
  const mode = n.attrString('mode', 'nearest');
  if (mode !== 'nearest') return 'round_prefer_floor';
  let scales: number[] | undefined;
  if (n.opType === 'Upsample' && n.hasAttr('scales')) scales = n.attrFloats('scales');
  else {
    const src = n.input(1);
    const t = src?.initializer ?? (src?.producer?.opType === 'Constant' ? src.producer.attrTensor('value') : undefined);
    if (t) scales = Array.from(t.toNumbers());
  }
  if (!scales) return null;
  if (scales.every((s) => s >= 1)) return 'floor';
  if (scales.every((s) => s <= 1)) return 'ceil';
  return null;
}

function moveIntsToInput(n: Node, attr: string, slot: number, what: string): void {
  if (!n.hasAttr(attr)) return;
  const v = n.attrInts(attr);
  n.removeAttr(attr);
  n.setInput(slot, int64(n.graph, `${n.name || n.opType}_${what}`, v));
}

function convertNode(n: Node, from: number, to: number): number {
  const crosses = (v: number) => from < v && to >= v;
  let changed = false;
  // In opset order: a node may cross several (Upsample: scales as an input at 9, Resize at 11).
  for (const step of [convertTo7, convertTo10, convertTo11, convertTo21]) changed = step(n, crosses, to) || changed;
  return changed ? 1 : 0;
}

/** Opsets 4-7: legacy attributes (consumed_inputs, is_test, broadcast/axis), Cast to as a name, Reshape shape as an input. */
function convertTo7(n: Node, crosses: (v: number) => boolean, to: number): boolean {
  const g = n.graph;
  let changed = false;
  const touch = () => {
    changed = true;
  };
  if (crosses(6) && n.hasAttr('consumed_inputs')) {
    n.removeAttr('consumed_inputs');
    touch();
  }
  if (crosses(6) && n.opType === 'Cast') {
    const a = n.attr('to');
    if (a && a.type === AttrType.STRING) {
      n.setAttr({ name: 'to', type: AttrType.INT, value: dtypeFromName(Buffer.from(a.value).toString().toLowerCase()) });
      touch();
    }
  }
  if (crosses(4) && n.opType === 'Concat' && !n.hasAttr('axis')) {
    n.setAttr({ name: 'axis', type: AttrType.INT, value: 1 });
    touch();
  }
  if (crosses(5) && n.opType === 'Reshape' && n.hasAttr('shape')) {
    moveIntsToInput(n, 'shape', 1, 'shape');
    touch();
  }
  if (crosses(7)) {
    if (n.opType === 'BatchNormalization' || n.opType === 'Dropout') {
      if (n.hasAttr('is_test')) {
        n.removeAttr('is_test');
        touch();
      }
    }
    if (n.opType === 'Gemm' && n.hasAttr('broadcast')) {
      n.removeAttr('broadcast');
      touch();
    }
    if (BROADCAST_OPS.has(n.opType) && (n.hasAttr('broadcast') || n.hasAttr('axis'))) {
      const bc = n.attrInt('broadcast', 0),
        axisAttr = n.hasAttr('axis');
      const axis = n.attrInt('axis', -1);
      n.removeAttr('broadcast');
      n.removeAttr('axis');
      touch();
      if (bc === 1 && axisAttr) {
        const ra = n.input(0)!.shape!.length;
        const b = n.input(1)!;
        const rb = b.initializer ? b.initializer.dims.length : b.shape!.length;
        const trailing = ra - (axis < 0 ? axis + ra : axis) - rb;
        if (trailing > 0) {
          const axes = Array.from({ length: trailing }, (_, i) => rb + i);
          const u =
            to >= 13
              ? g.addNode(
                  {
                    opType: 'Unsqueeze',
                    name: `${n.name}_bcast`,
                    inputs: [b, int64(g, `${n.name}_bcast_axes`, axes)],
                    outputs: [`${b.name}_bcast`],
                  },
                  n,
                )
              : g.addNode({ opType: 'Unsqueeze', name: `${n.name}_bcast`, inputs: [b], outputs: [`${b.name}_bcast`], attrs: { axes } }, n);
          n.setInput(1, u.outputs[0]!);
        }
      }
    }
  }
  return changed;
}

/** Opsets 9-10: Upsample scales, Slice starts/ends/axes and TopK k become inputs. */
function convertTo10(n: Node, crosses: (v: number) => boolean, _to: number): boolean {
  const g = n.graph;
  let changed = false;
  const touch = () => {
    changed = true;
  };
  if (crosses(9) && n.opType === 'BatchNormalization' && n.hasAttr('spatial')) {
    n.removeAttr('spatial');
    touch();
  }
  if (crosses(9) && n.opType === 'Upsample' && n.hasAttr('scales')) {
    const s = n.attrFloats('scales');
    n.removeAttr('scales');
    n.setInput(1, g.addInitializer(Tensor.fromFloat32(`${n.name || 'Upsample'}_scales`, [s.length], Float32Array.from(s))));
    touch();
  }
  if (crosses(10)) {
    if (n.opType === 'Slice' && n.hasAttr('starts')) {
      const starts = n.attrInts('starts'),
        ends = n.attrInts('ends'),
        axes = n.hasAttr('axes') ? n.attrInts('axes') : undefined;
      for (const a of ['starts', 'ends', 'axes']) n.removeAttr(a);
      n.setInput(1, int64(g, `${n.name || 'Slice'}_starts`, starts));
      n.setInput(2, int64(g, `${n.name || 'Slice'}_ends`, ends));
      if (axes) n.setInput(3, int64(g, `${n.name || 'Slice'}_axes`, axes));
      touch();
    }
    if (n.opType === 'TopK' && n.hasAttr('k')) {
      const k = n.attrInt('k');
      n.removeAttr('k');
      n.setInput(1, int64(g, `${n.name || 'TopK'}_k`, [k]));
      touch();
    }
  }
  return changed;
}

/** Opset 11: Upsample becomes Resize (roi, scales inputs); Clip min/max and Pad pads/value become inputs; Scatter is ScatterElements. */
function convertTo11(n: Node, crosses: (v: number) => boolean, _to: number): boolean {
  const g = n.graph;
  let changed = false;
  const touch = () => {
    changed = true;
  };
  if (crosses(11)) {
    if (n.opType === 'Upsample' || n.opType === 'Resize') {
      const nearest = resizeNearestMode(n)!;
      const scales = n.input(1);
      n.setInput(1, null);
      n.opType = 'Resize';
      const roi = g.addInitializer(Tensor.fromFloat32(`${n.name || 'Resize'}_roi`, [0], new Float32Array(0)));
      n.setInput(1, roi);
      n.setInput(2, scales);
      n.setAttr({ name: 'coordinate_transformation_mode', type: AttrType.STRING, value: Buffer.from('asymmetric') });
      if (n.attrString('mode', 'nearest') === 'nearest')
        n.setAttr({ name: 'nearest_mode', type: AttrType.STRING, value: Buffer.from(nearest) });
      touch();
    }
    if (n.opType === 'Clip' && (n.hasAttr('min') || n.hasAttr('max'))) {
      const dt = n.input(0)!.dtype!;
      if (n.hasAttr('min')) n.setInput(1, scalarLike(g, `${n.name || 'Clip'}_min`, dt, n.attrFloat('min')));
      if (n.hasAttr('max')) n.setInput(2, scalarLike(g, `${n.name || 'Clip'}_max`, dt, n.attrFloat('max')));
      n.removeAttr('min');
      n.removeAttr('max');
      touch();
    }
    if (n.opType === 'Pad' && (n.hasAttr('pads') || n.hasAttr('paddings'))) {
      const pads = n.attrInts(n.hasAttr('pads') ? 'pads' : 'paddings');
      const value = n.attrFloat('value', 0);
      n.removeAttr('pads');
      n.removeAttr('paddings');
      n.removeAttr('value');
      n.setInput(1, int64(g, `${n.name || 'Pad'}_pads`, pads));
      if (value !== 0) n.setInput(2, scalarLike(g, `${n.name || 'Pad'}_value`, n.input(0)!.dtype!, value));
      touch();
    }
    if (n.opType === 'Scatter') {
      n.opType = 'ScatterElements';
      touch();
    }
  }
  return changed;
}

/** Opsets 12-21: Dropout ratio, Squeeze/Unsqueeze/Split/Reduce axes as inputs, Softmax on one axis, Split
 * num_outputs, DFT axis, GridSample modes, GroupNormalization scale per channel. */
function convertTo21(n: Node, crosses: (v: number) => boolean, _to: number): boolean {
  const g = n.graph;
  let changed = false;
  const touch = () => {
    changed = true;
  };
  if (crosses(12) && n.opType === 'Dropout' && n.hasAttr('ratio')) {
    const r = n.attrFloat('ratio');
    n.removeAttr('ratio');
    n.setInput(1, g.addInitializer(Tensor.fromFloat32(`${n.name || 'Dropout'}_ratio`, [], Float32Array.of(r))));
    touch();
  }
  if (crosses(13)) {
    if ((n.opType === 'Squeeze' || n.opType === 'Unsqueeze') && n.hasAttr('axes')) {
      moveIntsToInput(n, 'axes', 1, 'axes');
      touch();
    }
    if (n.opType === 'Split' && n.hasAttr('split')) {
      moveIntsToInput(n, 'split', 1, 'split');
      touch();
    }
    if (n.opType === 'ReduceSum' && n.hasAttr('axes')) {
      moveIntsToInput(n, 'axes', 1, 'axes');
      touch();
    }
    if (SOFTMAX_LIKE.has(n.opType)) {
      convertSoftmax(n);
      touch();
    }
  }
  if (crosses(18)) {
    if (REDUCE_18.has(n.opType) && n.hasAttr('axes')) {
      moveIntsToInput(n, 'axes', 1, 'axes');
      touch();
    }
    if (n.opType === 'Split' && !n.input(1) && !n.hasAttr('num_outputs')) {
      n.setAttr({ name: 'num_outputs', type: AttrType.INT, value: n.outputs.length });
      touch();
    }
  }
  if (crosses(20) && n.opType === 'DFT' && n.hasAttr('axis')) {
    const axis = n.attrInt('axis');
    n.removeAttr('axis');
    n.setInput(2, int64(g, `${n.name || 'DFT'}_axis`, [axis], []));
    touch();
  }
  if (crosses(20) && n.opType === 'GridSample' && n.hasAttr('mode')) {
    // Modes were renamed at 20 (bilinear -> linear, bicubic -> cubic); the math is the same.
    const renamed: Record<string, string> = { bilinear: 'linear', bicubic: 'cubic' };
    const m = n.attrString('mode');
    if (renamed[m]) {
      n.setAttr({ name: 'mode', type: AttrType.STRING, value: Buffer.from(renamed[m]!) });
      touch();
    }
  }
  if (crosses(21) && n.opType === 'GroupNormalization') {
    const C = n.input(0)!.shape![1] as number,
      G = n.attrInt('num_groups');
    for (const slot of [1, 2]) {
      const t = n.constInput(slot)!;
      const v = t.toFloat32();
      const out = new Float32Array(C);
      for (let c = 0; c < C; c++) out[c] = v[Math.floor(c / (C / G))]!;
      n.setInput(slot, g.addInitializer(Tensor.fromNumbers(`${t.name}_per_channel`, t.dtype, [C], out)));
    }
    touch();
  }
  return changed;
}

/** Before 13, Softmax flattened the input to 2-D at `axis` (default 1); from 13 it works on one axis. */
function convertSoftmax(n: Node): void {
  const g = n.graph;
  const x = n.input(0)!;
  const rank = x.shape?.length;
  const axis = n.attrInt('axis', 1);
  const norm = rank !== undefined && axis < 0 ? axis + rank : axis;
  if (rank !== undefined && norm === rank - 1) {
    n.setAttr({ name: 'axis', type: AttrType.INT, value: -1 });
    return;
  }
  const base = n.name || n.opType;
  const flat = g.addNode({ opType: 'Flatten', name: `${base}_flatten`, inputs: [x], outputs: [`${base}_flat`], attrs: { axis } }, n);
  const shape = g.addNode({ opType: 'Shape', name: `${base}_shape`, inputs: [x], outputs: [`${base}_in_shape`] }, n);
  const y = n.outputs[0]!;
  const inner = y.splitFromProducer(`${base}_2d`);
  n.setInput(0, flat.outputs[0]!);
  n.setAttr({ name: 'axis', type: AttrType.INT, value: 1 });
  g.after(n).add({ opType: 'Reshape', name: `${base}_reshape`, inputs: [inner, shape.outputs[0]!], outputs: [y] });
}

export interface UpgradeResult {
  from: number;
  to: number;
  converted: number;
  /** Nodes that stop it (the model is then unchanged). */
  blockers: string[];
}

/** Convert the default-domain opset of `model` to `to` (>= current). */
export function upgradeOpset(model: Model, to: number): UpgradeResult {
  const from = model.opset('') ?? 1;
  const res: UpgradeResult = { from, to, converted: 0, blockers: [] };
  if (from >= to) return res;
  const nodes: Node[] = [];
  for (const g of model.graph.allGraphs()) for (const n of g.nodes) if (isDefault(n)) nodes.push(n);
  for (const n of nodes) {
    const why = blocker(n, from, to);
    if (why) res.blockers.push(`${n.name || n.opType} (${n.opType}): ${why}`);
  }
  if (res.blockers.length) return res;
  for (const n of nodes) res.converted += convertNode(n, from, to);
  model.setOpset('', to);
  const ir = to >= 21 ? 10 : to >= 19 ? 9 : to >= 15 ? 8 : to >= 13 ? 7 : model.irVersion;
  if (model.irVersion < ir) model.irVersion = ir;
  return res;
}

export const upgradeOpsetPass = definePass({
  name: 'upgrade-opset',
  description: 'Convert the default-domain opset up to a target version (attributes that became inputs, changed defaults)',
  options: {
    to: { type: 'int', default: 21, min: 7, max: MAX_TARGET_OPSET, description: 'target opset' },
  },
  statistics: { nodesConverted: 'nodes rewritten for the new opset', from: 'opset before', to: 'opset after' },
  run(model, options): PassStats {
    const r = upgradeOpset(model, options.to);
    const stats: PassStats = { counts: { nodesConverted: r.converted, from: r.from, to: r.from >= r.to ? r.from : r.to } };
    if (r.blockers.length) stats.skipped = [`left at opset ${r.from}: ${r.blockers.length} node(s) cannot be converted`, ...r.blockers];
    else if (r.from >= r.to) stats.notes = [`already at opset ${r.from}`];
    return stats;
  },
});
