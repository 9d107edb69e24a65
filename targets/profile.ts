// `edgec profile`: a model or artifact measured in its target's runtime (onnxruntime's profiler) and
// predicted on a device by the roofline (kernels/roofline.ts), per sub-model role: decode-step and
// prefill latency for decoders, encode time per image (and per tiling plan) for vision encoders.
import fs from 'node:fs';
import path from 'node:path';
import { DataType, Dim, InputError, Model, Role, Tensor, byteLength, guessRole, loadModel } from '../ir/index.js';
import { parsePipeline, runPipeline } from '../passes/manager.js';
import { evaluateDim } from '../passes/shape/sym.js';
import { CostNode, Estimate, TensorCost, estimate, isMatMulLike } from '../kernels/roofline.js';
import { randomInputs } from '../runtime/ort.js';
import { OrtProfile, profileNode } from '../runtime/profile.js';
import { DEFAULT_DEVICE, PERF_DEVICES, PerfDevice, TARGET_UNIT } from './devices.js';
import { planImage, type PolicyName, type Size } from './plan/index.js';

export type ProfileRuntime = 'node' | 'wasm' | 'webgpu';

export interface ProfileOptions {
  target: 'webgpu' | 'npu' | 'mobile';
  device?: string;
  /** Past lengths for decode steps (default 128 and 512). */
  past?: number[];
  /** Prefill length (default 128). */
  prefill?: number;
  /** Vision input size (default 448x448) and an optional tiling policy for a whole image. */
  image?: Size;
  policy?: PolicyName;
  /** Cost float MatMul/Gemm/Gather weights as if stored in this many bits (block 32, fp16 scales). */
  assumeWeightBits?: number;
  /** Cost float activations and KV caches at this many bytes per element (2: an fp16 runtime). */
  activationBytes?: number;
  /** Extra symbolic-dim bindings. */
  dims?: Record<string, number>;
  measure?: boolean;
  runtime?: ProfileRuntime;
  runs?: number;
  topN?: number;
}

export interface OpTime {
  op: string;
  ms: number;
  count: number;
}
export interface NodeMs {
  name: string;
  op: string;
  ms: number;
}

export interface Breakdown {
  totalMs: number;
  byOp: OpTime[];
  top: NodeMs[];
  /** Fraction of time in MatMul-like ops (MatMul, Gemm, MatMulNBits, Conv, ...). */
  matmulShare: number;
}

export interface Scenario {
  /** 'decode past=512', 'prefill 128', 'encode 448x448 batch 1', ... */
  name: string;
  kind: 'decode' | 'prefill' | 'encode' | 'run';
  predicted: Breakdown & { flops: number; bytes: number; weightBytes: number; tokensPerSecond?: number };
  measured?: Breakdown & { wallMs: number; runtime: string; timer: 'gpu' | 'host'; tokensPerSecond?: number };
  /** Why the measured run failed (the prediction stands on its own). */
  measureError?: string;
}

export interface SubModelProfile {
  file: string;
  role: Role;
  scenarios: Scenario[];
  /** A tiling plan's encoder calls summed (vision encoders with --policy). */
  plan?: { policy: PolicyName; image: Size; calls: { shape: number[]; ms: number }[]; totalMs: number };
  unresolvedNodes: number;
}

export interface ProfileReport {
  target: string;
  device: string;
  unit: string;
  deviceSources: string[];
  models: SubModelProfile[];
}

// ---- shapes -> cost nodes ------------------------------------------------------------------------

const bytesPer = (t: DataType): number => byteLength(t, 2) / 2;

function dimsOf(shape: Dim[] | undefined, bind: Record<string, number>): number[] | null {
  if (!shape) return null;
  const out: number[] = [];
  for (const d of shape) {
    const v = typeof d === 'number' ? d : evaluateDim(d, bind);
    if (v === null || v < 0) return null;
    out.push(v);
  }
  return out;
}

