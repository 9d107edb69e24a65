// The quantize pass's options resolved against the model: bits per kind of weight, the method, and
// the key under which a weight's quantized form is shared.
import type { Candidate } from './candidates.js';
import type { GatherForm } from './gather.js';
import type { Role } from '../../ir/summary.js';
import type { QuantMethod } from './types.js';

export interface QuantSettings {
  role: Role;
  format: 'matmulnbits' | 'qdq';
  /** Bits of linear weights, embeddings and the lm_head. */
  bits: 4 | 8;
  embedBits: 4 | 8;
  lmBits: 4 | 8;
  embeddings: boolean;
  block: number;
  sym: boolean;
  method: QuantMethod;
  scales: 'auto' | 'fp32' | 'fp16';
  include: readonly string[];
  exclude: readonly string[];
  embedForm: GatherForm;
  tie: boolean;
  maxSliceMb: number;
  threads: number;
  accuracyLevel: number;
  /** The bits `c` is quantized to. */
  bitsOf(c: Candidate): 4 | 8;
  /** The block size `c` is quantized with (`block`, or its --budget choice). */
  blockOf(c: Candidate): number;
}

/** A validated bits option (4 or 8), or `fallback` when unset. */
export function bitsOr(v: number | undefined, fallback: 4 | 8): 4 | 8 {
  if (v === undefined) return fallback;
  if (v !== 4 && v !== 8) throw new Error(`bits must be 4 or 8, got ${v}`);
  return v;
}

/** Consumers of the same weight with the same layout, bits and Gemm alpha share one quantized form. */
export function weightKey(c: Candidate, s: Pick<QuantSettings, 'bitsOf'>): string {
  return `${c.w.value.name}|${c.storedNK}|${s.bitsOf(c)}|${c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1}`;
}
