// WGSL generators for int4 MatMulNBits (GEMV for decode, shared-memory tiled GEMM for prefill) and
// GatherBlockQuantized, specialized per shape: sizes are WGSL constants, so loops have fixed bounds
// and no uniform buffer is needed (onnxruntime's WebGPU EP also caches a program per shape).
// Bindings: 0 A (or indices), 1 B, 2 scales, 3 zero points (when present), last the output.
import { QuantShape, checkShape, kBlocksOf, zpRowBytes } from './layout.js';

export interface ShaderOptions {
  /** A, scales and Y in f16 (needs the adapter's shader-f16); accumulation stays f32. */
  f16: boolean;
  /** GEMV reduction with subgroupAdd (needs the `subgroups` feature). */
  subgroups: boolean;
  /** Compile-check mode for adapters without shader-f16: `f16` aliased to f32, so the f16 text is
   * parsed, validated and run with f32 storage. */
  f16AsF32?: boolean;
  /** The adapter's fixed subgroup size (min == max): the subgroups GEMV then gives each row exactly one
   * subgroup and reduces with subgroupAdd alone, no shared memory and no barrier. */
  subgroupSize?: number;
}

export interface Kernel {
  name: string;
  wgsl: string;
  /** Workgroups to dispatch. */
  dispatch: [number, number, number];
  /** Features the shader enables. */
  features: GPUFeatureName[];
}

/** GEMV tiling: LANES invocations share one output row, ROWS rows per workgroup. */
export const GEMV = { lanes: 32, rows: 8 };
/** GEMM tiling: a TILE x TILE output tile per workgroup of 64, K in steps of 32 (inside one block). */
export const GEMM = { tile: 32, tk: 32 };

const MAX_DIM = 65535;

function header(o: ShaderOptions): { head: string; T: string; features: GPUFeatureName[] } {
  const features: GPUFeatureName[] = [];
  let head = '';
  if (o.f16 && !o.f16AsF32) {
    head += 'enable f16;\n';
    features.push('shader-f16');
  }
  if (o.subgroups) {
    head += 'enable subgroups;\n';
    features.push('subgroups');
  }
  if (o.f16 && o.f16AsF32) head += 'alias f16 = f32;\n';
  return { head, T: o.f16 ? 'f16' : 'f32', features };
}

function bindings(s: QuantShape, T: string, first: string): string {
  let b = `@group(0) @binding(0) var<storage, read> ${first};\n`;
  b += '@group(0) @binding(1) var<storage, read> qb: array<u32>;\n';
  b += `@group(0) @binding(2) var<storage, read> scales: array<${T}>;\n`;
  if (s.zeroPoints) b += '@group(0) @binding(3) var<storage, read> zps: array<u32>;\n';
  b += `@group(0) @binding(${s.zeroPoints ? 4 : 3}) var<storage, read_write> y: array<${T}>;\n`;
  return b;
}

/** zero(n, blk) -> f32: packed uint8 zero points (two per byte, low nibble first) or the implicit 8. */
function zeroFn(s: QuantShape): string {
  if (!s.zeroPoints) return 'fn zero(n: u32, blk: u32) -> f32 { return 8.0; }\n';
  return `fn zero(n: u32, blk: u32) -> f32 {
  let bi = n * ZPR + (blk >> 1u);
  let byte = (zps[bi >> 2u] >> ((bi & 3u) * 8u)) & 0xffu;
  return f32((byte >> ((blk & 1u) * 4u)) & 0xfu);
}
`;
}

function consts(s: QuantShape): string {
  const kb = kBlocksOf(s);
  return `const K: u32 = ${s.K}u;
const N: u32 = ${s.N}u;
const KB: u32 = ${kb}u;
const WPB: u32 = ${s.blockSize / 8}u;
const WPR: u32 = ${(kb * s.blockSize) / 8}u;
const ZPR: u32 = ${zpRowBytes(kb)}u;
`;
}

function grid(count: number): [number, number, number] {
  if (count <= MAX_DIM) return [count, 1, 1];
  const y = Math.ceil(count / MAX_DIM);
  return [Math.ceil(count / y), y, 1];
}

/**
 * Y[M, N] = A[M, K] x dequant(B)^T with one row of B per LANES invocations: each reads whole u32
 * words (8 codes) strided by LANES, so neighbouring lanes read neighbouring words; partial sums meet
 * through subgroupAdd plus a small shared array, or a shared-memory tree without subgroups.
 * A is read as vec4 when K % 8 == 0; otherwise scalar with a mask on the last word.
 */
