// The IR: Model, Graph, Node, Value (with producer and uses), Attribute. Passes work on these,
// never on protobuf objects. Fields the IR does not interpret (functions, training_info, sparse
// initializers, non-tensor types) are kept as decoded protobuf objects and written back as they were.
import { DataType } from './dtype.js';
import { Tensor } from './tensor.js';
import type { PB } from './onnx-schema.js';

/** A dimension: a number, a symbolic name, or unknown (null). */
export type Dim = number | string | null;

export interface TensorType {
  elemType: DataType;
  /** undefined = rank unknown. */
  shape?: Dim[];
}

export interface ValueInfoExtras {
  docString?: string;
  metadataProps?: { key: string; value: string }[];
  /** Full TypeProto for non-tensor types (sequence, map, optional, sparse) or extra fields
   * (denotations); written back verbatim when `type` was not changed. */
  rawType?: PB;
}

export class Value {
  producer: Node | null = null;
  /** Each use: the consuming node and the input slot. A node using a value twice appears twice. */
  uses: { node: Node; index: number }[] = [];
  /** Set when this value is an initializer (constant) of its graph. */
  initializer: Tensor | null = null;
  info: ValueInfoExtras = {};
  /** True if the source model carried a value_info entry for this value. */
  hasValueInfo = false;

  constructor(
    public name: string,
    public type: TensorType | undefined,
    public graph: Graph,
  ) {}

  get isGraphInput(): boolean {
    return this.graph.inputs.includes(this);
  }

  get isGraphOutput(): boolean {
    return this.graph.outputs.includes(this);
  }

  get consumers(): Node[] {
    return [...new Set(this.uses.map((u) => u.node))];
  }

  get shape(): Dim[] | undefined {
    return this.type?.shape;
  }

  get dtype(): DataType | undefined {
    return this.type?.elemType;
  }

  /**
   * Let this value's producer write a new value `name` instead (returned), leaving this one without
   * a producer but with its name, uses and graph-output role, so that a node inserted after the
   * producer can write it again (a Cast, Q/DQ pair or Reshape spliced in under a fixed name).
   */
  splitFromProducer(name: string, type?: TensorType): Value {
    const p = this.producer;
    if (!p) throw new Error(`value '${this.name}' has no producer to split from`);
    const inner = p.graph.createValue(name, type);
    p.setOutput(p.outputs.indexOf(this), inner);
    return inner;
  }
}

export enum AttrType {
  UNDEFINED = 0,
  FLOAT = 1,
  INT = 2,
  STRING = 3,
  TENSOR = 4,
  GRAPH = 5,
  FLOATS = 6,
  INTS = 7,
  STRINGS = 8,
  TENSORS = 9,
  GRAPHS = 10,
  SPARSE_TENSOR = 11,
  SPARSE_TENSORS = 12,
  TYPE_PROTO = 13,
  TYPE_PROTOS = 14,
}

/** int64 attributes stay exact: numbers when safe, bigint beyond 2^53 (e.g. INT64_MAX in Slice). */
export type Int = number | bigint;

export type AttrValue =
  | { type: AttrType.FLOAT; value: number }
  | { type: AttrType.INT; value: Int }
  | { type: AttrType.STRING; value: Uint8Array }
  | { type: AttrType.TENSOR; value: Tensor }
  | { type: AttrType.GRAPH; value: Graph }
  | { type: AttrType.FLOATS; value: number[] }
  | { type: AttrType.INTS; value: Int[] }
  | { type: AttrType.STRINGS; value: Uint8Array[] }
  | { type: AttrType.TENSORS; value: Tensor[] }
  | { type: AttrType.GRAPHS; value: Graph[] }
  | { type: AttrType.SPARSE_TENSOR; value: PB }
  | { type: AttrType.SPARSE_TENSORS; value: PB[] }
  | { type: AttrType.TYPE_PROTO; value: PB }
  | { type: AttrType.TYPE_PROTOS; value: PB[] }
  | { type: AttrType.UNDEFINED; value: undefined };

export type Attribute = AttrValue & { name: string; refAttrName?: string; docString?: string };

