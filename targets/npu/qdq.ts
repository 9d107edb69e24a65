// Full-QDQ form for the HTP: every float weight left after block quantization becomes an int8
// per-channel DequantizeLinear, and every float activation gets a uint16 QuantizeLinear ->
// DequantizeLinear pair whose scale comes from calibration ranges measured in onnxruntime (A16W4 /
// A16W8). Values whose range is extreme (additive -inf-like masks) stay float: a 16-bit grid
// spanning 3e38 would flatten every unmasked score to one level.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataType, Graph, Model, Tensor, Value, isFloat, saveModel, type Progress } from '../../ir/index.js';
import { feedInputs } from '../../ir/summary.js';
import { runModel } from '../../runtime/ort.js';

export const MAX_ACTIVATION_RANGE = 1e4;
const Q_MAX = 65535;

const isWeightDq = (v: Value) => v.producer?.opType === 'DequantizeLinear' || v.producer?.opType === 'QuantizeLinear';

function isFloatValue(v: Value): boolean {
  return v.dtype !== undefined && isFloat(v.dtype);
}

/** int8 symmetric DequantizeLinear for every float initializer of 2+ elements (per row for 2+-D). */
export function quantizeRemainingWeights(model: Model): number {
  let n = 0;
  for (const g of model.graph.allGraphs()) {
    for (const name of [...g.initializerNames]) {
      const v = g.values.get(name);
      const t = v?.initializer;
      if (!v || !t || t.dtype !== DataType.FLOAT || t.size < 2 || v.isGraphInput || v.isGraphOutput) continue;
      if (v.uses.every((u) => u.node.opType === 'DequantizeLinear' || u.node.opType === 'QuantizeLinear')) continue;
      const w = t.toFloat32();
      const rows = t.dims.length >= 2 ? t.dims[0]! : 1;
      const per = t.size / rows;
      const scales = new Float32Array(rows);
      const q = new Int8Array(t.size);
      for (let r = 0; r < rows; r++) {
        let amax = 0;
        for (let i = r * per; i < (r + 1) * per; i++) amax = Math.max(amax, Math.abs(w[i]!));
        const s = amax > 0 ? amax / 127 : 1;
        scales[r] = s;
        for (let i = r * per; i < (r + 1) * per; i++) q[i] = Math.max(-127, Math.min(127, Math.round(w[i]! / s)));
      }
      const qv = g.addInitializer(Tensor.fromBytes(`${name}_q8`, DataType.INT8, [...t.dims], new Uint8Array(q.buffer)));
      const sv = g.addInitializer(Tensor.fromFloat32(`${name}_q8_scale`, t.dims.length >= 2 ? [rows] : [], scales));
      const uses = [...v.uses];
      const dq = g.addNode({ opType: 'DequantizeLinear', name: `${name}/DequantizeLinear`, inputs: [qv, sv], outputs: [`${name}_dq`], attrs: t.dims.length >= 2 ? { axis: 0 } : {} }, uses[0]!.node);
      dq.outputs[0]!.type = { elemType: DataType.FLOAT, shape: [...t.dims] };
      for (const u of uses) u.node.setInput(u.index, dq.outputs[0]!);
      g.removeInitializer(v);
      n++;
    }
    g.sortTopologically();
  }
  return n;
}

/** Float activations to quantize: graph inputs and node outputs, not weights coming out of DQ. */
function activations(g: Graph): Value[] {
  const out: Value[] = [];
  for (const v of feedInputs(g)) if (isFloatValue(v) && v.uses.length) out.push(v);
  for (const n of g.nodes) {
    if (n.opType === 'DequantizeLinear' || n.opType === 'QuantizeLinear') continue;
    for (const o of n.outputs) if (o && isFloatValue(o) && !isWeightDq(o)) out.push(o);
  }
  return out;
}

