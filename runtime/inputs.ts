// Inputs for verification and calibration, shared by `verify`, `compile`, `quantize` and the
// library: ONNX test-data folders, images, token files, or realistic synthetic sets. Every result
// carries an InputsUsed record (source, shapes, count) so figures say what they were measured on.
import fs from 'node:fs';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { DataType, InputError, Model, Tensor, Value, dtypeName, isFloat } from '../ir/index.js';
import { MAX_RANDOM_ELEMENTS, loadInputsDir, loadTestDataSet, randn, rng } from './ort.js';
import { loadTokenizer } from './tokenizer.js';

export type Feeds = Record<string, Tensor>;

/** Mean/std presets (RGB, on [0,1] pixels) as the models' own preprocessors define them. */
export const IMAGE_PRESETS: Record<string, { mean: number[]; std: number[] }> = {
  clip: { mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711] },
  siglip: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
  imagenet: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  paddleocr: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
};

export interface Preprocess {
  /** A preset name (clip, siglip, imagenet, paddleocr) or explicit mean/std. */
  preset?: string;
  mean?: number[];
  std?: number[];
  /** Resize target when the model's input leaves H/W symbolic. */
  size?: { width: number; height: number };
}

export interface InputsSpec {
  /** ONNX test-data folders: a test_data_set_N, a folder holding several, or `<input>.pb` files. */
  inputs?: string[];
  /** PNG/JPEG files or folders of them. */
  images?: string[];
  /** Token id sequences: one per line (whitespace or comma separated ids) or a JSON array of arrays. */
  tokens?: string;
  preprocess?: Preprocess;
  /** Symbolic dims the user bound (--dim/--fix), and the flag that bound them (for messages). */
  dims?: Record<string, number>;
  dimFlag?: string;
  /** Dims a static candidate fixes: they win over defaults (not over user dims). */
  fixedDims?: Record<string, number>;
  /** Image size the model is meant for (policy tile, --image-sizes). */
  image?: { width: number; height: number };
  seed?: number;
  /** Exclusive bound for token ids (smallest embedding table). */
  intHigh?: number;
  /** Synthetic sets: one per batch size (default [1, 2] when batch is symbolic). */
  batches?: number[];
  /** Inputs the caller computes from the others (position ids from the mask): files need not hold them. */
  optional?: readonly string[];
}

export interface InputsUsed {
  /** 'test-data' | 'images' | 'tokens' | 'synthetic' (several joined with '+'). */
  source: string;
  /** Where from: folders/files, or the seed for synthetic sets. */
  from: string[];
  count: number;
  /** Shapes of each fed input, per set (deduplicated: one entry per distinct shape signature). */
  shapes: Record<string, number[]>[];
  /** Symbolic dims and the values synthetic sets bound them to. */
  dims?: Record<string, number>;
  synthetic: boolean;
}

export interface InputSets {
  sets: Feeds[];
  used: InputsUsed;
}

/** One line that says what the figures were measured on. */
export function describeInputs(u: InputsUsed): string {
  const shapes = u.shapes
    .slice(0, 3)
    .map((s) =>
      Object.entries(s)
        .map(([k, v]) => `${k}[${v.join('x')}]`)
        .join(' '),
    )
    .join('; ');
  const more = u.shapes.length > 3 ? `; +${u.shapes.length - 3} more shapes` : '';
  return `${u.count} ${u.source} set${u.count === 1 ? '' : 's'} (${u.from.join(', ')}): ${shapes}${more}`;
}

// ---- symbolic dims ---------------------------------------------------------------------------

export type DimKind = 'batch' | 'sequence' | 'past' | 'total' | 'height' | 'width' | 'grid' | 'channels' | 'other';

const DEFAULT_SEQ = 64;
const DEFAULT_PAST = 64;
const DEFAULT_IMAGE = 224;

