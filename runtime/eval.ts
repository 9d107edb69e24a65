// Language-model evaluation of quantized candidates against their fp32 model (`edgec eval`): perplexity
// of each on held-out token windows, the perplexity increase, KL(fp32 || candidate) and top-1 agreement,
// each with a bootstrap standard error over windows so that differences within noise show as such.
import { CheckError, InputError, Tensor, loadModel } from '../ir/index.js';
import { describeInputs, loadInputs, type Feeds, type InputsUsed } from './inputs.js';
import { sequenceStats, taskKind, type SequenceStats } from './metrics.js';
import { rng } from './ort.js';
import { idBound, runSets } from './verify.js';

export interface EvalOptions {
  /** Token id sequences, one per line (each a window). */
  tokens?: string;
  /** ONNX test-data folders (each batch row a window). */
  inputs?: string[];
  /** Bootstrap resamples of the windows for the standard errors (0: none). */
  bootstrap?: number;
  seed?: number;
}

/** A figure and its bootstrap standard error over windows (NaN without resamples). */
export interface Figure {
  value: number;
  stderr: number;
}

export interface CandidateEval {
  path: string;
  perplexity: Figure;
  /** Candidate perplexity minus the reference's; its error is paired (the same resampled windows). */
  perplexityDelta: Figure;
  /** Mean KL(reference || candidate) of the next-token distributions, nats per position. */
  kl: Figure;
  /** Fraction of positions whose argmax agrees with the reference's. */
  top1: Figure;
}

export interface EvalResult {
  reference: { path: string; perplexity: Figure };
  candidates: CandidateEval[];
  windows: number;
  /** Next-token predictions scored (perplexity) and positions compared (KL, top-1). */
  scored: number;
  positions: number;
  bootstrap: number;
  inputsUsed: InputsUsed;
  inputsText: string;
}

interface Pooled {
  ppl: number;
  pplRef: number;
  kl: number;
  top1: number;
}

function pool(stats: SequenceStats[], pick: readonly number[]): Pooled {
  let nr = 0,
    nc = 0,
    sc = 0,
    kl = 0,
    pos = 0,
    ag = 0;
  for (const i of pick) {
    const s = stats[i]!;
    nr += s.nllRef;
    nc += s.nllCand;
    sc += s.scored;
    kl += s.kl;
    pos += s.positions;
    ag += s.agree;
  }
  return { ppl: Math.exp(nc / sc), pplRef: Math.exp(nr / sc), kl: kl / pos, top1: ag / pos };
}

const std = (xs: number[]): number => {
  if (xs.length < 2) return NaN;
  const m = xs.reduce((s, x) => s + x, 0) / xs.length;
  return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1));
};

/** Resamples of window indices: the same for every candidate, so deltas and rankings are paired. */
function resamples(n: number, count: number, seed: number): number[][] {
  const rand = rng(seed);
  return Array.from({ length: count }, () => Array.from({ length: n }, () => Math.floor(rand() * n)));
}

function logitsOf(out: Record<string, Tensor>, path: string): Tensor {
  const t = Object.values(out).find((x) => taskKind('decoder', x) === 'decoder');
  if (!t) throw new InputError(`has no logits output [batch, sequence, vocab] (outputs: ${Object.keys(out).join(', ')})`, path);
  return t;
}

function idsOf(feeds: Feeds, path: string): { ids: Tensor; mask?: Tensor } {
  const ids = Object.values(feeds).find((t) => /input_ids|^ids$|tokens/i.test(t.name));
  if (!ids) throw new InputError(`the inputs hold no token ids (input_ids) to score; pass --tokens FILE`, path);
  return { ids, mask: Object.values(feeds).find((t) => /mask/i.test(t.name)) };
}

/** Runs the reference once and every candidate on the same windows. */
export async function evaluateLm(refPath: string, candPaths: readonly string[], opts: EvalOptions = {}): Promise<EvalResult> {
  if (!opts.tokens && !opts.inputs?.length) throw new InputError('eval needs held-out text: pass --tokens FILE or --inputs DIR');
  const ref = loadModel(refPath);
  const bound = idBound(ref);
  const loaded = loadInputs(ref, { tokens: opts.tokens, inputs: opts.inputs, intHigh: bound, seed: opts.seed });
  const refOut = await runSets(refPath, loaded.sets, 'pass windows the model takes');
  const refLogits = refOut.map((o) => logitsOf(o, refPath));
  const feeds = loaded.sets.map((s) => idsOf(s, refPath));
  const B = opts.bootstrap ?? 1000;
  let picks: number[][] = [];
  const candidates: CandidateEval[] = [];
  let scored = 0,
    positions = 0,
    windows = 0,
    pplRef: Figure = { value: NaN, stderr: NaN };
  for (const cp of candPaths.length ? candPaths : [refPath]) {
    const out = cp === refPath ? refOut : await runSets(cp, loaded.sets, 'the candidate must take the windows the reference takes', cp);
    const stats = out.flatMap((o, i) => {
      const lg = logitsOf(o, cp);
      if (lg.dims.join() !== refLogits[i]!.dims.join())
        throw new CheckError(`${cp}: logits [${lg.dims}] differ in shape from the reference's [${refLogits[i]!.dims}]`);
      return sequenceStats(refLogits[i]!, lg, feeds[i]!.ids, feeds[i]!.mask);
    });
    const all = stats.map((_, i) => i);
    if (!picks.length) picks = resamples(stats.length, B, opts.seed ?? 1234);
    const full = pool(stats, all);
    const boot = picks.map((p) => pool(stats, p));
    const fig = (v: number, f: (x: Pooled) => number): Figure => ({ value: v, stderr: std(boot.map(f)) });
    windows = stats.length;
    scored = stats.reduce((s, x) => s + x.scored, 0);
    positions = stats.reduce((s, x) => s + x.positions, 0);
    if (!scored) throw new InputError('no next token to score: windows need at least 2 real tokens', opts.tokens ?? opts.inputs![0]);
    pplRef = fig(full.pplRef, (x) => x.pplRef);
    if (candPaths.length)
      candidates.push({
        path: cp,
        perplexity: fig(full.ppl, (x) => x.ppl),
        perplexityDelta: fig(full.ppl - full.pplRef, (x) => x.ppl - x.pplRef),
        kl: fig(full.kl, (x) => x.kl),
        top1: fig(full.top1, (x) => x.top1),
      });
  }
  return {
    reference: { path: refPath, perplexity: pplRef },
    candidates,
    windows,
    scored,
    positions,
    bootstrap: B,
    inputsUsed: loaded.used,
    inputsText: describeInputs(loaded.used),
  };
}
