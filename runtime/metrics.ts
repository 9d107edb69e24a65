// Task metrics beside cosine, chosen from the model's role and output shapes, and the one table of
// thresholds that `verify` and `compile` both judge by (README "Verification thresholds").
import type { Role } from '../ir/summary.js';
import { Tensor } from '../ir/index.js';

/** Minimum whole-output cosine by role for quantized or fp16 results; unquantized fp32 results
 * only move by float reassociation and must reach `exact`. */
export const COSINE_THRESHOLDS: Record<Role | 'exact', number> = {
  decoder: 0.99,
  embeddings: 0.99,
  'vision-encoder': 0.995,
  projector: 0.995,
  classifier: 0.995,
  mllm: 0.99,
  unknown: 0.99,
  exact: 0.9999,
};

/** One threshold per task metric. */
export const METRIC_THRESHOLDS = {
  /** Classifier: rows whose top-1 class is unchanged (>=; with fewer than 100 rows: all of them). */
  top1: 0.99,
  /** Classifier: rows whose reference top-1 is still in the candidate's top 5. */
  top5: 1,
  /** Decoder: next-token argmax agreement over decisive positions (reference top-1 beats top-2 by >= 0.1 probability). */
  nextToken: 0.9,
  /** Decoder: mean KL(reference || candidate) of the next-token distributions, nats (<=). */
  kl: 0.05,
  /** Decoder with --tokens: candidate perplexity / reference perplexity (<=). */
  perplexityRatio: 1.1,
  /** Encoder: mean per-token cosine (rows of the last axis) (>=). */
  tokenCosine: 0.99,
} as const;

export type TaskKind = 'classifier' | 'decoder' | 'encoder' | 'none';

export interface TaskMetric {
  /** top1, top5, nextToken, kl, perplexity, tokenCosine, tokenCosineMin */
  name: string;
  value: number;
  /** Threshold and direction; absent for figures reported but not judged. */
  threshold?: number;
  higherIsBetter?: boolean;
  passed?: boolean;
  /** Rows/positions the figure is over, and notes (e.g. reference perplexity). */
  count: number;
  note?: string;
}

/** Which task metric an output gets: logits of a decoder [B, S, V], classes [B, C], token features [B, N, D]. */
export function taskKind(role: Role, out: Tensor): TaskKind {
  const r = out.dims.length;
  if (role === 'classifier' && r === 2 && out.dims[1]! > 1) return 'classifier';
  if ((role === 'decoder' || role === 'mllm') && r === 3 && /logit/i.test(out.name)) return 'decoder';
  if ((role === 'decoder' || role === 'mllm') && r === 3 && out.dims[2]! >= 32 && !/present|past|key|value|hidden/i.test(out.name))
    return 'decoder';
  if (r === 2 && out.dims[1]! > 1 && /logit|class|prob|score/i.test(out.name) && role !== 'decoder') return 'classifier';
  if ((role === 'vision-encoder' || role === 'projector') && r >= 2 && out.dims[r - 1]! > 1 && !/present|past/i.test(out.name))
    return 'encoder';
  return 'none';
}

function rows(t: Tensor): { data: Float64Array; n: number; width: number } {
  const width = t.dims[t.dims.length - 1] ?? 1;
  const data = t.toNumbers();
  return { data, n: width ? data.length / width : 0, width };
}

function topK(a: Float64Array, off: number, width: number, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < width; i++) {
    const v = a[off + i]!;
    let j = idx.length;
    while (j > 0 && a[off + idx[j - 1]!]! < v) j--;
    if (j < k) {
      idx.splice(j, 0, i);
      if (idx.length > k) idx.pop();
    }
  }
  return idx;
}

function softmax(a: Float64Array, off: number, width: number): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < width; i++) m = Math.max(m, a[off + i]!);
  const p = new Float64Array(width);
  let s = 0;
  for (let i = 0; i < width; i++) {
    p[i] = Math.exp(a[off + i]! - m);
    s += p[i]!;
  }
  for (let i = 0; i < width; i++) p[i]! /= s;
  return p;
}

const judge = (m: TaskMetric): TaskMetric =>
  m.threshold === undefined ? m : { ...m, passed: m.higherIsBetter ? m.value >= m.threshold : m.value <= m.threshold };

