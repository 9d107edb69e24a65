// Proof that nothing is dropped: (1) a wire-format walk of every conformance model finds no
// field number our schema does not know, at any nesting depth; (2) a model using every IR-10+
// feature, each of whose fields the schema knows (protobufjs would drop an unknown one silently
// on both sides of the comparison), survives load -> save -> load with all fields equal.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import protobuf from 'protobufjs';
import { ModelProto, schemaRoot } from '../../ir/onnx-schema.js';
import { decodeModel, encodeModel, loadModel, saveModel, DataType, packInt4 } from '../../ir/index.js';
import { CONFORMANCE } from '../conformance-root.js';

/** protobufjs types util.Long as a bare constructor; at run time it is the long.js class. */
const LongT = protobuf.util.Long as unknown as { fromString(s: string): number };

const ROOT = CONFORMANCE;

/** Walk protobuf wire bytes as message `type`; collect unknown field numbers with their path. */
function unknownFields(bytes: Uint8Array, type: protobuf.Type, where: string, out: string[]): void {
  const r = protobuf.Reader.create(bytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    const id = tag >>> 3,
      wire = tag & 7;
    const field = type.fieldsById[id];
    if (!field) {
      out.push(`${where}.${type.name}#${id}`);
      r.skipType(wire);
      continue;
    }
    field.resolve();
    if (field.resolvedType instanceof protobuf.Type && wire === 2) {
      unknownFields(r.bytes(), field.resolvedType, `${where}.${field.name}`, out);
    } else r.skipType(wire);
  }
}

/** Keys of a plain message object that `type` has no field for, at any depth. */
function unknownKeys(obj: Record<string, unknown>, type: protobuf.Type, where: string, out: string[]): void {
  for (const [k, v] of Object.entries(obj)) {
    const field = type.fields[k];
    if (!field) {
      out.push(`${where}.${k}`);
      continue;
    }
    field.resolve();
    if (!(field.resolvedType instanceof protobuf.Type)) continue;
    for (const item of Array.isArray(v) ? v : [v]) unknownKeys(item as Record<string, unknown>, field.resolvedType, `${where}.${k}`, out);
  }
}

describe('schema covers every field', () => {
  it('finds no unknown field in any conformance model or test tensor', () => {
    const Model = schemaRoot.lookupType('onnx.ModelProto');
    const Tensor = schemaRoot.lookupType('onnx.TensorProto');
    const unknown: string[] = [];
    let files = 0;
    for (const suite of fs.readdirSync(ROOT)) {
      const sd = path.join(ROOT, suite);
      if (!fs.statSync(sd).isDirectory()) continue;
      for (const t of fs.readdirSync(sd)) {
        const f = path.join(sd, t, 'model.onnx');
        if (!fs.existsSync(f)) continue;
        unknownFields(fs.readFileSync(f), Model, t, unknown);
        files++;
        const ds = path.join(sd, t, 'test_data_set_0');
        if (fs.existsSync(ds)) {
          for (const pb of fs.readdirSync(ds)) {
            const bytes = fs.readFileSync(path.join(ds, pb));
            // Sequence/optional files share field 1 (name) but not the rest; only walk tensors.
            const tmpOut: string[] = [];
            unknownFields(bytes, Tensor, `${t}/${pb}`, tmpOut);
            if (!tmpOut.length) files++;
          }
        }
      }
    }
    expect(files).toBeGreaterThan(1000);
    expect(unknown).toEqual([]);
  });
});

const kv = (key: string, value: string) => ({ key, value });

/** A model touching every IR-10 field: int4/uint4/float8 tensors, typed storage, functions,
 * sparse initializers, metadata everywhere, value_info, training_info, If with outer refs. */
