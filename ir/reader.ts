// ONNX protobuf -> IR. Large raw_data stays a lazy range of the model file (scan.ts), external data a
// lazy range of its own file; small tensors are read.
import fs from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import { ModelProto, TensorProto, type PB } from './onnx-schema.js';
import { AttrType, Attribute, Dim, Graph, Int, Model, Node, TensorType, Value } from './graph.js';
import { Tensor, TypedField } from './tensor.js';
import { DataType, byteLength, dtypeBits, isKnownDtype, numElements } from './dtype.js';
import { resolveExternal } from './external-data.js';
import { scanModelFile, type FileRange } from './scan.js';
import { InputError } from './errors.js';

const MAX_PROTO = 2 ** 31 - 1;
/** Highest IR version whose fields our schema knows (ONNX 1.20). */
export const MAX_IR_VERSION = 13;

const has = (o: PB, k: string) => o != null && Object.prototype.hasOwnProperty.call(o, k);

export function longToInt(v: unknown): Int {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'string') {
    const b = BigInt(v);
    return Number.isSafeInteger(Number(b)) ? Number(b) : b;
  }
  const l = v as protobuf.Long;
  const big = BigInt.asIntN(64, (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0));
  const n = Number(big);
  return Number.isSafeInteger(n) ? n : big;
}

const toNum = (v: unknown): number => Number(longToInt(v));

interface Ctx {
  file: string;
  dir: string;
  /** raw_data the scan left in the model file (see scan.ts). */
  lazy?: WeakMap<object, FileRange>;
}

/** Load a model file. Throws InputError with a one-line message on anything malformed. */
export function loadModel(file: string): Model {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new InputError('no such file', file);
  }
  if (st.isDirectory()) throw new InputError('is a directory, expected an .onnx file', file);
  if (!st.isFile()) throw new InputError('is not a regular file', file);
  if (st.size === 0) throw new InputError('is empty', file);
  if (st.size > MAX_PROTO)
    throw new InputError(`is ${st.size} bytes; an ONNX protobuf cannot exceed 2 GiB (weights over that must live in external data)`, file);
  const scanned = scanModelFile(file, st.size);
  if (scanned) return modelFromProto(scanned.pb, { ...ctxOf(file), lazy: scanned.lazy });
  return decodeModel(fs.readFileSync(file), file);
}

const ctxOf = (file: string): Ctx => ({ file, dir: path.dirname(path.resolve(file)) });

/** Decode model bytes held in memory; tensors stay views of `bytes`. */
export function decodeModel(bytes: Uint8Array, file: string): Model {
  let pb: PB;
  try {
    pb = ModelProto.decode(bytes);
  } catch (e) {
    const msg = e instanceof RangeError && /call stack/i.test(e.message) ? 'messages nested too deeply' : (e as Error).message;
    throw new InputError(`not a valid ONNX model (protobuf decode failed: ${msg})`, file);
  }
  return modelFromProto(pb, ctxOf(file));
}

