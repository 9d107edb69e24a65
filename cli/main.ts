#!/usr/bin/env node
// edgec command line: thin. Parses, calls the library, prints, sets the exit code.
// Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { InputError, CheckError } from '../ir/index.js';
import { PassError } from '../passes/pass.js';
import { COMMANDS } from './commands/index.js';
import { setOutputMode } from './progress.js';

export const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  program.name('edgec').description('Edge-deployment compiler and 4-bit quantizer for multimodal LLMs').version(VERSION)
    .option('--verbose', 'show stack traces on errors')
    .option('-q, --quiet', 'no progress bars')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let code = 0;
  for (const register of COMMANDS) register(program, (c) => { code = c; });
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
  if (verbose && err?.stack) process.stderr.write(`${err.stack}\n`);
  if (e instanceof CheckError) {
    process.stderr.write(`edgec: ${line}\n`);
    for (const d of e.details) process.stderr.write(`  ${d}\n`);
    return 1;
  }
  if (e instanceof InputError || e instanceof PassError) {
    process.stderr.write(`edgec: ${line}\n`);
    return 2;
  }
  process.stderr.write(`edgec: internal error: ${line}${verbose ? '' : ' (run with --verbose for details)'}\n`);
  return 70;
}

// Run when executed directly, also through npm's `edgec` bin symlink; not when imported by tests.
const isMain = (() => {
  try { return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url)); } catch { return false; }
})();
if (isMain) {
  main(process.argv.slice(2)).then((c) => process.exit(c), (e) => process.exit(reportError(e, process.argv.includes('--verbose'))));
}
