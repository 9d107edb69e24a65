// `npm run fuzz [-- --seconds 600 --seed 1 --out fuzz-findings --hang-seconds 60 --rss-mib 2048]`: a
// seeded mutation fuzzer over the ONNX reader and the CLI commands, in a child process that a
// supervisor watches. Seeds are generated models (the hostile corpus's seed MLP, a model with
// subgraphs, an external-data model, shape arithmetic). A finding is any run that breaks the
// bad-input contract: an internal error (exit 70) or an unknown exit code, a stack trace, an exit
// 2 that is not one line naming the file, a run over the time limit, a write into the input's
// folder, a hang or a memory blow-up (the child is killed and the sequence continues after the
// case); each is saved with its command line for the hostile corpus.
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataType, GraphBuilder, Tensor, encodeModel, saveModel } from '../ir/index.js';
import { seedModel } from '../fixtures/hostile.js';
import { main } from '../cli/main.js';
import { Mutator } from './mutate.js';

export interface FuzzOptions {
  seed: number;
  /** Stop after this many executions or seconds, whichever first. */
  maxExecs?: number;
  seconds?: number;
  /** Commands to drive (default: all that read a model). */
  commands?: string[];
  /** Where findings go (default: no files, only the report). */
  findingsDir?: string;
  /** Per-execution limit that counts as a hang. */
  slowMs?: number;
  /** Replay the first `skip` draws of the seeded sequence without running them (a restart after a hang). */
  skip?: number;
  /** A folder where each case is written (case.onnx, case.json with the counts so far) before it
   * runs, so that a supervisor can name the case a hang or a memory blow-up was on. */
  heartbeat?: string;
  log?: (s: string) => void;
}

export interface Finding {
  command: string;
  why: string;
  ops: string[];
  file?: string;
}

export interface FuzzReport {
  execs: number;
  seconds: number;
  byCommand: Record<string, number>;
  codes: Record<string, number>;
  findings: Finding[];
  slowestMs: number;
  /** Position in the seeded sequence after the last case (skip + execs). */
  next: number;
}

const DEFAULT_COMMANDS = ['inspect', 'convert', 'optimize', 'quantize', 'verify', 'compile'];
/** Relative cost: the cheap readers run most, the ones that quantize or run onnxruntime less. */
const WEIGHT: Record<string, number> = { inspect: 6, convert: 4, optimize: 4, quantize: 2, verify: 1, compile: 1 };

function seeds(): Uint8Array[] {
  const out: Uint8Array[] = [encodeModel(seedModel(7))];
  // Subgraphs: an If whose branches read an outer value.
  {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [2, 3]);
    const c = b.input('c', DataType.BOOL, []);
    const then = new GraphBuilder({ opset: 17 });
    then.output(then.op1('Relu', [x]), 'r', DataType.FLOAT, [2, 3]);
    const els = new GraphBuilder({ opset: 17 });
    els.output(els.op1('Neg', [x]), 'n', DataType.FLOAT, [2, 3]);
    b.output(b.op1('If', [c], { attrs: { then_branch: then.graph, else_branch: els.graph } }), 'y', DataType.FLOAT, [2, 3]);
    try {
      out.push(encodeModel(b.build()));
    } catch {
      /* builder cannot nest here: skip */
    }
  }
  // Shape arithmetic: Shape -> Gather -> Concat -> Reshape, and a Conv.
  {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, ['n', 1, 8, 8]);
    const w = b.initializer(
      Tensor.fromFloat32(
        'w',
        [2, 1, 3, 3],
        Float32Array.from({ length: 18 }, (_, i) => (i % 5) / 5),
      ),
    );
    const y = b.op1('Conv', [x, w], { attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1] } });
    const s = b.op1('Shape', [y]);
    const n = b.op1('Gather', [s, b.initializer(Tensor.fromInt64('i0', [1], [0]))], { attrs: { axis: 0 } });
    const shape = b.op1('Concat', [n, b.initializer(Tensor.fromInt64('m1', [1], [-1]))], { attrs: { axis: 0 } });
    b.output(b.op1('Reshape', [y, shape]), 'out', DataType.FLOAT, ['n', 128]);
    out.push(encodeModel(b.build()));
  }
  return out;
}

