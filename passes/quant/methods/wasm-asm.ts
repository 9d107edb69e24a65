// A tiny WebAssembly assembler (no toolchain): LEB128, sections, locals, loops and the SIMD opcodes
// the hand-assembled kernels use (simd-linalg.ts, simd-search.ts).
export const uleb = (v: number): number[] => {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
};
export const sleb = (v: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
};
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
export const str = (s: string): number[] => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];

export const I32 = 0x7f,
  F32 = 0x7d,
  V128 = 0x7b;
export const get = (i: number) => [0x20, ...uleb(i)],
  set = (i: number) => [0x21, ...uleb(i)],
  tee = (i: number) => [0x22, ...uleb(i)];
export const i32 = (v: number) => [0x41, ...sleb(v)];
export const f32c = (v: number) => [0x43, ...new Uint8Array(new Float32Array([v]).buffer)];
export const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
/** memarg: alignment exponent and byte offset. */
export const mem = (align: number, offset = 0) => [...uleb(align), ...uleb(offset)];
export const I = { add: 0x6a, sub: 0x6b, mul: 0x6c, and: 0x71, shl: 0x74, geU: 0x4f, ltU: 0x49, eqz: 0x45 };
export const F = { load: 0x2a, store: 0x38 };
export const V = {
  load: 0x00,
  load32splat: 0x09,
  load64splat: 0x0a,
  store: 0x0b,
  shuffle: 0x0d,
  i32splat: 0x11,
  f32splat: 0x13,
  extractF32: 0x1f,
  f32lt: 0x43,
  f32gt: 0x44,
  f32le: 0x45,
  f32ge: 0x46,
  and: 0x4e,
  andnot: 0x4f,
  or: 0x50,
  xor: 0x51,
  bitselect: 0x52,
  anyTrue: 0x53,
  floor: 0x68,
  nearest: 0x6a,
  fabs: 0xe0,
  fneg: 0xe1,
  fadd: 0xe4,
  fsub: 0xe5,
  fmul: 0xe6,
  fdiv: 0xe7,
  fmin: 0xe8,
  fmax: 0xe9,
  trunc: 0xf8,
  convert: 0xfa,
  promoteLow: 0x5f,
  dadd: 0xf0,
  dmul: 0xf2,
};

/** `for (v = from; v < limit; v += step) body` (unsigned compare) with a block/loop pair. */
export const loop = (v: number, from: number[], limit: number[], step: number[], body: number[]): number[] => [
  ...from,
  ...set(v),
  0x02,
  0x40,
  0x03,
  0x40,
  ...get(v),
  ...limit,
  I.geU,
  0x0d,
  1,
  ...body,
  ...get(v),
  ...step,
  I.add,
  ...set(v),
  0x0c,
  0,
  0x0b,
  0x0b,
];

/** `if (cond) body` where cond is i32 on the stack. */
export const when = (cond: number[], body: number[]): number[] => [...cond, 0x04, 0x40, ...body, 0x0b];

export interface FuncDef {
  params: number[];
  /** [count, type] runs. */
  locals: [number, number][];
  body: number[];
}

/** A module importing memory `e.m` (shared or not) and exporting its functions as f0, f1, ... */
export function moduleOf(funcs: FuncDef[], shared = false, maxPages = 65536): Uint8Array<ArrayBuffer> {
  const types = funcs.map((f) => [0x60, ...vec(f.params.map((t) => [t])), 0]);
  const memLimits = shared ? [0x03, 1, ...uleb(maxPages)] : [0x00, 1];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec(types)),
    ...section(2, vec([[...str('e'), ...str('m'), 0x02, ...memLimits]])),
    ...section(3, vec(funcs.map((_, i) => uleb(i)))),
    ...section(7, vec(funcs.map((_, i) => [...str(`f${i}`), 0x00, ...uleb(i)]))),
    ...section(
      10,
      vec(
        funcs.map((f) => {
          const body = [...vec(f.locals.map(([n, t]) => [...uleb(n), t])), ...f.body, 0x0b];
          return [...uleb(body.length), ...body];
        }),
      ),
    ),
  ]);
}