/** What a symbolic dim means, from its name, else from where it sits in the inputs. */
export function dimKinds(model: Model): Map<string, DimKind> {
  const kinds = new Map<string, DimKind>();
  const set = (d: string, k: DimKind) => {
    if (!kinds.has(d) || kinds.get(d) === 'other') kinds.set(d, k);
  };
  for (const v of feeds(model)) {
    const shape = v.type?.shape ?? [];
    shape.forEach((d, i) => {
      if (typeof d !== 'string') return;
      const n = d.toLowerCase();
      if (/batch/.test(n)) return set(d, 'batch');
      if (/past/.test(n)) return set(d, 'past');
      if (/total|kv_len|context|all_seq/.test(n)) return set(d, 'total');
      if (/grid|patches_[hw]|num_patches/.test(n)) return set(d, 'grid');
      if (/height|^h$|img_h/.test(n)) return set(d, 'height');
      if (/width|^w$|img_w/.test(n)) return set(d, 'width');
      if (/seq|token|length|len$/.test(n)) return set(d, 'sequence');
      const rank = shape.length;
      const float = v.type !== undefined && isFloat(v.type.elemType);
      // A rank-1 input's one axis is its length, not a batch.
      if (i === 0 && rank > 1) return set(d, 'batch');
      if (float && rank === 4 && isKv(v)) return set(d, i === 2 ? 'past' : 'other');
      if (float && rank === 4) return set(d, i === 1 ? 'channels' : i === 2 ? 'height' : 'width');
      if (rank >= 2 && i === 1) return set(d, 'sequence');
      set(d, 'other');
    });
  }
  return kinds;
}

const isKv = (v: Value) => /(^|[._/])(past|present)([._]|$)|key_values|kv_cache/i.test(v.name);
const feeds = (model: Model) => model.graph.inputs.filter((v) => !v.initializer);

/** Patch size and trained grid of a ViT: the patch-embedding Conv (stride = kernel) and a position
 * table of N or N+1 rows (N a square): found by name, else by shape, since exporters often rename it
 * (`onnx::Reshape_340`): [1, N(+1), C] or [1, C, g, g] with C the patch Conv's channels, or an
 * [N(+1), C] table that a Gather reads (a square [C, C] weight is not one). */
export function visionGeometry(model: Model): { patch?: number; grid?: number } {
  let patch: number | undefined, channels: number | undefined;
  for (const n of model.graph.nodes) {
    if (n.opType !== 'Conv') continue;
    const k = n.attrInts('kernel_shape', []);
    const s = n.attrInts('strides', []);
    if (k.length === 2 && k[0]! > 1 && k[0] === s[0] && k[1] === s[1]) {
      patch = k[0];
      channels = n.input(1)?.initializer?.dims[0];
      break;
    }
  }
  if (!patch) return {};
  const gridOf = (t: Tensor): number | undefined => {
    const d = t.dims;
    if (d.length === 4 && d[2] === d[3] && d[2]! > 1) return d[2];
    const rows = d.length === 3 ? d[1]! : d.length === 2 ? d[0]! : 0;
    for (const r of [rows, rows - 1]) {
      const g = Math.round(Math.sqrt(r));
      if (g > 1 && g * g === r) return g;
    }
    return undefined;
  };
  const byShape = (t: Tensor): boolean => {
    const d = t.dims;
    if (channels === undefined || !isFloat(t.dtype)) return false;
    if (d.length === 3) return d[0] === 1 && d[2] === channels;
    if (d.length === 4) return d[0] === 1 && d[1] === channels;
    const uses = model.graph.lookup(t.name)?.uses ?? [];
    return d.length === 2 && d[1] === channels && uses.some((u) => u.node.opType === 'Gather' && u.index === 0);
  };
  const tables = [...model.graph.initializers.filter((t) => /pos/i.test(t.name)), ...model.graph.initializers.filter(byShape)];
  for (const t of tables) {
    const g = gridOf(t);
    if (g) return { patch, grid: g };
  }
  return { patch };
}