function everythingModel() {
  const thenBranch = {
    name: 'then',
    node: [{ input: ['x', 'w'], output: ['t_out'], op_type: 'Add', name: 'then_add', metadata_props: [kv('k', 'v')] }],
    output: [
      {
        name: 't_out',
        type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'n', denotation: 'DATA_BATCH' }, { dim_value: 4 }] } } },
      },
    ],
  };
  const elseBranch = {
    name: 'else',
    node: [{ input: ['x'], output: ['e_out'], op_type: 'Neg' }],
    output: [{ name: 'e_out', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'n' }, {}] } } } }],
  };
  return {
    ir_version: 10,
    opset_import: [
      { domain: '', version: 21 },
      { domain: 'custom.fn', version: 1 },
    ],
    producer_name: 'test',
    producer_version: '1.0',
    domain: 'org.test',
    model_version: 7,
    doc_string: 'model doc',
    metadata_props: [kv('a', '1'), kv('b', '2')],
    graph: {
      name: 'main',
      doc_string: 'graph doc',
      metadata_props: [kv('g', 'x')],
      node: [
        {
          input: ['cond'],
          output: ['y'],
          op_type: 'If',
          name: 'if0',
          doc_string: 'if doc',
          attribute: [
            { name: 'then_branch', type: 5, g: thenBranch },
            { name: 'else_branch', type: 5, g: elseBranch },
          ],
        },
        {
          input: ['y'],
          output: ['z'],
          op_type: 'MyFn',
          domain: 'custom.fn',
          overload: 'v2',
          name: 'fn0',
          device_configurations: [
            {
              configuration_id: 'cfg',
              pipeline_stage: 1,
              sharding_spec: [
                {
                  tensor_name: 'y',
                  device: [0, 1],
                  index_to_device_group_map: [{ key: 0, value: [0, 1] }],
                  sharded_dim: [{ axis: 0, simple_sharding: [{ dim_param: 'n', num_shards: 2 }] }],
                },
              ],
            },
          ],
          attribute: [
            { name: 'alpha', type: 1, f: 0.25, doc_string: 'attr doc' },
            { name: 's', type: 3, s: Buffer.from('str') },
            { name: 'fs', type: 6, floats: [0.5, -2] },
            { name: 'ss', type: 8, strings: [Buffer.from('a'), Buffer.from('b')] },
            { name: 'ts', type: 9, tensors: [{ name: 'ta', dims: [1], data_type: 6, int32_data: [3] }] },
            {
              name: 'gs',
              type: 10,
              graphs: [{ name: 'g1', node: [{ input: ['x'], output: ['g1o'], op_type: 'Abs' }], output: [{ name: 'g1o' }] }],
            },
            {
              name: 'sp',
              type: 11,
              sparse_tensor: {
                values: { dims: [1], data_type: 1, float_data: [2] },
                indices: { dims: [1], data_type: 7, int64_data: [1] },
                dims: [3],
              },
            },
            {
              name: 'sps',
              type: 12,
              sparse_tensors: [
                { values: { dims: [1], data_type: 1, float_data: [3] }, indices: { dims: [1], data_type: 7, int64_data: [0] }, dims: [2] },
              ],
            },
            {
              name: 'tp',
              type: 13,
              tp: { map_type: { key_type: 7, value_type: { optional_type: { elem_type: { sparse_tensor_type: { elem_type: 1 } } } } } },
            },
            { name: 'tps', type: 14, type_protos: [{ opaque_type: { domain: 'd', name: 'o' } }] },
          ],
        },
        {
          input: ['q4', 'q4s'],
          output: ['dq'],
          op_type: 'DequantizeLinear',
          name: 'dq0',
          attribute: [
            { name: 'axis', type: 2, i: 0 },
            { name: 'block_size', type: 2, i: 2 },
          ],
        },
        {
          input: [],
          output: ['big'],
          op_type: 'Constant',
          name: 'c0',
          attribute: [{ name: 'value_ints', type: 7, ints: [LongT.fromString('9223372036854775807'), -1, 3] }],
        },
      ],
      initializer: [
        { name: 'w', dims: [4], data_type: 1, float_data: [1, 2, 3, 4], doc_string: 'typed floats', segment: { begin: 0, end: 4 } },
        { name: 'q4', dims: [4, 3], data_type: DataType.INT4, raw_data: packInt4([-8, -1, 0, 1, 7, 3, -2, 5, 6, -7, 2, 4]) },
        { name: 'u4', dims: [3], data_type: DataType.UINT4, int32_data: [0x21, 0x03] },
        { name: 'q4s', dims: [2, 3], data_type: 1, raw_data: new Uint8Array(new Float32Array([0.5, 1, 2, 0.25, 4, 8]).buffer) },
        { name: 'f8', dims: [2], data_type: DataType.FLOAT8E4M3FN, raw_data: new Uint8Array([0x38, 0xb8]), metadata_props: [kv('t', 'm')] },
        { name: 'i64', dims: [2], data_type: 7, int64_data: [LongT.fromString('-9223372036854775808'), 5] },
        { name: 's', dims: [2], data_type: 8, string_data: [Buffer.from('hi'), Buffer.from('there')] },
      ],
      sparse_initializer: [
        {
          values: { name: 'sp', dims: [2], data_type: 1, float_data: [1, 2] },
          indices: { dims: [2], data_type: 7, int64_data: [0, 5] },
          dims: [8],
        },
      ],
      input: [
        { name: 'cond', type: { tensor_type: { elem_type: 9, shape: { dim: [] } } } },
        {
          name: 'x',
          type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'n' }, { dim_value: 4 }] } }, denotation: 'TENSOR' },
          doc_string: 'x doc',
          metadata_props: [kv('m', 'n')],
        },
        { name: 'seq', type: { sequence_type: { elem_type: { tensor_type: { elem_type: 1 } } } } },
      ],
      output: [
        { name: 'z', type: { tensor_type: { elem_type: 1 } } },
        { name: 'dq', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_value: 4 }, { dim_value: 3 }] } } } },
        { name: 'big', type: { tensor_type: { elem_type: 7, shape: { dim: [{ dim_value: 3 }] } } } },
      ],
      value_info: [
        { name: 'y', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'n' }, { dim_value: 4 }] } } }, doc_string: 'vi' },
      ],
      quantization_annotation: [{ tensor_name: 'q4', quant_parameter_tensor_names: [kv('SCALE_TENSOR', 'q4s')] }],
    },
    training_info: [
      {
        algorithm: { name: 'train', node: [{ input: ['w'], output: ['w2'], op_type: 'Identity' }], output: [{ name: 'w2' }] },
        update_binding: [kv('w', 'w2')],
      },
    ],
    functions: [
      {
        name: 'MyFn',
        domain: 'custom.fn',
        overload: 'v2',
        input: ['a'],
        output: ['b'],
        attribute: ['alpha'],
        attribute_proto: [{ name: 'beta', type: 1, f: 0.5 }],
        node: [{ input: ['a'], output: ['b'], op_type: 'Relu' }],
        opset_import: [{ domain: '', version: 21 }],
        value_info: [{ name: 'b', type: { tensor_type: { elem_type: 1 } } }],
        metadata_props: [kv('f', 'g')],
        doc_string: 'fn doc',
      },
    ],
    configuration: [{ name: 'cfg', num_devices: 2, device: ['d0', 'd1'] }],
  };
}

