// Data-free activation statistics: the per-channel scale of a MatMul's input read off the norm
// weights (gamma, beta) feeding it, so data-free methods can weight their error per input channel
// without running anything. Pure graph analysis; runtime/calibrate.ts collects the real thing.
import { DataType, Model, Value } from '../../ir/index.js';
import type { CalibrationData } from './types.js';

const FLOATS = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16]);

/** Weight name -> the activation value that multiplies it, for MatMuls with a constant 2-D float B. */
export function matmulActivations(model: Model, only?: string[]): Map<string, Value> {
  const want = only ? new Set(only) : undefined;
  const out = new Map<string, Value>();
  for (const node of model.graph.nodes) {
    if (node.opType !== 'MatMul' || node.domain !== '') continue;
    const a = node.input(0),
      b = node.input(1);
    const t = b?.initializer;
    if (!a || !b || !t || t.dims.length !== 2 || !FLOATS.has(t.dtype)) continue;
    if (want && !want.has(b.name)) continue;
    out.set(b.name, a);
  }
  return out;
}

/** A 1-D float constant of length K, as numbers; undefined otherwise. */
function channelConst(v: Value | null | undefined, K: number): Float32Array | undefined {
  const t = v?.initializer;
  return t && t.dims.length === 1 && t.dims[0] === K && FLOATS.has(t.dtype) ? t.toFloat32() : undefined;
}

/** Per-channel RMS of a normalisation's output: sqrt(gamma^2 + beta^2) for a zero-mean, unit-variance
 * normalised input (beta 0 for RMSNorm). */
function normRms(v: Value, K: number): Float32Array | undefined {
  let p = v.producer;
  while (p && (p.opType === 'Cast' || p.opType === 'Identity')) p = p.input(0)?.producer ?? null;
  if (!p) return undefined;
  const rms = (g: Float32Array | undefined, b?: Float32Array) => g && Float32Array.from(g, (x, k) => Math.hypot(x, b?.[k] ?? 0));
  switch (p.opType) {
    case 'LayerNormalization':
    case 'SimplifiedLayerNormalization':
      return p.outputs[0] === v ? rms(channelConst(p.input(1), K), channelConst(p.input(2), K)) : undefined;
    case 'SkipLayerNormalization':
    case 'SkipSimplifiedLayerNormalization':
      return p.outputs[0] === v ? rms(channelConst(p.input(2), K), channelConst(p.input(3), K)) : undefined;
    case 'Add': {
      // LayerNorm written out: Mul(normalised, gamma) + beta
      const i = channelConst(p.input(0), K) ? 0 : 1,
        beta = channelConst(p.input(i), K),
        m = p.input(1 - i);
      const mul = m?.producer;
      if (!beta || !m || mul?.opType !== 'Mul') return undefined;
      return rms(channelConst(mul.input(0), K) ?? channelConst(mul.input(1), K), beta);
    }
    case 'Mul': {
      // RMSNorm written out: gamma * normalised
      const g = channelConst(p.input(0), K) ?? channelConst(p.input(1), K);
      const other = channelConst(p.input(0), K) ? p.input(1) : p.input(0);
      return other && !other.initializer ? rms(g) : undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Data-free activation statistics: for each MatMul weight whose input is a normalisation's output
 * (RMSNorm / LayerNorm, written out or fused), one row holding the per-channel RMS that the norm
 * scale implies (the normalised tensor has unit mean square in every channel, then gamma scales
 * channel k). Weights fed by anything else are absent. No input is run: a stand-in for calibration
 * rows for methods that weight their error per input channel (mse-search).
 */
export function normScaleEstimates(model: Model, only?: string[]): Map<string, CalibrationData> {
  const out = new Map<string, CalibrationData>();
  for (const [w, a] of matmulActivations(model, only)) {
    const K = model.graph.value(w).initializer!.dims[0]!;
    const x = normRms(a, K);
    if (x) out.set(w, { x, rows: 1 });
  }
  return out;
}
