// Core pass speed and memory on a >= 1 GB decoder with external weights: ms per pass against the
// model's load time (baseline), and peak RSS against the weight bytes (the passes must not pull
// external weights into memory). Run: npx tsc -p . && node dist/bench/core-passes.js
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeBigDecoder } from '../fixtures/big-decoder.js';
import { loadModel } from '../ir/index.js';
import { parsePipeline, runPipeline } from '../passes/manager.js';

async function main() {
  const target = Number(process.env.EDGEC_BENCH_BYTES ?? 1.1e9);
  const work = fs.mkdtempSync(path.join(process.env.EDGEC_BENCH_DIR ?? os.tmpdir(), 'edgec-core-bench-'));
  try {
    const big = writeBigDecoder(path.join(work, 'model'), { targetBytes: target });
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const model = loadModel(big.modelFile);
    const loadMs = performance.now() - t0;
    let peak = process.memoryUsage().rss;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    const reports = await runPipeline(model, parsePipeline('cleanup,infer-shapes,fold-constants,cleanup,infer-shapes'), {
      verifyEach: true,
    });
    clearInterval(timer);
    peak = Math.max(peak, process.memoryUsage().rss);
    console.log(
      `decoder: ${big.config.layers} layers, ${(big.weightBytes / 1e9).toFixed(3)} GB weights; load ${loadMs.toFixed(0)} ms (baseline)`,
    );
    for (const r of reports) {
      console.log(
        `  ${r.pass.padEnd(15)} ${String(r.nodesBefore).padStart(6)} -> ${String(r.nodesAfter).padEnd(6)} ${r.ms.toFixed(0).padStart(6)} ms  ${(r.ms / loadMs).toFixed(2)}x load`,
      );
    }
    console.log(
      `  peak RSS growth ${((peak - rss0) / 2 ** 20).toFixed(0)} MiB = ${((peak - rss0) / big.weightBytes).toFixed(3)}x weight bytes`,
    );
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
