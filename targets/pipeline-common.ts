// Pipeline pieces every target starts from: tidy, type, fold, then the fusions that apply.
import type { StepSpec } from './target.js';

export const PREPARE: StepSpec[] = [{ pass: 'cleanup' }, { pass: 'infer-shapes' }, { pass: 'fold-constants' }, { pass: 'cleanup' }];

/** Fusions whose fused ops the target runs, by pass name (unregistered passes are reported, not run). */
export function fusions(names: string[]): StepSpec[] {
  return names.map((pass) => ({ pass }));
}