/** Largest position a decoder can take: rows of a table position_ids indexes (rotary caches). */
function positionLimit(model: Model): number | undefined {
  let limit: number | undefined;
  for (const v of feeds(model)) {
    if (!/position/i.test(v.name)) continue;
    const frontier = [v];
    for (let depth = 0; depth < 4 && frontier.length; depth++) {
      const next: Value[] = [];
      for (const f of frontier)
        for (const u of f.uses) {
          const rows = u.node.input(0)?.initializer?.dims[0];
          if (u.node.opType === 'Gather' && u.index === 1 && typeof rows === 'number') limit = Math.min(limit ?? rows, rows);
          if (['Cast', 'Unsqueeze', 'Reshape', 'Squeeze'].includes(u.node.opType))
            next.push(...u.node.outputs.filter((o): o is Value => !!o));
        }
      frontier.splice(0, frontier.length, ...next);
    }
  }
  return limit;
}

/** Smallest sizes a meaningful check accepts: a 1x1 image or a one-token prompt tells nothing. */
function minimum(kind: DimKind, model: Model, hasPast: boolean): number {
  const { patch } = visionGeometry(model);
  if (kind === 'height' || kind === 'width') return Math.max(16, 2 * (patch ?? 1));
  if (kind === 'grid') return 2;
  if (kind === 'sequence') return hasPast ? 1 : 2;
  return 1;
}

/** Every symbolic dim bound to a size the model is meant for; dims bound by the user below a
 * sane minimum are refused with the dim and the flag named. */
export function defaultDims(
  model: Model,
  spec: Pick<InputsSpec, 'dims' | 'dimFlag' | 'fixedDims' | 'image'> = {},
  batch = 1,
): Record<string, number> {
  const kinds = dimKinds(model);
  const user = spec.dims ?? {};
  const flag = spec.dimFlag ?? '--dim';
  const hasPast = [...kinds.values()].includes('past');
  for (const [d, v] of Object.entries(user)) {
    const k = kinds.get(d);
    if (!k) continue;
    const min = minimum(k, model, hasPast && (user[[...kinds].find(([, x]) => x === 'past')?.[0] ?? ''] ?? DEFAULT_PAST) > 0);
    if (v < min)
      throw new InputError(
        `symbolic dim '${d}' (${k}) = ${v} is below the minimum ${min} for a meaningful check: pass ${flag} ${d}=N with N >= ${min}`,
      );
  }
  const { patch, grid } = visionGeometry(model);
  const side = grid && patch ? grid * patch : DEFAULT_IMAGE;
  const image = spec.image ?? { width: side, height: side };
  const limit = positionLimit(model);
  let seq = DEFAULT_SEQ,
    past = hasPast ? DEFAULT_PAST : 0;
  if (limit !== undefined && seq + past > limit) {
    past = hasPast ? Math.max(1, Math.floor(limit / 2)) : 0;
    seq = Math.max(1, Math.min(seq, limit - past));
  }
  const out: Record<string, number> = {};
  const value = (d: string, k: DimKind): number => {
    // A static candidate's own shape wins: it can take nothing else.
    if (spec.fixedDims?.[d] !== undefined) return spec.fixedDims[d]!;
    if (user[d] !== undefined) return user[d]!;
    switch (k) {
      case 'batch':
        return batch;
      case 'past':
        return past;
      case 'sequence':
        return seq;
      case 'height':
        return image.height;
      case 'width':
        return image.width;
      case 'grid':
        return Math.max(2, Math.floor(image.height / (patch ?? 14)));
      case 'channels':
        return 3;
      default:
        return seq;
    }
  };
  for (const [d, k] of kinds) if (k !== 'total') out[d] = value(d, k);
  // total = past + sequence, whatever the names of the two are.
  const pastName = [...kinds].find(([, k]) => k === 'past')?.[0];
  const seqName = [...kinds].find(([, k]) => k === 'sequence')?.[0];
  for (const [d, k] of kinds)
    if (k === 'total') out[d] = spec.fixedDims?.[d] ?? user[d] ?? (pastName ? out[pastName]! : 0) + (seqName ? out[seqName]! : seq);
  return out;
}

