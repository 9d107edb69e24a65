// Layout correctness: the quantize pass's MatMulNBits, DequantizeLinear-21 and GatherBlockQuantized
// initializers, dequantized by spec-text references (helpers.ts), give the same onnxruntime outputs
// as the same graph holding those dequantized weights in fp32.
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Node, Tensor } from '../../ir/index.js';
import { randn, rng } from '../../runtime/ort.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import {
  cleanup,
  clone,
  floats,
  matmulModel,
  refDequantDQ,
  refDequantGather,
  refDequantMatMulNBits,
  relL2,
  relMaxDiff,
  run,
  weights,
} from './helpers.js';

const worst = { matmul: 0, gather: 0, tied: 0 };
afterAll(() => {
  console.log(
    `layout: worst max|ORT - reference|/max|reference|: MatMul ${worst.matmul.toExponential(2)}, GatherBlockQuantized ${worst.gather.toExponential(2)}, tied ${worst.tied.toExponential(2)}`,
  );
  cleanup();
});

async function quantize(model: Model, opts: string): Promise<Model> {
  const m = clone(model);
  await runPipeline(m, parsePipeline(`quantize-int4{${opts}}`));
  expect(validateModel(m)).toEqual([]);
  return m;
}

const only = (m: Model, op: string): Node => {
  const ns = m.graph.nodes.filter((n) => n.opType === op);
  expect(ns.length).toBe(1);
  return ns[0]!;
};

/** The fp32 model with W replaced by `deq` ([K, N]). */
function withWeight(K: number, N: number, M: number, deq: Float32Array): Model {
  const b = new GraphBuilder({ opset: 17 });
  const A = b.input('A', DataType.FLOAT, [M, K]);
  b.output(b.op1('MatMul', [A, b.constF32('W', [K, N], deq)]), 'Y', DataType.FLOAT, [M, N]);
  return b.build();
}

const M = 5,
  N = 24;
const CASES = [
  { block: 16, K: 48 },
  { block: 32, K: 80 },
  { block: 128, K: 200 },
];

