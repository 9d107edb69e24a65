// `edgec quantize <in> -o <out>`: block-wise 4/8-bit weight quantization with a per-layer report.
import fs from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import { InputError, externalSources, loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import type { QuantizeContext, QuantizeStats } from '../../passes/quantize.js';
import { getMethod } from '../../passes/quant/methods/index.js';
import { collectCalibration, loadCalibrationSets, syntheticCalibrationSets } from '../../runtime/calibrate.js';
import { formatReport, remeasure, totals } from '../../passes/quant/report.js';
import type { RegisterCommand } from './index.js';
import { fmtBytes } from '../format.js';

interface QuantizeOpts {
  output: string;
  bits?: string;
  blockSize: string;
  sym?: boolean;
  asym?: boolean;
  format: string;
  method: string;
  accuracyLevel?: string;
  include?: string[];
  exclude?: string[];
  embeddings?: boolean;
  embedBits?: string;
  lmHeadBits?: string;
  role?: string;
  calibration?: string;
  calibrationSets?: string;
  fp16?: boolean;
  threads?: string;
  json?: boolean;
}

function fileBytes(files: Iterable<string>): number {
  let s = 0;
  for (const f of files) s += fs.statSync(f).size;
  return s;
}

export const registerQuantize: RegisterCommand = (program: Command) => {
  program.command('quantize')
    .description('block-wise 4/8-bit weight quantization (MatMulNBits or DequantizeLinear-21, GatherBlockQuantized embeddings)')
    .argument('<in>', 'ONNX model file')
    .requiredOption('-o, --output <file>', 'output model file')
    .option('--bits <n>', 'weight bits, 4 or 8 (default 4; 8 for a vision encoder or projector)')
    .option('--block-size <n>', 'block size along K: power of two, 16..256', '32')
    .option('--sym', 'symmetric: no zero points (default)')
    .option('--asym', 'asymmetric: per-block zero points')
    .option('--format <f>', 'matmulnbits (WebGPU/CPU) or qdq (DequantizeLinear-21 + MatMul, NPU)', 'matmulnbits')
    .option('--method <m>', 'quantization method', 'rtn')
    .option('--accuracy-level <n>', 'MatMulNBits accuracy_level (0 unset, 4 int8 activations)')
    .option('--include <pattern...>', 'only nodes matching these names, op types or globs')
    .option('--exclude <pattern...>', 'leave nodes matching these names, op types or globs in float')
    .option('--no-embeddings', 'leave Gather embeddings in float')
    .option('--embed-bits <n>', 'bits for embeddings (default: --bits)')
    .option('--lm-head-bits <n>', 'bits for the lm_head (default: --bits)')
    .option('--role <role>', 'sub-model role for defaults: decoder, vision-encoder, projector, embeddings (default: guessed)')
    .option('--calibration <dir>', 'input sets for calibration-based methods (one sub-folder of <input name>.pb files per set)')
    .option('--calibration-sets <n>', 'without --calibration: this many seeded random input sets', '8')
    .option('--threads <n>', 'worker threads quantizing weights in parallel (same bytes for any count; default: available cores)')
    .option('--fp16', 'then convert the rest to float16 (q4f16), keeping float32 I/O and norms')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', `
Examples:
  $ edgec quantize decoder.onnx -o decoder-q4.onnx                           # MatMulNBits 4-bit, block 32, round to nearest
  $ edgec quantize decoder.onnx -o decoder-q4.onnx --method gptq --calibration calib/ --fp16
  $ edgec quantize vision.onnx -o vision-q8.onnx --bits 8 --format qdq --exclude "patch_embed*"
`)
    .action(async (input: string, opts: QuantizeOpts) => {
      if (opts.sym && opts.asym) throw new InputError('--sym and --asym exclude each other');
      if (fs.existsSync(opts.output) && fs.statSync(opts.output).isDirectory()) throw new InputError('is a directory; -o takes the output model file', opts.output);
      const options: Record<string, unknown> = { block: opts.blockSize, sym: !opts.asym, format: opts.format, method: opts.method };
      if (opts.bits !== undefined) options.bits = opts.bits;
      if (opts.accuracyLevel !== undefined) options.accuracyLevel = opts.accuracyLevel;
      if (opts.include) options.include = opts.include;
      if (opts.exclude) options.exclude = opts.exclude;
      if (opts.embeddings === false) options.embeddings = false;
      if (opts.embedBits !== undefined) options.embedBits = opts.embedBits;
      if (opts.lmHeadBits !== undefined) options.lmHeadBits = opts.lmHeadBits;
      if (opts.role !== undefined) options.role = opts.role;
      options.threads = opts.threads ?? String(Math.min(64, os.availableParallelism()));
      const steps = parsePipeline([{ pass: 'quantize-weights', options }, ...(opts.fp16 ? [{ pass: 'to-fp16' }] : [])]);
      const model = loadModel(input);
      const inputBytes = fileBytes([input, ...externalSources(model)]);
      const ctx: QuantizeContext = {};
      let calibration: string | undefined;
      if (getMethod(opts.method).needsCalibration) {
        const n = Number(opts.calibrationSets);
        if (!Number.isInteger(n) || n < 1) throw new InputError(`--calibration-sets '${opts.calibrationSets}' is not a positive integer`);
        const sets = opts.calibration ? loadCalibrationSets(opts.calibration, model) : syntheticCalibrationSets(model, n);
        const acts = await collectCalibration(model, sets);
        ctx.calibration = (w) => acts.get(w);
        calibration = `${sets.length} ${opts.calibration ? `input set(s) from ${opts.calibration}` : 'seeded random input set(s) (pass --calibration for real data)'}, ${acts.size} weights`;
      }
      const reports = await runPipeline(model, steps, ctx);
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
        process.stdout.write(`${JSON.stringify({
          input, output: opts.output, role: stats.role, calibration, options: reports[0]!.options, layers: stats.layers, totals: t,
          counts: stats.counts, skipped: stats.skipped ?? [], notes: [...(stats.notes ?? []), ...(reports[1]?.stats.notes ?? [])],
          fp16: reports[1] ? reports[1].stats.counts : undefined, inputBytes, outputBytes, sizeRatio: outputBytes / inputBytes,
        }, null, 2)}\n`);
        return;
      }
      const out = [...(stats.notes ?? []), ...(calibration ? [`calibration: ${calibration}`] : []), ''];
      if (stats.layers.length) out.push(...formatReport(stats.layers));
      else out.push('no weights quantized');
      for (const s of stats.skipped ?? []) out.push(`skipped: ${s}`);
      if (reports[1]) out.push(`to-fp16: ${Object.entries(reports[1].stats.counts).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      out.push(`wrote ${opts.output}: ${fmtBytes(outputBytes)} (${((100 * outputBytes) / inputBytes).toFixed(1)}% of ${fmtBytes(inputBytes)})`);
      process.stdout.write(`${out.join('\n')}\n`);
    });
};
