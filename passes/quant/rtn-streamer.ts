// Streamed RTN for the quantize pass: fp32 weights go from their file (or buffer) through the SIMD
// kernel unit by unit (rtn-stream.ts) into one WebAssembly memory, on the pool's workers when there
// are some. The memory holds a window per thread, then the outputs (B, scales, zero points) of each
// slab of columns in flight, placed first fit and freed once copied out: into the spill file (large
// weights whose emitter reads them lazily, spill.ts) or into the weight's arrays.
import { DataType } from '../../ir/index.js';
import type { Candidate } from './candidates.js';
import { SHARED_MAX_PAGES, bindKernel, simdAvailable, type BandTarget, type BoundKernel } from './methods/rtn-simd.js';
import { planSlabs, runRtnUnit, unitRange, type RtnUnitJob, type UnitRect } from './rtn-stream.js';
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

/** Weights with at least this many output bytes go to the spill file (lowered by tests). */
export function setSpillMinBytes(bytes: number): void {
  spillMinBytes = bytes;
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
  | { spill: SpillFile; codes: number; scales: number; zeroPoints?: Uint8Array }
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
    const out: Out = spill
      ? { spill, codes: spill.reserve(N * g.colBytes), scales: spill.reserve(N * kBlocks * 4), zeroPoints }
      : { spill: null, codes: new Uint8Array(N * g.colBytes), scales: new Float32Array(N * kBlocks), zeroPoints };
    const sums = await this.runSlabs(c, g, out);
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

  /**
   * Units of slabs of columns (one slab for [K, N]; [N, K] units are slabs of their own) whose
   * outputs the kernel writes to a region in the final layout, copied out as each slab ends.
   */
  private async runSlabs(c: Candidate, g: Geometry, out: Out): Promise<ErrorSums[]> {
    const sums: ErrorSums[] = [];
    for (const sl of planSlabs(c.storedNK, c.K, c.N, g.block, this.unitBytes)) {
      const w = sl.n1 - sl.n0,
        cells = w * g.kBlocks,
        at = sl.n0 * g.kBlocks;
      const region = await this.region(align(w * g.colBytes) + align(cells * 4) + align(cells));
      try {
        const t = { codes: region.start, scales: region.start + align(w * g.colBytes), zeroPoints: 0, kBlocks: g.kBlocks };
        t.zeroPoints = t.scales + align(cells * 4);
        sums.push(...(await this.runUnits(c, g, sl.units, t, sl.n0)));
        const buf = this.memory().buffer;
        const codes = new Uint8Array(buf, t.codes, w * g.colBytes),
          scales = new Uint8Array(buf, t.scales, cells * 4);
        if (out.spill) {
          out.spill.write(codes, out.codes + sl.n0 * g.colBytes);
          out.spill.write(scales, out.scales + at * 4);
        } else {
          out.codes.set(codes, sl.n0 * g.colBytes);
          new Uint8Array(out.scales.buffer).set(scales, at * 4);
        }
        out.zeroPoints?.set(new Uint8Array(buf, t.zeroPoints, cells), at);
      } finally {
        this.live.get(region)!.release();
        this.live.delete(region);
      }
    }
    return sums;
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

  private maxUnitBytes(c: Candidate): number {
    const block = this.s.blockOf(c),
      u = planSlabs(c.storedNK, c.K, c.N, block, this.unitBytes)[0]!.units[0]!;
    return unitRange({ ...u, b1: u.b0 + Math.min(u.step ?? Infinity, u.b1 - u.b0), storedNK: c.storedNK, K: c.K, N: c.N, blockSize: block })
      .length;
  }

  private outBytes(c: Candidate): number {
    const block = this.s.blockOf(c);
    return align((c.N * c.K * this.s.bitsOf(c)) / 8) + align((c.N * c.K * 4) / block) + align((c.N * c.K) / block);
  }

  /** The output region `c` needs at most (one slab's outputs). */
  private regionBytes(c: Candidate): number {
    if (!c.storedNK) return this.outBytes(c);
    const g = this.geometry(c),
      u = planSlabs(true, c.K, c.N, g.block, this.unitBytes)[0]!.units[0]!;
    return (u.n1 - u.n0) * (g.colBytes + 5 * g.kBlocks) + 48;
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

  /** Units on the pool or here; their error sums in unit order. */
  private async runUnits(c: Candidate, g: Geometry, units: UnitRect[], target: BandTarget, slabN0: number): Promise<ErrorSums[]> {
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
    const jobs: RtnUnitJob[] = units.map((u) => {
      const { start, length } = unitRange({ ...base, ...u });
      const src =
        d.kind === 'external'
          ? { file: d.ref.file, offset: d.ref.offset + start }
          : { offset: 0, bytes: raw!.subarray(start, start + length) };
      // n0, n1 place the outputs in the slab's region; the stored bytes were located above
      return { ...base, ...u, n0: u.n0 - slabN0, n1: u.n1 - slabN0, ...src };
    });
    this.ensure(this.windowsEnd());
    const pool = this.pool;
    if (pool) return Promise.all(jobs.map((j) => pool.rtnUnit(j)));
    return jobs.map((j) => runRtnUnit(j, (this.kernel ??= bindKernel(this.memory())), 0));
  }
}
