// Read an .onnx without pulling its weights into memory: walk the protobuf wire format of
// ModelProto -> graph -> initializer from the file, keep each large raw_data as a (offset, length)
// range of the file, and decode everything else with the schema. Embedded-weight models (every ViT,
// most small LLMs) then load like external-data ones: weight bytes are touched once, when used.
// Anything unusual (a repeated graph or raw_data field, a wire type the schema does not expect, a
// truncation) returns null and the caller decodes the whole file, which reports the canonical error.
import fs from 'node:fs';
import { GraphProto, ModelProto, TensorProto, type PB } from './onnx-schema.js';

/** raw_data at least this big stays in the file; smaller tensors are read (cheap, often reused). */
export const LAZY_RAW_MIN = 64 << 10;

export interface FileRange {
  offset: number;
  length: number;
}

export interface ScannedModel {
  pb: PB;
  /** raw_data left in the file, keyed by the decoded TensorProto object. */
  lazy: WeakMap<object, FileRange>;
}

const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_RAW_DATA = 9;
const LEN = 2;

class Unusual extends Error {}

/** A read-ahead window over the file, shared by the cursors of nested messages. */
class FileWindow {
  buf = Buffer.allocUnsafe(1 << 16);
  start = 0;
  end = 0;
  constructor(readonly fd: number) {}
}

/** Sequential reader over one message's bytes in the file; only `take`n bytes are kept. */
class FileCursor {
  pos: number;

  constructor(
    readonly w: FileWindow,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A cursor over a length-delimited field's body. */
  sub(f: { bodyStart: number; bodyLen: number }): FileCursor {
    return new FileCursor(this.w, f.bodyStart, f.bodyStart + f.bodyLen);
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Past the last field: a length that overran the message is a malformed file. */
  finish(): void {
    if (this.pos !== this.end) throw new Unusual('field overruns its message');
  }

  private byte(): number {
    if (this.pos >= this.end) throw new Unusual('truncated');
    const w = this.w;
    if (this.pos < w.start || this.pos >= w.end) {
      const n = fs.readSync(w.fd, w.buf, 0, Math.min(w.buf.length, this.end - this.pos), this.pos);
      if (n <= 0) throw new Unusual('truncated');
      w.start = this.pos;
      w.end = this.pos + n;
    }
    return w.buf[this.pos++ - w.start]!;
  }

  varint(): number {
    let v = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      const b = this.byte();
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    throw new Unusual('varint too long');
  }

  take(n: number): Uint8Array {
    if (n > this.end - this.pos) throw new Unusual('truncated');
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const r = fs.readSync(this.w.fd, out, done, n - done, this.pos + done);
      if (r <= 0) throw new Unusual('truncated');
      done += r;
    }
    this.pos += n;
    return out;
  }

  skip(n: number): void {
    if (n > this.end - this.pos) throw new Unusual('truncated');
    this.pos += n;
  }

  /** The next field's number, wire type and where its key and body lie; the cursor stops at the body. */
  field(): { num: number; wire: number; start: number; bodyStart: number; bodyLen: number } {
    const start = this.pos;
    const key = this.varint();
    const num = Math.floor(key / 8),
      wire = key & 7;
    const bodyStart = this.pos;
    let bodyLen: number;
    switch (wire) {
      case 0:
        this.varint();
        bodyLen = this.pos - bodyStart;
        this.pos = bodyStart;
        break;
      case 1:
        bodyLen = 8;
        break;
      case 5:
        bodyLen = 4;
        break;
      case LEN: {
        const n = this.varint();
        bodyLen = n;
        return { num, wire, start, bodyStart: this.pos, bodyLen };
      }
      default:
        throw new Unusual(`wire type ${wire}`);
    }
    return { num, wire, start, bodyStart, bodyLen };
  }
}

/** The fields of one message left for the schema to decode: file spans, merged when adjacent and
 * read at the end in one go each (a graph's nodes are one span, however many). */
class Rest {
  private spans: [number, number][] = [];
  constructor(private c: FileCursor) {}

  add(f: { start: number; bodyStart: number; bodyLen: number }): void {
    const end = f.bodyStart + f.bodyLen;
    const last = this.spans[this.spans.length - 1];
    if (last && last[1] === f.start) last[1] = end;
    else this.spans.push([f.start, end]);
    this.c.pos = end;
  }

  bytes(): Uint8Array {
    const parts = this.spans.map(([a, b]) => {
      this.c.pos = a;
      return this.c.take(b - a);
    });
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}

export function scanModelFile(file: string, size: number): ScannedModel | null {
  const fd = fs.openSync(file, 'r');
  try {
    return scan(new FileCursor(new FileWindow(fd), 0, size));
  } catch (e) {
    if (e instanceof Unusual) return null;
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

function scan(c: FileCursor): ScannedModel {
  const lazy = new WeakMap<object, FileRange>();
  const rest = new Rest(c);
  let graph: PB | undefined;
  while (!c.done) {
    const f = c.field();
    if (f.num === MODEL_GRAPH) {
      if (f.wire !== LEN || graph) throw new Unusual('graph field');
      graph = scanGraph(c.sub(f), lazy);
      c.pos = f.bodyStart + f.bodyLen;
    } else {
      rest.add(f);
    }
  }
  c.finish();
  const pb = decode(ModelProto, rest.bytes());
  if (graph) pb.graph = graph;
  return { pb, lazy };
}

function scanGraph(c: FileCursor, lazy: WeakMap<object, FileRange>): PB {
  const rest = new Rest(c);
  const inits: PB[] = [];
  while (!c.done) {
    const f = c.field();
    if (f.num === GRAPH_INITIALIZER) {
      if (f.wire !== LEN) throw new Unusual('initializer field');
      inits.push(scanTensor(c.sub(f), lazy));
      c.pos = f.bodyStart + f.bodyLen;
    } else {
      rest.add(f);
    }
  }
  c.finish();
  const g = decode(GraphProto, rest.bytes());
  if (inits.length) g.initializer = inits;
  return g;
}

function scanTensor(c: FileCursor, lazy: WeakMap<object, FileRange>): PB {
  const rest = new Rest(c);
  let raw: FileRange | undefined;
  while (!c.done) {
    const f = c.field();
    if (f.num === TENSOR_RAW_DATA && f.bodyLen >= LAZY_RAW_MIN) {
      if (f.wire !== LEN || raw) throw new Unusual('raw_data field');
      raw = { offset: f.bodyStart, length: f.bodyLen };
      c.pos = f.bodyStart + f.bodyLen;
    } else {
      if (f.num === TENSOR_RAW_DATA && raw) throw new Unusual('raw_data field');
      rest.add(f);
    }
  }
  c.finish();
  const t = decode(TensorProto, rest.bytes());
  if (raw) {
    if (Object.prototype.hasOwnProperty.call(t, 'raw_data')) throw new Unusual('raw_data field');
    lazy.set(t, raw);
  }
  return t;
}

function decode(type: typeof ModelProto, bytes: Uint8Array): PB {
  try {
    return type.decode(bytes) as PB;
  } catch {
    throw new Unusual('decode');
  }
}