function modelFromProto(pb: PB, ctx: Ctx): Model {
  const file = ctx.file;
  if (!has(pb, 'ir_version')) throw new InputError('not a valid ONNX model (no ir_version)', file);
  const ir = toNum(pb.ir_version);
  if (ir < 1 || ir > MAX_IR_VERSION)
    throw new InputError(`not a valid ONNX model (ir_version ${ir} is outside 1..${MAX_IR_VERSION})`, file);
  if (!has(pb, 'graph')) throw new InputError('not a valid ONNX model (no graph)', file);
  if (ir >= 3 && !pb.opset_import?.length) throw new InputError('not a valid ONNX model (no opset_import)', file);

  let graph: Graph;
  try {
    graph = decodeGraph(pb.graph, null, ctx);
  } catch (e) {
    if (e instanceof InputError) throw e;
    // Structurally malformed content that passed the wire decode (null sub-messages, ...).
    throw new InputError(`not a valid ONNX model (${(e as Error).message})`, file);
  }
  // A cycle is bad input here, not a defect in the first pass that sorts the graph.
  for (const g of graph.allGraphs()) {
    const order = g.nodes;
    try {
      g.sortTopologically();
    } catch (e) {
      throw new InputError(`not a valid ONNX model (${(e as Error).message})`, file);
    } finally {
      g.nodes = order;
    }
  }
  const model = new Model(graph);
  model.irVersion = ir;
  model.opsetImports = (pb.opset_import ?? []).map((o: PB) => {
    const version = toNum(o.version ?? 0);
    if (!(Number.isSafeInteger(version) && version >= 1 && version < 2 ** 31))
      throw new InputError(`not a valid ONNX model (opset_import '${o.domain || 'ai.onnx'}' has version ${version})`, file);
    return { domain: o.domain ?? '', version };
  });
  model.producerName = pb.producer_name ?? '';
  model.producerVersion = pb.producer_version ?? '';
  model.domain = pb.domain ?? '';
  model.modelVersion = toNum(pb.model_version ?? 0);
  if (has(pb, 'doc_string')) model.docString = pb.doc_string;
  model.metadataProps = (pb.metadata_props ?? []).map(kv);
  model.functions = pb.functions ?? [];
  model.trainingInfo = pb.training_info ?? [];
  model.configuration = pb.configuration ?? [];
  model.sourcePath = path.resolve(file);
  return model;
}

const kv = (e: PB) => ({ key: e.key ?? '', value: e.value ?? '' });

export function decodeType(t: PB): { type?: TensorType; raw?: PB } {
  if (!t) return {};
  const plain = has(t, 'tensor_type') && !has(t, 'denotation');
  if (has(t, 'tensor_type')) {
    const tt = t.tensor_type;
    const type: TensorType = { elemType: tt.elem_type ?? 0 };
    let denot = false;
    if (has(tt, 'shape')) {
      type.shape = (tt.shape.dim ?? []).map((d: PB): Dim => {
        if (has(d, 'denotation')) denot = true;
        if (has(d, 'dim_value')) {
          // Some exporters write -1 for "unknown" (onnxruntime's EmbedLayerNormalization tests do):
          // invalid ONNX, and read as a size it breaks shape arithmetic, so it is unknown here.
          const n = toNum(d.dim_value);
          return n < 0 ? null : n;
        }
        if (has(d, 'dim_param')) return d.dim_param;
        return null;
      });
    }
    return plain && !denot ? { type } : { type, raw: t };
  }
  return { raw: t };
}

function applyValueInfo(v: Value, vi: PB): void {
  const { type, raw } = decodeType(vi.type);
  if (type || raw) {
    v.type = type;
    if (raw) v.info.rawType = { proto: raw, snapshot: JSON.stringify(type ?? null) };
  }
  if (has(vi, 'doc_string')) v.info.docString = vi.doc_string;
  if (vi.metadata_props?.length) v.info.metadataProps = vi.metadata_props.map(kv);
}

/** Deepest subgraph nesting we read: real control flow nests a few levels; the limit keeps every
 * recursive walk (ours, the writer's, onnxruntime's) far from the call-stack limit. */
export const MAX_SUBGRAPH_DEPTH = 64;

