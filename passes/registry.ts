// Every pass by name. Add a pass here and it is usable from pipelines, configs and the CLI.
import type { Pass } from './pass.js';

const PASSES: Pass[] = [];

export function registerPass(p: Pass): void {
  if (PASSES.some((x) => x.name === p.name)) throw new Error(`pass '${p.name}' registered twice`);
  PASSES.push(p);
}

export function getPass(name: string): Pass | undefined {
  return PASSES.find((p) => p.name === name);
}

export function allPasses(): readonly Pass[] {
  return PASSES;
}
