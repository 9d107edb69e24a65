// `node dist/fuzz/corpus-report.js [--commands inspect,...] [--json]`: the hostile-model corpus
// (fixtures/hostile.ts) against every command, one child process per command so that each child's
// peak RSS is that command's high-water mark over the whole corpus. Prints cases x commands, exit
// codes, whether every run was handled (the rules of test/reliability/hostile.test.ts), the worst
// time and the peak RSS. Exit 1 when a run was not handled.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { writeCorpus, type HostileCase } from '../fixtures/hostile.js';
import { captureRun, isMainModule } from './run.js';

export const CORPUS_COMMANDS = [
  'inspect',
  'convert',
  'verify',
  'optimize',
  'quantize',
  'compile',
  'compile-webgpu',
  'compile-npu',
  'build',
];

export interface CommandReport {
  command: string;
  runs: number;
  codes: Record<string, number>;
  failures: string[];
  worstMs: number;
  worstCase: string;
  peakRssMiB: number;
}

function argsFor(command: string, file: string, out: string, root: string): string[] {
  switch (command) {
    case 'inspect':
      return ['inspect', file, '--json'];
    case 'convert':
      return ['convert', file, '-o', path.join(out, 'c.onnx'), '--external-data'];
    case 'verify':
      return ['verify', file, file];
    case 'optimize':
    case 'quantize':
      return [command, file, '-o', path.join(out, `${command}.onnx`)];
    case 'compile':
      return ['compile', file, '--target', 'mobile', '-o', path.join(out, 'art')];
    case 'compile-webgpu':
      return ['compile', file, '--target', 'webgpu', '-o', path.join(out, 'art'), '--no-verify'];
    case 'compile-npu':
      return ['compile', file, '--target', 'npu', '-o', path.join(out, 'art'), '--no-verify'];
    case 'build': {
      const cfg = path.join(root, 'edgec.config.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({ out: path.join(out, 'build'), models: [{ name: 'm', path: file }], targets: [{ target: 'mobile' }] }),
      );
      return ['build', '--config', cfg, '--json'];
    }
    default:
      throw new Error(`unknown command ${command}`);
  }
}

/** Why a run broke the bad-input contract, or undefined. */
function judge(c: HostileCase, command: string, r: { code: number; stdout: string; stderr: string }): string | undefined {
  const lines = r.stderr.trimEnd().split('\n');
  if (![0, 1, 2].includes(r.code)) return `exit ${r.code}: ${r.stderr.slice(0, 300)}`;
  if (/^\s+at /m.test(r.stderr)) return `stack trace: ${r.stderr.slice(0, 300)}`;
  if (c.expect === 'invalid' && r.code !== 2) return `expected exit 2, got ${r.code}`;
  if (command === 'build') return r.code === 2 && !(r.stdout + r.stderr).includes(c.file) ? 'does not name the file' : undefined;
  if (c.expect === 'valid' && r.code === 2 && (command === 'inspect' || command === 'convert')) return 'a well-formed model was refused';
  if (r.code === 1 && !lines[0]!.startsWith('edgec: ')) return `exit 1 without an edgec line: ${lines[0]}`;
  if (r.code === 2 && (lines.length !== 1 || !lines[0]!.startsWith('edgec: ') || !lines[0]!.includes(c.file)))
    return `exit 2 without one line naming the file: ${r.stderr.slice(0, 200)}`;
  return undefined;
}

