// Full-QDQ form for the HTP, placed as onnxruntime's QDQ quantizer does for QNN (A16W8 / A16W4):
// - weights by slot: Conv/ConvTranspose/Gemm/MatMul weights int8 symmetric per output channel,
//   their biases int32 with scale = input scale x weight scale (zero point 0), other float
//   constants that ops compute with (Add/Mul operands, norm gammas) uint16 per tensor (a scalar is
//   represented exactly), and op parameters (Resize scales, Clip bounds, Pad value) left as they are;
// - activations uint16 with ranges measured in onnxruntime on the calibration sets, except where
//   QNN fixes or shares the encoding: Sigmoid/HardSigmoid output 1/65536 offset 0, Tanh 1/32768
//   offset 32768, and data-movement ops (Reshape, Transpose, MaxPool, Resize, Slice, ...) reuse
//   their input's scale so that no requantization happens inside them.
// Values whose range is extreme (additive -inf-like masks) stay float: a 16-bit grid spanning 3e38
// would flatten every unmasked score to one level.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataType, Graph, InputError, Model, Node, Tensor, Value, isFloat, saveModel, type Progress } from '../../ir/index.js';
import { feedInputs } from '../../ir/summary.js';
import { runModel } from '../../runtime/ort.js';
import { RangeCollector, type RangeMethod } from '../../runtime/calibrate.js';
import { convWeightAxis, quantizeInt8 } from '../../passes/quant/qdq.js';

export const MAX_ACTIVATION_RANGE = 1e4;
const Q_MAX = 65535;

interface QParams {
  scale: number;
  zeroPoint: number;
}

const isQdq = (n: Node | null | undefined) => !!n && (n.opType === 'DequantizeLinear' || n.opType === 'QuantizeLinear');
const isFloatValue = (v: Value) => v.dtype !== undefined && isFloat(v.dtype);

/** Output encodings QNN HTP fixes for 16-bit activations. */
const FIXED: Record<string, QParams> = {
  Sigmoid: { scale: 1 / 65536, zeroPoint: 0 },
  HardSigmoid: { scale: 1 / 65536, zeroPoint: 0 },
  Tanh: { scale: 1 / 32768, zeroPoint: 32768 },
};

/** Ops whose output values are a subset of their input's: the output reuses the input encoding. */
const SHARED = new Set([
  'Reshape',
  'Transpose',
  'Squeeze',
  'Unsqueeze',
  'Flatten',
  'Slice',
  'Gather',
  'Split',
  'MaxPool',
  'GlobalMaxPool',
  'Resize',
  'DepthToSpace',
  'SpaceToDepth',
  'Expand',
  'Tile',
  'Identity',
]);

/** Float inputs that configure an op rather than carry data: never quantized. */
const PARAM_SLOTS: Record<string, number[]> = {
  Resize: [1, 2],
  Clip: [1, 2],
  Pad: [2],
  Range: [0, 1, 2],
  ConstantOfShape: [0],
  GridSample: [1],
};

function paramsFromRange(lo: number, hi: number): QParams | null {
  if (Math.max(-lo, hi) > MAX_ACTIVATION_RANGE) return null;
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (hi === lo) return { scale: 1, zeroPoint: 0 };
  const scale = (hi - lo) / Q_MAX;
  return { scale, zeroPoint: Math.max(0, Math.min(Q_MAX, Math.round(-lo / scale))) };
}

/** Float activations to quantize: fed inputs and node outputs, not Q/DQ outputs, and not shape
 * arithmetic (float values computed from Shape/Size and constants only, such as sqrt(num_tokens)):
 * those fold away once the variant's dims are bound, which a Q/DQ pair in between would prevent. */
function activations(g: Graph, data: Set<Node>): Value[] {
  const out: Value[] = [];
  for (const v of feedInputs(g)) if (isFloatValue(v) && v.uses.length) out.push(v);
  for (const n of g.nodes) {
    if (isQdq(n) || n.opType === 'Constant' || !data.has(n)) continue;
    for (const o of n.outputs) if (o && isFloatValue(o)) out.push(o);
  }
  return out;
}

