// WebAssembly SIMD kernel for RTN (symmetric and asymmetric), byte-identical to rtnReference
// (onnxruntime's MLAS arithmetic). Scalar JS tops out near 0.4 GB/s once the absmax needs its sign and the rounding
// needs float32 semantics; in SIMD both are native. Four adjacent output columns are the four lanes
// (the weight is [K, N] row-major, so one v128 load takes k's values for columns n..n+3):
//   absmax  pos = max_s(pos, bits), neg = max_s(neg, bits ^ 0x80000000)   (int32 views of floats)
//   sym     m = pos > neg ? pos : -neg; scale = m / -mid (+0 turns -0 to +0); zp = mid
//   asym    scale = (pos + neg) / qmax; zp = min(qmax, roundf(neg / scale)) (0 when scale is 0)
//   code    rs = 1/scale or 0; t = v*rs + zp (f32); q = floor(t) + (t - floor(t) >= 0.5) = roundf(t),
//           clamped to [0, qmax]
//   error   se += (v - (q - zp) * scale)^2, ss += v^2 in float32 per block and column, then added
//           to float64 totals (the layer report's relError, over every element)
// Four rows of codes are narrowed to bytes and transposed so each column's 4 codes go out in one
// 32-bit store, or (PACK) nibble-packed so they go out as one 16-bit store of MatMulNBits bytes.
// The module is assembled here (no toolchain). rtnSimd streams an in-memory weight through a small
// window one band of block rows at a time (memory ~ codes + 8 MiB); rtnBandAt runs one band that the
// caller placed in a memory it lays out (passes/quant/rtn-stream.ts: shared by worker threads).
import type { QuantizedWeight } from '../types.js';

const WINDOW_BYTES = 8 << 20;

// ---- a tiny assembler ------------------------------------------------------------------------
const uleb = (v: number): number[] => {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
};
const sleb = (v: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) { out.push(b); return out; }
    out.push(b | 0x80);
  }
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const str = (s: string): number[] => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];

const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;
const get = (i: number) => [0x20, ...uleb(i)], set = (i: number) => [0x21, ...uleb(i)], tee = (i: number) => [0x22, ...uleb(i)];
const i32 = (v: number) => [0x41, ...sleb(v)];
const f32 = (v: number) => { const b = new Uint8Array(new Float32Array([v]).buffer); return [0x43, ...b]; };
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const ADD = 0x6a, SUB = 0x6b, MUL = 0x6c, GE_U = 0x4f;
const OP = {
  load: 0x00, shuffle: 0x0d, i32splat: 0x11, f32splat: 0x13, f32eq: 0x41, f32gt: 0x44, f32ge: 0x46,
  andnot: 0x4f, xor: 0x51, bitselect: 0x52, store8lane: 0x58, store32lane: 0x5a, narrow8u: 0x66, floor: 0x68, narrow16u: 0x86,
  i32sub: 0xb1, i32min: 0xb6, i32max: 0xb8, fneg: 0xe1, fadd: 0xe4, fsub: 0xe5, fmul: 0xe6, fdiv: 0xe7, trunc: 0xf8, convert: 0xfa,
  store: 0x0b, i16splat: 0x10, and: 0x4e, or: 0x50, store16lane: 0x59, promoteLow: 0x5f, i16shrU: 0x8d, dadd: 0xf0,
  pmin: 0xea, pmax: 0xeb,
};
const mem = (align: number) => [...uleb(align), 0];
/** `for (v = from; v < limit; v += step) body` with a block/loop pair. */
const loop = (v: number, from: number[], limit: number[], step: number[], body: number[]): number[] => [
  ...from, ...set(v),
  0x02, 0x40, 0x03, 0x40,
  ...get(v), ...limit, GE_U, 0x0d, 1,
  ...body,
  ...get(v), ...step, ADD, ...set(v),
  0x0c, 0, 0x0b, 0x0b,
];