export function captureRun(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '',
    stderr = '';
  const ow = process.stdout.write,
    ew = process.stderr.write;
  process.stdout.write = ((s: string | Uint8Array) => {
    stdout += String(s);
    return true;
  }) as typeof ow;
  process.stderr.write = ((s: string | Uint8Array) => {
    stderr += String(s);
    return true;
  }) as typeof ew;
  return main(args)
    .then(
      (code) => ({ code, stdout, stderr }),
      (e) => ({ code: -1, stdout, stderr: `${stderr}escaped main(): ${(e as Error)?.stack ?? String(e)}` }),
    )
    .finally(() => {
      process.stdout.write = ow;
      process.stderr.write = ew;
    });
}

function listing(dir: string): string {
  return fs.readdirSync(dir).sort().join('|');
}

export async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const m = new Mutator(o.seed);
  const pool = seeds();
  const commands = o.commands ?? DEFAULT_COMMANDS;
  const wheel = commands.flatMap((c) => new Array(WEIGHT[c] ?? 1).fill(c) as string[]);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fuzz-'));
  const inDir = path.join(work, 'in');
  const outDir = path.join(work, 'out');
  fs.mkdirSync(inDir);
  fs.mkdirSync(outDir);
  // An external-data seed needs its data file beside the mutant: the seed's data goes in once.
  const extModel = path.join(work, 'ext-seed', 'model.onnx');
  saveModel(seedModel(3), extModel, { externalData: true, threshold: 0, location: 'w.data' });
  fs.copyFileSync(path.join(path.dirname(extModel), 'w.data'), path.join(inDir, 'w.data'));
  pool.push(fs.readFileSync(extModel));

  const report: FuzzReport = { execs: 0, seconds: 0, byCommand: {}, codes: {}, findings: [], slowestMs: 0, next: o.skip ?? 0 };
  const t0 = performance.now();
  const deadline = o.seconds !== undefined ? t0 + o.seconds * 1000 : Infinity;
  const maxExecs = o.maxExecs ?? Infinity;
  const slowMs = o.slowMs ?? 10_000;
  const file = path.join(inDir, 'model.onnx');
  try {
    // Every draw of the sequence, run or replayed, so that a restart at `skip` continues it exactly.
    const draw = () => {
      const base = m.pick(pool);
      const { bytes, ops } = m.mutate(base, m.pick(pool));
      const command = m.pick(wheel);
      const args =
        command === 'inspect'
          ? ['inspect', file, '--json']
          : command === 'verify'
            ? ['verify', file, file]
            : command === 'compile'
              ? ['compile', file, '--target', m.pick(['mobile', 'webgpu', 'npu']), '-o', path.join(outDir, 'art'), '--no-verify']
              : [command, file, '-o', path.join(outDir, 'o.onnx')];
      return { bytes, ops, command, args };
    };
    for (let i = 0; i < (o.skip ?? 0); i++) draw();
    while (report.execs < maxExecs && performance.now() < deadline) {
      const { bytes, ops, command, args } = draw();
      fs.writeFileSync(file, bytes);
      const before = listing(inDir);
      const hash = crypto.createHash('sha256').update(bytes).digest('hex');
      if (o.heartbeat) {
        fs.writeFileSync(path.join(o.heartbeat, 'case.onnx'), bytes);
        fs.writeFileSync(path.join(o.heartbeat, 'case.json'), JSON.stringify({ index: report.next, command, args, ops, report }));
      }
      const ts = performance.now();
      const r = await captureRun(args);
      const ms = performance.now() - ts;
      report.execs++;
      report.next++;
      report.byCommand[command] = (report.byCommand[command] ?? 0) + 1;
      report.codes[r.code] = (report.codes[r.code] ?? 0) + 1;
      report.slowestMs = Math.max(report.slowestMs, ms);
      const lines = r.stderr.trimEnd().split('\n');
      let why: string | undefined;
      if (![0, 1, 2].includes(r.code)) why = `exit ${r.code}: ${r.stderr.slice(0, 500)}`;
      else if (/^\s+at /m.test(r.stderr)) why = `stack trace: ${r.stderr.slice(0, 500)}`;
      else if (r.code === 2 && (lines.length !== 1 || !lines[0]!.includes(file)))
        why = `exit 2 without one line naming the file: ${r.stderr.slice(0, 300)}`;
      else if (ms > slowMs) why = `took ${Math.round(ms)} ms`;
      else if (listing(inDir) !== before) why = `wrote into the input folder: ${listing(inDir)}`;
      else if (crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex') !== hash) why = 'changed the input';
      if (why) {
        const f: Finding = { command: args.join(' '), why, ops };
        if (o.findingsDir) {
          fs.mkdirSync(o.findingsDir, { recursive: true });
          f.file = path.join(o.findingsDir, `${hash.slice(0, 16)}.onnx`);
          fs.writeFileSync(f.file, bytes);
          fs.writeFileSync(`${f.file}.json`, JSON.stringify({ ...f, args }, null, 1));
        }
        report.findings.push(f);
        o.log?.(`finding #${report.findings.length} (${command}): ${why.split('\n')[0]}`);
      }
      for (const e of fs.readdirSync(outDir)) fs.rmSync(path.join(outDir, e), { recursive: true, force: true });
      for (const e of fs.readdirSync(inDir))
        if (e !== 'w.data' && e !== 'model.onnx') fs.rmSync(path.join(inDir, e), { recursive: true, force: true });
      if (o.log && report.execs % 500 === 0)
        o.log(
          `${report.execs} execs, ${((performance.now() - t0) / 1000).toFixed(0)} s, ${report.findings.length} findings, codes ${JSON.stringify(report.codes)}`,
        );
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

export interface SuperviseOptions {
  seed: number;
  seconds: number;
  commands: string[];
  findingsDir: string;
  /** A case that runs this long without finishing is a hang: the child is killed and restarted after it. */
  hangMs?: number;
  /** A child whose resident memory passes this is killed the same way. */
  rssMiB?: number;
  log?: (s: string) => void;
}

function rssMiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** In-process fuzzing cannot stop a case that never returns or allocates without end: run it in a
 * child, watch its heartbeat and memory, and on a kill record the case and continue the sequence. */
export async function supervise(o: SuperviseOptions): Promise<FuzzReport> {
  const hangMs = o.hangMs ?? 60_000,
    maxRss = o.rssMiB ?? 2048;
  const total: FuzzReport = { execs: 0, seconds: 0, byCommand: {}, codes: {}, findings: [], slowestMs: 0, next: 0 };
  const add = (r: FuzzReport) => {
    total.execs += r.execs;
    for (const [k, v] of Object.entries(r.byCommand)) total.byCommand[k] = (total.byCommand[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.codes)) total.codes[k] = (total.codes[k] ?? 0) + v;
    total.findings.push(...r.findings);
    total.slowestMs = Math.max(total.slowestMs, r.slowestMs);
  };
  const hb = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fuzz-hb-'));
  const t0 = performance.now();
  const self = fileURLToPath(import.meta.url);
  fs.mkdirSync(o.findingsDir, { recursive: true });
  try {
    while (performance.now() - t0 < o.seconds * 1000) {
      const left = Math.max(1, Math.round(o.seconds - (performance.now() - t0) / 1000));
      const reportFile = path.join(hb, 'report.json');
      fs.rmSync(reportFile, { force: true });
      fs.rmSync(path.join(hb, 'case.json'), { force: true });
      const child = spawn(
        process.execPath,
        [
          self,
          '--child',
          '--seed',
          String(o.seed),
          '--seconds',
          String(left),
          '--skip',
          String(total.next),
          '--heartbeat',
          hb,
          '--report',
          reportFile,
          '--out',
          o.findingsDir,
          '--commands',
          o.commands.join(','),
        ],
        { stdio: ['ignore', 'inherit', 'inherit'] },
      );
      let killed: string | undefined;
      const started = Date.now();
      const timer = setInterval(() => {
        // Before the first case the child is still loading: a minute more.
        let beat = started + 60_000;
        try {
          beat = fs.statSync(path.join(hb, 'case.json')).mtimeMs;
        } catch {
          /* not yet */
        }
        const rss = rssMiB(child.pid!);
        if (Date.now() - beat > hangMs) killed = `hang: no result after ${Math.round((Date.now() - beat) / 1000)} s`;
        else if (rss > maxRss) killed = `memory: resident ${Math.round(rss)} MiB, over ${maxRss} MiB`;
        if (killed) {
          clearInterval(timer);
          child.kill('SIGKILL');
        }
      }, 500);
      await new Promise((resolve) => child.on('exit', resolve));
      clearInterval(timer);
      if (!killed && fs.existsSync(reportFile)) {
        const r = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as FuzzReport;
        add(r);
        total.next = r.next;
        continue;
      }
      // Killed (or died): the heartbeat names the case; its counts are those before it.
      const beat = fs.existsSync(path.join(hb, 'case.json'))
        ? (JSON.parse(fs.readFileSync(path.join(hb, 'case.json'), 'utf8')) as {
            index: number;
            command: string;
            args: string[];
            ops: string[];
            report: FuzzReport;
          })
        : undefined;
      if (!beat) throw new Error(`fuzz child exited before its first case (${killed ?? 'no report'})`);
      add(beat.report);
      const why = killed ?? 'the fuzz process died without a report';
      const bytes = fs.readFileSync(path.join(hb, 'case.onnx'));
      const f: Finding = {
        command: beat.args.join(' '),
        why,
        ops: beat.ops,
        file: path.join(o.findingsDir, `${crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.onnx`),
      };
      fs.writeFileSync(f.file!, bytes);
      fs.writeFileSync(`${f.file}.json`, JSON.stringify({ ...f, args: beat.args, index: beat.index }, null, 1));
      total.execs++;
      total.byCommand[beat.command] = (total.byCommand[beat.command] ?? 0) + 1;
      total.codes.killed = (total.codes.killed ?? 0) + 1;
      total.findings.push(f);
      total.next = beat.index + 1;
      o.log?.(`finding (${beat.command}, case ${beat.index}): ${why}; restarting after it`);
    }
  } finally {
    fs.rmSync(hb, { recursive: true, force: true });
  }
  total.seconds = (performance.now() - t0) / 1000;
  return total;
}

/** Whether the module at `url` is the script node was started with (symlinks resolved). */
export function isMainModule(url: string): boolean {
  try {
    return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(url));
  } catch {
    return false;
  }
}

if (isMainModule(import.meta.url)) {
  const arg = (k: string, d: string) => {
    const i = process.argv.indexOf(k);
    return i > 0 ? process.argv[i + 1]! : d;
  };
  const seconds = Number(arg('--seconds', '60'));
  const seed = Number(arg('--seed', String(Date.now() % 100000)));
  const findingsDir = path.resolve(arg('--out', 'fuzz-findings'));
  const commands = arg('--commands', DEFAULT_COMMANDS.join(',')).split(',');
  const log = (s: string) => process.stdout.write(`${s}\n`);
  if (process.argv.includes('--child')) {
    const heartbeat = arg('--heartbeat', ''),
      reportFile = arg('--report', '');
    fuzz({ seed, seconds, findingsDir, commands, skip: Number(arg('--skip', '0')), heartbeat, log }).then((r) =>
      fs.writeFileSync(reportFile, JSON.stringify(r)),
    );
  } else {
    const hangMs = Number(arg('--hang-seconds', '60')) * 1000,
      rss = Number(arg('--rss-mib', '2048'));
    log(
      `fuzzing ${commands.join(', ')} for ${seconds} s, seed ${seed}; findings -> ${findingsDir} (hang after ${hangMs / 1000} s, memory limit ${rss} MiB)`,
    );
    supervise({ seed, seconds, findingsDir, commands, hangMs, rssMiB: rss, log }).then((r) => {
      log(
        JSON.stringify(
          { seed, ...r, findings: r.findings.length, found: r.findings.map((f) => `${f.why.split('\n')[0]} <- ${f.command}`) },
          null,
          1,
        ),
      );
      process.exitCode = r.findings.length ? 1 : 0;
    });
  }
}
