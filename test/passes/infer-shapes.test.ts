// infer-shapes against onnxruntime: every inferred dim of every intermediate value is compared with
// the real tensor, with the graph inputs' dims made symbolic so the symbolic arithmetic is exercised.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, loadModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { add, broadcast, div, evaluateDim, mul, quotient, sub } from '../../passes/shape/sym.js';
import { randomInputs } from '../../runtime/ort.js';
import { TINY_MLLM, decoder, embeddings, projector, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { CONFORMANCE, checkInferredShapes, conformanceSample, originalPasses } from './harness.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-infer-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function infer(model: Model) {
  const [r] = await runPipeline(model, parsePipeline('infer-shapes'));
  return r!.stats.counts;
}

describe('symbolic dim arithmetic', () => {
  it('simplifies and evaluates exactly', () => {
    expect(mul('seq', 2)).toBe('2*seq');
    expect(div(mul('seq', 2), 2)).toBe('seq');
    expect(add(div('height', 14), 0)).toBe('height/14');
    expect(quotient(['batch', 'seq', 64], ['batch', 4])).toBe('16*seq');
    expect(quotient(['batch', 'seq'], ['n'])).toBeNull();
    expect(
      broadcast([
        ['batch', 1, 'seq'],
        [8, 'seq'],
      ]),
    ).toEqual(['batch', 8, 'seq']);
    expect(
      broadcast([
        [null, 4],
        [3, 1],
      ]),
    ).toEqual([3, 4]);
    expect(evaluateDim('(height/14)*(width/14)', { height: 448, width: 224 })).toBe(32 * 16);
    expect(evaluateDim('past_sequence_length + 1', { past_sequence_length: 7 })).toBe(8);
    expect(evaluateDim('x', {})).toBeNull();
    expect(sub(add('past_seq', 'seq'), 'past_seq')).toBe('seq');
    expect(sub(mul('x', 2), 'x')).toBe('x');
    expect(add('x', -3)).toBe('x-3');
    expect(evaluateDim(sub(add(mul('x', 2), 5), 'y'), { x: 4, y: 1 })).toBe(12);
    expect(sub(div(mul('x', 2), 3), 'x')).toBe('(2*x)/3-x');
  });
});

