// IR -> ONNX protobuf. Deterministic bytes; external data streamed tensor by tensor into
// 4096-aligned offsets for tensors of 1 MiB and more (16 below); files written to temp names then renamed, never over an input.
import fs from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import { GraphProto, ModelProto, TensorProto, type PB } from './onnx-schema.js';
import { AttrType, Attribute, Graph, Int, Model, TensorType, Value } from './graph.js';
import { Tensor } from './tensor.js';
import { DataType } from './dtype.js';
import { InputError } from './errors.js';
import { commitReplace, crashPoint, recoverStale } from './atomic.js';
import { LAZY_RAW_MIN } from './scan.js';

export interface SaveOptions {
  /** true: tensors of at least `threshold` bytes go to external data; false: all inline;
   * 'auto' (default): external if the source had external data or inline would pass 2 GB. */
  externalData?: boolean | 'auto';
  /** Data file name relative to the model (default `<model file name>.data`). */
  location?: string;
  /** Minimum tensor size in bytes to move to external data (default 1024). */
  threshold?: number;
  /** Alignment of tensors of at least alignThreshold bytes in the data file (default 4096). */
  align?: number;
  /** Tensors this big or bigger are page-aligned (memory-mapped loads pay off); smaller ones are
   * packed at 16 bytes, so small models do not grow by padding (default 1 MiB, as onnx's saver). */
  alignThreshold?: number;
  /** Write the inferred types of intermediate values as value_info (default true). Artifacts leave them
   * out: runtimes infer shapes at load, and on small models they made the file bigger than its source. */
  valueInfo?: boolean;
  /** Split external data into files of at most this many bytes: location, location_1, ... */
  maxFileBytes?: number;
  /** Files that must not be overwritten (inputs); the model's own sources are always protected. */
  protect?: string[];
  /** Tensors whose external data already lies inside the output folder are referenced in place
   * (same file, offset, length) instead of copied: variants of one model share one weights file. */
  reuseExternal?: boolean;
  /** Tensor bytes above which the model goes to external data whatever `externalData` says
   * (default INLINE_LIMIT; lowered by tests to exercise the 2 GB rule without 2 GB). */
  inlineLimit?: number;
}

export interface SaveResult {
  modelFile: string;
  modelBytes: number;
  dataFiles: { file: string; bytes: number }[];
  externalTensors: number;
}

/** Inline protobuf above this goes external even when not asked (2 GB protobuf limit, with margin). */
export const INLINE_LIMIT = 1_900_000_000;

const Long = protobuf.util.Long as unknown as { fromString(s: string): unknown };
const i64 = (v: Int): unknown => (typeof v === 'bigint' ? Long.fromString(v.toString()) : v);

/** Sources of external data the model reads from (never overwrite these). */
export function externalSources(model: Model): Set<string> {
  const s = new Set<string>();
  for (const g of model.graph.allGraphs()) {
    for (const t of g.initializers) if (t.data.kind === 'external') s.add(t.data.ref.file);
  }
  return s;
}