/** Seeded synthetic feeds: image-like floats, ids under intHigh, masks of ones, positions that
 * continue the KV cache. */
export function syntheticFeeds(model: Model, dims: Record<string, number>, seed: number, intHigh = 16): Feeds {
  const rand = rng(seed);
  const kinds = dimKinds(model);
  const pastName = [...kinds].find(([, k]) => k === 'past')?.[0];
  const past = pastName ? (dims[pastName] ?? 0) : 0;
  const out: Feeds = {};
  let total = 0;
  for (const v of feeds(model)) {
    const type = v.type;
    if (!type) throw new InputError(`input '${v.name}' has no type`, model.sourcePath);
    const shape = (type.shape ?? []).map((d) =>
      typeof d === 'number' && d >= 0 ? d : typeof d === 'string' && dims[d] !== undefined ? dims[d]! : DEFAULT_SEQ,
    );
    const n = shape.reduce((a, b) => a * b, 1);
    // A declared dim is a claim (a fuzzed [batch, 2^31] input once filled 8 GiB): check before allocating.
    total += n;
    if (!(Number.isSafeInteger(total) && total <= MAX_RANDOM_ELEMENTS)) {
      throw new InputError(
        `synthetic input '${v.name}' [${shape.join(', ')}] would make a set of ${total} elements, over the ${MAX_RANDOM_ELEMENTS} limit: ` +
          'fix its dims (--fix / --dim name=N) or pass --inputs',
        model.sourcePath,
      );
    }
    const lname = v.name.toLowerCase();
    if (isFloat(type.elemType)) {
      out[v.name] = Tensor.fromNumbers(v.name, type.elemType, shape, randn(rand, n));
    } else if (type.elemType === DataType.BOOL) {
      out[v.name] = Tensor.fromNumbers(v.name, type.elemType, shape, new Array(n).fill(1));
    } else if ([DataType.INT64, DataType.INT32, DataType.INT8, DataType.UINT8].includes(type.elemType)) {
      const last = shape[shape.length - 1] ?? 1;
      let vals: number[];
      if (lname.includes('mask')) vals = new Array(n).fill(1);
      else if (lname.includes('position')) vals = Array.from({ length: n }, (_, i) => (shape.length === 3 ? 0 : past) + (i % last));
      else vals = Array.from({ length: n }, () => Math.floor(rand() * intHigh));
      out[v.name] =
        type.elemType === DataType.INT64 ? Tensor.fromInt64(v.name, shape, vals) : Tensor.fromNumbers(v.name, type.elemType, shape, vals);
    } else {
      throw new InputError(`cannot make a synthetic ${dtypeName(type.elemType)} input for '${v.name}': pass --inputs`, model.sourcePath);
    }
  }
  return out;
}

// ---- user data -------------------------------------------------------------------------------

/** test_data_set_N folders of `dir` (sorted by N), `dir` itself when it holds .pb files, or the
 * sets of the test folders one level down. Other folders and files are not sets. */
export function testDataSets(dir: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new InputError('no such inputs folder', dir);
  }
  if (!st.isDirectory())
    throw new InputError('inputs must be a folder (an ONNX test_data_set_N, a test folder holding them, or <input name>.pb files)', dir);
  const entries = fs.readdirSync(dir);
  if (entries.some((f) => f.endsWith('.pb'))) return [dir];
  const num = (s: string) => Number(/(\d+)$/.exec(s)![1]);
  const sets = entries
    .filter((f) => /^test_data_set_\d+$/.test(f) && fs.statSync(path.join(dir, f)).isDirectory())
    .sort((a, b) => num(a) - num(b));
  if (sets.length) return sets.map((s) => path.join(dir, s));
  const nested = entries
    .filter((f) => fs.statSync(path.join(dir, f)).isDirectory())
    .sort()
    .flatMap((f) =>
      fs
        .readdirSync(path.join(dir, f))
        .filter((s) => /^test_data_set_\d+$/.test(s))
        .sort((a, b) => num(a) - num(b))
        .map((s) => path.join(dir, f, s)),
    );
  if (nested.length) return nested;
  throw new InputError('holds no test_data_set_N folder and no .pb tensors', dir);
}

