// MatMulNBits <-> DequantizeLinear-21 + MatMul, exactly: the same codes, scales and zero points
// re-laid out ([N, k_blocks, blob] along K <-> [K, N] row-major). Zero-point defaults differ
// (MatMulNBits: 2^(bits-1), DQ: 0), so symmetric weights are INT4/INT8 in DQ form and unsigned
// codes without zero points in MatMulNBits form.
import { DataType, Model, Node, Value, dtypeName } from '../ir/index.js';
import { definePass, type PassStats } from './pass.js';
import { MS_DOMAIN, packMatMulNBits, readMatMulNBits } from './quant/matmulnbits.js';
import { packQdq, readQdq } from './quant/qdq.js';
import { dropIfUnused, removeDeadNode } from './quant/graph-util.js';
import { upgradeOpset } from './upgrade-opset.js';

const isDefault = (n: Node) => n.domain === '' || n.domain === 'ai.onnx';

function toQdq(model: Model, stats: PassStats): void {
  const nodes = [...model.graph.allGraphs()].flatMap((g) => g.nodes.filter((n) => n.opType === 'MatMulNBits' && n.domain === MS_DOMAIN));
  const ready: { n: Node; q: Exclude<ReturnType<typeof readMatMulNBits>, string> }[] = [];
  for (const n of nodes) {
    const q = readMatMulNBits(n);
    if (typeof q === 'string') {
      stats.skipped!.push(`${n.name}: ${q}`);
      continue;
    }
    if (n.attrInt('accuracy_level', 0) === 4)
      stats.notes!.push(`${n.name}: accuracy_level 4 (int8 activations) is a kernel choice; the DQ form computes in the activation type`);
    ready.push({ n, q });
  }
  if (!ready.length) return;
  if ((model.opset('') ?? 1) < 21) {
    const up = upgradeOpset(model, 21);
    if (up.blockers.length) {
      stats.skipped!.push(
        `DequantizeLinear with block_size needs opset 21; cannot convert from ${up.from}: ${up.blockers.slice(0, 3).join('; ')}`,
      );
      return;
    }
    stats.notes!.push(`opset ${up.from} -> 21`);
  }
  if (model.irVersion < 10) model.irVersion = 10;
  for (const { n, q } of ready) {
    const g = n.graph;
    const S = n.input(2)!;
    const scaleType = S.initializer!.dtype;
    const base = n.input(1)!.name.replace(/_Q[48]$/, '');
    const p = packQdq(q, base, scaleType);
    const x = g.addInitializer(p.x),
      s = g.addInitializer(p.scale),
      z = p.zeroPoint ? g.addInitializer(p.zeroPoint) : null;
    const name = n.name.replace(/_Q[48]$/, '');
    const dqOut = g.createValue(`${base}_DQ`, { elemType: scaleType, shape: [q.K, q.N] });
    const Y = n.outputs[0]!;
    const bias = n.input(5);
    const mid = bias ? g.createValue(`${name}_matmul`, Y.type ? { elemType: Y.type.elemType } : undefined) : Y;
    const olds = n.inputs.slice(1);
    g.replaceNode(n, [
      { opType: 'DequantizeLinear', name: `${base}_DequantizeLinear`, inputs: [x, s, z], outputs: [dqOut], attrs: p.attrs },
      { opType: 'MatMul', name, inputs: [n.input(0), dqOut], outputs: [mid] },
      ...(bias ? [{ opType: 'Add', name: `${name}_bias`, inputs: [mid, bias], outputs: [Y] }] : []),
    ]);
    for (const v of olds) dropIfUnused(v);
    stats.counts.converted!++;
  }
}

/** The MatMuls a DQ output feeds as B, optionally through a Cast (fp16 scales on an fp32 graph). */
function dqConsumers(dq: Node): { matmuls: Node[]; cast: Node | null } | string {
  let v: Value = dq.outputs[0]!;
  let cast: Node | null = null;
  if (v.uses.length === 1 && v.uses[0]!.node.opType === 'Cast') {
    cast = v.uses[0]!.node;
    v = cast.outputs[0]!;
  }
  if (v.isGraphOutput) return 'its output is a graph output';
  const matmuls = v.uses.map((u) => u.node);
  if (!matmuls.length || v.uses.some((u) => u.node.opType !== 'MatMul' || !isDefault(u.node) || u.index !== 1))
    return 'its output is not only the B of MatMuls';
  return { matmuls, cast };
}

function toMatMulNBits(model: Model, stats: PassStats, acc: number): void {
  const dqs = [...model.graph.allGraphs()].flatMap((g) =>
    g.nodes.filter((n) => n.opType === 'DequantizeLinear' && isDefault(n) && n.constInput(0)),
  );
  for (const dq of dqs) {
    const label = dq.name || 'DequantizeLinear';
    const uses = dqConsumers(dq);
    if (typeof uses === 'string') {
      stats.skipped!.push(`${label}: ${uses}`);
      continue;
    }
    const q = readQdq(dq);
    if (typeof q === 'string') {
      stats.skipped!.push(`${label}: ${q}`);
      continue;
    }
    const actType = uses.cast ? (uses.cast.attrInt('to') as DataType) : dq.constInput(1)!.dtype;
    if (actType !== DataType.FLOAT && actType !== DataType.FLOAT16) {
      stats.skipped!.push(`${label}: activations are ${dtypeName(actType)}`);
      continue;
    }
    const g = dq.graph;
    const base = dq.input(0)!.name.replace(/_DQ_Q[48]$/, '');
    const p = packMatMulNBits(q, base, actType);
    const B = g.addInitializer(p.B),
      S = g.addInitializer(p.scales),
      Z = p.zeroPoints ? g.addInitializer(p.zeroPoints) : null;
    const attrs: Record<string, number> = { ...p.attrs };
    if (acc) attrs.accuracy_level = acc;
    for (const mm of uses.matmuls) {
      g.replaceNode(mm, [
        {
          opType: 'MatMulNBits',
          domain: MS_DOMAIN,
          name: `${mm.name || 'MatMul'}_Q${q.bits}`,
          inputs: [mm.input(0), B, S, Z],
          outputs: [mm.outputs[0]!],
          attrs,
        },
      ]);
      stats.counts.converted!++;
    }
    if (uses.cast) {
      stats.notes!.push(
        `${label}: DQ computed in ${dtypeName(dq.constInput(1)!.dtype)} then cast; MatMulNBits dequantizes in ${dtypeName(actType)} (differs by that rounding)`,
      );
      removeDeadNode(uses.cast);
    }
    removeDeadNode(dq);
    model.requireOpset(MS_DOMAIN, 1);
  }
}

export const convertQuantFormat = definePass({
  name: 'convert-quant-format',
  description: 'Convert block-quantized weights between MatMulNBits and DequantizeLinear-21 + MatMul, exactly',
  options: {
    to: { type: 'enum', default: 'qdq', values: ['qdq', 'matmulnbits'], description: 'target format' },
    accuracyLevel: {
      aliases: ['accuracy_level'],
      type: 'int',
      default: 0,
      min: 0,
      max: 4,
      description: 'accuracy_level of MatMulNBits made from DQ (0 = unset)',
    },
  },
  statistics: { converted: 'quantized weights converted' },
  run(model, o): PassStats {
    const stats: PassStats = { counts: { converted: 0 }, skipped: [], notes: [] };
    if (o.to === 'qdq') toQdq(model, stats);
    else toMatMulNBits(model, stats, o.accuracyLevel);
    return stats;
  },
});
