// GPTQ's factor U when the calibration rows are fewer than the inputs (a 3B decoder: 512 rows, K 3072
// or 8192). With the off-diagonal shrink, H = D + P^T P: D diagonal and positive (the damping, the
// shrunk part of the diagonal, unit for unseen inputs), P [r][K] the scaled rows in processing order.
// Eliminating H from its last row (H = M M^T, M upper, U[j][k] = M[j][k] / M[k][k]) keeps every Schur
// complement of the form D + P^T Mx P with Mx [r][r] (Mx = I, then Mx -= G G^T per block), so column k
// of M above the block is P^T g_k: U = the strict upper triangle of P^T Q, Q [r][K] the g_k / M[k][k].
// That is K^2 r / 2 + 2 K r^2 multiply-adds against K^3 / 6 for the dense factorization (8192 x 8192
// from 512 rows: 9 s -> about 1 s), all in the SIMD kernel but for 64 x 64 blocks in float64.
import { Linalg, roundUp, rowStride } from './simd-linalg.js';

/** Columns eliminated per block. */
const NB = 64;

/** Rows of U per strip: the feedback's lazy batch. */
export const STRIP = 128;

/**
 * U's storage, its upper triangle in strips of STRIP rows: strip s holds rows s*STRIP.. from column
 * s*STRIP on (row stride ls[s] floats, an odd number of cache lines), at float offset off[s]. Half the
 * square's memory, copies and page faults (a fresh page costs about 20 us here: 1 s for 8192 x 8192).
 */
export interface ULayout {
  size: number;
  off: Int32Array;
  ls: Int32Array;
}

export function uLayout(Kq: number): ULayout {
  const n = Math.ceil(Kq / STRIP),
    off = new Int32Array(n),
    ls = new Int32Array(n);
  let at = 0;
  for (let s = 0; s < n; s++) {
    ls[s] = rowStride(Kq - s * STRIP);
    off[s] = at;
    at += Math.min(STRIP, Kq - s * STRIP) * ls[s]!;
  }
  return { size: at, off, ls };
}

/** Float index of U[i][j], j at or after the first row of i's strip. */
export function uIndex(L: ULayout, i: number, j: number): number {
  const s = Math.floor(i / STRIP),
    c0 = s * STRIP;
  return L.off[s]! + (i - c0) * L.ls[s]! + j - c0;
}

/** Whether the low-rank path costs less than the dense factorization (2 K r^2 against K^3 / 6). */
export const lowRankPays = (rows: number, Kq: number): boolean => 12 * roundUp(rows, 16) ** 2 < Kq * Kq;

/**
 * U (strict upper triangle, in uLayout(Kq); zero elsewhere) into `out` for H = diag(d) + P^T P. P [rq][ld]
 * must already be at byte 0 of lin (rows >= the real rows zero). False when a pivot is not positive.
 */
