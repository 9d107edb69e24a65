// mse-search's block search (searchBlock in mse-search.ts) with its inner loop in WebAssembly SIMD:
// four adjacent output columns are the four lanes, and one kernel call rounds a block under a list
// of trial (scale, zero point) pairs per lane, returning per trial and lane the weighted sums the
// least-squares refit needs (sum h c, sum h c^2, sum h x c, in float64). The candidate lists, the
// refit and the choice stay in JavaScript (float64), as in searchBlock; rounding is float32,
// c = clamp(floor(x * f32(1/s) + 0.5) + z, 0, qmax), mirrored exactly when the codes are written.
// Each lane's arithmetic depends on its own column only: results do not depend on slicing.
import type { QuantizedWeight } from '../types.js';
import { F32, I, I32, V, V128, f32c, get, i32, loop, mem, moduleOf, set, simd, type FuncDef } from './wasm-asm.js';

// params: x (first row of the 4 columns), row stride (bytes), rows, h (row weights, f64), trial
// scales [T][4], trial zero points [T][4] (f32), T, out [T][3][4], qmax (f32)
const XP = 0,
  STRIDE = 1,
  ROWS = 2,
  HP = 3,
  SP = 4,
  ZP = 5,
  NT = 6,
  OUT = 7,
  QMAX = 8;
const T = 9,
  R = 10,
  PX = 11,
  PH = 12,
  PT = 13;
const INV = 14,
  Z = 15,
  VV = 16,
  CC = 17,
  HC = 18,
  HALF = 19,
  ZERO = 20,
  QM = 21,
  H64 = 22,
  C64 = 23,
  ACC = 24;
const HI = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];

function trialsFunc(): FuncDef {
  const vf = (op: number) => simd(op);
  const body = [
    ...f32c(0.5),
    ...vf(V.f32splat),
    ...set(HALF),
    ...f32c(0),
    ...vf(V.f32splat),
    ...set(ZERO),
    ...get(QMAX),
    ...vf(V.f32splat),
    ...set(QM),
    ...loop(T, i32(0), get(NT), i32(1), [
      // inv = f32(1 / s), z
      ...get(T),
      ...i32(4),
      I.shl,
      ...set(PT),
      ...f32c(1),
      ...vf(V.f32splat),
      ...get(SP),
      ...get(PT),
      I.add,
      ...simd(V.load, ...mem(0)),
      ...vf(V.fdiv),
      ...set(INV),
      ...get(ZP),
      ...get(PT),
      I.add,
      ...simd(V.load, ...mem(0)),
      ...set(Z),
      ...[0, 1, 2, 3, 4, 5].flatMap((a) => [...get(ZERO), ...set(ACC + a)]),
      ...get(XP),
      ...set(PX),
      ...get(HP),
      ...set(PH),
      ...loop(R, i32(0), get(ROWS), i32(1), [
        ...get(PX),
        ...simd(V.load, ...mem(0)),
        ...set(VV),
        // c = min(qmax, max(0, floor(v * inv + 0.5) + z))
        ...get(VV),
        ...get(INV),
        ...vf(V.fmul),
        ...get(HALF),
        ...vf(V.fadd),
        ...vf(V.floor),
        ...get(Z),
        ...vf(V.fadd),
        ...get(ZERO),
        ...vf(V.fmax),
        ...get(QM),
        ...vf(V.fmin),
        ...set(CC),
        // float64 sums (the refit subtracts nearly equal terms): lanes 0-1 and 2-3 as f64x2
        ...get(PH),
        ...simd(V.load64splat, ...mem(3)),
        ...set(H64),
        ...[0, 1].flatMap((half) => {
          const hi = (x: number) => (half ? [...get(x), ...get(x), ...simd(V.shuffle, ...HI)] : get(x));
          const o = half * 3;
          return [
            ...hi(CC),
            ...vf(V.promoteLow),
            ...set(C64),
            ...get(H64),
            ...get(C64),
            ...vf(V.dmul),
            ...set(HC),
            ...get(ACC + o),
            ...get(HC),
            ...vf(V.dadd),
            ...set(ACC + o),
            ...get(ACC + o + 1),
            ...get(HC),
            ...get(C64),
            ...vf(V.dmul),
            ...vf(V.dadd),
            ...set(ACC + o + 1),
            ...get(ACC + o + 2),
            ...get(HC),
            ...hi(VV),
            ...vf(V.promoteLow),
            ...vf(V.dmul),
            ...vf(V.dadd),
            ...set(ACC + o + 2),
          ];
        }),
        ...get(PX),
        ...get(STRIDE),
        I.add,
        ...set(PX),
        ...get(PH),
        ...i32(8),
        I.add,
        ...set(PH),
      ]),
      // out[t] = sq, sqq, sxq as float64 [3][4]
      ...get(OUT),
      ...get(T),
      ...i32(96),
      I.mul,
      I.add,
      ...set(PT),
      ...[0, 1, 2].flatMap((q) =>
        [0, 1].flatMap((half) => [...get(PT), ...get(ACC + half * 3 + q), ...simd(V.store, ...mem(0, q * 32 + half * 16))]),
      ),
    ]),
  ];
  return {
    params: [I32, I32, I32, I32, I32, I32, I32, I32, F32],
    locals: [
      [5, I32],
      [16, V128],
    ],
    body,
  };
}