/** Symbol bindings from the roles of the inputs: batch 1, seq, past, total = past + seq, image H/W. */
export function bindInputs(
  model: Model,
  o: { seq: number; past: number; image: Size; batch?: number; dims?: Record<string, number> },
): Record<string, number> {
  const bind: Record<string, number> = {};
  const set = (d: Dim | undefined, v: number) => {
    if (typeof d === 'string' && /^[A-Za-z_][\w.:]*$/.test(d) && !(d in bind)) bind[d] = v;
  };
  for (const v of model.graph.inputs) {
    const s = v.type?.shape;
    if (!s || v.initializer) continue;
    const n = v.name.toLowerCase();
    if (s.length > 0) set(s[0], o.batch ?? 1);
    if (/past|cache/.test(n) && s.length === 4) set(s[2], o.past);
    else if (/mask/.test(n) && s.length >= 2) set(s[s.length - 1], o.past + o.seq);
    else if (/pixel|^images?$/.test(n) && s.length === 4) {
      set(s[2], o.image.height);
      set(s[3], o.image.width);
    }
    // Encoder features [batch, grid_h, grid_w, C]: the image's patch grid at the usual patch of 14.
    else if (s.length === 4) {
      set(s[1], Math.floor(o.image.height / 14));
      set(s[2], Math.floor(o.image.width / 14));
    } else if (s.length >= 2) set(s[1], o.seq);
  }
  return { ...bind, ...o.dims };
}

function assumeBits(c: CostNode, bits: number): CostNode {
  const per = bits / 8 + 2 / 32;
  const w = c.inputs[c.op === 'Gather' ? 0 : 1];
  if (!w?.weight || w.bytesPerElem < 2) return c;
  if (c.op === 'MatMul' || c.op === 'Gemm') {
    const inputs = [...c.inputs];
    inputs[1] = { ...w, bytesPerElem: per };
    return { ...c, op: 'MatMulNBits', inputs, attrs: { ...c.attrs, K: w.dims[c.attrs.transB ? 1 : 0] ?? 1 } };
  }
  if (c.op === 'Gather') return { ...c, inputs: [{ ...w, bytesPerElem: per }, ...c.inputs.slice(1)] };
  return c;
}

/** The main graph's nodes with concrete shapes under `bind` (shapes must have been inferred). */
export function costNodes(
  model: Model,
  bind: Record<string, number>,
  assumeWeightBits?: number,
  activationBytes?: number,
): { nodes: CostNode[]; unresolved: number } {
  let unresolved = 0;
  const nodes: CostNode[] = [];
  for (const n of model.graph.nodes) {
    if (n.opType === 'Constant') continue;
    let missing = false;
    const tc = (v: { type?: { elemType: DataType; shape?: Dim[] }; initializer: Tensor | null } | null): TensorCost | null => {
      if (!v) return null;
      const dims = v.initializer ? v.initializer.dims : dimsOf(v.type?.shape, bind);
      const dtype = v.initializer ? v.initializer.dtype : (v.type?.elemType ?? DataType.FLOAT);
      if (!dims) {
        missing = true;
        return null;
      }
      const producer = (v as { producer?: { opType: string } | null }).producer;
      const weight = !!v.initializer || producer?.opType === 'Constant';
      // Float activations (and KV caches) as the deployment stores them, when told.
      const per =
        !weight && activationBytes && (dtype === DataType.FLOAT || dtype === DataType.FLOAT16) ? activationBytes : bytesPer(dtype);
      return { dims, bytesPerElem: per, weight };
    };
    const attrs: Record<string, number> = {};
    for (const k of ['K', 'N', 'block_size', 'bits', 'transA', 'transB', 'group']) {
      const a = n.attrInt(k, -1);
      if (a !== -1) attrs[k] = a;
    }
    let c: CostNode = {
      name: n.name,
      op: n.opType,
      inputs: n.inputs.map(tc),
      outputs: n.outputs.map(tc).filter((x): x is TensorCost => !!x),
      attrs,
    };
    if (missing) unresolved++;
    if (assumeWeightBits) c = assumeBits(c, assumeWeightBits);
    nodes.push(c);
  }
  return { nodes, unresolved };
}