// params (PACK: 4-bit codes packed two per byte, low nibble first; ERRP: where the f64 sums go)
const WP = 0, NN = 1, KP = 2, B0 = 3, B1 = 4, KB = 5, BS = 6, N4 = 7, CP = 8, SP = 9, NEGMID = 10, ZPF = 11, QMAX = 12, ZP = 13, ASYM = 14, PACK = 15, ERRP = 16;
// locals
const B = 17, N_ = 18, K = 19, A = 20, RS4 = 21, CB = 22, T = 23;
const POS = 24, NEG = 25, RS = 26, HALF = 27, ZPV = 28, QMAXV = 29, SIGN = 30, Q0 = 31, ZERO = 35, TV = 36, FL = 37, SCALE = 38, NEGMIDV = 39, ZB = 40, QMAXF = 41;
const VV = 42, SEF = 43, SSF = 44, SE64 = 45, SS64 = 46, LOW8 = 47, MAGIC = 48, ONE = 49, QF = 50;
// i32 locals after the v128 ones: the codes' column pointers n + 1..3
const CBJ = [CB, 51, 52, 53];

/** Memory limits for a shared memory (streamed quantization on several threads): 2 GiB at most. */
export const SHARED_MAX_PAGES = 32768;

/** a = wp + (((b - b0) * bs) * N + n) * 4: the first float of the band's 4 columns at row b * bs. */
const bandAddr = (): number[] => [...get(WP), ...get(B), ...get(B0), SUB, ...get(BS), MUL, ...get(NN), MUL, ...get(N_), ADD, ...i32(4), MUL, ADD, ...set(A)];

/** Per column, the largest value and the largest negated value of the block (sign-flipped i32 max). */
function absmaxLoop(): number[] {
  return loop(K, i32(0), get(BS), i32(1), [
    ...get(A), ...simd(OP.load, ...mem(0)), ...tee(TV),
    ...get(POS), ...simd(OP.i32max), ...set(POS),
    ...get(TV), ...get(SIGN), ...simd(OP.xor), ...get(NEG), ...simd(OP.i32max), ...set(NEG),
    ...get(A), ...get(RS4), ADD, ...set(A),
  ]);
}

/** roundf of a non-negative f32x4 on the stack, as i32x4: floor + (fraction >= 0.5). */
const roundNonNeg = (): number[] => [...tee(TV), ...simd(OP.floor), ...tee(FL), ...simd(OP.trunc), ...get(TV), ...get(FL), ...simd(OP.fsub), ...get(HALF), ...simd(OP.f32ge), ...simd(OP.i32sub)];

/** The block's scale (and zero point when asymmetric) per column, stored to scales/zero points. */
function scaleBlock(): number[] {
  return [
    ...get(ASYM), 0x04, 0x40,
    // asymmetric: scale = (max - min) / qmax, zp = clamp(roundf(-min / scale)) (0 when scale is 0)
    ...get(POS), ...get(NEG), ...simd(OP.fadd), ...get(QMAXF), ...simd(OP.fdiv), ...set(SCALE),
    ...get(NEG), ...get(SCALE), ...simd(OP.fdiv), ...get(SCALE), ...get(ZERO), ...simd(OP.f32eq), ...simd(OP.andnot),
    ...roundNonNeg(), ...get(QMAXV), ...simd(OP.i32min), ...tee(TV), ...simd(OP.convert), ...set(ZB),
    ...get(ZP), ...get(N_), ...get(KB), MUL, ...get(B), ADD, ADD, ...set(T),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(T), ...get(TV), ...simd(OP.store8lane, ...mem(0), j * 4),
      ...get(T), ...get(KB), ADD, ...set(T),
    ]),
    0x05,
    // symmetric: scale = m / -mid, the extreme m mapping to code 0
    ...get(POS), ...get(NEG), ...simd(OP.fneg), ...get(POS), ...get(NEG), ...simd(OP.f32gt), ...simd(OP.bitselect),
    ...get(NEGMIDV), ...simd(OP.fdiv), ...get(ZERO), ...simd(OP.fadd), ...set(SCALE),
    ...get(ZPV), ...set(ZB),
    0x0b,
    ...f32(1), ...simd(OP.f32splat), ...get(SCALE), ...simd(OP.fdiv), ...get(SCALE), ...get(ZERO), ...simd(OP.f32eq), ...simd(OP.andnot), ...set(RS),
    // scales[(n + j) * kB + b], j = 0..3
    ...get(SP), ...get(N_), ...get(KB), MUL, ...get(B), ADD, ...i32(4), MUL, ADD, ...set(T),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(T), ...get(SCALE), ...simd(OP.store32lane, ...mem(2), j),
      ...get(T), ...get(KB), ...i32(4), MUL, ADD, ...set(T),
    ]),
  ];
}