type TrialsFn = (x: number, stride: number, rows: number, h: number, s: number, z: number, nt: number, out: number, qmax: number) => void;

let compiled: WebAssembly.Module | null | undefined;
function searchModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(moduleOf([trialsFunc()]));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** WebAssembly SIMD is there (the JS searchBlock is used otherwise). */
export function searchSimdAvailable(): boolean {
  return searchModule() !== null;
}

const RATIOS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];
const ASYM_RATIOS = [1, 0.94, 0.88, 0.82, 0.76];
const REFINE_ITERS = 3;
/** Most trials per call (the heavy-element grid of 8-bit blocks is the longest list). */
const MAX_TRIALS = 2 * 255 + 64;

/** Block search results per column and block: float scale and integer zero point, and the codes. */
export interface BlockFits {
  scales: Float32Array;
  zeroPoints: Uint8Array;
}

/**
 * The searcher: a private memory holding the weight [K][Np] (Np = N rounded up to 4, padding 0),
 * the row weights h [K], and the trial lists and sums.
 */
export class BlockSearch {
  private readonly memory: WebAssembly.Memory;
  private readonly fn: TrialsFn;
  private f32: Float32Array;
  private Np = 0;
  private hAt = 0;
  private h = new Float64Array(0);
  private sAt = 0;
  private zAt = 0;
  private oAt = 0;
  // per lane scratch
  private readonly ts = Array.from({ length: 4 }, () => new Float64Array(MAX_TRIALS));
  private readonly tz = Array.from({ length: 4 }, () => new Float64Array(MAX_TRIALS));
  private readonly nts = new Int32Array(4);

  constructor() {
    const mod = searchModule();
    if (!mod) throw new Error('WebAssembly SIMD is not available in this runtime');
    this.memory = new WebAssembly.Memory({ initial: 1 });
    this.fn = new WebAssembly.Instance(mod, { e: { m: this.memory } }).exports.f0 as TrialsFn;
    this.f32 = new Float32Array(this.memory.buffer);
  }

