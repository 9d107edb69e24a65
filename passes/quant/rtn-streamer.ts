// Streamed RTN for the quantize pass: fp32 weights go from their file (or buffer) through the SIMD
// kernel unit by unit (rtn-stream.ts) into one WebAssembly memory, on the pool's workers when there
// are some. The memory holds a window per thread, then the outputs (B, scales, zero points) of each
// slab in flight, placed first fit and freed once copied out: into the spill file (large weights
// whose emitter reads them lazily, spill.ts) or into the weight's arrays. A [K, N] weight whose
// outputs exceed 8 MiB (regionCap) runs as bands of block rows: each band's outputs go to the spill file
// as they are, and are gathered into the column-major layout at the end (the page cache is cheap
// here, fresh process memory is not: a page fault per 4 KiB page).
import { DataType } from '../../ir/index.js';
import type { Candidate } from './candidates.js';
import { SHARED_MAX_PAGES, bindKernel, simdAvailable, type BandTarget, type BoundKernel } from './methods/rtn-simd.js';
import { planSlabs, runRtnUnit, unitRange, windowBytes, type RtnUnitJob, type Slab, type UnitRect } from './rtn-stream.js';
import { SpillFile } from './spill.js';
import type { Quantized, QuantizedWeight } from './types.js';
import type { ErrorSums, QuantPool } from './workers.js';

export interface StreamSettings {
  block: number;
  sym: boolean;
  threads: number;
  maxSliceMb: number;
  bitsOf(c: Candidate): 4 | 8;
  blockOf(c: Candidate): number;
  /** Whether `c`'s codes and scales may stay in a scratch file (its emitter reads them lazily). */
  spillable?(c: Candidate): boolean;
}

interface Region {
  start: number;
  end: number;
}

const align = (x: number) => (x + 15) & ~15;
const MAX_BYTES = SHARED_MAX_PAGES * 65536;
/** fp32 bytes of one unit at most: the windows, first touched once (a page fault per 4 KiB page). */
const UNIT_BYTES = 4 << 20;
let spillMinBytes = 1 << 20;
/** Output bytes of one slab at most, for [K, N] weights (outputs of a band of block rows). */
let regionCap = 8 << 20;

/** Weights with at least this many output bytes go to the spill file (lowered by tests). */
export function setSpillMinBytes(bytes: number): void {
  spillMinBytes = bytes;
}

/** The most output bytes a [K, N] weight keeps in the kernel's memory at once (lowered by tests). */
export function setRegionBytes(bytes: number): void {
  regionCap = bytes;
}

interface Geometry {
  K: number;
  N: number;
  block: number;
  bits: 4 | 8;
  kBlocks: number;
  /** Bytes of one block's codes, and of one column's. */
  blob: number;
  colBytes: number;
}

/** Where a weight's outputs go: the spill file (offsets of the final layout) or arrays. */
type Out =
  | { spill: SpillFile; codes: number; scales: number; zeroPoints?: Uint8Array; bands?: { codes: number; scales: number } }
  | { spill: null; codes: Uint8Array; scales: Float32Array; zeroPoints?: Uint8Array };

export class RtnStreamer {
  private mem?: WebAssembly.Memory;
  private kernel?: BoundKernel;
  /** Output regions of weights in flight; `freed` settles when the outputs have been copied out. */
  private readonly live = new Map<Region, { freed: Promise<void>; release: () => void }>();
  private readonly windowStride: number;
  private readonly unitBytes: number;
  private spill?: SpillFile;

  /** `cands`: every weight of the run (the windows fit the largest unit of any). */
  constructor(
    cands: readonly Candidate[],
    private readonly s: StreamSettings,
    private readonly pool: QuantPool | null,
  ) {
    this.unitBytes = Math.floor(Math.min(UNIT_BYTES, s.maxSliceMb * 2 ** 20));
    const streams = cands.filter((c) => this.shapeStreams(c));
    this.windowStride = align(Math.max(0, ...streams.map((c) => this.maxUnitBytes(c))) + 32);
  }

