// Resolution buckets: one vision encoder compiled into fixed-shape variants (tile size x batch),
// all reading ONE weights file. The source is saved once with its weights in external data; each
// variant is loaded from that copy, made static by fix-shapes, and saved with reuseExternal, so its
// untouched initializers reference the shared file at the same offsets. Tensors a variant folds
// itself (the position table resized to its grid) go to the variant's own small data file.
// The manifest fragment maps a tiling plan's encoder batches (tile size, batch) to variant files.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CheckError, DataType, InputError, Model, loadModel, saveModel } from '../ir/index.js';
import { getPass } from '../passes/registry.js';
import { resolveOptions } from '../passes/pass.js';
import '../passes/builtin.js';
import { compareOutputs, randomInputs, runModel } from '../runtime/ort.js';
import type { TilePlan } from './plan/types.js';

export interface Bucket { batch: number; height: number; width: number }

export interface BucketOptions {
  /** Base name of the files (default: the source file name without .onnx). */
  name?: string;
  /** Image input (default: the only float rank-4 input). */
  input?: string;
  /** Shared weights file name inside the output folder. */
  weightsFile?: string;
  /** Smallest tensor (bytes) kept out of the model protobuf. */
  threshold?: number;
  /** Run every variant and the dynamic model in onnxruntime on the same seeded inputs. */
  verify?: boolean;
  seed?: number;
}

export interface BucketVariant {
  key: string;
  batch: number;
  height: number;
  width: number;
  file: string;
  sha256: string;
  bytes: number;
  /** Variant-only tensors (folded for this shape), if any went external. */
  ownData: { file: string; bytes: number; sha256: string } | null;
  sharedTensors: number;
  sharedBytes: number;
  nodes: { before: number; after: number };
  verification?: { cosine: number; maxAbsError: number };
}

export interface BucketManifest {
  input: string;
  weights: { file: string; bytes: number; sha256: string; tensors: number };
  dynamic: { file: string; sha256: string };
  variants: BucketVariant[];
  /** `HxW` -> batch -> variant file. */
  lookup: Record<string, Record<string, string>>;
}