export function gemvKernel(s: QuantShape, M: number, o: ShaderOptions): Kernel {
  checkShape(s);
  const { head, T, features } = header(o);
  const sg = o.subgroups;
  const exact = sg && o.subgroupSize !== undefined && o.subgroupSize >= 4 && o.subgroupSize <= 128;
  const lanes = exact ? o.subgroupSize! : GEMV.lanes;
  const rows = exact ? Math.max(1, 64 / lanes) : GEMV.rows;
  const aligned = s.K % 8 === 0;
  const kw = Math.ceil(s.K / 8);
  const aDecl = aligned ? `a: array<vec4<${T}>>` : `a: array<${T}>`;
  const load = aligned
    ? `    let a0 = vec4<f32>(a[(abase + k0) >> 2u]);
    let a1 = vec4<f32>(a[((abase + k0) >> 2u) + 1u]);`
    : `    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      if (k0 + i < K) { a0[i] = f32(a[abase + k0 + i]); }
      if (k0 + 4u + i < K) { a1[i] = f32(a[abase + k0 + 4u + i]); }
    }`;
  const builtins = sg ? ', @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32' : '';
  // Subgroups are taken to be runs of consecutive local_invocation_index no longer than LANES (the
  // host only picks this path when the adapter's subgroupMaxSize <= LANES), so none spans two rows.
  const reduce = exact
    ? `  let total = subgroupAdd(acc);
  if (lid.x == 0u && n < N) { y[m * N + n] = ${T}(total); }`
    : sg
      ? `  let part = subgroupAdd(acc);
  if (sgi == 0u) { red[li / sgs] = part; }
  workgroupBarrier();
  if (lid.x == 0u && n < N) {
    var total = 0.0;
    let per = LANES / sgs;
    for (var i = 0u; i < per; i++) { total += red[lid.y * per + i]; }
    y[m * N + n] = ${T}(total);
  }`
      : `  red[li] = acc;
  workgroupBarrier();
  for (var step = LANES / 2u; step > 0u; step >>= 1u) {
    if (lid.x < step) { red[li] += red[li + step]; }
    workgroupBarrier();
  }
  if (lid.x == 0u && n < N) { y[m * N + n] = ${T}(red[li]); }`;
  const wgsl = `${head}${consts(s)}const M: u32 = ${M}u;
const KW: u32 = ${kw}u;
const LANES: u32 = ${lanes}u;
const ROWS: u32 = ${rows}u;
${bindings(s, T, aDecl)}${exact ? '' : `var<workgroup> red: array<f32, ${lanes * rows}>;`}
${zeroFn(s)}
@compute @workgroup_size(${lanes}, ${rows}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32${builtins}) {
  let n = wid.x * ROWS + lid.y;
  let m = wid.y;
  let abase = m * K;
  var acc = 0.0;
  if (n < N) {
    let brow = n * WPR;
    let srow = n * KB;
    for (var w = lid.x; w < KW; w += LANES) {
      let blk = w / WPB;
      let k0 = w * 8u;
      let q = qb[brow + w];
      let z = vec4<f32>(zero(n, blk));
      let v = vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u);
      let lo = vec4<f32>(v & vec4<u32>(15u)) - z;
      let hi = vec4<f32>((v >> vec4<u32>(4u)) & vec4<u32>(15u)) - z;
${load}
      let d = dot(lo, vec4<f32>(a0.x, a0.z, a1.x, a1.z)) + dot(hi, vec4<f32>(a0.y, a0.w, a1.y, a1.w));
      acc += d * f32(scales[srow + blk]);
    }
  }
${reduce}
}
`;
  if (M > MAX_DIM) throw new Error(`GEMV M=${M} exceeds one dispatch dimension; use the GEMM kernel`);
  return {
    name: `gemv_${T}${sg ? `_sg${exact ? lanes : ''}` : ''}_b${s.blockSize}${s.zeroPoints ? '_zp' : ''}`,
    wgsl,
    dispatch: [Math.ceil(s.N / rows), M, 1],
    features,
  };
}

/**
 * Y[M, N] = A[M, K] x dequant(B)^T in 32 x 32 output tiles: per 32-wide K step the workgroup of 64
 * stages the A tile and the dequantized B tile in shared memory (each B word unpacked once), then
 * each invocation accumulates a 4 x 4 register tile. Few invocations per barrier keeps CPU
 * adapters (SwiftShader runs a workgroup as coroutines) fast too. Edges are masked.
 */
