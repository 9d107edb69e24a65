// The hostile-model corpus (fixtures/hostile.ts) against every command that reads a model, in
// process: bad input is exit 2 with one line naming the file, a valid but unsupported model exit
// 0 or 1, never an internal error, a stack trace, a hang, a write next to the input or a changed
// input. A few cases run through the real binary, with peak RSS measured.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveModel } from '../../ir/index.js';
import { seedModel, writeCorpus, type HostileCase } from '../../fixtures/hostile.js';
import crypto from 'node:crypto';
import { ROOT, cli } from '../cli/helpers.js';
import { COMMANDS } from '../../cli/commands/index.js';
import { Command } from 'commander';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-hostile-'));
const corpus = path.join(root, 'corpus');
const out = path.join(root, 'out');
const good = path.join(root, 'good', 'model.onnx');
let cases: HostileCase[] = [];

/** Commands the CLI has; `build` joins the matrix once it exists. */
const available = (() => {
  const p = new Command();
  for (const r of COMMANDS) r(p, () => {});
  return new Set(p.commands.map((c) => c.name()));
})();

type Cmd = { name: string; args: (f: string) => string[] };
const ALL_COMMANDS: Cmd[] = [
  { name: 'inspect', args: (f) => ['inspect', f, '--json'] },
  { name: 'convert', args: (f) => ['convert', f, '-o', path.join(out, 'c.onnx'), '--external-data'] },
  // The model against itself: both sides load it, and onnxruntime runs it.
  { name: 'verify', args: (f) => ['verify', f, f] },
  { name: 'optimize', args: (f) => ['optimize', f, '-o', path.join(out, 'o.onnx')] },
  { name: 'quantize', args: (f) => ['quantize', f, '-o', path.join(out, 'q.onnx')] },
  { name: 'compile', args: (f) => ['compile', f, '--target', 'mobile', '-o', path.join(out, 'art')] },
  {
    name: 'build',
    args: (f) => {
      // One model x one target; the build's own folder (state, summary) is not next to the input.
      const cfg = path.join(root, 'edgec.config.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({ out: path.join(out, 'build'), models: [{ name: 'm', path: f }], targets: [{ target: 'mobile' }] }),
      );
      return ['build', '--config', cfg, '--json'];
    },
  },
];
const MATRIX = ALL_COMMANDS.filter((c) => available.has(c.name));

beforeAll(() => {
  cases = writeCorpus(corpus, 1);
  saveModel(seedModel(), good);
  fs.mkdirSync(out);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** Every entry under `dir`: file hashes, link targets, and the kind of anything else (a FIFO must
 * not be opened: reading one blocks). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isSymbolicLink()) out[p] = `-> ${fs.readlinkSync(p)}`;
      else if (e.isDirectory()) {
        out[p] = 'dir';
        walk(p);
      } else if (e.isFile()) out[p] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      else out[p] = e.isFIFO() ? 'fifo' : 'other';
    }
  };
  walk(dir);
  return out;
}

interface Row {
  kase: string;
  cmd: string;
  code: number;
  ms: number;
  line: string;
}
const rows: Row[] = [];

function check(c: HostileCase, cmd: string, r: { code: number; stdout: string; stderr: string }): string | undefined {
  const lines = r.stderr.trimEnd().split('\n');
  if (r.code === 70 || r.code > 2 || r.code < 0) return `exit ${r.code}: ${r.stderr.slice(0, 400)}`;
  if (/^\s+at /m.test(r.stderr)) return `stack trace: ${r.stderr.slice(0, 400)}`;
  if (c.expect === 'invalid' && r.code !== 2) return `expected exit 2, got ${r.code}: ${r.stderr.slice(0, 300)}`;
  // Well-formed for our reader; onnxruntime may still refuse it (an unknown op, a 1e18-byte Expand).
  if (c.expect === 'valid' && r.code === 2 && (cmd === 'inspect' || cmd === 'convert'))
    return `a well-formed model was refused: ${r.stderr.slice(0, 300)}`;
  if (r.code === 2) {
    if (lines.length !== 1) return `${lines.length} lines: ${r.stderr.slice(0, 300)}`;
    if (!lines[0]!.startsWith('edgec: ')) return `not an edgec line: ${lines[0]}`;
    if (!lines[0]!.includes(c.file)) return `does not name the file: ${lines[0]}`;
    if (r.stdout !== '') return `wrote to stdout on failure: ${r.stdout.slice(0, 200)}`;
  }
  if (r.code === 1 && !lines[0]!.startsWith('edgec: ')) return `not an edgec line: ${lines[0]}`;
  return undefined;
}

/** A build reports per item (JSON on stdout): the item's error names the file; no defect, no stack. */
function checkBuild(c: HostileCase, r: { code: number; stdout: string; stderr: string }): string | undefined {
  if (r.code === 70 || r.code > 2 || r.code < 0) return `exit ${r.code}: ${r.stderr.slice(0, 400)}`;
  if (/^\s+at /m.test(r.stderr)) return `stack trace: ${r.stderr.slice(0, 400)}`;
  if (c.expect === 'invalid' && r.code !== 2) return `expected exit 2, got ${r.code}: ${r.stderr.slice(0, 300)}`;
  if (r.code === 2 && !(r.stdout + r.stderr).includes(c.file))
    return `does not name the file: ${r.stderr.slice(0, 200)} ${r.stdout.slice(0, 200)}`;
  return undefined;
}