function sha256File(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

const nodeCount = (m: Model) => [...m.graph.allGraphs()].reduce((s, g) => s + g.nodes.length, 0);

function imageInput(m: Model, name?: string) {
  const ins = m.graph.inputs.filter((v) => !v.initializer);
  const v = name ? ins.find((x) => x.name === name) : ins.filter((x) => x.type?.elemType === DataType.FLOAT && x.type.shape?.length === 4).length === 1
    ? ins.find((x) => x.type?.elemType === DataType.FLOAT && x.type.shape?.length === 4) : undefined;
  if (!v) throw new InputError(name ? `no input '${name}'` : 'cannot tell the image input (give `input`): need exactly one float [N, C, H, W] input', m.sourcePath);
  const c = v.type?.shape?.[1];
  if (typeof c !== 'number') throw new InputError(`input '${v.name}' has no fixed channel count`, m.sourcePath);
  return { name: v.name, channels: c };
}

export async function compileBuckets(source: string, outDir: string, buckets: Bucket[], opts: BucketOptions = {}): Promise<BucketManifest> {
  if (!buckets.length) throw new InputError('no buckets given');
  const keys = buckets.map((b) => `b${b.batch}_${b.height}x${b.width}`);
  if (new Set(keys).size !== keys.length) throw new InputError(`duplicate buckets: ${keys.join(', ')}`);
  for (const b of buckets) if (![b.batch, b.height, b.width].every((x) => Number.isInteger(x) && x > 0)) throw new InputError(`bad bucket ${JSON.stringify(b)}`);
  const fix = getPass('fix-shapes');
  if (!fix) throw new Error('fix-shapes pass is not registered');
  const name = opts.name ?? path.basename(source).replace(/\.onnx$/i, '');
  const weightsFile = opts.weightsFile ?? `${name}.weights.data`;
  fs.mkdirSync(outDir, { recursive: true });

  // 1. The dynamic model, weights written once.
  const src = loadModel(source);
  const input = imageInput(src, opts.input);
  const dynFile = path.join(outDir, `${name}.onnx`);
  const saved = saveModel(src, dynFile, { externalData: true, location: weightsFile, threshold: opts.threshold ?? 1024 });
  const wPath = path.join(outDir, weightsFile);
  const weightsBytes = saved.dataFiles.reduce((s, f) => s + f.bytes, 0);

  // 2. One static variant per bucket, referencing the shared file in place.
  const variants: BucketVariant[] = [];
  const wReal = fs.realpathSync(wPath);
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i]!, key = keys[i]!;
    const m = loadModel(dynFile);
    const before = nodeCount(m);
    await fix.run(m, resolveOptions(fix, { inputs: `${input.name}=${b.batch}x${input.channels}x${b.height}x${b.width}`, requireStatic: true }), {});
    let sharedTensors = 0, sharedBytes = 0;
    for (const g of m.graph.allGraphs()) {
      for (const t of g.initializers) if (t.data.kind === 'external' && t.data.ref.file === wReal) { sharedTensors++; sharedBytes += t.byteLength; }
    }
    const file = `${name}.${key}.onnx`;
    const res = saveModel(m, path.join(outDir, file), { externalData: true, location: `${file}.data`, threshold: opts.threshold ?? 1024, reuseExternal: true });
    const own = res.dataFiles[0];
    variants.push({
      key, ...b, file, sha256: sha256File(res.modelFile), bytes: res.modelBytes,
      ownData: own ? { file: path.basename(own.file), bytes: own.bytes, sha256: sha256File(own.file) } : null,
      sharedTensors, sharedBytes, nodes: { before, after: nodeCount(m) },
    });
  }

  // 3. Every variant against the dynamic model on the same inputs.
  if (opts.verify) {
    for (const v of variants) {
      const vFile = path.join(outDir, v.file);
      const feeds = randomInputs(loadModel(vFile), { seed: opts.seed ?? 7 });
      const shape = [v.batch, input.channels, v.height, v.width];
      if (feeds[input.name]!.dims.join() !== shape.join()) throw new CheckError(`variant ${v.file} takes [${feeds[input.name]!.dims}], expected [${shape}]`);
      const cmp = compareOutputs(await runModel(dynFile, feeds), await runModel(vFile, feeds));
      v.verification = { cosine: Math.min(...cmp.map((c) => c.cosine)), maxAbsError: Math.max(...cmp.map((c) => c.maxAbsError)) };
    }
  }

  const lookup: BucketManifest['lookup'] = {};
  for (const v of variants) (lookup[`${v.height}x${v.width}`] ??= {})[String(v.batch)] = v.file;
  return {
    input: input.name,
    weights: { file: weightsFile, bytes: weightsBytes, sha256: sha256File(wPath), tensors: saved.externalTensors },
    dynamic: { file: path.basename(dynFile), sha256: sha256File(dynFile) },
    variants, lookup,
  };
}

/** For each encoder batch of a plan, the variant that runs it; missing shapes are a failed check. */
export function assignVariants(m: BucketManifest, plan: TilePlan): { batch: number; tiles: number[]; file: string }[] {
  const missing: string[] = [];
  const out = plan.batches.map((b, i) => {
    const file = m.lookup[`${b.shape[2]}x${b.shape[3]}`]?.[String(b.shape[0])];
    if (!file) missing.push(`batch ${b.shape[0]} at ${b.shape[2]}x${b.shape[3]}`);
    return { batch: i, tiles: b.tiles, file: file ?? '' };
  });
  if (missing.length) throw new CheckError(`no bucket for ${[...new Set(missing)].join(', ')} (have: ${m.variants.map((v) => v.key).join(', ')})`, missing);
  return out;
}
