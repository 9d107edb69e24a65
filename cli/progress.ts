// Progress bars on a terminal (cli-progress): one bar per running task (build items, sub-models,
// variants, passes, quantized weights, calibration and verification runs), nested in the order the
// library reports them. Nothing is drawn on a non-TTY, with --json or --quiet, and nothing at all
// for work that ends within a second (no flicker on small models).
import cliProgress from 'cli-progress';
import type { Progress } from '../ir/index.js';

export interface OutputMode {
  quiet: boolean;
  verbose: boolean;
  color: boolean;
}

/** Set once by main() from the global flags and the environment. */
export const output: OutputMode = { quiet: false, verbose: false, color: true };

export function setOutputMode(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): void {
  output.quiet = argv.includes('--quiet') || argv.includes('-q');
  output.verbose = argv.includes('--verbose');
  // https://no-color.org: any non-empty value turns colour off.
  output.color = !env.NO_COLOR && !!process.stdout.isTTY;
}

/** `s` in green/red/dim when colour is on. */
export function paint(s: string, c: 'green' | 'red' | 'dim'): string {
  if (!output.color) return s;
  const code = { green: 32, red: 31, dim: 2 }[c];
  return `\x1b[${code}m${s}\x1b[0m`;
}

export interface ProgressView {
  /** Hand to the library (undefined when nothing will be drawn, so it does no work). */
  progress: Progress | undefined;
  /** Clear the bars (before printing results or an error). */
  stop(): void;
}

const DELAY_MS = 1000;

/** A progress view for one command; `json` commands and non-terminals get none. */
export function progressView(opts: { json?: boolean; stream?: NodeJS.WriteStream; delayMs?: number } = {}): ProgressView {
  const stream = opts.stream ?? process.stderr;
  if (opts.json || output.quiet || !stream.isTTY) return { progress: undefined, stop: () => {} };
  const delay = opts.delayMs ?? DELAY_MS;
  const t0 = Date.now();
  let multi: cliProgress.MultiBar | undefined;
  // Open tasks, outermost first. An update to a task closes the tasks opened after it (they
  // belonged to its previous item).
  const stack: { task: string; total: number; done: number; detail: string; bar?: cliProgress.SingleBar }[] = [];
  const draw = (e: (typeof stack)[number]) => {
    if (!multi) return;
    const payload = { task: e.task.padEnd(11), detail: e.detail };
    if (!e.bar) e.bar = multi.create(e.total, e.done, payload);
    else {
      e.bar.setTotal(e.total);
      e.bar.update(e.done, payload);
    }
  };
  const progress: Progress = (task, done, total, detail) => {
    if (done === undefined || total === undefined || total <= 0) return;
    let i = stack.findIndex((e) => e.task === task);
    if (i >= 0 && (stack[i]!.total !== total || done < stack[i]!.done)) {
      // The same task restarted (next sub-model): a fresh bar, so its ETA starts over.
      for (const e of stack.splice(i)) if (e.bar) multi?.remove(e.bar);
      i = -1;
    }
    if (i >= 0) {
      for (const e of stack.splice(i + 1)) if (e.bar) multi?.remove(e.bar);
    } else {
      stack.push({ task, total, done, detail: '' });
      i = stack.length - 1;
    }
    const e = stack[i]!;
    e.done = Math.min(done, total);
    e.detail = detail ?? '';
    if (!multi && Date.now() - t0 >= delay) {
      multi = new cliProgress.MultiBar({
        stream,
        format: ' {task} {bar} {value}/{total} | ETA {eta_formatted} | {detail}',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        stopOnComplete: false,
        etaBuffer: 20,
        fps: 10,
        autopadding: true,
        barCompleteChar: '\u2588',
        barIncompleteChar: '\u2591',
      });
      for (const s of stack) draw(s);
    } else draw(e);
  };
  return {
    progress,
    stop: () => {
      multi?.stop();
      multi = undefined;
      stack.length = 0;
    },
  };
}
