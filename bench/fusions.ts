// Fusion pass speed on deep fixture models (32-layer decoder, 24-layer vision encoder; tiny widths,
// the graph size is what matters): ms per pass and nodes per ms, against infer-shapes on the same
// graph as the baseline. Run: npx tsc -p . && node dist/bench/fusions.js
import { decoder, visionEncoder } from '../fixtures/tiny-mllm.js';
import type { Model } from '../ir/index.js';
import { parsePipeline, runPipeline } from '../passes/manager.js';
import { DEFAULT_PIPELINE } from '../passes/pipelines.js';

async function bench(name: string, make: () => Model): Promise<void> {
  await runPipeline(make(), parsePipeline(DEFAULT_PIPELINE)); // warm-up (JIT)
  const model = make();
  const reports = await runPipeline(model, parsePipeline(DEFAULT_PIPELINE));
  // Baseline: the infer-shapes run right before the fusions, on the same graph they see.
  const infer = reports[reports.findIndex((r) => r.pass === 'gemm-to-matmul-add') - 1]!.ms;
  console.log(`${name}: ${reports[0]!.nodesBefore} nodes -> ${reports.at(-1)!.nodesAfter}; infer-shapes ${infer.toFixed(1)} ms (baseline)`);
  for (const r of reports.filter((x) => x.pass.startsWith('fuse') || x.pass.startsWith('gemm'))) {
    const fused =
      Object.entries(r.stats.counts)
        .filter(([, v]) => v)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || '-';
    console.log(
      `  ${r.pass.padEnd(20)} ${r.ms.toFixed(1).padStart(7)} ms  ${(r.nodesBefore / Math.max(r.ms, 1e-3)).toFixed(0).padStart(7)} nodes/ms  ${(r.ms / infer).toFixed(2)}x infer-shapes  (${fused})`,
    );
  }
}

async function main() {
  await bench('decoder, 32 layers', () => decoder({ text: { layers: 32 } }));
  await bench('vision encoder, 24 layers', () => visionEncoder({ vision: { layers: 24 } }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