export class Node {
  inputs: (Value | null)[] = [];
  outputs: (Value | null)[] = [];
  attributes: Attribute[] = [];
  docString?: string;
  overload?: string;
  metadataProps?: { key: string; value: string }[];
  deviceConfigurations?: PB[];

  constructor(
    public graph: Graph,
    public name: string,
    public opType: string,
    public domain: string = '',
  ) {}

  attr(name: string): Attribute | undefined {
    return this.attributes.find((a) => a.name === name);
  }

  hasAttr(name: string): boolean {
    return this.attributes.some((a) => a.name === name);
  }

  /** Attribute value of the given type, or the default when absent (throws when neither). */
  private attrOf<V>(name: string, type: AttrType, what: string, dflt: V | undefined): V {
    const a = this.attr(name);
    if (!a) {
      if (dflt === undefined) throw new Error(`node '${this.name}' (${this.opType}) has no attribute '${name}'`);
      return dflt;
    }
    if (a.type !== type) throw new Error(`attribute '${name}' of '${this.name}' is not ${what}`);
    return a.value as V;
  }

  /** Integer attribute as a JS number (int64 beyond 2^53 loses precision: read attr() for those). */
  attrInt(name: string, dflt?: number): number {
    return intToNumber(this.attrOf<Int>(name, AttrType.INT, 'an int', dflt));
  }

  attrInts(name: string, dflt?: number[]): number[] {
    return this.attrOf<Int[]>(name, AttrType.INTS, 'ints', dflt).map(intToNumber);
  }

  attrFloat(name: string, dflt?: number): number {
    return this.attrOf(name, AttrType.FLOAT, 'a float', dflt);
  }

  attrFloats(name: string, dflt?: number[]): number[] {
    return this.attrOf(name, AttrType.FLOATS, 'floats', dflt);
  }

  attrString(name: string, dflt?: string): string {
    const a = this.attr(name);
    if (!a && dflt !== undefined) return dflt;
    return Buffer.from(this.attrOf<Uint8Array>(name, AttrType.STRING, 'a string', undefined)).toString('utf8');
  }

  attrTensor(name: string): Tensor | undefined {
    const a = this.attr(name);
    return a && a.type === AttrType.TENSOR ? a.value : undefined;
  }

  setAttr(a: Attribute): void {
    const i = this.attributes.findIndex((x) => x.name === a.name);
    if (i >= 0) this.attributes[i] = a;
    else this.attributes.push(a);
  }

  removeAttr(name: string): void {
    this.attributes = this.attributes.filter((a) => a.name !== name);
  }

  /** Subgraphs held in attributes (If/Loop/Scan bodies). */
  subgraphs(): Graph[] {
    const out: Graph[] = [];
    for (const a of this.attributes) {
      if (a.type === AttrType.GRAPH) out.push(a.value);
      else if (a.type === AttrType.GRAPHS) out.push(...a.value);
    }
    return out;
  }

  /** Replace input slot i, keeping use lists right. */
  setInput(i: number, v: Value | null): void {
    const old = this.inputs[i];
    if (old) {
      const k = old.uses.findIndex((u) => u.node === this && u.index === i);
      if (k >= 0) old.uses.splice(k, 1);
    }
    while (this.inputs.length <= i) this.inputs.push(null);
    this.inputs[i] = v;
    if (v) v.uses.push({ node: this, index: i });
  }

  input(i: number): Value | null {
    return this.inputs[i] ?? null;
  }

  /**
   * Make `v` output slot i (null empties the slot), keeping producer links right; returns the value
   * the slot held, now without a producer. `v` must have no producer (hand it over with
   * setOutput(k, null) on its producer first); it joins this node's graph's values.
   */
  setOutput(i: number, v: Value | null): Value | null {
    const old = this.outputs[i] ?? null;
    if (old === v) return null;
    if (v) {
      if (v.producer) throw new Error(`value '${v.name}' already has a producer ('${v.producer.name}')`);
      const known = this.graph.values.get(v.name);
      if (known && known !== v) throw new Error(`graph '${this.graph.name}' already has another value '${v.name}'`);
    }
    if (old && old.producer === this) old.producer = null;
    while (this.outputs.length <= i) this.outputs.push(null);
    this.outputs[i] = v;
    if (v) {
      v.producer = this;
      this.graph.values.set(v.name, v);
    }
    return old;
  }

