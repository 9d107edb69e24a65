// Streamed RTN for the quantize pass: fp32 weights go from their file (or buffer) through the SIMD
// kernel unit by unit (rtn-stream.ts) into one WebAssembly memory, on the pool's workers when there
// are some. The memory holds a window per thread, then the outputs (B, scales, zero points) of each
// weight in flight, placed first fit and freed once copied out.
import { DataType } from '../../ir/index.js';
import type { Candidate } from './candidates.js';
import { SHARED_MAX_PAGES, bindKernel, simdAvailable, type BoundKernel } from './methods/rtn-simd.js';
import { planUnits, runRtnUnit, unitRange, type RtnUnitJob } from './rtn-stream.js';
import type { Quantized, QuantizedWeight } from './types.js';
import type { QuantPool } from './workers.js';

export interface StreamSettings {
  block: number;
  sym: boolean;
  threads: number;
  maxSliceMb: number;
  bitsOf(c: Candidate): 4 | 8;
  blockOf(c: Candidate): number;
}

interface Region {
  start: number;
  end: number;
}

const align = (x: number) => (x + 15) & ~15;
const MAX_BYTES = SHARED_MAX_PAGES * 65536;

export class RtnStreamer {
  private mem?: WebAssembly.Memory;
  private kernel?: BoundKernel;
  private readonly live = new Map<Region, Promise<unknown>>();
  private readonly windowStride: number;
  private readonly unitBytes: number;

  /** `cands`: every weight of the run (the windows fit the largest first unit of any). */
  constructor(
    cands: readonly Candidate[],
    private readonly s: StreamSettings,
    private readonly pool: QuantPool | null,
  ) {
    this.unitBytes = s.maxSliceMb * 2 ** 20;
    this.windowStride = align(Math.max(0, ...cands.filter((c) => this.shapeStreams(c)).map((c) => this.firstUnitBytes(c))) + 32);
  }

  /** An fp32 weight the kernel takes whole (blocks divide K, N % 4) with room for its outputs. */
  fits(c: Candidate): boolean {
    return (
      c.w.tensor.dtype === DataType.FLOAT &&
      c.w.tensor.data.kind !== 'typed' &&
      this.shapeStreams(c) &&
      this.windowsEnd() + this.outBytes(c) <= MAX_BYTES &&
      simdAvailable()
    );
  }

  async quantize(c: Candidate): Promise<Quantized> {
    let region = this.alloc(this.outBytes(c));
    while (region.end > MAX_BYTES && this.live.size) {
      await Promise.race([...this.live.values()]).catch(() => {});
      region = this.alloc(this.outBytes(c));
    }
    const have = this.memory().buffer.byteLength;
    if (region.end > have) this.memory().grow(Math.ceil((region.end - have) / 65536));
    const run = this.streamOne(c, region.start);
    this.live.set(region, run);
    try {
      return await run;
    } finally {
      this.live.delete(region);
    }
  }

  private memory(): WebAssembly.Memory {
    return (this.mem ??= this.pool?.memory ?? new WebAssembly.Memory({ initial: 1 }));
  }

  private windowsEnd(): number {
    return this.windowStride * Math.max(1, this.s.threads);
  }

  private firstUnitBytes(c: Candidate): number {
    const block = this.s.blockOf(c);
    return unitRange({
      ...planUnits(c.storedNK, c.K, c.N, block, this.unitBytes)[0]!,
      storedNK: c.storedNK,
      K: c.K,
      N: c.N,
      blockSize: block,
    }).length;
  }

  private outBytes(c: Candidate): number {
    const block = this.s.blockOf(c);
    return align((c.N * c.K * this.s.bitsOf(c)) / 8) + align((c.N * c.K * 4) / block) + align((c.N * c.K) / block);
  }

  private shapeStreams(c: Candidate): boolean {
    const block = this.s.blockOf(c);
    return c.K % block === 0 && c.N % 4 === 0 && this.firstUnitBytes(c) <= 256 * 2 ** 20 && this.outBytes(c) <= MAX_BYTES / 4;
  }

  private alloc(bytes: number): Region {
    let at = this.windowsEnd();
    for (const r of [...this.live.keys()].sort((x, y) => x.start - y.start)) {
      if (r.start >= at + bytes) break;
      at = Math.max(at, r.end);
    }
    return { start: at, end: at + bytes };
  }

  private async streamOne(c: Candidate, at: number): Promise<Quantized> {
    const { sym } = this.s;
    const block = this.s.blockOf(c);
    const { K, N } = c,
      b = this.s.bitsOf(c),
      kBlocks = K / block,
      blob = (block * b) / 8,
      cells = N * kBlocks;
    const t = c.w.tensor,
      d = t.data;
    const target = { codes: at, scales: at + align(cells * blob), zeroPoints: at + align(cells * blob) + align(cells * 4), kBlocks };
    const raw = d.kind === 'external' ? null : t.bytes();
    const base = {
      storedNK: c.storedNK,
      K,
      N,
      bits: b,
      blockSize: block,
      symmetric: sym,
      alpha: c.kind === 'gemm' ? c.node.attrFloat('alpha', 1) : 1,
      target,
      windows: 0,
      windowStride: this.windowStride,
    };
    const jobs: RtnUnitJob[] = planUnits(c.storedNK, K, N, block, this.unitBytes).map((u) => {
      const { start, length } = unitRange({ ...base, ...u });
      return {
        ...base,
        ...u,
        ...(d.kind === 'external'
          ? { file: d.ref.file, offset: d.ref.offset + start }
          : { offset: 0, bytes: raw!.subarray(start, start + length) }),
      };
    });
    const pool = this.pool;
    const sums = pool
      ? await Promise.all(jobs.map((j) => pool.rtnUnit(j)))
      : jobs.map((j) => runRtnUnit(j, (this.kernel ??= bindKernel(this.memory())), 0));
    let se = 0,
      ss = 0;
    for (const e of sums) {
      se += e.se;
      ss += e.ss;
    }
    const buf = this.memory().buffer;
    const q: QuantizedWeight = {
      K,
      N,
      bits: b,
      blockSize: block,
      kBlocks,
      symmetric: sym,
      codes: new Uint8Array(0),
      scales: new Float32Array(buf, target.scales, cells).slice(),
      zeroPoints: sym ? undefined : new Uint8Array(buf, target.zeroPoints, cells).slice(),
    };
    return { q, packed: new Uint8Array(buf, target.codes, cells * blob).slice(), relError: ss === 0 ? Math.sqrt(se) : Math.sqrt(se / ss) };
  }
}