describe('hostile-model corpus', () => {
  it('has every kind of case', () => {
    expect(cases.length).toBeGreaterThanOrEqual(90);
    const kinds = (re: RegExp) => cases.filter((c) => re.test(c.name)).length;
    expect(kinds(/truncated/)).toBeGreaterThanOrEqual(15);
    expect(kinds(/bit flip/)).toBe(12);
    expect(kinds(/external data/)).toBeGreaterThanOrEqual(18);
    expect(kinds(/nested/)).toBe(3);
  });

  for (const cmd of MATRIX) {
    it(`${cmd.name}: every case handled, nothing written next to the input, input untouched`, async () => {
      const before = snapshot(corpus);
      const failures: string[] = [];
      // build compiles through the same code as compile: a third of the corpus keeps the suite fast.
      for (const c of cmd.name === 'build' ? cases.filter((_, i) => i % 3 === 0) : cases) {
        const t0 = performance.now();
        const r = await cli(...cmd.args(c.file));
        const ms = performance.now() - t0;
        const line = r.stderr.split('\n')[0] ?? '';
        rows.push({ kase: c.name, cmd: cmd.name, code: r.code, ms, line });
        const why = cmd.name === 'build' ? checkBuild(c, r) : check(c, cmd.name, r);
        if (why) failures.push(`${c.name}: ${why}`);
        if (ms > 10_000) failures.push(`${c.name}: took ${Math.round(ms)} ms`);
        // A failed build keeps its summary and state, never an artifact for the item.
        if (cmd.name === 'build' && r.code !== 0 && fs.existsSync(path.join(out, 'build', 'm', 'mobile')))
          failures.push(`${c.name}: failed build left an artifact`);
        const left = fs.readdirSync(out).filter((f) => !(cmd.name === 'build' && f === 'build'));
        if (r.code !== 0 && left.length) failures.push(`${c.name}: exit ${r.code} left ${left.join(', ')} in the output folder`);
        for (const f of fs.readdirSync(out)) fs.rmSync(path.join(out, f), { recursive: true, force: true });
      }
      expect(failures).toEqual([]);
      expect(snapshot(corpus)).toEqual(before);
    }, 600_000);
  }

  it('records cases x commands, worst time and the exit codes', () => {
    expect(rows.length).toBe(cases.length * (MATRIX.length - 1) + (available.has('build') ? Math.ceil(cases.length / 3) : cases.length));
    const worst = rows.reduce((a, b) => (b.ms > a.ms ? b : a));
    const codes: Record<string, number> = {};
    for (const r of rows) codes[r.code] = (codes[r.code] ?? 0) + 1;
    const summary = {
      cases: cases.length,
      commands: MATRIX.map((m) => m.name),
      runs: rows.length,
      codes,
      worstMs: Math.round(worst.ms),
      worst: `${worst.cmd} ${worst.kase}`,
    };
    // The figures for the notes; EDGEC_CORPUS_REPORT keeps every row.
    console.log(`hostile corpus: ${JSON.stringify(summary)}`);
    if (process.env.EDGEC_CORPUS_REPORT) fs.writeFileSync(process.env.EDGEC_CORPUS_REPORT, JSON.stringify({ summary, rows }, null, 1));
  });
});

describe('well-formed hostile cases through every target', () => {
  // Past the reader these reach what only some targets run: webgpu's fp16 range measurement, npu's
  // static shapes and calibration in onnxruntime (fuzzer findings: a 2^31 input dim, an attribute
  // onnxruntime rejects, a same-named op outside com.microsoft).
  for (const target of ['webgpu', 'npu']) {
    it(`compile --target ${target}: exit 0, 1 or 2 with one line, never an internal error`, async () => {
      const failures: string[] = [];
      for (const c of cases.filter((x) => x.expect !== 'invalid')) {
        const r = await cli('compile', c.file, '--target', target, '-o', path.join(out, 'art'), '--no-verify');
        const why = check(c, 'compile', r);
        if (why) failures.push(`${c.name}: ${why}`);
        for (const f of fs.readdirSync(out)) fs.rmSync(path.join(out, f), { recursive: true, force: true });
      }
      expect(failures).toEqual([]);
    }, 300_000);
  }
});

describe('hostile cases through the real binary', () => {
  it('exit 2, one line, bounded time and peak RSS, for the nastiest cases', () => {
    const main = path.join(ROOT, 'dist/cli/main.js');
    expect(fs.existsSync(main)).toBe(true);
    const hook = path.join(root, 'rss.cjs');
    fs.writeFileSync(
      hook,
      "process.on('exit', () => require('fs').writeFileSync(process.env.EDGEC_RSS_FILE, String(process.resourceUsage().maxRSS)));\n",
    );
    for (const f of fs.readdirSync(out)) fs.rmSync(path.join(out, f), { recursive: true, force: true });
    const pick = [/nested 5000/, /raw_data length claims 1 TiB/, /location is a FIFO/];
    for (const re of pick) {
      for (const c of cases.filter((x) => re.test(x.name))) {
        const rssFile = path.join(root, 'rss.txt');
        const t0 = performance.now();
        const r = spawnSync(process.execPath, [main, 'compile', c.file, '--target', 'webgpu', '-o', path.join(out, 'a')], {
          encoding: 'utf8',
          timeout: 20_000,
          env: { ...process.env, NODE_OPTIONS: `--require ${hook}`, EDGEC_RSS_FILE: rssFile },
        });
        const ms = performance.now() - t0;
        expect(r.status, `${c.name}: ${r.stderr}`).toBe(2);
        expect(r.stderr.trimEnd().split('\n'), c.name).toHaveLength(1);
        expect(r.stderr).toContain(c.file);
        const rssMiB = Number(fs.readFileSync(rssFile, 'utf8')) / 1024;
        console.log(`spawned compile ${c.name}: exit ${r.status}, ${Math.round(ms)} ms, peak RSS ${rssMiB.toFixed(0)} MiB`);
        expect(rssMiB, c.name).toBeLessThan(400);
        expect(fs.readdirSync(out)).toEqual([]);
      }
    }
  }, 120_000);
});
