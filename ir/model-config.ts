// The Hugging Face config.json beside a model's ONNX files (optimum and transformers.js export
// folders carry it; in transformers.js's layout the graphs sit in `onnx/` and the config one up).
import fs from 'node:fs';
import path from 'node:path';
import { InputError } from './errors.js';

export interface ModelConfig {
  file: string;
  json: Record<string, unknown>;
}

/** config.json in `modelDir`, or above it when `modelDir` is an `onnx/` folder; null when there is none. */
export function readModelConfig(modelDir: string): ModelConfig | null {
  const dirs = [modelDir];
  if (path.basename(modelDir) === 'onnx') dirs.push(path.dirname(modelDir));
  for (const d of dirs) {
    const file = path.join(d, 'config.json');
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) continue;
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new InputError(`not valid JSON (${(e as Error).message}); fix it or move it away from the model`, file);
    }
    if (!json || typeof json !== 'object' || Array.isArray(json))
      throw new InputError('is not a JSON object; fix it or move it away', file);
    return { file, json: json as Record<string, unknown> };
  }
  return null;
}

/** A field of the language model's config: top level, or a multimodal config's `text_config`/`llm_config`. */
export function textConfigField(c: ModelConfig, key: string): unknown {
  for (const sub of ['text_config', 'llm_config']) {
    const t = c.json[sub];
    if (t && typeof t === 'object' && key in t) return (t as Record<string, unknown>)[key];
  }
  return c.json[key];
}
