import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Tensor, type Model, type Value } from '../../ir/index.js';
import { fuseAttention } from '../../passes/fuse-attention.js';
import { fuseRotary } from '../../passes/fuse-rotary.js';
import { inferShapes } from '../../passes/infer-shapes.js';
import { randn, rng } from '../../runtime/ort.js';
import { cleanup, fuseAndCompare, opCounts } from './fuse-util.js';

afterAll(cleanup);
const N = 4,
  D = 8,
  C = N * D;

interface Variant {
  scale?: 'div' | 'mul' | 'none' | 'sdpa';
  mask?: boolean;
  mask2d?: boolean;
  softmaxAxis?: number;
  probsUsed?: boolean;
  scaleInput?: boolean;
  crossKv?: boolean;
  /** Gemma 2: cap * tanh(s / cap) after the scale. */
  softcap?: number;
}

function build(v: Variant): Model {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(21);
  const x = b.input('x', DataType.FLOAT, ['batch', 'seq', C]);
  const kvIn = v.crossKv ? b.input('memory', DataType.FLOAT, ['batch', 'mem', C]) : x;
  const proj = (name: string, inp: Value) =>
    b.op1('Add', [
      b.constF32(`${name}.bias`, [C], randn(r, C, 0.1)),
      b.op1('MatMul', [inp, b.constF32(`${name}.weight`, [C, C], randn(r, C * C, 0.2))]),
    ]);
  const shape4 = b.constInt64('shape4', [0, 0, N, D]);
  const heads = (t: Value) => b.op1('Transpose', [b.op1('Reshape', [t, shape4])], { attrs: { perm: [0, 2, 1, 3] } });
  const q = heads(proj('q', x)),
    k = heads(proj('k', kvIn)),
    val = heads(proj('v', kvIn));
  const kT = b.op1('Transpose', [k], { attrs: { perm: [0, 1, 3, 2] } });
  const sq = b.constScalarF32('sqrt_scale', Math.sqrt(1 / Math.sqrt(D)));
  let s = v.scale === 'sdpa' ? b.op1('MatMul', [b.op1('Mul', [q, sq]), b.op1('Mul', [kT, sq])]) : b.op1('MatMul', [q, kT]);
  const scaleIn = v.scaleInput ? b.input('scale', DataType.FLOAT, []) : null;
  if (v.scale === 'mul') s = b.op1('Mul', [s, b.constScalarF32('inv_sqrt_d', 1 / Math.sqrt(D))]);
  else if (v.scale !== 'none' && v.scale !== 'sdpa') s = b.op1('Div', [s, scaleIn ?? b.constScalarF32('sqrt_d', Math.sqrt(D))]);
  if (v.softcap) {
    const cap = b.constScalarF32('cap', v.softcap);
    s = b.op1('Mul', [b.op1('Tanh', [b.op1('Div', [s, cap])]), cap]);
  }
  if (v.mask) s = b.op1('Add', [s, b.input('mask', DataType.FLOAT, ['batch', 1, 'seq', 'seq'])]);
  if (v.mask2d) s = b.op1('Add', [s, b.input('mask', DataType.FLOAT, ['seq', 'seq'])]);
  const p = b.op1('Softmax', [s], { attrs: { axis: v.softmaxAxis ?? -1 } });
  const ctx = b.op1('Transpose', [b.op1('MatMul', [p, val])], { attrs: { perm: [0, 2, 1, 3] } });
  b.output(b.op1('Reshape', [ctx, b.constInt64('shape3', [0, 0, C])]), 'y', DataType.FLOAT, ['batch', 'seq', C]);
  if (v.probsUsed) b.output(p, 'probs', DataType.FLOAT);
  const m = b.build();
  return m;
}

async function fuse(v: Variant) {
  const m = build(v);
  await inferShapes.run(m, { writeValueInfo: false }, {});
  const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: 6, mem: 9 } });
  return { m, r };
}