/** A tensor from a file must fit the input it feeds: same dtype and rank, fixed dims equal. */
function checkFeed(t: Tensor, v: Value, dir: string): void {
  const shape = v.type?.shape;
  const fits =
    t.dtype === v.dtype && (!shape || (shape.length === t.dims.length && shape.every((d, i) => typeof d !== 'number' || d === t.dims[i])));
  if (!fits)
    throw new InputError(
      `tensor for input '${v.name}' is ${dtypeName(t.dtype)}[${t.dims}], the model takes ${v.dtype === undefined ? '?' : dtypeName(v.dtype)}[${(shape ?? []).map((d) => d ?? '?')}]`,
      dir,
    );
}

function readSet(dir: string, model: Model, optional: readonly string[] = []): Feeds {
  let loaded: Feeds;
  try {
    loaded = fs.readdirSync(dir).some((f) => /^input_\d+\.pb$/.test(f)) ? loadTestDataSet(dir, model).inputs : loadInputsDir(dir, model);
  } catch (e) {
    throw new InputError(`cannot read inputs: ${String((e as Error).message).split('\n')[0]}`, dir);
  }
  const out: Feeds = {};
  for (const v of feeds(model)) {
    const t = loaded[v.name];
    if (!t && optional.includes(v.name)) continue;
    if (!t) throw new InputError(`has no tensor for input '${v.name}'`, dir);
    checkFeed(t, v, dir);
    out[v.name] = t;
  }
  return out;
}

/** Expected outputs of test-data sets (output_K.pb), when every set has them. */
export function expectedOutputs(dirs: string[], model: Model): Feeds[] | undefined {
  const out: Feeds[] = [];
  for (const d of dirs) {
    if (!fs.readdirSync(d).some((f) => /^output_\d+\.pb$/.test(f))) return undefined;
    out.push(loadTestDataSet(d, model).outputs);
  }
  return out;
}

const IMAGE_EXT = /\.(png|jpe?g)$/i;

export function imageFiles(items: string[]): string[] {
  const out: string[] = [];
  for (const it of items) {
    let st: fs.Stats;
    try {
      st = fs.statSync(it);
    } catch {
      throw new InputError('no such image file or folder', it);
    }
    if (st.isDirectory())
      out.push(
        ...fs
          .readdirSync(it)
          .filter((f) => IMAGE_EXT.test(f))
          .sort()
          .map((f) => path.join(it, f)),
      );
    else if (IMAGE_EXT.test(it)) out.push(it);
    else throw new InputError('not a PNG or JPEG file', it);
  }
  if (!out.length) throw new InputError('holds no .png/.jpg/.jpeg images', items.join(', '));
  return out;
}

/** Decode a PNG/JPEG into RGBA bytes. */
export function decodeImage(file: string): { width: number; height: number; data: Uint8Array } {
  const buf = fs.readFileSync(file);
  try {
    if (buf[0] === 0x89 && buf[1] === 0x50) {
      const png = PNG.sync.read(buf);
      return { width: png.width, height: png.height, data: png.data };
    }
    if (buf[0] === 0xff && buf[1] === 0xd8) {
      const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
      return { width: img.width, height: img.height, data: img.data };
    }
  } catch (e) {
    throw new InputError(`cannot decode image: ${(e as Error).message}`, file);
  }
  throw new InputError('is neither PNG nor JPEG (by its first bytes)', file);
}