  /** Load a weight [K, N] (row stride N) and row weights (undefined: all 1). */
  load(w: Float32Array, K: number, N: number, h?: ArrayLike<number>): void {
    const Np = Math.ceil(N / 4) * 4;
    this.Np = Np;
    this.hAt = (K * Np * 4 + 7) & ~7;
    this.sAt = this.hAt + K * 8;
    this.zAt = this.sAt + MAX_TRIALS * 16;
    this.oAt = (this.zAt + MAX_TRIALS * 16 + 7) & ~7;
    const need = this.oAt + MAX_TRIALS * 96,
      have = this.memory.buffer.byteLength;
    if (need > have) this.memory.grow(Math.ceil((need - have) / 65536));
    const f = (this.f32 = new Float32Array(this.memory.buffer));
    if (Np === N) f.set(w.subarray(0, K * N));
    else {
      f.fill(0, 0, K * Np);
      for (let k = 0; k < K; k++) f.set(w.subarray(k * N, (k + 1) * N), k * Np);
    }
    this.h = new Float64Array(this.memory.buffer, this.hAt, K);
    for (let k = 0; k < K; k++) this.h[k] = h ? h[k]! : 1;
  }

  /** Rows [k0, k0+len) of columns n4..n4+3: the search per lane into fits (scale, zero) and codes [4][len]. */
  searchGroup(k0: number, len: number, n4: number, bits: 4 | 8, symmetric: boolean, weighted: boolean, out: GroupResult): void {
    const f = this.f32,
      Np = this.Np,
      qmax = (1 << bits) - 1,
      mid = 1 << (bits - 1);
    const { ts, tz, nts } = this;
    const st = out.stats;
    for (let j = 0; j < 4; j++) {
      let lo = 0,
        hi = 0,
        sx = 0,
        sxx = 0,
        sh = 0,
        heavy = 0,
        hv = -1;
      for (let i = 0, o = k0 * Np + n4 + j; i < len; i++, o += Np) {
        const v = f[o]!,
          wi = this.h[k0 + i]!;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sx += wi * v;
        sxx += wi * v * v;
        sh += wi;
        if (weighted && wi * v * v > hv) {
          hv = wi * v * v;
          heavy = i;
        }
      }
      st[j * 6] = lo;
      st[j * 6 + 1] = hi;
      st[j * 6 + 2] = sx;
      st[j * 6 + 3] = sxx;
      st[j * 6 + 4] = sh;
      out.zero[j] = lo === 0 && hi === 0 ? 1 : 0;
      let n = 0;
      const add = (s: number, z: number) => {
        ts[j]![n] = s;
        tz[j]![n++] = z;
      };
      if (out.zero[j]) add(1, 0);
      else if (symmetric) {
        const m = -lo > hi ? lo : hi;
        for (const r of RATIOS) {
          add((m * r) / -mid, mid);
          add((m * r) / (mid - 1), mid);
        }
      } else {
        for (const a of ASYM_RATIOS)
          for (const b of ASYM_RATIOS) {
            const l = lo * a,
              s = (hi * b - l) / qmax;
            add(s, Math.min(qmax, Math.max(0, Math.round(-l / s))));
          }
      }
      if (weighted && !out.zero[j]) {
        const v = f[(k0 + heavy) * Np + n4 + j]!,
          span = symmetric ? Math.max(-lo, hi) / (mid - 1) : (hi - lo) / qmax;
        for (let c = 1; c <= qmax; c++) {
          const s = Math.abs(v) / c;
          if (s < span * 0.5 || s > span * 1.5) continue;
          if (symmetric) {
            add(s, mid);
            add(-s, mid);
          } else add(s, Math.min(qmax, Math.max(0, Math.round(-lo / s))));
        }
      }
      nts[j] = n;
      out.best[j * 5] = Infinity; // err, s, z, trial s, trial z
      out.best[j * 5 + 1] = 0;
      out.best[j * 5 + 2] = symmetric ? mid : 0;
      out.best[j * 5 + 3] = 1;
      out.best[j * 5 + 4] = symmetric ? mid : 0;
    }
    this.runTrials(k0, len, n4, qmax, symmetric, out, Math.max(nts[0]!, nts[1]!, nts[2]!, nts[3]!));
    // alternate rounding and refit while it helps (per lane)
    const active = [1, 1, 1, 1];
    for (let it = 0; it < REFINE_ITERS && active.some((a) => a); it++) {
      const before = [0, 1, 2, 3].map((j) => out.best[j * 5]!);
      for (let j = 0; j < 4; j++) {
        ts[j]![0] = active[j] && !out.zero[j] ? out.best[j * 5 + 1]! : out.best[j * 5 + 3]!;
        tz[j]![0] = active[j] && !out.zero[j] ? out.best[j * 5 + 2]! : out.best[j * 5 + 4]!;
        nts[j] = 1;
      }
      this.runTrials(k0, len, n4, qmax, symmetric, out, 1, active);
      for (let j = 0; j < 4; j++) if (!(out.best[j * 5]! < before[j]! * (1 - 1e-9))) active[j] = 0;
    }
    this.writeCodes(k0, len, n4, qmax, symmetric, out);
  }