describe('MatMul weights: spec reference dequant == onnxruntime', () => {
  for (const format of ['matmulnbits', 'qdq'] as const) {
    for (const bits of [4, 8] as const) {
      for (const sym of [true, false]) {
        for (const { block, K } of CASES) {
          it(`${format} ${bits}-bit ${sym ? 'sym' : 'asym'} block ${block} K=${K}`, async () => {
            const fp = matmulModel(K, N, M, K + block + bits);
            const q = await quantize(fp, `bits=${bits},block=${block},sym=${sym},format=${format}`);
            let deq: Float32Array;
            if (format === 'matmulnbits') {
              const n = only(q, 'MatMulNBits');
              expect(n.domain).toBe('com.microsoft');
              expect([n.attrInt('K'), n.attrInt('N'), n.attrInt('bits'), n.attrInt('block_size')]).toEqual([K, N, bits, block]);
              const kb = Math.ceil(K / block);
              expect(n.constInput(1)!.dims).toEqual([N, kb, (block * bits) / 8]);
              expect(n.constInput(2)!.dims).toEqual([N * kb]);
              expect(!!n.input(3)).toBe(!sym);
              if (!sym) expect(n.constInput(3)!.dims).toEqual([N, Math.ceil((kb * bits) / 8)]);
              deq = refDequantMatMulNBits(
                n.constInput(1)!.bytes(),
                floats(n.constInput(2)!),
                n.input(3) ? n.constInput(3)!.bytes() : null,
                K,
                N,
                bits,
                block,
              );
              expect(q.opset('com.microsoft')).toBe(1);
            } else {
              const dq = only(q, 'DequantizeLinear');
              expect(q.opset('')).toBe(21);
              expect([dq.attrInt('axis'), dq.attrInt('block_size')]).toEqual([0, block]);
              const x = dq.constInput(0)!;
              expect(x.dtype).toBe(bits === 4 ? (sym ? DataType.INT4 : DataType.UINT4) : sym ? DataType.INT8 : DataType.UINT8);
              expect(x.dims).toEqual([K, N]);
              expect(dq.constInput(1)!.dims).toEqual([Math.ceil(K / block), N]);
              expect(!!dq.input(2)).toBe(!sym);
              deq = refDequantDQ(x, floats(dq.constInput(1)!), dq.input(2) ? dq.constInput(2)! : null, block);
            }
            // Sanity: the reference reconstructs the original weight to quantization accuracy.
            expect(relL2(weights(K + block + bits, K * N), deq)).toBeLessThan(bits === 4 ? 0.2 : 0.012);
            const feeds = { A: Tensor.fromFloat32('A', [M, K], randn(rng(7), M * K)) };
            const got = floats((await run(q, feeds)).Y!);
            const want = floats((await run(withWeight(K, N, M, deq), feeds)).Y!);
            worst.matmul = Math.max(worst.matmul, relMaxDiff(want, got));
            expect(relMaxDiff(want, got)).toBeLessThan(2e-5);
            // The fp32 weight is gone.
            expect(q.graph.initializers.some((t) => t.dtype === DataType.FLOAT && t.size === K * N)).toBe(false);
          });
        }
      }
    }
  }

  for (const format of ['matmulnbits', 'qdq'] as const) {
    it(`Gemm transB=1 alpha/beta bias -> ${format}`, async () => {
      const K = 64,
        fp = matmulModel(K, N, M, 3, { gemm: 'transB-bias' });
      const q = await quantize(fp, `format=${format},block=32`);
      expect(q.graph.nodes.some((n) => n.opType === 'Gemm')).toBe(false);
      const feeds = { A: Tensor.fromFloat32('A', [M, K], randn(rng(8), M * K)) };
      const want = floats((await run(fp, feeds)).Y!);
      const got = floats((await run(q, feeds)).Y!);
      // 4-bit weights: close to the fp32 Gemm (bias, alpha and beta carried exactly).
      expect(relL2(want, got)).toBeLessThan(0.15);
      if (format === 'matmulnbits') expect(only(q, 'MatMulNBits').input(5)).toBeTruthy();
    });
  }
});

