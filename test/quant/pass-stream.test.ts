// Streamed RTN (passes/quant/rtn-stream.ts: units read into the SIMD kernel's memory, codes packed
// and error summed there) against the plain path: rtnReference codes packed by the format packers,
// errorSums over the whole weight. Streamed from external data in small units on 1 and 2 threads:
// the same bytes and the same error figures. QDQ repacks the streamed MatMulNBits bytes: the same
// model as the column-slice path writes.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, Model, Tensor, encodeModel, loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import type { QuantizeStats } from '../../passes/quantize.js';
import { rtnReference } from '../../passes/quant/methods/rtn.js';
import { simdAvailable } from '../../passes/quant/methods/rtn-simd.js';
import { packMatMulNBits } from '../../passes/quant/matmulnbits.js';
import { packGatherBlockQuantized, type GatherForm } from '../../passes/quant/gather.js';
import { errorSums } from '../../passes/quant/report.js';
import { setRegionBytes, setSpillMinBytes } from '../../passes/quant/rtn-streamer.js';
import { removeSpillFiles } from '../../passes/quant/spill.js';
import { TMP, cleanup, clone, weights } from './helpers.js';

afterAll(() => {
  removeSpillFiles();
  cleanup();
});

async function quantize(model: Model, opts: string): Promise<{ m: Model; stats: QuantizeStats }> {
  const m = clone(model);
  const [r] = await runPipeline(m, parsePipeline(`quantize-int4{${opts}}`));
  return { m, stats: r!.stats as QuantizeStats };
}

const bytesOf = (m: Model, name: string) => Buffer.from(m.graph.initializers.find((t) => t.name === name)!.bytes());
const transpose = (w: Float32Array, rows: number, cols: number) => {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c]!;
  return t;
};
const relErr = (w: Float32Array, q: ReturnType<typeof rtnReference>) => {
  const e = errorSums(w, q);
  return Math.sqrt(e.se / e.ss);
};

describe('streamed RTN == reference codes packed', () => {
  const K = 128;
  // N 64: window rows of 64 floats are padded to 80 (rowStride); 40 are not
  for (const [bits, block, sym, N] of [
    [4, 32, true, 40],
    [4, 16, false, 40],
    [8, 32, true, 40],
    [8, 64, false, 40],
    [4, 32, true, 64],
    [4, 16, false, 64],
  ] as const) {
    it(`MatMul [K, N], Gemm transB alpha, Transpose: ${bits}-bit block ${block} ${sym ? 'sym' : 'asym'}, N ${N}`, async () => {
      const w = weights(bits + block, K * N);
      const b = new GraphBuilder({ opset: 17 });
      const A = b.input('A', DataType.FLOAT, [2, K]);
      b.output(b.op1('MatMul', [A, b.constF32('mm.weight', [K, N], w)], { name: 'mm' }), 'Y1', DataType.FLOAT, [2, N]);
      b.output(
        b.op1('Gemm', [A, b.constF32('gemm.weight', [N, K], transpose(w, K, N))], { name: 'gemm', attrs: { transB: 1, alpha: 0.75 } }),
        'Y2',
        DataType.FLOAT,
        [2, N],
      );
      b.output(
        b.op1('MatMul', [A, b.op1('Transpose', [b.constF32('tr.weight', [N, K], transpose(w, K, N))], { attrs: { perm: [1, 0] } })], {
          name: 'tr',
        }),
        'Y3',
        DataType.FLOAT,
        [2, N],
      );
      const model = b.build();
      const p = { bits, blockSize: block, symmetric: sym };
      const want = packMatMulNBits(rtnReference(w, K, N, p), 'x', DataType.FLOAT);
      const alpha = rtnReference(
        Float32Array.from(w, (v) => Math.fround(v * 0.75)),
        K,
        N,
        p,
      );
      const wantAlpha = packMatMulNBits(alpha, 'x', DataType.FLOAT);
      // 0.01 MB units: several block rows of [K, N], several column bands of [N, K]. A region of one
      // byte: [K, N] runs a block row at a time, gathered into columns in memory or in the spill file.
      for (const [slice, region, spillMin] of [
        [32, 8 << 20, 1 << 20],
        [0.01, 8 << 20, 1 << 20],
        [32, 1, 1 << 20],
        [32, 1, 0],
        [0.01, 1, 0],
      ] as const) {
        setRegionBytes(region);
        setSpillMinBytes(spillMin);
        const { m, stats } = await quantize(model, `bits=${bits},block=${block},sym=${sym},max_slice_mb=${slice}`).finally(() => {
          setRegionBytes(8 << 20);
          setSpillMinBytes(1 << 20);
        });
        for (const [name, wq] of [
          ['mm.weight', want],
          ['gemm.weight', wantAlpha],
          ['tr.weight', want],
        ] as const) {
          expect(bytesOf(m, `${name}_Q${bits}`).equals(Buffer.from(wq.B.bytes()))).toBe(true);
          expect(bytesOf(m, `${name}_scales`).equals(Buffer.from(wq.scales.bytes()))).toBe(true);
          if (!sym) expect(bytesOf(m, `${name}_zero_points`).equals(Buffer.from(wq.zeroPoints!.bytes()))).toBe(true);
        }
        const byWeight = new Map(stats.layers.map((l) => [l.weight, l.relError]));
        expect(Math.abs(byWeight.get('mm.weight')! / relErr(w, rtnReference(w, K, N, p)) - 1)).toBeLessThan(1e-5);
        expect(byWeight.get('tr.weight')).toBe(byWeight.get('mm.weight'));
      }
    });
  }

  const V = 48,
    H = 64;
  for (const [bits, block, sym, form] of [
    [4, 32, true, 'int4'],
    [4, 16, false, 'int4'],
    [4, 32, false, 'uint8'],
    [8, 16, true, 'int4'],
  ] as const) {
    it(`Gather table: ${bits}-bit block ${block} ${sym ? 'sym' : 'asym'} ${form}`, async () => {
      const table = weights(bits * block, V * H);
      const b = new GraphBuilder({ opset: 17 });
      b.output(
        b.op1('Gather', [b.constF32('embed.weight', [V, H], table), b.input('ids', DataType.INT64, [1, 3])], { name: 'embed' }),
        'h',
        DataType.FLOAT,
        [1, 3, H],
      );
      const want = packGatherBlockQuantized(
        rtnReference(transpose(table, V, H), H, V, { bits, blockSize: block, symmetric: sym }),
        'embed.weight',
        DataType.FLOAT,
        form as GatherForm,
      );
      const { m } = await quantize(b.build(), `bits=${bits},block=${block},sym=${sym},embed_form=${form},max_slice_mb=0.004`);
      expect(bytesOf(m, want.data.name).equals(Buffer.from(want.data.bytes()))).toBe(true);
      expect(m.graph.initializers.find((t) => t.name === want.data.name)!.dtype).toBe(want.data.dtype);
      expect(bytesOf(m, want.scales.name).equals(Buffer.from(want.scales.bytes()))).toBe(true);
      if (want.zeroPoints) expect(bytesOf(m, want.zeroPoints.name).equals(Buffer.from(want.zeroPoints.bytes()))).toBe(true);
    });
  }
});

