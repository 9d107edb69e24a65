import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Model } from '../../ir/index.js';
import { fuseRotary } from '../../passes/fuse-rotary.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const N = 3,
  D = 16,
  P = 64;
const INT64_MAX = 9223372036854775807n;

interface Variant {
  constNodes?: boolean;
  swapMul?: boolean;
  interleavedCache?: boolean;
  wrongSplit?: boolean;
  negFirstHalf?: boolean;
  extraUse?: boolean;
  twoInputs?: boolean;
  sharedPositions?: boolean;
}

function caches(interleaved: boolean) {
  const cos = new Float32Array(P * D),
    sin = new Float32Array(P * D);
  for (let p = 0; p < P; p++)
    for (let i = 0; i < D / 2; i++) {
      const a = p / Math.pow(10000, (2 * i) / D);
      // HF: emb = cat(freqs, freqs); the interleaved layout repeats each frequency twice instead.
      const [j, k] = interleaved ? [2 * i, 2 * i + 1] : [i, i + D / 2];
      cos[p * D + j] = cos[p * D + k] = Math.cos(a);
      sin[p * D + j] = sin[p * D + k] = Math.sin(a);
    }
  return { cos, sin };
}

function build(v: Variant): Model {
  const b = new GraphBuilder({ opset: 17 });
  const pos = b.input('position_ids', DataType.INT64, [v.sharedPositions ? 1 : 'batch', 'seq']);
  const c = caches(!!v.interleavedCache);
  const i64 = (vals: (number | bigint)[]) =>
    v.constNodes ? b.constant(Tensor.fromInt64('', [vals.length], vals)) : b.constInt64(`k${b.graph.initializerNames.length}`, vals);
  const cos = b.op1('Unsqueeze', [b.op1('Gather', [b.constF32('cos_cached', [P, D], c.cos), pos], { attrs: { axis: 0 } }), i64([1])]);
  const sin = b.op1('Unsqueeze', [b.op1('Gather', [b.constF32('sin_cached', [P, D], c.sin), pos], { attrs: { axis: 0 } }), i64([1])]);
  const one = (name: string) => {
    const x = b.input(name, DataType.FLOAT, ['batch', 'seq', N * D]);
    const t = b.op1('Transpose', [b.op1('Reshape', [x, i64([0, 0, N, D])])], { attrs: { perm: [0, 2, 1, 3] } });
    const split = v.wrongSplit ? D / 4 : D / 2;
    const x1 = b.op1('Slice', [t, i64([0]), i64([split]), i64([-1]), i64([1])]);
    const x2 = b.op1('Slice', [t, i64([split]), i64([INT64_MAX]), i64([-1]), i64([1])]);
    const rot = v.negFirstHalf
      ? b.op1('Concat', [x2, b.op1('Neg', [x1])], { attrs: { axis: -1 } })
      : b.op1('Concat', [b.op1('Neg', [x2]), x1], { attrs: { axis: -1 } });
    const out = b.op1('Add', [v.swapMul ? b.op1('Mul', [cos, t]) : b.op1('Mul', [t, cos]), b.op1('Mul', [rot, sin])]);
    b.output(out, `${name}_rot`, DataType.FLOAT, ['batch', N, 'seq', D]);
    if (v.extraUse) b.output(rot, `${name}_half`, DataType.FLOAT, ['batch', N, 'seq', D]);
    return out;
  };
  one('q');
  if (v.twoInputs) one('k');
  return b.build();
}

async function fuse(v: Variant) {
  const m = build(v);
  await inferShapes.run(m, { writeValueInfo: false }, {});
  const pos = v.sharedPositions
    ? Tensor.fromInt64('position_ids', [1, 5], [3, 4, 5, 6, 7])
    : Tensor.fromInt64('position_ids', [2, 5], [3, 4, 5, 6, 7, 10, 20, 30, 40, 63]);
  const r = await fuseAndCompare(m, fuseRotary, {}, { dims: { batch: 2, seq: 5 }, fixed: { position_ids: pos } });
  return { m, r };
}

describe('fuse-rotary', () => {
  it.each([
    ['initializer constants', {}],
    ['Constant nodes, cos * t order', { constNodes: true, swapMul: true }],
    ['q and k sharing one cache', { twoInputs: true }],
  ] as [string, Variant][])('fuses %s', async (name, v) => {
    const { m, r } = await fuse(v);
    const k = v.twoInputs ? 2 : 1;
    expect(r.stats.counts.rotary).toBe(k);
    const ops = opCounts(m);
    expect(ops.RotaryEmbedding).toBe(k);
    expect(ops.Slice ?? 0).toBe(0);
    expect(ops.Neg ?? 0).toBe(0);
    expect(ops.Gather ?? 0).toBe(0);
    // The half caches are shared: one cos and one sin table of [P, D/2].
    expect(m.graph.initializers.filter((t) => t.dims.join() === `${P},${D / 2}`)).toHaveLength(2);
    const rot = m.graph.nodes.find((n) => n.opType === 'RotaryEmbedding')!;
    expect(rot.attrInt('num_heads')).toBe(N);
    expect(rot.attrInt('interleaved')).toBe(0);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-rotary ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each([
    ['interleaved cache layout', { interleavedCache: true }],
    ['split not at D/2', { wrongSplit: true }],
    ['Neg on the first half', { negFirstHalf: true }],
    ['rotated half used elsewhere', { extraUse: true }],
    ['position_ids [1, S] shared across the batch', { sharedPositions: true }],
  ] as [string, Variant][])('leaves alone: %s', async (_, v) => {
    const { r } = await fuse(v);
    expect(r.stats.counts.rotary).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.minCosine).toBe(1);
  });
});
