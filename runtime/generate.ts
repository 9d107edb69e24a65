// The compiled MLLM end to end in onnxruntime-node: vision encoder -> projector -> image embeddings,
// prompt embeddings, then greedy decoding with a KV cache. Decoders come in two layouts:
//  - dynamic (webgpu, mobile, the fp32 source): past grows by the tokens of each call;
//  - static (npu): fixed prefill-chunk and 1-token files over a KV window of `context` positions.
//    The window is right-aligned: each call's past is the last (context - chunk) positions of the
//    previous call's present, a short chunk is left-padded, and the attention mask marks every
//    padded or empty position (explicit position_ids keep rotary positions right).
import * as ort from 'onnxruntime-node';
import { Model, loadModel } from '../ir/index.js';

export type OptLevel = 'disabled' | 'basic' | 'extended' | 'all';

/** Sessions opened once per file and released together. */
export class SessionPool {
  private sessions = new Map<string, Promise<ort.InferenceSession>>();
  private models = new Map<string, Model>();
  /** `onRun`: sees every call's feeds and results (calibration records what the runtime feeds). */
  constructor(
    readonly level: OptLevel = 'all',
    private readonly onRun?: (file: string, feeds: Record<string, ort.Tensor>, out: Record<string, ort.Tensor>) => void,
  ) {}

  get(file: string): Promise<ort.InferenceSession> {
    let s = this.sessions.get(file);
    if (!s) {
      s = ort.InferenceSession.create(file, { graphOptimizationLevel: this.level, intraOpNumThreads: 1, logSeverityLevel: 3 });
      this.sessions.set(file, s);
    }
    return s;
  }

  /** The graph's declared inputs (read lazily: no weights are loaded). */
  model(file: string): Model {
    let m = this.models.get(file);
    if (!m) {
      m = loadModel(file);
      this.models.set(file, m);
    }
    return m;
  }