describe("the pass's two RTN paths", () => {
  // float_data storage keeps a weight off the streaming kernel (quantizeWeight's column-slice path);
  // the same values as raw bytes stream. Both must write the same model.
  const typed = (t: Tensor) =>
    new Tensor(t.name, t.dtype, t.dims, { kind: 'typed', field: 'float_data', values: Array.from(t.toFloat32()) });
  const K = 96,
    N = 24,
    V = 20,
    H = 64;
  function model(asTyped: boolean): Model {
    const b = new GraphBuilder({ opset: 17 });
    const A = b.input('A', DataType.FLOAT, [2, K]);
    const w = weights(3, K * N);
    const init = (name: string, dims: number[], v: Float32Array) => {
      const t = Tensor.fromFloat32(name, dims, v);
      return b.initializer(asTyped ? typed(t) : t);
    };
    b.output(b.op1('MatMul', [A, init('mm.weight', [K, N], w)], { name: 'mm' }), 'Y1', DataType.FLOAT, [2, N]);
    b.output(
      b.op1('Gemm', [A, init('gemm.weight', [N, K], transpose(w, K, N))], { name: 'gemm', attrs: { transB: 1, alpha: 0.75 } }),
      'Y2',
      DataType.FLOAT,
      [2, N],
    );
    b.output(
      b.op1('Gather', [init('embed.weight', [V, H], weights(4, V * H)), b.input('ids', DataType.INT64, [1, 3])], { name: 'embed' }),
      'h',
      DataType.FLOAT,
      [1, 3, H],
    );
    return b.build();
  }
  const qdq = ['bits=4,block=32,sym=true', 'bits=4,block=16,sym=false', 'bits=8,block=32,sym=true', 'bits=8,block=64,sym=false'].map(
    (o) => `${o},format=qdq,embeddings=true`,
  );
  for (const opts of [
    'bits=4,block=32,sym=true',
    'bits=4,block=16,sym=false',
    'bits=8,block=32,sym=false',
    'bits=4,block=32,sym=false,embed_form=uint8',
    ...qdq,
  ]) {
    it(`streamed == column slices: ${opts}`, async () => {
      expect(simdAvailable()).toBe(true);
      const streamed = await quantize(model(false), `${opts},max_slice_mb=0.005`);
      const sliced = await quantize(model(true), `${opts},max_slice_mb=0.005`);
      expect(sliced.stats.layers.map((l) => l.weight)).toEqual(['mm.weight', 'gemm.weight', 'embed.weight']);
      expect(Buffer.from(encodeModel(sliced.m)).equals(Buffer.from(encodeModel(streamed.m)))).toBe(true);
      sliced.stats.layers.forEach((l, i) => expect(l.relError).toBeCloseTo(streamed.stats.layers[i]!.relError, 6));
    });
  }
});