/** Accumulates task figures over several input sets, then reports them. */
export class TaskAccumulator {
  private top1 = 0;
  private top5 = 0;
  private cls = 0;
  private agree = 0;
  private decisive = 0;
  private kl = 0;
  private positions = 0;
  private nllRef = 0;
  private nllCand = 0;
  private scored = 0;
  private tokCos = 0;
  private tokMin = Infinity;
  private tokens = 0;
  constructor(readonly kind: TaskKind) {}

  /** `ids`: the token ids fed (teacher forcing: position t predicts ids[t+1]). `mask`: the attention
   * mask [B, total]; a decoder's padding positions (mask 0) are skipped: no runtime reads their logits. */
  add(ref: Tensor, cand: Tensor, ids?: Tensor, mask?: Tensor): void {
    const a = rows(ref),
      b = rows(cand);
    if (a.n !== b.n || a.width !== b.width) return;
    if (this.kind === 'classifier') {
      for (let r = 0; r < a.n; r++) {
        const t = topK(a.data, r * a.width, a.width, 1)[0]!;
        const c5 = topK(b.data, r * a.width, a.width, 5);
        if (c5[0] === t) this.top1++;
        if (c5.includes(t)) this.top5++;
        this.cls++;
      }
    } else if (this.kind === 'decoder') {
      const S = ref.dims[ref.dims.length - 2] ?? 1;
      const idv = ids?.toNumbers();
      const mv = mask?.toNumbers(),
        total = mask?.dims[1] ?? 0;
      const real = (r: number) => !mv || mv.length !== total * (a.n / S) || mv[Math.floor(r / S) * total + total - S + (r % S)] !== 0;
      for (let r = 0; r < a.n; r++) {
        if (!real(r)) continue;
        const p = softmax(a.data, r * a.width, a.width),
          q = softmax(b.data, r * a.width, a.width);
        let kl = 0;
        for (let i = 0; i < a.width; i++) if (p[i]! > 0) kl += p[i]! * (Math.log(p[i]!) - Math.log(Math.max(q[i]!, 1e-30)));
        this.kl += kl;
        this.positions++;
        const [t1, t2] = topK(a.data, r * a.width, a.width, 2);
        if (p[t1!]! - p[t2!]! >= 0.1) {
          this.decisive++;
          if (topK(b.data, r * a.width, a.width, 1)[0] === t1) this.agree++;
        }
        const s = r % S;
        if (idv && idv.length === a.n && s + 1 < S && real(r + 1)) {
          const next = idv[r + 1]!;
          this.nllRef -= Math.log(Math.max(p[next]!, 1e-30));
          this.nllCand -= Math.log(Math.max(q[next]!, 1e-30));
          this.scored++;
        }
      }
    } else if (this.kind === 'encoder') {
      for (let r = 0; r < a.n; r++) {
        let dot = 0,
          na = 0,
          nb = 0;
        for (let i = 0; i < a.width; i++) {
          const x = a.data[r * a.width + i]!,
            y = b.data[r * a.width + i]!;
          dot += x * y;
          na += x * x;
          nb += y * y;
        }
        const c = na === 0 && nb === 0 ? 1 : na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
        this.tokCos += c;
        this.tokMin = Math.min(this.tokMin, c);
        this.tokens++;
      }
    }
  }

  metrics(): TaskMetric[] {
    const T = METRIC_THRESHOLDS;
    if (this.kind === 'classifier' && this.cls) {
      return [
        judge({ name: 'top1', value: this.top1 / this.cls, threshold: T.top1, higherIsBetter: true, count: this.cls }),
        judge({ name: 'top5', value: this.top5 / this.cls, threshold: T.top5, higherIsBetter: true, count: this.cls }),
      ];
    }
    if (this.kind === 'decoder' && this.positions) {
      const out = [judge({ name: 'kl', value: this.kl / this.positions, threshold: T.kl, higherIsBetter: false, count: this.positions })];
      if (this.decisive)
        out.push(
          judge({
            name: 'nextToken',
            value: this.agree / this.decisive,
            threshold: T.nextToken,
            higherIsBetter: true,
            count: this.decisive,
            note: `${this.decisive} of ${this.positions} positions decisive`,
          }),
        );
      else
        out.push({
          name: 'nextToken',
          value: NaN,
          count: 0,
          note: `no decisive position among ${this.positions} (reference too flat to judge argmax)`,
        });
      if (this.scored) {
        const pr = Math.exp(this.nllRef / this.scored),
          pc = Math.exp(this.nllCand / this.scored);
        out.push({ name: 'perplexity', value: pc, count: this.scored, note: `reference ${pr.toPrecision(5)}` });
        out.push(
          judge({ name: 'perplexityRatio', value: pc / pr, threshold: T.perplexityRatio, higherIsBetter: false, count: this.scored }),
        );
      }
      return out;
    }
    if (this.kind === 'encoder' && this.tokens) {
      return [
        judge({
          name: 'tokenCosine',
          value: this.tokCos / this.tokens,
          threshold: T.tokenCosine,
          higherIsBetter: true,
          count: this.tokens,
        }),
        { name: 'tokenCosineMin', value: this.tokMin, count: this.tokens },
      ];
    }
    return [];
  }
}

