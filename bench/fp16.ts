// `node dist/bench/fp16.js DIR [--artifact A] [--quant int4]`: which q4f16 figure is true. DIR holds model.onnx
// and test_data_set_K/ (bench/fp16/make_vit_b16.py writes a ViT-B/16 one). The model is compiled for
// webgpu twice (q4f16 and q4 with fp32 activations); each artifact runs in onnxruntime at graph
// optimization disabled, basic and all, and the fp16 one also through the exact fp16 emulation
// (runtime/fp16.ts). Figures per output: cosine to the fp32 source and top-1 agreement.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, type Tensor } from '../ir/index.js';
import { compile, type CompileOptions } from '../targets/compile.js';
import { compareTensors, loadInputsDir, runModel } from '../runtime/ort.js';
import { parsePipeline, runPipeline } from '../passes/manager.js';
import { saveModel } from '../ir/index.js';

/** Run an fp16 model file through its exact fp16 emulation (passes/emulate-fp16.ts). */
async function runEmulated(file: string, sets: Record<string, Tensor>[], outName: string): Promise<Tensor[]> {
  const m = loadModel(file);
  await runPipeline(m, parsePipeline('emulate-fp16'));
  const tmp = path.join(path.dirname(file), `.emu-${process.pid}.onnx`);
  saveModel(m, tmp, { externalData: false, reuseExternal: true });
  try {
    const outs: Tensor[] = [];
    for (const s of sets) outs.push((await runModel(tmp, s))[outName]!);
    return outs;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

function argmax(t: Tensor, row: number, width: number): number {
  const v = t.toNumbers();
  let best = 0;
  for (let j = 1; j < width; j++) if (v[row * width + j]! > v[row * width + best]!) best = j;
  return best;
}

interface Figure {
  cosine: number;
  top1: number;
  nonFinite: boolean;
}

function score(refs: Tensor[], outs: Tensor[]): Figure {
  let cos = 0,
    agree = 0,
    rows = 0,
    nonFinite = false;
  refs.forEach((r, i) => {
    const o = outs[i]!;
    cos += compareTensors(r, o).cosine;
    if (o.toNumbers().some((x) => !Number.isFinite(x))) nonFinite = true;
    const width = r.dims.at(-1)!,
      n = r.size / width;
    for (let k = 0; k < n; k++, rows++) if (argmax(r, k, width) === argmax(o, k, width)) agree++;
  });
  return { cosine: cos / refs.length, top1: agree / Math.max(rows, 1), nonFinite };
}

async function main() {
  const args = process.argv.slice(2);
  const dir = path.resolve(args[0] ?? '');
  if (!args[0] || !fs.existsSync(path.join(dir, 'model.onnx'))) {
    console.log('usage: node dist/bench/fp16.js DIR (DIR/model.onnx and DIR/test_data_set_K; bench/fp16/make_vit_b16.py writes one)');
    return;
  }
  const src = path.join(dir, 'model.onnx');
  const model = loadModel(src);
  const sets = fs
    .readdirSync(dir)
    .filter((f) => /^test_data_set_\d+$/.test(f))
    .sort()
    .map((f) => loadInputsDir(path.join(dir, f), model));
  const outName = model.graph.outputs[0]!.name;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fp16-'));
  const refs: Tensor[] = [];
  for (const s of sets) refs.push((await runModel(src, s))[outName]!);
  const rows: [string, Figure][] = [];
  try {
    // --artifact A: evaluate an artifact compiled elsewhere (e.g. by an older edgec) as the q4f16 one.
    const given = args.indexOf('--artifact') >= 0 ? path.resolve(args[args.indexOf('--artifact') + 1]!) : undefined;
    // --quant int4: 4-bit weights whatever the role (a classifier or vision encoder keeps fp16 weights by default).
    const quant = args.indexOf('--quant') >= 0 ? (args[args.indexOf('--quant') + 1] as CompileOptions['quant']) : undefined;
    for (const fp16 of given ? [true] : [true, false]) {
      const out = given ?? path.join(work, fp16 ? 'q4f16' : 'q4');
      if (!given) {
        const t0 = performance.now();
        const r = await compile(src, { target: 'webgpu', out, fp16, verify: false, ...(quant ? { quant } : {}) });
        const to16 = r.report.models[0]!.steps.find((s) => s.pass === 'to-fp16');
        console.log(
          `compiled ${fp16 ? 'q4f16' : 'q4 (fp32 activations)'} in ${((performance.now() - t0) / 1000).toFixed(1)} s${to16 ? `: to-fp16 ${JSON.stringify(to16.counts)}` : ''}`,
        );
      }
      const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as { models: { file: string }[] };
      const file = path.join(out, manifest.models[0]!.file);
      for (const level of ['disabled', 'basic', 'all'] as const) {
        const outs: Tensor[] = [];
        for (const s of sets) outs.push((await runModel(file, s, { graphOptimizationLevel: level }))[outName]!);
        rows.push([`${fp16 ? 'q4f16' : 'q4   '} onnxruntime ${level}`, score(refs, outs)]);
      }
      if (fp16) {
        const outs = await runEmulated(file, sets, outName);
        rows.push(['q4f16 exact fp16 emulation', score(refs, outs)]);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  console.log(`\n${sets.length} input sets, output '${outName}', against the fp32 source in onnxruntime`);
  for (const [k, f] of rows)
    console.log(
      `  ${k.padEnd(32)} cosine ${f.cosine.toFixed(6)}  top-1 ${(100 * f.top1).toFixed(0).padStart(3)}%${f.nonFinite ? '  (non-finite outputs)' : ''}`,
    );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
