// Every CLI command; each file registers one subcommand on the program.
import type { Command } from 'commander';

/** Registers a subcommand; `setExit` sets the process exit code for a finished command. */
export type RegisterCommand = (program: Command, setExit: (code: number) => void) => void;

export const COMMANDS: RegisterCommand[] = [];
