// Calibration activation samples, kept in memory up to a budget and spilled to one unlinked
// temporary file beyond it: a 3B decoder's samples (512 rows of every distinct MatMul input) are
// about 1 GB, and the quantize pass asks for them one weight at a time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Default memory for samples before they go to disk (EDGEC_CALIB_MEMORY_BYTES overrides). */
export const CALIB_MEMORY_BYTES = Number(process.env.EDGEC_CALIB_MEMORY_BYTES ?? 512 * 2 ** 20);

type Chunk = Float32Array | { at: number; length: number };

export class ActivationStore<K> {
  private chunks = new Map<K, Chunk[]>();
  private fd: number | undefined;
  private end = 0;
  private held = 0;
  /** Bytes written to disk. */
  spilled = 0;

  constructor(readonly memoryBytes = CALIB_MEMORY_BYTES) {}

  /** Appends rows to `key`'s sample. */
  add(key: K, x: Float32Array): void {
    const list = this.chunks.get(key) ?? this.chunks.set(key, []).get(key)!;
    if (this.fd === undefined && this.held + x.byteLength <= this.memoryBytes) {
      list.push(x);
      this.held += x.byteLength;
      return;
    }
    if (this.fd === undefined) this.spillAll();
    list.push(this.write(x));
  }

  /** `key`'s rows, in the order they were added (a fresh array). */
  read(key: K): Float32Array {
    const list = this.chunks.get(key) ?? [];
    const out = new Float32Array(list.reduce((s, c) => s + c.length, 0));
    let o = 0;
    for (const c of list) {
      if (c instanceof Float32Array) out.set(c, o);
      else fs.readSync(this.fd!, new Uint8Array(out.buffer, o * 4, c.length * 4), 0, c.length * 4, c.at);
      o += c.length;
    }
    return out;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.chunks.clear();
  }

  private write(x: Float32Array): Chunk {
    const c = { at: this.end, length: x.length };
    fs.writeSync(this.fd!, new Uint8Array(x.buffer, x.byteOffset, x.byteLength), 0, x.byteLength, this.end);
    this.end += x.byteLength;
    this.spilled += x.byteLength;
    return c;
  }

  /** Over budget: everything goes to disk, so memory holds no sample at all. */
  private spillAll(): void {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-acts-'));
    const file = path.join(dir, 'activations.f32');
    this.fd = fs.openSync(file, 'w+');
    // Unlinked at once: a killed run leaves nothing behind; the open descriptor keeps the data.
    fs.rmSync(dir, { recursive: true, force: true });
    for (const list of this.chunks.values()) for (let i = 0; i < list.length; i++) list[i] = this.write(list[i] as Float32Array);
    this.held = 0;
  }
}