/**
 * One code row of 4 columns; also adds (v - (q - zp) * scale)^2 and v^2 to the block's float32 sums.
 * The code stays in float32: t = v * rs + zp; roundf(t) is floor(t + 0.5) for the symmetric grid
 * (t = a + zp with |a| >= 4 wherever t is near 0.5, so t is never the one float, 0.5 - 2^-25, for
 * which t + 0.5 rounds up to 1), floor(t) + (t - floor(t) >= 0.5) otherwise; clamped with pmax/pmin
 * (single instructions; NaN goes to 0), then made an integer by adding 2^23 and taking the bits
 * less those of 2^23.
 */
const quantCode = (q: number, asym: boolean): number[] => [
    ...get(A), ...simd(OP.load, ...mem(0)), ...tee(VV), ...get(RS), ...simd(OP.fmul), ...get(ZB), ...simd(OP.fadd),
    ...(asym
      ? [...tee(TV), ...simd(OP.floor), ...tee(FL), ...get(TV), ...get(FL), ...simd(OP.fsub), ...get(HALF), ...simd(OP.f32ge), ...get(ONE), ...simd(OP.and), ...get(FL), ...simd(OP.fadd)]
      : [...get(HALF), ...simd(OP.fadd), ...simd(OP.floor)]),
    ...set(TV), ...get(QMAXF), ...get(ZERO), ...get(TV), ...simd(OP.pmax), ...simd(OP.pmin), ...tee(QF),
    ...get(MAGIC), ...simd(OP.fadd), ...get(MAGIC), ...simd(OP.i32sub), ...set(q),
    ...get(QF), ...get(ZB), ...simd(OP.fsub), ...get(SCALE), ...simd(OP.fmul), ...get(VV), ...simd(OP.fsub), ...tee(TV), ...get(TV), ...simd(OP.fmul),
    ...get(SEF), ...simd(OP.fadd), ...set(SEF),
    ...get(VV), ...get(VV), ...simd(OP.fmul), ...get(SSF), ...simd(OP.fadd), ...set(SSF),
    ...get(A), ...get(RS4), ADD, ...set(A),
];

/** The block's codes, 4 rows at a time, packed (two 4-bit codes a byte) or one byte each. */
function codesLoop(asym: boolean): number[] {
  const shuffle = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];
  return loop(K, i32(0), get(BS), i32(4), [
    ...quantCode(Q0, asym), ...quantCode(Q0 + 1, asym), ...quantCode(Q0 + 2, asym), ...quantCode(Q0 + 3, asym),
    ...get(Q0), ...get(Q0 + 1), ...simd(OP.narrow16u), ...get(Q0 + 2), ...get(Q0 + 3), ...simd(OP.narrow16u), ...simd(OP.narrow8u),
    ...tee(TV), ...get(TV), ...simd(OP.shuffle, ...shuffle), ...set(TV),
    ...get(PACK), 0x04, 0x40,
    // i16 lanes (k even | k odd << 8) of one column -> one byte (even | odd << 4); 2 bytes per column
    ...get(TV), ...get(TV), ...i32(4), ...simd(OP.i16shrU), ...simd(OP.or), ...get(LOW8), ...simd(OP.and), ...tee(TV), ...get(TV), ...simd(OP.narrow8u), ...set(TV),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(CBJ[j]!), ...get(K), ...i32(1), 0x76, ADD, ...get(TV), ...simd(OP.store16lane, ...mem(1), j),
    ]),
    0x05,
    ...[0, 1, 2, 3].flatMap((j) => [
      ...get(CBJ[j]!), ...get(K), ADD, ...get(TV), ...simd(OP.store32lane, ...mem(2), j),
    ]),
    0x0b,
  ]);
}