function breakdown(e: Estimate): Scenario['predicted'] {
  return {
    totalMs: e.seconds * 1e3,
    flops: e.flops,
    bytes: e.bytes,
    weightBytes: e.weightBytes,
    byOp: e.byOp.map((o) => ({ op: o.op, ms: o.seconds * 1e3, count: o.count })),
    top: e.top.map((t) => ({ name: t.name, op: t.op, ms: t.seconds * 1e3 })),
    matmulShare: e.matmulShare,
  };
}

function measuredBreakdown(p: OrtProfile, topN: number): Omit<NonNullable<Scenario['measured']>, 'wallMs' | 'runtime'> {
  const gpu = p.gpuNodes.length > 0;
  const nodes = gpu ? p.gpuNodes : p.nodes;
  const byOp = new Map<string, OpTime>();
  let total = 0,
    mm = 0;
  for (const n of nodes) {
    const ms = n.us / 1e3;
    total += ms;
    if (isMatMulLike(n.op)) mm += ms;
    const o = byOp.get(n.op) ?? { op: n.op, ms: 0, count: 0 };
    o.ms += ms;
    o.count++;
    byOp.set(n.op, o);
  }
  return {
    totalMs: total,
    timer: gpu ? 'gpu' : 'host',
    byOp: [...byOp.values()].sort((a, b) => b.ms - a.ms),
    top: nodes.slice(0, topN).map((n) => ({ name: n.name, op: n.op, ms: n.us / 1e3 })),
    matmulShare: total ? mm / total : 0,
  };
}

// ---- profiling -----------------------------------------------------------------------------------

function resolveDevice(o: ProfileOptions): { device: PerfDevice; unit: string } {
  const name = o.device ?? DEFAULT_DEVICE[o.target]!;
  const device = PERF_DEVICES[name];
  if (!device) throw new InputError(`unknown device '${name}' (known: ${Object.keys(PERF_DEVICES).join(', ')})`);
  const unit = TARGET_UNIT[o.target]!;
  if (!device.units[unit as 'cpu'])
    throw new InputError(`device '${name}' has no ${unit} figures for target ${o.target} (pick another --device)`);
  return { device, unit };
}

function modelFiles(input: string): string[] {
  if (!fs.existsSync(input)) throw new InputError(`${input}: no such file or folder`);
  if (fs.statSync(input).isFile()) return [input];
  const files = fs
    .readdirSync(input)
    .filter((f) => f.endsWith('.onnx'))
    .sort()
    .map((f) => path.join(input, f));
  if (!files.length) throw new InputError(`${input}: no .onnx files in this folder`);
  return files;
}

interface Measurer {
  run(file: string, feeds: Record<string, Tensor>): Promise<OrtProfile>;
  close(): Promise<void>;
}

async function measurer(runtime: ProfileRuntime, runs: number): Promise<Measurer> {
  if (runtime === 'node') return { run: (f, feeds) => profileNode(f, feeds, { runs }), close: async () => undefined };
  // Loaded on demand: playwright-core is only needed when a browser runs.
  const { WebGpuBrowser } = await import('../runtime/webgpu-browser.js');
  const browser = await WebGpuBrowser.launch();
  const externalData = (f: string): string[] =>
    fs.readdirSync(path.dirname(f)).filter((x) => x.startsWith(path.basename(f)) && x !== path.basename(f));
  return {
    run: (f, feeds) => browser.profile(f, feeds, { ep: runtime, runs, externalData: externalData(f) }),
    close: () => browser.close(),
  };
}