describe('infer-shapes on exporter patterns', () => {
  it('ViT patch embedding: Conv then Reshape(Concat(Shape..)) gets symbolic dims', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('pixel_values', DataType.FLOAT, ['batch', 3, 'height', 'width']);
    const w = b.constF32('w', [8, 3, 14, 14], new Float32Array(8 * 3 * 14 * 14).fill(0.01));
    const conv = b.op1('Conv', [x, w], { attrs: { kernel_shape: [14, 14], strides: [14, 14] } });
    const shape = b.op1('Shape', [conv]);
    const n = b.op1('Gather', [shape, b.constInt64('i0', [0], [])], { attrs: { axis: 0 } });
    const c = b.op1('Gather', [shape, b.constInt64('i1', [1], [])], { attrs: { axis: 0 } });
    const hw = b.op1('Slice', [shape, b.constInt64('s', [2]), b.constInt64('e', [4])]);
    const prod = b.op1('ReduceProd', [hw], { attrs: { keepdims: 1 } });
    const cat = b.op1(
      'Concat',
      [b.op1('Unsqueeze', [n, b.constInt64('a0', [0])]), b.op1('Unsqueeze', [c, b.constInt64('a1', [0])]), prod],
      { attrs: { axis: 0 } },
    );
    const flat = b.op1('Reshape', [conv, cat]);
    const t = b.op1('Transpose', [flat], { attrs: { perm: [0, 2, 1] } });
    b.output(t, 'tokens', DataType.FLOAT);
    const m = b.build();
    const counts = await infer(m);
    expect(conv.type!.shape).toEqual(['batch', 8, 'height/14', 'width/14']);
    expect(m.graph.value('tokens').type!.shape).toEqual(['batch', '(height/14)*(width/14)', 8]);
    expect(counts.unknown).toBe(0);
    const feeds = { pixel_values: Tensor.fromFloat32('pixel_values', [2, 3, 56, 28], new Float32Array(2 * 3 * 56 * 28)) };
    const r = await checkInferredShapes(m, feeds, { batch: 2, height: 56, width: 28 }, path.join(tmp, 'vit.onnx'));
    expect(r.mismatches).toEqual([]);
    expect(r.symbolicDims).toBeGreaterThan(4);
  });

  it('attention head split: Reshape(Concat(Shape(x)[0:2], [heads, -1])) -> [batch, seq, heads, dim]', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('h', DataType.FLOAT, ['batch', 'seq', 64]);
    const s = b.op1('Shape', [x], { attrs: { end: 2 } });
    const cat = b.op1('Concat', [s, b.constInt64('hd', [4, -1])], { attrs: { axis: 0 } });
    const r = b.op1('Reshape', [x, cat]);
    const tr = b.op1('Transpose', [r], { attrs: { perm: [0, 2, 1, 3] } });
    const sc = b.op1('MatMul', [tr, b.op1('Transpose', [tr], { attrs: { perm: [0, 1, 3, 2] } })]);
    const seq = b.op1('Gather', [b.op1('Shape', [x]), b.constInt64('one', [1], [])], { attrs: { axis: 0 } });
    const rng = b.op1('Range', [b.constInt64('zero', [0], []), seq, b.constInt64('step', [1], [])]);
    const sm = b.op1('Softmax', [sc], { attrs: { axis: -1 } });
    b.output(sm, 'probs', DataType.FLOAT);
    b.output(rng, 'pos', DataType.INT64);
    const m = b.build();
    await infer(m);
    expect(r.type!.shape).toEqual(['batch', 'seq', 4, 16]);
    expect(m.graph.value('probs').type!.shape).toEqual(['batch', 4, 'seq', 'seq']);
    expect(m.graph.value('pos').type!.shape).toEqual(['seq']);
  });

  it('GPT-2 past positions: Range(past, past + 1, 1) has one element, as onnxruntime runs it', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const pk = b.input('past_key', DataType.FLOAT, ['batch', 2, 'past', 4]);
    const past = b.op1('Gather', [b.op1('Shape', [pk]), b.constInt64('two', [2], [])], { attrs: { axis: 0 } });
    const end = b.op1('Add', [past, b.constInt64('one', [1], [])]);
    const pos = b.op1('Range', [past, end, b.constInt64('step', [1], [])]);
    b.output(pos, 'pos', DataType.INT64);
    const m = b.build();
    await infer(m);
    expect(m.graph.value('pos').type!.shape).toEqual([1]);
    const feeds = { past_key: Tensor.fromFloat32('past_key', [1, 2, 3, 4], new Float32Array(24)) };
    const r = await checkInferredShapes(m, feeds, { batch: 1, past: 3 }, path.join(tmp, 'range.onnx'));
    expect(r.mismatches).toEqual([]);
  });

  it('Einsum, Split, Pad, Tile and Resize shapes match onnxruntime', async () => {
    const b = new GraphBuilder({ opset: 18 });
    const x = b.input('x', DataType.FLOAT, ['batch', 'seq', 8]);
    const e = b.op1('Einsum', [x, b.constF32('w', [8, 6], new Array(48).fill(0.1))], { attrs: { equation: 'bsh,hk->bsk' } });
    const outer = b.op1('Einsum', [b.constF32('f', [4], [1, 2, 3, 4]), b.constF32('p', [5], [1, 2, 3, 4, 5])], {
      attrs: { equation: 'i,j->ij' },
    });
    const [s1, s2] = b.op('Split', [e, b.constInt64('sp', [2, 4])], { attrs: { axis: 2 }, outputs: 2 });
    const pad = b.op1('Pad', [s2!, b.constInt64('pads', [0, 1, 0, 0, 2, 3])]);
    const tile = b.op1('Tile', [s1!, b.constInt64('reps', [1, 2, 3])]);
    const img = b.op1('Transpose', [pad], { attrs: { perm: [0, 2, 1] } });
    const up = b.op1('Resize', [b.op1('Unsqueeze', [img, b.constInt64('ua', [0])]), null, b.constF32('scales', [4], [1, 1, 2, 2])], {
      attrs: { mode: 'nearest' },
    });
    for (const [v, n] of [
      [outer, 'outer'],
      [tile, 'tile'],
      [up, 'up'],
    ] as const)
      b.output(v, n, DataType.FLOAT);
    const m = b.build();
    await infer(m);
    expect(e.type!.shape).toEqual(['batch', 'seq', 6]);
    expect(outer.type!.shape).toEqual([4, 5]);
    expect(pad.type!.shape).toEqual(['batch', 'seq+3', 7]);
    expect(tile.type!.shape).toEqual(['batch', '2*seq', 6]);
    expect(up.type!.shape).toEqual([1, 'batch', 14, '2*(seq+3)']);
    const feeds = { x: Tensor.fromFloat32('x', [2, 5, 8], new Float32Array(80).fill(1)) };
    const r = await checkInferredShapes(m, feeds, { batch: 2, seq: 5 }, path.join(tmp, 'misc.onnx'));
    expect(r.mismatches).toEqual([]);
    expect(r.unknownDims).toBe(0);
  });

  it('contrib ops (MatMulNBits, GatherBlockQuantized, SkipLayerNormalization, RotaryEmbedding, MultiHeadAttention, GroupQueryAttention) match onnxruntime', async () => {
    const b = new GraphBuilder({ opset: 21, opsets: { 'com.microsoft': 1 } });
    const ids = b.input('ids', DataType.INT64, ['batch', 'seq']);
    const pos = b.input('pos', DataType.INT64, ['batch', 'seq']);
    const seqlens = b.input('seqlens_k', DataType.INT32, ['batch']);
    const total = b.input('total_len', DataType.INT32, []);
    const q4 = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 37) & 0xff);
    const tab = b.initializer(Tensor.fromBytes('tab', DataType.UINT8, [100, 16], q4(1600)));
    const emb = b.op1('GatherBlockQuantized', [tab, ids, b.constF32('sc', [100, 1], new Array(100).fill(0.01))], {
      domain: 'com.microsoft',
      attrs: { block_size: 32, bits: 4, quantize_axis: 1 },
    });
    const qkvW = b.initializer(Tensor.fromBytes('w', DataType.UINT8, [96, 1, 16], q4(96 * 16)));
    const qkv = b.op1('MatMulNBits', [emb, qkvW, b.constF32('ws', [96], new Array(96).fill(0.02))], {
      domain: 'com.microsoft',
      attrs: { K: 32, N: 96, bits: 4, block_size: 32 },
    });
    const [sln] = b.op('SkipLayerNormalization', [emb, emb, b.constF32('g', [32], new Array(32).fill(1))], {
      domain: 'com.microsoft',
      outputs: 1,
      attrs: { epsilon: 1e-5 },
    });
    const cos = b.constF32(
      'cos',
      [64, 8],
      Array.from({ length: 512 }, (_, i) => Math.cos(i / 50)),
    );
    const sin = b.constF32(
      'sin',
      [64, 8],
      Array.from({ length: 512 }, (_, i) => Math.sin(i / 50)),
    );
    const rot = b.op1('RotaryEmbedding', [sln!, pos, cos, sin], { domain: 'com.microsoft', attrs: { num_heads: 2 } });
    const mha = b.op1('MultiHeadAttention', [rot, emb, emb], { domain: 'com.microsoft', attrs: { num_heads: 2 } });
    const [att, pk] = b.op('GroupQueryAttention', [qkv, null, null, null, null, seqlens, total], {
      domain: 'com.microsoft',
      outputs: 3,
      attrs: { num_heads: 4, kv_num_heads: 1 },
    });
    b.output(att!, 'att', DataType.FLOAT);
    b.output(mha, 'mha', DataType.FLOAT);
    b.output(pk!, 'pk', DataType.FLOAT);
    const m = b.build();
    await infer(m);
    expect(emb.type!.shape).toEqual(['batch', 'seq', 32]);
    expect(qkv.type!.shape).toEqual(['batch', 'seq', 96]);
    expect(rot.type!.shape).toEqual(['batch', 'seq', 32]);
    expect(mha.type!.shape).toEqual(['batch', 'seq', 32]);
    expect(att!.type!.shape).toEqual(['batch', 'seq', 64]);
    expect(pk!.type!.shape).toEqual(['batch', 1, null, 16]);
    const feeds = {
      ids: Tensor.fromInt64('ids', [2, 3], [1, 5, 7, 99, 0, 3]),
      pos: Tensor.fromInt64('pos', [2, 3], [0, 1, 2, 0, 1, 2]),
      seqlens_k: Tensor.fromNumbers('seqlens_k', DataType.INT32, [2], [2, 2]),
      total_len: Tensor.fromNumbers('total_len', DataType.INT32, [], [3]),
    };
    const r = await checkInferredShapes(m, feeds, { batch: 2, seq: 3 }, path.join(tmp, 'contrib.onnx'));
    expect(r.mismatches).toEqual([]);
    expect(r.checked).toBe(m.graph.outputs.length);
  });
});

