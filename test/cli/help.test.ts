// Every command's --help ends with examples that use its own flags.
import { describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { COMMANDS } from '../../cli/commands/index.js';
import { cli } from './helpers.js';

describe('--help', () => {
  const program = new Command();
  for (const r of COMMANDS) r(program, () => {});
  const names = program.commands.map((c) => c.name());

  it('lists the commands users type', () => {
    expect(names).toEqual(
      expect.arrayContaining(['inspect', 'convert', 'verify', 'plan', 'optimize', 'compile', 'demo', 'quantize', 'build', 'run']),
    );
  });

  it.each(names)('%s --help has examples that name the command', async (name) => {
    const r = await cli(name, '--help');
    expect(r.code).toBe(0);
    const ex = r.stdout.split('Examples:')[1];
    expect(ex, `${name} --help`).toBeDefined();
    expect(ex).toMatch(new RegExp(`\\$ edgec ${name}\\b`));
  });

  it('edgec --help shows the three uses', async () => {
    const r = await cli('--help');
    expect(r.stdout).toMatch(/edgec compile .*--target mobile/);
    expect(r.stdout).toMatch(/edgec build --shard 1\/3 && edgec build --merge/);
  });
});
