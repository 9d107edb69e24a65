// `edgec demo`: the bundled tiny MLLM (vision encoder, projector, embeddings, decoder with KV
// cache) generated, compiled for every target, verified, and summarised in one table.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { CheckError, InputError, type Progress } from '../../ir/index.js';
import { writeTinyMllm, writeTinyMllmConfigs } from '../../fixtures/tiny-mllm.js';
import { artifactSummary, compile, type ArtifactSummary, type CompileResult } from '../../targets/compile.js';
import { TARGET_NAMES, type TargetName } from '../../targets/target.js';
import { fmtBytes, table } from '../format.js';
import { progressView } from '../progress.js';
import type { RegisterCommand } from './index.js';

/** The fixture's vision encoder was trained on a 4x4 grid of 14-pixel patches. */
export const DEMO_IMAGE = '56x56';

export interface DemoRow extends ArtifactSummary {
  error?: string;
}

export async function runDemo(
  work: string,
  targets: readonly TargetName[] = TARGET_NAMES,
  progress?: Progress,
): Promise<{ source: string; rows: DemoRow[] }> {
  const source = path.join(work, 'tiny-mllm');
  fs.mkdirSync(source, { recursive: true });
  writeTinyMllm(source);
  writeTinyMllmConfigs(source);
  const rows: DemoRow[] = [];
  for (const target of targets) {
    try {
      // The browser adapter of most machines lacks nothing; fp16 stays on (q4f16) as shipped.
      rows.push(artifactSummary(await compile(source, { target, out: path.join(work, target), imageSizes: [DEMO_IMAGE], progress })));
    } catch (e) {
      const partial = (e as { result?: CompileResult }).result;
      if (!(e instanceof CheckError)) throw e;
      rows.push({
        ...(partial
          ? artifactSummary(partial)
          : { target, files: 0, bytes: 0, models: 0, nodes: 0, ops: {}, minCosine: null, maxAbsError: null, passed: false, ms: 0 }),
        passed: false,
        error: e.message,
      });
    }
  }
  return { source, rows };
}

export const registerDemo: RegisterCommand = (program: Command, setExit) => {
  program
    .command('demo')
    .description('generate the bundled tiny MLLM and compile it for webgpu, npu and mobile; print sizes, ops and verification')
    .option('-o, --out <dir>', 'work folder to keep (default: a temporary folder, removed afterwards)')
    .option('--json', 'print the summary as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec demo                                # temporary folder, removed afterwards
  $ edgec demo -o /tmp/edgec-demo --json      # keep the artifacts; then: edgec run /tmp/edgec-demo/webgpu --prompt 'The cat'
`,
    )
    .action(async (o: { out?: string; json?: boolean }) => {
      if (o.out && fs.existsSync(o.out) && fs.readdirSync(o.out).length) throw new InputError('exists and is not empty', o.out);
      const work = o.out ? path.resolve(o.out) : fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-demo-'));
      try {
        const view = progressView({ json: o.json });
        let rows: DemoRow[];
        try {
          ({ rows } = await runDemo(work, TARGET_NAMES, view.progress));
        } finally {
          view.stop();
        }
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ work: o.out ? work : null, targets: rows }, null, 2)}\n`);
        } else {
          const t = [['target', 'models', 'files', 'size', 'nodes', 'top ops', 'min cosine', 'max abs', 'time', 'status']];
          for (const r of rows) {
            t.push([
              r.target,
              String(r.models),
              String(r.files),
              fmtBytes(r.bytes),
              String(r.nodes),
              Object.entries(r.ops)
                .slice(0, 3)
                .map(([k, v]) => `${k.replace('com.microsoft:', '')} ${v}`)
                .join(', '),
              r.minCosine === null ? '-' : r.minCosine.toFixed(5),
              r.maxAbsError === null ? '-' : r.maxAbsError.toExponential(2),
              `${(r.ms / 1000).toFixed(1)} s`,
              r.passed ? 'ok' : `FAIL: ${r.error ?? ''}`,
            ]);
          }
          process.stdout.write(
            `edgec demo: tiny MLLM (vision encoder, projector, embeddings, decoder + KV cache) -> ${rows.length} targets\n`,
          );
          process.stdout.write(`${table(t, '', [false, true, true, true, true, false, true, true, true, false]).join('\n')}\n`);
          if (o.out) process.stdout.write(`artifacts in ${work}\n`);
        }
        setExit(rows.every((r) => r.passed) ? 0 : 1);
      } finally {
        if (!o.out) fs.rmSync(work, { recursive: true, force: true });
      }
    });
};