describe('streamed from external data', () => {
  it('1 and 2 threads, whole and in small units: same bytes as in memory, same error figures', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const A = b.input('A', DataType.FLOAT, [2, 256]);
    let h = A;
    for (let i = 0; i < 3; i++)
      h = b.op1('MatMul', [h, b.constF32(`l${i}.weight`, [256, 256], weights(40 + i, 256 * 256))], { name: `l${i}` });
    b.output(
      b.op1('MatMul', [h, b.constF32('lm_head.weight', [256, 1000], weights(50, 256 * 1000))], { name: 'lm_head' }),
      'logits',
      DataType.FLOAT,
      [2, 1000],
    );
    const inMemory = b.build();
    const file = path.join(TMP, 'stream', 'model.onnx');
    saveModel(inMemory, file, { externalData: true });
    const base = await quantize(inMemory, 'block=32,max_slice_mb=0.1');
    const want = Buffer.from(encodeModel(base.m));
    for (const opts of [
      'block=32,max_slice_mb=0.1',
      'block=32,max_slice_mb=0.1,threads=2',
      'block=32,threads=2',
      'block=32,max_slice_mb=0.05,threads=2',
    ]) {
      const ext = loadModel(file);
      expect(ext.graph.initializers.every((t: Tensor) => t.isExternal)).toBe(true);
      const { m, stats } = await quantize(ext, opts);
      expect(Buffer.from(encodeModel(m)).equals(want)).toBe(true);
      const e = stats.layers.map((l) => l.relError),
        eb = base.stats.layers.map((l) => l.relError);
      if (opts.includes('0.1')) expect(e).toEqual(eb);
      else e.forEach((x, i) => expect(x).toBeCloseTo(eb[i]!, 12));
    }
  }, 30_000);
});

describe('streamed outputs spilled to a scratch file', () => {
  it('same model bytes and error figures as in memory, 1 and 2 threads, MatMulNBits and QDQ, sym and asym', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const A = b.input('A', DataType.FLOAT, [2, 256]);
    const h = b.op1('MatMul', [A, b.constF32('l0.weight', [256, 512], weights(60, 256 * 512))], { name: 'l0' });
    b.output(
      b.op1('Gemm', [h, b.constF32('head.weight', [1000, 512], weights(61, 512 * 1000))], { name: 'head', attrs: { transB: 1 } }),
      'logits',
      DataType.FLOAT,
      [2, 1000],
    );
    const file = path.join(TMP, 'spill', 'model.onnx');
    saveModel(b.build(), file, { externalData: true });
    for (const opts of ['block=32', 'block=16,sym=false', 'block=32,format=qdq']) {
      const want = await quantize(loadModel(file), `${opts},max_slice_mb=0.1`);
      setSpillMinBytes(0);
      try {
        // 4 KB regions: l0 runs a block row at a time, two rows at once on 2 threads (other units, so
        // the error sums are grouped differently)
        for (const [threads, region] of [
          [1, 8 << 20],
          [2, 8 << 20],
          [1, 4096],
          [2, 4096],
        ] as const) {
          setRegionBytes(region);
          const { m, stats } = await quantize(loadModel(file), `${opts},max_slice_mb=0.1,threads=${threads}`);
          if (!opts.includes('qdq'))
            expect(m.graph.initializers.some((t) => t.data.kind === 'external' && t.data.ref.file.includes('edgec-spill-'))).toBe(true);
          expect(Buffer.from(encodeModel(m)).equals(Buffer.from(encodeModel(want.m)))).toBe(true);
          const e = stats.layers.map((l) => l.relError),
            ew = want.stats.layers.map((l) => l.relError);
          if (region > 4096) expect(e).toEqual(ew);
          else e.forEach((x, i) => expect(x).toBeCloseTo(ew[i]!, 12));
        }
      } finally {
        setSpillMinBytes(1 << 20);
        setRegionBytes(8 << 20);
      }
    }
  }, 30_000);
});