export function saveModel(model: Model, file: string, opts: SaveOptions = {}): SaveResult {
  const out = path.resolve(file);
  const dir = path.dirname(out);
  const protect = new Set<string>([...externalSources(model), ...(opts.protect ?? []).map((p) => path.resolve(p))]);
  if (model.sourcePath) protect.add(model.sourcePath);
  const realOut = realish(out);
  if ([...protect].some((p) => realish(p) === realOut)) throw new InputError('refusing to overwrite an input file', file);

  const tensors = allTensors(model);
  const inlineBytes = tensors.reduce((s, t) => s + t.byteLength, 0);
  const hadExternal = tensors.some((t) => t.isExternal);
  let external = opts.externalData ?? 'auto';
  const overLimit = inlineBytes > (opts.inlineLimit ?? INLINE_LIMIT);
  if (external === 'auto') external = hadExternal || overLimit;
  if (!external && overLimit) external = true;
  const threshold = opts.threshold ?? 1024;
  const align = opts.align ?? 4096;
  const location = opts.location ?? `${path.basename(out)}.data`;
  const maxFile = opts.maxFileBytes ?? Infinity;
  if (external && path.resolve(dir, location) === out)
    throw new InputError(`external data location '${location}' is the model file itself`, file);

  const writer = external ? new DataWriter(dir, location, align, opts.alignThreshold ?? 1 << 20, maxFile, protect) : null;
  fs.mkdirSync(dir, { recursive: true });
  recoverStale(dir, out);
  const pid = `${process.pid}`;
  try {
    const enc: Enc = {
      writer,
      threshold,
      valueInfo: opts.valueInfo ?? true,
      reuseDir: opts.reuseExternal ? realish(dir) : undefined,
      deferred: new Map(),
    };
    const pb = modelToProto(model, enc);
    const parts = modelParts(pb, enc.deferred!);
    const modelBytes = parts.reduce((s, p) => s + (p instanceof Tensor ? p.byteLength : p.length), 0);
    if (modelBytes > 2 ** 31 - 1) throw new InputError('model protobuf exceeds 2 GiB even with external data', file);
    const tmp = `${out}.tmp-${pid}`;
    writeParts(tmp, parts);
    crashPoint('save:model-written');
    // Data files and the model are replaced as one: the model is the anchor, renamed in last.
    const dataFiles = writer ? writer.finish() : [];
    commitReplace([...(writer?.pending() ?? []), { tmp, final: out }], 'save');
    return { modelFile: out, modelBytes, dataFiles, externalTensors: writer?.count ?? 0 };
  } catch (e) {
    writer?.abort();
    try {
      fs.unlinkSync(`${out}.tmp-${pid}`);
    } catch {
      /* not written */
    }
    throw withPath(e, out);
  }
}