  /** An fp32 weight the kernel takes whole (blocks divide K, N % 4) with room for its outputs. */
  fits(c: Candidate): boolean {
    return (
      c.w.tensor.dtype === DataType.FLOAT &&
      c.w.tensor.data.kind !== 'typed' &&
      this.shapeStreams(c) &&
      this.windowsEnd() + this.regionBytes(c) <= MAX_BYTES &&
      simdAvailable()
    );
  }

  /** The scratch file stays readable until the process exits; no more writes. */
  close(): void {
    this.spill?.close();
  }

  async quantize(c: Candidate): Promise<Quantized> {
    const g = this.geometry(c),
      { N, kBlocks } = g,
      sym = this.s.sym;
    const spill = this.outBytes(c) >= spillMinBytes && this.s.spillable?.(c) ? (this.spill ??= new SpillFile()) : null;
    const zeroPoints = sym ? undefined : new Uint8Array(N * kBlocks);
    const slabs = this.slabs(c, g);
    const out: Out = spill
      ? { spill, codes: spill.reserve(N * g.colBytes), scales: spill.reserve(N * kBlocks * 4), zeroPoints }
      : { spill: null, codes: new Uint8Array(N * g.colBytes), scales: new Float32Array(N * kBlocks), zeroPoints };
    if (out.spill && slabs[0]!.b1 - slabs[0]!.b0 < kBlocks)
      out.bands = { codes: out.spill.reserve(N * g.colBytes), scales: out.spill.reserve(N * kBlocks * 4) };
    const sums = await this.runSlabs(c, g, slabs, out);
    if (out.spill && out.bands) {
      transposeBands(out.spill, slabs, N, g.blob, kBlocks, out.bands.codes, out.codes);
      transposeBands(out.spill, slabs, N, 4, kBlocks, out.bands.scales, out.scales);
    }
    let se = 0,
      ss = 0;
    for (const e of sums) {
      se += e.se;
      ss += e.ss;
    }
    const q: QuantizedWeight = {
      K: g.K,
      N,
      bits: g.bits,
      blockSize: g.block,
      kBlocks,
      symmetric: sym,
      codes: new Uint8Array(0),
      scales: out.spill ? new Float32Array(0) : out.scales,
      zeroPoints,
    };
    const relError = ss === 0 ? Math.sqrt(se) : Math.sqrt(se / ss);
    if (!out.spill) return { q, packed: out.codes, relError };
    return {
      q,
      spilled: { packed: out.spill.ref(out.codes, N * g.colBytes), scales: out.spill.ref(out.scales, N * kBlocks * 4) },
      relError,
    };
  }

  private geometry(c: Candidate): Geometry {
    const block = this.s.blockOf(c),
      bits = this.s.bitsOf(c),
      kBlocks = c.K / block,
      blob = (block * bits) / 8;
    return { K: c.K, N: c.N, block, bits, kBlocks, blob, colBytes: kBlocks * blob };
  }

  /** Slabs in order; [K, N] weights in bands of block rows whose outputs fit regionCap. */
  private slabs(c: Candidate, g: Geometry): Slab[] {
    const perRow = c.N * (g.blob + 5);
    const h = c.storedNK || perRow * g.kBlocks <= regionCap ? g.kBlocks : Math.max(1, Math.floor(regionCap / perRow));
    return planSlabs(c.storedNK, c.K, c.N, g.block, this.unitBytes, h);
  }

