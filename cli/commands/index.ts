// Every CLI command; each file registers one subcommand on the program.
import type { Command } from 'commander';
import { registerInspect } from './inspect.js';
import { registerConvert } from './convert.js';
import { registerVerify } from './verify.js';
import { registerPlan } from './plan.js';
import { registerOptimize } from './optimize.js';
import { registerCompile } from './compile.js';
import { registerDemo } from './demo.js';
import { registerQuantize } from './quantize.js';
import { registerKernels } from './kernels.js';
import { registerProfile } from './profile.js';
import { registerBuild } from './build.js';

/** Registers a subcommand; `setExit` sets the process exit code for a finished command. */
export type RegisterCommand = (program: Command, setExit: (code: number) => void) => void;

export const COMMANDS: RegisterCommand[] = [
  registerInspect,
  registerConvert,
  registerVerify,
  registerPlan,
  registerOptimize,
  registerCompile,
  registerDemo,
  registerQuantize,
  registerKernels,
  registerProfile,
  registerBuild,
];
