// WebAssembly SIMD (f32x4) dense linear algebra for GPTQ and the output-error searches: one
// register-blocked kernel, C[m][n] += alpha * sum_k A[k][m] * B[k][n] (A read down its columns, B
// and C along rows, 2 rows x 16 columns of C in 8 accumulators), and on top of it the Hessian
// X^T X, an upper Cholesky factor (right-looking, 64-row panels) and plain products.
// Every element of C is one sequential sum over k in float32, whatever M, N or the column offset:
// a column's result does not depend on how the columns are sliced or which thread runs them.
import { F32, I, I32, V, V128, f32c, get, i32, loop, mem, moduleOf, set, simd, when, type FuncDef } from './wasm-asm.js';

// gemm params and locals
const C = 0,
  LDC = 1,
  A = 2,
  LDA = 3,
  B = 4,
  LDB = 5,
  M = 6,
  N = 7,
  KD = 8,
  ALPHA = 9;
const NN = 10,
  MM = 11,
  KK = 12,
  PA = 13,
  PB = 14,
  PC = 15,
  M2 = 16;
const ACC = 17,
  VA0 = 25,
  VA1 = 26,
  BV = 27,
  AL = 31;

/** One pass over k for `rows` (1 or 2) rows of C at (MM, NN), added to C times alpha. */
function gemmRows(rows: 1 | 2): number[] {
  const zero = [...f32c(0), ...simd(V.f32splat)];
  const fma = (acc: number, va: number, b: number) => [...get(acc), ...get(va), ...get(b), ...simd(V.fmul), ...simd(V.fadd), ...set(acc)];
  const out: number[] = [
    ...get(A),
    ...get(MM),
    ...i32(2),
    I.shl,
    I.add,
    ...set(PA),
    ...get(B),
    ...get(NN),
    ...i32(2),
    I.shl,
    I.add,
    ...set(PB),
  ];
  for (let j = 0; j < 4 * rows; j++) out.push(...zero, ...set(ACC + j));
  const body: number[] = [
    ...get(PA),
    ...simd(V.load32splat, ...mem(2, 0)),
    ...set(VA0),
    ...(rows === 2 ? [...get(PA), ...simd(V.load32splat, ...mem(2, 4)), ...set(VA1)] : []),
  ];
  for (let j = 0; j < 4; j++) body.push(...get(PB), ...simd(V.load, ...mem(0, 16 * j)), ...set(BV + j));
  for (let j = 0; j < 4; j++) body.push(...fma(ACC + j, VA0, BV + j));
  if (rows === 2) for (let j = 0; j < 4; j++) body.push(...fma(ACC + 4 + j, VA1, BV + j));
  body.push(...get(PA), ...get(LDA), I.add, ...set(PA), ...get(PB), ...get(LDB), I.add, ...set(PB));
  out.push(...loop(KK, i32(0), get(KD), i32(1), body));
  // C += alpha * acc
  out.push(...get(C), ...get(MM), ...get(LDC), I.mul, I.add, ...get(NN), ...i32(2), I.shl, I.add, ...set(PC));
  for (let r = 0; r < rows; r++) {
    const addr = r ? [...get(PC), ...get(LDC), I.add] : get(PC);
    for (let j = 0; j < 4; j++)
      out.push(
        ...addr,
        ...addr,
        ...simd(V.load, ...mem(0, 16 * j)),
        ...get(AL),
        ...get(ACC + 4 * r + j),
        ...simd(V.fmul),
        ...simd(V.fadd),
        ...simd(V.store, ...mem(0, 16 * j)),
      );
  }
  return out;
}

function gemmFunc(): FuncDef {
  const body = [
    ...get(ALPHA),
    ...simd(V.f32splat),
    ...set(AL),
    ...get(M),
    ...i32(-2),
    I.and,
    ...set(M2),
    ...loop(NN, i32(0), get(N), i32(16), [
      ...loop(MM, i32(0), get(M2), i32(2), gemmRows(2)),
      ...when([...get(MM), ...get(M), I.ltU], gemmRows(1)),
    ]),
  ];
  return {
    params: [I32, I32, I32, I32, I32, I32, I32, I32, I32, F32],
    locals: [
      [7, I32],
      [15, V128],
    ],
    body,
  };
}

type GemmFn = (
  c: number,
  ldc: number,
  a: number,
  lda: number,
  b: number,
  ldb: number,
  m: number,
  n: number,
  kd: number,
  alpha: number,
) => void;

