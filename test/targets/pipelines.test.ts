// Target pipelines and role plans: one source for what happens to embeddings, and (with the table
// in targets/pipelines.ts) pipelines that print as text and read back.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, loadModel } from '../../ir/index.js';
import { ROLES, type Role } from '../../ir/summary.js';
import { compile } from '../../targets/compile.js';
import { getTarget } from '../../targets/registry.js';
import { TARGET_NAMES, type QuantChoice, type SubModel, type TargetOptions } from '../../targets/target.js';
import { tempDir, tinyMllm } from './helpers.js';

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
        const q = getTarget(target).pipeline(sm).find((s) => s.pass === 'quantize-weights');
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

describe('npu embeddings as planned', () => {
  let tmp: string;
  beforeAll(() => { tmp = tempDir('pipelines'); });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("plan 'qdq': the compiled table is a 16-bit QDQ constant, not GatherBlockQuantized", async () => {
    const src = tinyMllm(tmp);
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
});