  /**
   * Unhook this node from everything but its place in `graph.nodes`: its inputs and those of nodes in
   * its subgraphs (which may read outer values) are cleared, its outputs lose their producer and
   * leave the graph's values unless still used or graph outputs. `Graph.removeNodes` then drops many
   * disconnected nodes in one sweep.
   */
  disconnect(): void {
    this.inputs.forEach((_, i) => this.setInput(i, null));
    for (const sg of this.subgraphs())
      for (const inner of sg.allGraphs()) for (const n of inner.nodes) n.inputs.forEach((_, i) => n.setInput(i, null));
    for (const o of this.outputs) {
      if (!o || o.producer !== this) continue;
      o.producer = null;
      if (!o.isGraphOutput && !o.uses.length && this.graph.values.get(o.name) === o) this.graph.values.delete(o.name);
    }
  }

  output(i: number): Value | null {
    return this.outputs[i] ?? null;
  }

  /** Constant value of input i if it is an initializer (of this graph or an enclosing one). */
  constInput(i: number): Tensor | null {
    return this.inputs[i]?.initializer ?? null;
  }
}

export function intToNumber(v: Int): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

export interface NodeSpec {
  opType: string;
  domain?: string;
  name?: string;
  inputs: (Value | string | null)[];
  /** Output names to create (unique names are derived when taken), or existing Values to adopt. */
  outputs: (string | Value)[];
  attrs?: Record<string, AttrInit>;
}

export type AttrInit =
  number | string | number[] | string[] | Tensor | Graph | bigint | { floats: number[] } | { float: number } | Attribute;

export class Graph {
  name: string;
  nodes: Node[] = [];
  inputs: Value[] = [];
  outputs: Value[] = [];
  /** Every value defined in this graph by name (inputs, initializers, node outputs). */
  values = new Map<string, Value>();
  /** Initializer order as loaded (the writer keeps it). */
  initializerNames: string[] = [];
  docString?: string;
  metadataProps?: { key: string; value: string }[];
  sparseInitializers: PB[] = [];
  quantizationAnnotation: PB[] = [];
  /** Enclosing graph for If/Loop/Scan bodies. */
  parent: Graph | null = null;
  private nameCounter = 0;

  constructor(name = 'graph') {
    this.name = name;
  }

  /** Find a value by name here or in enclosing graphs (outer-scope references). */
  lookup(name: string): Value | undefined {
    for (let g: Graph | null = this; g; g = g.parent) {
      const v = g.values.get(name);
      if (v) return v;
    }
    return undefined;
  }

  /** A value of this graph (throws if absent). */
  value(name: string): Value {
    const v = this.lookup(name);
    if (!v) throw new Error(`graph '${this.name}' has no value '${name}'`);
    return v;
  }

  /** Create a value with a name unique across this graph and its ancestors and children. */
  createValue(name: string, type?: TensorType): Value {
    const v = new Value(this.uniqueName(name), type, this);
    this.values.set(v.name, v);
    return v;
  }

  uniqueName(base: string): string {
    const root = this.root();
    // Built once per root graph: a scan per call would make passes on big graphs quadratic.
    const names = (root.nameCache ??= root.collectNames(new Set()));
    const taken = (n: string) => names.has(n) || this.lookup(n) !== undefined;
    let n = base;
    while (taken(n)) n = `${base}_${++root.nameCounter}`;
    names.add(n);
    return n;
  }

  private nameCache?: Set<string>;

  private root(): Graph {
    let g: Graph = this;
    while (g.parent) g = g.parent;
    return g;
  }

  private collectNames(into: Set<string>): Set<string> {
    for (const n of this.values.keys()) into.add(n);
    for (const node of this.nodes) {
      into.add(node.name);
      for (const sg of node.subgraphs()) sg.collectNames(into);
    }
    return into;
  }

  get initializers(): Tensor[] {
    const out: Tensor[] = [];
    for (const n of this.initializerNames) {
      const t = this.values.get(n)?.initializer;
      if (t) out.push(t);
    }
    return out;
  }

  /** Add a constant tensor; returns its value. The tensor's name is made unique if taken. */
  addInitializer(t: Tensor): Value {
    const v = this.createValue(t.name, { elemType: t.dtype, shape: [...t.dims] });
    t.name = v.name;
    v.initializer = t;
    this.initializerNames.push(v.name);
    return v;
  }