export function lowRankU(lin: Linalg, rows: number, Kq: number, ld: number, d: Float64Array, out: Float32Array): boolean {
  const rq = roundUp(rows, 16),
    lm = rowStride(rq),
    lb = rowStride(NB);
  const qAt = rq * ld * 4,
    mAt = qAt + rq * ld * 4,
    wnAt = mAt + rq * lm * 4,
    wtAt = wnAt + rq * lb * 4,
    gtAt = wtAt + NB * lm * 4,
    zAt = gtAt + NB * lm * 4,
    sAt = zAt + NB * lb * 4,
    uAt = sAt + NB * lb * 4;
  lin.ensure(uAt);
  let f = lin.f32();
  f.fill(0, qAt / 4, wnAt / 4);
  for (let i = 0; i < rq; i++) f[mAt / 4 + i * lm + i] = 1;
  const mu = new Float64Array(NB * NB),
    inv = new Float64Array(NB * NB);
  for (let j0 = Kq - NB; j0 >= 0; j0 -= NB) {
    // Wn = Mx P_J, S = P_J^T Wn
    f.fill(0, wnAt / 4, wtAt / 4);
    f.fill(0, gtAt / 4, uAt / 4);
    lin.gemm(wnAt, lb * 4, mAt, lm * 4, j0 * 4, ld * 4, rq, NB, rq, 1);
    lin.gemm(sAt, lb * 4, j0 * 4, ld * 4, wnAt, lb * 4, NB, NB, rq, 1);
    f = lin.f32();
    if (!blockFactor(f, sAt / 4, lb, d, j0, mu, inv)) return false;
    // Gt = Mu^-1 Wn^T (Z = Mu^-T at zAt), then Mx -= Gt^T Gt and Q's columns J = Gt's rows / Mu's diagonal
    for (let c = 0; c < NB; c++) for (let n = 0; n < rq; n++) f[wtAt / 4 + c * lm + n] = f[wnAt / 4 + n * lb + c]!;
    for (let c = 0; c < NB; c++) for (let m = 0; m < NB; m++) f[zAt / 4 + c * lb + m] = inv[m * NB + c]!;
    lin.gemm(gtAt, lm * 4, zAt, lb * 4, wtAt, lm * 4, NB, rq, NB, 1);
    lin.gemm(mAt, lm * 4, gtAt, lm * 4, gtAt, lm * 4, rq, rq, NB, -1);
    for (let b = 0; b < NB; b++) {
      const s = 1 / mu[b * NB + b]!;
      for (let n = 0; n < rows; n++) f[qAt / 4 + n * ld + j0 + b] = f[gtAt / 4 + b * lm + n]! * s;
    }
  }
  // U = P^T Q, rows in 16s from their diagonal on (the 16 x 16 diagonal tiles' lower half cleared)
  const L = uLayout(Kq);
  lin.ensure(uAt + L.size * 4);
  f = lin.f32();
  f.fill(0, uAt / 4, uAt / 4 + L.size);
  for (let m0 = 0; m0 < Kq; m0 += 16) {
    const lu = L.ls[Math.floor(m0 / STRIP)]! * 4;
    lin.gemm(uAt + uIndex(L, m0, m0) * 4, lu, m0 * 4, ld * 4, qAt + m0 * 4, ld * 4, 16, Kq - m0, rq, 1);
  }
  f = lin.f32();
  for (let j = 0; j < Kq; j++) f.fill(0, uAt / 4 + uIndex(L, j, j & ~15), uAt / 4 + uIndex(L, j, j) + 1);
  out.set(f.subarray(uAt / 4, uAt / 4 + L.size));
  return true;
}

/**
 * S_JJ + diag(d_J) (upper triangle of the float32 S at s, row stride ls) = Mu Mu^T, Mu upper (eliminated
 * from the last row, as the whole factorization), in float64; and Mu^-1 into inv. False on a pivot <= 0.
 */
function blockFactor(f: Float32Array, s: number, ls: number, d: Float64Array, j0: number, mu: Float64Array, inv: Float64Array): boolean {
  mu.fill(0);
  inv.fill(0);
  for (let k = NB - 1; k >= 0; k--) {
    let dk = f[s + k * ls + k]! + d[j0 + k]!;
    for (let c = k + 1; c < NB; c++) dk -= mu[k * NB + c]! ** 2;
    if (!(dk > 0) || !Number.isFinite(dk)) return false;
    const r = Math.sqrt(dk);
    mu[k * NB + k] = r;
    for (let j = 0; j < k; j++) {
      let v = f[s + j * ls + k]!;
      for (let c = k + 1; c < NB; c++) v -= mu[j * NB + c]! * mu[k * NB + c]!;
      mu[j * NB + k] = v / r;
    }
  }
  for (let b = 0; b < NB; b++) {
    inv[b * NB + b] = 1 / mu[b * NB + b]!;
    for (let a = b - 1; a >= 0; a--) {
      let v = 0;
      for (let c = a + 1; c <= b; c++) v += mu[a * NB + c]! * inv[c * NB + b]!;
      inv[a * NB + b] = -v / mu[a * NB + a]!;
    }
  }
  return true;
}
