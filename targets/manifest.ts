// manifest.json: what a runtime needs to load the artifact and what a reviewer needs to trust it.
// No timestamps, no absolute paths, stable key order: same compile => same bytes.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AttrType, DataType, Dim, Model, Node, dtypeName } from '../ir/index.js';
import { opKey, type Role } from '../ir/summary.js';
import type { DeviceProfile, RolePlan, Target, TargetOptions } from './target.js';

export interface ManifestIO {
  name: string;
  dtype: string;
  shape: Dim[] | null;
}

/** What figures were measured on: source (test-data, images, tokens, synthetic), where from, how many sets, shapes. */
export interface ManifestInputs {
  source: string;
  from: string[];
  count: number;
  shapes: Record<string, number[]>[];
  synthetic?: boolean;
}

export interface ManifestVerification {
  threshold: number;
  passed: boolean;
  inputs: { name: string; shape: number[] }[];
  inputsUsed?: ManifestInputs;
  outputs: { name: string; cosine: number; maxAbsError: number }[];
  /** Task metrics (top-1/top-5, next-token agreement, KL, perplexity, per-token cosine). */
  metrics?: { name: string; value: number; threshold?: number; higherIsBetter?: boolean; passed?: boolean; count: number; note?: string }[];
  /** Set when the verdict is not the cosine threshold: what judged it (a decoder on its runtime's feeds: task metrics). */
  judgedBy?: string;
  /** A decoder `edgec run` drives, through its own KV cache (targets/through-cache.ts); part of `passed`. */
  throughCache?: { passed: boolean; prompts: number; steps: number; from: string; metrics: ManifestVerification['metrics'] };
}

/** What compile() hands the manifest builder for one emitted model. */
export interface ManifestModel {
  name: string;
  role: Role;
  file: string;
  variant?: string;
  externalData: string[];
  model: Model;
  plan: RolePlan;
  opts: TargetOptions;
  /** The passes that ran on the sub-model, as pipeline text (passes/manager.ts formatPipeline). */
  pipeline: string;
  sessionOptions: Record<string, unknown>;
  /** Counts of the target-level rewrites (splits, accuracy levels, Q/DQ insertions). */
  transforms: Record<string, number>;
  verification?: ManifestVerification;
  /** Calibration data of this model (npu activation ranges, GPTQ). */
  calibration?: ManifestInputs & { note?: string };
  /** --allow-fallback: nodes the target cannot run (the runtime places them on the CPU). */
  fallback?: { node: string; op: string; reason: string }[];
}

export interface Manifest {
  tool: { name: 'edgec'; version: string };
  target: string;
  profile: { name: string; maxBindingBytes: number | null; shaderF16: boolean | null };
  options: Record<string, unknown>;
  models: {
    name: string;
    role: Role;
    file: string;
    variant?: string;
    externalData: string[];
    inputs: ManifestIO[];
    outputs: ManifestIO[];
    opsets: { domain: string; version: number }[];
    ops: Record<string, number>;
    /** The passes that ran on the sub-model, as pipeline text (parsePipeline reads it back). */
    pipeline: string;
    quantization: Record<string, unknown>;
    transforms: Record<string, number>;
    session: Record<string, unknown>;
    verification?: ManifestVerification;
    calibration?: ManifestInputs & { note?: string };
    fallback?: { node: string; op: string; reason: string }[];
  }[];
  preprocessing?: Record<string, unknown>;
  /** The oldest onnxruntime that loads every file (and the features that set it); `requested` = --runtime-version. */
  runtime?: { onnxruntime: string; because: string[]; requested?: string };
  verification: { ran: boolean; passed: boolean };
  /** `compile --profile-run`: predicted and measured time per sub-model (targets/profile.ts), the
   * data behind report.html's chart by op type. Absent otherwise (timings would break byte-identical
   * artifacts). */
  performance?: import('./profile.js').ProfileReport;
  files: { path: string; bytes: number; sha256: string }[];
}

let version: string | undefined;
/** The package version (package.json above this file, in source and in dist/). */
export function toolVersion(): string {
  if (version) return version;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p)) {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'edgec' && pkg.version) return (version = pkg.version);
    }
  }
  return (version = '0.0.0');
}

const io = (m: Model, which: 'inputs' | 'outputs'): ManifestIO[] =>
  m.graph[which]
    .filter((v) => !v.initializer)
    .map((v) => ({
      name: v.name,
      dtype: v.type ? dtypeName(v.type.elemType) : 'unknown',
      shape: v.type?.shape ? [...v.type.shape] : null,
    }));

