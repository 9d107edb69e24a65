// `edgec eval`: perplexity, KL and top-1 of quantized candidates, checked against the same figures
// computed here from onnxruntime's logits by hand, and against torch's perplexity of the trained LM.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../ir/index.js';
import { lmModel } from '../../fixtures/lm-pack.js';
import { evaluateLm } from '../../runtime/eval.js';
import { loadInputs } from '../../runtime/inputs.js';
import { toOrtTensor } from '../../runtime/ort.js';
import { loadTokenizer } from '../../runtime/tokenizer.js';
import { ROOT, cli, tmpDir } from './helpers.js';

const { Tokenizer: RustTokenizer } = createRequire(import.meta.url)('tokenizers') as typeof import('tokenizers');

const dir = tmpDir('eval');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const DEC = path.join(ROOT, 'fixtures/export/decoder_nokv');

interface Hand {
  ppl: number;
  pplRef: number;
  kl: number;
  top1: number;
}

/** The figures by hand: log-softmax in float64 of each real position, padding (mask 0) skipped. */
async function byHand(ref: string, cand: string, inputs: string): Promise<Hand> {
  const sets = loadInputs(loadModel(ref), { inputs: [inputs] }).sets;
  const sr = await ort.InferenceSession.create(ref),
    sc = await ort.InferenceSession.create(cand);
  let nllR = 0,
    nllC = 0,
    n = 0,
    kl = 0,
    agree = 0,
    pos = 0;
  const logSoftmax = (d: Float32Array, off: number, V: number) => {
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, d[off + i]!);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(d[off + i]! - m);
    return Array.from({ length: V }, (_, i) => d[off + i]! - m - Math.log(s));
  };
  const argmax = (xs: number[]) => xs.indexOf(Math.max(...xs));
  for (const s of sets) {
    const feeds = Object.fromEntries(sr.inputNames.map((k) => [k, toOrtTensor(s[k]!)]));
    const a = (await sr.run(feeds)).logits!,
      b = (await sc.run(feeds)).logits!;
    const [B, S, V] = a.dims as number[];
    const ids = s.input_ids!.toNumbers(),
      mask = s.attention_mask!.toNumbers();
    for (let r = 0; r < B!; r++)
      for (let t = 0; t < S!; t++) {
        if (!mask[r * S! + t]) continue;
        const lp = logSoftmax(a.data as Float32Array, (r * S! + t) * V!, V!),
          lq = logSoftmax(b.data as Float32Array, (r * S! + t) * V!, V!);
        kl += lp.reduce((acc, x, i) => acc + Math.exp(x) * (x - lq[i]!), 0);
        if (argmax(lp) === argmax(lq)) agree++;
        pos++;
        if (t + 1 < S! && mask[r * S! + t + 1]) {
          const next = ids[r * S! + t + 1]!;
          nllR -= lp[next]!;
          nllC -= lq[next]!;
          n++;
        }
      }
  }
  return { ppl: Math.exp(nllC / n), pplRef: Math.exp(nllR / n), kl: kl / pos, top1: agree / pos };
}