/** The cosine threshold both `verify` and `compile` use. */
export function cosineThreshold(role: Role, exact: boolean): number {
  return exact ? COSINE_THRESHOLDS.exact : COSINE_THRESHOLDS[role];
}

/** One line per metric. */
export function formatMetric(m: TaskMetric): string {
  const v = Number.isNaN(m.value) ? 'n/a' : m.name === 'kl' ? m.value.toExponential(3) : m.value.toFixed(4);
  const th = m.threshold === undefined ? '' : ` (${m.higherIsBetter ? '>=' : '<='} ${m.threshold})`;
  const verdict = m.passed === undefined ? '' : m.passed ? ' ok' : ' FAIL';
  return `${m.name} ${v}${th} over ${m.count}${m.note ? `; ${m.note}` : ''}${verdict}`;
}

/** Teacher-forced figures of one sequence (a batch row) of decoder logits, reference against candidate. */
export interface SequenceStats {
  /** Negative log-likelihood (nats) of the next token under each model, summed over `scored` positions. */
  nllRef: number;
  nllCand: number;
  scored: number;
  /** KL(reference || candidate) summed over `positions` (the real, unpadded ones). */
  kl: number;
  positions: number;
  /** Positions where both argmaxes agree. */
  agree: number;
}

/** Per-sequence figures of decoder logits [B, S, V] (`ids` [B, S], `mask` [B, total] with 0 = padding).
 * The sums let a caller pool sequences or resample them (bootstrap noise over windows). */
export function sequenceStats(ref: Tensor, cand: Tensor, ids: Tensor, mask?: Tensor): SequenceStats[] {
  const a = rows(ref),
    b = rows(cand);
  const S = ref.dims[ref.dims.length - 2] ?? 1;
  if (a.n !== b.n || a.width !== b.width) throw new Error(`logits shapes differ: [${ref.dims}] vs [${cand.dims}]`);
  const idv = ids.toNumbers();
  if (idv.length !== a.n) throw new Error(`ids [${ids.dims}] do not match logits [${ref.dims}]`);
  const mv = mask?.toNumbers(),
    total = mask?.dims[1] ?? 0;
  const real = (r: number) => !mv || mv.length !== total * (a.n / S) || mv[Math.floor(r / S) * total + total - S + (r % S)] !== 0;
  const out: SequenceStats[] = [];
  for (let r = 0; r < a.n; r++) {
    if (r % S === 0) out.push({ nllRef: 0, nllCand: 0, scored: 0, kl: 0, positions: 0, agree: 0 });
    if (!real(r)) continue;
    const st = out[out.length - 1]!;
    const p = softmax(a.data, r * a.width, a.width),
      q = softmax(b.data, r * a.width, a.width);
    let kl = 0;
    for (let i = 0; i < a.width; i++) if (p[i]! > 0) kl += p[i]! * (Math.log(p[i]!) - Math.log(Math.max(q[i]!, 1e-30)));
    st.kl += kl;
    st.positions++;
    if (topK(a.data, r * a.width, a.width, 1)[0] === topK(b.data, r * a.width, a.width, 1)[0]) st.agree++;
    if ((r % S) + 1 < S && real(r + 1)) {
      const next = idv[r + 1]!;
      st.nllRef -= Math.log(Math.max(p[next]!, 1e-30));
      st.nllCand -= Math.log(Math.max(q[next]!, 1e-30));
      st.scored++;
    }
  }
  return out;
}