/** RGBA -> [3, H, W] float, bilinear resize (half-pixel centres), (x/255 - mean) / std. */
export function imageToChw(
  img: { width: number; height: number; data: Uint8Array },
  width: number,
  height: number,
  mean: number[],
  std: number[],
): Float32Array {
  const out = new Float32Array(3 * width * height);
  const sx = img.width / width,
    sy = img.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1);
    const y0 = Math.floor(fy),
      y1 = Math.min(y0 + 1, img.height - 1),
      wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1);
      const x0 = Math.floor(fx),
        x1 = Math.min(x0 + 1, img.width - 1),
        wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + c]!;
        const v = (p(y0, x0) * (1 - wx) + p(y0, x1) * wx) * (1 - wy) + (p(y1, x0) * (1 - wx) + p(y1, x1) * wx) * wy;
        out[c * width * height + y * width + x] = (v / 255 - mean[c]!) / std[c]!;
      }
    }
  }
  return out;
}

/** Preprocessing the exporter wrote beside the model (meta.json `preprocessing`: mean, std, image_size). */
export function preprocessFromMeta(modelPath: string | undefined): Preprocess | undefined {
  if (!modelPath) return undefined;
  const f = path.join(path.dirname(modelPath), 'meta.json');
  try {
    const p = (JSON.parse(fs.readFileSync(f, 'utf8')) as { preprocessing?: { mean?: number[]; std?: number[]; image_size?: unknown } })
      .preprocessing;
    if (!p || !Array.isArray(p.mean) || !Array.isArray(p.std) || p.mean.length !== 3 || p.std.length !== 3) return undefined;
    const size =
      Array.isArray(p.image_size) && p.image_size.length === 2
        ? { height: Number(p.image_size[0]), width: Number(p.image_size[1]) }
        : undefined;
    return { mean: p.mean.map(Number), std: p.std.map(Number), ...(size ? { size } : {}) };
  } catch {
    return undefined;
  }
}

export function meanStd(p: Preprocess | undefined): { mean: number[]; std: number[]; name: string } {
  if (p?.mean && p?.std)
    return {
      mean: p.mean,
      std: p.std,
      name: `mean [${p.mean.map((x) => +x.toFixed(4))}] std [${p.std.map((x) => +x.toFixed(4))}] (meta.json)`,
    };
  const name = (p?.preset ?? 'imagenet').toLowerCase();
  const preset = IMAGE_PRESETS[name];
  if (!preset) throw new InputError(`unknown image preset '${p?.preset}' (known: ${Object.keys(IMAGE_PRESETS).join(', ')})`);
  return { ...preset, name };
}

/** The model's image input: the 4-D float input with 3 channels (or a symbolic channel dim). */
export function imageInput(model: Model): Value | undefined {
  return feeds(model).find(
    (v) =>
      v.type &&
      isFloat(v.type.elemType) &&
      v.type.shape?.length === 4 &&
      !isKv(v) &&
      (v.type.shape[1] === 3 || typeof v.type.shape[1] === 'string'),
  );
}

/** Token sequences of a --tokens file: ids (one sequence per line, or a JSON array of arrays), or
 * text, one sequence per line, encoded with the first `tokenizer.json` found in `tokenizerDirs` (the
 * model's folder) or beside the file, with the special tokens its post-processor adds (BOS). */
export function tokenSequences(file: string, tokenizerDirs: string[] = []): number[][] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new InputError('cannot read token file', file);
  }
  const trimmed = text.trim();
  const lines = trimmed.split('\n').filter((l) => l.trim());
  if (!trimmed.startsWith('[') && lines.some((l) => !/^[\d\s,]+$/.test(l))) return textSequences(file, lines, tokenizerDirs);
  let seqs: unknown;
  if (trimmed.startsWith('[')) {
    try {
      seqs = JSON.parse(trimmed);
    } catch (e) {
      throw new InputError(`not valid JSON: ${(e as Error).message}`, file);
    }
    if (Array.isArray(seqs) && seqs.every((x) => typeof x === 'number')) seqs = [seqs];
  } else {
    seqs = lines.map((l) =>
      l
        .trim()
        .split(/[\s,]+/)
        .map(Number),
    );
  }
  if (
    !Array.isArray(seqs) ||
    !seqs.length ||
    !seqs.every((s) => Array.isArray(s) && s.length && s.every((x) => Number.isInteger(x) && x >= 0))
  ) {
    throw new InputError('token file must hold non-negative integer ids: one sequence per line, or a JSON array of arrays', file);
  }
  return seqs as number[][];
}

