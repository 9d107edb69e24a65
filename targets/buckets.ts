// Resolution buckets: one vision encoder compiled into fixed-shape variants (tile size x batch),
// all reading ONE weights file. The source is saved once with its weights in external data; each
// variant is loaded from that copy, made static by fix-shapes, and saved with reuseExternal, so its
// untouched initializers reference the shared file at the same offsets. Tensors a variant folds
// itself (the position table resized to its grid) go to the variant's own small data file.
// The manifest fragment maps a tiling plan's encoder batches (tile size, batch) to variant files,
// here and for compile(), whose artifacts carry the same map (preprocessingSpec).
import fs from 'node:fs';
import path from 'node:path';
import { CheckError, DataType, InputError, Model, loadModel, saveModel } from '../ir/index.js';
import { getPass } from '../passes/registry.js';
import { resolveOptions, type Pass } from '../passes/pass.js';
import '../passes/builtin.js';
import type { Role } from '../ir/summary.js';
import { compareOutputs, randomInputs, runModel } from '../runtime/ort.js';
import { parseTileSuffix, type Tiling } from './dims.js';
import { sha256File, type ManifestModel } from './manifest.js';
import type { TargetOptions } from './target.js';
import type { TilePlan } from './plan/types.js';

export interface Bucket {
  batch: number;
  height: number;
  width: number;
}

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

const nodeCount = (m: Model) => [...m.graph.allGraphs()].reduce((s, g) => s + g.nodes.length, 0);

function imageInput(m: Model, name?: string) {
  const ins = m.graph.inputs.filter((v) => !v.initializer);
  const v = name
    ? ins.find((x) => x.name === name)
    : ins.filter((x) => x.type?.elemType === DataType.FLOAT && x.type.shape?.length === 4).length === 1
      ? ins.find((x) => x.type?.elemType === DataType.FLOAT && x.type.shape?.length === 4)
      : undefined;
  if (!v)
    throw new InputError(
      name ? `no input '${name}'` : 'cannot tell the image input (give `input`): need exactly one float [N, C, H, W] input',
      m.sourcePath,
    );
  const c = v.type?.shape?.[1];
  if (typeof c !== 'number') throw new InputError(`input '${v.name}' has no fixed channel count`, m.sourcePath);
  return { name: v.name, channels: c };
}