function opCounts(m: Model): Record<string, number> {
  const c = new Map<string, number>();
  for (const g of m.graph.allGraphs()) for (const n of g.nodes) c.set(opKey(n), (c.get(opKey(n)) ?? 0) + 1);
  return Object.fromEntries([...c].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
}

/** What was asked (role plan) and what the emitted graph holds (a custom --pipeline may differ). */
/** An int attribute for a description: the default when absent or not an int. */
function intAttr(n: Node, name: string, dflt: number | string): number | string {
  const a = n.attr(name);
  return a?.type === AttrType.INT ? n.attrInt(name) : dflt;
}

function quantization(e: ManifestModel): Record<string, unknown> {
  const p = e.plan;
  const requested: Record<string, unknown> = {
    weights: p.weightBits ? `int${p.weightBits}` : 'none',
    format: p.format,
    activations: p.activations,
  };
  if (p.weightBits) Object.assign(requested, { blockSize: e.opts.blockSize, method: e.opts.method, embeddings: p.embeddings !== 'float' });
  // A whole MLLM: its vision side (encoder, projector) follows the target's vision plan.
  if (p.vision) requested.vision = { weights: p.vision.weightBits ? `int${p.vision.weightBits}` : 'none', format: p.vision.format };
  const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const mnb = new Map<string, number>(),
    dq = new Map<string, number>(),
    gbq = new Map<string, number>();
  let f16 = false,
    a16 = false;
  for (const g of e.model.graph.allGraphs()) {
    for (const v of g.values.values()) if (v.dtype === DataType.FLOAT16) f16 = true;
    for (const n of g.nodes) {
      // Only the contrib ops: a source may hold a same-named op elsewhere, with any attributes (a fuzzer finding).
      const ms = n.domain === 'com.microsoft';
      if (ms && n.opType === 'MatMulNBits')
        count(mnb, `bits${intAttr(n, 'bits', 4)}_block${intAttr(n, 'block_size', '?')}_acc${intAttr(n, 'accuracy_level', 0)}`);
      else if (ms && n.opType === 'GatherBlockQuantized') count(gbq, `bits${intAttr(n, 'bits', 4)}_block${intAttr(n, 'block_size', 128)}`);
      else if (n.opType === 'DequantizeLinear' && n.input(0)?.initializer) count(dq, dtypeName(n.input(0)!.initializer!.dtype));
      else if (n.opType === 'QuantizeLinear' && n.input(2)?.initializer?.dtype === DataType.UINT16) a16 = true;
    }
  }
  const sorted = (m: Map<string, number>) => Object.fromEntries([...m].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  return {
    requested,
    observed: {
      matMulNBits: sorted(mnb),
      gatherBlockQuantized: sorted(gbq),
      dequantizeLinearWeights: sorted(dq),
      activations: a16 ? 'uint16-qdq' : f16 ? 'fp16' : 'fp32',
    },
  };
}

/** sha256 and size of every file under `dir` (relative '/' paths, sorted); manifest.json excluded. */
export function fileDigests(dir: string): Manifest['files'] {
  const out: Manifest['files'] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else {
        const rel = path.relative(dir, p).split(path.sep).join('/');
        if (rel !== 'manifest.json') out.push({ path: rel, bytes: fs.statSync(p).size, sha256: sha256File(p) });
      }
    }
  };
  walk(dir);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function sha256File(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** `preprocessing` (buckets.ts preprocessingSpec): how the runtime turns an image into vision encoder calls. */
export function buildManifest(
  t: Target,
  profile: DeviceProfile,
  opts: TargetOptions,
  models: ManifestModel[],
  files: Manifest['files'],
  preprocessing?: Record<string, unknown>,
): Manifest {
  const ran = models.some((m) => m.verification);
  const m: Manifest = {
    tool: { name: 'edgec', version: toolVersion() },
    target: t.name,
    profile: {
      name: profile.name,
      maxBindingBytes: Number.isFinite(profile.maxBindingBytes) ? profile.maxBindingBytes : null,
      shaderF16: profile.shaderF16 ?? null,
    },
    options: {
      quant: opts.quant ?? 'role-default',
      blockSize: opts.blockSize,
      method: opts.method,
      ...(t.name === 'webgpu' ? { fp16: opts.fp16 } : {}),
      ...(t.staticShapes ? { context: opts.context, prefillChunk: opts.prefillChunk } : {}),
      imageSizes: opts.imageSizes.map((s) => `${s.width}x${s.height}`),
      fix: opts.fix,
      calibration: opts.calibration ? 'folder' : opts.inputs || opts.images || opts.tokens ? 'verification-inputs' : 'synthetic',
      ...(opts.calibrationMethod ? { calibrationMethod: opts.calibrationMethod } : {}),
      ...(opts.policy ? { policy: opts.policy } : {}),
    },
    models: models.map((e) => ({
      name: e.name,
      role: e.role,
      file: e.file,
      ...(e.variant ? { variant: e.variant } : {}),
      externalData: e.externalData,
      inputs: io(e.model, 'inputs'),
      outputs: io(e.model, 'outputs'),
      opsets: e.model.opsetImports.map((o) => ({ domain: o.domain, version: o.version })),
      ops: opCounts(e.model),
      pipeline: e.pipeline,
      quantization: quantization(e),
      transforms: e.transforms,
      session: e.sessionOptions,
      ...(e.verification ? { verification: e.verification } : {}),
      ...(e.calibration ? { calibration: e.calibration } : {}),
      ...(e.fallback ? { fallback: e.fallback } : {}),
    })),
    verification: { ran, passed: models.every((e) => !e.verification || e.verification.passed) },
    files,
  };
  if (preprocessing) m.preprocessing = preprocessing;
  return m;
}

/** Artifact-relative paths of a model file and its external data (listed relative to the model's folder). */
export function modelFilePaths(e: { file: string; externalData: string[] }): string[] {
  const dir = path.posix.dirname(e.file);
  return [e.file, ...e.externalData.map((x) => (dir === '.' ? x : `${dir}/${x}`))];
}

export function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** An earlier artifact (safe to replace): holds a manifest.json written by edgec. */
export function isArtifactDir(dir: string): boolean {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { tool?: { name?: string } };
    return m.tool?.name === 'edgec';
  } catch {
    return false;
  }
}
