// Outputs of streamed quantization kept in a scratch file rather than in memory: the codes and scales
// of large weights go from the kernel's (reused) memory to the file by write(2), and the emitted
// initializers read them lazily, as raw_data the loader left in a model file (saveModel streams them
// out). Holding a 1 GB model's 170 MB of outputs in fresh process memory costs a page fault per 4 KiB
// page; the page cache does not. The files are removed when the process exits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExternalRef } from '../../ir/index.js';
import { readInto } from '../../ir/external-data.js';

const dirs = new Set<string>();
let hooked = false;

/** Remove every spill file of this process (on exit; tests whose workers end without an exit event). */
export function removeSpillFiles(): void {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

export class SpillFile {
  private fd: number | null = null;
  file = '';
  private end = 0;

  /** Reserve `length` bytes (16-aligned); returns their offset. */
  reserve(length: number): number {
    this.open();
    const at = this.end;
    this.end += (length + 15) & ~15;
    return at;
  }

  write(bytes: Uint8Array, at: number): void {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(this.fd!, bytes, done, bytes.length - done, at + done);
  }

  read(bytes: Uint8Array, at: number): void {
    readInto(this.fd!, bytes, at);
  }

  /** A lazy range of the file, saved inline or as external data as the model's own raw_data is. */
  ref(offset: number, length: number): ExternalRef {
    return { file: this.file, location: '', offset, length, extra: [], embedded: true };
  }

  /** Stop writing; the file stays until the process exits (the model reads it until saved). */
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private open(): void {
    if (this.fd !== null) return;
    if (this.file) throw new Error('spill file written after close');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-spill-'));
    dirs.add(dir);
    if (!hooked) {
      hooked = true;
      process.once('exit', removeSpillFiles);
    }
    this.file = path.join(dir, 'weights.bin');
    this.fd = fs.openSync(this.file, 'w+');
  }
}
