// Mixed precision under a size budget (`quantize --budget 4.5bpw|3MB`): each weight gets 4-bit blocks of
// 128, 64 or 32, 8 bits, or fp16 (MatMul/Gemm weights only: a Cast to fp32 follows it), by measured
// sensitivity, as llama.cpp's Q4_K_M and importance matrix do by hand. Each format's output error on
// calibration activations, mean over rows of ||x (W - Q(W))||^2, is measured with round-to-nearest
// (fp16: the nearest half); then, from the smallest format of every weight, the upgrade with
// the most error removed per byte added is taken while it fits the budget (a greedy knapsack).
import { DataType, InputError, Tensor, float16ToFloat32Array, float32ToFloat16Array } from '../../ir/index.js';
import { readSlice, type Candidate } from './candidates.js';
import { rtn } from './methods/rtn.js';
import { dequantize, kBlocksOf, type CalibrationData } from './types.js';

export interface WeightFormat {
  /** 16: fp16, no blocks (block 0). */
  bits: 4 | 8 | 16;
  block: number;
}

/** From smallest to largest. */
export const BUDGET_FORMATS: readonly WeightFormat[] = [
  { bits: 4, block: 128 },
  { bits: 4, block: 64 },
  { bits: 4, block: 32 },
  { bits: 8, block: 128 },
  { bits: 16, block: 0 },
];

export type Budget = { bpw: number } | { bytes: number };

/** "4.5bpw", "3MB", "2.5MiB", "800kB" or a byte count. */
export function parseBudget(text: string): Budget {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(bpw|b|kb|kib|mb|mib|gb|gib)?\s*$/i.exec(text);
  const unit = m?.[2]?.toLowerCase() ?? 'b';
  const v = Number(m?.[1]);
  if (!m || !(v > 0)) throw new InputError(`budget '${text}' is not a size: use bits per weight (4.5bpw) or bytes (3MB, 2.5MiB, 3000000)`);
  if (unit === 'bpw') return { bpw: v };
  const mult: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 2 ** 20, gb: 1e9, gib: 2 ** 30 };
  return { bytes: Math.floor(v * mult[unit]!) };
}

/** Stored bytes of a [K, N] weight in `f`: codes, fp32 scales and, asymmetric, packed zero points. */
export function formatBytes(K: number, N: number, f: WeightFormat, sym: boolean): number {
  if (f.bits === 16) return K * N * 2;
  const kb = kBlocksOf(K, f.block);
  return N * ((kb * f.block * f.bits) / 8 + kb * 4 + (sym ? 0 : Math.ceil((kb * f.bits) / 8)));
}

export interface BudgetChoice {
  weight: string;
  shape: [number, number];
  bits: 4 | 8 | 16;
  block: number;
  bytes: number;
  /** Mean squared output error per calibration row (or per looked-up row without activations) of each format, smallest first. */
  errors: number[];
  /** Whether the error was measured on calibration activations (else on the weight alone). */
  calibrated: boolean;
}

export interface BudgetPlan {
  budget: string;
  /** Budget and result in bytes and bits per weight, over the weights planned. */
  budgetBytes: number;
  bytes: number;
  bitsPerWeight: number;
  weights: number;
  choices: BudgetChoice[];
}

const halfRounded = (w: Float32Array) => float16ToFloat32Array(float32ToFloat16Array(w));

/** Mean over rows of ||x dW||^2 (x: calibration rows [rows, K]; dW [K, N] row-major). */
function outputError(dw: Float32Array, K: number, N: number, calib: CalibrationData | undefined, rows: number): number {
  if (!calib) {
    let s = 0;
    for (const v of dw) s += v * v;
    return s / rows;
  }
  const y = new Float64Array(N);
  let s = 0;
  for (let r = 0; r < calib.rows; r++) {
    y.fill(0);
    for (let k = 0; k < K; k++) {
      const x = calib.x[r * K + k]!;
      if (x === 0) continue;
      const off = k * N;
      for (let n = 0; n < N; n++) y[n]! += x * dw[off + n]!;
    }
    for (let n = 0; n < N; n++) s += y[n]! * y[n]!;
  }
  return s / calib.rows;
}

