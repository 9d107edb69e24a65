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

  it("position_ids [1, S] (HF's cache_position[None]) broadcast over a batch of 2: expanded for the op", async () => {
    const { m, r } = await fuse({ sharedPositions: true, twoInputs: true });
    expect(r.stats.counts.rotary).toBe(2);
    const ops = opCounts(m);
    expect(ops.RotaryEmbedding).toBe(2);
    // One Expand of the positions to [B, S], shared by q and k.
    expect(ops.Expand).toBe(1);
    expect(r.maxAbs).toBeLessThanOrEqual(1e-5);
  });

  it.each([
    ['interleaved cache layout', { interleavedCache: true }],
    ['split not at D/2', { wrongSplit: true }],
    ['Neg on the first half', { negFirstHalf: true }],
    ['rotated half used elsewhere', { extraUse: true }],
  ] as [string, Variant][])('leaves alone: %s', async (_, v) => {
    const { r } = await fuse(v);
    expect(r.stats.counts.rotary).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    expect(r.identical).toBe(true);
    expect(r.minCosine).toBe(1);
  });
});

// What transformers >= 4.38 exports (Llama, Qwen2, Phi-3): cos/sin computed in the graph from
// inv_freq and the position ids, no cache anywhere; variants the exporters write around it.
interface InGraph {
  /** rotate_half by Split instead of two Slices. */
  split?: boolean;
  /** Phi-3: rotary on the first R of D dims, the rest passed through by Concat. */
  partialDims?: number;
  /** freqs = pos[..., None] * inv_freq (Mul) instead of inv_freq @ pos (MatMul). */
  mulFreqs?: boolean;
  /** Qwen3 / LongRoPE attention scaling on cos and sin. */
  scale?: number;
  /** q arrives as a 4-D [B, S, N, D] value (per-head norm), not Reshape of a 3-D one. */
  fourD?: boolean;
  /** inv_freq fed as a graph input: unknown at compile time. */
  invInput?: boolean;
}

function buildInGraph(v: InGraph): Model {
  const b = new GraphBuilder({ opset: 17 });
  const made = new Map<string, ReturnType<typeof b.constInt64>>();
  // Named int64 constants, each made once however often the pattern reads it.
  const k64 = (name: string, vals: (number | bigint)[]) => made.get(name) ?? made.set(name, b.constInt64(name, vals)).get(name)!;
  const r = v.partialDims ?? D;
  const pos = b.input('position_ids', DataType.INT64, ['batch', 'seq']);
  const inv = Float32Array.from({ length: r / 2 }, (_, i) => 1 / Math.pow(10000, (2 * i) / r));
  const invV = (dims: number[]) => (v.invInput ? b.input('inv_freq', DataType.FLOAT, dims) : b.constF32('inv_freq', dims, inv));
  const posF = (axis: number) => b.op1('Cast', [b.op1('Unsqueeze', [pos, k64(`ax${axis}`, [axis])])], { attrs: { to: DataType.FLOAT } });
  const freqs = v.mulFreqs
    ? b.op1('Mul', [posF(-1), invV([r / 2])])
    : b.op1('Transpose', [b.op1('MatMul', [invV([1, r / 2, 1]), posF(1)])], { attrs: { perm: [0, 2, 1] } });
  const emb = b.op1('Concat', [freqs, freqs], { attrs: { axis: -1 } });
  const trig = (op: string) => {
    const c = b.op1(op, [emb]);
    const s = v.scale ? b.op1('Mul', [c, b.constScalarF32(`scale_${op}`, v.scale)]) : c;
    return b.op1('Unsqueeze', [s, k64('ax1h', [1])]);
  };
  const [cos, sin] = [trig('Cos'), trig('Sin')];
  const x = b.input('q', DataType.FLOAT, v.fourD ? ['batch', 'seq', N, D] : ['batch', 'seq', N * D]);
  const x4 = v.fourD ? b.op1('Mul', [x, b.constScalarF32('two', 2)]) : b.op1('Reshape', [x, k64('shape', [0, 0, N, D])]);
  const t = b.op1('Transpose', [x4], { attrs: { perm: [0, 2, 1, 3] } });
  const i64 = (name: string, n: number | bigint) => k64(name, [n]);
  const last = i64('last', -1),
    one = i64('one', 1);
  const tr = r < D ? b.op1('Slice', [t, i64('zero', 0), i64('r', r), last, one]) : t;
  const [x1, x2] = v.split
    ? b.op('Split', [tr, k64('halves', [r / 2, r / 2])], { attrs: { axis: -1 }, outputs: 2 })
    : [
        b.op1('Slice', [tr, i64('zero', 0), i64('h', r / 2), last, one]),
        b.op1('Slice', [tr, i64('h', r / 2), i64('max', INT64_MAX), last, one]),
      ];
  const rot = b.op1('Concat', [b.op1('Neg', [x2!]), x1!], { attrs: { axis: -1 } });
  let out = b.op1('Add', [b.op1('Mul', [tr, cos]), b.op1('Mul', [rot, sin])]);
  if (r < D) out = b.op1('Concat', [out, b.op1('Slice', [t, i64('r', r), i64('max', INT64_MAX), last, one])], { attrs: { axis: -1 } });
  b.output(out, 'q_rot', DataType.FLOAT, ['batch', N, 'seq', D]);
  return b.build();
}

