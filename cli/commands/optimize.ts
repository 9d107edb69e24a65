// `edgec optimize <in> -o <out> [--pipeline SPEC] [--verify-each] [--json]`: run a pass pipeline
// and print what each pass did.
import path from 'node:path';
import type { Command } from 'commander';
import { loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline, type StepReport } from '../../passes/manager.js';
import { DEFAULT_PIPELINE, resolvePipelineName } from '../../passes/pipelines.js';
import type { RegisterCommand } from './index.js';
import { fmtBytes, table } from '../format.js';

interface OptimizeOpts {
  output: string;
  pipeline?: string;
  verifyEach?: boolean;
  json?: boolean;
}

export const registerOptimize: RegisterCommand = (program: Command) => {
  program
    .command('optimize')
    .description('run a pass pipeline (default: tidy, infer shapes, fold constants, fuse) and print per-pass statistics')
    .argument('<in>', 'ONNX model file')
    .requiredOption('-o, --output <file>', 'output model file')
    .option('--pipeline <spec>', `passes, e.g. "cleanup,fold-constants{maxBytes=4096}" or a named pipeline (default: ${DEFAULT_PIPELINE})`)
    .option('--verify-each', 'check graph validity after every pass')
    .option('--json', 'print the per-pass report as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec optimize model.onnx -o opt.onnx                          # the default cleanup and fusion pipeline
  $ edgec optimize model.onnx -o opt.onnx --pipeline "cleanup,fold-constants{maxBytes=4096},fuse-layernorm" --verify-each
`,
    )
    .action(async (input: string, opts: OptimizeOpts) => {
      const steps = parsePipeline(resolvePipelineName(opts.pipeline ?? DEFAULT_PIPELINE));
      const model = loadModel(input);
      const reports = await runPipeline(model, steps, { verifyEach: opts.verifyEach, modelDir: path.dirname(path.resolve(input)) });
      const saved = saveModel(model, opts.output);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ input, output: opts.output, modelBytes: saved.modelBytes, passes: reports }, null, 2)}\n`);
        return;
      }
      process.stdout.write(formatReports(reports));
      process.stdout.write(`wrote ${opts.output} (${fmtBytes(saved.modelBytes)})\n`);
    });
};

/** The non-zero counts of a pass, most telling first. */
function keyCounts(r: StepReport): string {
  return Object.entries(r.stats.counts)
    .filter(([, n]) => n)
    .map(([k, n]) => `${k}=${n}`)
    .join(' ');
}

export function formatReports(reports: StepReport[]): string {
  const rows = [['pass', 'nodes', '+added', '-removed', 'init bytes', 'ms', 'counts']];
  for (const r of reports) {
    rows.push([
      r.pass,
      `${r.nodesBefore} -> ${r.nodesAfter}`,
      `+${r.nodesAdded}`,
      `-${r.nodesRemoved}`,
      r.initializerBytesBefore === r.initializerBytesAfter
        ? fmtBytes(r.initializerBytesAfter)
        : `${fmtBytes(r.initializerBytesBefore)} -> ${fmtBytes(r.initializerBytesAfter)}`,
      r.ms.toFixed(1),
      keyCounts(r),
    ]);
  }
  const lines = table(rows, '', [false, true, true, true, true, true, false]);
  for (const r of reports) for (const i of r.implicit ?? []) lines.push(`  ${r.pass}: ran ${i.pass} first (${i.ms.toFixed(1)} ms)`);
  for (const r of reports) for (const s of r.stats.skipped ?? []) lines.push(`  ${r.pass}: ${s}`);
  return `${lines.join('\n')}\n`;
}
