// The CLI on the bundled tiny MLLM: inspect names each sub-model's role; convert + verify round-trip.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { summarize } from '../../ir/index.js';
import { TinyMllmRole, decoder, writeTinyMllm } from '../../fixtures/tiny-mllm.js';
import { cli, tmpDir } from './helpers.js';

const dir = tmpDir('tiny');
let files: Record<TinyMllmRole, string>;
beforeAll(() => {
  files = writeTinyMllm(dir);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const EXPECTED: Record<TinyMllmRole, string> = {
  vision_encoder: 'vision-encoder',
  projector: 'projector',
  embed_tokens: 'embeddings',
  decoder: 'decoder',
};

describe('tiny MLLM', () => {
  it('inspect names the role of each sub-model', async () => {
    for (const role of Object.keys(EXPECTED) as TinyMllmRole[]) {
      const r = await cli('inspect', files[role], '--json');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).role.role, role).toBe(EXPECTED[role]);
    }
  });

  it('a decoder without KV cache is still a decoder (by its logits)', () => {
    const s = summarize(decoder({}, { kvCache: false }));
    expect(s.role.role).toBe('decoder');
    expect(s.role.evidence).toHaveLength(1);
    expect(s.role.evidence[0]).toMatch(/logits/);
  });

  it('reports the decoder KV cache as dynamic dims', async () => {
    const j = JSON.parse((await cli('inspect', files.decoder, '--json')).stdout);
    expect(j.dynamic.symbols).toEqual(['batch', 'past_seq', 'seq', 'total_seq']);
    expect(j.inputs.filter((v: { name: string }) => v.name.startsWith('past_key_values')).length).toBe(4);
    expect(j.outputs[0]).toEqual({ name: 'logits', dtype: 'float32', shape: ['batch', 'seq', 512] });
  });

  it('decoder converted to external data verifies with identical outputs', async () => {
    const ext = path.join(dir, 'ext', 'decoder.onnx');
    expect((await cli('convert', files.decoder, '-o', ext, '--external-data')).code).toBe(0);
    const r = await cli('verify', files.decoder, ext, '--dim', 'seq=3', '--dim', 'past_seq=2', '--dim', 'total_seq=5', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.outputs.map((o: { name: string }) => o.name)).toEqual([
      'logits',
      'present.0.key',
      'present.0.value',
      'present.1.key',
      'present.1.value',
    ]);
    for (const o of j.outputs) expect(o).toMatchObject({ cosine: 1, maxAbsError: 0, shapeMatch: true });
    expect(j.inputs.find((i: { name: string }) => i.name === 'attention_mask').shape).toEqual([1, 5]);
  });
});
