// `edgec build`: a release build from edgec.config.json (cache, shards, merge, summary JSON).
import fs from 'node:fs';
import type { Command } from 'commander';
import { InputError } from '../../ir/index.js';
import { build, DEFAULT_CONFIG, mergeShards, parseShard, type BuildResult } from '../../targets/build.js';
import { fmtBytes, table } from '../format.js';
import { paint, progressView } from '../progress.js';
import type { RegisterCommand } from './index.js';

interface BuildCliOpts {
  config: string;
  only: string[];
  shard?: string;
  merge?: boolean;
  json?: boolean;
}

const collect = (v: string, prev: string[]) => [
  ...prev,
  ...v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
];

function print(r: BuildResult, merged: boolean): void {
  const rows = [['item', 'status', 'size', 'min cos', 'time']];
  for (const x of r.outcomes) {
    const s = x.record.summary;
    const status = merged
      ? x.record.passed
        ? 'passed'
        : 'FAILED'
      : x.status === 'built'
        ? 'built'
        : x.status === 'cached'
          ? x.record.passed
            ? 'cached'
            : 'cached FAIL'
          : x.status === 'failed'
            ? 'FAILED'
            : 'bad input';
    rows.push([
      x.record.id,
      status,
      s ? fmtBytes(s.bytes) : '-',
      s?.minCosine != null ? s.minCosine.toFixed(5) : '-',
      merged ? '-' : `${(x.ms / 1000).toFixed(1)} s`,
    ]);
  }
  const lines = table(rows, '', [false, false, true, true, true]);
  process.stdout.write(`${lines.map((l, i) => (i > 0 && !r.outcomes[i - 1]!.record.passed ? paint(l, 'red') : l)).join('\n')}\n`);
  for (const x of r.outcomes) if (!x.record.passed) process.stdout.write(`  ${x.record.id}: ${x.record.error ?? 'failed'}\n`);
  const built = r.outcomes.filter((x) => x.status === 'built' || x.status === 'failed').length;
  const cached = r.outcomes.filter((x) => x.status === 'cached').length;
  const failed = r.summary.items.filter((i) => !i.passed).length;
  const verdict = failed ? paint(`${failed} failed`, 'red') : paint('all passed', 'green');
  process.stdout.write(
    merged
      ? `merged ${r.summary.items.length} items: ${verdict} -> ${r.summaryFile}\n`
      : `${r.outcomes.length} items: ${built} built, ${cached} unchanged, ${verdict} -> ${r.summaryFile}\n`,
  );
}

export const registerBuild: RegisterCommand = (program: Command, setExit) => {
  program
    .command('build')
    .description('release build: compile every model x target of edgec.config.json, skipping unchanged items (content-hash cache)')
    .option('--config <file>', 'build config (JSON schema: edgec.config.schema.json)', DEFAULT_CONFIG)
    .option('--only <name>', 'only items whose model, target or model/target id matches (repeatable, comma-separated)', collect, [])
    .option('--shard <i/n>', 'build shard i of n (every n-th item of the sorted list), for a CI matrix')
    .option('--merge', 'join the gathered shard summaries into build-summary.json and index.html')
    .option('--json', 'print the summary as JSON (no progress bars)')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec build                                   # everything in ./edgec.config.json; unchanged items are skipped
  $ edgec build --only webgpu                     # one target of every model
  $ edgec build --config release/edgec.config.json --shard 2/4 --json   # one job of a 4-way CI matrix
  $ edgec build --merge                           # after copying every shard's build folder into one

Config (editors complete it from edgec.config.schema.json):
  { "$schema": "./node_modules/edgec/edgec.config.schema.json", "out": "edgec-out",
    "models":  [{ "name": "tiny", "path": "models/tiny-mllm", "calibration": "calib/tiny" }],
    "targets": [{ "target": "webgpu" }, { "target": "npu", "options": { "imageSizes": ["448x448"] } }] }

Exit codes: 0 every item passed, 1 an item failed a check, 2 bad config or input.`,
    )
    .action(async (o: BuildCliOpts) => {
      if (o.merge && (o.shard || o.only.length))
        throw new InputError('--merge takes no --shard or --only: it joins the shards already built');
      if (!fs.existsSync(o.config))
        throw new InputError(`no such file (write one, or pass --config FILE; schema: edgec.config.schema.json)`, o.config);
      let r: BuildResult;
      if (o.merge) r = mergeShards(o.config);
      else {
        const view = progressView({ json: o.json });
        try {
          r = await build(o.config, { only: o.only, shard: o.shard ? parseShard(o.shard) : undefined, progress: view.progress });
        } finally {
          view.stop();
        }
      }
      if (o.json) {
        process.stdout.write(
          `${JSON.stringify({ summary: r.summary, summaryFile: r.summaryFile, items: r.outcomes.map((x) => ({ id: x.record.id, status: x.status, ms: x.ms })) }, null, 2)}\n`,
        );
      } else print(r, !!o.merge);
      setExit(r.exitCode);
    });
};