  private runTrials(
    k0: number,
    len: number,
    n4: number,
    qmax: number,
    symmetric: boolean,
    out: GroupResult,
    nt: number,
    active?: number[],
  ) {
    const f = this.f32,
      { ts, tz, nts } = this;
    const s4 = this.sAt / 4,
      z4 = this.zAt / 4;
    for (let j = 0; j < 4; j++) {
      const n = nts[j]!;
      for (let t = 0; t < nt; t++) {
        const u = t < n ? t : 0;
        f[s4 + t * 4 + j] = ts[j]![u]!;
        f[z4 + t * 4 + j] = tz[j]![u]!;
      }
    }
    this.fn((k0 * this.Np + n4) * 4, this.Np * 4, len, this.hAt + k0 * 8, this.sAt, this.zAt, nt, this.oAt, qmax);
    const o8 = new Float64Array(this.memory.buffer, this.oAt, nt * 12),
      st = out.stats;
    for (let j = 0; j < 4; j++) {
      if (out.zero[j] || (active && !active[j])) continue;
      const sx = st[j * 6 + 2]!,
        sxx = st[j * 6 + 3]!,
        sh = st[j * 6 + 4]!;
      for (let t = 0; t < nts[j]!; t++) {
        const sq = o8[t * 12 + j]!,
          sqq = o8[t * 12 + 4 + j]!,
          sxq = o8[t * 12 + 8 + j]!;
        const z = tz[j]![t]!;
        const { err, s, z: zz } = bestFit(sx, sxx, sq, sqq, sxq, sh, z, qmax, symmetric);
        if (err < out.best[j * 5]! && s !== 0) {
          out.best.set([err, s, zz, ts[j]![t]!, z], j * 5);
        }
      }
    }
  }

  private writeCodes(k0: number, len: number, n4: number, qmax: number, symmetric: boolean, out: GroupResult): void {
    const f = this.f32,
      Np = this.Np,
      mid = 1 << (qmax === 15 ? 3 : 7);
    for (let j = 0; j < 4; j++) {
      const c = out.codes[j]!;
      if (out.zero[j] || !(out.best[j * 5]! < Infinity)) {
        c.fill(symmetric ? mid : 0, 0, len);
        out.best[j * 5 + 1] = 0;
        out.best[j * 5 + 2] = symmetric ? mid : 0;
        continue;
      }
      const inv = Math.fround(1 / Math.fround(out.best[j * 5 + 3]!)),
        z = out.best[j * 5 + 4]!;
      let sq = 0,
        sqq = 0,
        sxq = 0;
      for (let i = 0, o = k0 * Np + n4 + j; i < len; i++, o += Np) {
        const v = f[o]!,
          q = Math.floor(Math.fround(Math.fround(v * inv) + 0.5)) + z,
          cq = q < 0 ? 0 : q > qmax ? qmax : q,
          wi = this.h[k0 + i]!;
        c[i] = cq;
        sq += wi * cq;
        sqq += wi * cq * cq;
        sxq += wi * v * cq;
      }
      // the winner's refit again from float64 sums (the trials' float32 sums only rank them)
      const st = out.stats,
        r = bestFit(st[j * 6 + 2]!, st[j * 6 + 3]!, sq, sqq, sxq, st[j * 6 + 4]!, z, qmax, symmetric);
      if (r.s !== 0) {
        out.best[j * 5 + 1] = r.s;
        out.best[j * 5 + 2] = r.z;
      }
    }
  }
}