describe('IR 10 round trip', () => {
  it('keeps every field through load -> save -> load', () => {
    const missing: string[] = [];
    unknownKeys(everythingModel(), ModelProto, 'model', missing);
    expect(missing).toEqual([]);
    const src = ModelProto.encode(ModelProto.fromObject(everythingModel())).finish();
    const model = decodeModel(src, 'everything.onnx');
    const saved = encodeModel(model);
    const opts = { longs: String, bytes: Array, defaults: false, enums: Number };
    const a = ModelProto.toObject(ModelProto.decode(src), opts);
    const b = ModelProto.toObject(ModelProto.decode(saved), opts);
    expect(b).toEqual(a);
    // And the IR reads the values right.
    expect(model.graph.value('q4').initializer!.toNumbers()).toEqual(Float64Array.from([-8, -1, 0, 1, 7, 3, -2, 5, 6, -7, 2, 4]));
    expect(Array.from(model.graph.value('u4').initializer!.toNumbers())).toEqual([1, 2, 3]);
    expect(Array.from(model.graph.value('f8').initializer!.toNumbers())).toEqual([1, -1]);
    expect(model.graph.value('i64').initializer!.toBigInt64()[0]).toBe(-9223372036854775808n);
    expect(model.graph.nodes[3]!.attr('value_ints')!.value).toEqual([9223372036854775807n, -1, 3]);
    expect(model.graph.value('x').shape).toEqual(['n', 4]);
  });

  it('saves and reloads through files with external data identically', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-rt-'));
    try {
      const src = ModelProto.encode(ModelProto.fromObject(everythingModel())).finish();
      const m = decodeModel(src, path.join(dir, 'in.onnx'));
      const r = saveModel(m, path.join(dir, 'ext.onnx'), { externalData: true, threshold: 1 });
      expect(r.externalTensors).toBeGreaterThan(3);
      const back = loadModel(path.join(dir, 'ext.onnx'));
      expect(back.graph.value('q4s').initializer!.isExternal).toBe(true);
      saveModel(back, path.join(dir, 'inline.onnx'), { externalData: false });
      const opts = { longs: String, bytes: Array, defaults: false, enums: Number };
      const a = ModelProto.toObject(ModelProto.decode(encodeModel(m)), opts);
      const b = ModelProto.toObject(ModelProto.decode(fs.readFileSync(path.join(dir, 'inline.onnx'))), opts);
      // Typed storage (float_data) is re-encoded as raw_data after a trip through external data.
      const norm = (o: any) => JSON.stringify(o.graph.initializer.map((t: any) => [t.name, t.dims, t.data_type]));
      expect(norm(b)).toEqual(norm(a));
      expect(Array.from(loadModel(path.join(dir, 'inline.onnx')).graph.value('w').initializer!.toFloat32())).toEqual([1, 2, 3, 4]);
      // Small tensors are 16-byte aligned (page alignment would pad a small model past its source size);
      // tensors of 1 MiB and more are page-aligned, which the writer's own tests cover.
      for (const t of back.graph.initializers) {
        if (t.data.kind === 'external') expect(t.data.ref.offset % (t.data.ref.length >= 1 << 20 ? 4096 : 16)).toBe(0);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('malformed structure', () => {
  it('reports a one-line InputError for null sub-messages and unknown dtypes', () => {
    const bad = (mutate: (m: any) => void) => {
      const obj = everythingModel();
      mutate(obj);
      return () => decodeModel(ModelProto.encode(ModelProto.fromObject(obj)).finish(), 'bad.onnx');
    };
    expect(
      bad((m) => {
        delete m.graph.node[0].attribute[0].g;
      }),
    ).toThrow(/bad\.onnx: attribute 'then_branch' has no graph/);
    expect(
      bad((m) => {
        m.graph.node[3].attribute = [{ name: 'value', type: 4 }];
      }),
    ).toThrow(/attribute 'value' has no tensor/);
    expect(
      bad((m) => {
        m.graph.initializer[0].data_type = 54;
      }),
    ).toThrow(/tensor 'w' has unknown data_type 54/);
  });
});
