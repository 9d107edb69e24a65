// Bad input for inspect, convert and verify: exit 2, one stderr line naming the file, no stack
// frames, nothing written anywhere under the test folder.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeModel, encodeModel, saveModel } from '../../ir/index.js';
import { ModelProto, type PB } from '../../ir/onnx-schema.js';
import { CONFORMANCE, ROOT, cli, mlpModel, randomBytes, snapshot, spawnCli, tmpDir, topLevelFields } from './helpers.js';

const root = tmpDir('bad');
const good = path.join(root, 'good', 'model.onnx');
const out = path.join(root, 'out', 'converted.onnx');
const cases: { name: string; file: string }[] = [];
/** Cuts that land on a field boundary and still leave a valid model: checked separately. */
const validCuts: { name: string; file: string; full: Uint8Array; cut: number }[] = [];

const REQUIRED = [1, 7, 8]; // ir_version, graph, opset_import

function addCase(name: string, file: string, bytes?: Uint8Array) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (bytes) fs.writeFileSync(file, bytes);
  cases.push({ name, file });
}

function addTruncations(tag: string, full: Uint8Array, cuts: number[]) {
  const ends = new Set(topLevelFields(full).map((f) => f.end));
  for (const cut of cuts) {
    const file = path.join(root, 'cut', `${tag}-${cut}.onnx`);
    const fields = topLevelFields(full)
      .filter((f) => f.end <= cut)
      .map((f) => f.field);
    if (ends.has(cut) && REQUIRED.every((r) => fields.includes(r))) {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, full.subarray(0, cut));
      validCuts.push({ name: `${tag} cut at ${cut}`, file, full, cut });
    } else addCase(`${tag} truncated to ${cut} of ${full.length} bytes`, file, full.subarray(0, cut));
  }
}

/** The external-data model with its first external tensor's entries rewritten. */
function externalVariant(tag: string, edit: (entries: { key: string; value: string }[], dir: string) => void): string {
  const d = path.join(root, tag);
  const src = path.join(d, 'model.onnx');
  saveModel(mlpModel(), src, { externalData: true, threshold: 0 });
  const pb: PB = ModelProto.decode(fs.readFileSync(src));
  const t = pb.graph.initializer.find((x: PB) => x.data_location === 1);
  edit(t.external_data, d);
  fs.writeFileSync(src, ModelProto.encode(pb).finish());
  return src;
}

const entry = (entries: { key: string; value: string }[], key: string) => entries.find((e) => e.key === key)!;