/** The least-squares scale for the codes with zero z, and (asymmetric) with the zero point of the free affine fit. */
function bestFit(sx: number, sxx: number, sq: number, sqq: number, sxq: number, sh: number, z: number, qmax: number, symmetric: boolean) {
  const f1 = fit(sx, sxx, sq, sqq, sxq, sh, z);
  if (symmetric || !(sqq * sh - sq * sq > 0)) return f1;
  const a = (sh * sxq - sx * sq) / (sh * sqq - sq * sq),
    b = (sx - a * sq) / sh;
  if (a === 0) return f1;
  const z2 = Math.min(qmax, Math.max(0, Math.round(-b / a)));
  if (z2 === z) return f1;
  const f2 = fit(sx, sxx, sq, sqq, sxq, sh, z2);
  return f2.err < f1.err ? f2 : f1;
}

function fit(sx: number, sxx: number, sq: number, sqq: number, sxq: number, n: number, z: number): { err: number; s: number; z: number } {
  const sxd = sxq - z * sx,
    sdd = sqq - 2 * z * sq + n * z * z;
  if (sdd <= 0) return { err: sxx, s: 0, z };
  const s = sxd / sdd;
  return { err: Math.max(0, sxx - s * sxd), s, z };
}

/** One group's results: per lane [err, scale, zero, trial scale, trial zero], whether the block is all zero, codes. */
export interface GroupResult {
  best: Float64Array;
  zero: Uint8Array;
  stats: Float64Array;
  codes: Int32Array[];
}

export function groupResult(bs: number): GroupResult {
  return {
    best: new Float64Array(20),
    zero: new Uint8Array(4),
    stats: new Float64Array(24),
    codes: Array.from({ length: 4 }, () => new Int32Array(bs)),
  };
}

let shared: { s: BlockSearch; r: GroupResult } | undefined;

/** This thread's searcher (its memory is kept for the next weight until released). */
export function blockSearcher(): { s: BlockSearch; r: GroupResult } {
  return (shared ??= { s: new BlockSearch(), r: groupResult(256) });
}

export function releaseBlockSearcher(): void {
  shared = undefined;
}

/**
 * Block row b of q (scales, zero points, codes with the padding at zp): the search over rows
 * [src, src + len) of the weight loaded in `s`, len = the block's rows. `onFit` gets each column's
 * float32 scale and zero point.
 */
export function searchBlockRow(
  s: BlockSearch,
  r: GroupResult,
  q: QuantizedWeight,
  b: number,
  src: number,
  weighted: boolean,
  onFit?: (n: number, scale: number, zp: number) => void,
): void {
  const { N, blockSize: bs, kBlocks, bits, symmetric } = q,
    Kp = kBlocks * bs;
  const k0 = b * bs,
    len = Math.min(q.K, k0 + bs) - k0;

  for (let n4 = 0; n4 < N; n4 += 4) {
    s.searchGroup(src, len, n4, bits, symmetric, weighted, r);
    for (let j = 0; j < 4 && n4 + j < N; j++) {
      const n = n4 + j,
        sc = Math.fround(r.best[j * 5 + 1]!),
        z = r.best[j * 5 + 2]!;
      q.scales[n * kBlocks + b] = sc;
      if (q.zeroPoints) q.zeroPoints[n * kBlocks + b] = z;
      const o = n * Kp + k0,
        c = r.codes[j]!;
      for (let i = 0; i < len; i++) q.codes[o + i] = c[i]!;
      q.codes.fill(z, o + len, o + bs);
      onFit?.(n, sc, z);
    }
  }
}
