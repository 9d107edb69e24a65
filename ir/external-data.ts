// External data: safe resolution of `location` inside the model's folder and ranged reads.
// Never reads a whole file: multi-GB weight files are the normal case (readFileSync fails > 2 GiB).
import fs from 'node:fs';
import path from 'node:path';
import { InputError } from './errors.js';

export interface ExternalRef {
  /** Absolute, checked path of the data file. */
  file: string;
  /** location string exactly as written in the model. */
  location: string;
  offset: number;
  length: number;
  /** Other keys (checksum, ...) kept for a faithful re-save. */
  extra: { key: string; value: string }[];
  /** raw_data inside the model file itself, read lazily; saved inline, not as external data. */
  embedded?: boolean;
}

/** Resolve and check an external_data entry list against the model's folder. */
export function resolveExternal(
  entries: { key?: string; value?: string }[],
  modelDir: string,
  modelFile: string,
  tensorName: string,
  byteLen: number | undefined,
): ExternalRef {
  let location: string | undefined;
  let offset = 0;
  let length: number | undefined;
  const extra: { key: string; value: string }[] = [];
  for (const e of entries) {
    const k = e.key ?? '',
      v = e.value ?? '';
    if (k === 'location') location = v;
    else if (k === 'offset') offset = parseIntStrict(v, modelFile, tensorName, 'offset');
    else if (k === 'length') length = parseIntStrict(v, modelFile, tensorName, 'length');
    else extra.push({ key: k, value: v });
  }
  if (!location) throw new InputError(`tensor '${tensorName}' has external data without a location`, modelFile);
  const file = checkLocation(location, modelDir, modelFile, tensorName);
  let size: number;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    throw new InputError(`external data '${location}' of tensor '${tensorName}' is missing`, modelFile);
  }
  if (length === undefined) length = byteLen ?? size - offset;
  if (offset < 0 || length < 0 || offset + length > size)
    throw new InputError(
      `external data of tensor '${tensorName}' lies past the end of '${location}' (offset ${offset} + length ${length} > ${size} bytes)`,
      modelFile,
    );
  // Longer than the shape needs is refused too: the tail would be silently dropped on save.
  if (byteLen !== undefined && length !== byteLen)
    throw new InputError(
      `external data of tensor '${tensorName}' has ${length} bytes, its shape needs ${byteLen}: fix the 'length' entry`,
      modelFile,
    );
  return { file, location, offset, length, extra };
}

function parseIntStrict(v: string, modelFile: string, tensorName: string, what: string): number {
  if (!/^\d+$/.test(v))
    throw new InputError(`external data ${what} '${v}' of tensor '${tensorName}' is not a non-negative integer`, modelFile);
  return Number(v);
}

/** A location must be relative and stay inside the model's folder, symlinks included. */
export function checkLocation(location: string, modelDir: string, modelFile: string, tensorName: string): string {
  const bad = (why: string) => new InputError(`external data location '${location}' of tensor '${tensorName}' ${why}`, modelFile);
  if (location.includes('\0')) throw bad('contains a NUL byte');
  if (path.isAbsolute(location) || /^[a-zA-Z]:[\\/]/.test(location) || location.startsWith('\\'))
    throw bad('is absolute; it must be relative to the model folder');
  const parts = location.split(/[\\/]+/);
  if (parts.includes('..')) throw bad('escapes the model folder');
  const root = fs.realpathSync(modelDir);
  const joined = path.resolve(root, location);
  let real: string;
  try {
    real = fs.realpathSync(joined);
  } catch {
    throw new InputError(`external data '${location}' of tensor '${tensorName}' is missing`, modelFile);
  }
  if (real !== root && !real.startsWith(root + path.sep)) throw bad('resolves outside the model folder');
  return real;
}

/** Read `length` bytes at `offset` into a new buffer (chunked: single reads cap at 2 GiB). */
export function readRange(file: string, offset: number, length: number): Uint8Array {
  const out = Buffer.allocUnsafe(length);
  const fd = fs.openSync(file, 'r');
  try {
    readInto(fd, out, offset);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export function readInto(fd: number, out: Uint8Array, position: number): void {
  let done = 0;
  while (done < out.length) {
    const n = fs.readSync(fd, out, done, Math.min(out.length - done, 1 << 30), position + done);
    if (n <= 0) throw new Error('unexpected end of file');
    done += n;
  }
}

/** Stream a file range in chunks through a reused buffer. The chunk is only valid inside fn. */
export function forEachChunk(
  file: string,
  offset: number,
  length: number,
  chunkSize: number,
  fn: (chunk: Uint8Array, at: number) => void,
  scratch?: Uint8Array,
): void {
  const buf =
    scratch && scratch.length >= Math.min(chunkSize, length) ? scratch : Buffer.allocUnsafe(Math.min(chunkSize, Math.max(length, 1)));
  const fd = fs.openSync(file, 'r');
  try {
    for (let at = 0; at < length; at += chunkSize) {
      const n = Math.min(chunkSize, length - at);
      const view = buf.subarray(0, n);
      readInto(fd, view, offset + at);
      fn(view, at);
    }
  } finally {
    fs.closeSync(fd);
  }
}
