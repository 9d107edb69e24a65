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
import { registerRun } from './run.js';
import { registerEval } from './eval.js';

/** Registers a subcommand; `setExit` sets the process exit code for a finished command. */
export type RegisterCommand = (program: Command, setExit: (code: number) => void) => void;

/** The program's own --help: the three uses. */
const registerUses: RegisterCommand = (program) => {
  program.addHelpText(
    'after',
    `
Examples:
  $ edgec compile models/my-mllm --target mobile -o out/mobile        # a checkpoint for phones (CPU); --target npu for the NPU
  $ edgec run out/mobile --image cat.png --tokens 1,306,4 --compare models/my-mllm
  $ edgec build --shard 1/3 && edgec build --merge                    # a release build in CI (edgec.config.json)
  $ edgec demo                                                        # the bundled tiny MLLM through every target`,
  );
};

export const COMMANDS: RegisterCommand[] = [
  registerUses,
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
  registerRun,
  registerEval,
];
