// fold-batchnorm: inference BatchNormalization into the Conv before it (W' = W * g/sqrt(v+eps) per
// output channel, b' = (b - mean) * g/sqrt(v+eps) + beta), and a BatchNormalization with no Conv
// before it into Mul + Add by per-channel constants. Quantizers then see one weight per channel
// instead of four statistics whose small variances a per-tensor grid would round to zero.
import { DataType, Graph, Model, Node, Tensor, Value } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';
import { constTensor, isLive } from './pattern.js';

interface BnParams {
  scale: Float64Array;
  shift: Float64Array;
}

/** Per-channel y = x * scale + shift of an inference BatchNormalization with constant statistics. */
function bnParams(bn: Node): BnParams | string {
  if (bn.outputs.filter((o) => o && (o.uses.length || o.isGraphOutput)).length > 1) return 'training-mode outputs are used';
  if (bn.attrInt('training_mode', 0) !== 0) return 'training_mode=1';
  const ts = [1, 2, 3, 4].map((i) => constTensor(bn.input(i)));
  if (ts.some((t) => !t || (t.dtype !== DataType.FLOAT && t.dtype !== DataType.FLOAT16 && t.dtype !== DataType.DOUBLE)))
    return 'statistics are not float constants';
  const [g, b, m, v] = ts.map((t) => t!.toNumbers()) as [Float64Array, Float64Array, Float64Array, Float64Array];
  if (!(g.length === b.length && b.length === m.length && m.length === v.length)) return 'statistics differ in length';
  const eps = bn.attrFloat('epsilon', 1e-5);
  const scale = new Float64Array(g.length),
    shift = new Float64Array(g.length);
  for (let c = 0; c < g.length; c++) {
    scale[c] = g[c]! / Math.sqrt(v[c]! + eps);
    shift[c] = b[c]! - m[c]! * scale[c]!;
  }
  return { scale, shift };
}

function foldIntoConv(g: Graph, conv: Node, bn: Node, p: BnParams): boolean {
  const W = constTensor(conv.input(1));
  if (!W || W.dtype !== DataType.FLOAT || W.dims[0] !== p.scale.length || conv.attrInt('group', 1) < 1) return false;
  const Bv = conv.input(2);
  const B = Bv ? constTensor(Bv) : null;
  if (Bv && (!B || B.dtype !== DataType.FLOAT)) return false;
  const w = W.toFloat32(),
    per = W.size / W.dims[0]!;
  const w2 = new Float32Array(w.length);
  for (let o = 0; o < W.dims[0]!; o++) for (let i = o * per; i < (o + 1) * per; i++) w2[i] = w[i]! * p.scale[o]!;
  const b = B ? B.toFloat32() : new Float32Array(p.scale.length);
  const b2 = Float32Array.from(b, (x, c) => x * p.scale[c]! + p.shift[c]!);
  const wv = g.addInitializer(Tensor.fromFloat32(`${conv.input(1)!.name}_bnfold`, [...W.dims], w2));
  const bv = g.addInitializer(Tensor.fromFloat32(`${Bv?.name ?? `${conv.name}_bias`}_bnfold`, [p.scale.length], b2));
  const oldW = conv.input(1),
    oldB = conv.input(2);
  conv.setInput(1, wv);
  conv.setInput(2, bv);
  const y = bn.outputs[0]!;
  g.removeNode(bn, true);
  // The Conv now produces what the BatchNormalization produced (its name may be a graph output).
  const mid = conv.setOutput(0, y);
  if (mid && !mid.uses.length && !mid.isGraphOutput) g.forgetValue(mid);
  for (const v of [oldW, oldB]) dropConst(v);
  return true;
}

function dropConst(v: Value | null): void {
  if (!v || v.uses.length || v.isGraphOutput) return;
  if (v.initializer && !v.isGraphInput) v.graph.removeInitializer(v);
  else if (v.producer?.opType === 'Constant') v.graph.removeNode(v.producer);
}

function toMulAdd(g: Graph, bn: Node, p: BnParams): boolean {
  const x = bn.input(0)!;
  const rank = x.type?.shape?.length;
  if (rank === undefined || rank < 2) return false;
  const dims = [p.scale.length, ...new Array(rank - 2).fill(1)];
  const s = g.addInitializer(Tensor.fromFloat32(`${bn.name}_scale`, dims, Float32Array.from(p.scale)));
  const t = g.addInitializer(Tensor.fromFloat32(`${bn.name}_shift`, dims, Float32Array.from(p.shift)));
  const y = bn.outputs[0]!;
  const ins = [...bn.inputs];
  bn.inputs.forEach((_, i) => bn.setInput(i, null));
  g.removeNode(bn, true);
  const mul = g.addNode({ opType: 'Mul', name: `${bn.name}/Mul`, inputs: [x, s], outputs: [`${y.name}_scaled`] });
  mul.outputs[0]!.type = x.type ? { ...x.type } : undefined;
  g.addNode({ opType: 'Add', name: `${bn.name}/Add`, inputs: [mul.outputs[0]!, t], outputs: [y] });
  for (const v of ins.slice(1)) dropConst(v);
  return true;
}

export const foldBatchNorm: Pass = {
  name: 'fold-batchnorm',
  description: 'inference BatchNormalization folded into the preceding Conv, else lowered to Mul + Add',
  options: {
    standalone: { type: 'bool', default: true, description: 'lower a BatchNormalization without a Conv before it to Mul + Add' },
  },
  statistics: {
    foldedIntoConv: 'BatchNormalizations folded into the Conv before them',
    loweredToMulAdd: 'BatchNormalizations lowered to Mul + Add',
  },
  requires: ['shapes'],
  run(model: Model, options): PassStats {
    const stats: PassStats = { counts: { foldedIntoConv: 0, loweredToMulAdd: 0 }, skipped: [] };
    for (const g of model.graph.allGraphs()) {
      for (const bn of [...g.nodes]) {
        if (bn.opType !== 'BatchNormalization' || bn.domain !== '' || !isLive(bn)) continue;
        const p = bnParams(bn);
        if (typeof p === 'string') {
          stats.skipped!.push(`BatchNormalization '${bn.name}': ${p}`);
          continue;
        }
        const x = bn.input(0)!;
        const conv = x.producer;
        if (
          conv &&
          conv.opType === 'Conv' &&
          conv.domain === '' &&
          x.uses.length === 1 &&
          !x.isGraphOutput &&
          foldIntoConv(g, conv, bn, p)
        ) {
          stats.counts.foldedIntoConv!++;
          continue;
        }
        if (options.standalone && toMulAdd(g, bn, p)) stats.counts.loweredToMulAdd!++;
        else stats.skipped!.push(`BatchNormalization '${bn.name}': input rank unknown`);
      }
      g.sortTopologically();
    }
    return stats;
  },
};
