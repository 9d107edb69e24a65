// `edgec build`: the content-hash cache skips unchanged items and rebuilds only what an edit
// touches; two shards gathered and merged equal one unsharded build byte for byte.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, buildItems, loadBuildConfig, mergeShards, shardItems } from '../../targets/build.js';
import { InputError } from '../../ir/index.js';
import { cli } from '../cli/helpers.js';
import { tempDir, tinyMllm } from './helpers.js';

/** Every file under a folder (relative path -> bytes). */
function tree(dir: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p);
    }
  };
  walk(dir);
  return out;
}

const CONFIG = (mobileBlock: number) => ({
  $schema: '../edgec.config.schema.json',
  out: 'out',
  models: [{ name: 'tiny', path: 'tiny-mllm', options: { imageSizes: ['56x56'] } }],
  targets: [{ target: 'webgpu' }, { target: 'mobile', options: { blockSize: mobileBlock } }],
});

function project(root: string, name: string, src: string, mobileBlock = 32): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.cpSync(src, path.join(dir, 'tiny-mllm'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'edgec.config.json'), JSON.stringify(CONFIG(mobileBlock), null, 2));
  return path.join(dir, 'edgec.config.json');
}

describe('edgec build', () => {
  let tmp: string;
  let src: string;
  beforeAll(() => {
    tmp = tempDir('build');
    src = tinyMllm(tmp);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('second run skips everything; one target option edit rebuilds only that target', async () => {
    const cfg = project(tmp, 'cache', src);
    const first = await build(cfg);
    expect(first.outcomes.map((x) => [x.record.id, x.status])).toEqual([
      ['tiny/mobile', 'built'],
      ['tiny/webgpu', 'built'],
    ]);
    expect(first.exitCode).toBe(0);
    const out = path.join(path.dirname(cfg), 'out');
    const before = tree(out);
    const mtimes = fs.statSync(path.join(out, 'tiny/webgpu/manifest.json')).mtimeMs;

    const second = await build(cfg);
    expect(second.outcomes.map((x) => x.status)).toEqual(['cached', 'cached']);
    expect(tree(out)).toEqual(before);
    expect(fs.statSync(path.join(out, 'tiny/webgpu/manifest.json')).mtimeMs).toBe(mtimes);

    fs.writeFileSync(cfg, JSON.stringify(CONFIG(64), null, 2));
    const third = await build(cfg);
    expect(third.outcomes.map((x) => [x.record.id, x.status])).toEqual([
      ['tiny/mobile', 'built'],
      ['tiny/webgpu', 'cached'],
    ]);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'tiny/mobile/manifest.json'), 'utf8')) as { options: { blockSize: number } };
    expect(m.options.blockSize).toBe(64);
    expect(fs.statSync(path.join(out, 'tiny/webgpu/manifest.json')).mtimeMs).toBe(mtimes);

    // An edited input byte rebuilds every item that reads it.
    const proj = path.join(path.dirname(cfg), 'tiny-mllm', 'projector.onnx');
    const bytes = fs.readFileSync(proj);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(proj, bytes);
    const fourth = await build(cfg, { only: ['webgpu'] });
    expect(fourth.outcomes.map((x) => [x.record.id, x.status])).toEqual([['tiny/webgpu', 'built']]);

    const summary = JSON.parse(fs.readFileSync(path.join(out, 'build-summary.json'), 'utf8'));
    expect(JSON.stringify(summary)).not.toMatch(/"ms"|\/tmp\//);
    expect(fs.readFileSync(path.join(out, 'index.html'), 'utf8')).toContain('tiny/webgpu/report.html');
  }, 600_000);

  it('two shards plus merge equal one unsharded build, byte for byte', async () => {
    const whole = project(tmp, 'whole', src);
    const r = await build(whole);
    expect(r.exitCode).toBe(0);
    const a = project(tmp, 'shard1', src);
    const b = project(tmp, 'shard2', src);
    const s1 = await build(a, { shard: { index: 1, count: 2 } });
    const s2 = await build(b, { shard: { index: 2, count: 2 } });
    expect(s1.outcomes.length).toBe(1);
    expect(s2.outcomes.length).toBe(1);
    expect(s1.outcomes[0]!.record.id).not.toBe(s2.outcomes[0]!.record.id);
    // CI gathers every shard's build folder into one and merges.
    const merged = project(tmp, 'merged', src);
    const mout = path.join(path.dirname(merged), 'out');
    fs.cpSync(path.join(path.dirname(a), 'out'), mout, { recursive: true });
    fs.cpSync(path.join(path.dirname(b), 'out'), mout, { recursive: true, force: true });
    expect(() => mergeShards(a)).toThrow(/shard 2\/2 missing/);
    const m = mergeShards(merged);
    expect(m.exitCode).toBe(0);
    const t1 = tree(path.join(path.dirname(whole), 'out'));
    const t2 = tree(mout);
    expect(Object.keys(t2)).toEqual(Object.keys(t1));
    for (const k of Object.keys(t1)) expect(t2[k]!.equals(t1[k]!), k).toBe(true);
    // The merged folder is a valid cache: a build there skips everything.
    expect((await build(merged)).outcomes.map((x) => x.status)).toEqual(['cached', 'cached']);
  }, 600_000);

  it('shards split the sorted items deterministically and cover them once', () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const parts = [1, 2, 3].map((index) => shardItems(ids, { index, count: 3 }));
    expect(parts).toEqual([['a', 'd'], ['b', 'e'], ['c']]);
  });

  it('refuses a config that does not follow the schema, naming the field', () => {
    const dir = path.join(tmp, 'bad');
    fs.mkdirSync(dir, { recursive: true });
    const f = path.join(dir, 'edgec.config.json');
    fs.writeFileSync(
      f,
      JSON.stringify({
        models: [{ name: 'x', path: 'x.onnx' }],
        targets: [{ target: 'webgpu', options: { blockSize: 32, qant: 'int4' } }],
      }),
    );
    expect(() => loadBuildConfig(f)).toThrow(InputError);
    expect(() => loadBuildConfig(f)).toThrow(/\/targets\/0\/options must NOT have additional properties 'qant'/);
    fs.writeFileSync(f, JSON.stringify({ models: [{ name: 'x', path: 'x.onnx' }], targets: [{ target: 'tpu' }] }));
    expect(() => loadBuildConfig(f)).toThrow(/\/targets\/0\/target must be equal to one of the allowed values \(webgpu, npu, mobile\)/);
    fs.writeFileSync(f, JSON.stringify({ models: [{ name: 'x', path: 'x.onnx', targets: ['npu'] }], targets: [{ target: 'webgpu' }] }));
    expect(() => loadBuildConfig(f)).toThrow(/unknown target 'npu'/);
    fs.writeFileSync(
      f,
      JSON.stringify({
        models: [{ name: 'x', path: 'x.onnx' }],
        targets: [{ target: 'webgpu' }, { name: 'gpu32', target: 'webgpu', options: { fp16: false } }],
      }),
    );
    expect(buildItems(loadBuildConfig(f), f).map((i) => i.id)).toEqual(['x/gpu32', 'x/webgpu']);
  });

  it('cli: a failing check exits 1 and the summary says which item; --json has no progress', async () => {
    const dir = path.join(tmp, 'cli');
    fs.mkdirSync(dir, { recursive: true });
    fs.cpSync(src, path.join(dir, 'tiny-mllm'), { recursive: true });
    // fuse-gelu makes com.microsoft:Gelu/FastGelu, which the npu does not run.
    fs.writeFileSync(
      path.join(dir, 'edgec.config.json'),
      JSON.stringify({
        out: 'out',
        models: [{ name: 'tiny', path: 'tiny-mllm/vision_encoder.onnx' }],
        targets: [
          { target: 'mobile', options: { imageSizes: ['56x56'] } },
          { target: 'npu', options: { imageSizes: ['56x56'], pipeline: 'cleanup,fold-constants,fuse-gelu', verify: false } },
        ],
      }),
    );
    const r = await cli('build', '--config', path.join(dir, 'edgec.config.json'), '--json');
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout) as { summary: { passed: boolean; items: { id: string; passed: boolean; error?: string }[] } };
    expect(j.summary.passed).toBe(false);
    expect(j.summary.items.map((i) => [i.id, i.passed])).toEqual([
      ['tiny/mobile', true],
      ['tiny/npu', false],
    ]);
    expect(j.summary.items[1]!.error).toMatch(/npu/);
    expect(r.code).toBe(1);
    const missing = await cli('build', '--config', path.join(dir, 'nope.json'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.json: no such file/);
  });
});