  async run(file: string, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    const s = await this.get(file);
    const f: Record<string, ort.Tensor> = {};
    for (const n of s.inputNames) {
      if (!feeds[n]) throw new Error(`${file}: no value for input '${n}'`);
      f[n] = feeds[n]!;
    }
    const out = (await s.run(f)) as Record<string, ort.Tensor>;
    this.onRun?.(file, feeds, out);
    return out;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

/** Image embeddings [tokens, hidden] of one pixel_values call [b, 3, h, w] (b tiles in order). */
export async function encodeImage(
  pool: SessionPool,
  encoder: string,
  projector: string | undefined,
  pixels: Float32Array,
  shape: number[],
): Promise<Prefix> {
  const enc = await pool.run(encoder, { [inputName(pool, encoder, 0)]: new ort.Tensor('float32', pixels, shape) });
  const feats = Object.values(enc)[0]!;
  const out = projector ? Object.values(await pool.run(projector, { [inputName(pool, projector, 0)]: feats }))[0]! : feats;
  const data = out.data as Float32Array;
  const hidden = out.dims[out.dims.length - 1]!;
  return { data, rows: data.length / hidden };
}

function inputName(pool: SessionPool, file: string, i: number): string {
  return pool.model(file).graph.inputs.filter((v) => !v.initializer)[i]!.name;
}

/** Rows of embeddings before the prompt ([rows, hidden]). */
export interface Prefix {
  data: Float32Array<ArrayBufferLike>;
  rows: number;
}

export interface DecoderFiles {
  /** Dynamic: one file each. Static: the prefill-chunk and the 1-token variants. */
  /** Absent for a decoder fed token ids (input_ids, no inputs_embeds). */
  embed?: string | { prefill: string; decode: string };
  decoder: string | { prefill: string; decode: string };
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** Stop after this token id. */
  eos?: number;
  /** Static KV window over dynamic files (a calibration run of the source as the npu runtime feeds
   * it): chunk and context, else read from the static prefill file's input shapes. */
  window?: { chunk: number; context: number };
  /** Teacher forcing: feed these tokens in turn instead of the greedy choices (a candidate decoder
   * follows the reference's continuation, so every step's logits compare like for like). */
  force?: number[];
}

export interface GenerateResult {
  tokens: number[];
  /** The two best logits at each generated token (how close the greedy choice was). */
  top2: [number, number][][];
  /** Logits of the first generated token (compared against the source's). */
  firstLogits: Float32Array;
  /** Logits of every step: the prompt's last row, then one per token fed back. */
  stepLogits: Float32Array[];
}

const kvRe = /^past_key_values\.(\d+)\.(key|value)$/;

/** Greedy generation after `prefix` rows (image embeddings, [rows, hidden]) and the prompt ids. */
export async function generate(
  pool: SessionPool,
  files: DecoderFiles,
  prefix: Prefix,
  ids: number[],
  o: GenerateOptions,
): Promise<GenerateResult> {
  const stat = typeof files.decoder !== 'string';
  const decFile = typeof files.decoder === 'string' ? files.decoder : files.decoder.decode;
  const dm = pool.model(decFile);
  const embedsIn = dm.graph.inputs.find((v) => v.name === 'inputs_embeds');
  // A decoder fed token ids: a token's "embedding" is its id, one value a row (fed as input_ids).
  const byIds = !embedsIn && dm.graph.inputs.some((v) => v.name === 'input_ids');
  const hidden = byIds ? 1 : embedsIn?.type?.shape?.[2];
  if (typeof hidden !== 'number') throw new Error(`${decFile}: inputs_embeds has no fixed hidden size`);
  if (byIds && prefix.rows) throw new Error(`${decFile}: takes token ids, not image embeddings`);
  const kv = dm.graph.inputs
    .filter((v) => kvRe.test(v.name))
    .map((v) => {
      const s = v.type!.shape!;
      return { name: v.name, present: v.name.replace(kvRe, 'present.$1.$2'), heads: s[1] as number, dim: s[3] as number };
    });

  const embed = async (tok: number[]): Promise<Float32Array> => {
    if (byIds) return Float32Array.from(tok);
    if (!files.embed) throw new Error(`${decFile}: takes inputs_embeds and no embeddings model was given`);
    if (typeof files.embed === 'string') {
      const r = await pool.run(files.embed, { input_ids: new ort.Tensor('int64', BigInt64Array.from(tok.map(BigInt)), [1, tok.length]) });
      return Object.values(r)[0]!.data as Float32Array;
    }
    // Static embeddings: 1-token file per token (prompt lengths need not match the chunk).
    const out = new Float32Array(tok.length * hidden);
    for (const [i, t] of tok.entries()) {
      const r = await pool.run(files.embed.decode, { input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(t)]), [1, 1]) });
      out.set(Object.values(r)[0]!.data as Float32Array, i * hidden);
    }
    return out;
  };

  const promptEmb = await embed(ids);
  const seq = new Float32Array((prefix.rows + ids.length) * hidden);
  seq.set(prefix.data.subarray(0, prefix.rows * hidden), 0);
  seq.set(promptEmb, prefix.rows * hidden);
  const total = prefix.rows + ids.length;

  const step = stat
    ? await staticDecoder(pool, files.decoder as { prefill: string; decode: string }, kv, hidden, byIds, o.window)
    : dynamicDecoder(pool, decFile, kv, hidden, byIds);
  let logits = await step(seq, total);
  const result: GenerateResult = { tokens: [], top2: [], firstLogits: logits, stepLogits: [logits] };
  for (let n = 0; n < o.maxNewTokens; n++) {
    const [best, second] = top2(logits);
    const next = o.force ? o.force[n] : best[0];
    result.tokens.push(best[0]);
    result.top2.push([best, second]);
    if (next === undefined || next === o.eos || n === o.maxNewTokens - 1) break;
    logits = await step(await embed([next]), 1);
    result.stepLogits.push(logits);
  }
  return result;
}

type Step = (embeds: Float32Array<ArrayBufferLike>, rows: number) => Promise<Float32Array>;
type Kv = { name: string; present: string; heads: number; dim: number };

function top2(l: Float32Array): [[number, number], [number, number]] {
  let a = 0,
    b = -1;
  for (let i = 1; i < l.length; i++) {
    if (l[i]! > l[a]!) {
      b = a;
      a = i;
    } else if (b < 0 || l[i]! > l[b]!) b = i;
  }
  return [
    [a, l[a]!],
    [b, l[b]!],
  ];
}

function lastRow(t: ort.Tensor, row: number): Float32Array {
  const v = t.dims[2]!;
  return (t.data as Float32Array).slice(row * v, (row + 1) * v);
}