function textSequences(file: string, lines: string[], tokenizerDirs: string[]): number[][] {
  const dirs = [...new Set([...tokenizerDirs, path.dirname(file)])];
  const dir = dirs.find((d) => fs.existsSync(path.join(d, 'tokenizer.json')));
  if (!dir)
    throw new InputError(
      `holds text, but no tokenizer.json sits beside the model or the file (looked in ${dirs.join(', ')}); ` +
        "copy the model's tokenizer.json there, or give token ids, one sequence per line",
      file,
    );
  const tok = loadTokenizer(dir)!;
  return lines.map((l) => tok.encode(l.trim()));
}

/** Feeds of a token sequence: ids [1, L], a mask of ones, positions after the (empty or synthetic) past. */
function tokenFeeds(model: Model, ids: number[], base: Feeds, dims: Record<string, number>): Feeds {
  const kinds = dimKinds(model);
  const pastName = [...kinds].find(([, k]) => k === 'past')?.[0];
  const past = pastName ? (dims[pastName] ?? 0) : 0;
  const out: Feeds = { ...base };
  for (const v of feeds(model)) {
    const n = v.name.toLowerCase();
    const L = ids.length;
    const make = (vals: number[], shape: number[]) =>
      v.type?.elemType === DataType.INT32 ? Tensor.fromNumbers(v.name, DataType.INT32, shape, vals) : Tensor.fromInt64(v.name, shape, vals);
    if (/input_ids|^ids$|tokens/.test(n)) out[v.name] = make(ids, [1, L]);
    else if (n.includes('mask')) out[v.name] = make(new Array(past + L).fill(1), [1, past + L]);
    else if (n.includes('position'))
      out[v.name] = make(
        Array.from({ length: L }, (_, i) => past + i),
        [1, L],
      );
  }
  return out;
}

/** Input sets for a model from the spec: user data when given, realistic synthetic sets otherwise.
 * `forCalibration`: several synthetic sets (different seeds), one per batch size otherwise. */
