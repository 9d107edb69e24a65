// Default synthetic inputs (runtime/inputs.ts) never bind a spatial or sequence dim to 1, over every
// model we have with symbolic dims: the real-export corpus, the tiny MLLM fixture, and the ONNX
// conformance models with symbolic input dims. The sizes chosen are the ones the model is meant
// for: image side = the position-embedding grid x patch (meta.json says what the exporter trained),
// else 224; sequence 64; past > 0 for KV caches with total = past + sequence; batch 1 and 2.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '../../ir/index.js';
import { writeTinyMllm } from '../../fixtures/tiny-mllm.js';
import { defaultDims, dimKinds, loadInputs, visionGeometry, type DimKind } from '../../runtime/inputs.js';
import { runModel } from '../../runtime/ort.js';
import { CONFORMANCE } from '../conformance-root.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-synth-dims-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const CORPUS = fs
  .readdirSync(ROOT)
  .filter((d) => fs.existsSync(path.join(ROOT, d, 'model.onnx')))
  .sort();

interface Meta {
  config?: { patch?: number; position_grid?: number[] };
  preprocessing?: { image_size?: unknown };
}

/** The conformance models whose graph inputs carry a symbolic dim. */
function symbolicConformance(): string[] {
  const out: string[] = [];
  for (const group of ['node', 'pytorch-converted', 'pytorch-operator', 'simple']) {
    const dir = path.join(CONFORMANCE, group);
    if (!fs.existsSync(dir)) continue;
    for (const t of fs.readdirSync(dir).sort()) {
      const f = path.join(dir, t, 'model.onnx');
      if (!fs.existsSync(f)) continue;
      const m = loadModel(f);
      if (m.graph.inputs.some((v) => !v.initializer && (v.type?.shape ?? []).some((d) => typeof d === 'string'))) out.push(f);
    }
  }
  return out;
}

const SPATIAL_OR_SEQ: DimKind[] = ['height', 'width', 'grid', 'sequence', 'past', 'total', 'other'];

/** Every symbolic dim of every input, at both synthetic batch sizes: batch is 1 or 2, nothing else is 1. */
function checkNoOnes(m: Model, where: string): Record<string, number> {
  const kinds = dimKinds(m);
  for (const batch of [1, 2]) {
    const dims = defaultDims(m, {}, batch);
    for (const [d, k] of kinds) {
      if (k === 'batch') expect(dims[d], `${where}: ${d}`).toBe(batch);
      else if (SPATIAL_OR_SEQ.includes(k)) expect(dims[d], `${where}: ${d} (${k})`).toBeGreaterThan(1);
    }
  }
  return defaultDims(m);
}

/** The tensors actually built: on every symbolic axis but batch, a size > 1; batch sizes 1 and 2. */
function checkTensors(m: Model, where: string): void {
  const { sets, used } = loadInputs(m);
  const kinds = dimKinds(m);
  const hasBatch = [...kinds.values()].includes('batch');
  expect(used.synthetic).toBe(true);
  expect(sets.length, where).toBe(hasBatch ? 2 : 1);
  for (const [si, set] of sets.entries()) {
    for (const v of m.graph.inputs.filter((x) => !x.initializer)) {
      (v.type?.shape ?? []).forEach((d, i) => {
        if (typeof d !== 'string') return;
        const got = set[v.name]!.dims[i]!;
        if (kinds.get(d) === 'batch') expect(got, `${where}: ${v.name}[${i}] ${d}`).toBe(si + 1);
        else expect(got, `${where}: ${v.name}[${i}] ${d} (${kinds.get(d)})`).toBeGreaterThan(1);
      });
    }
  }
}

describe('synthetic default inputs bind no spatial or sequence dim to 1', () => {
  it.each(CORPUS)(
    'corpus %s: the sizes the model is meant for, and onnxruntime runs them',
    async (name) => {
      const file = path.join(ROOT, name, 'model.onnx');
      const m = loadModel(file);
      const meta = JSON.parse(fs.readFileSync(path.join(ROOT, name, 'meta.json'), 'utf8')) as Meta;
      const dims = checkNoOnes(m, name);
      checkTensors(m, name);
      const kinds = dimKinds(m);
      const of = (k: DimKind) => [...kinds].filter(([, x]) => x === k).map(([d]) => dims[d]!);
      // Image side: the exporter's trained position grid x patch (found in the graph even when the
      // exporter renamed the table), else 224.
      const g = visionGeometry(m);
      if (meta.config?.position_grid) {
        expect(g).toEqual({ patch: meta.config.patch, grid: meta.config.position_grid[0] });
        for (const side of [...of('height'), ...of('width')]) expect(side).toBe(meta.config.position_grid[0]! * meta.config.patch!);
      } else if (g.grid && g.patch) {
        for (const side of [...of('height'), ...of('width')]) expect(side).toBe(g.grid * g.patch);
      } else {
        for (const side of [...of('height'), ...of('width')]) expect(side).toBe(224);
      }
      for (const s of of('sequence')) expect(s).toBeGreaterThanOrEqual(64);
      const past = of('past');
      if (m.graph.inputs.some((v) => /past/.test(v.name))) {
        expect(past.length, `${name}: a KV cache has a past dim`).toBeGreaterThan(0);
        for (const p of past) expect(p).toBeGreaterThan(0);
        expect(of('total')).toEqual([past[0]! + of('sequence')[0]!]);
      }
      // The default sets are valid inputs, not just large ones.
      for (const set of loadInputs(m).sets) await runModel(file, set);
    },
    60_000,
  );

  it('the tiny MLLM fixture: every sub-model', () => {
    const tiny = writeTinyMllm(path.join(tmp, 'mllm'));
    for (const [name, f] of Object.entries(tiny)) {
      const m = loadModel(f);
      const dims = checkNoOnes(m, name);
      checkTensors(m, name);
      for (const [d, k] of dimKinds(m)) if (k === 'sequence') expect(dims[d], `${name}: ${d}`).toBeGreaterThanOrEqual(64);
    }
    // Its vision encoder's position table is a 4x4 grid of 14-pixel patches.
    expect(defaultDims(loadModel(tiny.vision_encoder))).toMatchObject({ height: 56, width: 56 });
  });

  it("the conformance models with symbolic input dims (a rank-1 input's length is not a batch)", () => {
    const files = symbolicConformance();
    expect(files.length).toBeGreaterThan(0);
    const seen: string[] = [];
    for (const f of files) {
      const m = loadModel(f);
      const where = path.relative(CONFORMANCE, f);
      const dims = checkNoOnes(m, where);
      for (const v of m.graph.inputs) {
        const d = v.type?.shape?.[0];
        if (v.type?.shape?.length === 1 && typeof d === 'string') expect(dimKinds(m).get(d), `${where}: ${v.name}`).not.toBe('batch');
      }
      seen.push(`${path.basename(path.dirname(f))} ${JSON.stringify(dims)}`);
      // Only tensor-typed inputs can be built; sequence-typed ones are refused by name.
      if (m.graph.inputs.every((v) => v.initializer || v.type)) checkTensors(m, where);
      else expect(() => loadInputs(m)).toThrow(/input '.*' has no type/);
    }
    console.log(`conformance models with symbolic dims: ${seen.join('; ')}`);
  });
});
