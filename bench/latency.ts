// Artifacts faster than their source, measured in one run:
//  (a) a decoder big enough that weights dominate (TinyLlama shapes, EDGEC_LATENCY_BYTES of fp32
//      weights, default 0.6 GB) compiled for mobile; decode-step latency at past 128 and 512 and a
//      128-token prefill in onnxruntime-node (CPU EP, 2 threads), artifact against the fp32 source;
//  (b) a small decoder compiled for webgpu (fp32 activations: SwiftShader has no shader-f16) against
//      the unfused fp32 model, both on onnxruntime-web's WebGPU EP in headless Chromium.
// Medians of several runs after a warm-up; ratios are source / artifact (above 1: the artifact is faster).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../ir/index.js';
import { writeBigDecoder } from '../fixtures/big-decoder.js';
import { compile } from '../targets/compile.js';
import type { Manifest } from '../targets/manifest.js';
import { bindInputs } from '../targets/profile.js';
import { randomInputs } from '../runtime/ort.js';
import { timeNode } from '../runtime/profile.js';
import { CHROMIUM_PATH, WebGpuBrowser } from '../runtime/webgpu-browser.js';

const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;

interface Case {
  name: string;
  seq: number;
  past: number;
}
const CASES: Case[] = [
  { name: 'decode step, past 128', seq: 1, past: 128 },
  { name: 'decode step, past 512', seq: 1, past: 512 },
  { name: 'prefill 128 tokens', seq: 128, past: 0 },
];

function feedsFor(file: string, c: Case) {
  const model = loadModel(file);
  return randomInputs(model, { dims: bindInputs(model, { seq: c.seq, past: c.past, image: { width: 448, height: 448 } }), intHigh: 8 });
}

// The manifest says where each sub-model lies (webgpu writes transformers.js's onnx/ folder).
function artifactDecoder(dir: string): string {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  const f = manifest.models.find((m) => m.role === 'decoder')?.file;
  if (!f) throw new Error(`no decoder in artifact ${dir}`);
  return path.join(dir, f);
}

async function mobile(work: string): Promise<void> {
  const bytes = Number(process.env.EDGEC_LATENCY_BYTES ?? 6e8);
  const big = writeBigDecoder(path.join(work, 'src'), { targetBytes: bytes });
  console.log(
    `mobile: decoder of ${(big.weightBytes / 1e9).toFixed(2)} GB fp32 (${big.config.layers} layers, hidden ${big.config.hidden}), compiling ...`,
  );
  const t0 = performance.now();
  await compile(big.modelFile, { target: 'mobile', out: path.join(work, 'mobile'), verify: false });
  console.log(`  compiled in ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
  const art = artifactDecoder(path.join(work, 'mobile'));
  const size = (f: string) =>
    fs
      .readdirSync(path.dirname(f))
      .filter((x) => x.startsWith(path.basename(f)))
      .reduce((s, x) => s + fs.statSync(path.join(path.dirname(f), x)).size, 0);
  console.log(`  files: source ${(size(big.modelFile) / 1e9).toFixed(2)} GB, artifact ${(size(art) / 1e9).toFixed(3)} GB`);
  console.log('  onnxruntime-node CPU EP, 2 threads, median of 5 after a warm-up');
  for (const c of CASES) {
    const src = median(await timeNode(big.modelFile, feedsFor(big.modelFile, c), { runs: 5, intraOpNumThreads: 2 }));
    const out = median(await timeNode(art, feedsFor(art, c), { runs: 5, intraOpNumThreads: 2 }));
    console.log(
      `  ${c.name.padEnd(24)} fp32 source ${src.toFixed(1).padStart(8)} ms   mobile artifact ${out.toFixed(1).padStart(7)} ms   ratio ${(src / out).toFixed(2)}x${c.past === 512 ? ' (aim >= 2x)' : ''}`,
    );
  }
}

async function webgpu(work: string): Promise<void> {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    console.log('webgpu: skipped (no chromium)');
    return;
  }
  const text = { hidden: 512, heads: 8, kvHeads: 2, headDim: 64, intermediate: 1408, vocab: 8000 };
  const small = writeBigDecoder(path.join(work, 'wsrc'), { targetBytes: Number(process.env.EDGEC_LATENCY_WEBGPU_BYTES ?? 4e7), text });
  console.log(
    `\nwebgpu: decoder of ${(small.weightBytes / 1e6).toFixed(0)} MB fp32 (${small.config.layers} layers, hidden 512), compiling --no-fp16 ...`,
  );
  await compile(small.modelFile, { target: 'webgpu', out: path.join(work, 'webgpu'), verify: false, fp16: false, profile: 'swiftshader' });
  const art = artifactDecoder(path.join(work, 'webgpu'));
  const ext = (f: string) => fs.readdirSync(path.dirname(f)).filter((x) => x.startsWith(path.basename(f)) && x !== path.basename(f));
  const browser = await WebGpuBrowser.launch();
  try {
    console.log('  onnxruntime-web WebGPU EP on SwiftShader, wall time per run, median of 3 after a warm-up');
    for (const c of CASES.slice(1)) {
      const src = median(
        (
          await browser.profile(small.modelFile, feedsFor(small.modelFile, c), {
            ep: 'webgpu',
            runs: 3,
            externalData: ext(small.modelFile),
          })
        ).wallMs,
      );
      const out = median((await browser.profile(art, feedsFor(art, c), { ep: 'webgpu', runs: 3, externalData: ext(art) })).wallMs);
      console.log(
        `  ${c.name.padEnd(24)} fp32 unfused ${src.toFixed(1).padStart(8)} ms   webgpu artifact ${out.toFixed(1).padStart(7)} ms   ratio ${(src / out).toFixed(2)}x`,
      );
    }
  } finally {
    await browser.close();
  }
}

async function main() {
  const work = fs.mkdtempSync(path.join(process.env.EDGEC_BENCH_DIR ?? os.tmpdir(), 'edgec-latency-'));
  try {
    console.log('artifact vs source latency');
    await mobile(work);
    await webgpu(work);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
