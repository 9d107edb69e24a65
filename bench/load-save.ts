// Load then save of a model, against fs.copyFile of the same bytes in the same run; peak RSS of the
// load+save process as a fraction of the model size. External-data models are saved with external
// data, embedded-weight ones inline, as `convert` would.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModel, saveModel } from '../ir/index.js';
import { peakRss } from './quantize.js';

export interface LoadSaveResult {
  modelBytes: number;
  copyMs: number;
  loadSaveMs: number;
  ratioToCopy: number;
  peakRssBytes: number;
  rssFraction: number;
}

function dirBytes(files: string[]): number {
  return files.reduce((s, f) => s + fs.statSync(f).size, 0);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Runs in a child so its peak RSS is its own. */
function childLoadSave(model: string, outDir: string, inline: boolean): { ms: number; maxRss: number } {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [self, model, outDir, inline ? 'inline' : 'external'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`load+save child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

export function benchLoadSave(modelFile: string, work: string, runs = 3): LoadSaveResult {
  const srcDir = path.dirname(modelFile);
  const files = fs.readdirSync(srcDir).map((f) => path.join(srcDir, f));
  const modelBytes = dirBytes(files);
  const inline = files.length === 1;
  const copyMs: number[] = [],
    lsMs: number[] = [];
  let maxRss = 0;
  for (let i = 0; i < runs; i++) {
    const copyDir = path.join(work, `copy-${i}`);
    fs.mkdirSync(copyDir, { recursive: true });
    const t0 = performance.now();
    for (const f of files) fs.copyFileSync(f, path.join(copyDir, path.basename(f)));
    copyMs.push(performance.now() - t0);
    fs.rmSync(copyDir, { recursive: true, force: true });

    const outDir = path.join(work, `save-${i}`);
    const r = childLoadSave(modelFile, outDir, inline);
    lsMs.push(r.ms);
    maxRss = Math.max(maxRss, r.maxRss);
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  const c = median(copyMs),
    l = median(lsMs);
  return { modelBytes, copyMs: c, loadSaveMs: l, ratioToCopy: l / c, peakRssBytes: maxRss, rssFraction: maxRss / modelBytes };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [model, outDir, layout] = process.argv.slice(2) as [string, string, string];
  const t0 = performance.now();
  const m = loadModel(model);
  saveModel(m, path.join(outDir, 'model.onnx'), { externalData: layout !== 'inline' });
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ ms, maxRss: peakRss() }));
}
