// npm run eval-table [-- --model fixtures/lm --out DIR --blocks 32,128 --budgets 4.5bpw,5bpw]: quantize the
// trained LM with every method edgec has (read from its method registry), blocks, sym/asym and budgets,
// then `edgec eval` every result against the fp32 model and print a markdown table. Calibration takes
// test_data_set_0 and 1; the figures are measured on the other sets (held out from calibration too).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { allMethods } = await import(path.join(ROOT, 'dist/passes/quant/methods/index.js'));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const dir = path.resolve(arg('model', path.join(ROOT, 'fixtures/lm')));
const out = arg('out', fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-eval-table-')));
const blocks = arg('blocks', '32,128').split(',').map(Number);
const budgets = arg('budgets', '4.5bpw,5bpw').split(',').filter(Boolean);
const methods = (
  arg('methods', '') ||
  allMethods()
    .map((m) => m.name)
    .join(',')
).split(',');
// fixtures/lm keeps its weights packed in git (fixtures/lm-pack.ts): build model.onnx first.
const { LM_DIR, lmModel } = await import(path.join(ROOT, 'dist/fixtures/lm-pack.js'));
const model = dir === LM_DIR ? lmModel() : path.join(dir, 'model.onnx');
const sets = fs
  .readdirSync(dir)
  .filter((d) => /^test_data_set_\d+$/.test(d))
  .sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)));
const calib = path.join(out, 'calibration');
fs.mkdirSync(calib, { recursive: true });
for (const s of sets.slice(0, 2)) fs.cpSync(path.join(dir, s), path.join(calib, s), { recursive: true });
const evalSets = sets.slice(2).map((s) => path.join(dir, s));

function edgec(...args) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/main.js'), ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`edgec ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
}

const rows = [];
const runs = [];
for (const method of methods)
  for (const block of blocks)
    for (const sym of [true, false])
      runs.push({
        label: `${method} b${block} ${sym ? 'sym' : 'asym'}`,
        args: ['--method', method, '--block-size', String(block), sym ? '--sym' : '--asym'],
      });
for (const b of budgets) runs.push({ label: `budget ${b} (rtn, sym)`, args: ['--budget', b] });
for (const [i, r] of runs.entries()) {
  const file = path.join(out, `q${i}.onnx`);
  const t0 = Date.now();
  const q = edgec('quantize', model, '-o', file, '--calibration', calib, '--json', ...r.args);
  const weights = q.layers.reduce((s, l) => s + (l.sharedWith ? 0 : l.shape[0] * l.shape[1]), 0);
  const bytes = q.layers.reduce((s, l) => s + l.bytesAfter, 0);
  rows.push({ ...r, file, bytes, bpw: (8 * bytes) / weights, fileBytes: q.outputBytes, seconds: (Date.now() - t0) / 1000 });
  process.stderr.write(`${r.label}: ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
}
const e = edgec(
  'eval',
  '--model',
  model,
  ...rows.flatMap((r) => ['--candidate', r.file]),
  ...evalSets.flatMap((s) => ['--inputs', s]),
  '--json',
);
const f = (x, d) => `${x.value.toFixed(d)} ± ${x.stderr.toFixed(d)}`;
const lines = [
  `fp32: ${fs.statSync(model).size} bytes, perplexity ${f(e.reference.perplexity, 2)} on ${e.windows} held-out windows (${e.scored} tokens)`,
  '',
  '| method | weights (bytes) | bits/weight | file (bytes) | perplexity | delta ppl | KL (nats) | top-1 |',
  '|---|---:|---:|---:|---:|---:|---:|---:|',
  ...rows.map((r, i) => {
    const c = e.candidates[i];
    return `| ${r.label} | ${r.bytes} | ${r.bpw.toFixed(3)} | ${r.fileBytes} | ${f(c.perplexity, 2)} | ${f(c.perplexityDelta, 2)} | ${c.kl.value.toExponential(2)} ± ${c.kl.stderr.toExponential(1)} | ${f(c.top1, 4)} |`;
  }),
];
process.stdout.write(`${lines.join('\n')}\n`);
