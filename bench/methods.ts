// Better-than-RTN methods against RTN in the same run, per weight on one thread, on a 3B decoder's
// shapes (Llama-3.2-3B: hidden 3072, MLP 8192, 28 layers, k/v 1024, vocabulary 128256) with random
// weights N(0, 0.02) and 512 random calibration rows: RTN, mse-search, GPTQ (its steps apart:
// held-out plan = Hessian + Cholesky of 3/4 of the rows, scoring the three candidates, the full
// factors, applying the winner), AWQ (scale search on 128 rows x 512 columns + RTN of the scaled
// weight) and the float64 JavaScript GPTQ it replaced on a smaller weight.
// From the per-weight figures, an estimate of a whole 3B decoder through GPTQ on 2 cores: weights
// reading one activation (q/k/v, gate/up) share the factors, and two weights are in flight on two
// worker threads, so the estimate is the single-thread sum over the decoder's weights / 2.
// The check on that estimate: one decoder layer of those shapes (q, k, v, o, gate, up, down; random
// weights and calibration rows) through the quantize pass with 2 worker threads, in process CPU time
// (all threads) and wall time, against the layer's share of the estimate.
// `node dist/bench/methods.js [--quick|--layer]` runs it alone (--quick: the 3072 x 3072 shape only, no
// layer; --layer: the layer only).
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { rng, randn } from '../runtime/ort.js';
import { rtnQuantize } from '../passes/quant/methods/rtn.js';
import { mseSearchQuantize } from '../passes/quant/methods/mse-search.js';
import { gptqFactors, gptqPick, gptqPlan, gptqScores, gptqApply, releaseGptqMemory, scoredColumns } from '../passes/quant/methods/gptq.js';
import { gptqReferenceQuantize } from '../passes/quant/methods/gptq-reference.js';
import { awqQuantize } from '../passes/quant/methods/awq.js';
import type { CalibrationData, QuantParams } from '../passes/quant/types.js';
import { DataType, GraphBuilder } from '../ir/index.js';
import { quantizeInt4 } from '../passes/quantize.js';
import { resolveOptions } from '../passes/pass.js';

const P: QuantParams = { bits: 4, blockSize: 32, symmetric: true };
const ROWS = 512;

export interface ShapeFigures {
  K: number;
  N: number;
  rtnMs: number;
  mseMs: number;
  awqMs?: number;
  /** GPTQ steps: held-out plan (fit factors), scores, full factors, apply. */
  gptq: { planMs: number; scoresMs: number; fullMs: number; applyMs: number; pick: number };
}

export interface MethodsFigures {
  shapes: ShapeFigures[];
  /** The float64 JS GPTQ and the SIMD one on the same 1024 x 1024 weight (ms). */
  old: { K: number; N: number; oldMs: number; newMs: number };
  /** Load average over the run (the machine is shared). */
  load: [number, number];
  estimate3B?: { seconds: number; noCheckSeconds: number; layers: number; layerCpuSeconds: number };
  /** One 3B-shaped layer through the quantize pass on 2 threads: process CPU and wall seconds. */
  layer?: { cpuSeconds: number; wallSeconds: number; load: [number, number] };
}

/** CPU milliseconds of this process (the machine is shared: wall time measures the neighbours too). */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
};
const time = <T>(f: () => T): [T, number] => {
  const t0 = cpuMs();
  const r = f();
  return [r, cpuMs() - t0];
};

function calibration(K: number, seed: number): CalibrationData {
  // correlated inputs (a shared factor per row) plus noise, a few channels x8
  const r = rng(seed),
    g = randn(r, ROWS),
    a = randn(r, K),
    x = randn(r, ROWS * K);
  for (let i = 0; i < ROWS; i++) for (let k = 0; k < K; k++) x[i * K + k] = (2 * g[i]! * a[k]! + x[i * K + k]!) * (k % 97 === 5 ? 8 : 1);
  return { x, rows: ROWS };
}

export function benchShape(K: number, N: number): ShapeFigures {
  const w = randn(rng(K + N), K * N, 0.02),
    calib = calibration(K, 7);
  rtnQuantize(w, K, N, P); // warm-up
  const rtnMs = Math.min(...[0, 1, 2].map(() => time(() => rtnQuantize(w, K, N, P))[1]));
  const [, mseMs] = time(() => mseSearchQuantize(w, K, N, P));
  const [plan, planMs] = time(() => gptqPlan(calib, K));
  const [errs, scoresMs] = time(() => scores(w, K, N, plan));
  plan.pick = gptqPick(errs);
  const [full, fullMs] = time(() => (plan.pick < 2 ? gptqFactors(calib, K, {}, plan.pick === 0) : undefined));
  const [, applyMs] = time(() => gptqApply(w, K, N, P, { K, full, pick: plan.pick }));
  const [, awqMs] = time(() => awqQuantize(w, K, N, P, calib));
  releaseGptqMemory();
  return { K, N, rtnMs, mseMs, awqMs, gptq: { planMs, scoresMs, fullMs, applyMs, pick: plan.pick } };
}

