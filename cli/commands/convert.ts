// `edgec convert <in> -o <out>`: faithful re-save, moving weights in or out of external data.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { InputError, loadModel, saveModel } from '../../ir/index.js';
import type { RegisterCommand } from './index.js';
import { fmtBytes } from '../format.js';

interface ConvertOpts {
  output: string;
  externalData?: boolean;
  threshold?: string;
  location?: string;
  json?: boolean;
}

export const registerConvert: RegisterCommand = (program: Command) => {
  program
    .command('convert')
    .description('re-save a model, with weights inline or in external data (never overwrites the input)')
    .argument('<in>', 'ONNX model file')
    .requiredOption('-o, --output <file>', 'output model file')
    .option('--external-data', 'store tensors of at least --threshold bytes in an external data file')
    .option('--no-external-data', 'store every tensor inline (a model past the 2 GB protobuf limit still goes external)')
    .option('--threshold <bytes>', 'smallest tensor moved to external data', '1024')
    .option('--location <name>', 'external data file name, next to the output (default <output file name>.data)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec convert big.onnx -o big-ext.onnx --external-data --threshold 1024   # weights to big-ext.onnx.data
  $ edgec convert split.onnx -o single.onnx --no-external-data                # everything inline (< 2 GB)
`,
    )
    .action((input: string, opts: ConvertOpts) => {
      const threshold = Number(opts.threshold);
      if (!/^\d+$/.test(opts.threshold ?? '') || !Number.isSafeInteger(threshold))
        throw new InputError(`--threshold '${opts.threshold}' is not a non-negative integer`);
      if (opts.location !== undefined) checkOutputLocation(opts.location);
      const model = loadModel(input);
      if (fs.existsSync(opts.output) && fs.statSync(opts.output).isDirectory())
        throw new InputError('is a directory; -o takes the output model file', opts.output);
      const r = writeModel(
        () => saveModel(model, opts.output, { externalData: opts.externalData ?? 'auto', threshold, location: opts.location }),
        opts.output,
      );
      // Data files named the way the user named the output: next to it, same relative/absolute style.
      const data = r.dataFiles.map((f) => ({ file: path.join(path.dirname(opts.output), path.basename(f.file)), bytes: f.bytes }));
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify({ input, output: opts.output, modelBytes: r.modelBytes, externalTensors: r.externalTensors, dataFiles: data }, null, 2)}\n`,
        );
        return;
      }
      const ext = data.length
        ? `, ${r.externalTensors} tensors in ${data.map((f) => `${f.file} (${fmtBytes(f.bytes)})`).join(', ')}`
        : ', all tensors inline';
      process.stdout.write(`wrote ${opts.output} (${fmtBytes(r.modelBytes)})${ext}\n`);
    });
};

/** File system failures while writing (no permission, a file where a folder should be) are bad output paths. */
function writeModel<T>(fn: () => T, output: string): T {
  try {
    return fn();
  } catch (e) {
    // A full disk or a failing device is the machine's state, not a bad path: reported as such (exit 74).
    if (['ENOSPC', 'EDQUOT', 'EIO', 'EFBIG'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    if ((e as NodeJS.ErrnoException).code) throw new InputError(`cannot write: ${(e as Error).message.split('\n')[0]}`, output);
    throw e;
  }
}

/** The data file lands next to the output model: a plain file name. */
function checkOutputLocation(location: string): void {
  if (!location || location === '.' || location === '..' || location.includes('\0') || /[\\/]/.test(location))
    throw new InputError(`--location '${location}' must be a file name next to the output model (no folders)`);
}
