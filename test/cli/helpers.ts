// Shared by the CLI tests: run main() in-process with captured output, small models, folder snapshots.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DataType, GraphBuilder, Model, Tensor } from '../../ir/index.js';
import { main } from '../../cli/main.js';
import { randn, rng } from '../../runtime/ort.js';
import { CONFORMANCE } from '../conformance-root.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export { CONFORMANCE };

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI in this process, capturing what it prints. */
export async function cli(...args: string[]): Promise<CliResult> {
  let stdout = '',
    stderr = '';
  const ow = process.stdout.write,
    ew = process.stderr.write;
  process.stdout.write = ((s: string | Uint8Array) => {
    stdout += String(s);
    return true;
  }) as typeof ow;
  process.stderr.write = ((s: string | Uint8Array) => {
    stderr += String(s);
    return true;
  }) as typeof ew;
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

/** Run the built CLI binary (dist/) as a user would. */
export function spawnCli(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/main.js'), ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function tmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `edgec-cli-${tag}-`));
}

/** Every file under `dir` with a hash of its bytes (symlinks by target), to show nothing was written. */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isSymbolicLink()) out[p] = `-> ${fs.readlinkSync(p)}`;
      else if (e.isDirectory()) {
        out[p] = 'dir';
        walk(p);
      } else out[p] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** A two-layer MLP with a symbolic batch dim: features[batch, 16] -> MatMul -> Add -> Relu -> MatMul -> out[batch, 8].
 * `perturb` shifts every third weight of the first layer to make a wrong candidate; `fp16io` takes
 * and returns float16 around the same float32 body. */
export function mlpModel(perturb = 0, fp16io = false): Model {
  const rand = rng(7);
  const b = new GraphBuilder({ opset: 17 });
  const io = fp16io ? DataType.FLOAT16 : DataType.FLOAT;
  const input = b.input('features', io, ['batch', 16]);
  const x = fp16io ? b.op1('Cast', [input], { attrs: { to: DataType.FLOAT } }) : input;
  const w1 = randn(rand, 16 * 64, 0.3);
  for (let i = 0; perturb && i < w1.length; i += 3) w1[i]! += perturb;
  const h = b.op1('MatMul', [x, b.initializer(Tensor.fromFloat32('w1', [16, 64], w1))]);
  const hb = b.op1('Add', [h, b.initializer(Tensor.fromFloat32('b1', [64], randn(rand, 64, 0.1)))]);
  const r = b.op1('Relu', [hb]);
  const y = b.op1('MatMul', [r, b.initializer(Tensor.fromFloat32('w2', [64, 8], randn(rand, 64 * 8, 0.3)))]);
  b.output(fp16io ? b.op1('Cast', [y], { attrs: { to: DataType.FLOAT16 } }) : y, 'out', io, ['batch', 8]);
  const m = b.build();
  m.setMeta('note', 'trailing metadata');
  return m;
}

export function randomBytes(seed: number, n: number): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

/** Byte offsets where top-level protobuf fields of `bytes` start and end (wire format walk). */
export function topLevelFields(bytes: Uint8Array): { field: number; start: number; end: number }[] {
  const out: { field: number; start: number; end: number }[] = [];
  let p = 0;
  const varint = () => {
    let v = 0n,
      shift = 0n;
    for (;;) {
      const b = bytes[p++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (p < bytes.length) {
    const start = p;
    const tag = Number(varint());
    const wire = tag & 7;
    if (wire === 0) varint();
    else if (wire === 1) p += 8;
    else if (wire === 5) p += 4;
    else if (wire === 2) {
      const n = Number(varint());
      p += n;
    } else throw new Error(`wire type ${wire}`);
    out.push({ field: tag >>> 3, start, end: p });
  }
  return out;
}