  /** Drop an initializer (its value must be unused). */
  removeInitializer(v: Value): void {
    if (v.uses.length) throw new Error(`initializer '${v.name}' is still used`);
    v.initializer = null;
    this.initializerNames = this.initializerNames.filter((n) => n !== v.name);
    if (!v.isGraphInput && !v.isGraphOutput) this.values.delete(v.name);
  }

  /** Replace the tensor of an existing initializer value (same name), updating its type. */
  setInitializer(v: Value, t: Tensor): void {
    t.name = v.name;
    v.initializer = t;
    v.type = { elemType: t.dtype, shape: [...t.dims] };
    this.values.set(v.name, v);
    if (!this.initializerNames.includes(v.name)) this.initializerNames.push(v.name);
  }

  /** Build a node from a spec and insert it (at the end, or before `before`). */
  addNode(spec: NodeSpec, before?: Node): Node {
    const node = new Node(this, this.uniqueName(spec.name ?? spec.opType), spec.opType, spec.domain ?? '');
    spec.inputs.forEach((inp, i) => {
      const v = typeof inp === 'string' ? (inp === '' ? null : this.value(inp)) : inp;
      node.setInput(i, v);
    });
    for (const o of spec.outputs) {
      const v = typeof o === 'string' ? this.createValue(o) : o;
      if (v.producer && v.producer !== node) throw new Error(`value '${v.name}' already has a producer`);
      v.producer = node;
      node.outputs.push(v);
    }
    for (const [k, val] of Object.entries(spec.attrs ?? {})) node.attributes.push(makeAttr(k, val));
    if (before) {
      const i = this.nodes.indexOf(before);
      this.nodes.splice(i < 0 ? this.nodes.length : i, 0, node);
    } else this.nodes.push(node);
    return node;
  }

  /** Remove a node, detaching its inputs; its outputs must be unused unless `force`. */
  removeNode(node: Node, force = false): void {
    if (!force) {
      for (const o of node.outputs) {
        if (o && o.producer === node && (o.uses.length || o.isGraphOutput))
          throw new Error(`cannot remove '${node.name}': output '${o.name}' is still used`);
      }
    }
    node.disconnect();
    const i = this.nodes.indexOf(node);
    if (i >= 0) this.nodes.splice(i, 1);
  }

  /** Remove many nodes in one sweep of `nodes` (each disconnected as by `removeNode(n, true)`). */
  removeNodes(nodes: ReadonlySet<Node>): void {
    if (!nodes.size) return;
    for (const n of nodes) n.disconnect();
    this.nodes = this.nodes.filter((n) => !nodes.has(n));
  }

  /**
   * Put the nodes built from `specs` where `old` was, hand them `old`'s outputs (specs name them by
   * identity) and drop `old`.
   */
  replaceNode(old: Node, specs: NodeSpec[]): Node[] {
    old.outputs.forEach((o, i) => {
      if (!o || o.producer !== old) return;
      old.setOutput(i, null);
      if (!this.values.has(o.name)) this.values.set(o.name, o);
    });
    const made = specs.map((s) => this.addNode(s, old));
    this.removeNode(old, true);
    return made;
  }

  /**
   * Remove the nodes of `candidates` whose outputs nothing reads, repeatedly, then what only they
   * used: producers of their inputs (shape arithmetic, Constant nodes) and initializers.
   */
  removeDead(candidates: Iterable<Node>): void {
    const pending = new Set(candidates);
    // Liveness first, membership only when it fails: a matched node whose output was handed over
    // produces nothing yet is still there, and a Set of every node per call is quadratic on big graphs.
    const inGraph = (n: Node) => n.graph === this && (n.outputs.some((o) => o?.producer === n) || this.nodes.includes(n));
    let changed = true;
    while (changed) {
      changed = false;
      for (const n of pending) {
        if (!inGraph(n)) {
          pending.delete(n);
          continue;
        }
        if (n.outputs.some((o) => o && (o.uses.length || o.isGraphOutput))) continue;
        const ins = n.inputs.filter((v): v is Value => !!v);
        this.removeNode(n, true);
        pending.delete(n);
        changed = true;
        for (const v of ins) {
          if (v.uses.length || v.isGraphOutput || v.isGraphInput) continue;
          if (v.producer && v.producer.graph === this) pending.add(v.producer);
          else if (v.initializer && v.graph === this) this.removeInitializer(v);
        }
      }
    }
  }

