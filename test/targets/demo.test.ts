// `edgec demo`: the README's main command, all three targets in one run.
import { describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.js';

describe('edgec demo', () => {
  it('compiles the tiny MLLM for webgpu, npu and mobile and reports passing figures', async () => {
    let out = '';
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      out += String(s);
      return true;
    });
    let code: number;
    try {
      code = await main(['demo', '--json']);
    } finally {
      spy.mockRestore();
    }
    expect(code).toBe(0);
    const r = JSON.parse(out) as {
      targets: {
        target: string;
        passed: boolean;
        models: number;
        bytes: number;
        nodes: number;
        minCosine: number;
        maxAbsError: number;
        ms: number;
      }[];
    };
    expect(r.targets.map((t) => t.target)).toEqual(['webgpu', 'npu', 'mobile']);
    for (const t of r.targets) {
      console.log(
        `demo ${t.target}: ${t.models} models, ${t.bytes} B, ${t.nodes} nodes, min cos ${t.minCosine.toFixed(5)}, max|d| ${t.maxAbsError.toExponential(2)}, ${t.ms} ms`,
      );
      expect(t.passed).toBe(true);
      // Every target's decoder is measured on what `edgec run` feeds it (real embeddings, its KV
      // layout) and judged by KL, per call and through its own cache; the random-weight 4-bit
      // decoder's logits score cosine 0.97-0.98 there on every target (0.995 on N(0,1) embeddings).
      expect(t.minCosine).toBeGreaterThanOrEqual(0.97);
    }
    expect(r.targets.find((t) => t.target === 'npu')!.models).toBe(6);
  });
});
