// Every pass by name. Add a pass here and it is usable from pipelines, configs and the CLI.
import type { Pass } from './pass.js';

const PASSES: Pass[] = [];

export function registerPass(p: Pass): void {
  for (const name of [p.name, ...(p.aliases ?? [])]) {
    if (getPass(name)) throw new Error(`pass '${name}' registered twice`);
  }
  PASSES.push(p);
}

/** A pass by its name or a former name (alias). */
export function getPass(name: string): Pass | undefined {
  return PASSES.find((p) => p.name === name) ?? PASSES.find((p) => p.aliases?.includes(name));
}

export function allPasses(): readonly Pass[] {
  return PASSES;
}