/** Min/max of every value over the calibration input sets, measured by onnxruntime-node. */
export async function calibrationRanges(model: Model, values: Value[], sets: Record<string, Tensor>[], progress?: Progress): Promise<Map<string, [number, number]>> {
  const g = model.graph;
  const extra = values.filter((v) => !v.isGraphOutput && !v.isGraphInput);
  const savedOutputs = [...g.outputs];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-calib-'));
  const ranges = new Map<string, [number, number]>();
  try {
    g.setOutputs([...savedOutputs, ...extra]);
    const file = path.join(dir, 'calib.onnx');
    saveModel(model, file, { externalData: false });
    g.setOutputs(savedOutputs);
    for (const [i, feeds] of sets.entries()) {
      progress?.('calibration', i, sets.length);
      for (const [k, t] of Object.entries(feeds)) ranges.set(k, merge(ranges.get(k), t));
      const res = await runModel(file, feeds);
      for (const [k, t] of Object.entries(res)) ranges.set(k, merge(ranges.get(k), t));
    }
  } finally {
    g.setOutputs(savedOutputs);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return ranges;
}

function merge(r: [number, number] | undefined, t: Tensor): [number, number] {
  let [lo, hi] = r ?? [0, 0];
  if (!isFloat(t.dtype)) return [lo, hi];
  for (const x of t.toFloat32()) {
    if (!Number.isFinite(x)) continue;
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  return [lo, hi];
}

export interface ActivationQdqStats {
  activations: number;
  leftFloat: number;
}

/** Insert uint16 Q/DQ pairs on float activations. Each value keeps its name (the DQ now produces it). */
export async function quantizeActivations(model: Model, sets: Record<string, Tensor>[], progress?: Progress): Promise<ActivationQdqStats> {
  const g = model.graph;
  const acts = activations(g);
  const ranges = await calibrationRanges(model, acts, sets, progress);
  const stats: ActivationQdqStats = { activations: 0, leftFloat: 0 };
  for (const v of acts) {
    const r = ranges.get(v.name);
    if (!r || Math.max(-r[0], r[1]) > MAX_ACTIVATION_RANGE) { stats.leftFloat++; continue; }
    const [lo, hi] = r;
    const scale = hi > lo ? (hi - lo) / Q_MAX : 1;
    const zp = Math.max(0, Math.min(Q_MAX, Math.round(-lo / scale)));
    const s = g.addInitializer(Tensor.fromFloat32(`${v.name}/q_scale`, [], Float32Array.of(scale)));
    const z = g.addInitializer(Tensor.fromNumbers(`${v.name}/q_zero_point`, DataType.UINT16, [], [zp]));
    const shape = v.type?.shape ? [...v.type.shape] : undefined;
    if (v.isGraphInput) {
      const uses = [...v.uses];
      const first = uses.map((u) => u.node).find(() => true)!;
      const q = g.addNode({ opType: 'QuantizeLinear', name: `${v.name}/QuantizeLinear`, inputs: [v, s, z], outputs: [`${v.name}_q16`] }, first);
      q.outputs[0]!.type = { elemType: DataType.UINT16, shape };
      const dq = g.addNode({ opType: 'DequantizeLinear', name: `${v.name}/DequantizeLinear`, inputs: [q.outputs[0]!, s, z], outputs: [`${v.name}_dq`] }, first);
      dq.outputs[0]!.type = { elemType: DataType.FLOAT, shape };
      for (const u of uses) u.node.setInput(u.index, dq.outputs[0]!);
    } else {
      // Rename the producer's output; Q -> DQ produce the original value again.
      const at = g.after(v.producer!);
      const pre = v.splitFromProducer(`${v.name}_float`, v.type ? { ...v.type } : undefined);
      const q = at.add({ opType: 'QuantizeLinear', name: `${v.name}/QuantizeLinear`, inputs: [pre, s, z], outputs: [`${v.name}_q16`] });
      q.outputs[0]!.type = { elemType: DataType.UINT16, shape };
      at.add({ opType: 'DequantizeLinear', name: `${v.name}/DequantizeLinear`, inputs: [q.outputs[0]!, s, z], outputs: [v] });
    }
    stats.activations++;
  }
  g.sortTopologically();
  return stats;
}