  /**
   * Slabs run `threads` at a time (each with its own output region, so threads never share a cache
   * line of outputs); their error sums come back in slab order, whichever thread ran what.
   */
  private async runSlabs(c: Candidate, g: Geometry, slabs: Slab[], out: Out): Promise<ErrorSums[]> {
    const sums: ErrorSums[][] = [];
    let next = 0;
    const lane = async () => {
      for (let i; (i = next++) < slabs.length;) sums[i] = await this.runSlab(c, g, slabs[i]!, out);
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(this.s.threads, slabs.length)) }, lane));
    return sums.flat();
  }

  /** One slab's units, whose outputs the kernel writes to a region laid out [columns][blocks], then copied out. */
  private async runSlab(c: Candidate, g: Geometry, sl: Slab, out: Out): Promise<ErrorSums[]> {
    const w = sl.n1 - sl.n0,
      h = sl.b1 - sl.b0,
      cells = w * h,
      piece = h * g.blob;
    const region = await this.region(align(w * piece) + align(cells * 4) + align(cells));
    try {
      const t = { codes: region.start, scales: region.start + align(w * piece), zeroPoints: 0, kBlocks: h };
      t.zeroPoints = t.scales + align(cells * 4);
      const sums = await this.runUnits(c, g, sl, t);
      const buf = this.memory().buffer;
      const codes = new Uint8Array(buf, t.codes, w * piece),
        scales = new Uint8Array(buf, t.scales, cells * 4);
      if (out.zeroPoints) scatterRows(new Uint8Array(buf, t.zeroPoints, cells), out.zeroPoints, sl.n0 * g.kBlocks + sl.b0, w, h, g.kBlocks);
      if (out.spill && out.bands) {
        // a band of block rows: kept as it is, gathered into columns once every band is done
        out.spill.write(codes, out.bands.codes + c.N * sl.b0 * g.blob);
        out.spill.write(scales, out.bands.scales + c.N * sl.b0 * 4);
      } else if (out.spill) {
        out.spill.write(codes, out.codes + sl.n0 * g.colBytes);
        out.spill.write(scales, out.scales + sl.n0 * g.kBlocks * 4);
      } else {
        scatterRows(codes, out.codes, sl.n0 * g.colBytes + sl.b0 * g.blob, w, piece, g.colBytes);
        scatterRows(scales, new Uint8Array(out.scales.buffer), (sl.n0 * g.kBlocks + sl.b0) * 4, w, h * 4, g.kBlocks * 4);
      }
      return sums;
    } finally {
      this.live.get(region)!.release();
      this.live.delete(region);
    }
  }

  /** A free region of `bytes` in the kernel's memory, waiting for one when the memory is full. */
  private async region(bytes: number): Promise<Region> {
    let region = this.alloc(bytes);
    while (region.end > MAX_BYTES && this.live.size) {
      await Promise.race([...this.live.values()].map((l) => l.freed));
      region = this.alloc(bytes);
    }
    this.ensure(region.end);
    let release!: () => void;
    this.live.set(region, { freed: new Promise<void>((r) => (release = r)), release });
    return region;
  }

  private ensure(bytes: number): void {
    const have = this.memory().buffer.byteLength;
    if (bytes > have) this.memory().grow(Math.ceil((bytes - have) / 65536));
  }

  private memory(): WebAssembly.Memory {
    return (this.mem ??= this.pool?.memory ?? new WebAssembly.Memory({ initial: 1 }));
  }

  private windowsEnd(): number {
    return this.windowStride * Math.max(1, this.s.threads);
  }

  /** Window bytes of `c`'s largest window (rows padded as runWindow lays them out). */
  private maxUnitBytes(c: Candidate): number {
    const block = this.s.blockOf(c),
      u = planSlabs(c.storedNK, c.K, c.N, block, this.unitBytes)[0]!.units[0]!;
    return windowBytes(Math.min(u.step ?? Infinity, u.b1 - u.b0) * block, u.n1 - u.n0);
  }

  private outBytes(c: Candidate): number {
    const block = this.s.blockOf(c);
    return align((c.N * c.K * this.s.bitsOf(c)) / 8) + align((c.N * c.K * 4) / block) + align((c.N * c.K) / block);
  }

  /** The output region `c` needs at most (the first slab's outputs). */
  private regionBytes(c: Candidate): number {
    const g = this.geometry(c),
      sl = this.slabs(c, g)[0]!;
    return (sl.n1 - sl.n0) * (sl.b1 - sl.b0) * (g.blob + 5) + 48;
  }

  private shapeStreams(c: Candidate): boolean {
    const block = this.s.blockOf(c);
    return c.K % block === 0 && c.N % 4 === 0 && this.maxUnitBytes(c) <= 256 * 2 ** 20 && this.regionBytes(c) <= MAX_BYTES / 4;
  }

  private alloc(bytes: number): Region {
    let at = this.windowsEnd();
    for (const r of [...this.live.keys()].sort((x, y) => x.start - y.start)) {
      if (r.start >= at + bytes) break;
      at = Math.max(at, r.end);
    }
    return { start: at, end: at + bytes };
  }

  /** A slab's units on the pool or here; their error sums in unit order. */
  private async runUnits(c: Candidate, g: Geometry, sl: Slab, target: BandTarget): Promise<ErrorSums[]> {
    const t = c.w.tensor,
      d = t.data;
    const raw = d.kind === 'external' ? null : t.bytes();
    const base = {
      storedNK: c.storedNK,
      K: c.K,
      N: c.N,
      bits: g.bits,
      blockSize: g.block,
      symmetric: this.s.sym,
      alpha: c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1,
      target,
      windows: 0,
      windowStride: this.windowStride,
    };
    const jobs: RtnUnitJob[] = sl.units.map((u: UnitRect) => {
      const { start, length } = unitRange({ ...base, ...u });
      const src =
        d.kind === 'external'
          ? { file: d.ref.file, offset: d.ref.offset + start }
          : { offset: 0, bytes: raw!.subarray(start, start + length) };
      // columns and blocks relative to the slab place the outputs in its region; the stored bytes were located above
      return { ...base, ...u, n0: u.n0 - sl.n0, n1: u.n1 - sl.n0, b0: u.b0 - sl.b0, b1: u.b1 - sl.b0, ...src };
    });
    this.ensure(this.windowsEnd());
    const pool = this.pool;
    if (pool) return Promise.all(jobs.map((j) => pool.rtnUnit(j)));
    return jobs.map((j) => runRtnUnit(j, (this.kernel ??= bindKernel(this.memory())), 0));
  }
}

