/**
 * The fusion-rule driver: every rewrite pass (fuse-*, gemm <-> matmul) is one or more rules run by
 * `applyRules`. How to write a rule:
 *
 *   const rule = defineRule<MyMatch>({
 *     name: 'LayerNorm',                        // for messages
 *     anchors: ['ReduceMean'],                  // op types (default domain unless `domain`) to start from
 *     where: (n) => `LayerNorm at '${n.name}'`, // prefix of this rule's skip reasons
 *     counts: { layernorm: 'decomposed LayerNorms fused' },
 *     match(n, cx) {                            // read only: never edit the graph here
 *       ...return null;                         // not a candidate: nothing to report
 *       ...return skip(`${where}: mean is not over the last axis`);  // a candidate left alone, and why
 *       return { nodes: [...matched], outputs: [out], ...whatRewriteNeeds };
 *     },
 *     rewrite(m, cx) {                          // build the replacement, return the count to bump
 *       replaceOutput(cx.graph, m.out, { opType: 'LayerNormalization', ... }, m.nodes);
 *       return 'layernorm';
 *     },
 *   });
 *   export const fuseLayerNorm = fusionPass({ name: 'fuse-layernorm', description, options: {}, rules: [rule] });
 *
 * What the driver does so rules need not: it visits every live anchor node of every graph (nested
 * If/Loop bodies too) in graph order; after `match` it checks removability: every output of
 * `m.nodes` other than `m.outputs` must be read only inside the match and not be a graph output,
 * else the candidate is skipped with "<where>: an intermediate value is used outside <pattern>";
 * skip reasons go to the pass statistics (`skipped`), count keys to `counts`, a match's `note` to `notes`.
 * `rewrite` may still return a Skip for a check that needs work first (a derived constant), but
 * only before it changes what the graph computes; per-graph `state` (caches of rewritten weights,
 * shared helper values) is made by `state(graph)` and handed to `finish` after the graph's visit.
 * Helpers for matchers are in pattern.ts (producer, constScalar, isConst, splitHeads, matchInvStd...);
 * `replaceOutput` hands the matched output to the new node and removes what became dead.
 */
import type { Graph, Model, Node, Value } from '../ir/index.js';
import { definePass, type OptionSchema, type Options, type PassContext, type PassStats, type TypedPass } from './pass.js';
import { internalOnly, isLive } from './pattern.js';

/** A candidate the rule looked at and left alone, with the reason (reported, never thrown). */
export class Skip {
  constructor(readonly reason: string) {}
}

export function skip(reason: string): Skip {
  return new Skip(reason);
}

export interface Match {
  /** The matched nodes: whatever of them is dead after the rewrite is removed. */
  nodes: Node[];
  /** The values of the match the rewrite hands to new nodes: the only ones read outside `nodes`. */
  outputs: Value[];
  /** What the reader should know about this fusion (a fallback op and why, a size chosen): the pass
   * statistics' `notes`, prefixed with `where`. `rewrite` may set it. */
  note?: string;
}

export interface RuleContext<S, O = Options> {
  model: Model;
  graph: Graph;
  /** The pass's resolved options (type them with `OptionsOf<typeof schema>`). */
  options: O;
  /** This rule's state for `graph`. */
  state: S;
  /** What the caller knows beyond the graph (the model's folder). */
  pass: PassContext;
}

export interface FusionRule<M extends Match = Match, S = undefined, O = Options> {
  name: string;
  /** Op types a match starts from. */
  anchors: readonly string[];
  /** Domain of the anchors (default ''). */
  domain?: string;
  /** Count keys this rule's rewrites report, with what they count. */
  counts: Record<string, string>;
  /** Prefix of skip reasons: which candidate. */
  where(anchor: Node): string;
  /** Names the pattern in the "used outside" reason (default 'the pattern'). */
  pattern?: string;
  state?(graph: Graph, model: Model): S;
  match(anchor: Node, cx: RuleContext<S, O>): M | Skip | null;
  /** Returns the count key to bump, or a Skip (only before anything the graph computes changed). */
  rewrite(m: M, cx: RuleContext<S, O>): string | Skip;
  /** After the graph's visit: drop what the state made and nothing used. */
  finish?(cx: RuleContext<S, O>): void;
}

/** A rule with its match type erased, so rules of different passes fit one list. */
export type AnyRule = FusionRule<Match, unknown>;

export function defineRule<M extends Match, S = undefined, O = Options>(rule: FusionRule<M, S, O>): AnyRule {
  return rule as unknown as AnyRule;
}

/** Statistics for the given rules, all counts zero. */
export function ruleCounts(rules: readonly AnyRule[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of rules) for (const k of Object.keys(r.counts)) counts[k] = 0;
  return counts;
}

/** Run the rules over every graph of the model: one walk per graph, rules tried in order per node. */
export function applyRules(model: Model, options: Options, rules: readonly AnyRule[], pass: PassContext = {}): PassStats {
  const stats: PassStats & { skipped: string[] } = { counts: ruleCounts(rules), skipped: [] };
  const notes: string[] = [];
  for (const graph of model.graph.allGraphs()) {
    const cxs = rules.map((r): RuleContext<unknown> => ({ model, graph, options, pass, state: r.state?.(graph, model) }));
    for (const n of [...graph.nodes]) {
      rules.forEach((rule, i) => {
        if (n.domain !== (rule.domain ?? '') || !rule.anchors.includes(n.opType) || !isLive(n)) return;
        const r = tryRule(rule, n, cxs[i]!);
        if (r instanceof Skip) stats.skipped.push(r.reason);
        else if (r !== null) {
          if (!(r.count in stats.counts)) throw new Error(`rule '${rule.name}' counted '${r.count}', which it does not declare`);
          stats.counts[r.count]!++;
          if (r.note) notes.push(`${rule.where(n)}: ${r.note}`);
        }
      });
    }
    rules.forEach((rule, i) => rule.finish?.(cxs[i]!));
  }
  return notes.length ? { ...stats, notes } : stats;
}

function tryRule(rule: AnyRule, n: Node, cx: RuleContext<unknown>): { count: string; note?: string } | Skip | null {
  const m = rule.match(n, cx);
  if (m === null || m instanceof Skip) return m;
  if (!internalOnly(m.nodes, m.outputs))
    return skip(`${rule.where(n)}: an intermediate value is used outside ${rule.pattern ?? 'the pattern'}`);
  const r = rule.rewrite(m, cx);
  return r instanceof Skip ? r : { count: r, note: m.note };
}

/** A rewrite pass made of rules: its statistics are the rules' counts. */
export function fusionPass<const S extends OptionSchema>(def: {
  name: string;
  description: string;
  options: S;
  requires?: readonly 'shapes'[];
  rules: readonly AnyRule[];
}): TypedPass<S> {
  const { rules, ...rest } = def;
  const statistics: Record<string, string> = {};
  for (const r of rules) Object.assign(statistics, r.counts);
  return definePass({ ...rest, statistics, run: (model, options, ctx) => applyRules(model, options, rules, ctx) });
}
