// Target checks fail loudly: an op the target cannot run, or a dim left dynamic on the npu, stops
// the compile with every offending node named (CheckError, exit 1) unless --allow-fallback.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CheckError, DataType, GraphBuilder, InputError, Tensor, encodeTensor, loadModel, saveModel } from '../../ir/index.js';
import { main } from '../../cli/main.js';
import { compile } from '../../targets/compile.js';
import { tempDir } from './helpers.js';

let tmp: string;
beforeAll(() => {
  tmp = tempDir('check');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function model(file: string, inputShape: (string | number)[], op: string): string {
  const b = new GraphBuilder({ opset: 21 });
  const x = b.input('x', DataType.FLOAT, inputShape);
  const w = b.constF32(
    'w',
    [8, 8],
    Array.from({ length: 64 }, (_, i) => Math.cos(i) * 0.1),
  );
  const h = b.op1('MatMul', [x, w], { name: 'proj' });
  b.output(b.op1(op, [h], { name: 'odd_op' }), 'y', DataType.FLOAT, inputShape);
  saveModel(b.build(), file);
  return file;
}

async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
    stderr += String(s);
    return true;
  });
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    return { code: await main(args), stderr };
  } finally {
    spy.mockRestore();
    out.mockRestore();
  }
}

describe('target check', () => {
  it('an op the target cannot run lists the node; exit 1; --allow-fallback emits anyway', async () => {
    const f = model(path.join(tmp, 'hardmax.onnx'), ['batch', 8], 'Hardmax');
    const err = await compile(f, { target: 'webgpu', out: path.join(tmp, 'hm') }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckError);
    expect((err as CheckError).details).toEqual([
      "onnx/hardmax_fp16.onnx: node 'odd_op' (Hardmax): Hardmax is not supported by onnxruntime-web WebGPU EP",
    ]);
    expect(fs.existsSync(path.join(tmp, 'hm'))).toBe(false);
    const r = await cli(['compile', f, '--target', 'webgpu', '-o', path.join(tmp, 'hm')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("node 'odd_op' (Hardmax)");
    const ok = await cli(['compile', f, '--target', 'webgpu', '-o', path.join(tmp, 'hm'), '--allow-fallback']);
    expect(ok.code).toBe(0);
    expect(fs.existsSync(path.join(tmp, 'hm', 'manifest.json'))).toBe(true);
  });

  it('a dim no rule resolves stays dynamic on the npu: listed, exit 1; --fix resolves it', async () => {
    const f = model(path.join(tmp, 'dyn.onnx'), ['frames', 8], 'Relu');
    const err = await compile(f, { target: 'npu', out: path.join(tmp, 'dyn-npu') }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckError);
    const details = (err as CheckError).details.join('\n');
    expect(details).toContain("node 'x' (graph input): dynamic shape (axis 0 = 'frames')");
    expect(details).toContain("node 'y' (graph output)");
    expect(details).toMatch(/node 'proj.*' \(.*\): output '.*' has a dynamic shape/);
    const r = await cli(['compile', f, '--target', 'npu', '-o', path.join(tmp, 'dyn-npu')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("axis 0 = 'frames'");
    const fixed = await compile(f, { target: 'npu', out: path.join(tmp, 'dyn-npu'), fix: { frames: 4 } });
    expect(fixed.manifest.models[0]!.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: [4, 8] }]);
    expect(fixed.manifest.verification.passed).toBe(true);
  });

  it('webgpu and mobile keep dynamic dims unless --fix asks; the npu binds them by default', async () => {
    const f = model(path.join(tmp, 'batched.onnx'), ['batch', 8], 'Relu');
    const shape = async (target: 'webgpu' | 'mobile' | 'npu', fix?: Record<string, number>) =>
      (await compile(f, { target, out: path.join(tmp, `batched-${target}-${fix ? 'fix' : 'dyn'}`), fix })).manifest.models[0]!.inputs[0]!
        .shape;
    expect(await shape('webgpu')).toEqual(['batch', 8]);
    expect(await shape('mobile')).toEqual(['batch', 8]);
    expect(await shape('webgpu', { batch: 3 })).toEqual([3, 8]);
    expect(await shape('mobile', { batch: 3 })).toEqual([3, 8]);
    expect(await shape('npu')).toEqual([1, 8]);
  });

  it('--pipeline replaces the default passes; an unknown pass is a usage error', async () => {
    const f = path.join(tmp, 'dyn.onnx');
    const r = await compile(f, { target: 'mobile', out: path.join(tmp, 'plain'), pipeline: 'cleanup,infer-shapes', fix: { frames: 2 } });
    expect(r.report.models[0]!.steps.map((s) => s.pass)).toEqual(['cleanup', 'infer-shapes']);
    expect(r.manifest.models[0]!.ops).toEqual({ MatMul: 1, Relu: 1 });
    expect((r.manifest.models[0]!.quantization as { observed: unknown }).observed).toEqual({
      matMulNBits: {},
      gatherBlockQuantized: {},
      dequantizeLinearWeights: {},
      activations: 'fp32',
    });
    expect(
      (await cli(['compile', f, '--target', 'mobile', '-o', path.join(tmp, 'plain'), '--pipeline', 'cleanup,no-such-pass'])).code,
    ).toBe(2);
  });

  it('npu activation scales come from a --calibration folder when given', async () => {
    const f = path.join(tmp, 'dyn.onnx');
    const cal = path.join(tmp, 'calib');
    fs.mkdirSync(cal, { recursive: true });
    // Inputs 10x larger than the seeded default: the activation scales must follow them.
    const x = Float32Array.from({ length: 32 }, (_, i) => 10 * Math.sin(i));
    fs.writeFileSync(path.join(cal, 'x.pb'), encodeTensor(Tensor.fromFloat32('x', [4, 8], x)));
    const scaleOf = (r: Awaited<ReturnType<typeof compile>>) => {
      const m = loadModel(path.join(r.outDir, r.manifest.models[0]!.file));
      return m.graph.nodes
        .find((n) => n.opType === 'QuantizeLinear' && n.input(0)?.name === 'x')!
        .input(1)!
        .initializer!.toFloat32()[0]!;
    };
    const seeded = await compile(f, { target: 'npu', out: path.join(tmp, 'cal-seeded'), fix: { frames: 4 } });
    const calibrated = await compile(f, { target: 'npu', out: path.join(tmp, 'cal-folder'), fix: { frames: 4 }, calibration: cal });
    expect(scaleOf(calibrated)).toBeCloseTo((Math.max(...x) - Math.min(...x)) / 65535, 8);
    expect(scaleOf(calibrated)).toBeGreaterThan(2 * scaleOf(seeded));
  });

  it('a calibration-based method (gptq) gets activations and changes the weights', async () => {
    const f = path.join(tmp, 'dyn.onnx');
    const weights = async (method: string) => {
      const r = await compile(f, { target: 'mobile', out: path.join(tmp, `m-${method}`), method, quant: 'int4', fix: { frames: 16 } });
      expect(r.manifest.verification.passed).toBe(true);
      const m = loadModel(path.join(r.outDir, r.manifest.models[0]!.file));
      return Buffer.from(m.graph.initializers.find((t) => t.dtype === DataType.UINT8 && t.dims.length === 3)!.bytes());
    };
    expect((await weights('gptq')).equals(await weights('rtn'))).toBe(false);
  });

  it('an earlier artifact that holds the input is not replaced; the input survives', async () => {
    const out = path.join(tmp, 'holder');
    await compile(path.join(tmp, 'dyn.onnx'), { target: 'mobile', out, fix: { frames: 2 }, verify: false });
    const inner = path.join(out, 'sub', 'dyn.onnx');
    fs.mkdirSync(path.dirname(inner));
    fs.copyFileSync(path.join(tmp, 'dyn.onnx'), inner);
    const err = await compile(inner, { target: 'mobile', out, fix: { frames: 2 } }).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toContain('holds the input');
    expect(fs.existsSync(inner)).toBe(true);
  });

  it('bad options are usage errors (exit 2)', async () => {
    expect((await cli(['compile', path.join(tmp, 'nope.onnx'), '--target', 'webgpu'])).code).toBe(2);
    expect((await cli(['compile', path.join(tmp, 'dyn.onnx'), '--target', 'tpu'])).code).toBe(2);
  });
});