export function loadInputs(model: Model, spec: InputsSpec = {}, opts: { synthCount?: number } = {}): InputSets {
  const seed = spec.seed ?? 1234;
  const sets: Feeds[] = [];
  const sources: string[] = [],
    from: string[] = [];
  if (spec.inputs?.length) {
    for (const dir of spec.inputs) {
      const dirs = testDataSets(dir);
      for (const d of dirs) sets.push(readSet(d, model, spec.optional));
      from.push(dirs.length === 1 ? dirs[0]! : `${dir} (${dirs.length} test_data_set folders)`);
    }
    sources.push('test-data');
  }
  if (spec.images?.length) {
    const v = imageInput(model);
    if (!v) throw new InputError('--images given, but the model has no 4-D float image input [N, 3, H, W]', model.sourcePath);
    const files = imageFiles(spec.images);
    const pre = spec.preprocess ?? preprocessFromMeta(model.sourcePath);
    const { mean, std, name } = meanStd(pre);
    const shape = v.type!.shape!;
    const base = defaultDims(model, spec, 1);
    const H = typeof shape[2] === 'number' ? shape[2] : (spec.dims?.[shape[2] as string] ?? pre?.size?.height ?? base[shape[2] as string]!);
    const W = typeof shape[3] === 'number' ? shape[3] : (spec.dims?.[shape[3] as string] ?? pre?.size?.width ?? base[shape[3] as string]!);
    const B = typeof shape[0] === 'number' ? shape[0] : 1;
    for (let i = 0; i < files.length; i += B) {
      const group = files.slice(i, i + B);
      while (group.length < B) group.push(group[group.length - 1]!);
      const data = new Float32Array(B * 3 * H * W);
      group.forEach((f, j) => data.set(imageToChw(decodeImage(f), W, H, mean, std), j * 3 * H * W));
      const others = syntheticFeeds(model, { ...base, ...(typeof shape[0] === 'string' ? { [shape[0]]: B } : {}) }, seed + i, spec.intHigh);
      sets.push({ ...others, [v.name]: Tensor.fromNumbers(v.name, v.type!.elemType, [B, 3, H, W], data) });
    }
    sources.push('images');
    from.push(`${files.length} image${files.length === 1 ? '' : 's'} resized to ${W}x${H}, ${name} mean/std`);
  }
  if (spec.tokens) {
    const ids = feeds(model).find((v) => /input_ids|^ids$|tokens/i.test(v.name));
    if (!ids)
      throw new InputError(
        `--tokens ${spec.tokens}: the model takes no token ids (inputs: ${feeds(model)
          .map((v) => v.name)
          .join(', ')}); pass --inputs with test data instead`,
        model.sourcePath,
      );
    const seqs = tokenSequences(spec.tokens, model.sourcePath ? [path.dirname(model.sourcePath)] : []);
    const dims = defaultDims(model, spec, 1);
    const kinds = dimKinds(model);
    const pastName = [...kinds].find(([, k]) => k === 'past')?.[0];
    // Teacher-forced from an empty cache when the past length is free.
    if (pastName && spec.fixedDims?.[pastName] === undefined && spec.dims?.[pastName] === undefined) dims[pastName] = 0;
    const seqName = [...kinds].find(([, k]) => k === 'sequence')?.[0];
    const fixedSeq = seqName ? spec.fixedDims?.[seqName] : undefined;
    const bound = spec.intHigh;
    for (const [i, s0] of seqs.entries()) {
      const s = fixedSeq ? s0.slice(0, fixedSeq) : s0;
      if (fixedSeq && s.length < fixedSeq)
        throw new InputError(`sequence ${i + 1} has ${s.length} tokens; the candidate takes ${fixedSeq}`, spec.tokens);
      if (bound !== undefined && s.some((t) => t >= bound))
        throw new InputError(`sequence ${i + 1} holds a token id >= the vocabulary size ${bound}`, spec.tokens);
      const d = { ...dims };
      if (seqName) d[seqName] = s.length;
      for (const [n, k] of kinds) if (k === 'total') d[n] = (pastName ? d[pastName]! : 0) + s.length;
      sets.push(tokenFeeds(model, s, syntheticFeeds(model, d, seed + i, spec.intHigh), d));
    }
    sources.push('tokens');
    from.push(`${spec.tokens} (${seqs.length} sequence${seqs.length === 1 ? '' : 's'})`);
  }
  if (sets.length) return { sets, used: { source: sources.join('+'), from, count: sets.length, shapes: shapesOf(sets), synthetic: false } };

  const hasBatch = [...dimKinds(model)].some(
    ([d, k]) => k === 'batch' && spec.dims?.[d] === undefined && spec.fixedDims?.[d] === undefined,
  );
  const batches = spec.batches ?? (hasBatch ? [1, 2] : [1]);
  const count = Math.max(opts.synthCount ?? batches.length, batches.length);
  let dims: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    dims = defaultDims(model, spec, batches[i % batches.length]!);
    sets.push(syntheticFeeds(model, dims, seed + i, spec.intHigh));
  }
  return {
    sets,
    used: {
      source: 'synthetic',
      from: [`seeded random, seed ${seed}`],
      count,
      shapes: shapesOf(sets),
      dims: defaultDims(model, spec, 1),
      synthetic: true,
    },
  };
}

/** The distinct input shapes among `sets`, for reports of which inputs were used. */
export function shapesOf(sets: Feeds[]): Record<string, number[]>[] {
  const seen = new Map<string, Record<string, number[]>>();
  for (const s of sets) {
    const sh = Object.fromEntries(Object.entries(s).map(([k, t]) => [k, [...t.dims]]));
    seen.set(JSON.stringify(sh), sh);
  }
  return [...seen.values()];
}