describe('edgec eval', () => {
  it('reports the perplexity, delta, KL and top-1 computed by hand from onnxruntime logits, with window noise', async () => {
    const q = path.join(dir, 'q4.onnx');
    expect((await cli('quantize', path.join(DEC, 'model.onnx'), '-o', q, '--block-size', '32')).code).toBe(0);
    const r = await cli('eval', '--model', path.join(DEC, 'model.onnx'), '--candidate', q, '--inputs', DEC, '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    const h = await byHand(path.join(DEC, 'model.onnx'), q, DEC);
    expect(j.reference.perplexity.value).toBeCloseTo(h.pplRef, 6);
    const c = j.candidates[0];
    expect(c.perplexity.value).toBeCloseTo(h.ppl, 6);
    expect(c.perplexityDelta.value).toBeCloseTo(h.ppl - h.pplRef, 6);
    expect(c.kl.value).toBeCloseTo(h.kl, 8);
    expect(c.top1.value).toBeCloseTo(h.top1, 10);
    // 3 sets, one of them batch 2 with a padded row: 4 windows; the row's 8 padded positions are not scored.
    expect(j.windows).toBe(4);
    expect(j.positions).toBe(64 + 40 + 32 + 128);
    expect(j.scored).toBe(63 + 39 + 31 + 127);
    for (const f of [c.perplexity, c.perplexityDelta, c.kl, c.top1]) expect(f.stderr).toBeGreaterThan(0);
    // Paired windows: the delta's noise is below either perplexity's own.
    expect(c.perplexityDelta.stderr).toBeLessThan(c.perplexity.stderr);
  }, 120_000);

  it('refuses bad input with exit 2 and one line', async () => {
    const m = path.join(DEC, 'model.onnx');
    const bad = path.join(dir, 'bad-ids.txt');
    fs.writeFileSync(bad, '1 2 x\n');
    for (const args of [
      ['--candidate', m, '--inputs', DEC],
      ['--model', m],
      ['--model', m, '--tokens', bad],
      ['--model', path.join(dir, 'missing.onnx'), '--inputs', DEC],
      ['--model', m, '--inputs', DEC, '--bootstrap', '-3'],
    ]) {
      const r = await cli('eval', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  }, 60_000);
});

describe('the trained LM (fixtures/lm)', () => {
  const LM = path.join(ROOT, 'fixtures/lm');
  it("eval's perplexity of the held-out windows equals torch's, and its tokenizer reads back what it encodes", async () => {
    const meta = JSON.parse(fs.readFileSync(path.join(LM, 'meta.json'), 'utf8'));
    const r = await cli('eval', '--model', lmModel(), '--tokens', path.join(LM, 'windows.txt'), '--json', '--bootstrap', '0');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.windows).toBe(32);
    expect(j.scored).toBe(32 * 127);
    expect(j.reference.perplexity.value / meta.training.windows_perplexity_torch).toBeCloseTo(1, 4);
    // Trained: far below the uniform perplexity of its vocabulary.
    expect(j.reference.perplexity.value).toBeLessThan(meta.config.vocab / 4);
    const tok = loadTokenizer(LM)!;
    const text = 'Permission is hereby granted, free of charge, to any person obtaining a copy of this software.';
    const ids = tok.encode(text, false);
    expect(ids.length).toBeLessThan(text.length / 2);
    expect(Math.max(...ids)).toBeLessThan(meta.config.vocab);
    expect(tok.decode(ids)).toBe(text);
  }, 120_000);

  it('awq and awq+gptq (scales folded into the norms) stay at or below rtn KL on held-out windows', async () => {
    // Calibration handed out fresh samples per activation while awq-fold looked its scaled rows up by
    // the sample object: the folded weights lost their rows and KL went 10x over rtn's (1.1e-2).
    const cal = path.join(dir, 'lm-cal');
    for (const s of ['test_data_set_0', 'test_data_set_1']) fs.cpSync(path.join(LM, s), path.join(cal, s), { recursive: true });
    const out = (m: string) => path.join(dir, `lm-${m.replace('+', '-')}.onnx`);
    for (const m of ['rtn', 'awq', 'awq+gptq']) {
      const r = await cli('quantize', lmModel(), '-o', out(m), '--method', m, '--block-size', '32', '--calibration', cal);
      expect(r.code, r.stderr).toBe(0);
    }
    const held = ['test_data_set_2', 'test_data_set_3'].map((s) => path.join(LM, s));
    const e = await evaluateLm(lmModel(), ['rtn', 'awq', 'awq+gptq'].map(out), { inputs: held, bootstrap: 0 });
    const [rtn, awq, both] = e.candidates.map((c) => c.kl.value);
    // Measured: rtn 1.2e-3, awq 1.2e-3, awq+gptq 3.6e-4.
    expect(awq!).toBeLessThan(1.1 * rtn!);
    expect(both!).toBeLessThan(0.5 * rtn!);
  }, 180_000);

  it('--tokens takes text, one sequence per line, encoded with the tokenizer.json beside the model as the Rust tokenizers crate does', async () => {
    const work = path.join(dir, 'tokens-text');
    fs.mkdirSync(work, { recursive: true });
    const lines = [
      'Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated documentation files.',
      'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES.',
      'You should have received a copy of the GNU General Public License along with this program; if not, write to the Free Software Foundation.',
    ];
    const textFile = path.join(work, 'prompts.txt');
    fs.writeFileSync(textFile, lines.join('\n') + '\n');
    const ref = RustTokenizer.fromFile(path.join(LM, 'tokenizer.json'));
    const want: number[][] = [];
    for (const l of lines) want.push((await ref.encode(l, null, { addSpecialTokens: true })).getIds());
    const idsFile = path.join(work, 'ids.txt');
    fs.writeFileSync(idsFile, want.map((s) => s.join(' ')).join('\n'));
    const model = loadModel(lmModel());
    const fed = loadInputs(model, { tokens: textFile }).sets.map((s) => Array.from(s.input_ids!.toNumbers()));
    expect(fed).toEqual(want);
    expect(Math.min(...want.map((s) => s.length))).toBeGreaterThan(16);
    // The same figures from the text as from the reference ids.
    const evalOf = async (f: string) => {
      const r = await cli('eval', '--model', lmModel(), '--tokens', f, '--json', '--bootstrap', '0');
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { scored: number; reference: { perplexity: { value: number } } };
    };
    const [fromText, fromIds] = [await evalOf(textFile), await evalOf(idsFile)];
    expect(fromText.scored).toBe(want.reduce((a, s) => a + s.length - 1, 0));
    expect(fromText.reference.perplexity.value).toBe(fromIds.reference.perplexity.value);
    // Text with no tokenizer beside the model or the file: exit 2, one line naming the fix.
    const bare = path.join(work, 'bare');
    fs.mkdirSync(bare);
    fs.copyFileSync(lmModel(), path.join(bare, 'model.onnx'));
    const r = await cli('eval', '--model', path.join(bare, 'model.onnx'), '--tokens', textFile);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/prompts\.txt.*holds text, but no tokenizer\.json .*give token ids/);
  }, 120_000);
});
