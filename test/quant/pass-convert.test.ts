// convert-quant-format: MatMulNBits <-> DequantizeLinear-21 + MatMul keeps onnxruntime outputs
// (within fp32 accumulation order) and round-trips the packed bytes exactly.
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, Model, Tensor } from '../../ir/index.js';
import { randn, rng } from '../../runtime/ort.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import { cleanup, clone, floats, matmulModel, relMaxDiff, run } from './helpers.js';

let worst = 0;
afterAll(() => {
  console.log(`convert: worst max|MatMulNBits - QDQ|/max|y| over fp32-scale cases ${worst.toExponential(2)}`);
  cleanup();
});

async function apply(model: Model, pipeline: string): Promise<Model> {
  const m = clone(model);
  await runPipeline(m, parsePipeline(pipeline));
  expect(validateModel(m)).toEqual([]);
  return m;
}

const ops = (m: Model) =>
  m.graph.nodes
    .map((n) => n.opType)
    .sort()
    .join(',');
const initBytes = (m: Model) =>
  Object.fromEntries(m.graph.initializers.map((t) => [t.dtype + ':' + t.dims.join('x'), Buffer.from(t.bytes()).toString('hex')]));

describe('MatMulNBits <-> QDQ', () => {
  const K = 80,
    N = 24,
    M = 4;
  const feeds = { A: Tensor.fromFloat32('A', [M, K], randn(rng(3), M * K)) };
  for (const bits of [4, 8] as const) {
    for (const sym of [true, false]) {
      it(`${bits}-bit ${sym ? 'sym' : 'asym'}: MatMulNBits -> QDQ -> MatMulNBits`, async () => {
        const mnb = await apply(matmulModel(K, N, M, 5), `quantize-int4{bits=${bits},block=32,sym=${sym}}`);
        const qdq = await apply(mnb, 'convert-quant-format{to=qdq}');
        expect(ops(qdq)).toBe('DequantizeLinear,MatMul');
        const dq = qdq.graph.nodes.find((n) => n.opType === 'DequantizeLinear')!;
        // Symmetric: signed codes with DQ's default zero point 0; asymmetric: unsigned codes + zero points.
        expect(dq.constInput(0)!.dtype).toBe(bits === 4 ? (sym ? DataType.INT4 : DataType.UINT4) : sym ? DataType.INT8 : DataType.UINT8);
        expect(!!dq.input(2)).toBe(!sym);
        // The same bytes as quantizing straight to QDQ (the pass's other code path).
        expect(initBytes(qdq)).toEqual(
          initBytes(await apply(matmulModel(K, N, M, 5), `quantize-int4{bits=${bits},block=32,sym=${sym},format=qdq}`)),
        );
        const y1 = floats((await run(mnb, feeds)).Y!);
        const y2 = floats((await run(qdq, feeds)).Y!);
        worst = Math.max(worst, relMaxDiff(y1, y2));
        expect(relMaxDiff(y1, y2)).toBeLessThan(1e-6);
        const back = await apply(qdq, 'convert-quant-format{to=matmulnbits}');
        expect(ops(back)).toBe('MatMulNBits');
        expect(initBytes(back)).toEqual(initBytes(mnb));
        expect(floats((await run(back, feeds)).Y!)).toEqual(y1);
      });
    }
  }

  // DQ with fp16 scales rounds each dequantized weight to fp16 before the Cast; MatMulNBits (scales
  // follow the fp32 activations) does not: the two differ by that rounding only.
  it('QDQ with fp16 scales (DQ -> Cast) -> MatMulNBits', async () => {
    const qdq = await apply(matmulModel(K, N, M, 6), 'quantize-int4{format=qdq,scales=fp16,block=16}');
    expect(ops(qdq)).toBe('Cast,DequantizeLinear,MatMul');
    const mnb = await apply(qdq, 'convert-quant-format{to=matmulnbits}');
    expect(ops(mnb)).toBe('MatMulNBits');
    const y1 = floats((await run(qdq, feeds)).Y!);
    expect(relMaxDiff(y1, floats((await run(mnb, feeds)).Y!))).toBeLessThan(1e-3);
  });

  it('Gemm bias: MatMulNBits bias input <-> MatMul + Add', async () => {
    const mnb = await apply(matmulModel(64, N, M, 7, { gemm: 'transB-bias' }), 'quantize-int4{block=32,sym=false}');
    expect(ops(mnb)).toBe('MatMulNBits');
    const qdq = await apply(mnb, 'convert-quant-format{to=qdq}');
    expect(ops(qdq)).toBe('Add,DequantizeLinear,MatMul');
    const f = { A: Tensor.fromFloat32('A', [M, 64], randn(rng(4), M * 64)) };
    const d = relMaxDiff(floats((await run(mnb, f)).Y!), floats((await run(qdq, f)).Y!));
    worst = Math.max(worst, d);
    expect(d).toBeLessThan(1e-6);
  });
});