beforeAll(() => {
  saveModel(mlpModel(), good);
  addCase('empty file', path.join(root, 'empty.onnx'), new Uint8Array());
  fs.mkdirSync(path.join(root, 'a-directory.onnx'));
  cases.push({ name: 'directory', file: path.join(root, 'a-directory.onnx') });
  cases.push({ name: 'missing file', file: path.join(root, 'missing.onnx') });
  for (const seed of [1, 2, 3])
    addCase(`random bytes seed ${seed}`, path.join(root, `random-${seed}.onnx`), randomBytes(seed, 64 + seed * 500));

  const mlp = fs.readFileSync(good);
  const conv = fs.readFileSync(path.join(CONFORMANCE, 'pytorch-converted/test_Conv2d/model.onnx'));
  for (const [tag, full] of [
    ['mlp', mlp],
    ['conv2d', conv],
  ] as const) {
    const n = full.length;
    addTruncations(tag, full, [1, Math.floor(n * 0.1), Math.floor(n * 0.5), Math.floor(n * 0.9), n - 1]);
  }
  // The builder model ends with metadata_props: cutting it off leaves a valid model.
  const fields = topLevelFields(mlp);
  expect(fields[fields.length - 1]!.field).toBe(14);
  addTruncations('mlp-boundary', mlp, [fields[fields.length - 1]!.start, fields.find((f) => f.field === 7)!.start]);

  const dataFile = (d: string) => path.join(d, 'model.onnx.data');
  addCase(
    'external data location absolute',
    externalVariant('abs', (e, d) => {
      entry(e, 'location').value = dataFile(d);
    }),
  );
  addCase(
    'external data location with ..',
    externalVariant('dotdot', (e, d) => {
      entry(e, 'location').value = `../${path.basename(d)}/model.onnx.data`;
    }),
  );
  addCase(
    'external data via a symlink outside the folder',
    externalVariant('symlink', (e, d) => {
      const outside = path.join(root, 'outside.data');
      fs.copyFileSync(dataFile(d), outside);
      fs.symlinkSync(outside, path.join(d, 'link.data'));
      entry(e, 'location').value = 'link.data';
    }),
  );
  addCase(
    'external data file missing',
    externalVariant('nofile', (e) => {
      entry(e, 'location').value = 'nope.data';
    }),
  );
  addCase(
    'external data offset past the end',
    externalVariant('offset', (e, d) => {
      entry(e, 'offset').value = String(fs.statSync(dataFile(d)).size);
    }),
  );
  addCase(
    'external data length past the end',
    externalVariant('length', (e, d) => {
      entry(e, 'length').value = String(fs.statSync(dataFile(d)).size - Number(entry(e, 'offset').value) + 1);
    }),
  );
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function newestSource(): number {
  let newest = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  for (const d of ['ir', 'passes', 'targets', 'kernels', 'cli', 'runtime', 'fixtures'])
    if (fs.existsSync(path.join(ROOT, d))) walk(path.join(ROOT, d));
  return newest;
}

function builtAt(): number {
  const f = path.join(ROOT, 'dist/cli/main.js');
  return fs.existsSync(f) ? fs.statSync(f).mtimeMs : 0;
}

function expectBadInput(r: { code: number; stdout: string; stderr: string }, file: string, what: string) {
  expect(r.code, `${what}: ${r.stderr}`).toBe(2);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, what).toHaveLength(1);
  expect(lines[0], what).toContain(file);
  expect(lines[0], what).toMatch(/^edgec: /);
  expect(r.stderr, what).not.toMatch(/^\s+at /m);
  expect(r.stdout, what).toBe('');
}

describe('bad input matrix', () => {
  it('has every kind of case', () => {
    expect(cases.length).toBe(1 + 1 + 1 + 3 + 10 + 1 + 6);
    expect(validCuts.length).toBe(1);
  });

  for (const cmd of ['inspect', 'convert', 'verify (candidate)', 'verify (reference)'] as const) {
    it(`${cmd}: exit 2, one line naming the file, nothing written`, async () => {
      const before = snapshot(root);
      for (const c of cases) {
        const args =
          cmd === 'inspect'
            ? ['inspect', c.file]
            : cmd === 'convert'
              ? ['convert', c.file, '-o', out, '--external-data']
              : cmd === 'verify (candidate)'
                ? ['verify', good, c.file]
                : ['verify', c.file, good];
        expectBadInput(await cli(...args), c.file, `${cmd} ${c.name}`);
      }
      expect(snapshot(root)).toEqual(before);
    });
  }

  it('a cut on a field boundary that leaves a valid model loads as the original minus the cut fields', async () => {
    for (const v of validCuts) {
      const cutFields = new Set(
        topLevelFields(v.full)
          .filter((f) => f.start >= v.cut)
          .map((f) => f.field),
      );
      const pb: PB = ModelProto.decode(v.full);
      for (const n of cutFields) delete pb[ModelProto.fieldsById[n]!.name];
      const expected = encodeModel(decodeModel(ModelProto.encode(pb).finish(), 'expected'));
      const got = decodeModel(fs.readFileSync(v.file), v.file);
      expect(Buffer.from(encodeModel(got)).equals(Buffer.from(expected)), v.name).toBe(true);
      // What was cut is gone, and only that: metadata_props here.
      expect([...cutFields]).toEqual([14]);
      expect(got.metadataProps).toEqual([]);
      const r = await cli('inspect', v.file, '--json');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).ops).toEqual({ MatMul: 2, Add: 1, Relu: 1 });
    }
  });
});

describe('the built binary', () => {
  beforeAll(() => {
    // `npm test` builds first (pretest); build here only when a source is newer than dist.
    // Work in progress elsewhere may not typecheck; tsc still emits, and dist/cli is what we need.
    if (newestSource() > builtAt())
      spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', ROOT], { stdio: 'ignore' });
    expect(builtAt()).toBeGreaterThan(0);
  });

  it('exits 2 with one line, and prints a stack only with --verbose', () => {
    const c = cases.find((x) => x.name.startsWith('external data offset'))!;
    const r = spawnCli('inspect', c.file);
    expectBadInput(r, c.file, 'spawned inspect');
    expect(r.stderr).toMatch(/lies past the end of 'model\.onnx\.data'/);
    const v = spawnCli('inspect', c.file, '--verbose');
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/^\s+at /m);
    expect(v.stderr).toContain(c.file);
  });

  it('usage errors are exit 2', () => {
    expect(spawnCli('inspect').code).toBe(2);
    expect(spawnCli('convert', good).code).toBe(2);
    expect(spawnCli('frobnicate').code).toBe(2);
    expect(spawnCli('--help').code).toBe(0);
  });
});
