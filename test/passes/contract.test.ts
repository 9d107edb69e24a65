// The pass contract: every pass declares its statistics (and reports no others), option keys are
// camelCase with former snake_case names accepted, former pass names resolve, and the manager reports
// the infer-shapes runs it makes on its own.
import { describe, expect, it } from 'vitest';
import { decoder, visionEncoder } from '../../fixtures/tiny-mllm.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { resolveOptions } from '../../passes/pass.js';
import { allPasses, getPass } from '../../passes/registry.js';

describe('pass contract', () => {
  it('every pass declares its statistics with descriptions and camelCase option keys', () => {
    // Passes defined with definePass/fusionPass; passes landing from other branches join as they convert.
    const typed = [
      'cleanup',
      'infer-shapes',
      'fold-constants',
      'fix-shapes',
      'to-fp16',
      'upgrade-opset',
      'convert-quant-format',
      'quantize-weights',
      'fuse-layernorm',
      'fuse-rmsnorm',
      'fuse-gelu',
      'fuse-quickgelu',
      'fuse-skip-layernorm',
      'fuse-rotary',
      'fuse-attention',
      'gemm-to-matmul-add',
      'matmul-add-to-gemm',
    ];
    for (const name of typed) expect(getPass(name)?.statistics, name).toBeDefined();
    for (const p of allPasses()) {
      for (const [k, d] of Object.entries(p.statistics ?? {})) {
        expect(k, p.name).toMatch(/^[a-z][A-Za-z0-9]*$/);
        expect(d.length, `${p.name}.${k}`).toBeGreaterThan(3);
      }
      if (typed.includes(p.name)) for (const k of Object.keys(p.options)) expect(k, p.name).toMatch(/^[a-z][A-Za-z0-9]*$/);
    }
  });

  it('reports only declared statistics (a compile pipeline on the fixture decoder and vision encoder)', async () => {
    const spec =
      'cleanup,infer-shapes,fold-constants,fuse-layernorm,fuse-rmsnorm,fuse-gelu,fuse-quickgelu,fuse-skip-layernorm,fuse-rotary,fuse-attention,' +
      'gemm-to-matmul-add,matmul-add-to-gemm,quantize-weights{block=32},convert-quant-format{to=qdq},convert-quant-format{to=matmulnbits},upgrade-opset,to-fp16,fix-shapes';
    for (const m of [decoder(), visionEncoder()]) {
      for (const r of await runPipeline(m, parsePipeline(spec))) {
        const declared = Object.keys(getPass(r.pass)!.statistics!);
        expect(
          Object.keys(r.stats.counts).filter((k) => !declared.includes(k)),
          r.pass,
        ).toEqual([]);
      }
    }
  });

  it('accepts former option and pass names', () => {
    const q = getPass('quantize-int4')!;
    expect(q.name).toBe('quantize-weights');
    const o = resolveOptions(q, { accuracy_level: 4, max_slice_mb: 2, embed_form: 'uint8' });
    expect(o).toMatchObject({ accuracyLevel: 4, maxSliceMb: 2, embedForm: 'uint8' });
    expect(() => resolveOptions(q, { accuracy_level: 4, accuracyLevel: 4 })).toThrow(/given twice/);
    expect(resolveOptions(getPass('to-fp16')!, { keep_io_types: 'false' })).toMatchObject({ keepIoTypes: false });
    expect(parsePipeline('quantize-int4{lm_head_bits=8}')[0]!.options).toMatchObject({ lmHeadBits: 8 });
  });

  it('times and reports the infer-shapes runs a pass needs', async () => {
    const [r] = await runPipeline(decoder(), parsePipeline('fuse-layernorm'));
    expect(r!.implicit?.map((i) => i.pass)).toEqual(['infer-shapes']);
    expect(r!.implicit![0]!.ms).toBeGreaterThanOrEqual(0);
    expect(r!.implicit![0]!.stats.counts.valuesTyped).toBeGreaterThan(0);
  });
});