/** Write encoded pieces and streamed tensor bytes in order (partial writes on a full disk surface as ENOSPC). */
function writeParts(file: string, parts: (Uint8Array | Tensor)[]): void {
  const fd = fs.openSync(file, 'w');
  const put = (bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
  };
  try {
    for (const p of parts) {
      if (p instanceof Tensor) p.forEachChunk(scratchBuffer().length, put, scratchBuffer());
      else put(p);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The wire bytes of ModelProto.encode(pb), with the deferred tensors' raw_data left as the tensors
 * themselves so they stream from their source instead of being copied into one buffer. The split
 * keeps protobufjs's field-number order, so the bytes are identical to a whole-message encode. */
function modelParts(pb: PB, deferred: Map<PB, Tensor>): (Uint8Array | Tensor)[] {
  if (!deferred.size) return [ModelProto.encode(pb).finish()];
  const graph = [GraphProto.encode(split(GraphProto, pb.graph, 'initializer', -1)).finish()];
  for (const t of pb.graph.initializer ?? []) {
    const tensor = deferred.get(t);
    const msg = tensor
      ? [
          TensorProto.encode(split(TensorProto, t, 'raw_data', -1)).finish(),
          lenKey(9, tensor.byteLength),
          tensor,
          TensorProto.encode(split(TensorProto, t, 'raw_data', 1)).finish(),
        ]
      : [TensorProto.encode(t).finish()];
    graph.push(lenKey(5, partsLength(msg)), ...(msg as Uint8Array[]));
  }
  graph.push(GraphProto.encode(split(GraphProto, pb.graph, 'initializer', 1)).finish());
  return [
    ModelProto.encode(split(ModelProto, pb, 'graph', -1)).finish(),
    lenKey(7, partsLength(graph)),
    ...graph,
    ModelProto.encode(split(ModelProto, pb, 'graph', 1)).finish(),
  ];
}

/** The fields of `pb` numbered below (side -1) or above (side 1) field `at`. */
function split(type: typeof ModelProto, pb: PB, at: string, side: -1 | 1): PB {
  const pivot = type.fields[at]!.id;
  const out: PB = {};
  for (const [k, v] of Object.entries(pb)) {
    const id = type.fields[k]?.id;
    if (id !== undefined && Math.sign(id - pivot) === side) out[k] = v;
  }
  return out;
}

const partsLength = (parts: (Uint8Array | Tensor)[]) => parts.reduce((s, p) => s + (p instanceof Tensor ? p.byteLength : p.length), 0);

/** Key and length prefix of a length-delimited field. */
function lenKey(field: number, length: number): Uint8Array {
  return Uint8Array.from([...varint(field * 8 + 2), ...varint(length)]);
}

/** Base-128 varint of a non-negative safe integer (division, not shifts: lengths pass 2^31). */
function varint(v: number): number[] {
  const out: number[] = [];
  for (; v >= 128; v = Math.floor(v / 128)) out.push((v % 128) | 128);
  out.push(v);
  return out;
}

/** A write that the OS refused names the file it was writing. */
function withPath(e: unknown, file: string): unknown {
  const x = e as NodeJS.ErrnoException;
  if (x && typeof x === 'object' && typeof x.code === 'string' && typeof x.syscall === 'string' && !x.path) x.path = file;
  return e;
}

function realish(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** Encode to bytes in memory with every tensor inline (small models, tests). */
export function encodeModel(model: Model): Uint8Array {
  return ModelProto.encode(modelToProto(model, { writer: null, threshold: Infinity, valueInfo: true })).finish();
}

function allTensors(model: Model): Tensor[] {
  const out: Tensor[] = [];
  for (const g of model.graph.allGraphs()) out.push(...g.initializers);
  return out;
}

class DataWriter {
  count = 0;
  private files: { location: string; tmp: string; final: string; fd: number; size: number }[] = [];

  private protect: Set<string>;

  constructor(
    private dir: string,
    private location: string,
    private align: number,
    private alignThreshold: number,
    private maxFile: number,
    protect: Set<string>,
  ) {
    this.protect = new Set([...protect].map(realish));
    this.check(path.resolve(dir, location));
  }

  /** Every data file, split ones included, is checked before it is opened. */
  private check(final: string): void {
    if (this.protect.has(realish(final)))
      throw new InputError(`refusing to overwrite input external data '${path.basename(final)}'`, final);
  }

  private alignOf(len: number): number {
    return len >= this.alignThreshold ? this.align : 16;
  }

  private current(len: number) {
    let f = this.files[this.files.length - 1];
    const a = this.alignOf(len);
    const pad = f ? (a - (f.size % a)) % a : 0;
    if (!f || (f.size > 0 && f.size + pad + len > this.maxFile)) {
      const location = this.files.length === 0 ? this.location : `${this.location}_${this.files.length}`;
      const final = path.resolve(this.dir, location);
      this.check(final);
      const tmp = `${final}.tmp-${process.pid}`;
      f = { location, tmp, final, fd: fs.openSync(tmp, 'w'), size: 0 };
      this.files.push(f);
    }
    return f;
  }

  write(t: Tensor): { location: string; offset: number; length: number } {
    const len = t.byteLength;
    const f = this.current(len);
    const a = this.alignOf(len);
    const offset = Math.ceil(f.size / a) * a;
    const scratch = scratchBuffer();
    t.forEachChunk(
      scratch.length,
      (chunk, at) => {
        let done = 0;
        while (done < chunk.length) done += fs.writeSync(f.fd, chunk, done, chunk.length - done, offset + at + done);
      },
      scratch,
    );
    f.size = offset + len;
    this.count++;
    crashPoint('save:data-tensor');
    return { location: f.location, offset, length: len };
  }

  /** Close every data file (still under its temp name). */
  finish(): { file: string; bytes: number }[] {
    for (const f of this.files) {
      fs.ftruncateSync(f.fd, f.size);
      fs.closeSync(f.fd);
      f.fd = -1;
    }
    return this.files.map((f) => ({ file: f.final, bytes: f.size }));
  }

  pending(): { tmp: string; final: string }[] {
    return this.files.map((f) => ({ tmp: f.tmp, final: f.final }));
  }

  abort(): void {
    for (const f of this.files) {
      if (f.fd >= 0)
        try {
          fs.closeSync(f.fd);
        } catch {
          /* closed */
        }
      try {
        fs.unlinkSync(f.tmp);
      } catch {
        /* gone */
      }
    }
  }
}

// Tensors stream through 1 MiB: fresh process memory costs a page fault per 4 KiB page (about 20 us
// here), so a 16 MiB buffer cost more on its first use than the syscalls a smaller one adds.
let scratch: Uint8Array | null = null;
function scratchBuffer(): Uint8Array {
  return (scratch ??= Buffer.allocUnsafe(1 << 20));
}

interface Enc {
  writer: DataWriter | null;
  threshold: number;
  valueInfo: boolean;
  reuseDir?: string;
  /** Large inline raw_data of the main graph, streamed by modelParts instead of encoded. */
  deferred?: Map<PB, Tensor>;
}

function modelToProto(m: Model, enc: Enc): PB {
  const pb: PB = { ir_version: m.irVersion, opset_import: m.opsetImports.map((o) => ({ domain: o.domain, version: o.version })) };
  if (m.producerName) pb.producer_name = m.producerName;
  if (m.producerVersion) pb.producer_version = m.producerVersion;
  if (m.domain) pb.domain = m.domain;
  if (m.modelVersion) pb.model_version = m.modelVersion;
  if (m.docString !== undefined) pb.doc_string = m.docString;
  pb.graph = graphToProto(m.graph, enc, true);
  if (m.metadataProps.length) pb.metadata_props = m.metadataProps;
  if (m.trainingInfo.length) pb.training_info = m.trainingInfo;
  if (m.functions.length) pb.functions = m.functions;
  if (m.configuration.length) pb.configuration = m.configuration;
  return pb;
}

export function typeToProto(v: Value): PB | undefined {
  const raw = v.info.rawType as { proto: PB; snapshot: string } | undefined;
  if (raw && raw.snapshot === JSON.stringify(v.type ?? null)) return raw.proto;
  return v.type ? tensorTypeProto(v.type) : undefined;
}

function tensorTypeProto(t: TensorType): PB {
  const tt: PB = { elem_type: t.elemType };
  if (t.shape) tt.shape = { dim: t.shape.map((d) => (d === null ? {} : typeof d === 'number' ? { dim_value: d } : { dim_param: d })) };
  return { tensor_type: tt };
}

function valueInfo(v: Value): PB {
  const vi: PB = { name: v.name };
  const type = typeToProto(v);
  if (type) vi.type = type;
  if (v.info.docString !== undefined) vi.doc_string = v.info.docString;
  if (v.info.metadataProps?.length) vi.metadata_props = v.info.metadataProps;
  return vi;
}

function graphToProto(g: Graph, enc: Enc, main = false): PB {
  const pb: PB = { node: [], name: g.name };
  for (const n of g.nodes) {
    const pn: PB = {
      input: n.inputs.map((v) => v?.name ?? ''),
      output: n.outputs.map((v) => v?.name ?? ''),
    };
    // Trailing absent optional inputs/outputs carry no meaning.
    while (pn.input.length && pn.input[pn.input.length - 1] === '') pn.input.pop();
    while (pn.output.length && pn.output[pn.output.length - 1] === '') pn.output.pop();
    if (n.name) pn.name = n.name;
    pn.op_type = n.opType;
    if (n.domain) pn.domain = n.domain;
    if (n.overload !== undefined) pn.overload = n.overload;
    if (n.attributes.length) pn.attribute = n.attributes.map((a) => attrToProto(a, enc));
    if (n.docString !== undefined) pn.doc_string = n.docString;
    if (n.metadataProps?.length) pn.metadata_props = n.metadataProps;
    if (n.deviceConfigurations?.length) pn.device_configurations = n.deviceConfigurations;
    pb.node.push(pn);
  }
  const sub: Enc = { ...enc, deferred: undefined };
  pb.initializer = g.initializers.map((t) => tensorToProto(t, main ? enc : sub));
  if (g.sparseInitializers.length) pb.sparse_initializer = g.sparseInitializers;
  if (g.docString !== undefined) pb.doc_string = g.docString;
  pb.input = g.inputs.map(valueInfo);
  pb.output = g.outputs.map(valueInfo);
  const vis: PB[] = [];
  if (enc.valueInfo) for (const v of g.values.values()) if (v.hasValueInfo && !v.isGraphInput && !v.isGraphOutput) vis.push(valueInfo(v));
  if (vis.length) pb.value_info = vis;
  if (g.quantizationAnnotation.length) pb.quantization_annotation = g.quantizationAnnotation;
  if (g.metadataProps?.length) pb.metadata_props = g.metadataProps;
  return pb;
}

function attrToProto(a: Attribute, enc: Enc): PB {
  const pb: PB = { name: a.name };
  if (a.refAttrName !== undefined) pb.ref_attr_name = a.refAttrName;
  if (a.docString !== undefined) pb.doc_string = a.docString;
  if (a.type !== AttrType.UNDEFINED) pb.type = a.type;
  const inline: Enc = { writer: null, threshold: Infinity, valueInfo: enc.valueInfo, reuseDir: enc.reuseDir };
  switch (a.type) {
    case AttrType.FLOAT:
      pb.f = a.value;
      break;
    case AttrType.INT:
      pb.i = i64(a.value);
      break;
    case AttrType.STRING:
      pb.s = a.value;
      break;
    case AttrType.TENSOR:
      pb.t = tensorToProto(a.value, inline);
      break;
    case AttrType.GRAPH:
      pb.g = graphToProto(a.value, { ...enc, deferred: undefined });
      break;
    case AttrType.FLOATS:
      pb.floats = a.value;
      break;
    case AttrType.INTS:
      pb.ints = a.value.map(i64);
      break;
    case AttrType.STRINGS:
      pb.strings = a.value;
      break;
    case AttrType.TENSORS:
      pb.tensors = a.value.map((t) => tensorToProto(t, inline));
      break;
    case AttrType.GRAPHS:
      pb.graphs = a.value.map((g) => graphToProto(g, { ...enc, deferred: undefined }));
      break;
    case AttrType.SPARSE_TENSOR:
      pb.sparse_tensor = a.value;
      break;
    case AttrType.SPARSE_TENSORS:
      pb.sparse_tensors = a.value;
      break;
    case AttrType.TYPE_PROTO:
      pb.tp = a.value;
      break;
    case AttrType.TYPE_PROTOS:
      pb.type_protos = a.value;
      break;
  }
  return pb;
}

export function tensorToProto(t: Tensor, enc: Enc): PB {
  const pb: PB = { dims: t.dims, data_type: t.dtype };
  if (t.extras.segment) pb.segment = t.extras.segment;
  if (t.name) pb.name = t.name;
  if (t.extras.docString !== undefined) pb.doc_string = t.extras.docString;
  const d = t.data;
  if (enc.reuseDir && d.kind === 'external' && !d.ref.embedded && d.ref.file.startsWith(enc.reuseDir + path.sep)) {
    pb.external_data = [
      { key: 'location', value: path.relative(enc.reuseDir, d.ref.file).split(path.sep).join('/') },
      { key: 'offset', value: String(d.ref.offset) },
      { key: 'length', value: String(d.ref.length) },
      ...d.ref.extra,
    ];
    pb.data_location = 1;
  } else if (enc.writer && t.dtype !== DataType.STRING && t.byteLength >= enc.threshold) {
    const r = enc.writer.write(t);
    pb.external_data = [
      { key: 'location', value: r.location },
      { key: 'offset', value: String(r.offset) },
      { key: 'length', value: String(r.length) },
    ];
    pb.data_location = 1;
  } else if (d.kind === 'typed') {
    pb[d.field] = d.values;
  } else if (d.kind === 'strings') {
    pb.string_data = d.values;
  } else if (enc.deferred && t.byteLength >= LAZY_RAW_MIN) {
    enc.deferred.set(pb, t);
  } else {
    pb.raw_data = t.bytes();
  }
  if (t.extras.metadataProps?.length) pb.metadata_props = t.extras.metadataProps;
  return pb;
}

/** Encode a single tensor as a TensorProto (test data files). */
export function encodeTensor(t: Tensor): Uint8Array {
  return TensorProto.encode(tensorToProto(t, { writer: null, threshold: Infinity, valueInfo: true })).finish();
}
