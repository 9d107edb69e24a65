// Streaming RTN of one fp32 weight, a unit (rectangle of blocks x output columns) at a time: each
// unit is read from its external file (or memory) straight into a window of the SIMD kernel's
// memory, and the kernel writes packed codes, scales and zero points to their final places in that
// memory while it sums the reconstruction error. Neither the whole fp32 weight nor a code array is
// ever held. Worker threads share one WebAssembly memory, each with its own window, so units need
// no gathering afterwards. Units are planned from the weight's shape alone and their error sums are
// added in unit order, so the result is the same whichever thread runs which unit.
import fs from 'node:fs';
import { readInto } from '../../ir/external-data.js';
import { rtnBandAt, type BandTarget, type BoundKernel } from './methods/rtn-simd.js';

export interface RtnUnitJob {
  /** The unit's stored fp32 bytes: those of `file` at `offset`, or `bytes`. */
  file?: string;
  offset: number;
  bytes?: Uint8Array;
  /** Stored [N, K] (a row per output column) rather than [K, N]. */
  storedNK: boolean;
  K: number;
  N: number;
  /** Output columns [n0, n1) and blocks [b0, b1): full width for [K, N], all blocks for [N, K]. */
  n0: number;
  n1: number;
  b0: number;
  b1: number;
  bits: 4 | 8;
  blockSize: number;
  symmetric: boolean;
  /** Gemm alpha folded into the weight (fround(w * alpha)). */
  alpha: number;
  target: BandTarget;
  /** Thread i's window is at windows + i * windowStride. */
  windows: number;
  windowStride: number;
  /** Blocks per window ([K, N] units spanning several windows). */
  step?: number;
}

/** Bytes of the stored tensor a unit covers (contiguous in both layouts). */
export function unitRange(j: Pick<RtnUnitJob, 'storedNK' | 'K' | 'N' | 'n0' | 'n1' | 'b0' | 'b1' | 'blockSize'>): {
  start: number;
  length: number;
} {
  if (j.storedNK) return { start: j.n0 * j.K * 4, length: (j.n1 - j.n0) * j.K * 4 };
  return { start: j.b0 * j.blockSize * j.N * 4, length: (j.b1 - j.b0) * j.blockSize * j.N * 4 };
}

export interface UnitRect {
  n0: number;
  n1: number;
  b0: number;
  b1: number;
  /** [K, N]: blocks per window; a unit of more is run window by window by one thread. */
  step?: number;
}

/** Blocks whose scales share a 64-byte line: units of [K, N] span at least this many, so that two
 * threads writing neighbouring units do not write one cache line (false sharing cost 3-7x). */
const LINE_BLOCKS = 16;

/** A slab: the units whose outputs share one region of the kernel's memory, laid out [n1 - n0][b1 - b0]. */
export interface Slab {
  n0: number;
  n1: number;
  b0: number;
  b1: number;
  units: UnitRect[];
}

/**
 * Slabs with their units of at most about `unitBytes` of fp32 (at least one block row or four
 * columns): for [K, N], bands of at most `slabBlocks` block rows across every column, in units of
 * block rows; for [N, K] each unit (a contiguous column range) is a slab of its own.
 */
export function planSlabs(storedNK: boolean, K: number, N: number, blockSize: number, unitBytes: number, slabBlocks = Infinity): Slab[] {
  const kBlocks = K / blockSize;
  const out: Slab[] = [];
  if (storedNK) {
    const step = Math.max(4, Math.floor(unitBytes / (K * 4)) & ~3);
    for (let n0 = 0; n0 < N; n0 += step) {
      const n1 = Math.min(N, n0 + step);
      out.push({ n0, n1, b0: 0, b1: kBlocks, units: [{ n0, n1, b0: 0, b1: kBlocks }] });
    }
    return out;
  }
  const step = Math.max(1, Math.floor(unitBytes / (blockSize * N * 4))),
    span = Math.ceil(LINE_BLOCKS / step) * step;
  for (let s0 = 0; s0 < kBlocks; s0 += slabBlocks) {
    const s1 = Math.min(kBlocks, s0 + slabBlocks),
      units = [];
    for (let b0 = s0; b0 < s1; b0 += span) units.push({ n0: 0, n1: N, b0, b1: Math.min(s1, b0 + span), step });
    out.push({ n0: 0, n1: N, b0: s0, b1: s1, units });
  }
  return out;
}

/**
 * Floats from one window row to the next: a row of an even number of cache lines gets one more, so
 * that the kernel's 32-row column walks spread over the L1 sets (a 2048-float row put all 32 rows of a
 * block in one set: 2x slower).
 */
export function rowStride(ns: number): number {
  return ns % 32 === 0 ? ns + 16 : ns;
}

/** Window bytes for `rows` rows of `ns` floats, as laid out by runWindow. */
export function windowBytes(rows: number, ns: number): number {
  return rows * rowStride(ns) * 4;
}

