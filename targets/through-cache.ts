// A decoder `edgec run` drives, judged through its own KV cache: per-call verification feeds every
// call the reference's past, so an error in the artifact's present.* outputs never reaches a later
// logit there. Here source and artifact each generate from the same prompts with their own caches,
// the artifact teacher-forced on the reference's tokens (or on the user's --tokens text), and every
// step's next-token distributions are compared: KL, next-token agreement and, on user text,
// perplexity, with the thresholds of runtime/metrics.ts.
import { Tensor, loadModel } from '../ir/index.js';
import { SessionPool, generate, type DecoderFiles } from '../runtime/generate.js';
import { TaskAccumulator, type TaskMetric } from '../runtime/metrics.js';
import { idBound } from './calibration.js';
import { imagePrefix, prompts, runStages, type Layout, type RunSpec } from './run-feeds.js';
import type { SubModel } from './target.js';

/** Tokens generated per prompt. */
export const CACHE_STEPS = 16;
/** Prompt tokens before teacher forcing starts on user text. */
const TEXT_PROMPT = 8;

/** What the check depends on (a SubModel has it all). */
export type CacheSpec = RunSpec & { opts: RunSpec['opts'] & Pick<SubModel['opts'], 'seed'> };

export interface CacheCheck {
  metrics: TaskMetric[];
  passed: boolean;
  /** Prompts and steps compared, and where the prompts came from. */
  prompts: number;
  steps: number;
  from: string;
}

/** `artifact`: the compiled decoder file(s) (npu: prefill and decode variants). Undefined for a
 * decoder runtime/generate.ts does not drive (targets/run-feeds.ts runStages). */
export async function throughCache(sm: CacheSpec, artifact: DecoderFiles['decoder'], layout: Layout): Promise<CacheCheck | undefined> {
  const st = runStages(loadModel(sm.source), sm);
  if (!st) return undefined;
  const { context, prefillChunk: chunk } = sm.opts;
  const seed = sm.opts.seed + 2 * 7919;
  const src = new SessionPool('disabled'),
    cand = new SessionPool('disabled');
  const acc = new TaskAccumulator('decoder');
  let n = 0,
    steps = 0;
  try {
    const img = st.vision ? await imagePrefix(src, sm, st.vision, st.projector, seed) : undefined;
    const p = prompts(sm, idBound(loadModel(st.embed ?? sm.source)) ?? 16, seed);
    const reference = layout === 'static' ? { prefill: sm.source, decode: sm.source } : sm.source;
    const window = layout === 'static' ? { chunk, context } : undefined;
    for (const [i, ids] of p.ids.entries()) {
      const prefix = i === 0 && img ? img.prefix : { data: new Float32Array(0), rows: 0 };
      const room = context - prefix.rows;
      // User text: its first tokens prompt, the rest is forced on both (perplexity of the text).
      const text = sm.opts.tokens && ids.length > TEXT_PROMPT ? ids.slice(TEXT_PROMPT, TEXT_PROMPT + CACHE_STEPS) : undefined;
      const prompt = ids.slice(0, text ? TEXT_PROMPT : Math.max(1, room - CACHE_STEPS));
      const max = Math.min(CACHE_STEPS, room - prompt.length);
      if (max < 1) continue;
      const ref = await generate(src, { embed: st.embed, decoder: reference }, prefix, prompt, { maxNewTokens: max, window, force: text });
      const got = await generate(cand, { embed: st.embed, decoder: artifact }, prefix, prompt, {
        maxNewTokens: max,
        force: text ?? ref.tokens,
      });
      const rows = Math.min(ref.stepLogits.length, got.stepLogits.length);
      const fed = text ? Tensor.fromInt64('ids', [1, rows], [prompt.at(-1)!, ...text].slice(0, rows)) : undefined;
      acc.add(stack(ref.stepLogits.slice(0, rows)), stack(got.stepLogits.slice(0, rows)), fed);
      n++;
      steps += rows;
    }
    const metrics = acc.metrics();
    const from =
      `${n} prompts of ${p.from}${img ? ` (the first after ${img.prefix.rows} embeddings of ${img.from})` : ''}, ` +
      `${text(sm) ? 'teacher-forced on the text' : `${CACHE_STEPS} greedy steps, the artifact forced on the reference's tokens`}`;
    return { metrics, passed: metrics.every((m) => m.passed !== false), prompts: n, steps, from };
  } finally {
    await src.release();
    await cand.release();
  }
}

const text = (sm: CacheSpec) => Boolean(sm.opts.tokens);

/** A sub-model's decoder files in an artifact: one file, or npu's prefill and decode variants. */
export function decoderFiles(
  entries: { file: string; variant?: string }[],
  file: (f: string) => string,
): DecoderFiles['decoder'] | undefined {
  if (entries.length === 1 && !/^(prefill\d+|decode)$/.test(entries[0]!.variant ?? '')) return file(entries[0]!.file);
  const pre = entries.find((e) => /^prefill\d+$/.test(e.variant ?? '')),
    dec = entries.find((e) => e.variant === 'decode');
  return pre && dec ? { prefill: file(pre.file), decode: file(dec.file) } : undefined;
}

/** Rows of logits as one [1, rows, V] tensor. */
function stack(rows: Float32Array[]): Tensor {
  const v = rows[0]?.length ?? 0;
  const out = new Float32Array(rows.length * v);
  rows.forEach((r, i) => out.set(r, i * v));
  return Tensor.fromFloat32('logits', [1, rows.length, v], out);
}
