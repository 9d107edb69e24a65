// GraphBuilder: write small ONNX graphs in code (fixtures, unit tests). Node and value names
// follow the PyTorch exporter's style: nodes `<scope>/<OpType>[_k]`, outputs `<node>_output_<i>`.
import { DataType } from './dtype.js';
import { AttrInit, Dim, Graph, Model, Node, Value } from './graph.js';
import { Tensor } from './tensor.js';

export interface BuilderOptions {
  /** Default-domain opset (default 17, what torch.onnx.export writes for these models). */
  opset?: number;
  name?: string;
  /** Extra opset imports by domain, e.g. { 'com.microsoft': 1 }. */
  opsets?: Record<string, number>;
  irVersion?: number;
  producerName?: string;
}

export interface OpOptions {
  attrs?: Record<string, AttrInit>;
  domain?: string;
  /** Node name (made unique); default `<scope>/<opType>`. */
  name?: string;
  /** Number of outputs, or their exact names (default 1 output named `<node>_output_0`). */
  outputs?: number | string[];
}

/** IR version matching an opset, as onnx.helper does (opset 17 -> IR 8). */
function irVersionFor(opset: number): number {
  if (opset >= 21) return 10;
  if (opset >= 19) return 9;
  if (opset >= 15) return 8;
  return 7;
}

export class GraphBuilder {
  readonly model: Model;
  readonly graph: Graph;
  private scopes: string[] = [];

  constructor(opts: BuilderOptions = {}) {
    const opset = opts.opset ?? 17;
    this.graph = new Graph(opts.name ?? 'main_graph');
    this.model = new Model(this.graph);
    this.model.irVersion = opts.irVersion ?? irVersionFor(opset);
    this.model.opsetImports = [
      { domain: '', version: opset },
      ...Object.entries(opts.opsets ?? {}).map(([domain, version]) => ({ domain, version })),
    ];
    this.model.producerName = opts.producerName ?? 'edgec-fixtures';
  }

  input(name: string, dtype: DataType, shape: Dim[]): Value {
    const v = this.createExact(name, { elemType: dtype, shape: [...shape] });
    this.graph.inputs.push(v);
    return v;
  }

  /** Add a constant tensor (weights). `name` overrides the tensor's own name. */
  initializer(t: Tensor): Value;
  initializer(name: string, t: Tensor): Value;
  initializer(a: string | Tensor, b?: Tensor): Value {
    const t = typeof a === 'string' ? b!.clone(a) : a;
    if (this.graph.lookup(t.name)) throw new Error(`builder: value '${t.name}' already exists`);
    return this.graph.addInitializer(t);
  }

  constF32(name: string, dims: number[], values: ArrayLike<number>): Value {
    return this.initializer(Tensor.fromFloat32(name, dims, Float32Array.from(values)));
  }

  constScalarF32(name: string, value: number): Value {
    return this.constF32(name, [], [value]);
  }

  /** int64 tensor (shape constants, axes); dims default to [values.length]. */
  constInt64(name: string, values: ArrayLike<number | bigint>, dims: number[] = [values.length]): Value {
    return this.initializer(Tensor.fromInt64(name, dims, values));
  }

  /** A Constant node, the way exporters write scalars and shape constants; returns its output. */
  constant(t: Tensor, name?: string): Value {
    return this.op('Constant', [], { attrs: { value: t }, name })[0]!;
  }

  /** Run `fn` with node names prefixed by `scope` (nested scopes join with '/'). */
  scope<T>(scope: string, fn: () => T): T {
    this.scopes.push(scope.replace(/^\/+|\/+$/g, ''));
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** Add a node; returns its output values in order. */
  op(opType: string, inputs: (Value | null)[], opts: OpOptions = {}): Value[] {
    const prefix = this.scopes.length ? `/${this.scopes.join('/')}` : '';
    if (Array.isArray(opts.outputs))
      for (const n of opts.outputs) if (this.graph.lookup(n)) throw new Error(`builder: value '${n}' already exists`);
    const node: Node = this.graph.addNode({
      opType,
      domain: opts.domain,
      name: opts.name ?? `${prefix}/${opType}`,
      inputs,
      outputs: [],
      attrs: opts.attrs,
    });
    const outs = opts.outputs ?? 1;
    const outNames = typeof outs === 'number' ? Array.from({ length: outs }, (_, i) => `${node.name}_output_${i}`) : outs;
    for (const n of outNames) {
      const v = this.createExact(n, undefined);
      v.producer = node;
      node.outputs.push(v);
    }
    return node.outputs as Value[];
  }

  /** Single-output shorthand for op(). */
  op1(opType: string, inputs: (Value | null)[], opts: Omit<OpOptions, 'outputs'> & { output?: string } = {}): Value {
    return this.op(opType, inputs, { ...opts, outputs: opts.output ? [opts.output] : 1 })[0]!;
  }

  /** Mark a value as a graph output, renaming it to `name` when given and giving it a type. */
  output(v: Value, name?: string, dtype?: DataType, shape?: Dim[]): Value {
    if (name && name !== v.name) {
      if (this.graph.lookup(name)) throw new Error(`builder: value '${name}' already exists`);
      if (v.isGraphInput || v.initializer) throw new Error(`builder: cannot rename input/initializer '${v.name}' to output '${name}'`);
      this.graph.values.delete(v.name);
      v.name = name;
      this.graph.values.set(name, v);
    }
    if (dtype !== undefined) v.type = { elemType: dtype, shape: shape ? [...shape] : undefined };
    this.graph.outputs.push(v);
    return v;
  }

  build(): Model {
    for (const o of this.graph.outputs) {
      if (!o.producer && !o.isGraphInput && !o.initializer) throw new Error(`builder: output '${o.name}' has no producer`);
      if (!o.type) throw new Error(`builder: output '${o.name}' needs a dtype`);
    }
    return this.model;
  }

  private createExact(name: string, type: Value['type']): Value {
    const v = this.graph.createValue(name, type);
    if (v.name !== name) throw new Error(`builder: name '${name}' is already taken`);
    return v;
  }
}