let scratch = new Uint8Array(0);
/** Rows per readv (IOV_MAX is 1024 on Linux). */
const IOV = 512;

let views: { dst: Uint8Array; rows: number; rowBytes: number; stride: number; rowsOf: Uint8Array[] } | undefined;

/** Row views of a window, kept while the same window is read the same way (most windows of a weight). */
function rowViews(dst: Uint8Array, rows: number, rowBytes: number, stride: number): Uint8Array[] {
  const v = views;
  if (
    v &&
    v.dst.buffer === dst.buffer &&
    v.dst.byteOffset === dst.byteOffset &&
    v.rows === rows &&
    v.rowBytes === rowBytes &&
    v.stride === stride
  )
    return v.rowsOf;
  const rowsOf = Array.from({ length: rows }, (_, r) => dst.subarray(r * stride, r * stride + rowBytes));
  views = { dst, rows, rowBytes, stride, rowsOf };
  return rowsOf;
}

/** The unit's `rows` rows of `rowBytes` into `dst` at `stride` bytes apart: one readv per IOV rows. */
function readUnit(j: RtnUnitJob, dst: Uint8Array, rows: number, rowBytes: number, stride: number): void {
  const row = (r: number) => dst.subarray(r * stride, r * stride + rowBytes);
  if (j.bytes) {
    if (stride === rowBytes) dst.set(j.bytes.subarray(0, rows * rowBytes));
    else for (let r = 0; r < rows; r++) row(r).set(j.bytes.subarray(r * rowBytes, (r + 1) * rowBytes));
    return;
  }
  const fd = fs.openSync(j.file!, 'r');
  try {
    if (stride === rowBytes) return readInto(fd, dst.subarray(0, rows * rowBytes), j.offset);
    const all = rowViews(dst, rows, rowBytes, stride);
    for (let r0 = 0; r0 < rows; r0 += IOV) {
      const r1 = Math.min(rows, r0 + IOV),
        part = r0 === 0 && r1 === rows ? all : all.slice(r0, r1);
      // a short read (rare) is finished row by row
      if (fs.readvSync(fd, part, j.offset + r0 * rowBytes) < (r1 - r0) * rowBytes)
        for (let r = r0; r < r1; r++) readInto(fd, row(r), j.offset + r * rowBytes);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Quantize one unit on thread `thread` (K a multiple of the block, the unit's width of 4), a window at a time. */
export function runRtnUnit(j: RtnUnitJob, k: BoundKernel, thread: number): { se: number; ss: number } {
  const step = j.step ?? j.b1 - j.b0;
  if (j.storedNK || j.b1 - j.b0 <= step) return runWindow(j, k, thread);
  let se = 0,
    ss = 0;
  const rowBytes = j.blockSize * j.N * 4;
  for (let b0 = j.b0; b0 < j.b1; b0 += step) {
    const b1 = Math.min(j.b1, b0 + step),
      at = (b0 - j.b0) * rowBytes;
    const e = runWindow({ ...j, b0, b1, offset: j.offset + at, bytes: j.bytes?.subarray(at, at + (b1 - b0) * rowBytes) }, k, thread);
    se += e.se;
    ss += e.ss;
  }
  return { se, ss };
}

function runWindow(j: RtnUnitJob, k: BoundKernel, thread: number): { se: number; ss: number } {
  const blocks = j.b1 - j.b0,
    ns = j.n1 - j.n0,
    rows = blocks * j.blockSize,
    window = j.windows + thread * j.windowStride,
    stride = rowStride(ns);
  const dst = new Uint8Array(k.memory.buffer, window, windowBytes(rows, ns));
  if (!j.storedNK) readUnit(j, dst, rows, ns * 4, stride * 4);
  else {
    // Stored rows are output columns: transpose [ns, K] into the kernel's [K, ns] in 64-row tiles.
    if (scratch.length < rows * ns * 4) scratch = new Uint8Array(rows * ns * 4);
    const raw = scratch.subarray(0, rows * ns * 4);
    readUnit(j, raw, ns, rows * 4, rows * 4);
    const src = new Float32Array(raw.buffer, 0, ns * rows),
      out = new Float32Array(dst.buffer, dst.byteOffset, stride * rows);
    for (let k0 = 0; k0 < rows; k0 += 64) {
      const k1 = Math.min(rows, k0 + 64);
      for (let n = 0; n < ns; n++) for (let kk = k0, i = n * rows + k0; kk < k1; kk++, i++) out[kk * stride + n] = src[i]!;
    }
  }
  if (j.alpha !== 1) {
    // the padding's floats are scaled too: the kernel never reads them
    const f = new Float32Array(dst.buffer, dst.byteOffset, stride * rows);
    for (let i = 0; i < f.length; i++) f[i] = Math.fround(f[i]! * j.alpha);
  }
  return rtnBandAt(k, window, stride, j.n0, ns, j.b0, j.b1, j.bits, j.blockSize, j.symmetric, j.target);
}
