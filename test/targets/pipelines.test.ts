// Target pipelines and role plans: one source for what happens to embeddings, and (with the table
// in targets/pipelines.ts) pipelines that print as text and read back.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, loadModel } from '../../ir/index.js';
import { ROLES, type Role } from '../../ir/summary.js';
import { compile } from '../../targets/compile.js';
import { getTarget } from '../../targets/registry.js';
import { targetPipeline } from '../../targets/pipelines.js';
import { formatPipeline, parsePipeline, type PipelineStep } from '../../passes/manager.js';
import { TARGET_NAMES, type QuantChoice, type SubModel, type TargetOptions } from '../../targets/target.js';
import { readTree, tempDir, tinyMllm } from './helpers.js';

const QUANTS: (QuantChoice | undefined)[] = [undefined, 'int4', 'int8', 'fp16', 'none'];

function options(quant: QuantChoice | undefined): TargetOptions {
  return { quant, blockSize: 32, method: 'rtn', fp16: true, context: 256, prefillChunk: 16, imageSizes: [], fix: {}, seed: 1234 };
}

function subModel(target: string, role: Role, quant: QuantChoice | undefined): SubModel {
  const t = getTarget(target);
  const opts = options(quant);
  return { name: 'm', role, plan: t.plan(role, opts), profile: t.profiles[t.defaultProfile]!, opts, source: 'm.onnx' };
}

describe('role plans and pipelines agree on embeddings', () => {
  it.each(TARGET_NAMES)('%s: the weights pass quantizes Gather embeddings exactly when the plan says block-quantized', (target) => {
    for (const role of ROLES) {
      for (const quant of QUANTS) {
        const sm = subModel(target, role, quant);
        const q = getTarget(target)
          .pipeline(sm)
          .find((s) => s.pass === 'quantize-weights');
        if (!sm.plan.weightBits) {
          expect(q, `${target} ${role} ${quant}`).toBeUndefined();
          expect(sm.plan.embeddings).toBe('float');
          continue;
        }
        expect(q!.options!.embeddings, `${target} ${role} ${quant}`).toBe(sm.plan.embeddings === 'block-quantized');
        // GatherBlockQuantized is a contrib op QNN lacks: npu tables go through the activation QDQ.
        expect(sm.plan.embeddings).toBe(target === 'npu' ? 'qdq' : sm.plan.format === 'matmulnbits' ? 'block-quantized' : 'float');
      }
    }
  });
});

