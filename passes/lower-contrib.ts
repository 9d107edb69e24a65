// lower-contrib: com.microsoft ops a target does not run, back to ai.onnx ops. Fusions make the
// contrib forms that webgpu and mobile want; an NPU (QNN HTP) refuses them but runs ONNX Gelu
// (opset 20, erf or tanh), LayerNormalization, Sigmoid and the arithmetic they are made of.
//   Gelu -> Gelu;  FastGelu(x[, bias]) -> [Add] Gelu(approximate='tanh');  BiasGelu -> Add, Gelu;
//   QuickGelu(alpha) -> x * Sigmoid(alpha x);  SkipLayerNormalization -> Add(s), LayerNormalization;
//   (Skip)SimplifiedLayerNormalization -> [Add(s)] x / sqrt(mean(x^2) + eps) * scale.
// Below opset 20 the Gelu forms are spelled out (Erf or Tanh arithmetic) instead.
import { DataType, Graph, Model, Node, Tensor, Value } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';

const MS = 'com.microsoft';
export const LOWERABLE = [
  'Gelu',
  'FastGelu',
  'BiasGelu',
  'QuickGelu',
  'SkipLayerNormalization',
  'SimplifiedLayerNormalization',
  'SkipSimplifiedLayerNormalization',
];

class Emitter {
  readonly made: Node[] = [];
  constructor(
    readonly g: Graph,
    readonly at: Node,
    readonly dtype: DataType,
  ) {}

  op(opType: string, inputs: (Value | null)[], attrs: Record<string, unknown> = {}, out?: Value): Value {
    const n = this.g.addNode(
      { opType, name: `${this.at.name}/${opType}`, inputs, outputs: [out ?? `${this.at.name}/${opType}_output`], attrs: attrs as never },
      this.at,
    );
    if (!out) n.outputs[0]!.type = { elemType: this.dtype };
    this.made.push(n);
    return n.outputs[0]!;
  }

  scalar(x: number): Value {
    return this.g.addInitializer(Tensor.fromNumbers(`${this.at.name}/const`, this.dtype, [], [x]));
  }
}

/** Detach the contrib node, keeping its output values for the replacement to produce. */
function detach(g: Graph, n: Node): (Value | null)[] {
  const outs = n.outputs.map((_, i) => n.setOutput(i, null));
  g.removeNode(n, true);
  return outs;
}

function gelu(e: Emitter, x: Value, tanh: boolean, opset: number, out: Value): void {
  if (opset >= 20) {
    e.op('Gelu', [x], tanh ? { approximate: 'tanh' } : {}, out);
    return;
  }
  const half = e.op('Mul', [x, e.scalar(0.5)]);
  let inner: Value;
  if (tanh) {
    const cube = e.op('Mul', [e.op('Mul', [x, x]), x]);
    const arg = e.op('Mul', [e.op('Add', [x, e.op('Mul', [cube, e.scalar(0.044715)])]), e.scalar(Math.sqrt(2 / Math.PI))]);
    inner = e.op('Tanh', [arg]);
  } else inner = e.op('Erf', [e.op('Mul', [x, e.scalar(Math.SQRT1_2)])]);
  e.op('Mul', [half, e.op('Add', [inner, e.scalar(1)])], {}, out);
}

function rms(e: Emitter, x: Value, scale: Value, eps: number, axis: number, opset: number, out: Value): void {
  const axes = e.g.addInitializer(Tensor.fromInt64(`${e.at.name}/axes`, [1], [axis]));
  const sq = e.op('Mul', [x, x]);
  const mean = opset >= 18 ? e.op('ReduceMean', [sq, axes], { keepdims: 1 }) : e.op('ReduceMean', [sq], { axes: [axis], keepdims: 1 });
  const norm = e.op('Div', [x, e.op('Sqrt', [e.op('Add', [mean, e.scalar(eps)])])]);
  e.op('Mul', [norm, scale], {}, out);
}