describe('fuse-rotary: cos/sin computed in the graph', () => {
  it.each([
    ['inv_freq @ position_ids, Slice halves', {}],
    ['Split halves', { split: true }],
    ['position_ids * inv_freq', { mulFreqs: true }],
    ['scaled cos/sin', { scale: 1.25 }],
    ['partial rotary (Phi-3, 8 of 16 dims)', { partialDims: 8 }],
    ['4-D input (per-head norm before the transpose)', { fourD: true }],
    ['partial rotary on a 4-D input', { partialDims: 8, fourD: true }],
  ] as [string, InGraph][])('fuses %s', async (name, v) => {
    const m = buildInGraph(v);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const pos = Tensor.fromInt64('position_ids', [2, 5], [0, 1, 2, 3, 4, 90, 91, 92, 93, 99]);
    const r = await fuseAndCompare(m, fuseRotary, { maxPositions: 100 }, { dims: { batch: 2, seq: 5 }, fixed: { position_ids: pos } });
    expect(r.stats.counts.rotary).toBe(1);
    const ops = opCounts(m);
    expect(ops).toMatchObject({ RotaryEmbedding: 1 });
    for (const op of ['Cos', 'Sin', 'MatMul', 'Neg', 'Split', 'Concat']) expect(ops[op] ?? 0, op).toBe(0);
    const rot = m.graph.nodes.find((n) => n.opType === 'RotaryEmbedding')!;
    const rd = v.partialDims ?? D;
    // The tables: maxPositions rows of rotary_dim / 2, one for cos and one for sin.
    expect(rot.inputs[2]!.initializer!.dims).toEqual([100, rd / 2]);
    expect(rot.attrInt('rotary_embedding_dim', 0)).toBe(v.partialDims ?? 0);
    expect(rot.inputs[0]!.shape!.length).toBe(v.fourD ? 4 : 3);
    expect(r.maxAbs).toBeLessThanOrEqual(1e-5);
    console.log(`fuse-rotary ${name}: max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('says why when inv_freq is not a constant', async () => {
    const m = buildInGraph({ invInput: true });
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const pos = Tensor.fromInt64('position_ids', [2, 5], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const r = await fuseAndCompare(m, fuseRotary, {}, { dims: { batch: 2, seq: 5 }, fixed: { position_ids: pos } });
    expect(r.stats.counts.rotary).toBe(0);
    expect(r.identical).toBe(true);
    expect(r.stats.skipped).toEqual([
      expect.stringContaining('cos/sin are neither Unsqueeze(Gather(constant cache, position_ids), 1) nor computed'),
    ]);
  });
});