/** Seconds for a 3B decoder's weights through GPTQ on 2 threads, from the three measured shapes. */
function estimate3B(s: ShapeFigures[]): MethodsFigures['estimate3B'] {
  const at = (K: number, N: number) => s.find((x) => x.K === K && x.N === N);
  const a = at(3072, 3072),
    b = at(3072, 8192),
    c = at(8192, 3072);
  if (!a || !b || !c) return undefined;
  const factors = (x: ShapeFigures) => x.gptq.planMs + x.gptq.fullMs;
  const rest = (x: ShapeFigures) => x.gptq.scoresMs + x.gptq.applyMs;
  const layers = 28;
  // q, o (3072 x 3072), k, v (3072 x 1024: a third of q's apply, the same ~512 scored columns), gate,
  // up (3072 x 8192), down (8192 x 3072); factors once per activation: attention input, o's input,
  // MLP input, down's input.
  const layer = 3 * factors(a) + factors(c) + 2 * rest(a) + 2 * (a.gptq.scoresMs + a.gptq.applyMs / 3) + 2 * rest(b) + rest(c);
  // lm_head 3072 x 128256 on the final norm's output (its check also scores ~512 columns)
  const head = factors(a) + b.gptq.scoresMs + (b.gptq.applyMs * 128256) / 8192;
  // the same without the held-out check: full factors and apply only
  const fullOnly = (x: ShapeFigures) => x.gptq.fullMs;
  const noCheck =
    layers * (3 * fullOnly(a) + fullOnly(c) + (2 + 2 / 3) * a.gptq.applyMs + 2 * b.gptq.applyMs + c.gptq.applyMs) +
    fullOnly(a) +
    (b.gptq.applyMs * 128256) / 8192;
  return { seconds: (layers * layer + head) / 1e3 / 2, noCheckSeconds: noCheck / 1e3 / 2, layers, layerCpuSeconds: layer / 1e3 };
}

export function benchMethods(quick = false): MethodsFigures {
  const l0 = os.loadavg()[0]!;
  const shapes = (
    quick
      ? [[3072, 3072]]
      : [
          [3072, 3072],
          [3072, 8192],
          [8192, 3072],
        ]
  ).map(([K, N]) => benchShape(K!, N!));
  const K = 1024,
    N = 1024,
    w = randn(rng(3), K * N, 0.02),
    calib = calibration(K, 9);
  const [, oldMs] = time(() => gptqReferenceQuantize(w, K, N, P, calib));
  const [, newMs] = time(() => gptqQuantize1(w, K, N, calib));
  return { shapes, old: { K, N, oldMs, newMs }, load: [l0, os.loadavg()[0]!], estimate3B: estimate3B(shapes) };
}

/** One layer's weights (Llama-3.2-3B shapes) through the quantize pass, GPTQ on 2 worker threads. */
export async function benchLayer(): Promise<MethodsFigures['layer']> {
  const H = 3072,
    F = 8192,
    KV = 1024;
  const b = new GraphBuilder({ opset: 17 });
  const xs = {
    attn: b.input('x', DataType.FLOAT, [1, H]),
    o: b.input('a', DataType.FLOAT, [1, H]),
    mlp: b.input('h', DataType.FLOAT, [1, H]),
  };
  const xd = b.input('m', DataType.FLOAT, [1, F]);
  const calib = new Map<string, CalibrationData>();
  const acts = { attn: calibration(H, 1), o: calibration(H, 2), mlp: calibration(H, 3), down: calibration(F, 4) };
  const weights: [string, keyof typeof acts, number, number][] = [
    ['q', 'attn', H, H],
    ['k', 'attn', H, KV],
    ['v', 'attn', H, KV],
    ['o', 'o', H, H],
    ['gate', 'mlp', H, F],
    ['up', 'mlp', H, F],
    ['down', 'down', F, H],
  ];
  weights.forEach(([name, act, K, N], i) => {
    const x = act === 'down' ? xd : xs[act];
    const y = b.op1('MatMul', [x, b.constF32(`${name}.weight`, [K, N], randn(rng(100 + i), K * N, 0.02))], { name });
    b.output(y, `y_${name}`, DataType.FLOAT, [1, N]);
    calib.set(`${name}.weight`, acts[act]);
  });
  const m = b.build();
  const l0 = os.loadavg()[0]!,
    w0 = performance.now(),
    c0 = cpuMs();
  await quantizeInt4.run(m, resolveOptions(quantizeInt4, { method: 'gptq', bits: 4, block: 32, sym: true, role: 'decoder', threads: 2 }), {
    calibration: (n) => calib.get(n),
  });
  return { cpuSeconds: (cpuMs() - c0) / 1e3, wallSeconds: (performance.now() - w0) / 1e3, load: [l0, os.loadavg()[0]!] };
}