/** Lower one node; returns a reason when it cannot. */
function lower(g: Graph, n: Node, opset: number): string | undefined {
  const x = n.input(0);
  const dtype = x?.dtype ?? DataType.FLOAT;
  const used = (i: number) => {
    const o = n.output(i);
    return !!o && (o.uses.length > 0 || o.isGraphOutput);
  };
  switch (n.opType) {
    case 'Gelu':
    case 'FastGelu':
    case 'BiasGelu': {
      const bias = n.opType === 'Gelu' ? null : n.input(1);
      const e = new Emitter(g, n, dtype);
      const [y] = detach(g, n);
      gelu(e, bias ? e.op('Add', [x, bias]) : x!, n.opType === 'FastGelu', opset, y!);
      return undefined;
    }
    case 'QuickGelu': {
      const alpha = n.attrFloat('alpha', 1.702);
      const e = new Emitter(g, n, dtype);
      const [y] = detach(g, n);
      const s = e.op('Sigmoid', [alpha === 1 ? x : e.op('Mul', [x, e.scalar(alpha)])]);
      e.op('Mul', [x, s], {}, y!);
      return undefined;
    }
    case 'SkipLayerNormalization':
    case 'SkipSimplifiedLayerNormalization':
    case 'SimplifiedLayerNormalization': {
      const simplified = n.opType !== 'SkipLayerNormalization';
      const skip = n.opType === 'SimplifiedLayerNormalization' ? null : n.input(1);
      const gamma = n.input(skip ? 2 : 1);
      const beta = simplified ? null : n.input(3);
      const bias = n.opType === 'SimplifiedLayerNormalization' ? null : n.input(simplified ? 3 : 4);
      const sumSlot = n.opType === 'SimplifiedLayerNormalization' ? -1 : 3;
      if (used(1) || used(2)) return `${n.opType} '${n.name}': mean/inverse std-dev outputs are used`;
      if (!gamma) return `${n.opType} '${n.name}': no scale input`;
      const eps = n.attrFloat('epsilon', 1e-5);
      const axis = n.opType === 'SimplifiedLayerNormalization' ? n.attrInt('axis', -1) : -1;
      const e = new Emitter(g, n, dtype);
      const outs = detach(g, n);
      let h = x!;
      if (skip) h = e.op('Add', [h, skip]);
      if (bias) h = e.op('Add', [h, bias]);
      const sumOut = sumSlot > 0 ? outs[sumSlot] : null;
      if (sumOut && (sumOut.uses.length || sumOut.isGraphOutput)) {
        if (h === x) {
          e.op('Identity', [x], {}, sumOut);
          h = sumOut;
        }
        // The residual sum is an output too: the last Add produces it under its name.
        if (h !== sumOut) {
          const last = h.producer!;
          last.setOutput(0, null);
          last.setOutput(0, sumOut);
          g.forgetValue(h);
          h = sumOut;
        }
      }
      if (simplified) rms(e, h, gamma, eps, axis, opset, outs[0]!);
      else e.op('LayerNormalization', [h, gamma, beta], { axis: -1, epsilon: { float: eps } }, outs[0]!);
      return undefined;
    }
  }
  return `${n.opType} '${n.name}': no lowering`;
}

export const lowerContrib: Pass = {
  name: 'lower-contrib',
  description:
    'com.microsoft ops a target does not run (Gelu, FastGelu, BiasGelu, QuickGelu, (Skip)(Simplified)LayerNormalization) -> ai.onnx ops',
  options: {
    keep: { type: 'list', default: [], description: 'contrib ops the target runs: left as they are' },
  },
  run(model: Model, options): PassStats {
    // A list option: resolveOptions makes it an array of strings.
    const keep = new Set(Array.isArray(options.keep) ? options.keep.map(String) : []);
    const stats: PassStats = { counts: { lowered: 0, left: 0 }, skipped: [] };
    const opset = model.opset('') ?? 1;
    for (const g of model.graph.allGraphs()) {
      for (const n of [...g.nodes]) {
        // onnxruntime registers SimplifiedLayerNormalization in the default domain (fuse-rmsnorm writes it there).
        const contrib = n.domain === MS || (n.domain === '' && n.opType === 'SimplifiedLayerNormalization');
        if (!contrib || keep.has(n.opType) || !LOWERABLE.includes(n.opType)) continue;
        const why = lower(g, n, opset);
        if (why) {
          stats.skipped!.push(why);
          stats.counts.left!++;
          continue;
        }
        stats.counts.lowered!++;
        stats.counts[n.opType] = (stats.counts[n.opType] ?? 0) + 1;
      }
      g.sortTopologically();
    }
    return stats;
  },
};
