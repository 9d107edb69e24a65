// The tokenizer behind `edgec run --prompt` against Hugging Face's Rust `tokenizers` (its Node
// binding, the library that defines tokenizer.json): the same ids for every text, with and without
// special tokens, and the same decoded text, on byte-level BPE files laid out as Llama 3's and Qwen2's.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../ir/index.js';
import { TINY_SPECIAL, byteLevelTokenizer, type TokenizerStyle } from '../../fixtures/tiny-tokenizer.js';
import { writeTinyMllmConfigs } from '../../fixtures/tiny-mllm.js';
import { Random } from '../../fixtures/random.js';
import { loadTokenizer } from '../../runtime/tokenizer.js';
import { tempDir } from './helpers.js';

const { Tokenizer: RustTokenizer } = createRequire(import.meta.url)('tokenizers') as typeof import('tokenizers');

const FIXED = [
  'Hello world',
  "I'm here, they'RE not.  Two  spaces\n\nnew lines\t tab",
  'Numbers 1234567 3.14159 and 2024!',
  'Café naïve 東京 🙂 emoji',
  '   leading and trailing   ',
  'def f(x):\n    return x*2  # ok\n',
  '<|begin_of_text|>text<|eot_id|> more',
  'e\u0301 combining (NFC folds it)',
  "DON'T 'LL 'Ve",
  '\r\n\r\n  \t',
  'a',
  'What is in the image? Describe the image in detail.',
];

/** Seeded texts over the classes the pre-tokenizer regex tells apart. */
function randomTexts(n: number): string[] {
  const pieces = [
    'the',
    'The',
    ' cat',
    'ing',
    "'s",
    "'LL",
    ' ',
    '  ',
    '\n',
    '\r\n',
    '\t',
    '0',
    '12',
    '3456',
    '.',
    ',',
    '!?',
    '...',
    '#',
    '(x)',
    'é',
    'e\u0301',
    'ß',
    '東京',
    '北',
    '🙂',
    '👍🏽',
    'Ω',
    'naïve',
    '<image>',
    '<|eot_id|>',
    '_',
    '-',
    'ab12cd',
    '\u00a0',
    '\u3000',
  ];
  const r = new Random(7, 12);
  return Array.from({ length: n }, () =>
    Array.from({ length: 1 + Math.floor(r.next() * 12) }, () => pieces[Math.floor(r.next() * pieces.length)]!).join(''),
  );
}

describe.each(['llama3', 'qwen2'] as TokenizerStyle[])(
  'tokenizer (%s-style byte-level BPE) against the Rust tokenizers library',
  (style) => {
    let dir: string;
    beforeAll(() => {
      dir = tempDir(`tok-${style}`);
      fs.writeFileSync(
        path.join(dir, 'tokenizer.json'),
        JSON.stringify(byteLevelTokenizer({ style, vocabSize: 512, special: TINY_SPECIAL })),
      );
    });
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('encodes and decodes every text as the reference does', async () => {
      const ours = loadTokenizer(dir)!;
      const ref = RustTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
      const texts = [...FIXED, ...randomTexts(300)];
      let ids = 0,
        plain = 0,
        merged = 0;
      for (const t of texts) {
        for (const special of [true, false]) {
          const want = (await ref.encode(t, null, { addSpecialTokens: special })).getIds();
          const got = ours.encode(t, special);
          expect(got, JSON.stringify(t)).toEqual(want);
          ids += got.length;
          if (!special) {
            plain += got.length;
            merged += got.filter((i) => i >= 256 && i < 508).length;
          }
          for (const skip of [false, true])
            expect(ours.decode(got, skip), JSON.stringify(t)).toBe(want.length ? await ref.decode(want, skip) : '');
        }
        // Byte-level BPE loses nothing but what the normalizer changes.
        expect(ours.decode(ours.encode(t, false))).toBe(style === 'qwen2' ? t.normalize('NFC') : t);
      }
      // The merges are used (not a byte-per-token tokenizer), and Llama 3 style starts with BOS.
      expect(merged / plain).toBeGreaterThan(0.1);
      expect(ours.encode('Hello')[0]).toBe(style === 'llama3' ? 508 : ours.encode('Hello', false)[0]);
      console.log(
        `${style}: ${texts.length} texts, ${ids} ids (${((100 * merged) / plain).toFixed(0)}% merged tokens), identical to the Rust tokenizers library`,
      );
    });
  },
);

describe('tokenizer files', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('tok-files');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('the tiny MLLM carries a tokenizer filling its vocabulary, with config.json naming its special ids', () => {
    writeTinyMllmConfigs(dir);
    const tok = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')) as {
      model: { vocab: Record<string, number> };
      added_tokens: { id: number }[];
    };
    const ids = [...Object.values(tok.model.vocab), ...tok.added_tokens.map((t) => t.id)].sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 512 }, (_, i) => i));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { bos_token_id: number; eos_token_id: number };
    const t = loadTokenizer(dir)!;
    expect(t.encode('x')[0]).toBe(cfg.bos_token_id);
    expect(t.decode([cfg.eos_token_id])).toBe('<|end_of_text|>');
  });

  it('no tokenizer.json: none; an unreadable one: an input error naming the file', () => {
    const empty = path.join(dir, 'none');
    fs.mkdirSync(empty);
    expect(loadTokenizer(empty)).toBeUndefined();
    fs.writeFileSync(path.join(empty, 'tokenizer.json'), '{ not json');
    expect(() => loadTokenizer(empty)).toThrow(InputError);
    expect(() => loadTokenizer(empty)).toThrow(/tokenizer\.json/);
  });
});