  /** Give a value of this graph a new name (kept in the values table and initializer order). */
  renameValue(v: Value, name: string): void {
    if (this.values.get(v.name) !== v) throw new Error(`value '${v.name}' is not in graph '${this.name}'`);
    if (this.values.has(name)) throw new Error(`graph '${this.name}' already has a value '${name}'`);
    const old = v.name;
    this.values.delete(old);
    v.name = name;
    if (v.initializer) v.initializer.name = name;
    this.values.set(name, v);
    this.initializerNames = this.initializerNames.map((x) => (x === old ? name : x));
  }

  /** Drop a value that nothing produces or uses from the values table. */
  forgetValue(v: Value): void {
    if (v.producer || v.uses.length || v.isGraphOutput || v.isGraphInput) throw new Error(`value '${v.name}' is still connected`);
    if (this.values.get(v.name) === v) this.values.delete(v.name);
  }

  /** A new graph input `name` (a fed tensor), listed after the existing ones. */
  addInput(name: string, type: TensorType): Value {
    if (this.lookup(name)) throw new Error(`graph '${this.name}' already has a value '${name}'`);
    const v = this.createValue(name, type);
    this.inputs.push(v);
    return v;
  }

  /** Stop listing `v` as a graph input. */
  removeInput(v: Value): void {
    this.inputs = this.inputs.filter((x) => x !== v);
  }

  /** Replace the list of graph outputs (values of this graph). */
  setOutputs(outputs: readonly Value[]): void {
    this.outputs = [...outputs];
  }

  /** Insertion point before `node` (at the end when undefined). */
  before(node?: Node): InsertionPoint {
    return new InsertionPoint(this, node);
  }

  /** Insertion point right after `node`: nodes added through it keep their order after it. */
  after(node: Node): InsertionPoint {
    return new InsertionPoint(this, this.nodes[this.nodes.indexOf(node) + 1]);
  }

  /** Point every use of `from` (including graph outputs and subgraph uses) at `to`. */
  replaceAllUses(from: Value, to: Value): void {
    for (const u of [...from.uses]) u.node.setInput(u.index, to);
    this.outputs = this.outputs.map((o) => (o === from ? to : o));
  }

  /** Stable topological sort: keeps the current order where it is already valid. */
  sortTopologically(): void {
    const placed = new Set<Node>();
    const inGraph = new Set(this.nodes);
    const out: Node[] = [];
    const visiting = new Set<Node>();
    // Depth-first with an explicit stack: a chain of 100k nodes must not overflow the call stack.
    const visit = (root: Node) => {
      if (placed.has(root)) return;
      const stack: { n: Node; deps: Node[]; i: number }[] = [{ n: root, deps: nodeDeps(root), i: 0 }];
      visiting.add(root);
      while (stack.length) {
        const top = stack[stack.length - 1]!;
        if (top.i < top.deps.length) {
          const d = top.deps[top.i++]!;
          if (!inGraph.has(d) || placed.has(d)) continue;
          if (visiting.has(d)) throw new Error(`graph '${this.name}' has a cycle through node '${d.name}'`);
          visiting.add(d);
          stack.push({ n: d, deps: nodeDeps(d), i: 0 });
        } else {
          stack.pop();
          visiting.delete(top.n);
          placed.add(top.n);
          out.push(top.n);
        }
      }
    };
    for (const n of this.nodes) visit(n);
    this.nodes = out;
  }

  /** All graphs: this and every nested subgraph, depth-first. */
  *allGraphs(): Generator<Graph> {
    yield this;
    for (const n of this.nodes) for (const sg of n.subgraphs()) yield* sg.allGraphs();
  }
}

/**
 * Where new nodes go: before a fixed anchor node (or at the end). Several nodes added through one
 * insertion point keep the order they were added in.
 */
export class InsertionPoint {
  constructor(
    readonly graph: Graph,
    readonly anchor: Node | undefined,
  ) {}