/** The format of each weight (one entry per distinct weight, in candidate order) under the budget. */
export function planBudget(
  cands: readonly Candidate[],
  budgetText: string,
  sym: boolean,
  calibration: ((weight: string, node: Candidate['node']) => CalibrationData | undefined) | undefined,
): BudgetPlan {
  const budget = parseBudget(budgetText);
  const seen = new Set<string>();
  const choices: BudgetChoice[] = [];
  const fmts: WeightFormat[][] = [];
  for (const c of cands) {
    const name = c.w.value.name;
    if (c.tiedTo || seen.has(name)) continue;
    seen.add(name);
    const calib = c.kind === 'gather' ? undefined : calibration?.(name, c.node);
    const w = readSlice(c, 0, c.N);
    // A gather, or an lm_head sharing its table with one, needs whole blocks along K.
    const plain = c.kind !== 'gather' && !c.tiedGather;
    const formats = BUDGET_FORMATS.filter((f) => (f.bits === 16 ? plain : plain || c.K % f.block === 0));
    const errors = formats.map((f) => {
      const q =
        f.bits === 16 ? halfRounded(w) : dequantize(rtn.quantize(w, c.K, c.N, { bits: f.bits, blockSize: f.block, symmetric: sym }));
      for (let i = 0; i < q.length; i++) q[i] = w[i]! - q[i]!;
      // An embedding row is read once per token: its error per looked-up row is the mean over rows (N = vocab).
      return outputError(q, c.K, c.N, calib, c.kind === 'gather' ? c.N : 1);
    });
    const f0 = formats[0]!;
    choices.push({
      weight: name,
      shape: [c.K, c.N],
      bits: f0.bits,
      block: f0.block,
      bytes: formatBytes(c.K, c.N, f0, sym),
      errors,
      calibrated: !!calib,
    });
    fmts.push(formats);
  }
  const weights = choices.reduce((s, ch) => s + ch.shape[0] * ch.shape[1], 0);
  const budgetBytes = 'bytes' in budget ? budget.bytes : Math.floor((budget.bpw * weights) / 8);
  let bytes = choices.reduce((s, ch) => s + ch.bytes, 0);
  if (bytes > budgetBytes)
    throw new InputError(
      `budget ${budgetText} (${budgetBytes} bytes) is below the smallest form, 4-bit blocks of 128: ${bytes} bytes, ` +
        `${((8 * bytes) / weights).toFixed(3)} bits per weight; raise it`,
    );
  const level = choices.map(() => 0);
  for (;;) {
    let best = -1,
      bestTo = 0,
      bestGain = 0;
    choices.forEach((ch, i) => {
      const formats = fmts[i]!;
      for (let to = level[i]! + 1; to < formats.length; to++) {
        const add = formatBytes(ch.shape[0], ch.shape[1], formats[to]!, sym) - ch.bytes;
        const gain = (ch.errors[level[i]!]! - ch.errors[to]!) / Math.max(add, 1);
        if (bytes + add <= budgetBytes && gain > bestGain) {
          best = i;
          bestTo = to;
          bestGain = gain;
        }
      }
    });
    if (best < 0) break;
    const ch = choices[best]!,
      f = fmts[best]![bestTo]!;
    const nb = formatBytes(ch.shape[0], ch.shape[1], f, sym);
    bytes += nb - ch.bytes;
    Object.assign(ch, { bits: f.bits, block: f.block, bytes: nb });
    level[best] = bestTo;
  }
  return { budget: budgetText, budgetBytes, bytes, bitsPerWeight: (8 * bytes) / weights, weights, choices };
}

/** A weight the budget keeps in fp16: stored as half, widened by a Cast where the graph reads it
 * (a weight that is half already stays as it is). */
export function storeHalf(c: Candidate): void {
  const v = c.w.value,
    t = c.w.tensor,
    g = v.graph;
  if (t.dtype !== DataType.FLOAT) return;
  const half = g.addInitializer(
    Tensor.fromBytes(
      g.uniqueName(`${v.name}_fp16`),
      DataType.FLOAT16,
      [...t.dims],
      new Uint8Array(float32ToFloat16Array(t.toFloat32()).buffer),
    ),
  );
  const wide = g.createValue(g.uniqueName(`${v.name}_fp32`), v.type);
  g.replaceAllUses(v, wide);
  // First in the graph: it reads an initializer only, and its users may sit in subgraphs.
  g.addNode({ opType: 'Cast', name: `${v.name}_cast`, inputs: [half], outputs: [wide], attrs: { to: DataType.FLOAT } }, g.nodes[0]);
  if (!v.uses.length && !v.isGraphOutput) g.removeInitializer(v);
}
