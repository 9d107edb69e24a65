// `npm run bench`: speed and memory as ratios measured in one run. Generates a >= 1 GB decoder with
// external weights (never committed), then measures each benchmark against its baseline.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeBigDecoder } from '../fixtures/big-decoder.js';
import { loadModel, saveModel } from '../ir/index.js';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { benchLoadSave } from './load-save.js';
import { benchQuantize, formatQuantizeBench } from './quantize.js';

const GB = 1e9;
const fmt = (x: number, d = 2) => x.toFixed(d);

async function main() {
  const target = Number(process.env.EDGEC_BENCH_BYTES ?? 1.1e9);
  const work = fs.mkdtempSync(path.join(process.env.EDGEC_BENCH_DIR ?? os.tmpdir(), 'edgec-bench-'));
  try {
    console.log(`generating a decoder of >= ${fmt(target / GB)} GB with external weights in ${work} ...`);
    const big = writeBigDecoder(path.join(work, 'model'), { targetBytes: target });
    console.log(`  ${big.config.layers} layers, ${fmt(big.weightBytes / GB, 3)} GB of fp32 weights`);

    const ls = benchLoadSave(big.modelFile, work);
    console.log('\nload + save (external data), median of 3');
    console.log(`  model size                 ${fmt(ls.modelBytes / GB, 3)} GB`);
    console.log(`  fs.copyFile baseline       ${fmt(ls.copyMs, 0)} ms`);
    console.log(`  edgec load+save            ${fmt(ls.loadSaveMs, 0)} ms   ratio to copy ${fmt(ls.ratioToCopy)}x (aim <= 2x)`);
    console.log(
      `  peak RSS                   ${fmt(ls.peakRssBytes / 2 ** 20, 0)} MiB = ${fmt(ls.rssFraction, 3)}x model size (aim <= 0.5x)`,
    );

    console.log('');
    const q = await benchQuantize({ modelFile: big.modelFile, work });
    for (const line of formatQuantizeBench(q)) console.log(line);

    // Most exports under 2 GB keep their weights inside the .onnx: the same decoder, embedded.
    const embBytes = Number(process.env.EDGEC_BENCH_EMBEDDED_BYTES ?? 0.4e9);
    console.log(`\ngenerating a decoder of >= ${fmt(embBytes / GB)} GB with its weights embedded in the .onnx ...`);
    const small = writeBigDecoder(path.join(work, 'embedded-src'), { targetBytes: embBytes });
    const embedded = path.join(work, 'embedded', 'model.onnx');
    saveModel(loadModel(small.modelFile), embedded, { externalData: false });
    fs.rmSync(path.dirname(small.modelFile), { recursive: true, force: true });
    const le = benchLoadSave(embedded, work);
    console.log('load + save (weights embedded, saved inline), median of 3');
    console.log(`  model size                 ${fmt(le.modelBytes / GB, 3)} GB`);
    console.log(`  fs.copyFile baseline       ${fmt(le.copyMs, 0)} ms`);
    console.log(`  edgec load+save            ${fmt(le.loadSaveMs, 0)} ms   ratio to copy ${fmt(le.ratioToCopy)}x (aim <= 2x)`);
    console.log(
      `  peak RSS                   ${fmt(le.peakRssBytes / 2 ** 20, 0)} MiB = ${fmt(le.rssFraction, 3)}x model size (aim <= 0.25x + 256 MB)`,
    );
    const qe = await benchQuantize({ modelFile: embedded, work, kernel: false });
    for (const line of formatQuantizeBench(qe)) console.log(line);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Pass benchmarks generate their own models; they run as separate processes after the above. */
function runScript(name: string): void {
  console.log('');
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), name);
  const r = spawnSync(process.execPath, [file], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${name} failed`);
}

main()
  .then(() => {
    runScript('core-passes.js');
    runScript('fusions.js');
    runScript('latency.js');
    runScript('methods.js');
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