describe('infer-shapes against onnxruntime', () => {
  it('tiny MLLM fixtures: every intermediate dim matches the real tensors', async () => {
    const bind = { batch: 1, height: 56, width: 84, grid_h: 4, grid_w: 6, seq: 5, total_seq: 5, past_seq: 0, num_image_tokens: 24 };
    const summary: string[] = [];
    for (const [name, m] of [
      ['vision_encoder', visionEncoder()],
      ['projector', projector()],
      ['embed_tokens', embeddings()],
      ['decoder', decoder({}, { kvCache: true })],
    ] as const) {
      const feeds = randomInputs(m, { dims: bind, intHigh: 8 });
      const r = await checkInferredShapes(m, feeds, { ...bind }, path.join(tmp, `${name}.onnx`));
      summary.push(`${name}: ${r.checked} values, dims ${r.numericDims} numeric/${r.symbolicDims} symbolic/${r.unknownDims} unknown`);
      expect(r.mismatches, name).toEqual([]);
      expect(r.checked).toBe(m.graph.outputs.length);
      // Scores [.., past_seq+seq] meet the mask [.., total_seq]: two names the graph never equates,
      // so the broadcast dim stays unknown (once per layer, for the Add and its Softmax).
      if (name === 'decoder') expect(r.partial.length).toBeLessThanOrEqual(2 * TINY_MLLM.text.layers);
      else expect(r.partial, name).toEqual([]);
    }
    console.log(`infer-shapes on fixtures: ${summary.join('; ')}`);
  });

  it('conformance sample with symbolic input dims: every inferred dim is right', async () => {
    const totals = { models: 0, values: 0, numeric: 0, symbolic: 0, unknown: 0 };
    const mismatches: string[] = [];
    for (const [ci, c] of conformanceSample().entries()) {
      const dir = path.join(CONFORMANCE, c);
      const model = loadModel(path.join(dir, 'model.onnx'));
      const data = await originalPasses(dir, model);
      if (!data) continue;
      const feeds = data.sets[0]!.inputs;
      const bind: Record<string, number> = {};
      // 1-D int64 inputs are shape-like (Resize sizes, Reshape shapes): onnxruntime's own
      // inference needs their length, so they stay static.
      model.graph.inputs
        .filter((v) => !v.initializer && v.type?.shape && !(v.type.elemType === DataType.INT64 && v.type.shape.length === 1))
        .forEach((v, k) => {
          v.type!.shape = v.type!.shape!.map((_, i) => {
            const sym = `in${k}_${i}`;
            bind[sym] = feeds[v.name]!.dims[i]!;
            return sym;
          });
        });
      let r;
      try {
        r = await checkInferredShapes(model, feeds, bind, path.join(tmp, `c${ci}.onnx`));
      } catch (e) {
        mismatches.push(`${c}: ${(e as Error).message.split('\n')[0]}`);
        continue;
      }
      totals.models++;
      totals.values += r.checked;
      totals.numeric += r.numericDims;
      totals.symbolic += r.symbolicDims;
      totals.unknown += r.unknownDims;
      mismatches.push(...r.mismatches.map((x) => `${c}: ${x}`));
    }
    console.log(`infer-shapes on symbolized conformance: ${JSON.stringify(totals)}`);
    expect(mismatches).toEqual([]);
    expect(totals.models).toBeGreaterThan(200);
  });
});