function decodeGraph(g: PB, parent: Graph | null, ctx: Ctx, depth = 0): Graph {
  if (depth > MAX_SUBGRAPH_DEPTH)
    throw new InputError(`not a valid ONNX model (subgraphs nested more than ${MAX_SUBGRAPH_DEPTH} deep)`, ctx.file);
  const graph = new Graph(g.name ?? '');
  graph.parent = parent;
  if (has(g, 'doc_string')) graph.docString = g.doc_string;
  if (g.metadata_props?.length) graph.metadataProps = g.metadata_props.map(kv);
  graph.sparseInitializers = g.sparse_initializer ?? [];
  graph.quantizationAnnotation = g.quantization_annotation ?? [];

  const define = (name: string, what: string): Value => {
    if (graph.values.has(name)) {
      // Pre-IR-4 models list initializers as inputs too; the same name is the same value.
      return graph.values.get(name)!;
    }
    if (!name) throw new InputError(`graph '${graph.name}' has a ${what} with an empty name`, ctx.file);
    const v = new Value(name, undefined, graph);
    graph.values.set(name, v);
    return v;
  };

  for (const vi of g.input ?? []) {
    const v = define(vi.name ?? '', 'input');
    if (graph.inputs.includes(v)) throw new InputError(`graph '${graph.name}' lists input '${v.name}' twice`, ctx.file);
    applyValueInfo(v, vi);
    graph.inputs.push(v);
  }
  for (const t of g.initializer ?? []) {
    const tensor = decodeTensor(t, ctx);
    const v = define(tensor.name, 'initializer');
    if (v.initializer) throw new InputError(`graph '${graph.name}' has two initializers named '${v.name}'`, ctx.file);
    v.initializer = tensor;
    if (!v.type) v.type = { elemType: tensor.dtype, shape: [...tensor.dims] };
    graph.initializerNames.push(v.name);
  }
  for (const sp of graph.sparseInitializers) {
    const name = sp.values?.name;
    if (name && !graph.values.has(name)) {
      const v = define(name, 'sparse initializer');
      v.type = { elemType: sp.values.data_type ?? 0, shape: (sp.dims ?? []).map(toNum) };
    }
  }

  const pbNodes: PB[] = g.node ?? [];
  const nodes: Node[] = [];
  // A node output named like an earlier node's output (onnxruntime's fusion tests have one): the
  // earlier value is renamed, and each use binds to the latest definition before it, as onnxruntime's
  // transformers optimizer reads such graphs (it keeps the last).
  const redefined = new Map<string, { at: number; v: Value }[]>();
  for (const pn of pbNodes) {
    const node = new Node(graph, pn.name ?? '', pn.op_type ?? '', pn.domain ?? '');
    if (!node.opType) throw new InputError(`graph '${graph.name}' has a node without op_type`, ctx.file);
    if (has(pn, 'doc_string')) node.docString = pn.doc_string;
    if (has(pn, 'overload')) node.overload = pn.overload;
    if (pn.metadata_props?.length) node.metadataProps = pn.metadata_props.map(kv);
    if (pn.device_configurations?.length) node.deviceConfigurations = pn.device_configurations;
    for (const o of pn.output ?? []) {
      if (o === '') {
        node.outputs.push(null);
        continue;
      }
      const prev = graph.values.get(o);
      if (prev && (prev.initializer || prev.isGraphInput))
        throw new InputError(`value '${o}' is defined twice in graph '${graph.name}'`, ctx.file);
      if (prev?.producer) {
        if (prev.isGraphOutput) throw new InputError(`graph output '${o}' is defined twice in graph '${graph.name}'`, ctx.file);
        const defs = redefined.get(o) ?? [{ at: nodes.indexOf(prev.producer), v: prev }];
        graph.values.delete(o);
        let k = 1;
        while (graph.values.has(`${o}__${k}`) || pbNodes.some((x) => (x.output ?? []).includes(`${o}__${k}`))) k++;
        prev.name = `${o}__${k}`;
        graph.values.set(prev.name, prev);
        redefined.set(o, defs);
      }
      const v = define(o, 'node output');
      v.producer = node;
      node.outputs.push(v);
      redefined.get(o)?.push({ at: nodes.length, v });
    }
    nodes.push(node);
  }
  graph.nodes = nodes;
  // Attributes (with subgraphs) after all values exist, so bodies can see every outer value.
  pbNodes.forEach((pn, i) => {
    const node = nodes[i]!;
    node.attributes = (pn.attribute ?? []).map((a: PB) => decodeAttr(a, graph, ctx, depth));
  });
  pbNodes.forEach((pn, i) => {
    const node = nodes[i]!;
    (pn.input ?? []).forEach((name: string, k: number) => {
      if (name === '') {
        node.setInput(k, null);
        return;
      }
      const defs = redefined.get(name);
      const v = defs ? ([...defs].reverse().find((d) => d.at < i) ?? defs.at(-1)!).v : graph.lookup(name);
      if (!v) throw new InputError(`node '${node.name || node.opType}' uses '${name}', which nothing defines`, ctx.file);
      node.setInput(k, v);
    });
  });
  for (const vi of g.value_info ?? []) {
    const v = graph.values.get(vi.name ?? '');
    if (!v) continue; // value_info for a value that does not exist carries no meaning
    applyValueInfo(v, vi);
    v.hasValueInfo = true;
  }
  for (const vi of g.output ?? []) {
    const v = graph.lookup(vi.name ?? '');
    if (!v) throw new InputError(`graph output '${vi.name}' is not produced by anything`, ctx.file);
    if (v.graph === graph) applyValueInfo(v, vi);
    graph.outputs.push(v);
  }
  return graph;
}

