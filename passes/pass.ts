// The pass contract: a name, a one-line description, typed options with defaults and validation,
// what it needs, and a run that returns what it changed. Passes talk to the IR only.
import type { Progress } from '../ir/progress.js';
import type { Model } from '../ir/index.js';

export type OptionType = 'int' | 'float' | 'bool' | 'string' | 'enum' | 'list';

export interface OptionSpec {
  type: OptionType;
  default: unknown;
  description: string;
  /** For 'enum'. */
  values?: readonly string[];
  min?: number;
  max?: number;
  /** Extra check; return an error message or undefined. */
  validate?: (v: unknown) => string | undefined;
}

export type OptionSchema = Record<string, OptionSpec>;
export type Options = Record<string, unknown>;

export interface PassStats {
  /** What the pass itself counts (fusions made, nodes folded, ...). */
  counts: Record<string, number>;
  /** Why the pass left parts of the graph alone (it never guesses). */
  skipped?: string[];
  /** Free-form notes for the report. */
  notes?: string[];
}

export interface PassContext {
  /** Folder of the model being compiled (external data, calibration files). */
  modelDir?: string;
  /** Report progress (the CLI shows it; the library stays silent). */
  progress?: Progress;
  /** Largest |x| of float values by name, measured on calibration or verification inputs
   * (runtime/fp16.ts activationRanges); to-fp16 keeps fp32 what leaves a safe fp16 range. */
  activationRanges?: Map<string, number>;
}

export interface Pass {
  name: string;
  description: string;
  options: OptionSchema;
  /** e.g. ['shapes'] when the pass reads value shapes (the manager runs infer-shapes first). */
  requires?: readonly ('shapes')[];
  run(model: Model, options: Options, ctx: PassContext): PassStats | Promise<PassStats>;
}

export class PassError extends Error {
  /** `defect`: the pass itself went wrong (left an invalid graph), not its input: exit 70. */
  constructor(readonly pass: string, message: string, readonly node?: string, readonly defect = false) {
    super(`pass '${pass}'${node ? ` at node '${node}'` : ''}: ${message}`);
    this.name = 'PassError';
  }
}

/** Fill defaults, coerce strings from textual pipelines, and validate. */
export function resolveOptions(pass: Pass, given: Record<string, unknown>): Options {
  const out: Options = {};
  for (const k of Object.keys(given)) {
    if (!(k in pass.options)) throw new PassError(pass.name, `unknown option '${k}' (known: ${Object.keys(pass.options).join(', ') || 'none'})`);
  }
  for (const [k, spec] of Object.entries(pass.options)) {
    let v = k in given ? given[k] : spec.default;
    v = coerce(pass.name, k, spec, v);
    if (spec.validate) {
      const err = spec.validate(v);
      if (err) throw new PassError(pass.name, `option '${k}': ${err}`);
    }
    out[k] = v;
  }
  return out;
}

function coerce(pass: string, k: string, spec: OptionSpec, v: unknown): unknown {
  const bad = (why: string) => new PassError(pass, `option '${k}' ${why}`);
  if (v === undefined || v === null) return v;
  switch (spec.type) {
    case 'int': case 'float': {
      const n = typeof v === 'number' ? v : Number(v);
      if (!Number.isFinite(n)) throw bad(`must be a number, got '${String(v)}'`);
      if (spec.type === 'int' && !Number.isInteger(n)) throw bad(`must be an integer, got ${n}`);
      if (spec.min !== undefined && n < spec.min) throw bad(`must be >= ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`must be <= ${spec.max}, got ${n}`);
      return n;
    }
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === '1' || v === '') return true;
      if (v === 'false' || v === '0') return false;
      throw bad(`must be true or false, got '${String(v)}'`);
    case 'enum':
      if (!spec.values!.includes(String(v))) throw bad(`must be one of ${spec.values!.join('|')}, got '${String(v)}'`);
      return String(v);
    case 'list':
      if (Array.isArray(v)) return v.map(String);
      return String(v).split(/[;|]/).map((s) => s.trim()).filter(Boolean);
    default:
      return typeof v === 'string' ? v : String(v);
  }
}