/** Nodes that compute on fed data (Shape/Size read only shapes; what follows them alone is shape arithmetic). */
function dataNodes(g: Graph): Set<Node> {
  const fromData = new Set<Value>(feedInputs(g));
  const nodes = new Set<Node>();
  for (const n of g.nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size' || !n.inputs.some((i) => i && fromData.has(i))) continue;
    nodes.add(n);
    for (const o of n.outputs) if (o) fromData.add(o);
  }
  return nodes;
}

/** Range of every value over the calibration input sets, measured by onnxruntime-node: min/max, or
 * clipped by the percentile or entropy method (--calibration-method). */
export async function calibrationRanges(
  model: Model,
  values: Value[],
  sets: Record<string, Tensor>[],
  progress?: Progress,
  method: RangeMethod = 'minmax',
): Promise<Map<string, [number, number]>> {
  const g = model.graph;
  const extra = values.filter((v) => !v.isGraphOutput && !v.isGraphInput);
  const savedOutputs = [...g.outputs];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-calib-'));
  // The grid is uint16: the entropy method models it (no clip gains anything there).
  const collector = new RangeCollector(method, undefined, 16);
  const add = (k: string, t: Tensor) => {
    if (isFloat(t.dtype)) collector.add(k, t.toFloat32());
  };
  try {
    g.setOutputs([...savedOutputs, ...extra]);
    const file = path.join(dir, 'calib.onnx');
    saveModel(model, file, { externalData: false });
    g.setOutputs(savedOutputs);
    for (const [i, feeds] of sets.entries()) {
      progress?.('calibration', i, sets.length);
      for (const [k, t] of Object.entries(feeds)) add(k, t);
      let res: Record<string, Tensor>;
      try {
        res = await runModel(file, feeds);
      } catch (e) {
        throw await calibrationFailure(model, feeds, e);
      }
      for (const [k, t] of Object.entries(res)) add(k, t);
    }
  } finally {
    g.setOutputs(savedOutputs);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return tieCache(g, collector.ranges(outputSide(g)));
}

/** A KV cache input takes what the matching output gave the step before (present.N.key is fed back
 * as past_key_values.N.key): both get one encoding, the union of their ranges. Calibrated on a
 * prefill from an empty cache alone, the past had no values at all and got the degenerate [0, 0]
 * encoding: every real past value was rounded to an integer or clamped to 0 (cosine 0.76). */
function tieCache(g: Graph, ranges: Map<string, [number, number]>): Map<string, [number, number]> {
  for (const v of g.inputs) {
    const out = v.name.replace(/^past_key_values\./, 'present.').replace(/^past\./, 'present.');
    if (out === v.name || !g.outputs.some((o) => o.name === out)) continue;
    const a = ranges.get(v.name),
      b = ranges.get(out);
    if (!a && !b) continue;
    const u: [number, number] = [Math.min(a?.[0] ?? 0, b?.[0] ?? 0), Math.max(a?.[1] ?? 0, b?.[1] ?? 0)];
    ranges.set(v.name, u);
    ranges.set(out, u);
  }
  return ranges;
}

/** Graph outputs and the values they copy through data-movement ops (which share one encoding):
 * never clipped by percentile or entropy. */
function outputSide(g: Graph): Set<string> {
  const out = new Set<string>();
  for (let v of g.outputs) {
    for (;;) {
      out.add(v.name);
      const p = v.producer;
      const i = p && p.domain === '' && SHARED.has(p.opType) ? p.input(0) : undefined;
      if (!i || out.has(i.name)) break;
      v = i;
    }
  }
  return out;
}

/** onnxruntime refused the model being calibrated: bad input when it refuses the source file on the
 * same feeds too (a fuzzed attribute, data that does not fit), else a defect of edgec's passes. */
async function calibrationFailure(model: Model, feeds: Record<string, Tensor>, e: unknown): Promise<Error> {
  const src = model.sourcePath;
  if (!src) return e as Error;
  try {
    await runModel(src, feeds);
  } catch (srcErr) {
    const msg = String((srcErr as Error)?.message ?? srcErr)
      .split('\n')[0]!
      .replace(/^.*?failed:/, '');
    return new InputError(`onnxruntime cannot run the model to calibrate it: ${msg}`, src);
  }
  return e as Error;
}

export interface HtpQdqStats {
  /** Activations given a uint16 Q/DQ pair. */
  activations: number;
  /** Activations whose encoding is the input's (data movement) or fixed by QNN (Sigmoid, Tanh). */
  sharedEncodings: number;
  fixedEncodings: number;
  /** Extreme-range activations left float. */
  leftFloat: number;
  /** Weights as int8 per channel, biases as int32, other constants as uint16. */
  int8Weights: number;
  int32Biases: number;
  uint16Constants: number;
}

/** Encoding of every float activation, in graph order (shared encodings follow their inputs). */
function activationParams(g: Graph, acts: Value[], ranges: Map<string, [number, number]>, stats: HtpQdqStats): Map<Value, QParams | null> {
  const params = new Map<Value, QParams | null>();
  const fromRange = (v: Value) => {
    const r = ranges.get(v.name);
    return r ? paramsFromRange(r[0], r[1]) : null;
  };
  for (const v of acts) if (!v.producer) params.set(v, fromRange(v));
  const wanted = new Set(acts);
  for (const n of g.nodes) {
    for (const o of n.outputs) {
      if (!o || !wanted.has(o)) continue;
      const fixed = n.domain === '' ? FIXED[n.opType] : undefined;
      const inP = n.input(0) ? params.get(n.input(0)!) : undefined;
      if (fixed) {
        params.set(o, fixed);
        stats.fixedEncodings++;
      } else if (n.domain === '' && SHARED.has(n.opType) && inP) {
        params.set(o, inP);
        stats.sharedEncodings++;
      } else params.set(o, fromRange(o));
    }
  }
  return params;
}

type SlotKind = { kind: 'weight'; axis: number } | { kind: 'bias'; weightSlot: number } | { kind: 'data' } | { kind: 'param' };

function slotKind(n: Node, i: number, t: Tensor): SlotKind {
  if (n.domain !== '') return { kind: 'data' };
  const op = n.opType;
  if (PARAM_SLOTS[op]?.includes(i)) return { kind: 'param' };
  if ((op === 'Conv' || op === 'ConvTranspose') && i === 1 && t.dims.length >= 3) return { kind: 'weight', axis: convWeightAxis(n) };
  if ((op === 'Conv' || op === 'ConvTranspose') && i === 2 && t.dims.length === 1) return { kind: 'bias', weightSlot: 1 };
  if (op === 'Gemm' && i === 1 && t.dims.length === 2 && n.attrInt('transA', 0) === 0)
    return { kind: 'weight', axis: n.attrInt('transB', 0) ? 0 : 1 };
  if (op === 'Gemm' && i === 2 && t.dims.length <= 1 && n.attrFloat('beta', 1) === 1 && n.attrInt('transA', 0) === 0)
    return { kind: 'bias', weightSlot: 1 };
  if (op === 'MatMul' && i === 1 && t.dims.length === 2) return { kind: 'weight', axis: 1 };
  return { kind: 'data' };
}

function dq(
  g: Graph,
  before: Node,
  name: string,
  q: Tensor,
  scale: Tensor,
  zp: Tensor | null,
  axis: number | undefined,
  dims: number[],
): Value {
  const inputs = [g.addInitializer(q), g.addInitializer(scale), zp ? g.addInitializer(zp) : null];
  const node = g.addNode(
    {
      opType: 'DequantizeLinear',
      name: `${name}/DequantizeLinear`,
      inputs,
      outputs: [`${name}_dq`],
      attrs: axis !== undefined ? { axis } : {},
    },
    before,
  );
  node.outputs[0]!.type = { elemType: DataType.FLOAT, shape: [...dims] };
  return node.outputs[0]!;
}

/** Replace float constant inputs by DequantizeLinear of int8/int32/uint16 codes, slot by slot. */
function quantizeConstants(g: Graph, params: Map<Value, QParams | null>, data: Set<Node>, stats: HtpQdqStats): void {
  const cache = new Map<string, { v: Value; scales?: Float32Array }>();
  for (const n of [...g.nodes]) {
    if (isQdq(n) || !data.has(n)) continue;
    // Weights before biases: a bias scale is the weight's scale times the input's.
    const order = n.inputs.map((_, i) => i).sort((a, b) => (slotKindOf(n, a) === 'bias' ? 1 : 0) - (slotKindOf(n, b) === 'bias' ? 1 : 0));
    for (const i of order) {
      const v = n.input(i);
      const t = v?.initializer;
      if (!v || !t || v.isGraphInput || t.dtype !== DataType.FLOAT) continue;
      const sk = slotKind(n, i, t);
      if (sk.kind === 'param') continue;
      if (sk.kind === 'weight') {
        const key = `${v.name}|w|${sk.axis}`;
        let hit = cache.get(key);
        if (!hit) {
          const { q, scales } = quantizeInt8(t, sk.axis);
          const out = dq(
            g,
            n,
            v.name,
            Tensor.fromBytes(`${v.name}_q8`, DataType.INT8, [...t.dims], new Uint8Array(q.buffer)),
            Tensor.fromFloat32(`${v.name}_scale`, sk.axis < 0 ? [] : [scales.length], scales),
            null,
            sk.axis < 0 ? undefined : sk.axis,
            [...t.dims],
          );
          hit = { v: out, scales };
          cache.set(key, hit);
          stats.int8Weights++;
        }
        n.setInput(i, hit.v);
        weightScales.set(n, hit.scales!);
        continue;
      }
      if (sk.kind === 'bias') {
        const ws = weightScales.get(n);
        const xp = n.input(0) ? params.get(n.input(0)!) : undefined;
        if (ws && xp) {
          const b = t.toFloat32();
          const scales = Float32Array.from(b, (_, c) => xp.scale * (ws.length === 1 ? ws[0]! : ws[c]!));
          const q = Int32Array.from(b, (x, c) => Math.max(-2147483647, Math.min(2147483647, Math.round(x / scales[c]!))));
          const out = dq(
            g,
            n,
            `${n.name}_${v.name}`,
            Tensor.fromBytes(`${v.name}_q32`, DataType.INT32, [...t.dims], new Uint8Array(q.buffer)),
            Tensor.fromFloat32(`${v.name}_q32_scale`, [scales.length], scales),
            null,
            0,
            [...t.dims],
          );
          n.setInput(i, out);
          stats.int32Biases++;
          continue;
        }
      }
      // Data constants: uint16 per tensor over the constant's own range.
      const key = `${v.name}|u16`;
      let hit = cache.get(key);
      if (!hit) {
        const w = t.toFloat32();
        let lo = 0,
          hi = 0;
        for (const x of w) {
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
        const p = paramsFromRange(lo, hi) ?? { scale: (hi - lo) / Q_MAX, zeroPoint: Math.round(-lo / ((hi - lo) / Q_MAX)) };
        const q = Uint16Array.from(w, (x) => Math.max(0, Math.min(Q_MAX, Math.round(x / p.scale) + p.zeroPoint)));
        const out = dq(
          g,
          n,
          v.name,
          Tensor.fromBytes(`${v.name}_q16`, DataType.UINT16, [...t.dims], new Uint8Array(q.buffer)),
          Tensor.fromFloat32(`${v.name}_q16_scale`, [], Float32Array.of(p.scale)),
          Tensor.fromNumbers(`${v.name}_q16_zero_point`, DataType.UINT16, [], [p.zeroPoint]),
          undefined,
          [...t.dims],
        );
        hit = { v: out };
        cache.set(key, hit);
        stats.uint16Constants++;
      }
      n.setInput(i, hit.v);
    }
  }
  for (const name of [...g.initializerNames]) {
    const v = g.values.get(name);
    if (v?.initializer && !v.uses.length && !v.isGraphOutput && !v.isGraphInput) g.removeInitializer(v);
  }
}

const weightScales = new WeakMap<Node, Float32Array>();
function slotKindOf(n: Node, i: number): string {
  const t = n.input(i)?.initializer;
  return t ? slotKind(n, i, t).kind : 'none';
}

/** Insert uint16 Q/DQ pairs on float activations. Each value keeps its name (the DQ now produces it). */
function insertActivationQdq(g: Graph, params: Map<Value, QParams | null>, stats: HtpQdqStats): void {
  for (const [v, p] of params) {
    if (!p) {
      stats.leftFloat++;
      continue;
    }
    const s = g.addInitializer(Tensor.fromFloat32(`${v.name}/q_scale`, [], Float32Array.of(p.scale)));
    const z = g.addInitializer(Tensor.fromNumbers(`${v.name}/q_zero_point`, DataType.UINT16, [], [p.zeroPoint]));
    const shape = v.type?.shape ? [...v.type.shape] : undefined;
    if (!v.producer) {
      const uses = [...v.uses];
      const first = uses[0]!.node;
      const q = g.addNode(
        { opType: 'QuantizeLinear', name: `${v.name}/QuantizeLinear`, inputs: [v, s, z], outputs: [`${v.name}_q16`] },
        first,
      );
      q.outputs[0]!.type = { elemType: DataType.UINT16, shape };
      const d = g.addNode(
        { opType: 'DequantizeLinear', name: `${v.name}/DequantizeLinear`, inputs: [q.outputs[0]!, s, z], outputs: [`${v.name}_dq`] },
        first,
      );
      d.outputs[0]!.type = { elemType: DataType.FLOAT, shape };
      for (const u of uses) u.node.setInput(u.index, d.outputs[0]!);
    } else {
      // The producer writes a renamed value; Q -> DQ produce the original value again.
      const at = g.after(v.producer);
      const pre = v.splitFromProducer(`${v.name}_float`, v.type ? { ...v.type } : undefined);
      const q = at.add({ opType: 'QuantizeLinear', name: `${v.name}/QuantizeLinear`, inputs: [pre, s, z], outputs: [`${v.name}_q16`] });
      q.outputs[0]!.type = { elemType: DataType.UINT16, shape };
      at.add({ opType: 'DequantizeLinear', name: `${v.name}/DequantizeLinear`, inputs: [q.outputs[0]!, s, z], outputs: [v] });
    }
    stats.activations++;
  }
}

/** The whole QDQ placement: measure, encode activations, quantize constants by slot, insert pairs. */
export async function quantizeForHtp(
  model: Model,
  sets: Record<string, Tensor>[],
  progress?: Progress,
  method: RangeMethod = 'minmax',
): Promise<HtpQdqStats> {
  const g = model.graph;
  const stats = emptyStats();
  const data = dataNodes(g);
  const acts = activations(g, data);
  const ranges = await calibrationRanges(model, acts, sets, progress, method);
  const params = activationParams(g, acts, ranges, stats);
  quantizeConstants(g, params, data, stats);
  insertActivationQdq(g, params, stats);
  g.sortTopologically();
  return stats;
}

function emptyStats(): HtpQdqStats {
  return { activations: 0, sharedEncodings: 0, fixedEncodings: 0, leftFloat: 0, int8Weights: 0, int32Biases: 0, uint16Constants: 0 };
}

/** After a variant's dims are bound, shape arithmetic folds into float constants that compute ops
 * read (a position table resized to the variant's grid): they get the same per-slot encoding. */
export function quantizeFoldedConstants(model: Model): number {
  const g = model.graph;
  const stats = emptyStats();
  // Compute nodes: those that already read Q/DQ'd activations.
  const data = new Set(g.nodes.filter((n) => !isQdq(n) && n.inputs.some((i) => i?.producer && isQdq(i.producer))));
  quantizeConstants(g, new Map(), data, stats);
  g.sortTopologically();
  return stats.int8Weights + stats.int32Biases + stats.uint16Constants;
}
