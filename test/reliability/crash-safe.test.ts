// Crash-safe artifacts: a process SIGKILLed at each point of writing never leaves a mix of old and
// new files or a partial file under a final name, and the next edgec run that writes there restores
// the previous artifact (or finishes the new one) and removes every temp file; a full disk ends in a
// one-line error with the previous artifact intact and no partial files; -o equal to an input and an
// existing folder that is not an edgec artifact are refused.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, saveModel } from '../../ir/index.js';
import { recoverStale } from '../../ir/atomic.js';
import { seedModel } from '../../fixtures/hostile.js';
import { ROOT, cli } from '../cli/helpers.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-crash-'));
const modelA = path.join(root, 'src-a', 'model.onnx');
const modelB = path.join(root, 'src-b', 'model.onnx');
const MAIN = path.join(ROOT, 'dist/cli/main.js');

beforeAll(() => {
  saveModel(seedModel(7), modelA);
  saveModel(seedModel(8), modelB);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** Hash of every entry under `dir` (relative names). */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16);
    }
  };
  walk(dir);
  return out;
}

const leftovers = (dir: string) => fs.readdirSync(dir).filter((f) => /\.(tmp|old)-\d+$|^\.edgec-commit-/.test(f));

function crashRun(point: string, args: string[]): void {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, EDGEC_CRASH_AT: point },
    timeout: 120_000,
  });
  expect(r.signal, `${point}: ${r.stderr}`).toBe('SIGKILL');
}

describe('SIGKILL while writing', () => {
  it('convert (model + external data): at every point, old or new as a whole after recovery, no temp files', () => {
    const dest = path.join(root, 'conv');
    const out = path.join(dest, 'm.onnx');
    const args = (src: string) => ['convert', src, '-o', out, '--external-data', '--threshold', '0'];
    fs.mkdirSync(dest);
    expect(spawnSync(process.execPath, [MAIN, ...args(modelB)]).status).toBe(0);
    const newTree = tree(dest);
    fs.rmSync(dest, { recursive: true });
    fs.mkdirSync(dest);
    expect(spawnSync(process.execPath, [MAIN, ...args(modelA)]).status).toBe(0);
    const oldTree = tree(dest);
    expect(Object.keys(oldTree).sort()).toEqual(['m.onnx', 'm.onnx.data']);
    expect(newTree).not.toEqual(oldTree);

    const points = ['save:data-tensor', 'save:model-written', 'save:old-moved', 'save:partly-renamed', 'save:done'];
    for (const point of points) {
      crashRun(point, args(modelB));
      // Right after the kill: nothing under a final name is partial or a mix of old and new.
      const now = tree(dest);
      for (const f of ['m.onnx', 'm.onnx.data']) if (now[f]) expect([oldTree[f], newTree[f]], `${point} ${f}`).toContain(now[f]);
      if (now['m.onnx'] && now['m.onnx.data']) {
        const pair = `${now['m.onnx']} ${now['m.onnx.data']}`;
        expect([`${oldTree['m.onnx']} ${oldTree['m.onnx.data']}`, `${newTree['m.onnx']} ${newTree['m.onnx.data']}`], point).toContain(pair);
      }
      expect(leftovers(dest).length, point).toBeGreaterThan(0);
      // The next writer recovers: old before the commit point, new after it; no temp files.
      recoverStale(dest, out);
      const after = tree(dest);
      expect(after, point).toEqual(point === 'save:done' ? newTree : oldTree);
      expect(leftovers(dest), point).toEqual([]);
      expect(loadModel(out).graph.nodes.length).toBe(4);
      if (point === 'save:done') {
        expect(spawnSync(process.execPath, [MAIN, ...args(modelA)]).status).toBe(0);
        expect(tree(dest)).toEqual(oldTree);
      }
    }
  }, 300_000);

  it('compile (artifact folder): killed before or during the swap, the next compile finds the old artifact whole', () => {
    const art = path.join(root, 'art');
    const args = (src: string) => ['compile', src, '--target', 'mobile', '-o', art, '--no-verify'];
    expect(spawnSync(process.execPath, [MAIN, ...args(modelA)]).status).toBe(0);
    const oldTree = tree(art);
    expect(oldTree['manifest.json']).toBeTruthy();
    for (const point of ['save:model-written', 'compile:written', 'swap:old-moved', 'swap:done']) {
      crashRun(point, args(modelB));
      if (fs.existsSync(art)) {
        const now = tree(art);
        // Whatever is under the final name is one whole artifact (old, or new once committed).
        if (point !== 'swap:done') expect(now, point).toEqual(oldTree);
        else expect(now['manifest.json']).toBeTruthy();
      }
      recoverStale(root, art);
      expect(
        fs
          .readdirSync(root)
          .filter((f) => f.startsWith('art') && f !== 'art')
          .concat(leftovers(root)),
        point,
      ).toEqual([]);
      if (point !== 'swap:done') expect(tree(art), point).toEqual(oldTree);
      else {
        expect(tree(art)).not.toEqual(oldTree);
        expect(spawnSync(process.execPath, [MAIN, ...args(modelA)]).status).toBe(0);
        expect(tree(art)).toEqual(oldTree);
      }
    }
  }, 300_000);
});

