// Text <-> token ids for `edgec run --prompt`: a Hugging Face tokenizer.json (and
// tokenizer_config.json when present) read by @huggingface/tokenizers, the pure-JS port of the
// Rust `tokenizers` crate that transformers.js uses; test/targets/tokenizer.test.ts checks it
// against the Rust crate itself on byte-level BPE files laid out as Llama 3's and Qwen2's.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../ir/index.js';

export interface TextTokenizer {
  /** Ids of `text`, with the special tokens the post-processor adds (BOS) unless told not to. */
  encode(text: string, addSpecialTokens?: boolean): number[];
  decode(ids: number[], skipSpecialTokens?: boolean): string;
}

function readJson(file: string): object {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as object;
  } catch (e) {
    throw new InputError(`is not readable JSON (${(e as Error).message}); copy the model's own tokenizer files`, file);
  }
}

/** The tokenizer of a model or artifact folder; undefined when it has no tokenizer.json. */
export function loadTokenizer(dir: string): TextTokenizer | undefined {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) return undefined;
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  const json = readJson(file);
  const config = (fs.existsSync(cfgFile) ? readJson(cfgFile) : {}) as { clean_up_tokenization_spaces?: boolean };
  // Without tokenizer_config.json, decode as tokenizer.json alone defines (no space clean-up).
  const cleanUp = config.clean_up_tokenization_spaces ?? false;
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new InputError(`is not a tokenizer this version reads (${(e as Error).message}); pass --tokens IDS instead`, file);
  }
  return {
    encode: (text, addSpecialTokens = true) => tok.encode(text, { add_special_tokens: addSpecialTokens }).ids,
    // The library refuses an empty list; the empty text is its decoding.
    decode: (ids, skipSpecialTokens = false) =>
      ids.length ? tok.decode(ids, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: cleanUp }) : '',
  };
}