describe('fuse-attention', () => {
  it.each([
    ['Div by sqrt(D)', {}],
    ['Mul by 1/sqrt(D)', { scale: 'mul' }],
    ['no scaling (scale = 1)', { scale: 'none' }],
    ['torch SDPA export: sqrt(scale) on q and on k^T, with mask', { scale: 'sdpa', mask: true }],
    ['additive mask -> attention_bias', { mask: true }],
    ['cross attention (key/value from another sequence)', { crossKv: true }],
    ['2-D [S, T] mask, expanded to a [1, 1, S, T] attention_bias', { mask2d: true }],
  ] as [string, Variant][])('fuses %s into MultiHeadAttention', async (name, v) => {
    const { m, r } = await fuse(v);
    expect(r.stats.counts.mha).toBe(1);
    const ops = opCounts(m);
    expect(ops.MultiHeadAttention).toBe(1);
    expect(ops.Softmax ?? 0).toBe(0);
    expect(ops.Transpose ?? 0).toBe(0);
    expect(ops.Reshape ?? 0).toBe(0);
    const mha = m.graph.nodes.find((n) => n.opType === 'MultiHeadAttention')!;
    expect(mha.attrInt('num_heads')).toBe(N);
    expect(mha.attrFloat('scale')).toBeCloseTo(v.scale === 'none' ? 1 : 1 / Math.sqrt(D), 6);
    expect(mha.inputs.length).toBe(v.mask || v.mask2d ? 6 : 3);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    console.log(`fuse-attention ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it.each([
    ['Softmax over axis 2', { softmaxAxis: 2 }],
    ['attention probabilities also an output', { probsUsed: true }],
    ['scale from a graph input', { scaleInput: true }],
    ['soft-capped scores without a KV cache (only GroupQueryAttention has softcap)', { softcap: 2, mask: true }],
  ] as [string, Variant][])('leaves alone: %s', async (_, v) => {
    const m = build(v);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(
      m,
      fuseAttention,
      {},
      {
        dims: { batch: 2, seq: 6 },
        fixed: v.scaleInput ? { scale: (await import('../../ir/index.js')).Tensor.fromFloat32('scale', [], Float32Array.of(3)) } : {},
      },
    );
    expect(r.stats.counts.mha! + r.stats.counts.gqa! + r.stats.counts.mhaBnsh!).toBe(0);
    expect(r.nodesAfter).toBe(r.nodesBefore);
    if (v.softcap)
      expect(r.stats.skipped).toEqual([expect.stringMatching(/soft-capped scores .* need GroupQueryAttention's softcap: no KV cache/)]);
    expect(r.identical).toBe(true);
    expect(r.minCosine).toBe(1);
  });
});

// Encoder forms onnxruntime's fusion tests cover (BERT, CLIP/Phi vision, BART with SDPA).
interface EncoderVariant {
  /** BERT: a [B, T] 0/1 input as (1 - mask) * -10000 in [B, 1, 1, T]; BART: a bool [B, 1, S, T] as Where. */
  mask?: 'padding' | 'bool';
  /** K^T as Transpose(Reshape(k), [0, 2, 3, 1]) (BERT). */
  kPerm0231?: boolean;
  /** CLIP/Phi: [B*N, S, D] batched MatMuls, query scaled before the head split, shapes from Shape(k). */
  bmm?: boolean;
  /** BART SDPA: K^T as Reshape(Transpose(Reshape(k, [B*N, T, D]), [0, 2, 1]), [B, N, D, T]) and the NaN guard. */
  bart?: boolean;
  /** Value head size other than query/key's. */
  vHead?: number;
  /** GPT-2: Where(causal table, scores, -10000) before the mask Add; with `past`, keys after a cache of 3. */
  causal?: boolean;
  past?: boolean;
}

function buildEncoder(v: EncoderVariant): Model {
  const b = new GraphBuilder({ opset: 17 });
  const r = rng(5);
  const consts = new Map<string, Value>();
  const i64 = (name: string, vals: number[], dims?: number[]) =>
    consts.get(name) ?? consts.set(name, b.constInt64(name, vals, dims)).get(name)!;
  const S = 6,
    DV = v.vHead ?? D;
  const x = b.input('x', DataType.FLOAT, ['batch', v.bmm || v.bart || v.causal ? S : 'seq', C]);
  const proj = (name: string, out: number) =>
    b.op1('Add', [
      b.constF32(`${name}.bias`, [out], randn(r, out, 0.1)),
      b.op1('MatMul', [x, b.constF32(`${name}.weight`, [C, out], randn(r, C * out, 0.2))]),
    ]);
  const split = (t: Value, d: number) => b.op1('Reshape', [t, i64(`shape4_${d}`, [0, 0, N, d])]);
  const heads = (t: Value, d: number) => b.op1('Transpose', [split(t, d)], { attrs: { perm: [0, 2, 1, 3] } });
  const to3 = (t: Value, d: number) => b.op1('Reshape', [t, i64(`shape3_${d}`, [-1, S, d])]);
  const scale = 1 / Math.sqrt(D);
  let qIn = proj('q', C);
  if (v.bmm) qIn = b.op1('Mul', [qIn, b.constScalarF32('q_scale', scale)]);
  const q = heads(qIn, D);
  const kProj = proj('k', C);
  const P = v.past ? 3 : 0;
  // GPT-2 keeps the cache in BNSH: key/value = Concat(past, new) on the sequence axis.
  const cache = (t: Value, name: string) =>
    v.past ? b.op1('Concat', [b.input(name, DataType.FLOAT, ['batch', N, P, D]), t], { attrs: { axis: 2 } }) : t;
  const val = cache(heads(proj('v', N * DV), DV), 'past_value');
  let s: Value;
  if (v.bmm) {
    // [B*N, S, T] scores, viewed as [B, N, S, T] for the mask, the key length read off k's 3-D shape.
    const k3 = to3(heads(kProj, D), D);
    const t = b.op1('Unsqueeze', [b.op1('Gather', [b.op1('Shape', [k3]), i64('one', [1], [])], { attrs: { axis: 0 } }), i64('zero', [0])]);
    const s3 = b.op1('MatMul', [to3(q, D), b.op1('Transpose', [k3], { attrs: { perm: [0, 2, 1] } })]);
    s = b.op1('Reshape', [s3, b.op1('Concat', [i64('bn_s', [-1, N, S]), t], { attrs: { axis: 0 } })]);
  } else if (v.bart) {
    const kt = b.op1('Transpose', [to3(heads(kProj, D), D)], { attrs: { perm: [0, 2, 1] } });
    const kT = b.op1('Reshape', [kt, i64('shape_kt', [-1, N, D, S])]);
    const sq = b.constScalarF32('sqrt_scale', Math.sqrt(scale));
    s = b.op1('MatMul', [b.op1('Mul', [q, sq]), b.op1('Mul', [kT, sq])]);
  } else {
    const kT = v.kPerm0231
      ? b.op1('Transpose', [split(kProj, D)], { attrs: { perm: [0, 2, 3, 1] } })
      : b.op1('Transpose', [cache(heads(kProj, D), 'past_key')], { attrs: { perm: [0, 1, 3, 2] } });
    s = b.op1('Div', [b.op1('MatMul', [q, kT]), b.constScalarF32('sqrt_d', Math.sqrt(D))]);
  }
  if (v.causal) {
    const T = S + P;
    const table = Array.from({ length: S * T }, (_, i) => (i % T <= P + Math.floor(i / T) ? 1 : 0));
    const allowed = b.initializer('causal', Tensor.fromNumbers('causal', DataType.BOOL, [1, 1, S, T], table));
    s = b.op1('Where', [allowed, s, b.constScalarF32('masked', -10000)]);
  }
  if (v.mask === 'padding') {
    const keep = b.op1(
      'Cast',
      [b.op1('Unsqueeze', [b.input('keep', DataType.INT64, ['batch', v.past ? S + P : 'seq']), i64('axes12', [1, 2])])],
      {
        attrs: { to: DataType.FLOAT },
      },
    );
    s = b.op1('Add', [s, b.op1('Mul', [b.op1('Sub', [b.constScalarF32('one_f', 1), keep]), b.constScalarF32('neg', -10000)])]);
  } else if (v.mask === 'bool') {
    const bias = b.op1('Where', [
      b.input('allowed', DataType.BOOL, ['batch', 1, S, S]),
      b.constScalarF32('zero_f', 0),
      b.constScalarF32('ninf', -1e9),
    ]);
    s = b.op1('Add', [s, bias]);
  }
  if (v.bmm) s = b.op1('Reshape', [s, i64('bn_s_t', [-1, S, S])]);
  let p = b.op1('Softmax', [s], { attrs: { axis: -1 } });
  if (v.bart) p = b.op1('Where', [b.op1('IsNaN', [p]), b.constScalarF32('zero_p', 0), p]);
  let ctx = b.op1('MatMul', [p, v.bmm ? to3(val, DV) : val]);
  if (v.bmm) ctx = b.op1('Reshape', [ctx, i64('ctx4', [-1, N, S, DV])]);
  ctx = b.op1('Transpose', [ctx], { attrs: { perm: [0, 2, 1, 3] } });
  b.output(b.op1('Reshape', [ctx, i64('shape_out', [0, 0, N * DV])]), 'y', DataType.FLOAT);
  return b.build();
}

/** A random 0/1 padding mask [B, T] whose first key is kept: under a causal Where mask every row keeps a key
 * (a row whose every allowed key is padded comes out differently once Where becomes a bias; see Select). */
function keepFirst(batch: number, t: number): Tensor {
  const r = rng(11);
  return Tensor.fromInt64(
    'keep',
    [batch, t],
    Array.from({ length: batch * t }, (_, i) => (i % t === 0 || r() < 0.6 ? 1 : 0)),
  );
}

describe('fuse-attention: encoder forms', () => {
  it.each([
    ['BERT: K^T with perm [0,2,3,1], [B, 1, 1, T] padding mask expanded over the queries', { mask: 'padding', kPerm0231: true }],
    ['BERT: value head size other than the query/key head size', { mask: 'padding', vHead: 12 }],
    ['CLIP/Phi: 3-D batched MatMuls, pre-scaled query, key length from Shape(k)', { bmm: true }],
    ['BART SDPA: K^T via Reshape/Transpose/Reshape, bool mask, NaN guard', { bart: true, mask: 'bool' }],
    ['GPT-2: Where(causal, scores, -10000) and a padding mask, one attention_bias', { causal: true, mask: 'padding' }],
  ] as [string, EncoderVariant][])('fuses %s into MultiHeadAttention', async (name, v) => {
    const m = buildEncoder(v);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: 6 }, intHigh: 2, fixed: { keep: keepFirst(2, 6) } });
    expect(r.stats.skipped ?? []).toEqual([]);
    expect(r.stats.counts.mha).toBe(1);
    const ops = opCounts(m);
    expect(ops.MultiHeadAttention).toBe(1);
    expect(ops.Softmax ?? 0).toBe(0);
    expect(ops.MatMul).toBe(3);
    expect(ops.Where ?? 0).toBe(v.causal ? 1 : v.mask === 'bool' ? 1 : 0);
    const mha = m.graph.nodes.find((n) => n.opType === 'MultiHeadAttention')!;
    expect(mha.attrFloat('scale')).toBeCloseTo(1 / Math.sqrt(D), 6);
    if (v.mask === 'padding') expect(ops.Expand).toBe(1);
    expect(r.minCosine).toBeGreaterThanOrEqual(0.99999);
    expect(r.maxAbs).toBeLessThan(1e-4);
    console.log(`fuse-attention ${name}: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('fuses GPT-2 attention over a BNSH cache (Concat(past, new)) into MultiHeadAttention on the BNSH key/value', async () => {
    const m = buildEncoder({ causal: true, past: true, mask: 'padding' });
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2 }, fixed: { keep: keepFirst(2, 9) } });
    expect(r.stats.counts.mhaBnsh).toBe(1);
    const mha = m.graph.nodes.find((n) => n.opType === 'MultiHeadAttention')!;
    expect(mha.inputs[1]!.producer?.opType).toBe('Concat');
    expect(mha.inputs[5]!.producer?.opType).toBe('Expand');
    expect(r.maxAbs).toBeLessThan(1e-4);
    // The fallback says why it is not GroupQueryAttention.
    expect(r.stats.notes).toEqual([
      expect.stringMatching(/^attention at '.*': MultiHeadAttention, not GroupQueryAttention: the mask is applied by Where on the scores/),
    ]);
    console.log(`fuse-attention GPT-2 with cache: cosine ${r.minCosine.toFixed(8)}, max abs ${r.maxAbs.toExponential(2)}`);
  });

  it('with decoder=mha, a KV-cache decoder gets MultiHeadAttention and the note names the option', async () => {
    const m = buildEncoder({ causal: true, past: true, mask: 'padding' });
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(m, fuseAttention, { decoder: 'mha' }, { dims: { batch: 2 }, fixed: { keep: keepFirst(2, 9) } });
    expect(r.stats.counts.mhaBnsh).toBe(1);
    expect(r.stats.notes).toEqual([expect.stringContaining('not GroupQueryAttention: fuse-attention{decoder=mha}')]);
  });

  it('fuses GPT-2 with K^T = Concat(past^T, k^T) and its BNSH transpose as present, scores of unknown dims', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(8);
    const x = b.input('x', DataType.FLOAT, ['batch', 'seq', C]);
    const proj = (name: string) => b.op1('MatMul', [x, b.constF32(`${name}.weight`, [C, C], randn(r, C * C, 0.2))]);
    const split = (t: Value) => b.op1('Reshape', [t, b.constInt64(`split_${t.name}`, [0, 0, N, -1])]);
    const pastK = b.input('past_key', DataType.FLOAT, ['batch', N, 'past', D]);
    const kT = b.op1(
      'Concat',
      [
        b.op1('Transpose', [pastK], { attrs: { perm: [0, 1, 3, 2] } }),
        b.op1('Transpose', [split(proj('k'))], { attrs: { perm: [0, 2, 3, 1] } }),
      ],
      { attrs: { axis: -1 } },
    );
    const val = b.op1(
      'Concat',
      [
        b.input('past_value', DataType.FLOAT, ['batch', N, 'past', D]),
        b.op1('Transpose', [split(proj('v'))], { attrs: { perm: [0, 2, 1, 3] } }),
      ],
      { attrs: { axis: 2 } },
    );
    const q = b.op1('Transpose', [split(proj('q'))], { attrs: { perm: [0, 2, 1, 3] } });
    const s = b.op1('Div', [b.op1('MatMul', [q, kT]), b.constScalarF32('sqrt_d', Math.sqrt(D))]);
    // A causal table of dims unrelated to the scores' (GPT-2 slices it at run time): the scores' dims become unknown.
    const w = b.op1('Where', [b.input('allowed', DataType.BOOL, [1, 1, 'rows', 'cols']), s, b.constScalarF32('masked', -10000)]);
    const ctx = b.op1('Transpose', [b.op1('MatMul', [b.op1('Softmax', [w], { attrs: { axis: 3 } }), val])], {
      attrs: { perm: [0, 2, 1, 3] },
    });
    b.output(b.op1('Reshape', [ctx, b.constInt64('merge', [0, 0, -1])]), 'y', DataType.FLOAT);
    b.output(b.op1('Transpose', [kT], { attrs: { perm: [0, 1, 3, 2] } }), 'present_key', DataType.FLOAT);
    b.output(val, 'present_value', DataType.FLOAT);
    const m = b.build();
    await inferShapes.run(m, { writeValueInfo: false }, {});
    expect(m.graph.outputs[0]!.shape).toEqual(['batch', null, null]);
    const [S, P] = [3, 2];
    const table = Array.from({ length: S * (S + P) }, (_, i) => (i % (S + P) <= P + Math.floor(i / (S + P)) ? 1 : 0));
    const allowed = Tensor.fromNumbers('allowed', DataType.BOOL, [1, 1, S, S + P], table);
    const res = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: S, past: P }, fixed: { allowed } });
    expect(res.stats.counts.mhaBnsh).toBe(1);
    const mha = m.graph.nodes.find((n) => n.opType === 'MultiHeadAttention')!;
    // Key: the BNSH transpose the graph makes for present_key; the Concat stays for it.
    expect(mha.inputs[1]).toBe(m.graph.outputs[1]);
    expect(opCounts(m).Softmax ?? 0).toBe(0);
    expect(res.maxAbs).toBeLessThan(1e-5);
    console.log(`fuse-attention GPT-2 K^T concat: cosine ${res.minCosine.toFixed(8)}, max abs ${res.maxAbs.toExponential(2)}`);
  });

  it('fuses two GPT-2 past layers (PyTorch 1.5): merge target from Shape of the transposed context, layer 2 once layer 1 fused', async () => {
    // Every reshape target comes from Shape of its input, and the causal table is sliced at [T - S, T) with T
    // symbolic: shape inference cannot say the slice has S rows, so the first context, and the residual
    // stream after it, has an unknown sequence dim. Layer 2 is provable only after layer 1 fused.
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(9);
    let id = 0;
    const i64 = (name: string, v: number[]) => b.constInt64(`${name}_${id++}`, v);
    const dim = (t: Value, axis: number) =>
      b.op1('Gather', [b.op1('Shape', [t]), b.constInt64(`at${axis}_${id++}`, [axis], [])], { attrs: { axis: 0 } });
    const un = (t: Value) => b.op1('Unsqueeze', [t, i64(`ax_${t.name}`, [0])]);
    const target = (t: Value, tail: number[]) =>
      b.op1('Concat', [un(dim(t, 0)), un(dim(t, 1)), i64(`tail_${t.name}`, tail)], { attrs: { axis: 0 } });
    const tri = Array.from({ length: 64 }, (_, i) => (i % 8 <= Math.floor(i / 8) ? 1 : 0));
    const causal = b.initializer(Tensor.fromNumbers('causal', DataType.UINT8, [1, 1, 8, 8], tri));
    let h = b.input('x', DataType.FLOAT, ['batch', 1, C]);
    for (const l of [0, 1]) {
      const proj = (name: string) => b.op1('MatMul', [h, b.constF32(`${l}.${name}`, [C, C], randn(r, C * C, 0.3))]);
      const heads = (t: Value, perm: number[]) => b.op1('Transpose', [b.op1('Reshape', [t, target(t, [N, D])])], { attrs: { perm } });
      const k = b.op1('Concat', [b.input(`past_key_${l}`, DataType.FLOAT, ['batch', N, 'past', D]), heads(proj('k'), [0, 2, 1, 3])], {
        attrs: { axis: 2 },
      });
      const v = b.op1('Concat', [b.input(`past_value_${l}`, DataType.FLOAT, ['batch', N, 'past', D]), heads(proj('v'), [0, 2, 1, 3])], {
        attrs: { axis: 2 },
      });
      const s = b.op1('Div', [
        b.op1('MatMul', [heads(proj('q'), [0, 2, 1, 3]), b.op1('Transpose', [k], { attrs: { perm: [0, 1, 3, 2] } })]),
        b.constScalarF32(`${l}.sqrt_d`, Math.sqrt(D)),
      ]);
      const [rows, cols] = [dim(s, 2), dim(s, 3)];
      const start = un(b.op1('Sub', [cols, rows]));
      const sliced = b.op1('Slice', [causal, start, un(cols), i64(`${l}.axis2`, [2])]);
      const allowed = b.op1('Cast', [b.op1('Slice', [sliced, i64(`${l}.zero`, [0]), un(cols), i64(`${l}.axis3`, [3])])], {
        attrs: { to: DataType.BOOL },
      });
      const w = b.op1('Where', [allowed, s, b.constScalarF32(`${l}.masked`, -10000)]);
      const ctx = b.op1('Transpose', [b.op1('MatMul', [b.op1('Softmax', [w], { attrs: { axis: -1 } }), v])], {
        attrs: { perm: [0, 2, 1, 3] },
      });
      h = b.op1('Add', [h, b.op1('Reshape', [ctx, target(ctx, [C])])]);
      b.output(k, `present_key_${l}`, DataType.FLOAT);
      b.output(v, `present_value_${l}`, DataType.FLOAT);
    }
    b.output(h, 'y', DataType.FLOAT);
    const m = b.build();
    await inferShapes.run(m, { writeValueInfo: false }, {});
    expect(m.graph.value('y').shape).toEqual(['batch', null, C]);
    const res = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, past: 3 } });
    expect(res.stats.counts.mhaBnsh).toBe(2);
    expect(res.stats.skipped ?? []).toEqual([]);
    const ops = opCounts(m);
    expect([ops.MultiHeadAttention, ops.Softmax ?? 0, ops.Where ?? 0]).toEqual([2, 0, 2]);
    expect(res.maxAbs).toBeLessThan(1e-5);
    console.log(`fuse-attention GPT-2 past, 2 layers: cosine ${res.minCosine.toFixed(8)}, max abs ${res.maxAbs.toExponential(2)}`);
  });

  it('fuses attention behind a RotaryEmbedding already on split heads (KV cache, additive mask): it moves to the 3-D projection', async () => {
    // The valid form of onnxruntime's rotary_mha tests: com.microsoft RotaryEmbedding on [B, N, S, D] q and k.
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(12);
    const x = b.input('x', DataType.FLOAT, ['batch', 'seq', C]);
    const pos = b.input('position_ids', DataType.INT64, ['batch', 'seq']);
    const angles = Array.from({ length: 16 * (D / 2) }, (_, i) => Math.floor(i / (D / 2)) / 10000 ** ((2 * (i % (D / 2))) / D));
    const cos = b.constF32('cos_cache', [16, D / 2], angles.map(Math.cos));
    const sin = b.constF32('sin_cache', [16, D / 2], angles.map(Math.sin));
    const heads = (name: string) =>
      b.op1(
        'Transpose',
        [
          b.op1('Reshape', [
            b.op1('MatMul', [x, b.constF32(name, [C, C], randn(r, C * C, 0.3))]),
            b.constInt64(`${name}.split`, [0, 0, N, D]),
          ]),
        ],
        {
          attrs: { perm: [0, 2, 1, 3] },
        },
      );
    const rope = (t: Value) => b.op1('RotaryEmbedding', [t, pos, cos, sin], { domain: 'com.microsoft', attrs: { interleaved: 0 } });
    const cache = (name: string, t: Value) =>
      b.op1('Concat', [b.input(name, DataType.FLOAT, ['batch', N, 'past', D]), t], { attrs: { axis: 2 } });
    const k = cache('past_key', rope(heads('k')));
    const v = cache('past_value', heads('v'));
    const s = b.op1('Div', [
      b.op1('MatMul', [rope(heads('q')), b.op1('Transpose', [k], { attrs: { perm: [0, 1, 3, 2] } })]),
      b.constScalarF32('sqrt_d', Math.sqrt(D)),
    ]);
    const masked = b.op1('Add', [s, b.input('mask', DataType.FLOAT, ['batch', 1, 'seq', 'total'])]);
    const ctx = b.op1('Transpose', [b.op1('MatMul', [b.op1('Softmax', [masked], { attrs: { axis: -1 } }), v])], {
      attrs: { perm: [0, 2, 1, 3] },
    });
    b.output(b.op1('Reshape', [ctx, b.constInt64('merge', [0, 0, C])]), 'y', DataType.FLOAT);
    b.output(k, 'present_key', DataType.FLOAT);
    b.output(v, 'present_value', DataType.FLOAT);
    const m = b.build();
    m.requireOpset('com.microsoft', 1);
    const [B, S, P] = [2, 3, 2];
    const mask = Array.from({ length: B * S * (S + P) }, (_, i) => ((i % (S + P)) - P > Math.floor(i / (S + P)) % S ? -10000 : 0));
    const feeds = {
      x: Tensor.fromFloat32('x', [B, S, C], randn(r, B * S * C)),
      position_ids: Tensor.fromInt64('position_ids', [B, S], [2, 3, 4, 2, 3, 4]),
      past_key: Tensor.fromFloat32('past_key', [B, N, P, D], randn(r, B * N * P * D)),
      past_value: Tensor.fromFloat32('past_value', [B, N, P, D], randn(r, B * N * P * D)),
      mask: Tensor.fromFloat32('mask', [B, 1, S, S + P], Float32Array.from(mask)),
    };
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const moved = await fuseAndCompare(m, fuseRotary, {}, {}, feeds);
    expect(moved.stats.counts.rotaryHeads).toBe(2);
    expect(m.graph.nodes.filter((n) => n.opType === 'RotaryEmbedding').map((n) => n.inputs[0]!.shape?.length)).toEqual([3, 3]);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const fused = await fuseAndCompare(m, fuseAttention, {}, {}, feeds);
    expect(fused.stats.counts.mhaBnsh).toBe(1);
    expect(opCounts(m)).toMatchObject({ MultiHeadAttention: 1, RotaryEmbedding: 2 });
    expect(opCounts(m).Softmax ?? 0).toBe(0);
    expect(Math.max(moved.maxAbs, fused.maxAbs)).toBeLessThan(1e-5);
    console.log(
      `fuse-attention after a split-heads RotaryEmbedding: max abs ${moved.maxAbs.toExponential(2)}, ${fused.maxAbs.toExponential(2)}`,
    );
  });

  it('fuses tf2onnx Einsum attention ([B, S, N, D] heads, key operand first, scale on q) with a padding mask', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const r = rng(9);
    const x = b.input('x', DataType.FLOAT, ['batch', 'seq', C]);
    const ein = (equation: string, inputs: Value[]) => b.op1('Einsum', inputs, { attrs: { equation } });
    const proj = (name: string) =>
      b.op1('Add', [
        ein('abc,cde->abde', [x, b.constF32(`${name}.w`, [C, N, D], randn(r, C * N * D, 0.2))]),
        b.constF32(`${name}.b`, [N, D], randn(r, N * D, 0.1)),
      ]);
    const q = b.op1('Mul', [proj('q'), b.constScalarF32('scale', 1 / Math.sqrt(D))]);
    const keep = b.op1('Cast', [b.op1('Unsqueeze', [b.input('keep', DataType.INT64, ['batch', 'seq']), b.constInt64('axes12', [1, 2])])], {
      attrs: { to: DataType.FLOAT },
    });
    const bias = b.op1('Mul', [b.op1('Sub', [b.constScalarF32('one', 1), keep]), b.constScalarF32('neg', -10000)]);
    const s = b.op1('Add', [ein('aecd,abcd->acbe', [proj('k'), q]), bias]);
    const ctx = ein('acbe,aecd->abcd', [b.op1('Softmax', [s], { attrs: { axis: 3 } }), proj('v')]);
    b.output(ein('abcd,cde->abe', [ctx, b.constF32('o.w', [N, D, C], randn(r, N * D * C, 0.2))]), 'y', DataType.FLOAT);
    const m = b.build();
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const res = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: 6 }, fixed: { keep: keepFirst(2, 6) } });
    expect(res.stats.counts.mha).toBe(1);
    const ops = opCounts(m);
    expect(ops.MultiHeadAttention).toBe(1);
    expect(ops.Softmax ?? 0).toBe(0);
    expect(ops.Einsum).toBe(4);
    expect(res.maxAbs).toBeLessThan(1e-4);
    console.log(`fuse-attention tf2onnx Einsum: cosine ${res.minCosine.toFixed(8)}, max abs ${res.maxAbs.toExponential(2)}`);
  });

  it('says why it leaves a Megatron multiplicative mask (s * m - 10000 * (1 - m)) with m a float input', async () => {
    const m = buildEncoder({});
    const g = m.graph;
    const sm = g.nodes.find((n) => n.opType === 'Softmax')!;
    const mask = g.addInput('m', { elemType: DataType.FLOAT, shape: ['batch', 1, 'seq', 'seq'] });
    const c = (name: string, v: number) => g.addInitializer(Tensor.fromFloat32(name, [], Float32Array.of(v)));
    const add = (opType: string, inputs: Value[]) =>
      g.addNode({ opType, name: `mg_${opType}_${inputs.length}${g.nodes.length}`, inputs, outputs: [`mg_${g.nodes.length}`] }, sm)
        .outputs[0]!;
    const kept = add('Mul', [sm.inputs[0]!, mask]);
    const off = add('Mul', [add('Sub', [c('one_m', 1), mask]), c('big', 10000)]);
    sm.setInput(0, add('Sub', [kept, off]));
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2, seq: 6 } });
    expect(r.stats.counts.mha).toBe(0);
    expect(r.stats.skipped?.join()).toMatch(/multiplied by a mask \(Megatron/);
    expect(r.identical).toBe(true);
  });

  it('says why when the mask is added to the [B*N, S, T] scores', async () => {
    const m = buildEncoder({ bmm: true });
    // A bias added after the Reshape back to [B*N, S, T]: attention_bias has no 3-D form.
    const g = m.graph;
    const sm = g.nodes.find((n) => n.opType === 'Softmax')!;
    const bias = g.addInitializer(Tensor.fromFloat32('bias3', [1, 6, 6], randn(rng(3), 36)));
    const add = g.addNode({ opType: 'Add', name: 'bias3_add', inputs: [sm.inputs[0]!, bias], outputs: ['bias3_out'] }, sm);
    sm.setInput(0, add.outputs[0]!);
    await inferShapes.run(m, { writeValueInfo: false }, {});
    const r = await fuseAndCompare(m, fuseAttention, {}, { dims: { batch: 2 } });
    expect(r.stats.counts.mha).toBe(0);
    expect(r.stats.skipped?.join()).toMatch(/mask is added to 3-D scores/);
    expect(r.identical).toBe(true);
  });
});