describe('a full disk', () => {
  /** Make every write fail with ENOSPC once `budget` bytes have been written, in this process. */
  async function withFullDisk<T>(budget: number, fn: () => Promise<T>): Promise<T> {
    const ws = fs.writeSync,
      wfs = fs.writeFileSync;
    let used = 0;
    const enospc = () =>
      Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
    (fs as { writeSync: unknown }).writeSync = (fd: number, buf: Uint8Array | string, ...rest: unknown[]) => {
      const n = typeof buf === 'string' ? Buffer.byteLength(buf) : ((rest[1] as number | undefined) ?? buf.length);
      if (used + n > budget) throw enospc();
      used += n;
      return (ws as (...a: unknown[]) => number)(fd, buf, ...rest);
    };
    (fs as { writeFileSync: unknown }).writeFileSync = (
      file: fs.PathOrFileDescriptor,
      data: string | NodeJS.ArrayBufferView,
      ...rest: unknown[]
    ) => {
      const n = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
      if (used + n > budget) throw enospc();
      used += n;
      return (wfs as (...a: unknown[]) => void)(file, data, ...rest);
    };
    try {
      return await fn();
    } finally {
      (fs as { writeSync: unknown }).writeSync = ws;
      (fs as { writeFileSync: unknown }).writeFileSync = wfs;
    }
  }

  it('injected ENOSPC at several points: exit 74, one line naming the file, old artifact intact, no partial files', async () => {
    const dest = path.join(root, 'full');
    fs.mkdirSync(dest);
    const out = path.join(dest, 'm.onnx');
    expect((await cli('convert', modelA, '-o', out, '--external-data', '--threshold', '0')).code).toBe(0);
    const old = tree(dest);
    for (const budget of [0, 100, 2100, 3300]) {
      const r = await withFullDisk(budget, () => cli('convert', modelB, '-o', out, '--external-data', '--threshold', '0'));
      expect(r.code, `${budget}: ${r.stderr}`).toBe(74);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^edgec: .*m\.onnx(\.data)?(\.tmp-\d+)?: no space left on device \(ENOSPC in write\)\n$/);
      expect(tree(dest), String(budget)).toEqual(old);
    }
    const art = path.join(root, 'full-art');
    expect((await cli('compile', modelA, '--target', 'mobile', '-o', art, '--no-verify')).code).toBe(0);
    const oldArt = tree(art);
    for (const budget of [0, 1000, 4000]) {
      const r = await withFullDisk(budget, () => cli('compile', modelB, '--target', 'mobile', '-o', art, '--no-verify'));
      expect(r.code, `${budget}: ${r.stderr}`).toBe(74);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(tree(art)).toEqual(oldArt);
      expect(fs.readdirSync(root).filter((f) => f.startsWith('full-art') && f !== 'full-art')).toEqual([]);
    }
  }, 300_000);

  it('a real full tmpfs (when this process may mount one): the same', (ctx) => {
    const mnt = path.join(root, 'tmpfs');
    fs.mkdirSync(mnt);
    let mounted = false;
    try {
      if (process.getuid?.() === 0) {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24k', 'tmpfs', mnt], { stdio: 'ignore' });
        mounted = true;
      }
    } catch {
      /* no permission to mount here: the injected test above covers the logic */
    }
    if (!mounted) {
      ctx.skip();
      return;
    }
    try {
      const out = path.join(mnt, 'm.onnx');
      const r = spawnSync(process.execPath, [MAIN, 'convert', modelA, '-o', out, '--external-data', '--threshold', '0'], {
        encoding: 'utf8',
      });
      // The seed model's ~4 KB of weights fit; then the disk is filled to leave less than a new copy needs.
      expect(r.status, r.stderr).toBe(0);
      const old = tree(mnt);
      const fill = path.join(mnt, 'fill.bin');
      // Leave less room than the new artifact needs.
      const free = Number(execFileSync('df', ['--output=avail', '-B1', mnt], { encoding: 'utf8' }).trim().split('\n').pop());
      fs.writeFileSync(fill, Buffer.alloc(Math.max(0, free - 2048)));
      const full = spawnSync(process.execPath, [MAIN, 'convert', modelB, '-o', out, '--external-data', '--threshold', '0'], {
        encoding: 'utf8',
      });
      expect(full.status, full.stderr).toBe(74);
      expect(full.stderr).toMatch(/no space left on device/);
      expect(full.stderr.trimEnd().split('\n')).toHaveLength(1);
      fs.rmSync(fill);
      expect(tree(mnt)).toEqual(old);
    } finally {
      execFileSync('umount', [mnt]);
    }
  }, 120_000);
});

describe('refusals', () => {
  it('-o equal to an input is refused (convert, optimize, quantize, compile)', async () => {
    const dir = path.join(root, 'same');
    fs.mkdirSync(dir);
    const f = path.join(dir, 'model.onnx');
    saveModel(seedModel(), f);
    const before = fs.readFileSync(f);
    for (const args of [
      ['convert', f, '-o', f],
      ['optimize', f, '-o', f],
      ['quantize', f, '-o', f],
      ['compile', f, '--target', 'mobile', '-o', dir, '--no-verify'],
    ]) {
      const r = await cli(...args);
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/refusing/);
      expect(fs.readFileSync(f).equals(before)).toBe(true);
    }
  });

  it('an existing folder that is not an edgec artifact is refused unless --force', async () => {
    const dest = path.join(root, 'mine');
    fs.mkdirSync(dest);
    fs.writeFileSync(path.join(dest, 'notes.txt'), 'precious');
    const r = await cli('compile', modelA, '--target', 'mobile', '-o', dest, '--no-verify');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not an edgec artifact; refusing to replace it \(--force replaces it\)/);
    expect(fs.readFileSync(path.join(dest, 'notes.txt'), 'utf8')).toBe('precious');
    const f = await cli('compile', modelA, '--target', 'mobile', '-o', dest, '--no-verify', '--force');
    expect(f.code, f.stderr).toBe(0);
    expect(fs.existsSync(path.join(dest, 'notes.txt'))).toBe(false);
    expect(fs.existsSync(path.join(dest, 'manifest.json'))).toBe(true);
  });
});
