// Seeded mutations of ONNX files: byte-level (flips, interesting bytes, cuts, splices, varint and
// length-prefix edits at real field positions) and structure-level (dims, dtypes, names, inputs,
// attributes and external-data entries of a decoded model). Same seed, same mutants.
import { ModelProto, type PB } from '../ir/onnx-schema.js';
import { Random } from '../fixtures/random.js';
import { varint, wireFields } from '../fixtures/hostile.js';

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x12, 0x3a, 0x42];
const INTERESTING_INTS = [0, 1, -1, 2, 7, 255, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53, -(2 ** 31)];
const DTYPES = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 16, 21, 22, 23, 99];

export class Mutator {
  readonly r: Random;
  constructor(seed: number) {
    this.r = new Random(seed, 7);
  }

  int(n: number): number {
    return Math.floor(this.r.next() * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** One to four stacked mutations of `bytes`; `other` is a second seed to splice from. */
  mutate(bytes: Uint8Array, other: Uint8Array): { bytes: Uint8Array; ops: string[] } {
    let b: Uint8Array = Uint8Array.from(bytes);
    const ops: string[] = [];
    const n = 1 + this.int(4);
    for (let i = 0; i < n; i++) {
      const useStructure = this.r.next() < 0.35;
      if (useStructure) {
        const s = this.structural(b);
        if (s) { b = s.bytes; ops.push(s.op); continue; }
      }
      const m = this.byteLevel(b, other);
      b = m.bytes;
      ops.push(m.op);
    }
    return { bytes: b, ops };
  }

  private byteLevel(b: Uint8Array, other: Uint8Array): { bytes: Uint8Array; op: string } {
    const len = b.length;
    const at = this.int(Math.max(1, len));
    switch (this.int(9)) {
      case 0: { const c = Uint8Array.from(b); const bit = this.int(8); if (len) c[at]! ^= 1 << bit; return { bytes: c, op: `flip ${at}:${bit}` }; }
      case 1: { const c = Uint8Array.from(b); const v = this.pick(INTERESTING_BYTES); if (len) c[at] = v; return { bytes: c, op: `set ${at}=${v}` }; }
      case 2: return { bytes: b.subarray(0, at), op: `cut ${at}` };
      case 3: { const k = 1 + this.int(64); return { bytes: concat(b.subarray(0, at), b.subarray(Math.min(len, at + k))), op: `delete ${at}+${k}` }; }
      case 4: { const k = 1 + this.int(32); const ins = Uint8Array.from({ length: k }, () => this.int(256)); return { bytes: concat(b.subarray(0, at), ins, b.subarray(at)), op: `insert ${at}+${k}` }; }
      case 5: { const k = 1 + this.int(256); const from = this.int(Math.max(1, len)); return { bytes: concat(b.subarray(0, at), b.subarray(from, from + k), b.subarray(at)), op: `dup ${from}+${k}@${at}` }; }
      case 6: { const o = this.int(Math.max(1, other.length)); return { bytes: concat(b.subarray(0, at), other.subarray(o)), op: `splice ${at}<-${o}` }; }
      default: return this.fieldEdit(b);
    }
  }

  /** Rewrite a varint value or a length prefix at a real field position (top level or one level down). */
  private fieldEdit(b: Uint8Array): { bytes: Uint8Array; op: string } {
    let fields: ReturnType<typeof wireFields>;
    try { fields = wireFields(b); } catch { return { bytes: b, op: 'field-edit (unparsable)' }; }
    if (!fields.length) return { bytes: b, op: 'field-edit (none)' };
    let f = this.pick(fields);
    let base = 0;
    // Half the time, go one message down (into the graph, a node, a tensor).
    if (f.wire === 2 && this.r.next() < 0.5) {
      try {
        const inner = wireFields(b.subarray(f.body, f.end));
        if (inner.length) { base = f.body; f = this.pick(inner); }
      } catch { /* not a message */ }
    }
    const v = this.pick(INTERESTING_INTS);
    const tagBytes = varint((f.field << 3) | f.wire);
    const start = base + f.start;
    if (f.wire === 0) {
      return { bytes: concat(b.subarray(0, start), Uint8Array.from([...tagBytes, ...varint(v)]), b.subarray(base + f.end)), op: `varint field ${f.field}=${v}` };
    }
    if (f.wire === 2) {
      // A length prefix that lies: the body stays, the claim changes.
      return { bytes: concat(b.subarray(0, start), Uint8Array.from([...tagBytes, ...varint(Math.abs(v))]), b.subarray(base + f.body)), op: `length field ${f.field}=${Math.abs(v)}` };
    }
    const wire = this.pick([0, 1, 2, 3, 4, 5, 6, 7]);
    return { bytes: concat(b.subarray(0, start), Uint8Array.from(varint((f.field << 3) | wire)), b.subarray(start + tagBytes.length)), op: `wire field ${f.field}->${wire}` };
  }

  /** Decode, bend one thing that matters to a reader, encode. Undecodable input: no mutation. */
  private structural(b: Uint8Array): { bytes: Uint8Array; op: string } | undefined {
    let pb: PB;
    try { pb = ModelProto.toObject(ModelProto.decode(b), { longs: Number, bytes: Uint8Array, arrays: true }); } catch { return undefined; }
    const g = pb.graph;
    if (!g) return undefined;
    const nodes: PB[] = g.node ?? [];
    const inits: PB[] = g.initializer ?? [];
    const values = [...(g.input ?? []).map((v: PB) => v.name), ...inits.map((t: PB) => t.name), ...nodes.flatMap((n: PB) => n.output ?? [])].filter(Boolean);
    let op = '';
    switch (this.int(10)) {
      case 0: if (inits.length) { const t = this.pick(inits); const i = this.int(Math.max(1, t.dims.length)); t.dims[i] = this.pick(INTERESTING_INTS); op = `dims ${t.name}[${i}]`; } break;
      case 1: if (inits.length) { const t = this.pick(inits); t.data_type = this.pick(DTYPES); op = `dtype ${t.name}=${t.data_type}`; } break;
      case 2: if (nodes.length && values.length) { const nd = this.pick(nodes); const i = this.int(Math.max(1, nd.input.length)); nd.input[i] = this.pick(values); op = `input ${nd.name}[${i}]`; } break;
      case 3: if (nodes.length) { const nd = this.pick(nodes); nd.output[0] = this.pick([...values, 'fresh', '']); op = `output ${nd.name}`; } break;
      case 4: if (nodes.length) { const i = this.int(nodes.length); nodes.splice(i, 1); op = `drop node ${i}`; } break;
      case 5: if (nodes.length) { const nd = this.pick(nodes); nd.op_type = this.pick(['Reshape', 'Gather', 'Concat', 'Slice', 'If', 'Loop', 'Conv', 'MatMulNBits', 'Frob', '']); op = `op ${nd.name}=${nd.op_type}`; } break;
      case 6: if (nodes.length) { const nd = this.pick(nodes); (nd.attribute ??= []).push({ name: this.pick(['axis', 'to', 'perm', 'kernel_shape', 'then_branch', 'value']), type: this.pick([1, 2, 3, 4, 5, 6, 7, 99]), i: this.pick(INTERESTING_INTS), ints: [this.pick(INTERESTING_INTS)] }); op = `attr ${nd.name}`; } break;
      case 7: if (g.input?.length) { const v = this.pick(g.input as PB[]); const d = v.type?.tensor_type?.shape?.dim; if (d?.length) { d[this.int(d.length)] = { dim_value: this.pick(INTERESTING_INTS) }; op = `input dim ${v.name}`; } } break;
      case 8: if (inits.length) { const t = this.pick(inits); t.data_location = 1; t.external_data = [{ key: 'location', value: this.pick(['w.data', '../w.data', '/etc/hostname', 'model.onnx', '.', 'sub/../w.data']) }, { key: 'offset', value: String(this.pick(INTERESTING_INTS)) }, { key: 'length', value: String(this.pick(INTERESTING_INTS)) }]; delete t.raw_data; op = `external ${t.name}`; } break;
      default: if (nodes.length > 1) { const a = this.int(nodes.length), c = this.int(nodes.length); [nodes[a], nodes[c]] = [nodes[c], nodes[a]]; op = `swap nodes ${a},${c}`; } break;
    }
    if (!op) return undefined;
    try {
      return { bytes: ModelProto.encode(pb).finish(), op };
    } catch {
      return undefined;
    }
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}