/** The kernel's body: splat constants, then per block row band and 4 columns: absmax, scale, codes, error sums. */
function kernelBody(): number[] {
  return [
    ...get(NN), ...i32(2), 0x74, ...set(RS4),
    ...f32(0.5), ...simd(OP.f32splat), ...set(HALF),
    ...get(ZPF), ...simd(OP.f32splat), ...set(ZPV),
    ...get(NEGMID), ...simd(OP.f32splat), ...set(NEGMIDV),
    ...get(QMAX), ...simd(OP.i32splat), ...tee(QMAXV), ...simd(OP.convert), ...set(QMAXF),
    ...i32(-0x80000000), ...simd(OP.i32splat), ...set(SIGN),
    ...i32(0), ...simd(OP.i32splat), ...set(ZERO),
    ...i32(0xff), ...simd(OP.i16splat), ...set(LOW8),
    ...get(ZERO), ...set(SE64), ...get(ZERO), ...set(SS64),
    ...f32(8388608), ...simd(OP.f32splat), ...set(MAGIC),
    ...f32(1), ...simd(OP.f32splat), ...set(ONE),
    ...loop(B, get(B0), get(B1), i32(1), loop(N_, i32(0), get(N4), i32(4), [
      ...bandAddr(), ...get(ZERO), ...set(POS), ...get(ZERO), ...set(NEG),
      ...absmaxLoop(),
      ...scaleBlock(),
      ...bandAddr(),
      // cb = cp + n * Kp + b * bs (Kp is the column stride in bytes: halved by the caller when packing)
      ...get(CP), ...get(N_), ...get(KP), MUL, ADD, ...get(B), ...get(BS), MUL, ...get(PACK), 0x76, ADD, ...set(CB),
      ...[1, 2, 3].flatMap((j) => [...get(CBJ[j - 1]!), ...get(KP), ADD, ...set(CBJ[j]!)]),
      ...get(ZERO), ...set(SEF), ...get(ZERO), ...set(SSF),
      ...get(ASYM), 0x04, 0x40, ...codesLoop(true), 0x05, ...codesLoop(false), 0x0b,
      // the block's float32 sums, per column, into the float64 totals
      ...[SEF, SSF].flatMap((acc) => {
        const tot = acc === SEF ? SE64 : SS64;
        return [
          ...get(tot), ...get(acc), ...simd(OP.promoteLow), ...simd(OP.dadd),
          ...get(acc), ...get(acc), ...simd(OP.shuffle, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7), ...simd(OP.promoteLow), ...simd(OP.dadd), ...set(tot),
        ];
      }),
    ])),
    ...get(ERRP), ...get(SE64), ...simd(OP.store, ...mem(3)),
    ...get(ERRP), ...i32(16), ADD, ...get(SS64), ...simd(OP.store, ...mem(3)),
    0x0b,
  ];
}

/** The function's code, assembled once per thread (it takes about as long as compiling it). */
let funcCode: number[] | undefined;

function moduleBytes(shared = false): Uint8Array<ArrayBuffer> {
  const func = (funcCode ??= [...vec([[7, I32], [27, V128], [3, I32]]), ...kernelBody()]);
  const params = [I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, F32, F32, I32, I32, I32, I32, I32];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...vec(params.map((t) => [t])), 0]])),
    ...section(2, vec([[...str('e'), ...str('m'), 0x02, ...(shared ? [0x03, 1, ...uleb(SHARED_MAX_PAGES)] : [0x00, 1])]])),
    ...section(3, vec([[0]])),
    ...section(7, vec([[...str('q'), 0x00, 0]])),
    ...section(10, vec([[...uleb(func.length), ...func]])),
  ]);
}

const modules = new Map<boolean, WebAssembly.Module>();

/** The module for a shared memory or not, compiled once per thread. */
function compiled(shared: boolean): WebAssembly.Module {
  let mod = modules.get(shared);
  if (!mod) modules.set(shared, (mod = new WebAssembly.Module(moduleBytes(shared))));
  return mod;
}

type Kernel = (wp: number, N: number, Kp: number, b0: number, b1: number, kB: number, bs: number, n4: number, cp: number, sp: number, negMid: number, zpf: number, qmax: number, zp: number, asym: number, pack: number, errp: number) => void;
let instance: { memory: WebAssembly.Memory; run: Kernel } | null | undefined;

function kernel(): { memory: WebAssembly.Memory; run: Kernel } | null {
  if (instance !== undefined) return instance;
  try {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const inst = new WebAssembly.Instance(compiled(false), { e: { m: memory } });
    instance = { memory, run: inst.exports.q as Kernel };
  } catch {
    instance = null; // no WebAssembly SIMD here: the scalar kernel does everything
  }
  return instance;
}

/**
 * RTN of full block rows and the first N&~3 columns into `dst`; returns what it covered
 * (block rows [0, blocks), columns [0, cols)) for the scalar kernel to finish.
 */