describe('compile with target pipelines', () => {
  let tmp: string, src: string;
  beforeAll(() => {
    tmp = tempDir('pipelines');
    src = tinyMllm(tmp);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("plan 'qdq': the compiled table is a 16-bit QDQ constant, not GatherBlockQuantized", async () => {
    const r = await compile(path.join(src, 'embed_tokens.onnx'), { target: 'npu', out: path.join(tmp, 'npu') });
    const e = r.manifest.models[0]!;
    expect(getTarget('npu').plan(e.role, options(undefined)).embeddings).toBe('qdq');
    expect((e.quantization as { requested: { embeddings?: boolean } }).requested.embeddings).toBe(true);
    const m = loadModel(path.join(r.outDir, e.file));
    const gathers = m.graph.nodes.filter((n) => n.opType === 'Gather' || n.opType === 'GatherBlockQuantized');
    expect(gathers.map((n) => n.opType)).toEqual(['Gather']);
    const table = gathers[0]!.input(0)!.producer!;
    expect(table.opType).toBe('DequantizeLinear');
    expect(table.input(0)!.initializer!.dtype).toBe(DataType.UINT16);
    expect(r.report.passed).toBe(true);
  });

  it("--pipeline takes a target name (its pipeline for the compile target's role plan) or a passes/pipelines.ts name", async () => {
    const file = path.join(src, 'embed_tokens.onnx');
    const own = await compile(file, { target: 'mobile', out: path.join(tmp, 'own') });
    const named = await compile(file, { target: 'mobile', out: path.join(tmp, 'named'), pipeline: ' mobile ' });
    expect(named.report.models[0]!.pipeline).toBe(own.report.models[0]!.pipeline);
    expect(readTree(named.outDir)).toEqual(readTree(own.outDir));
    const other = await compile(file, { target: 'mobile', out: path.join(tmp, 'other'), pipeline: 'webgpu', verify: false });
    // webgpu's frame with mobile's plan (fp32 activations: no to-fp16).
    const webgpuFrame = targetPipeline('webgpu', subModel('mobile', 'embeddings', undefined));
    expect(other.report.models[0]!.pipeline).toBe(formatPipeline(parsePipeline(webgpuFrame)));
    expect(other.report.models[0]!.pipeline).not.toBe(own.report.models[0]!.pipeline);
    const minimal = await compile(file, { target: 'mobile', out: path.join(tmp, 'minimal'), pipeline: 'minimal', verify: false });
    expect(minimal.report.models[0]!.pipeline).toBe('cleanup,infer-shapes');
  });

  it('the manifest holds the pipeline that ran, and compiling with that text gives the same artifact', async () => {
    const file = path.join(src, 'decoder_model_merged.onnx');
    const first = await compile(file, { target: 'webgpu', out: path.join(tmp, 'first') });
    const text = first.manifest.models[0]!.pipeline;
    expect(text).toBe(first.report.models[0]!.pipeline);
    expect(text).toMatch(
      /^cleanup,infer-shapes,.*quantize-weights\{bits=4,scales=fp16,embeddings=true,role=decoder\},to-fp16,cleanup,infer-shapes$/,
    );
    const again = await compile(file, { target: 'webgpu', out: path.join(tmp, 'again'), pipeline: text });
    expect(readTree(again.outDir)).toEqual(readTree(first.outDir));
  });
});

describe('target pipelines as text', () => {
  const resolved = (steps: PipelineStep[]) => steps.map((s) => ({ pass: s.pass.name, options: s.options }));

  it.each(TARGET_NAMES)('%s: formatPipeline prints every role plan so that parsePipeline reads it back', (target) => {
    for (const role of ROLES) {
      for (const quant of QUANTS) {
        const steps = parsePipeline(targetPipeline(target, subModel(target, role, quant)));
        const text = formatPipeline(steps);
        expect(resolved(parsePipeline(text)), `${target} ${role} ${quant}: ${text}`).toEqual(resolved(steps));
        expect(formatPipeline(parsePipeline(text))).toBe(text);
      }
    }
  });

  it('reads as the targets differ: shared frame, own fusions and quantize options', () => {
    const text = (t: 'webgpu' | 'mobile' | 'npu', role: Role) =>
      formatPipeline(parsePipeline(targetPipeline(t, subModel(t, role, undefined))));
    const fusions = 'fuse-layernorm,fuse-rmsnorm,fuse-gelu,fuse-rotary,fuse-attention,fuse-skip-layernorm';
    expect(text('webgpu', 'decoder')).toBe(
      `cleanup,infer-shapes,fold-constants,cleanup,masked-scatter,${fusions.replace('fuse-attention', 'fuse-attention{softcap=false}')},` +
        'quantize-weights{bits=4,scales=fp16,embeddings=true,role=decoder},to-fp16,cleanup,infer-shapes',
    );
    expect(text('mobile', 'decoder')).toBe(
      `cleanup,infer-shapes,fold-constants,cleanup,masked-scatter,${fusions},` +
        'quantize-weights{bits=4,accuracyLevel=4,scales=fp32,embeddings=true,conv=true,role=decoder},cleanup,infer-shapes',
    );
    expect(text('mobile', 'vision-encoder')).toBe(
      `cleanup,infer-shapes,fold-constants,cleanup,masked-scatter,${fusions},` +
        'quantize-weights{bits=8,format=qdq,scales=fp32,embeddings=false,conv=true,role=vision-encoder},cleanup,infer-shapes',
    );
    expect(text('npu', 'decoder')).toBe(
      'upgrade-opset,cleanup,infer-shapes,fold-constants,cleanup,masked-scatter{scan=matmul},position-ids-input,fold-batchnorm,' +
        'fuse-layernorm,fuse-rmsnorm,fuse-gelu,quantize-weights{bits=4,format=qdq,scales=fp32,embeddings=false,role=decoder},cleanup,infer-shapes',
    );
  });

  it('a whole MLLM in one graph: the vision side quantized by the vision plan, the rest by the mllm plan', () => {
    const sm = subModel('mobile', 'mllm', undefined);
    sm.plan = { ...sm.plan, vision: getTarget('mobile').plan('vision-encoder', sm.opts) };
    expect(formatPipeline(parsePipeline(targetPipeline('mobile', sm)))).toMatch(
      /,quantize-weights\{bits=8,format=qdq,scales=fp32,embeddings=false,part=vision,conv=true,role=mllm\},quantize-weights\{bits=4,accuracyLevel=4,scales=fp32,embeddings=true,part=language,conv=true,role=mllm\},/,
    );
  });

  it('refuses a value that has no pipeline text', () => {
    expect(formatPipeline([{ pass: 'fix-shapes', options: { dims: ['seq=4', 'batch=1'] } }])).toBe('fix-shapes{dims=seq=4;batch=1}');
    expect(() => formatPipeline([{ pass: 'cleanup', options: { x: 'a,b' } }])).toThrow(/cleanup option 'x'/);
  });
});