/** The held-out check on the columns the quantize pass scores. */
function scores(w: Float32Array, K: number, N: number, plan: ReturnType<typeof gptqPlan>): Float64Array[] {
  const c = scoredColumns(w, K, N, 0, N)!;
  return gptqScores(c.w, K, c.n, P, plan);
}

function gptqQuantize1(w: Float32Array, K: number, N: number, calib: CalibrationData): void {
  const plan = gptqPlan(calib, K);
  plan.pick = gptqPick(scores(w, K, N, plan));
  const full = plan.pick < 2 ? gptqFactors(calib, K, {}, plan.pick === 0) : undefined;
  gptqApply(w, K, N, P, { K, full, pick: plan.pick });
}

export function formatMethodsBench(r: MethodsFigures): string[] {
  const f = (x: number, d = 0) => x.toFixed(d);
  const lines = [
    `better-than-RTN methods per weight, 1 thread, CPU time, int4 block 32 sym, ${ROWS} calibration rows, random weights (load average ${f(r.load[0], 1)} -> ${f(r.load[1], 1)} on ${os.cpus().length} cores)`,
  ];
  for (const s of r.shapes) {
    const g = s.gptq,
      gt = g.planMs + g.scoresMs + g.fullMs + g.applyMs;
    lines.push(
      `  ${s.K}x${s.N}: rtn ${f(s.rtnMs, 1)} ms; mse-search ${f(s.mseMs)} ms = ${f(s.mseMs / s.rtnMs)}x rtn; awq ${s.awqMs === undefined ? 'n/a' : `${f(s.awqMs)} ms = ${f(s.awqMs / s.rtnMs)}x rtn`}`,
      `      gptq ${f(gt)} ms = ${f(gt / s.rtnMs)}x rtn (held-out plan ${f(g.planMs)}, scoring 3 candidates ${f(g.scoresMs)}, full factors ${f(g.fullMs)}, apply ${f(g.applyMs)}; picked ${['gptq', 'no feedback', 'mse-search'][g.pick]}); without the factors (shared by q/k/v, gate/up) ${f(g.scoresMs + g.applyMs)} ms; apply alone ${f(g.applyMs / s.rtnMs)}x rtn`,
    );
  }
  lines.push(
    `  gptq ${r.old.K}x${r.old.N}: float64 JavaScript ${f(r.old.oldMs)} ms, WebAssembly SIMD ${f(r.old.newMs)} ms = ${f(r.old.oldMs / r.old.newMs, 1)}x faster`,
  );
  if (r.estimate3B)
    lines.push(
      `  estimate, a 3B decoder (${r.estimate3B.layers} layers + lm_head) through gptq on 2 threads: ${f(r.estimate3B.seconds / 60, 1)} min, ${f(r.estimate3B.noCheckSeconds / 60, 1)} min without the held-out check (per-weight CPU sums above / 2; aim < 15 min)`,
    );
  if (r.layer && r.estimate3B)
    lines.push(
      `  check: one such layer through the quantize pass, gptq on 2 threads: ${f(r.layer.cpuSeconds, 1)} s CPU (all threads; the estimate's layer: ${f(r.estimate3B.layerCpuSeconds, 1)} s = ${f(r.layer.cpuSeconds / r.estimate3B.layerCpuSeconds, 2)}x), ${f(r.layer.wallSeconds, 1)} s wall (load ${f(r.layer.load[0], 1)} -> ${f(r.layer.load[1], 1)})`,
    );
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  if (process.argv.includes('--layer')) {
    const l = (await benchLayer())!;
    console.log(
      `one 3B-shaped layer, gptq on 2 threads: ${l.cpuSeconds.toFixed(1)} s CPU, ${l.wallSeconds.toFixed(1)} s wall (load ${l.load[0].toFixed(1)})`,
    );
  } else {
    const r = benchMethods(quick);
    if (!quick) r.layer = await benchLayer();
    for (const line of formatMethodsBench(r)) console.log(line);
  }
}