function decodeAttr(a: PB, graph: Graph, ctx: Ctx, depth: number): Attribute {
  const name: string = a.name ?? '';
  const base: { name: string; refAttrName?: string; docString?: string } = { name };
  if (has(a, 'ref_attr_name')) base.refAttrName = a.ref_attr_name;
  if (has(a, 'doc_string')) base.docString = a.doc_string;
  let type: AttrType = a.type ?? AttrType.UNDEFINED;
  if (!type) {
    // Pre-IR-2 style: the type is whichever field is set.
    if (has(a, 'f')) type = AttrType.FLOAT;
    else if (has(a, 'i')) type = AttrType.INT;
    else if (has(a, 's')) type = AttrType.STRING;
    else if (has(a, 't')) type = AttrType.TENSOR;
    else if (has(a, 'g')) type = AttrType.GRAPH;
    else if (a.floats?.length) type = AttrType.FLOATS;
    else if (a.ints?.length) type = AttrType.INTS;
    else if (a.strings?.length) type = AttrType.STRINGS;
    else if (a.tensors?.length) type = AttrType.TENSORS;
    else if (a.graphs?.length) type = AttrType.GRAPHS;
  }
  const sub = (gp: PB) => {
    if (!gp) throw new InputError(`attribute '${name}' has no graph`, ctx.file);
    return decodeGraph(gp, graph, ctx, depth + 1);
  };
  const tensor = (tp: PB) => {
    if (!tp) throw new InputError(`attribute '${name}' has no tensor`, ctx.file);
    return decodeTensor(tp, ctx);
  };
  switch (type) {
    case AttrType.FLOAT:
      return { ...base, type, value: a.f ?? 0 };
    case AttrType.INT:
      return { ...base, type, value: longToInt(a.i ?? 0) };
    case AttrType.STRING:
      return { ...base, type, value: a.s ?? new Uint8Array() };
    case AttrType.TENSOR:
      return { ...base, type, value: tensor(a.t) };
    case AttrType.GRAPH:
      return { ...base, type, value: sub(a.g) };
    case AttrType.FLOATS:
      return { ...base, type, value: [...(a.floats ?? [])] };
    case AttrType.INTS:
      return { ...base, type, value: (a.ints ?? []).map(longToInt) };
    case AttrType.STRINGS:
      return { ...base, type, value: [...(a.strings ?? [])] };
    case AttrType.TENSORS:
      return { ...base, type, value: (a.tensors ?? []).map(tensor) };
    case AttrType.GRAPHS:
      return { ...base, type, value: (a.graphs ?? []).map(sub) };
    case AttrType.SPARSE_TENSOR:
      return { ...base, type, value: a.sparse_tensor };
    case AttrType.SPARSE_TENSORS:
      return { ...base, type, value: a.sparse_tensors ?? [] };
    case AttrType.TYPE_PROTO:
      return { ...base, type, value: a.tp };
    case AttrType.TYPE_PROTOS:
      return { ...base, type, value: a.type_protos ?? [] };
    default:
      return { ...base, type: AttrType.UNDEFINED, value: undefined };
  }
}

const TYPED_FIELDS: TypedField[] = ['float_data', 'int32_data', 'int64_data', 'double_data', 'uint64_data'];

