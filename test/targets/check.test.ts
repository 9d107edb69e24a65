// Target checks fail loudly: an op the target cannot run, or a dim left dynamic on the npu, stops
// the compile with every offending node named (CheckError, exit 1) unless --allow-fallback.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CheckError, DataType, GraphBuilder, saveModel } from '../../ir/index.js';
import { main } from '../../cli/main.js';
import { compile } from '../../targets/compile.js';
import { tempDir } from './helpers.js';

let tmp: string;
beforeAll(() => { tmp = tempDir('check'); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function model(file: string, inputShape: (string | number)[], op: string): string {
  const b = new GraphBuilder({ opset: 21 });
  const x = b.input('x', DataType.FLOAT, inputShape);
  const w = b.constF32('w', [8, 8], Array.from({ length: 64 }, (_, i) => Math.cos(i) * 0.1));
  const h = b.op1('MatMul', [x, w], { name: 'proj' });
  b.output(b.op1(op, [h], { name: 'odd_op' }), 'y', DataType.FLOAT, inputShape);
  saveModel(b.build(), file);
  return file;
}

async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s) => { stderr += String(s); return true; });
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
    expect((err as CheckError).details).toEqual(["hardmax_fp16.onnx: node 'odd_op' (Hardmax): Hardmax is not supported by onnxruntime-web WebGPU EP"]);
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

  it('bad options are usage errors (exit 2)', async () => {
    expect((await cli(['compile', path.join(tmp, 'nope.onnx'), '--target', 'webgpu'])).code).toBe(2);
    expect((await cli(['compile', path.join(tmp, 'dyn.onnx'), '--target', 'tpu'])).code).toBe(2);
  });
});