function tree(dir: string): string {
  const h = crypto.createHash('sha256');
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      h.update(p);
      if (e.isSymbolicLink()) h.update(fs.readlinkSync(p));
      else if (e.isDirectory()) walk(p);
      else if (e.isFile()) h.update(fs.readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}

/** Every case through one command, in this process. */
export async function runCommand(command: string, corpus: string, cases: HostileCase[]): Promise<CommandReport> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-corpus-run-'));
  const out = path.join(root, 'out');
  fs.mkdirSync(out);
  const rep: CommandReport = { command, runs: 0, codes: {}, failures: [], worstMs: 0, worstCase: '', peakRssMiB: 0 };
  const before = tree(corpus);
  // compile on webgpu/npu: only what gets past the reader reaches what those targets add.
  const todo = command.startsWith('compile-') ? cases.filter((c) => c.expect !== 'invalid') : cases;
  try {
    for (const c of todo) {
      const t0 = performance.now();
      const r = await captureRun(argsFor(command, c.file, out, root));
      const ms = performance.now() - t0;
      rep.runs++;
      rep.codes[r.code] = (rep.codes[r.code] ?? 0) + 1;
      if (ms > rep.worstMs) {
        rep.worstMs = ms;
        rep.worstCase = c.name;
      }
      const why = judge(c, command, r);
      if (why) rep.failures.push(`${c.name}: ${why}`);
      const left = fs.readdirSync(out).filter((f) => f !== 'build');
      if (r.code !== 0 && left.length) rep.failures.push(`${c.name}: exit ${r.code} left ${left.join(', ')}`);
      for (const f of fs.readdirSync(out)) fs.rmSync(path.join(out, f), { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  if (tree(corpus) !== before) rep.failures.push('the corpus changed');
  rep.peakRssMiB = process.resourceUsage().maxRSS / 1024;
  return rep;
}

if (isMainModule(import.meta.url)) {
  const arg = (k: string) => {
    const i = process.argv.indexOf(k);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const child = arg('--child');
  if (child) {
    const corpus = arg('--corpus')!;
    const cases = JSON.parse(fs.readFileSync(path.join(corpus, 'cases.json'), 'utf8')) as HostileCase[];
    runCommand(child, corpus, cases).then((r) => fs.writeFileSync(arg('--report')!, JSON.stringify(r)));
  } else {
    const commands = (arg('--commands') ?? CORPUS_COMMANDS.join(',')).split(',');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-corpus-'));
    try {
      const corpus = path.join(root, 'corpus');
      const cases = writeCorpus(corpus, 1);
      fs.writeFileSync(path.join(corpus, 'cases.json'), JSON.stringify(cases));
      const reports: CommandReport[] = [];
      for (const command of commands) {
        const reportFile = path.join(root, `${command}.json`);
        const t0 = performance.now();
        const r = spawnSync(
          process.execPath,
          [fileURLToPath(import.meta.url), '--child', command, '--corpus', corpus, '--report', reportFile],
          { stdio: ['ignore', 'ignore', 'inherit'], timeout: 1_800_000 },
        );
        if (!fs.existsSync(reportFile))
          throw new Error(`${command}: the child ended without a report (status ${r.status}, signal ${r.signal})`);
        reports.push(JSON.parse(fs.readFileSync(reportFile, 'utf8')) as CommandReport);
        if (!process.argv.includes('--json')) {
          const x = reports[reports.length - 1]!;
          process.stdout.write(
            `${command.padEnd(15)} ${String(x.runs).padStart(4)} runs  codes ${JSON.stringify(x.codes).padEnd(28)} worst ${Math.round(x.worstMs)} ms (${x.worstCase})  peak RSS ${Math.round(x.peakRssMiB)} MiB  ` +
              `${x.failures.length ? `NOT HANDLED: ${x.failures.length}` : 'all handled'}  [${((performance.now() - t0) / 1000).toFixed(0)} s]\n`,
          );
          for (const f of x.failures) process.stdout.write(`  ${f.split('\n')[0]}\n`);
        }
      }
      const worst = reports.reduce((a, b) => (b.worstMs > a.worstMs ? b : a));
      const summary = {
        cases: cases.length,
        commands,
        runs: reports.reduce((a, r) => a + r.runs, 0),
        handled: reports.every((r) => !r.failures.length),
        worstMs: Math.round(worst.worstMs),
        worst: `${worst.command} ${worst.worstCase}`,
        peakRssMiB: Math.round(Math.max(...reports.map((r) => r.peakRssMiB))),
      };
      process.stdout.write(`${JSON.stringify(process.argv.includes('--json') ? { summary, reports } : summary)}\n`);
      process.exitCode = summary.handled ? 0 : 1;
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
}