/** The rows of a call: inputs_embeds [1, rows, hidden], or input_ids [1, rows] (hidden 1). */
function tokenFeed(x: Float32Array<ArrayBufferLike>, rows: number, hidden: number, ids: boolean): Record<string, ort.Tensor> {
  if (ids)
    return {
      input_ids: new ort.Tensor(
        'int64',
        BigInt64Array.from(x.subarray(0, rows), (v) => BigInt(Math.round(v))),
        [1, rows],
      ),
    };
  return { inputs_embeds: new ort.Tensor('float32', x, [1, rows, hidden]) };
}

function dynamicDecoder(pool: SessionPool, file: string, kv: Kv[], hidden: number, ids: boolean): Step {
  let past = 0;
  let cache: Record<string, ort.Tensor> = Object.fromEntries(
    kv.map((k) => [k.name, new ort.Tensor('float32', new Float32Array(0), [1, k.heads, 0, k.dim])]),
  );
  return async (embeds, rows) => {
    const feeds: Record<string, ort.Tensor> = {
      ...cache,
      ...tokenFeed(embeds, rows, hidden, ids),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(past + rows).fill(1n), [1, past + rows]),
      position_ids: new ort.Tensor(
        'int64',
        BigInt64Array.from({ length: rows }, (_, i) => BigInt(past + i)),
        [1, rows],
      ),
    };
    const r = await pool.run(file, feeds);
    cache = Object.fromEntries(kv.map((k) => [k.name, r[k.present]!]));
    past += rows;
    return lastRow(r.logits!, rows - 1);
  };
}

async function staticDecoder(
  pool: SessionPool,
  files: { prefill: string; decode: string },
  kv: Kv[],
  hidden: number,
  ids: boolean,
  win?: { chunk: number; context: number },
): Promise<Step> {
  const shapeOf = (file: string, name: string) => pool.model(file).graph.inputs.find((v) => v.name === name)!.type!.shape! as number[];
  const chunk = win?.chunk ?? shapeOf(files.prefill, ids ? 'input_ids' : 'inputs_embeds')[1]!;
  const context = win?.context ?? shapeOf(files.prefill, 'attention_mask')[1]!;
  const window = new Map(kv.map((k) => [k.name, new Float32Array(k.heads * context * k.dim)]));
  let valid = new Uint8Array(context);
  let pos = 0;
  // One call of `c` positions (c = chunk or 1) holding `r` real rows, left-padded.
  const call = async (file: string, c: number, embeds: Float32Array<ArrayBufferLike>, r: number): Promise<Float32Array> => {
    const p = context - c;
    const feeds: Record<string, ort.Tensor> = {};
    for (const k of kv) {
      const w = window.get(k.name)!;
      const past = new Float32Array(k.heads * p * k.dim);
      for (let h = 0; h < k.heads; h++) past.set(w.subarray((h * context + context - p) * k.dim, (h + 1) * context * k.dim), h * p * k.dim);
      feeds[k.name] = new ort.Tensor('float32', past, [1, k.heads, p, k.dim]);
    }
    const x = new Float32Array(c * hidden);
    x.set(embeds.subarray(0, r * hidden), (c - r) * hidden);
    const mask = new Uint8Array(context);
    mask.set(valid.subarray(context - p), 0);
    mask.fill(1, context - r);
    Object.assign(feeds, tokenFeed(x, c, hidden, ids));
    feeds.attention_mask = new ort.Tensor(
      'int64',
      BigInt64Array.from(mask, (m) => BigInt(m)),
      [1, context],
    );
    feeds.position_ids = new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: c }, (_, i) => BigInt(i < c - r ? 0 : pos + i - (c - r))),
      [1, c],
    );
    const res = await pool.run(file, feeds);
    for (const k of kv) window.set(k.name, Float32Array.from(res[k.present]!.data as Float32Array));
    valid = mask;
    pos += r;
    return lastRow(res.logits!, c - 1);
  };
  return async (embeds, rows) => {
    if (pos + rows > context) throw new Error(`the sequence (${pos + rows} tokens) is longer than the static decoder's context ${context}`);
    if (rows === 1) return call(files.decode, 1, embeds, 1);
    let logits: Float32Array = new Float32Array(0);
    for (let at = 0; at < rows; at += chunk) {
      const r = Math.min(chunk, rows - at);
      logits = await call(files.prefill, chunk, embeds.subarray(at * hidden), r);
    }
    return logits;
  };
}
