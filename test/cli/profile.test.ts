// `edgec profile` on the tiny MLLM: the roofline prediction per role, onnxruntime's profile on the
// node CPU and (in headless Chromium) on the WebGPU and wasm EPs, and one-line errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeTinyMllm } from '../../fixtures/tiny-mllm.js';
import { CHROMIUM_PATH } from '../../runtime/webgpu-browser.js';
import type { ProfileReport } from '../../targets/profile.js';
import { cli } from './helpers.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-profile-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));
const files = writeTinyMllm(TMP);

describe('edgec profile', () => {
  it('predicts and measures every sub-model of the tiny MLLM on the mobile target (onnxruntime-node)', async () => {
    const r = await cli('profile', TMP, '--target', 'mobile', '--measure', '--runs', '2', '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const p = JSON.parse(r.stdout) as ProfileReport;
    expect(p.device).toBe('snapdragon-8-gen-3');
    const dec = p.models.find((m) => m.role === 'decoder')!;
    expect(dec.scenarios.map((s) => s.name)).toEqual(['decode past=128', 'decode past=512', 'prefill 128']);
    for (const s of dec.scenarios) {
      expect(s.measureError).toBeUndefined();
      expect(s.measured!.totalMs).toBeGreaterThan(0);
      expect(s.measured!.byOp.map((o) => o.op)).toContain('MatMul');
      expect(s.predicted.totalMs).toBeGreaterThan(0);
    }
    // A longer past reads more KV cache: the prediction must grow with it.
    expect(dec.scenarios[1]!.predicted.bytes).toBeGreaterThan(dec.scenarios[0]!.predicted.bytes);
    expect(dec.scenarios[0]!.predicted.tokensPerSecond).toBeGreaterThan(0);
    const enc = p.models.find((m) => m.role === 'vision-encoder')!;
    expect(enc.scenarios[0]!.name).toBe('encode 448x448');
    expect(enc.scenarios[0]!.measured!.byOp.some((o) => o.op === 'Conv')).toBe(true);
  });

  it('sums the encoder calls of a tiling plan', async () => {
    const r = await cli(
      'profile',
      files.vision_encoder,
      '--target',
      'npu',
      '--device',
      'dimensity-9300',
      '--image',
      '1344x896',
      '--policy',
      'minicpm-v',
      '--json',
    );
    expect(r.code).toBe(0);
    const p = JSON.parse(r.stdout) as ProfileReport;
    const plan = p.models[0]!.plan!;
    expect(plan.calls.length).toBeGreaterThan(1);
    expect(plan.totalMs).toBeCloseTo(
      plan.calls.reduce((s, c) => s + c.ms, 0),
      9,
    );
  });

  // SwiftShader compiles a shader per program and onnxruntime-web's wasm takes ~20 s to instantiate on
  // CI's cores: one small sub-model on WebGPU (the wasm EP takes the same path with another EP name).
  it.skipIf(!fs.existsSync(CHROMIUM_PATH))(
    'measures on onnxruntime-web WebGPU in Chromium (GPU timestamps)',
    async () => {
      for (const [runtime, file] of [['webgpu', files.projector]] as const) {
        const r = await cli('profile', file, '--target', 'webgpu', '--runtime', runtime, '--runs', '2', '--json');
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        const s = (JSON.parse(r.stdout) as ProfileReport).models[0]!.scenarios[0]!;
        expect(s.measureError).toBeUndefined();
        expect(s.measured!.runtime).toBe(`onnxruntime-web ${runtime}`);
        expect(s.measured!.timer).toBe(runtime === 'webgpu' ? 'gpu' : 'host');
        expect(s.measured!.totalMs).toBeGreaterThan(0);
        expect(s.measured!.byOp.map((o) => o.op)).toContain(runtime === 'webgpu' ? 'MatMul' : 'Gather');
      }
    },
    300_000,
  );

  it('refuses an unknown device in one line, exit 2', async () => {
    const r = await cli('profile', TMP, '--target', 'mobile', '--device', 'pixel-1');
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain("unknown device 'pixel-1'");
  });
});
