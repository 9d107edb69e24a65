import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, type Dim } from '../../ir/index.js';
import { fuseSkipLayerNorm } from '../../passes/fuse-skip-layernorm.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { randn, rng } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const C = 24;

interface Variant {
  simplified?: boolean;
  sumUsed?: boolean;
  skipShape?: Dim[];
  constSkip?: boolean;
  axis?: number;
  meanUsed?: boolean;
  branchBias?: boolean;
}

function build(v: Variant) {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(9);
  const a = b.input('a', DataType.FLOAT, ['batch', 'seq', C]);
  const skip = v.constSkip ? b.constF32('bias', [C], randn(r, C)) : b.input('b', DataType.FLOAT, v.skipShape ?? ['batch', 'seq', C]);
  const branch = v.branchBias ? b.op1('Add', [b.constF32('proj.bias', [C], randn(r, C, 0.5)), skip]) : skip;
  const s = b.op1('Add', [a, branch]);
  const g = b.constF32(
    'g',
    [C],
    Float32Array.from(randn(r, C, 0.1), (t) => t + 1),
  );
  const outs = v.meanUsed ? 2 : 1;
  const y = v.simplified
    ? b.op('SimplifiedLayerNormalization', [s, g], {
        attrs: { axis: v.axis ?? -1, epsilon: { float: 1e-6 }, stash_type: 1 },
        outputs: outs,
      })
    : b.op('LayerNormalization', [s, g, b.constF32('beta', [C], randn(r, C, 0.1))], {
        attrs: { axis: v.axis ?? -1, epsilon: { float: 1e-5 } },
        outputs: outs,
      });
  b.output(v.sumUsed ? b.op1('Add', [s, y[0]!]) : y[0]!, 'y', DataType.FLOAT);
  if (v.meanUsed) b.output(y[1]!, 'mean', DataType.FLOAT);
  const m = b.build();
  inferShapes.run(m, { writeValueInfo: false }, {});
  return m;
}

describe('fuse-skip-layernorm', () => {
  it.each([
    ['LayerNormalization', {}],
    ['LayerNormalization, sum used by the next residual (output 3)', { sumUsed: true }],
    ['SimplifiedLayerNormalization', { simplified: true }],
    ['SimplifiedLayerNormalization, sum used (output 3)', { simplified: true, sumUsed: true }],
    ['skip broadcast over the batch [1, seq, C]', { skipShape: [1, 'seq', C] }],
    ['skip broadcast, sum used (output 3)', { skipShape: [1, 'seq', C], sumUsed: true }],
    ['projection bias on the residual branch -> bias input', { branchBias: true, sumUsed: true }],
    ['Simplified, projection bias -> bias input', { simplified: true, branchBias: true }],
  ] as [string, Variant][])('fuses %s', async (name, v) => {
    const m = build(v);
    const r = await fuseAndCompare(m, fuseSkipLayerNorm, {}, { dims: { batch: 2, seq: 5 } });
    const op = v.simplified ? 'SkipSimplifiedLayerNormalization' : 'SkipLayerNormalization';
    expect(opCounts(m)[op]).toBe(1);
    expect(r.nodesAfter).toBe(v.sumUsed ? 2 : 1);
    const n = m.graph.nodes.find((x) => x.opType === op)!;
    expect(n.domain).toBe('com.microsoft');
    expect(n.outputs.length).toBe(v.sumUsed ? 4 : 1);
    expect(n.inputs.length).toBe(v.branchBias ? (v.simplified ? 4 : 5) : v.simplified ? 3 : 4);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-skip-layernorm ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each([
    ['Add of a constant bias', { constSkip: true }],
    ['skip broadcast over the sequence [batch, 1, C]', { skipShape: ['batch', 1, C] }],
    ['axis 1', { axis: 1 }],
    ['mean output used', { meanUsed: true }],
  ] as [string, Variant][])('leaves alone: %s', async (_, v) => {
    const m = build(v);
    const r = await fuseAndCompare(m, fuseSkipLayerNorm, {}, { dims: { batch: 2, seq: 5 } });
    expect(r.stats.counts.skipLayerNorm! + r.stats.counts.skipSimplifiedLayerNorm!).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.stats.skipped!.length).toBe(1);
  });

  it('bias=false keeps the bias Add', async () => {
    const m = build({ branchBias: true });
    const r = await fuseAndCompare(m, fuseSkipLayerNorm, { bias: false }, { dims: { batch: 2, seq: 5 } });
    expect(opCounts(m)).toEqual({ Add: 1, SkipLayerNormalization: 1 });
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
  });
});