/** Copy `rows` pieces of `piece` bytes, packed in `src`, to `dst` at `at + r * stride` (in words when aligned). */
function scatterRows(src: Uint8Array, dst: Uint8Array, at: number, rows: number, piece: number, stride: number): void {
  if (piece === stride) {
    dst.set(src.subarray(0, rows * piece), at);
    return;
  }
  if (((src.byteOffset | (dst.byteOffset + at) | piece | stride) & 3) === 0) {
    const s32 = new Int32Array(src.buffer, src.byteOffset, (rows * piece) >> 2),
      d32 = new Int32Array(dst.buffer, dst.byteOffset, dst.length >> 2),
      p = piece >> 2;
    for (let r = 0, i = 0; r < rows; r++) for (let o = (at + r * stride) >> 2, e = o + p; o < e;) d32[o++] = s32[i++]!;
    return;
  }
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * piece, (r + 1) * piece), at + r * stride);
}

let gatherIn = new Uint8Array(0),
  gatherOut = new Uint8Array(0);
/** Bytes of columns gathered at a time (buffers reused: fresh memory costs a page fault per 4 KiB page). */
const GATHER_BYTES = 1 << 20;

/**
 * Band-major outputs in the spill file ([band][N][band blocks * unit] at `from`) to column-major
 * ([N][kBlocks * unit] at `to`), a range of columns at a time.
 */
function transposeBands(spill: SpillFile, bands: Slab[], N: number, unit: number, kBlocks: number, from: number, to: number): void {
  const colBytes = kBlocks * unit,
    cols = Math.max(1, Math.floor(GATHER_BYTES / colBytes));
  if (gatherOut.length < cols * colBytes) gatherOut = new Uint8Array(cols * colBytes);
  if (gatherIn.length < cols * colBytes) gatherIn = new Uint8Array(cols * colBytes);
  for (let c0 = 0; c0 < N; c0 += cols) {
    const w = Math.min(N, c0 + cols) - c0;
    for (const b of bands) {
      const piece = (b.b1 - b.b0) * unit,
        src = gatherIn.subarray(0, w * piece);
      spill.read(src, from + N * b.b0 * unit + c0 * piece);
      scatterRows(src, gatherOut, b.b0 * unit, w, piece, colBytes);
    }
    spill.write(gatherOut.subarray(0, w * colBytes), to + c0 * colBytes);
  }
}