export function rtnSimd(w: Float32Array, K: number, N: number, dst: QuantizedWeight): { blocks: number; cols: number } {
  const bs = dst.blockSize, full = Math.floor(K / bs), n4 = N & ~3;
  const k = n4 && full ? kernel() : null;
  if (!k) return { blocks: 0, cols: 0 };
  const Kp = dst.kBlocks * bs, rowBytes = N * 4;
  const band = Math.max(1, Math.min(full, Math.floor(WINDOW_BYTES / (bs * rowBytes))));
  const windowBytes = band * bs * rowBytes;
  const cp = windowBytes, sp = cp + ((N * Kp + 15) & ~15), zp = sp + N * dst.kBlocks * 4, errp = (zp + N * dst.kBlocks + 15) & ~15, need = errp + 32;
  const have = k.memory.buffer.byteLength;
  if (need > have) k.memory.grow(Math.ceil((need - have) / 65536));
  const heap = new Uint8Array(k.memory.buffer);
  const mid = 1 << (dst.bits - 1), qmax = (1 << dst.bits) - 1;
  const src = new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  for (let b0 = 0; b0 < full; b0 += band) {
    const b1 = Math.min(full, b0 + band);
    heap.set(src.subarray(b0 * bs * rowBytes, b1 * bs * rowBytes), 0);
    k.run(0, N, Kp, b0, b1, dst.kBlocks, bs, n4, cp, sp, -mid, mid, qmax, zp, dst.symmetric ? 0 : 1, 0, errp);
  }
  // Bulk copy; the parts SIMD did not write are overwritten by the scalar kernel afterwards.
  dst.codes.set(heap.subarray(cp, cp + N * Kp));
  dst.scales.set(new Float32Array(k.memory.buffer, sp, N * dst.kBlocks));
  dst.zeroPoints?.set(heap.subarray(zp, zp + N * dst.kBlocks));
  return { blocks: full, cols: n4 };
}

/** WebAssembly SIMD is there (the streamed kernel needs it). */
export function simdAvailable(): boolean {
  return kernel() !== null;
}

/** The kernel bound to a memory the caller lays out (shared across worker threads or not). */
export interface BoundKernel {
  memory: WebAssembly.Memory;
  run: Kernel;
}

export function bindKernel(memory: WebAssembly.Memory): BoundKernel {
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  return { memory, run: new WebAssembly.Instance(compiled(shared), { e: { m: memory } }).exports.q as Kernel };
}

/** Where a band's results go in the kernel's memory (byte addresses). */
export interface BandTarget {
  /** Codes [N][kBlocks * bs * bits / 8] (4-bit packed two per byte, low nibble first). */
  codes: number;
  /** Scales [N][kBlocks] float32 (4-aligned). */
  scales: number;
  /** Zero points [N][kBlocks] (asymmetric only). */
  zeroPoints: number;
  kBlocks: number;
}

/**
 * RTN of a [(b1 - b0) * bs, ns] float32 band at `window` (16-aligned, rows `stride` floats apart, ns a
 * multiple of 4, 32 bytes after it for the sums) holding blocks [b0, b1) of output columns [n0, n0 + ns): codes, scales and
 * zero points go to their final places in `t`, 4-bit codes packed in the kernel. Returns the sums,
 * over the band, of (w - dequant)^2 (float32 per block and column, summed in float64) and of w^2.
 */
export function rtnBandAt(k: BoundKernel, window: number, stride: number, n0: number, ns: number, b0: number, b1: number, bits: 4 | 8, bs: number, symmetric: boolean, t: BandTarget): { se: number; ss: number } {
  const colBytes = (t.kBlocks * bs * bits) / 8, errp = window + (b1 - b0) * bs * stride * 4;
  const mid = 1 << (bits - 1), qmax = (1 << bits) - 1;
  k.run(window, stride, colBytes, b0, b1, t.kBlocks, bs, ns, t.codes + n0 * colBytes, t.scales + n0 * t.kBlocks * 4, -mid, mid, qmax, t.zeroPoints + n0 * t.kBlocks, symmetric ? 0 : 1, bits === 4 ? 1 : 0, errp);
  const e = new Float64Array(k.memory.buffer, errp, 4);
  return { se: e[0]! + e[1]!, ss: e[2]! + e[3]! };
}