export function decodeTensor(t: PB, ctx: Ctx): Tensor {
  const name: string = t.name ?? '';
  const dtype: DataType = t.data_type ?? 0;
  const dims: number[] = (t.dims ?? []).map(toNum);
  if (!isKnownDtype(dtype)) throw new InputError(`tensor '${name}' has unknown data_type ${dtype}`, ctx.file);
  if (dims.some((d) => d < 0 || !Number.isSafeInteger(d))) throw new InputError(`tensor '${name}' has invalid dims [${dims}]`, ctx.file);
  // The element count must be exact: everything downstream sizes buffers by it.
  const count = numElements(dims);
  if (!Number.isSafeInteger(count)) throw new InputError(`tensor '${name}' has dims [${dims}] whose product overflows`, ctx.file);
  let tensor: Tensor;
  if (t.data_location === 1) {
    const need = dtype === DataType.STRING ? undefined : byteLength(dtype, numElements(dims));
    tensor = new Tensor(name, dtype, dims, {
      kind: 'external',
      ref: resolveExternal(t.external_data ?? [], ctx.dir, ctx.file, name, need),
    });
  } else if (has(t, 'raw_data') || ctx.lazy?.has(t)) {
    const range = ctx.lazy?.get(t);
    const rawLength: number = range ? range.length : t.raw_data.length;
    if (dtype === DataType.STRING)
      throw new InputError(`tensor '${name}' is a string tensor with raw_data; strings live in string_data`, ctx.file);
    if (dtype !== DataType.UNDEFINED) {
      const need = byteLength(dtype, numElements(dims));
      if (rawLength !== need)
        throw new InputError(`tensor '${name}' has ${rawLength} bytes of raw_data, its shape needs ${need}`, ctx.file);
    }
    tensor = new Tensor(
      name,
      dtype,
      dims,
      range
        ? {
            kind: 'external',
            ref: { file: path.resolve(ctx.file), location: '', offset: range.offset, length: range.length, extra: [], embedded: true },
          }
        : { kind: 'raw', bytes: t.raw_data },
    );
  } else if (dtype === DataType.STRING) {
    const values = t.string_data ?? [];
    if (values.length !== count)
      throw new InputError(`tensor '${name}' has ${values.length} strings, its shape [${dims}] needs ${count}`, ctx.file);
    tensor = new Tensor(name, dtype, dims, { kind: 'strings', values });
  } else {
    const field = TYPED_FIELDS.find((f) => t[f]?.length) ?? defaultField(dtype);
    const values = t[field] ?? [];
    const need = typedCount(dtype, count);
    if (dtype !== DataType.UNDEFINED && values.length !== need)
      throw new InputError(`tensor '${name}' has ${values.length} values in ${field}, its shape [${dims}] needs ${need}`, ctx.file);
    tensor = new Tensor(name, dtype, dims, { kind: 'typed', field, values });
  }
  if (has(t, 'doc_string')) tensor.extras.docString = t.doc_string;
  if (t.metadata_props?.length) tensor.extras.metadataProps = t.metadata_props.map(kv);
  if (has(t, 'segment')) tensor.extras.segment = t.segment;
  return tensor;
}

/** Values a typed field holds for `count` elements: complex numbers take two; sub-byte types pack
 * one byte per int32_data entry. */
function typedCount(dtype: DataType, count: number): number {
  if (dtype === DataType.COMPLEX64 || dtype === DataType.COMPLEX128) return 2 * count;
  if (dtypeBits(dtype) < 8) return byteLength(dtype, count); // one packed byte per entry
  return count;
}

function defaultField(dtype: DataType): TypedField {
  switch (dtype) {
    case DataType.FLOAT:
    case DataType.COMPLEX64:
      return 'float_data';
    case DataType.DOUBLE:
    case DataType.COMPLEX128:
      return 'double_data';
    case DataType.INT64:
      return 'int64_data';
    case DataType.UINT32:
    case DataType.UINT64:
      return 'uint64_data';
    default:
      return 'int32_data';
  }
}

/** Decode a TensorProto file (ONNX test data input_K.pb / output_K.pb). */
export function loadTensorFile(file: string): Tensor {
  const bytes = fs.readFileSync(file);
  let pb: PB;
  try {
    pb = TensorProto.decode(bytes);
  } catch (e) {
    throw new InputError(`not a TensorProto (${(e as Error).message})`, file);
  }
  return decodeTensor(pb, ctxOf(file));
}
