// PassManager: textual pipelines (`cleanup,fold-constants,quantize-int4{block=32,sym=true}`) or
// config objects, per-pass statistics, optional validity check after every pass.
import type { Model } from '../ir/index.js';
import { InputError, asInternal } from '../ir/index.js';
import { Pass, PassContext, PassError, PassStats, Options, resolveOptions } from './pass.js';
import { getPass, allPasses } from './registry.js';
import './builtin.js';
import { countGraph, validateModel } from './validate.js';

export interface PipelineStep {
  pass: Pass;
  options: Options;
}

export interface StepReport {
  pass: string;
  options: Options;
  nodesBefore: number;
  nodesAfter: number;
  nodesAdded: number;
  nodesRemoved: number;
  initializerBytesBefore: number;
  initializerBytesAfter: number;
  ms: number;
  stats: PassStats;
  /** Passes the manager ran first because this one needs them (infer-shapes for `requires: ['shapes']`), timed apart from `ms`. */
  implicit?: { pass: string; ms: number; stats: PassStats }[];
}

export type PipelineSpec = string | { pass: string; options?: Record<string, unknown> }[];

/** Parse `a,b{k=v,k2=v2},c` into steps. Braces may hold commas; values are strings until typed. */
export function parsePipeline(spec: PipelineSpec): PipelineStep[] {
  const raw: { pass: string; options: Record<string, unknown> }[] = [];
  if (typeof spec === 'string') {
    const s = spec.trim();
    let i = 0;
    while (i < s.length) {
      let j = i;
      while (j < s.length && s[j] !== ',' && s[j] !== '{') j++;
      const name = s.slice(i, j).trim();
      if (!name) throw new InputError(`pipeline: empty pass name at position ${i} of '${s}'`);
      const options: Record<string, unknown> = {};
      if (s[j] === '{') {
        const close = s.indexOf('}', j);
        if (close < 0) throw new InputError(`pipeline: missing '}' after '${name}{'`);
        for (const kv of s
          .slice(j + 1, close)
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)) {
          const eq = kv.indexOf('=');
          const key = (eq < 0 ? kv : kv.slice(0, eq)).trim();
          if (key in options) throw new InputError(`pipeline: option '${key}' of '${name}' given twice`);
          options[key] = eq < 0 ? 'true' : kv.slice(eq + 1).trim();
        }
        j = close + 1;
        while (s[j] === ' ') j++;
        if (j < s.length && s[j] !== ',')
          throw new InputError(`pipeline: expected ',' after '${s.slice(i, j).trim()}', got '${s.slice(j)}'`);
      }
      raw.push({ pass: name, options });
      i = j + 1;
      if (s[j] === ',' && i >= s.length) throw new InputError(`pipeline: trailing ',' in '${s}'`);
    }
  } else {
    for (const st of spec) raw.push({ pass: st.pass, options: st.options ?? {} });
  }
  return raw.map((r) => {
    const pass = getPass(r.pass);
    if (!pass)
      throw new InputError(
        `pipeline: unknown pass '${r.pass}' (known: ${allPasses()
          .map((p) => p.name)
          .join(', ')})`,
      );
    try {
      return { pass, options: resolveOptions(pass, r.options) };
    } catch (e) {
      throw new InputError((e as Error).message);
    }
  });
}

/** A step to print: resolved (a Pass and its resolved options) or as written (a name and the options given). */
export type FormattableStep = PipelineStep | { pass: string; options?: Record<string, unknown> };

/**
 * Pipeline text that parsePipeline reads back to the same steps. A resolved step shows only the
 * options that differ from its pass's defaults, in the schema's order; a written one what it was given.
 */
