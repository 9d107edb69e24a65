// position-ids-input: exported HF decoders compute position ids in the graph from the attention
// mask (CumSum(mask) - 1, masked_fill of padding, sliced to the new tokens). NPUs have no CumSum,
// and static LLM builders for NPUs take the ids as an input instead: this pass cuts the chain at the
// value the rest of the graph reads and makes it a `position_ids` graph input (int64
// [batch, sequence]), which the runtime fills with cumsum(mask) - 1 for the new tokens.
import { DataType, Graph, Model, Node, Value } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';

/** Integer-preserving ops the id computation goes through after the CumSum. */
const CHAIN = new Set(['Sub', 'Add', 'Mul', 'Where', 'Slice', 'Cast', 'Clip', 'Max', 'Min', 'Squeeze', 'Identity']);
const INT_TYPES = new Set<number>([DataType.INT64, DataType.INT32]);

/** Graph inputs a value depends on through data (Shape/Size only read shapes: they cut the walk). */
function dataDeps(v: Value | null, memo: Map<Value, Set<Value>>): Set<Value> {
  if (!v) return new Set();
  const hit = memo.get(v);
  if (hit) return hit;
  const out = new Set<Value>();
  memo.set(v, out);
  if (v.isGraphInput && !v.initializer) out.add(v);
  const p = v.producer;
  if (p && p.opType !== 'Shape' && p.opType !== 'Size') for (const i of p.inputs) for (const d of dataDeps(i, memo)) out.add(d);
  return out;
}

function rewrite(g: Graph, cumsum: Node, memo: Map<Value, Set<Value>>): string | Value {
  const deps = dataDeps(cumsum.input(0), memo);
  const mask = [...deps][0];
  if (deps.size !== 1 || !mask || !/mask/i.test(mask.name)) return `CumSum '${cumsum.name}' does not run over an attention mask input`;
  const onlyMask = (v: Value | null) => [...dataDeps(v, memo)].every((d) => d === mask);
  // Walk forward while nodes only combine the ids with mask-derived values and constants.
  const chain = new Set<Node>([cumsum]);
  const frontier: Value[] = [];
  const queue = [cumsum.outputs[0]!];
  while (queue.length) {
    const v = queue.shift()!;
    let leaves = v.isGraphOutput;
    for (const n of v.consumers) {
      if (chain.has(n)) continue;
      const intOut = n.outputs[0]?.dtype !== undefined && INT_TYPES.has(n.outputs[0]!.dtype!);
      if (n.domain === '' && CHAIN.has(n.opType) && intOut && n.inputs.every(onlyMask)) {
        chain.add(n);
        queue.push(n.outputs[0]!);
      } else leaves = true;
    }
    if (leaves) frontier.push(v);
  }
  if (frontier.length !== 1) return `CumSum '${cumsum.name}': the ids reach the graph through ${frontier.length} values, expected one`;
  const ids = frontier[0]!;
  if (!ids.dtype || !INT_TYPES.has(ids.dtype) || ids.isGraphOutput)
    return `CumSum '${cumsum.name}': '${ids.name}' is not an integer id tensor`;
  const rank = ids.type?.shape?.length;
  if (rank !== 2) return `CumSum '${cumsum.name}': ids '${ids.name}' have rank ${rank ?? 'unknown'}, expected [batch, sequence]`;
  const tokens = g.inputs.find((v) => /input_ids|inputs_embeds/.test(v.name) && (v.type?.shape?.length ?? 0) >= 2);
  const shape = tokens ? tokens.type!.shape!.slice(0, 2) : ids.type!.shape!;
  if (g.values.has('position_ids')) return `the graph already has a value named 'position_ids'`;
  const input = g.addInput('position_ids', { elemType: ids.dtype, shape: [...shape] });
  g.replaceAllUses(ids, input);
  return input;
}

export const positionIdsInput: Pass = {
  name: 'position-ids-input',
  description: 'position ids computed in the graph from CumSum(attention_mask) -> a position_ids graph input (static NPU decoders)',
  options: {},
  requires: ['shapes'],
  run(model: Model): PassStats {
    const stats: PassStats = { counts: { positionIdsInputs: 0, nodesRemoved: 0 }, skipped: [] };
    const g = model.graph;
    const memo = new Map<Value, Set<Value>>();
    for (const n of [...g.nodes]) {
      if (n.opType !== 'CumSum' || n.domain !== '' || !g.nodes.includes(n)) continue;
      const before = g.nodes.length;
      const r = rewrite(g, n, memo);
      if (typeof r === 'string') {
        stats.skipped!.push(r);
        continue;
      }
      // The id chain is dead now: it goes, with what only it read.
      g.removeDead([n, ...g.nodes.filter((x) => x.outputs.some((o) => o && !o.uses.length && !o.isGraphOutput))]);
      stats.counts.positionIdsInputs!++;
      stats.counts.nodesRemoved! += before - g.nodes.length;
      memo.clear();
    }
    return stats;
  },
};
