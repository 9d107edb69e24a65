#!/usr/bin/env node
// edgec command line: thin. Parses, calls the library, prints, sets the exit code.
// Exit codes: 0 ok, 1 a check failed, 2 bad input or usage, 70 a defect of edgec (internal error),
// 74 the operating system refused a read or write (disk full, permission).
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { InputError, CheckError, InternalError, isSystemError } from '../ir/index.js';
import { PassError } from '../passes/pass.js';
import { COMMANDS } from './commands/index.js';
import { setOutputMode } from './progress.js';

export const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  program
    .name('edgec')
    .description('Edge-deployment compiler and 4-bit quantizer for multimodal LLMs')
    .version(VERSION)
    .option('--verbose', 'show stack traces on errors')
    .option('-q, --quiet', 'no progress bars')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let code = 0;
  for (const register of COMMANDS)
    register(program, (c) => {
      code = c;
    });
  const verbose = argv.includes('--verbose');
  setOutputMode(argv);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    return reportError(e, verbose);
  }
}

export function reportError(e: unknown, verbose: boolean): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    return 2; // commander already printed its one-line message
  }
  const err = e as Error;
  const line = (err?.message ?? String(e)).split('\n')[0];
  if (verbose) process.stderr.write(stackChain(e));
  if (e instanceof CheckError) {
    process.stderr.write(`edgec: ${line}\n`);
    // At most ~20 lines: the rest behind --verbose (and in the artifact's report).
    const shown = verbose || e.details.length <= 19 ? e.details : e.details.slice(0, 18);
    for (const d of shown) process.stderr.write(`  ${d}\n`);
    if (shown.length < e.details.length) process.stderr.write(`  ... ${e.details.length - shown.length} more (--verbose lists all)\n`);
    return 1;
  }
  if (e instanceof InputError || (e instanceof PassError && !e.defect)) {
    process.stderr.write(`edgec: ${line}\n`);
    return 2;
  }
  if (isSystemError(e)) {
    const where = e.path ? `${e.path}: ` : '';
    const what = line.replace(/^[A-Z0-9]+: /, '').replace(/, \w+( '[^']*')?( -> '[^']*')?$/, '');
    process.stderr.write(`edgec: ${where}${what} (${e.code} in ${e.syscall})\n`);
    return 74;
  }
  const where = e instanceof InternalError ? ` in ${e.where.join(' of ')}` : '';
  process.stderr.write(`edgec: internal error${where}: ${line}${verbose ? '' : ' (run with --verbose for details)'}\n`);
  return 70;
}

/** The error's stack and those of its causes: an internal error shows where it really happened. */
function stackChain(e: unknown): string {
  let out = '';
  for (let c: unknown = e, depth = 0; c && depth < 8; c = (c as Error).cause, depth++) {
    const st = (c as Error).stack ?? String(c);
    out += depth ? `caused by: ${st}\n` : `${st}\n`;
  }
  return out;
}

/** Exit once stdout and stderr have handed everything to the OS: process.exit() right after a
 * write to a pipe drops what is still queued (a long error arrived cut short). */
export async function exitWhenDrained(code: number): Promise<void> {
  process.exitCode = code;
  const drain = (s: NodeJS.WriteStream) =>
    new Promise<void>((resolve) => {
      if (s.destroyed || s.writableEnded) return resolve();
      s.write('', () => resolve());
    });
  await Promise.all([drain(process.stdout), drain(process.stderr)]);
  // Exit even if a library left a handle open (a worker, a timer): everything is written.
  process.exit(code);
}

// Run when executed directly, also through npm's `edgec` bin symlink; not when imported by tests.
const isMain = (() => {
  try {
    return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (isMain) {
  // A reader that goes away (`edgec inspect m.onnx --json | head`) is not an error of ours.
  for (const s of [process.stdout, process.stderr])
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      else throw e;
    });
  main(process.argv.slice(2)).then(exitWhenDrained, (e) => exitWhenDrained(reportError(e, process.argv.includes('--verbose'))));
}
