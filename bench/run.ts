// `npm run bench`: speed and memory as ratios measured in one run. Generates a >= 1 GB decoder with
// external weights (never committed), then measures each benchmark against its baseline.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeBigDecoder } from '../fixtures/big-decoder.js';
import { benchLoadSave } from './load-save.js';

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
    console.log(`  peak RSS                   ${fmt(ls.peakRssBytes / 2 ** 20, 0)} MiB = ${fmt(ls.rssFraction, 3)}x model size (aim <= 0.5x)`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