/** Profile every sub-model of `input` (a model file or an artifact / MLLM folder). */
export async function profileModel(input: string, o: ProfileOptions): Promise<ProfileReport> {
  const { device, unit } = resolveDevice(o);
  const cu = device.units[unit as 'cpu']!;
  const topN = o.topN ?? 10;
  const pasts = o.past ?? [128, 512];
  const prefill = o.prefill ?? 128;
  const image = o.image ?? { width: 448, height: 448 };
  const runtime = o.runtime ?? (o.target === 'webgpu' ? 'webgpu' : 'node');
  const m = o.measure ? await measurer(runtime, o.runs ?? 3) : undefined;
  const models: SubModelProfile[] = [];
  try {
    for (const file of modelFiles(input)) {
      const model = loadModel(file);
      const role = guessRole(model).role;
      await runPipeline(model, parsePipeline('infer-shapes'));
      const scenarios: Scenario[] = [];
      let unresolved = 0;
      const run = async (name: string, kind: Scenario['kind'], bindOpts: Parameters<typeof bindInputs>[1], tokens?: number) => {
        const bind = bindInputs(model, { ...bindOpts, dims: o.dims });
        const c = costNodes(model, bind, o.assumeWeightBits, o.activationBytes);
        unresolved = Math.max(unresolved, c.unresolved);
        const predicted = breakdown(estimate(c.nodes, cu, topN));
        const s: Scenario = { name, kind, predicted };
        if (kind === 'decode') s.predicted.tokensPerSecond = 1000 / predicted.totalMs;
        if (m) {
          try {
            const feeds = randomInputs(model, { dims: bind, intHigh: 8 });
            const p = await m.run(file, feeds);
            const wall = [...p.wallMs].sort((a, b) => a - b)[p.wallMs.length >> 1] ?? 0;
            s.measured = { ...measuredBreakdown(p, topN), wallMs: wall, runtime: p.runtime };
            if (kind === 'decode') s.measured.tokensPerSecond = 1000 / wall;
          } catch (e) {
            s.measureError = (e as Error).message.split('\n')[0]!;
          }
        }
        void tokens;
        scenarios.push(s);
        return s;
      };
      const isDecoder = role === 'decoder' || model.graph.inputs.some((v) => /past_key_values|past_key|cache/i.test(v.name));
      const isStatic = model.graph.inputs.every(
        (v) => v.initializer || (v.type?.shape ?? []).every((d) => typeof d === 'number' && d >= 0),
      );
      if (isStatic && isDecoder) {
        // A fixed-shape variant (npu): one scenario, named after the shapes it was built for.
        const seqIn = model.graph.inputs.find((v) => /input_ids|inputs_embeds/.test(v.name))?.type?.shape;
        const pastIn = model.graph.inputs.find((v) => /past|cache/i.test(v.name))?.type?.shape;
        const seq = Number(seqIn?.[1] ?? 1),
          past = Number(pastIn?.[2] ?? 0);
        await run(`${seq === 1 ? 'decode' : 'prefill'} (static: seq ${seq}, cache ${past})`, seq === 1 ? 'decode' : 'prefill', {
          seq,
          past,
          image,
        });
      } else if (isDecoder) {
        for (const p of pasts) await run(`decode past=${p}`, 'decode', { seq: 1, past: p, image });
        await run(`prefill ${prefill}`, 'prefill', { seq: prefill, past: 0, image });
      } else if (role === 'vision-encoder') {
        await run(`encode ${image.width}x${image.height}`, 'encode', { seq: 1, past: 0, image });
      } else {
        await run('run', 'run', { seq: prefill, past: 0, image });
      }
      const prof: SubModelProfile = { file: path.basename(file), role, scenarios, unresolvedNodes: unresolved };
      if (role === 'vision-encoder' && o.policy) {
        const plan = planImage(o.policy, image);
        const calls = plan.batches.map((b) => {
          const bind = bindInputs(model, {
            seq: 1,
            past: 0,
            image: { width: b.shape[3], height: b.shape[2] },
            batch: b.shape[0],
            dims: o.dims,
          });
          return {
            shape: [...b.shape],
            ms: estimate(costNodes(model, bind, o.assumeWeightBits, o.activationBytes).nodes, cu).seconds * 1e3,
          };
        });
        prof.plan = { policy: o.policy, image, calls, totalMs: calls.reduce((s, c) => s + c.ms, 0) };
      }
      models.push(prof);
    }
  } finally {
    await m?.close();
  }
  return { target: o.target, device: device.name, unit, deviceSources: device.sources, models };
}