describe('GatherBlockQuantized embeddings', () => {
  const V = 40,
    H = 64,
    idx = [0, 5, 39, 3, 2, 7];
  function embedModel(seed: number): Model {
    const b = new GraphBuilder({ opset: 17 });
    const I = b.input('ids', DataType.INT64, [2, 3]);
    const E = b.constF32('embed_tokens.weight', [V, H], weights(seed, V * H));
    b.output(b.op1('Gather', [E, I], { name: 'embed' }), 'h', DataType.FLOAT, [2, 3, H]);
    return b.build();
  }
  const gatherCases = [
    ...[4, 8].flatMap((bits) => [true, false].flatMap((sym) => [16, 32].map((block) => ({ bits, sym, block, form: 'int4' })))),
    // uint8 storage of 4-bit codes (default zero point 8, zero points packed per row).
    { bits: 4, sym: true, block: 32, form: 'uint8' },
    { bits: 4, sym: false, block: 16, form: 'uint8' },
  ];
  for (const { bits, sym, block, form } of gatherCases) {
    it(`${bits}-bit ${sym ? 'sym' : 'asym'} block ${block} ${form}`, async () => {
      const q = await quantize(embedModel(bits + block), `bits=${bits},block=${block},sym=${sym},embed_form=${form}`);
      const n = only(q, 'GatherBlockQuantized');
      expect([n.attrInt('gather_axis'), n.attrInt('quantize_axis'), n.attrInt('bits'), n.attrInt('block_size')]).toEqual([
        0,
        1,
        bits,
        block,
      ]);
      expect(n.constInput(0)!.dtype).toBe(bits === 8 || form === 'uint8' ? DataType.UINT8 : sym ? DataType.INT4 : DataType.UINT4);
      const table = refDequantGather(n.constInput(0)!, floats(n.constInput(2)!), n.input(3) ? n.constInput(3)! : null, bits, block, H);
      expect(relL2(weights(bits + block, V * H), table)).toBeLessThan(bits === 4 ? 0.2 : 0.012);
      const feeds = { ids: Tensor.fromInt64('ids', [2, 3], idx) };
      const got = floats((await run(q, feeds)).h!);
      const want = new Float32Array(idx.length * H);
      idx.forEach((v, i) => want.set(table.subarray(v * H, (v + 1) * H), i * H));
      worst.gather = Math.max(worst.gather, relMaxDiff(want, got));
      expect(relMaxDiff(want, got)).toBe(0);
    });
  }

  it("asymmetric tied embedding + lm_head are quantized separately (WebGPU cannot read the shared form's zero points)", async () => {
    const b = new GraphBuilder({ opset: 17 });
    const I = b.input('ids', DataType.INT64, [1, 6]);
    const E = b.constF32('embed_tokens.weight', [V, H], weights(11, V * H));
    const h = b.op1('Gather', [E, I], { name: 'embed' });
    b.output(b.op1('MatMul', [h, b.op1('Transpose', [E], { attrs: { perm: [1, 0] } })], { name: 'lm_head' }), 'logits', DataType.FLOAT, [
      1,
      6,
      V,
    ]);
    const q = await quantize(b.build(), 'block=32,sym=false');
    expect(only(q, 'GatherBlockQuantized').input(0)).not.toBe(only(q, 'MatMulNBits').input(1));
    expect(only(q, 'GatherBlockQuantized').attrInt('quantize_axis')).toBe(1);
  });

  for (const sym of [true]) {
    it(`tied embedding + lm_head share one packed initializer (${sym ? 'sym' : 'asym'})`, async () => {
      const b = new GraphBuilder({ opset: 17 });
      const I = b.input('ids', DataType.INT64, [1, 6]);
      const E = b.constF32('embed_tokens.weight', [V, H], weights(11, V * H));
      const h = b.op1('Gather', [E, I], { name: 'embed' });
      const Et = b.op1('Transpose', [E], { attrs: { perm: [1, 0] } });
      b.output(b.op1('MatMul', [b.op1('Tanh', [h]), Et], { name: 'lm_head' }), 'logits', DataType.FLOAT, [1, 6, V]);
      const fp = b.build();
      const q = await quantize(fp, `block=32,sym=${sym}`);
      const mnb = only(q, 'MatMulNBits'),
        gbq = only(q, 'GatherBlockQuantized');
      expect(gbq.input(0)).toBe(mnb.input(1));
      expect(q.graph.initializers.filter((t) => t.dtype === DataType.FLOAT && t.size === V * H)).toEqual([]);
      const table = refDequantMatMulNBits(
        mnb.constInput(1)!.bytes(),
        floats(mnb.constInput(2)!),
        mnb.input(3) ? mnb.constInput(3)!.bytes() : null,
        H,
        V,
        4,
        32,
      );
      // Reference: the fp32 graph with the dequantized table (transposed back) in both places.
      const rb = new GraphBuilder({ opset: 17 });
      const rI = rb.input('ids', DataType.INT64, [1, 6]);
      const tab = new Float32Array(V * H);
      for (let v = 0; v < V; v++) for (let k = 0; k < H; k++) tab[v * H + k] = table[k * V + v]!;
      const rE = rb.constF32('E', [V, H], tab);
      const rh = rb.op1('Gather', [rE, rI]);
      rb.output(
        rb.op1('MatMul', [rb.op1('Tanh', [rh]), rb.op1('Transpose', [rE], { attrs: { perm: [1, 0] } })]),
        'logits',
        DataType.FLOAT,
        [1, 6, V],
      );
      const feeds = { ids: Tensor.fromInt64('ids', [1, 6], [1, 4, 9, 16, 25, 36]) };
      const got = floats((await run(q, feeds)).logits!);
      const want = floats((await run(rb.build(), feeds)).logits!);
      worst.tied = Math.max(worst.tied, relMaxDiff(want, got));
      expect(relMaxDiff(want, got)).toBeLessThan(2e-5);
    });
  }
});
