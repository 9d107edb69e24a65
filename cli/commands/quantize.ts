// `edgec quantize <in> -o <out>`: block-wise 4/8-bit weight quantization with a per-layer report.
import fs from 'node:fs';
import type { Command } from 'commander';
import { InputError, externalSources, loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { quantizeWeights, type QuantizeContext, type QuantizeStats } from '../../passes/quantize.js';
import { inContentOrder, loadCalibrationSets, syntheticCalibrationSets, weightCalibration } from '../../runtime/calibrate.js';
import { formatReport, remeasure, totals } from '../../passes/quant/report.js';
import type { RegisterCommand } from './index.js';
import { fmtBytes } from '../format.js';
import { addPassFlags, passOptionsFromFlags, type FlagOverrides } from '../pass-flags.js';

/** The flags of `quantize` that are not options of the quantize-weights pass (those are generated from its schema). */
interface QuantizeOpts extends Record<string, unknown> {
  output: string;
  calibration?: string;
  calibrationSets?: string;
  fp16?: boolean;
  json?: boolean;
}

/** Flag names kept from before the flags were generated. */
export const QUANTIZE_FLAGS: FlagOverrides = {
  block: { flag: 'block-size' },
  sym: { negation: 'asym', help: 'symmetric: no zero points', negationHelp: 'asymmetric: per-block zero points' },
  exclude: { help: 'leave nodes matching these names, op types or globs in float' },
};

function fileBytes(files: Iterable<string>): number {
  let s = 0;
  for (const f of files) s += fs.statSync(f).size;
  return s;
}

export const registerQuantize: RegisterCommand = (program: Command) => {
  const cmd = program
    .command('quantize')
    .description('block-wise 4/8-bit weight quantization (MatMulNBits or DequantizeLinear-21, GatherBlockQuantized embeddings)')
    .argument('<in>', 'ONNX model file')
    .requiredOption('-o, --output <file>', 'output model file');
  addPassFlags(cmd, quantizeWeights, QUANTIZE_FLAGS)
    .option('--calibration <dir>', 'input sets for calibration-based methods (one sub-folder of <input name>.pb files per set)')
    .option('--calibration-sets <n>', 'without --calibration: this many seeded random input sets', '8')
    .option('--fp16', 'then convert the rest to float16 (q4f16), keeping float32 I/O and norms')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec quantize decoder.onnx -o decoder-q4.onnx                           # MatMulNBits 4-bit, block 32, round to nearest
  $ edgec quantize decoder.onnx -o decoder-q4.onnx --method gptq --calibration calib/ --fp16
  $ edgec quantize vision.onnx -o vision-q8.onnx --bits 8 --format qdq --exclude "patch_embed*"
`,
    )
    .action(async (input: string, opts: QuantizeOpts) => {
      const options = passOptionsFromFlags(quantizeWeights, opts, QUANTIZE_FLAGS);
      if (fs.existsSync(opts.output) && fs.statSync(opts.output).isDirectory())
        throw new InputError('is a directory; -o takes the output model file', opts.output);
      const steps = parsePipeline([{ pass: 'quantize-weights', options }, ...(opts.fp16 ? [{ pass: 'to-fp16' }] : [])]);
      const model = loadModel(input);
      const inputBytes = fileBytes([input, ...externalSources(model)]);
      const ctx: QuantizeContext = {};
      let calibration: string | undefined;
      const wc = await weightCalibration(
        model,
        String(steps[0]!.options.method),
        () => {
          const n = Number(opts.calibrationSets);
          if (!Number.isInteger(n) || n < 1) throw new InputError(`--calibration-sets '${opts.calibrationSets}' is not a positive integer`);
          return opts.calibration ? inContentOrder(loadCalibrationSets(opts.calibration, model)) : syntheticCalibrationSets(model, n);
        },
        { always: !!steps[0]!.options.budget },
      );
      if (wc) {
        ctx.calibration = wc.calibration;
        const spilled = wc.spilledBytes
          ? `, activation samples ${(wc.spilledBytes / 2 ** 20).toFixed(0)} MiB spilled to a temporary file`
          : '';
        calibration = `${wc.sets} ${opts.calibration ? `input set(s) from ${opts.calibration}` : 'seeded random input set(s) (pass --calibration for real data)'}, ${wc.weights} weights${spilled}`;
      }
      let reports;
      try {
        reports = await runPipeline(model, steps, ctx);
      } finally {
        wc?.release();
      }
      const stats = reports[0]!.stats as QuantizeStats;
      if (opts.fp16) remeasure(stats.layers, model);
      let saved;
      try {
        saved = saveModel(model, opts.output, { externalData: 'auto' });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code) throw new InputError(`cannot write: ${(e as Error).message.split('\n')[0]}`, opts.output);
        throw e;
      }
      const outputBytes = saved.modelBytes + saved.dataFiles.reduce((s, f) => s + f.bytes, 0);
      const t = totals(stats.layers);
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              input,
              output: opts.output,
              role: stats.role,
              calibration,
              options: reports[0]!.options,
              layers: stats.layers,
              totals: t,
              budget: stats.budget,
              counts: stats.counts,
              skipped: stats.skipped ?? [],
              notes: [...(stats.notes ?? []), ...(reports[1]?.stats.notes ?? [])],
              fp16: reports[1] ? reports[1].stats.counts : undefined,
              inputBytes,
              outputBytes,
              sizeRatio: outputBytes / inputBytes,
            },
            null,
            2,
          )}\n`,
        );
        return;
      }
      const out = [...(stats.notes ?? []), ...(calibration ? [`calibration: ${calibration}`] : []), ''];
      if (stats.layers.length) out.push(...formatReport(stats.layers));
      else out.push('no weights quantized');
      for (const s of stats.skipped ?? []) out.push(`skipped: ${s}`);
      if (reports[1])
        out.push(
          `to-fp16: ${Object.entries(reports[1].stats.counts)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}`,
        );
      out.push(
        `wrote ${opts.output}: ${fmtBytes(outputBytes)} (${((100 * outputBytes) / inputBytes).toFixed(1)}% of ${fmtBytes(inputBytes)})`,
      );
      process.stdout.write(`${out.join('\n')}\n`);
    });
};