  add(spec: NodeSpec): Node {
    return this.graph.addNode(spec, this.anchor);
  }

  /** Add a one-output node and return its output. */
  op(
    opType: string,
    inputs: (Value | string | null)[],
    opts: { name?: string; domain?: string; attrs?: Record<string, AttrInit>; output?: string | Value } = {},
  ): Value {
    const name = opts.name ?? opType;
    return this.add({ opType, domain: opts.domain, name, inputs, outputs: [opts.output ?? `${name}_output_0`], attrs: opts.attrs })
      .outputs[0]!;
  }
}

/** Producers a node depends on, including those of outer values its subgraphs use. */
function nodeDeps(n: Node): Node[] {
  const deps: Node[] = [];
  for (const v of n.inputs) if (v?.producer) deps.push(v.producer);
  for (const sg of n.subgraphs()) {
    for (const g of sg.allGraphs()) {
      for (const inner of g.nodes) {
        for (const v of inner.inputs) if (v && v.producer && v.producer.graph === n.graph) deps.push(v.producer);
      }
    }
  }
  return deps;
}

export function makeAttr(name: string, v: AttrInit): Attribute {
  if (typeof v === 'object' && v !== null && 'type' in v && 'name' in v && !(v instanceof Tensor) && !(v instanceof Graph))
    return { ...(v as Attribute), name };
  if (typeof v === 'number') return Number.isInteger(v) ? { name, type: AttrType.INT, value: v } : { name, type: AttrType.FLOAT, value: v };
  if (typeof v === 'bigint') return { name, type: AttrType.INT, value: v };
  if (typeof v === 'string') return { name, type: AttrType.STRING, value: Buffer.from(v, 'utf8') };
  if (v instanceof Tensor) return { name, type: AttrType.TENSOR, value: v };
  if (v instanceof Graph) return { name, type: AttrType.GRAPH, value: v };
  if (Array.isArray(v)) {
    if (v.length && typeof v[0] === 'string')
      return { name, type: AttrType.STRINGS, value: (v as string[]).map((s) => Buffer.from(s, 'utf8')) };
    return { name, type: AttrType.INTS, value: v as number[] };
  }
  if ('floats' in v) return { name, type: AttrType.FLOATS, value: v.floats };
  if ('float' in v) return { name, type: AttrType.FLOAT, value: v.float };
  throw new Error(`cannot make attribute '${name}' from ${String(v)}`);
}

export interface OpsetImport {
  domain: string;
  version: number;
}

export class Model {
  irVersion = 10;
  opsetImports: OpsetImport[] = [{ domain: '', version: 21 }];
  producerName = 'edgec';
  producerVersion = '';
  domain = '';
  modelVersion = 0;
  docString?: string;
  metadataProps: { key: string; value: string }[] = [];
  /** Kept verbatim (FunctionProto, TrainingInfoProto, DeviceConfigurationProto). */
  functions: PB[] = [];
  trainingInfo: PB[] = [];
  configuration: PB[] = [];
  /** Fields of ModelProto that were present in the source, so re-saves keep presence. */
  present = new Set<string>();
  /** Where the model was loaded from (for error messages and external data). */
  sourcePath?: string;

  constructor(public graph: Graph = new Graph()) {}

  opset(domain = ''): number | undefined {
    const d = domain === 'ai.onnx' ? '' : domain;
    return this.opsetImports.find((o) => (o.domain === 'ai.onnx' ? '' : o.domain) === d)?.version;
  }

  /** Import `domain` at `version` or later: adds the import or raises it. */
  requireOpset(domain: string, version: number): void {
    const cur = this.opset(domain);
    if (cur === undefined || cur < version) this.setOpset(domain, version);
  }

  setOpset(domain: string, version: number): void {
    const o = this.opsetImports.find((x) => x.domain === domain);
    if (o) o.version = version;
    else this.opsetImports.push({ domain, version });
  }

  getMeta(key: string): string | undefined {
    return this.metadataProps.find((m) => m.key === key)?.value;
  }

  setMeta(key: string, value: string): void {
    const m = this.metadataProps.find((x) => x.key === key);
    if (m) m.value = value;
    else this.metadataProps.push({ key, value });
  }
}