export function formatPipeline(steps: readonly FormattableStep[]): string {
  return steps
    .map((st) => {
      const resolved = typeof st.pass !== 'string';
      const name = typeof st.pass === 'string' ? st.pass : st.pass.name;
      const defaults = typeof st.pass === 'string' ? undefined : st.pass.options;
      const kv: string[] = [];
      for (const [k, v] of Object.entries(st.options ?? {})) {
        if (v === undefined || (resolved && JSON.stringify(v) === JSON.stringify(defaults?.[k]?.default))) continue;
        // How many workers, not what is computed (same bytes for any count): the manifest must not differ.
        if (k === 'threads') continue;
        kv.push(`${k}=${formatValue(name, k, v)}`);
      }
      return kv.length ? `${name}{${kv.join(',')}}` : name;
    })
    .join(',');
}

/** An option value as pipeline text (lists joined by ';', as the parser splits them). */
function formatValue(pass: string, key: string, v: unknown): string {
  const text = (x: unknown, forbidden: RegExp): string => {
    const t = String(x);
    if (typeof x === 'object' || forbidden.test(t) || t.trim() !== t) {
      throw new Error(`formatPipeline: ${pass} option '${key}': ${JSON.stringify(x)} has no pipeline text`);
    }
    return t;
  };
  if (Array.isArray(v)) return v.map((x) => text(x, /[,{};|]/)).join(';');
  return text(v, /[,{}]/);
}

export interface RunPipelineOptions extends PassContext {
  /** Check graph validity after every pass; an invalid graph names the pass. */
  verifyEach?: boolean;
}

function initializerBytes(model: Model): number {
  let s = 0;
  for (const g of model.graph.allGraphs()) for (const t of g.initializers) s += t.byteLength;
  return s;
}

export async function runPipeline(model: Model, steps: PipelineStep[], opts: RunPipelineOptions = {}): Promise<StepReport[]> {
  const reports: StepReport[] = [];
  for (const [i, step] of steps.entries()) {
    const implicit: NonNullable<StepReport['implicit']> = [];
    if (step.pass.requires?.includes('shapes')) {
      const infer = getPass('infer-shapes');
      if (infer && step.pass !== infer) {
        const t = performance.now();
        const st = await infer.run(model, resolveOptions(infer, {}), opts);
        implicit.push({ pass: infer.name, ms: performance.now() - t, stats: st });
      }
    }
    const before = countGraph(model);
    const bytesBefore = initializerBytes(model);
    opts.progress?.('passes', i, steps.length, step.pass.name);
    const t0 = performance.now();
    let stats: PassStats;
    try {
      stats = await step.pass.run(model, step.options, opts);
    } catch (e) {
      // A pass's own PassError or InputError says what is wrong with the input; anything else
      // is a defect of the pass: keep it as the cause and say which pass (exit 70, not 2).
      if (e instanceof PassError) throw e;
      throw asInternal(e, `pass '${step.pass.name}'`);
    }
    const ms = performance.now() - t0;
    try {
      for (const g of model.graph.allGraphs()) g.sortTopologically();
    } catch (e) {
      throw new PassError(step.pass.name, `left an invalid graph: ${(e as Error).message}`, undefined, true);
    }
    const after = countGraph(model);
    if (opts.verifyEach) {
      const errs = validateModel(model);
      if (errs.length)
        throw new PassError(
          step.pass.name,
          `left an invalid graph: ${errs[0]}${errs.length > 1 ? ` (+${errs.length - 1} more)` : ''}`,
          /node '([^']+)'/.exec(errs[0]!)?.[1],
          true,
        );
    }
    let added = 0,
      removed = 0;
    for (const id of after.ids) if (!before.ids.has(id)) added++;
    for (const id of before.ids) if (!after.ids.has(id)) removed++;
    reports.push({
      pass: step.pass.name,
      options: step.options,
      nodesBefore: before.ids.size,
      nodesAfter: after.ids.size,
      nodesAdded: added,
      nodesRemoved: removed,
      initializerBytesBefore: bytesBefore,
      initializerBytesAfter: initializerBytes(model),
      ms,
      stats,
      ...(implicit.length ? { implicit } : {}),
    });
  }
  opts.progress?.('passes', steps.length, steps.length);
  return reports;
}
