// `edgec verify <reference> <candidate>`: run both on the same inputs and compare every output.
import type { Command } from 'commander';
import { CheckError, InputError } from '../../ir/index.js';
import { verifyModels } from '../../runtime/verify.js';
import type { RegisterCommand } from './index.js';
import { table } from '../format.js';
import { ROLES, type Role } from '../../ir/summary.js';
import { IMAGE_PRESETS, describeInputs } from '../../runtime/inputs.js';
import { formatMetric } from '../../runtime/metrics.js';
import { parsePreset } from './compile.js';

interface VerifyCliOpts {
  inputs: string[];
  images: string[];
  tokens?: string;
  preset?: string;
  role?: string;
  seed: string;
  dim: string[];
  threshold?: string;
  json?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export const registerVerify: RegisterCommand = (program: Command, setExit) => {
  program
    .command('verify')
    .description('run reference and candidate in onnxruntime on the same inputs; compare cosine, max abs and relative error')
    .argument('<reference>', 'reference ONNX model')
    .argument('<candidate>', 'candidate ONNX model')
    .option(
      '--inputs <dir>',
      'ONNX test-data folder (every test_data_set_N used) or a folder of <input name>.pb tensors; repeatable (default: realistic synthetic sets)',
      collect,
      [],
    )
    .option('--images <dir|file>', 'PNG/JPEG images for the image input, resized and normalised (repeatable)', collect, [])
    .option('--tokens <file>', 'token id sequences (one per line) for a decoder: teacher-forced agreement, KL and perplexity')
    .option('--preset <name>', `image mean/std: ${Object.keys(IMAGE_PRESETS).join('|')} (default imagenet)`)
    .option('--role <role>', `role of the reference for task metrics and thresholds: ${ROLES.join('|')} (default: guessed)`)
    .option('--seed <n>', 'seed for random inputs', '1234')
    .option('--dim <name=value>', 'value of a symbolic dim for random inputs (repeatable)', collect, [])
    .option(
      '--threshold <cos>',
      'minimum cosine per output (default: the role\'s threshold, as compile uses; README "Verification thresholds")',
    )
    .option('--json', 'print per-output figures as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec verify model.onnx model-int4.onnx                       # seeded random inputs, cosine and max abs error per output
  $ edgec verify model.onnx model-int4.onnx --inputs test_data_set_0 --threshold 0.995 --json
  $ edgec verify decoder.onnx out/decoder.onnx --dim seq=8 --dim past_seq=16
`,
    )
    .action(async (refPath: string, candPath: string, opts: VerifyCliOpts) => {
      if (!/^\d+$/.test(opts.seed)) throw new InputError(`--seed '${opts.seed}' is not a non-negative integer`);
      const threshold = opts.threshold === undefined ? undefined : Number(opts.threshold);
      if (opts.threshold !== undefined && (opts.threshold.trim() === '' || !(threshold! >= -1 && threshold! <= 1)))
        throw new InputError(`--threshold '${opts.threshold}' is not a cosine in [-1, 1]`);
      if (opts.role !== undefined && !ROLES.includes(opts.role as Role))
        throw new InputError(`--role must be one of ${ROLES.join('|')}, got '${opts.role}'`);
      const dims: Record<string, number> = {};
      for (const d of opts.dim) {
        const m = /^([^=]+)=(\d+)$/.exec(d);
        if (!m || Number(m[2]) < 1) throw new InputError(`--dim '${d}' is not name=positive integer`);
        dims[m[1]!] = Number(m[2]);
      }
      const r = await verifyModels(refPath, candPath, {
        inputs: opts.inputs,
        images: opts.images.length ? opts.images : undefined,
        tokens: opts.tokens,
        preprocess: parsePreset(opts.preset),
        role: opts.role as Role | undefined,
        seed: Number(opts.seed),
        dims,
        threshold,
      });
      if (opts.json) {
        // JSON has no Infinity: missing outputs report null errors.
        process.stdout.write(
          `${JSON.stringify({ reference: refPath, candidate: candPath, ...r }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`,
        );
        setExit(r.passed ? 0 : 1);
        return;
      }
      const rows = [
        ['output', 'cosine', 'max abs', 'rel err', 'shape', ''],
        ...r.outputs.map((o) => [
          o.name,
          o.cosine.toFixed(6),
          o.maxAbsError.toExponential(3),
          o.relError.toExponential(3),
          o.shapeMatch ? 'ok' : 'MISMATCH',
          o.problem ? `FAIL: ${o.problem}` : 'ok',
        ]),
      ];
      process.stdout.write(`${table(rows, '', [false, true, true, true, false, false]).join('\n')}\n`);
      process.stdout.write(`inputs: ${r.inputs.map((i) => `${i.name}[${i.shape}] ${i.source}`).join(', ')}\n`);
      process.stdout.write(`measured on ${describeInputs(r.inputsUsed)}; role ${r.role}\n`);
      for (const m of r.metrics) process.stdout.write(`${formatMetric(m)}\n`);
      if (r.extraOutputs.length) process.stdout.write(`candidate-only outputs (not compared): ${r.extraOutputs.join(', ')}\n`);
      const failed = r.outputs.filter((o) => o.problem);
      if (failed.length)
        throw new CheckError(
          `verification failed: ${failed.length} of ${r.outputs.length} outputs below cosine ${r.threshold}, a task metric or mismatched (${failed.map((o) => o.name).join(', ')})`,
        );
      process.stdout.write(`passed: ${r.outputs.length} outputs, cosine >= ${r.threshold}\n`);
    });
};