export async function compileBuckets(source: string, outDir: string, buckets: Bucket[], opts: BucketOptions = {}): Promise<BucketManifest> {
  if (!buckets.length) throw new InputError('no buckets given');
  const keys = buckets.map((b) => `b${b.batch}_${b.height}x${b.width}`);
  if (new Set(keys).size !== keys.length) throw new InputError(`duplicate buckets: ${keys.join(', ')}`);
  for (const b of buckets)
    if (![b.batch, b.height, b.width].every((x) => Number.isInteger(x) && x > 0)) throw new InputError(`bad bucket ${JSON.stringify(b)}`);
  const fix = getPass('fix-shapes');
  if (!fix) throw new Error('fix-shapes pass is not registered');
  const name = opts.name ?? path.basename(source).replace(/\.onnx$/i, '');
  const weightsFile = opts.weightsFile ?? `${name}.weights.data`;
  const dest = path.resolve(outDir);
  if (dest === path.dirname(path.resolve(source)))
    throw new InputError('output folder is the source folder; refusing to write next to the input', outDir);
  // Written to a temp folder, then moved in: a failure leaves no half set of variants behind.
  const work = `${dest}.tmp-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  try {
    const result = await writeBuckets(source, work, buckets, keys, name, weightsFile, fix, opts);
    fs.mkdirSync(dest, { recursive: true });
    for (const f of fs.readdirSync(work)) fs.renameSync(path.join(work, f), path.join(dest, f));
    return result;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function writeBuckets(
  source: string,
  outDir: string,
  buckets: Bucket[],
  keys: string[],
  name: string,
  weightsFile: string,
  fix: Pass,
  opts: BucketOptions,
): Promise<BucketManifest> {
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
    const b = buckets[i]!,
      key = keys[i]!;
    const m = loadModel(dynFile);
    const before = nodeCount(m);
    await fix.run(
      m,
      resolveOptions(fix, { inputs: `${input.name}=${b.batch}x${input.channels}x${b.height}x${b.width}`, requireStatic: true }),
      {},
    );
    let sharedTensors = 0,
      sharedBytes = 0;
    for (const g of m.graph.allGraphs()) {
      for (const t of g.initializers)
        if (t.data.kind === 'external' && t.data.ref.file === wReal) {
          sharedTensors++;
          sharedBytes += t.byteLength;
        }
    }
    const file = `${name}.${key}.onnx`;
    const res = saveModel(m, path.join(outDir, file), {
      externalData: true,
      location: `${file}.data`,
      threshold: opts.threshold ?? 1024,
      reuseExternal: true,
    });
    const own = res.dataFiles[0];
    variants.push({
      key,
      ...b,
      file,
      sha256: sha256File(res.modelFile),
      bytes: res.modelBytes,
      ownData: own ? { file: path.basename(own.file), bytes: own.bytes, sha256: sha256File(own.file) } : null,
      sharedTensors,
      sharedBytes,
      nodes: { before, after: nodeCount(m) },
    });
  }

  // 3. Every variant against the dynamic model on the same inputs.
  if (opts.verify) {
    for (const v of variants) {
      const vFile = path.join(outDir, v.file);
      const feeds = randomInputs(loadModel(vFile), { seed: opts.seed ?? 7 });
      const shape = [v.batch, input.channels, v.height, v.width];
      if (feeds[input.name]!.dims.join() !== shape.join())
        throw new CheckError(`variant ${v.file} takes [${feeds[input.name]!.dims}], expected [${shape}]`);
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
    variants,
    lookup,
  };
}

export interface EncoderCall {
  /** Index of the plan batch these tiles come from. */
  batch: number;
  tiles: number[];
  /** Input shape of the variant that runs the call. */
  shape: [number, number, number, number];
  /** Slots padded because no smaller compiled batch fits the remaining tiles. */
  padded?: number;
}

/** Each plan batch split over the batch sizes compiled for its tile size: the largest size the
 * remaining tiles fill first, padding only when no smaller size exists (batch 4 plus batch 1 for
 * a remainder of 3 runs 4 + 1 + 1 + 1 with no padded slot). A tile size with no variant is a
 * failed check naming it. */
export function encoderCalls(plan: TilePlan, compiled: Bucket[]): EncoderCall[] {
  const missing = new Set<string>();
  const out: EncoderCall[] = [];
  plan.batches.forEach((b, i) => {
    const [, c, h, w] = b.shape;
    const sizes = [...new Set(compiled.filter((v) => v.height === h && v.width === w).map((v) => v.batch))].sort((x, y) => y - x);
    if (!sizes.length) {
      missing.add(`${w}x${h}`);
      return;
    }
    for (let rest = b.tiles; rest.length;) {
      const n = sizes.find((s) => s <= rest.length) ?? sizes[sizes.length - 1]!;
      const tiles = rest.slice(0, n);
      rest = rest.slice(n);
      out.push({ batch: i, tiles, shape: [n, c, h, w], ...(n > tiles.length ? { padded: n - tiles.length } : {}) });
    }
  });
  if (missing.size) {
    const have = [...new Set(compiled.map((v) => `${v.width}x${v.height}`))].join(', ');
    throw new CheckError(
      `the ${plan.policy} plan of ${plan.image.width}x${plan.image.height} needs tiles of ${[...missing].join(', ')} (WxH) with no compiled variant (have: ${have || 'none'})`,
      [...missing],
    );
  }
  return out;
}

/** For each encoder call of a plan, the bucket variant that runs it. */
export function assignVariants(m: BucketManifest, plan: TilePlan): { batch: number; tiles: number[]; file: string; padded?: number }[] {
  return encoderCalls(plan, m.variants).map(({ shape, ...c }) => ({ ...c, file: m.lookup[`${shape[2]}x${shape[3]}`]![String(shape[0])]! }));
}

/** manifest.preprocessing of a compiled artifact: under a tiling policy the plan-to-variant map
 * (tilingSpec); otherwise, for static vision encoders, the sizes they take and their files. */
export function preprocessingSpec(opts: TargetOptions, models: ManifestModel[]): Record<string, unknown> | undefined {
  const vision = models.filter((m) => m.role === 'vision-encoder');
  const tiling = opts.tiling;
  if (tiling && vision.length) return tilingSpec(tiling, models);
  const sized = vision.filter((v) => v.variant);
  // Static encoders take exactly these sizes; the runtime resizes images to them.
  if (sized.length)
    return { imageSizes: [...new Set(sized.map((v) => v.variant!))], files: Object.fromEntries(sized.map((v) => [v.variant!, v.file])) };
  return undefined;
}

/** The tiling plan as the runtime's preprocessing spec: the policy and its parameters, the variant
 * for each (tile size, batch), and the example plan with every encoder call assigned a variant. */
function tilingSpec(t: Tiling, models: ManifestModel[]): Record<string, unknown> {
  const p = t.example;
  const spec: Record<string, unknown> = { policy: p.policy, options: p.options };
  if (!t.sizes.length) {
    spec.rule = 'plan each image with the policy; the vision encoder takes any tile size and batch';
    spec.example = p;
    return { tiling: spec };
  }
  const table = (role: Role) => {
    const out: Record<string, Record<string, string>> = {};
    for (const e of models.filter((x) => x.role === role)) {
      const v = parseTileSuffix(e.variant ?? '');
      if (v) (out[`${v.width}x${v.height}`] ??= {})[String(v.batch)] = e.file;
    }
    return out;
  };
  const encoder = table('vision-encoder'),
    projector = table('projector');
  const shapes = models.filter((e) => e.role === 'vision-encoder').flatMap((e) => parseTileSuffix(e.variant ?? '') ?? []);
  const calls = encoderCalls(p, shapes).map((c) => {
    const key = `${c.shape[3]}x${c.shape[2]}`,
      b = String(c.shape[0]);
    return { ...c, encoder: encoder[key]![b]!, ...(projector[key]?.[b] ? { projector: projector[key]![b]! } : {}) };
  });
  Object.assign(spec, {
    batchSizes: t.batches,
    rule: 'plan each image with the policy; split each plan batch into encoder calls, largest compiled batch the remaining tiles fill first (pad only when none fits); run a call of b tiles of WxH with variants.visionEncoder["WxH"]["b"] (and variants.projector, same keys)',
    variants: { visionEncoder: encoder, ...(Object.keys(projector).length ? { projector } : {}) },
    example: { ...p, calls },
  });
  return { imageSizes: t.sizes.map((s) => `${s.width}x${s.height}`), tiling: spec };
}
