// CLI flags generated from a pass's option schema, so that names, help, defaults and validation
// have one source (the pass). Values go to the pass as given; resolveOptions types, defaults and
// checks them exactly as it does for a textual pipeline.
import type { Command } from 'commander';
import { InputError } from '../ir/index.js';
import type { OptionSpec, Pass } from '../passes/pass.js';

export interface FlagOverride {
  /** The flag's name when it is not the option's key in kebab case (e.g. `block-size` for `block`). */
  flag?: string;
  /** A bool's negative flag when it is not `no-<flag>` (e.g. `asym` for `sym`). */
  negation?: string;
  /** Help text when it differs from the schema's description (which speaks of pipeline option names). */
  help?: string;
  /** A bool's negative flag's help (default: "the opposite of --<flag>"). */
  negationHelp?: string;
}

export type FlagOverrides = Record<string, FlagOverride>;

const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const camel = (f: string) => f.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

interface Flag {
  key: string;
  spec: OptionSpec;
  flag: string;
  negation?: string;
}

function flagsOf(pass: Pass, overrides: FlagOverrides): Flag[] {
  return Object.entries(pass.options).map(([key, spec]) => {
    const o = overrides[key] ?? {};
    const flag = o.flag ?? kebab(key);
    return { key, spec, flag, negation: spec.type === 'bool' ? (o.negation ?? `no-${flag}`) : undefined };
  });
}

function helpOf(f: Flag, overrides: FlagOverrides): string {
  const text = overrides[f.key]?.help ?? f.spec.description;
  const values = f.spec.type === 'enum' ? ` (${f.spec.values!.join('|')})` : '';
  const d = f.spec.default;
  const shown = d === undefined || (Array.isArray(d) && !d.length) || f.spec.type === 'bool' ? '' : ` (default: ${String(d)})`;
  return `${text}${values}${shown}`;
}

/** Declare one flag per option of `pass` (bools get a flag and its negation; no commander defaults, so an
 * absent flag leaves the pass's own default). */
export function addPassFlags(cmd: Command, pass: Pass, overrides: FlagOverrides = {}): Command {
  for (const f of flagsOf(pass, overrides)) {
    const help = helpOf(f, overrides);
    switch (f.spec.type) {
      case 'bool': {
        cmd.option(`--${f.flag}`, `${help}${f.spec.default === true ? ' (default)' : ''}`);
        const negHelp = overrides[f.key]?.negationHelp ?? `the opposite of --${f.flag}`;
        cmd.option(`--${f.negation}`, `${negHelp}${f.spec.default === false ? ' (default)' : ''}`);
        break;
      }
      case 'list':
        cmd.option(`--${f.flag} <value...>`, help);
        break;
      default:
        cmd.option(`--${f.flag} ${f.spec.type === 'int' || f.spec.type === 'float' ? '<n>' : '<value>'}`, help);
    }
  }
  return cmd;
}

/** The pass options the user gave as flags (parsed by commander), keyed as the pass names them. */
export function passOptionsFromFlags(pass: Pass, parsed: Record<string, unknown>, overrides: FlagOverrides = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of flagsOf(pass, overrides)) {
    const attr = camel(f.flag);
    if (f.spec.type !== 'bool') {
      if (parsed[attr] !== undefined) out[f.key] = parsed[attr];
      continue;
    }
    // commander keeps `--x` and `--no-x` on one attribute; a custom negation has its own.
    const negAttr = f.negation === `no-${f.flag}` ? attr : camel(f.negation!);
    if (negAttr === attr) {
      if (parsed[attr] !== undefined) out[f.key] = parsed[attr];
      continue;
    }
    if (parsed[attr] && parsed[negAttr]) throw new InputError(`--${f.flag} and --${f.negation} exclude each other`);
    if (parsed[attr]) out[f.key] = true;
    else if (parsed[negAttr]) out[f.key] = false;
  }
  return out;
}