let compiled: WebAssembly.Module | null | undefined;
function module(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(moduleOf([gemmFunc()]));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

export function linalgAvailable(): boolean {
  return module() !== null;
}

/** Round up to a multiple of m. */
export const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;

/**
 * A row stride (in floats) for n columns: a multiple of 16 floats (whole 64-byte lines) with an odd
 * line count, so that walking down a column visits every cache set. Strides of a multiple of 4 KiB
 * (3072 floats) put every row of a column in one L1 set: the kernels ran 1.5x slower.
 */
export const rowStride = (n: number): number => {
  const r = roundUp(n, 16);
  return (r / 16) % 2 ? r : r + 16;
};

/**
 * A private WebAssembly memory with the kernel bound to it. Addresses are byte offsets; the caller
 * lays out its arrays (`f32()` views are renewed after a grow).
 */
export class Linalg {
  readonly memory: WebAssembly.Memory;
  private readonly fn: GemmFn;
  private view: Float32Array;

  constructor(bytes = 1 << 16) {
    const mod = module();
    if (!mod) throw new Error('WebAssembly SIMD is not available in this runtime (GPTQ needs it)');
    this.memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
    this.fn = new WebAssembly.Instance(mod, { e: { m: this.memory } }).exports.f0 as GemmFn;
    this.view = new Float32Array(this.memory.buffer);
  }

  /** Grow to at least `bytes`. */
  ensure(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / 65536));
  }

  f32(): Float32Array {
    if (this.view.buffer !== this.memory.buffer) this.view = new Float32Array(this.memory.buffer);
    return this.view;
  }

  /** C[m][n] += alpha * sum_k A[k][m] B[k][n] for m < M, n < N (N a multiple of 16); byte addresses and strides. */
  gemm(c: number, ldc: number, a: number, lda: number, b: number, ldb: number, m: number, n: number, kd: number, alpha: number): void {
    if (m <= 0 || n <= 0) return;
    if (n % 16) throw new Error(`gemm: N ${n} is not a multiple of 16`);
    this.fn(c, ldc, a, lda, b, ldb, m, n, kd, alpha);
  }

  /**
   * Upper triangle (and some of the lower, which is left undefined) of H = X^T X: X [rows][Kq] at x
   * (row stride ldx floats), H [Kq][Kq] at h (row stride ldh floats, default Kq).
   */
  syrkUpper(x: number, rows: number, Kq: number, h: number, ldx = Kq, ldh = Kq): void {
    const f = this.f32();
    f.fill(0, h / 4, h / 4 + Kq * ldh);
    for (let m0 = 0; m0 < Kq; m0 += 16) {
      const m = Math.min(16, Kq - m0);
      this.gemm(h + (m0 * ldh + m0) * 4, ldh * 4, x + m0 * 4, ldx * 4, x + m0 * 4, ldx * 4, m, Kq - m0, rows, 1);
    }
  }

  /**
   * In place, the upper factor R of H = R^T R (row-major [Kq][Kq], row stride ldh floats, Kq a
   * multiple of 64, upper triangle read and written). False when a pivot is not positive.
   */
  choleskyUpper(h: number, Kq: number, ldh = Kq): boolean {
    const ld = ldh * 4,
      nb = 64;
    const at = (r: number, c: number) => h + (r * ldh + c) * 4;
    for (let p = 0; p < Kq; p += nb) {
      const pe = p + nb;
      for (let t = p; t < pe; t++) {
        const t0 = t & ~15;
        // row t -= sum over the panel's earlier rows s of R[s][t] R[s][.]
        if (t > p) this.gemm(at(t, t0), ld, at(p, t), ld, at(p, t0), ld, 1, Kq - t0, t - p, -1);
        const f = this.f32(),
          o = (h >> 2) + t * ldh;
        const d = f[o + t]!;
        if (!(d > 0) || !Number.isFinite(d)) return false;
        const r = Math.fround(Math.sqrt(d)),
          inv = Math.fround(1 / r);
        f[o + t] = r;
        for (let j = t + 1; j < Kq; j++) f[o + j]! *= inv;
      }
      for (let m0 = pe; m0 < Kq; m0 += 16) this.gemm(at(m0, m0), ld, at(p, m0), ld, at(p, m0), ld, 16, Kq - m0, nb, -1);
    }
    return true;
  }
}