export function gemmKernel(s: QuantShape, M: number, o: ShaderOptions): Kernel {
  checkShape(s);
  const { head, T, features } = header({ ...o, subgroups: false });
  const { tile, tk } = GEMM;
  const wgsl = `${head}${consts(s)}const M: u32 = ${M}u;
const TILE: u32 = ${tile}u;
const TK: u32 = ${tk}u;
const KT: u32 = ${Math.ceil(s.K / tk)}u;
${bindings(s, T, `a: array<${T}>`)}var<workgroup> at: array<array<f32, ${tk}>, ${tile}>;
var<workgroup> bt: array<array<f32, ${tile}>, ${tk}>;
${zeroFn(s)}
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n0 = wid.x * TILE;
  let m0 = wid.y * TILE;
  let r = (t / 8u) * 4u;
  let c = (t % 8u) * 4u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var kt = 0u; kt < KT; kt++) {
    let k0 = kt * TK;
    for (var i = 0u; i < 16u; i++) {
      let idx = t + i * 64u;
      let rr = idx / TK;
      let kk = idx % TK;
      let gm = m0 + rr;
      let gk = k0 + kk;
      var v = 0.0;
      if (gm < M && gk < K) { v = f32(a[gm * K + gk]); }
      at[rr][kk] = v;
    }
    let blk = k0 / (WPB * 8u);
    for (var i = 0u; i < 2u; i++) {
      let wi = t + i * 64u;
      let col = wi / (TK / 8u);
      let j = wi % (TK / 8u);
      let gn = n0 + col;
      var q = 0u;
      var z = 0.0;
      var sc = 0.0;
      if (gn < N) {
        q = qb[gn * WPR + (k0 >> 3u) + j];
        z = zero(gn, blk);
        sc = f32(scales[gn * KB + blk]);
      }
      for (var e = 0u; e < 8u; e++) { bt[j * 8u + e][col] = (f32((q >> (4u * e)) & 15u) - z) * sc; }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let b = vec4<f32>(bt[kk][c], bt[kk][c + 1u], bt[kk][c + 2u], bt[kk][c + 3u]);
      acc0 += at[r][kk] * b;
      acc1 += at[r + 1u][kk] * b;
      acc2 += at[r + 2u][kk] * b;
      acc3 += at[r + 3u][kk] * b;
    }
    workgroupBarrier();
  }
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i++) {
    let gm = m0 + r + i;
    if (gm < M) {
      for (var j = 0u; j < 4u; j++) {
        let gn = n0 + c + j;
        if (gn < N) { y[gm * N + gn] = ${T}(accs[i][j]); }
      }
    }
  }
}
`;
  const wy = Math.ceil(M / tile);
  if (wy > MAX_DIM) throw new Error(`GEMM M=${M} exceeds one dispatch`);
  return { name: `gemm_${T}_b${s.blockSize}${s.zeroPoints ? '_zp' : ''}`, wgsl, dispatch: [Math.ceil(s.N / tile), wy, 1], features };
}

/**
 * GatherBlockQuantized (uint8 form, gather_axis 0): one invocation per output word of 8 values.
 * Indices outside [-V, V) write zeros. K here is the table width H and N the row count V.
 */
export function gatherKernel(s: QuantShape, count: number, o: ShaderOptions): Kernel {
  checkShape(s);
  const { head, T, features } = header({ ...o, subgroups: false });
  const kw = Math.ceil(s.K / 8);
  const words = count * kw;
  const [gx, gy] = grid(Math.ceil(words / 64));
  const wgsl = `${head}${consts(s)}const KW: u32 = ${kw}u;
const WORDS: u32 = ${words}u;
${bindings(s, T, 'idx: array<i32>')}${zeroFn(s)}
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let g = gid.x + gid.y * ${gx * 64}u;
  if (g >= WORDS) { return; }
  let i = g / KW;
  let w = g % KW;
  var row = idx[i];
  if (row < 0) { row += i32(N); }
  let base = i * K + w * 8u;
  if (row < 0 || row >= i32(N)) {
    for (var e = 0u; e < 8u; e++) { if (w * 8u + e < K) { y[base + e] = ${T}(0.0); } }
    return;
  }
  let n = u32(row);
  let blk = w / WPB;
  let q = qb[n * WPR + w];
  let z = zero(n, blk);
  let sc = f32(scales[n * KB + blk]);
  for (var e = 0u; e < 8u; e++) {
    if (w * 8u + e < K) { y[base + e] = ${T}((f32((q >> (4u * e)) & 15u) - z) * sc); }
  }
}
`;
  return { name: `gather_${T}_b${s.blockSize}${s.zeroPoints ? '_zp' : ''}`, wgsl, dispatch: [gx, gy, 1], features };
}

/** Plain copy of `bytes` (a multiple of 16) as vec4<u32>: the adapter's achievable bandwidth. */
export function copyKernel(bytes: number): Kernel {
  const n = bytes / 16;
  if (!Number.isInteger(n)) throw new Error('copy size must be a multiple of 16 bytes');
  const [gx, gy] = grid(Math.ceil(n / 256));
  const wgsl = `@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${gx * 256}u;
  if (i < ${n}u) { dst[i] = src[i]; }
}
`;
  return { name: 'copy', wgsl, dispatch: [gx, gy, 1], features: [] };
}
