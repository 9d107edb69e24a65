// compile(): a model file or a folder of MLLM sub-models -> a target artifact folder (model files,
// manifest.json, target configs), checked against the target and verified against the original in
// onnxruntime. Written to a temp folder and renamed: same input + options => same bytes.
import fs from 'node:fs';
import path from 'node:path';
import { chainedVariants, shapeChainMismatch } from './chain.js';
import { CheckError, InputError, InternalError, Model, loadModel, saveModel, type Progress } from '../ir/index.js';
import { commitReplace, crashPoint, recoverStale } from '../ir/atomic.js';
import { guessRole, type Role } from '../ir/summary.js';
import { formatPipeline, parsePipeline, runPipeline, type PipelineStep, type StepReport } from '../passes/manager.js';
import { resolvePipelineName } from '../passes/pipelines.js';
import { getPass } from '../passes/registry.js';
import { resolveOptions } from '../passes/pass.js';
import '../passes/builtin.js';
import { LOWERABLE } from '../passes/lower-contrib.js';
import { byTaskMetrics, verifyModels, type VerifyOptions, type VerifyResult } from '../runtime/verify.js';
import type { QuantizeContext } from '../passes/quantize.js';
import { SYNTHETIC_CALIBRATION, calibrationSets, userInputs } from './calibration.js';
import { runCalibrationSets, runVerificationSets } from './run-feeds.js';
import { formatMetric } from '../runtime/metrics.js';
import { decoderFiles, throughCache, type CacheCheck } from './through-cache.js';
import { RANGE_METHODS, weightCalibration, type RangeMethod } from '../runtime/calibrate.js';
import { describeInputs, type InputsUsed, type Preprocess } from '../runtime/inputs.js';
import { activationRanges } from '../runtime/fp16.js';
import { checkModel, enforce, refuseMisplacedContribOps, type CheckIssue } from './check.js';
import { EXAMPLE_IMAGE, parseSize, patchSize, type Size, type Tiling } from './dims.js';
import { encoderCalls, preprocessingSpec } from './buckets.js';
import { profileModel } from './profile.js';
import {
  buildManifest,
  fileDigests,
  isArtifactDir,
  writeJson,
  type Manifest,
  type ManifestInputs,
  type ManifestModel,
} from './manifest.js';
import { POLICIES, planImage, type PolicyName, type TilePlan } from './plan/index.js';
import { genaiConfig } from './genai-config.js';
import { lowerForRuntime, minRuntime, parseRuntimeVersion, passesToSkip } from './runtime-version.js';
import { derivedInputs } from './position-ids.js';
import { getTarget } from './registry.js';
import { isTargetPipeline, targetPipeline } from './pipelines.js';
import { reportHtml } from './report-html.js';
import {
  roleThreshold,
  type DeviceProfile,
  type QuantChoice,
  type SubModel,
  type Target,
  type TargetName,
  type TargetOptions,
  type Variant,
} from './target.js';

export interface CompileOptions {
  target: TargetName;
  /** Artifact folder (replaced if it holds an earlier edgec artifact; refused otherwise). */
  out: string;
  /** Replace `out` even when it is not an edgec artifact. */
  force?: boolean;
  quant?: QuantChoice;
  blockSize?: number;
  method?: string;
  /** fp16 activations where the target supports them (webgpu). */
  fp16?: boolean;
  fix?: Record<string, number>;
  imageSizes?: (string | Size)[];
  context?: number;
  prefillChunk?: number;
  /** Replaces the target's default pipeline for every sub-model: pipeline text, or a named pipeline
   * (a target's name, e.g. 'webgpu', or one of passes/pipelines.ts). */
  pipeline?: string;
  /** Calibration data: a folder of test_data_set_N folders or PNG/JPEG images (a sub-folder per
   * sub-model for a folder of sub-models). Default: the verification data, else synthetic. */
  calibration?: string;
  /** Activation range method for npu calibration (default minmax). */
  calibrationMethod?: RangeMethod;
  /** Refuse to calibrate on synthetic inputs. */
  strict?: boolean;
  /** Verification data: ONNX test-data folders (every test_data_set_N), images, token sequences. */
  inputs?: string[];
  images?: string[];
  tokens?: string;
  preprocess?: Preprocess;
  /** Roles by file name or stem (`vision.onnx` or `vision`), over the guess. */
  roles?: Record<string, Role>;
  /** Image tiling policy the runtime applies before the vision encoder: the vision encoder and
   * projector are compiled at its tile sizes (npu; webgpu/mobile only with imageSizes, which
   * otherwise replace the plan's sizes) and encoder batch sizes, and the manifest maps its plans
   * to those variants. */
  policy?: string;
  /** The policy's parameters by name (as `edgec plan --json` lists them), e.g. { tileSize: 56 }. */
  policyOptions?: Record<string, number | boolean>;
  /** Encoder batch sizes per tile size (default: the policy's batch, and 1 for the remainder). */
  batchSizes?: number[];
  allowFallback?: boolean;
  verify?: boolean;
  /** Device profile name of the target, or a profile object (tests use tiny limits). */
  profile?: string | DeviceProfile;
  seed?: number;
  /** Worker threads quantizing weights (same bytes for any count; default 1). */
  threads?: number;
  /** Oldest onnxruntime version (X.Y) the artifact must load in. */
  runtimeVersion?: string;
  progress?: Progress;
  /** Profile the emitted artifact (roofline on the target's default device, or `device`, and a measured
   * run in the target's runtime) into manifest.performance. */
  profileRun?: boolean | { device?: string; runs?: number };
}

export interface SubModelReport {
  name: string;
  role: Role;
  /** The passes that ran, as pipeline text (formatPipeline: options that differ from the passes' defaults),
   * lower-contrib included when the target needed it. The manifest holds it per model file. */
  pipeline: string;
  steps: {
    pass: string;
    ms: number;
    nodesBefore: number;
    nodesAfter: number;
    counts: Record<string, number>;
    skipped?: string[];
    /** What a pass chose and why (a fusion made with a fallback op, a table size). */
    notes?: string[];
    layers?: { weight: string; relError: number }[];
  }[];
  /** Default-pipeline passes not (yet) registered in this build. */
  missingPasses: string[];
  finalize: Record<string, number>;
  issues: CheckIssue[];
  verification: { file: string; result: VerifyResult }[];
  ms: number;
  /** What calibration (npu activation ranges, GPTQ) measured on. */
  calibration?: InputsUsed;
  /** A decoder `edgec run` drives, through its own KV cache. */
  throughCache?: CacheCheck;
}

export interface CompileResult {
  outDir: string;
  manifest: Manifest;
  report: { target: TargetName; profile: string; models: SubModelReport[]; ms: number; passed: boolean; warnings: string[] };
}

/** `model.onnx` or a folder of `*.onnx` sub-models (sorted by name). */
export function resolveInputs(input: string): { name: string; file: string }[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch {
    throw new InputError('no such file or folder', input);
  }
  if (st.isFile()) return [{ name: path.basename(input).replace(/\.onnx$/i, ''), file: path.resolve(input) }];
  if (!st.isDirectory()) throw new InputError('is not a regular file or folder', input);
  const files = fs
    .readdirSync(input)
    .filter((f) => f.toLowerCase().endsWith('.onnx'))
    .sort();
  if (!files.length) throw new InputError('holds no .onnx files', input);
  return files.map((f) => ({ name: f.replace(/\.onnx$/i, ''), file: path.resolve(input, f) }));
}

/** Role from the graph (ir/summary), falling back on the transformers.js file names. */
export function roleOf(model: Model, name: string): Role {
  const r = guessRole(model).role;
  if (r !== 'unknown') return r;
  if (/vision|image|pixel/.test(name)) return 'vision-encoder';
  if (/project|mm_proj|connector/.test(name)) return 'projector';
  if (/embed/.test(name)) return 'embeddings';
  if (/decoder|model_merged|language/.test(name)) return 'decoder';
  return 'unknown';
}

function resolveProfile(t: Target, p: string | DeviceProfile | undefined): DeviceProfile {
  if (typeof p === 'object') return p;
  const name = p ?? t.defaultProfile;
  const prof = t.profiles[name];
  if (!prof) throw new InputError(`unknown ${t.name} device profile '${name}' (known: ${Object.keys(t.profiles).join(', ')})`);
  return prof;
}

/** Data paths absolute, so that the manifest can name them relative to the artifact (portablePaths). */
const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(p));

function targetOptions(o: CompileOptions, t: Target): TargetOptions {
  const blockSize = o.blockSize ?? 32;
  if (!(blockSize >= 16 && (blockSize & (blockSize - 1)) === 0))
    throw new InputError(`--block-size must be a power of two >= 16, got ${blockSize}`);
  const context = o.context ?? 256;
  const prefillChunk = o.prefillChunk ?? Math.min(128, Math.max(1, Math.floor(context / 16)));
  if (!(prefillChunk >= 1 && prefillChunk < context))
    throw new InputError(`prefill chunk ${prefillChunk} must be in [1, context ${context})`);
  let imageSizes: Size[];
  try {
    imageSizes = (o.imageSizes ?? []).map((s) => (typeof s === 'string' ? parseSize(s) : s));
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  const policy = o.policy as PolicyName | undefined;
  if (policy !== undefined && !POLICIES.includes(policy))
    throw new InputError(`unknown tiling policy '${o.policy}' (known: ${POLICIES.join(', ')})`);
  const opts: TargetOptions = {
    quant: o.quant,
    blockSize,
    method: o.method ?? 'rtn',
    fp16: o.fp16 ?? true,
    context,
    prefillChunk,
    imageSizes,
    fix: o.fix ?? {},
    calibration: abs(o.calibration),
    seed: o.seed ?? 1234,
    policy,
    threads: o.threads,
    inputs: o.inputs?.length ? o.inputs.map((p) => path.resolve(p)) : undefined,
    images: o.images?.length ? o.images.map((p) => path.resolve(p)) : undefined,
    tokens: abs(o.tokens),
    preprocess: o.preprocess,
    calibrationMethod: o.calibrationMethod,
  };
  if (o.calibrationMethod && !RANGE_METHODS.includes(o.calibrationMethod))
    throw new InputError(`--calibration-method must be one of ${RANGE_METHODS.join('|')}, got '${o.calibrationMethod}'`);
  if (policy) opts.tiling = tiling(policy, o, imageSizes, t.staticShapes);
  else if (o.policyOptions || o.batchSizes) throw new InputError('policy options and batch sizes need --policy');
  return opts;
}

/** The policy's example plan, and the shapes to compile so that plans map onto variants: the plan's
 * tile sizes unless --image-sizes overrides them (dynamic-shape targets stay dynamic without it). */
function tiling(policy: PolicyName, o: CompileOptions, imageSizes: Size[], staticShapes: boolean): Tiling {
  let example: TilePlan;
  try {
    example = planImage(policy, EXAMPLE_IMAGE, o.policyOptions ?? {});
  } catch (e) {
    throw new InputError(`--policy ${policy}: ${(e as Error).message}`);
  }
  const batches = [...new Set(o.batchSizes ?? [example.options.batch as number, 1])].sort((a, b) => b - a);
  for (const b of batches)
    if (!(Number.isInteger(b) && b >= 1)) throw new InputError(`batch sizes must be positive integers, got ${batches.join(',')}`);
  const sizes = imageSizes.length ? imageSizes : staticShapes ? example.tileSizes : [];
  // Refuse before compiling anything when the example plan needs a shape that would not exist.
  if (sizes.length)
    encoderCalls(
      example,
      sizes.flatMap((s) => batches.map((batch) => ({ batch, height: s.height, width: s.width }))),
    );
  return { example, sizes, batches };
}

/** Resolve the steps: the target's own, a named pipeline (a target's name: that target's pipeline for this
 * sub-model's plan; or a name from passes/pipelines.ts), or pipeline text. Target pipelines report
 * passes not registered in this build instead of failing on them. */
function steps(t: Target, sm: SubModel, explicit: string | undefined): { steps: PipelineStep[]; missing: string[] } {
  const name = explicit?.trim();
  if (name && !isTargetPipeline(name)) return { steps: parsePipeline(resolvePipelineName(name)), missing: [] };
  const missing: string[] = [];
  const out: PipelineStep[] = [];
  for (const s of name && isTargetPipeline(name) ? targetPipeline(name, sm) : t.pipeline(sm)) {
    const pass = getPass(s.pass);
    if (!pass) {
      missing.push(s.pass);
      continue;
    }
    out.push({ pass, options: resolveOptions(pass, s.options ?? {}) });
  }
  return { steps: out, missing };
}

function stepSummary(r: StepReport): SubModelReport['steps'][number] {
  // Quantization error per layer (quantize-int4) feeds the report's chart.
  const layers = (r.stats as { layers?: { weight: string; relError: number }[] }).layers?.map((l) => ({
    weight: l.weight,
    relError: l.relError,
  }));
  return {
    pass: r.pass,
    ms: Math.round(r.ms),
    nodesBefore: r.nodesBefore,
    nodesAfter: r.nodesAfter,
    counts: r.stats.counts,
    ...(r.stats.skipped?.length ? { skipped: r.stats.skipped } : {}),
    ...(r.stats.notes?.length ? { notes: r.stats.notes } : {}),
    ...(layers?.length ? { layers } : {}),
  };
}

/** What the steps of one compile share. */
interface Run {
  o: CompileOptions;
  target: Target;
  profile: DeviceProfile;
  opts: TargetOptions;
  runtimeVersion?: string;
  /** Temp artifact folder, and the sub-folder (and its path) the model files go in. */
  tmp: string;
  sub: string;
  mdir: string;
  warnings: string[];
  issues: { model: string; issue: CheckIssue }[];
  reports: SubModelReport[];
  /** Emitted variant files waiting for verification. */
  pending: { sm: SubModel; variant: Variant; file: string; model: Model; ext: string[] }[];
  entries: ManifestModel[];
  emitted: Model[];
  /** Data paths as the manifest names them (relative to the artifact). */
  portable: (s: string) => string;
}

type Loaded = { name: string; file: string; model: Model };

export async function compile(input: string, o: CompileOptions): Promise<CompileResult> {
  const t0 = performance.now();
  const target = getTarget(o.target);
  const profile = resolveProfile(target, o.profile);
  const opts = targetOptions(o, target);
  let runtimeVersion: string | undefined;
  try {
    runtimeVersion = o.runtimeVersion === undefined ? undefined : parseRuntimeVersion(o.runtimeVersion);
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  // A device without shader-f16 cannot run fp16 activations at all: pick the fp32 build for it.
  if (profile.shaderF16 === false) opts.fp16 = false;
  const inputs = resolveInputs(input);
  const outDir = path.resolve(o.out);
  checkOutDir(inputs, outDir, o);
  const loaded = inputs.map((i) => ({ ...i, model: loadModel(i.file) }));
  for (const l of loaded) refuseMisplacedContribOps(l.model, l.file);
  for (const k of Object.keys(o.roles ?? {})) {
    if (!inputs.some((i) => i.name === k || path.basename(i.file) === k))
      throw new InputError(
        `--role names '${k}', which is not among the models (${inputs.map((i) => path.basename(i.file)).join(', ')})`,
        input,
      );
  }
  const tmp = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  // Model files go where the target's runtime looks for them (transformers.js: onnx/).
  const sub = target.modelDir ?? '';
  const run: Run = {
    o,
    target,
    profile,
    opts,
    runtimeVersion,
    tmp,
    sub,
    mdir: path.join(tmp, sub),
    warnings: [],
    issues: [],
    reports: [],
    pending: [],
    entries: [],
    emitted: [],
    portable: portablePaths(opts, outDir),
  };
  fs.mkdirSync(run.mdir, { recursive: true });
  try {
    // Roles before any pipeline runs: a sub-model's calibration may run the sources of the others.
    const siblings = loaded.map((l) => ({
      name: l.name,
      file: l.file,
      role: o.roles?.[l.name] ?? o.roles?.[path.basename(l.file)] ?? roleOf(l.model, l.name),
    }));
    const patch = loaded.map((l) => patchSize(l.model)).find((p) => p !== undefined);
    // Projectors after the vision encoders: their static variants take the encoder's output shape.
    const order = loaded.map((_, i) => i).sort((a, b) => +(siblings[a]!.role === 'projector') - +(siblings[b]!.role === 'projector'));
    for (const [step, li] of order.entries()) {
      const l = loaded[li]!;
      const role = siblings[li]!.role;
      const sm: SubModel = {
        name: l.name,
        role,
        plan: role === 'mllm' ? { ...target.plan(role, opts), vision: target.plan('vision-encoder', opts) } : target.plan(role, opts),
        profile,
        opts,
        source: l.file,
        patch,
        siblings,
        progress: o.progress,
      };
      o.progress?.('sub-models', step, loaded.length, `${l.name} (${role})`);
      await compileSubModel(run, l, sm);
    }
    // Files and reports in folder order again.
    const rank = (name: string) => loaded.findIndex((l) => l.name === name);
    run.pending.sort((a, b) => rank(a.sm.name) - rank(b.sm.name));
    run.reports.sort((a, b) => rank(a.name) - rank(b.name));
    const chain = shapeChainMismatch(run.pending);
    if (chain) throw new CheckError(`shapes do not chain: ${chain}`);
    if (!o.allowFallback) enforce(run.issues, target.name);
    else if (run.issues.length) run.warnings.push(...fallbackLines(run.issues, target.name));
    o.progress?.('sub-models', loaded.length, loaded.length);
    await verifyPending(run);
    const manifest = await writeArtifact(run, input);
    crashPoint('compile:written');
    commitReplace([{ tmp, final: outDir }], 'swap');
    const passed = manifest.verification.passed;
    const result: CompileResult = {
      outDir,
      manifest,
      report: {
        target: target.name,
        profile: profile.name,
        models: run.reports,
        ms: Math.round(performance.now() - t0),
        passed,
        warnings: run.warnings,
      },
    };
    if (!passed) {
      const bad = failedOutputs(run.reports);
      throw Object.assign(
        new CheckError(`verification failed for ${bad.length} output${bad.length === 1 ? '' : 's'} (artifact kept in ${o.out})`, bad),
        { result },
      );
    }
    return result;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The old artifact is removed before the new one moves in: it must not hold an input, and must be ours (or --force). */
function checkOutDir(inputs: { file: string }[], outDir: string, o: CompileOptions): void {
  for (const i of inputs) {
    const rel = path.relative(outDir, i.file);
    if (!rel.startsWith('..') && !path.isAbsolute(rel))
      throw new InputError('output folder holds the input; refusing to replace it', o.out);
  }
  // Finish or undo what a killed edgec left beside the destination before judging it.
  if (fs.existsSync(path.dirname(outDir))) recoverStale(path.dirname(outDir), outDir);
  if (fs.existsSync(outDir) && !o.force && !isArtifactDir(outDir))
    throw new InputError('exists and is not an edgec artifact; refusing to replace it (--force replaces it)', o.out);
}

/** One sub-model: its pipeline, the target's finalize, then its variant files (queued for verification). */
async function compileSubModel(run: Run, l: Loaded, sm: SubModel): Promise<void> {
  const ts = performance.now();
  const { target, runtimeVersion } = run;
  const { steps: all, missing } = steps(target, sm, run.o.pipeline);
  const skip = passesToSkip(runtimeVersion);
  const st = all.filter((x) => !skip.includes(x.pass.name));
  const { ctx, release } = await pipelineContext(run, l, sm, st);
  let done: Awaited<ReturnType<typeof runSteps>>;
  try {
    done = await runSteps(run, l, st, ctx);
  } finally {
    release();
  }
  const { ran, stepReports } = done;
  const fin = await target.finalize(l.model, sm);
  if (runtimeVersion) {
    const low = lowerForRuntime(l.model, runtimeVersion);
    Object.assign(fin, low.counts);
    run.issues.push(...low.issues.map((issue) => ({ model: l.name, issue })));
  }
  calibrated(run, sm);
  const report: SubModelReport = {
    name: l.name,
    role: sm.role,
    pipeline: formatPipeline(ran),
    steps: stepReports.map(stepSummary),
    missingPasses: missing,
    finalize: fin,
    issues: [],
    verification: [],
    ms: 0,
    calibration: sm.calibrationUsed,
  };
  run.reports.push(report);
  await emitVariants(run, l, sm, report);
  report.ms = Math.round(performance.now() - ts);
}

/** What the passes get beyond the graph: GPTQ activations, and fp16 activation ranges when to-fp16 runs. */
async function pipelineContext(
  run: Run,
  l: Loaded,
  sm: SubModel,
  st: PipelineStep[],
): Promise<{ ctx: QuantizeContext; release: () => void }> {
  const { o, opts } = run;
  const ctx: QuantizeContext = { modelDir: path.dirname(l.file), progress: o.progress };
  // Data-aware methods (GPTQ) need the activations each weight multiplies.
  const wc = sm.plan.weightBits
    ? await weightCalibration(
        l.model,
        opts.method,
        async () => (await runCalibrationSets(l.model, sm, run.target.kvLayout)) ?? calibrationSets(l.model, sm, 8),
        {
          progress: o.progress,
        },
      )
    : undefined;
  if (wc) {
    ctx.calibration = wc.calibration;
    calibrated(run, sm);
  }
  if (st.some((s) => s.pass.name === 'to-fp16')) {
    // fp16 that cannot overflow: what stays fp32 is decided from ranges measured on the fp32
    // source (value names survive fusion and quantization; values a pass creates are unmeasured).
    o.progress?.('activation ranges', undefined, undefined, l.name);
    // (Not calibration in the manifest's sense: the fp16 keep-lists do not make the artifact's accuracy rest on these sets.)
    const before = sm.calibrationUsed;
    try {
      ctx.activationRanges = await activationRanges(l.model, calibrationSets(l.model, sm, 2));
    } catch (e) {
      // The source may hold ops onnxruntime cannot run (the target check below names them): then
      // to-fp16 keeps its static fp32 list, and the report says the ranges were not measured.
      if (e instanceof InputError) throw e;
      run.warnings.push(
        `${l.name}: fp16 activation ranges not measured (onnxruntime could not run the source: ${String((e as Error).message).split('\n')[0]})`,
      );
    }
    sm.calibrationUsed = before;
  }
  return { ctx, release: () => wc?.release() };
}

/** Run the pipeline, then lower the contrib ops the target does not run; returns the steps that ran. */
async function runSteps(
  run: Run,
  l: Loaded,
  st: PipelineStep[],
  ctx: QuantizeContext,
): Promise<{ ran: PipelineStep[]; stepReports: StepReport[] }> {
  const { target } = run;
  let stepReports: StepReport[];
  try {
    stepReports = await runPipeline(l.model, st, ctx);
  } catch (e) {
    // A defect inside a pass also names the sub-model it ran on.
    if (e instanceof InternalError) e.within(`sub-model '${l.name}'`);
    throw e;
  }
  // Whatever the pipeline fused, the target gets only contrib ops it runs.
  const keep = LOWERABLE.filter(
    (op) =>
      target.capabilities.supports('com.microsoft', op) || (op === 'SimplifiedLayerNormalization' && target.capabilities.supports('', op)),
  );
  const refused = [...l.model.graph.allGraphs()].some((g) =>
    g.nodes.some(
      (n) =>
        LOWERABLE.includes(n.opType) &&
        !keep.includes(n.opType) &&
        (n.domain === 'com.microsoft' || (n.domain === '' && n.opType === 'SimplifiedLayerNormalization')),
    ),
  );
  const ran = [...st];
  if (refused) {
    const lower = getPass('lower-contrib')!;
    ran.push({ pass: lower, options: resolveOptions(lower, { keep }) });
    stepReports.push(...(await runPipeline(l.model, ran.slice(-1), ctx)));
  }
  return { ran, stepReports };
}

/** Write each variant of a compiled sub-model (dims bound, checked against the target) and queue it for verification. */
async function emitVariants(run: Run, l: Loaded, sm: SubModel, report: SubModelReport): Promise<void> {
  const { o, target, profile, sub, mdir, tmp } = run;
  const variants = chainedVariants(run.pending, sm, l.model, target.variants(l.model, sm));
  // Variants share one weights file: the compiled model is written once as a base, and each
  // variant re-reads it and references the same external data in place.
  const shared = variants.length > 1;
  const baseFile = path.join(mdir, `.base-${l.name}.onnx`);
  const dataName = target.externalData.location(`${l.name}.onnx`);
  if (shared) saveModel(l.model, baseFile, { externalData: true, location: dataName, maxFileBytes: target.externalData.maxFileBytes });
  for (const [vi, v] of variants.entries()) {
    const name = target.fileName(sm, v);
    const file = sub ? `${sub}/${name}` : name;
    if (variants.length > 1) o.progress?.('variants', vi, variants.length, file);
    const m = shared ? loadModel(baseFile) : l.model;
    if (Object.keys(v.dims).length) await fixShapes(m, v.dims);
    target.finalizeVariant?.(m, sm);
    const issues = checkModel(m, target, profile);
    report.issues.push(...issues);
    run.issues.push(...issues.map((issue) => ({ model: file, issue })));
    const location = shared ? `${name}_data` : target.externalData.location(name);
    const res = saveModel(m, path.join(mdir, name), {
      externalData: true,
      location,
      maxFileBytes: target.externalData.maxFileBytes,
      reuseExternal: shared,
      // Runtimes infer intermediate shapes at load: value_info only made small artifacts bigger than their source.
      valueInfo: false,
    });
    const ext = shared ? [dataName, ...res.dataFiles.map((d) => path.basename(d.file))] : res.dataFiles.map((d) => path.basename(d.file));
    run.pending.push({ sm, variant: v, file, model: loadModel(path.join(tmp, file)), ext: [...new Set(ext)].sort() });
  }
  if (shared) fs.rmSync(baseFile);
}

/** Decoders `edgec run` drives are judged through their own KV cache too (targets/through-cache.ts). */
async function checkThroughCache(run: Run): Promise<void> {
  for (const report of run.reports.filter((r) => r.role === 'decoder')) {
    const sm = run.pending.find((p) => p.sm.name === report.name)?.sm;
    const entries = run.entries.filter((e) => e.name === report.name && e.verification);
    const files = decoderFiles(entries, (f) => path.join(run.tmp, f));
    if (!sm || !files) continue;
    run.o.progress?.('verify', undefined, undefined, `${report.name} through its KV cache`);
    const check = await throughCache(sm, files, run.target.kvLayout);
    if (!check) continue;
    report.throughCache = check;
    const metrics = check.metrics.map((m) => ({ ...m, value: round(m.value) }));
    for (const e of entries) {
      e.verification!.throughCache = { passed: check.passed, prompts: check.prompts, steps: check.steps, from: check.from, metrics };
      if (!check.passed) e.verification!.passed = false;
    }
  }
}

/** Verify every emitted file against its source (unless --no-verify) and make its manifest entry. */
async function verifyPending(run: Run): Promise<void> {
  const { o, target, opts, pending } = run;
  for (const [pi, p] of pending.entries()) {
    const report = run.reports.find((r) => r.name === p.sm.name)!;
    let verification: ManifestModel['verification'];
    if (o.verify !== false) {
      o.progress?.('verify', pi, pending.length, p.file);
      verification = await verifyOne(run, p, report);
    }
    const issues = run.issues.filter((i) => i.model === p.file).map((i) => i.issue);
    run.emitted.push(p.model);
    run.entries.push({
      name: p.sm.name,
      role: p.sm.role,
      file: p.file,
      variant: p.variant.suffix || undefined,
      externalData: p.ext,
      model: p.model,
      plan: p.sm.plan,
      opts,
      pipeline: report.pipeline,
      sessionOptions: fallbackSession(target.sessionOptions(p.model, p.sm, p.ext), issues.length > 0),
      transforms: report.finalize,
      verification,
      ...(p.sm.calibrationUsed ? { calibration: calibrationOf(p.sm.calibrationUsed, run.portable) } : {}),
      ...(issues.length ? { fallback: issues.map((i) => ({ node: i.node, op: i.op, reason: i.reason })) } : {}),
    });
  }
  if (o.verify !== false) await checkThroughCache(run);
}

async function verifyOne(run: Run, p: Run['pending'][number], report: SubModelReport): Promise<ManifestModel['verification']> {
  const { target, opts, tmp } = run;
  const threshold = roleThreshold(target, p.sm.role, p.sm.plan);
  const image = opts.tiling?.sizes[0] ?? opts.imageSizes[0];
  const derive = derivedInputs(loadModel(p.sm.source), p.model);
  const vo: VerifyOptions = {
    threshold,
    seed: opts.seed,
    dims: opts.fix,
    dimFlag: '--fix',
    image,
    role: p.sm.role,
    candidateName: p.file,
    ...userInputs(p.sm),
    unfit: 'synthetic',
    derive,
  };
  // A decoder `edgec run` drives: on what the target's runtime feeds it; else on the user's data
  // or realistic synthetic sets.
  const own = await runVerificationSets(p.sm, p.model, target.kvLayout);
  const result = own
    ? byTaskMetrics(await verifyModels(p.sm.source, path.join(tmp, p.file), { ...vo, sets: own }))
    : await verifyModels(p.sm.source, path.join(tmp, p.file), vo);
  report.verification.push({ file: p.file, result });
  return {
    threshold,
    passed: result.passed,
    inputs: result.inputs.map((i) => ({ name: i.name, shape: i.shape })),
    inputsUsed: summaryOf(result.inputsUsed, run.portable),
    outputs: result.outputs.map((c) => ({ name: c.name, cosine: round(c.cosine), maxAbsError: round(c.maxAbsError) })),
    ...(result.metrics.length ? { metrics: result.metrics.map((m) => ({ ...m, value: round(m.value) })) } : {}),
    ...(result.judgedBy ? { judgedBy: result.judgedBy } : {}),
  };
}

/** Target extra files, carried config files, genai_config.json, report.html and manifest.json into the temp folder. */
async function writeArtifact(run: Run, input: string): Promise<Manifest> {
  const { o, target, profile, opts, runtimeVersion, tmp, entries, emitted, reports } = run;
  for (const f of target.extraFiles?.(emitted) ?? []) fs.writeFileSync(path.join(tmp, f.path), f.content);
  carryOver(input, tmp);
  // report.html describes the model files; the manifest then hashes it with everything else.
  const pre = preprocessingSpec(opts, entries);
  if (target.genaiConfig) {
    const g = genaiConfig(buildManifest(target, profile, opts, entries, [], pre), entries, tmp);
    if (g) writeJson(path.join(tmp, 'genai_config.json'), g);
  }
  const runtime = { ...minRuntime(emitted), ...(runtimeVersion ? { requested: runtimeVersion } : {}) };
  const pr = o.profileRun ? (typeof o.profileRun === 'object' ? o.profileRun : {}) : undefined;
  const perf = pr ? await profileModel(tmp, { target: target.name, device: pr.device, measure: true, runs: pr.runs ?? 3 }) : undefined;
  const draft = buildManifest(target, profile, opts, entries, fileDigests(tmp), pre);
  draft.runtime = runtime;
  if (perf) draft.performance = perf;
  const subModels = reports.map((r) => ({
    name: r.name,
    steps: r.steps,
    layers: r.steps.flatMap((s) => s.layers ?? []),
    issues: r.issues,
  }));
  fs.writeFileSync(
    path.join(tmp, 'report.html'),
    reportHtml(draft, draft.files, { models: entries.map((e) => ({ file: e.file, model: e.model })), subModels }),
  );
  const manifest = buildManifest(target, profile, opts, entries, fileDigests(tmp), pre);
  manifest.runtime = runtime;
  if (perf) manifest.performance = perf;
  writeJson(path.join(tmp, 'manifest.json'), manifest);
  return manifest;
}

/** One line per output that failed verification. */
function failedOutputs(reports: SubModelReport[]): string[] {
  const cache = reports.flatMap((r) =>
    (r.throughCache?.metrics ?? [])
      .filter((m) => m.passed === false)
      .map((m) => `${r.name}: through its KV cache: ${formatMetric(m)} (${r.throughCache!.from})`),
  );
  return cache.concat(
    reports.flatMap((r) =>
      r.verification.flatMap((v) =>
        v.result.outputs
          .filter((c) => c.problem)
          .map(
            (c) =>
              `${v.file}: output '${c.name}': ${c.problem} (cosine ${round(c.cosine)}, max abs ${round(c.maxAbsError)}; ` +
              `${describeInputs(v.result.inputsUsed)})`,
          ),
      ),
    ),
  );
}

/** Synthetic calibration is said once per sub-model; --strict refuses it. */
function calibrated(run: Run, sm: SubModel): void {
  const u = sm.calibrationUsed;
  if (!u?.synthetic) return;
  if (run.o.strict)
    throw new InputError(
      `${sm.name}: --strict: no calibration data (pass --calibration DIR of test_data_set_N folders or images, or --inputs/--images/--tokens)`,
    );
  const line = `${sm.name}: ${SYNTHETIC_CALIBRATION}`;
  if (!run.warnings.includes(line)) run.warnings.push(line);
}

/** The nodes that fall back, one line each, under a header. */
function fallbackLines(issues: { model: string; issue: CheckIssue }[], target: string): string[] {
  return [
    `--allow-fallback: ${issues.length} node${issues.length === 1 ? '' : 's'} cannot run on ${target} and fall back to the CPU:`,
    ...issues.slice(0, 18).map(({ model, issue }) => `  ${model}: ${issue.op} '${issue.node}': ${issue.reason}`),
    ...(issues.length > 18 ? [`  ... ${issues.length - 18} more (manifest.json "fallback", report.html)`] : []),
  ];
}

/** A model with fallback nodes needs session options that let the runtime place them on the CPU. */
function fallbackSession(opts: Record<string, unknown>, fallback: boolean): Record<string, unknown> {
  if (!fallback) return opts;
  const out: Record<string, unknown> = { ...opts };
  const walk = (o: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(o)) {
      if (k === 'session.disable_cpu_ep_fallback') o[k] = '0';
      else if (v && typeof v === 'object' && !Array.isArray(v)) {
        o[k] = { ...(v as Record<string, unknown>) };
        walk(o[k] as Record<string, unknown>);
      }
    }
  };
  walk(out);
  return out;
}

/** The manifest names data folders relative to the artifact ('/'-separated): the same bytes from
 * any working directory, and no absolute path that differs between machines or checkouts. */
function portablePaths(opts: TargetOptions, outDir: string): (s: string) => string {
  const roots = [opts.calibration, ...(opts.inputs ?? []), ...(opts.images ?? []), opts.tokens]
    .filter((r): r is string => !!r && path.isAbsolute(r))
    .sort((a, b) => b.length - a.length);
  if (!roots.length) return (s) => s;
  const rel = (r: string) => path.relative(outDir, r).split(path.sep).join('/') || '.';
  const re = new RegExp(`(?:${roots.map((r) => r.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})(?=$|[/\\\\ ,)])`, 'g');
  return (s) => s.replace(re, (m) => rel(m));
}

function summaryOf(u: InputsUsed, portable: (s: string) => string): ManifestInputs {
  return { source: u.source, from: u.from.map(portable), count: u.count, shapes: u.shapes, ...(u.synthetic ? { synthetic: true } : {}) };
}

function calibrationOf(u: InputsUsed, portable: (s: string) => string): ManifestInputs & { note?: string } {
  return { ...summaryOf(u, portable), ...(u.synthetic ? { note: SYNTHETIC_CALIBRATION } : {}) };
}

/** Model-folder files runtimes read beside the graphs (transformers.js, onnxruntime-genai, `edgec run`). */
export const CARRIED_FILES = [
  'config.json',
  'generation_config.json',
  'preprocessor_config.json',
  'processor_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
  'chat_template.json',
];

function carryOver(input: string, tmp: string): void {
  if (!fs.statSync(input).isDirectory()) return;
  for (const f of CARRIED_FILES) {
    const p = path.join(input, f);
    if (fs.existsSync(p) && fs.statSync(p).isFile()) fs.copyFileSync(p, path.join(tmp, f));
  }
}

function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(6)) : x;
}

/** Bake dims into the graph (fix-shapes re-infers and folds the shape arithmetic away). */
export async function fixShapes(model: Model, dims: Record<string, number>): Promise<void> {
  const fix = getPass('fix-shapes');
  if (!fix) throw new Error('the fix-shapes pass is not registered');
  await runPipeline(model, [{ pass: fix, options: resolveOptions(fix, { dims: Object.entries(dims).map(([k, v]) => `${k}=${v}`) }) }]);
}

export interface ArtifactSummary {
  target: TargetName;
  files: number;
  bytes: number;
  models: number;
  nodes: number;
  /** Op counts over all emitted models, most frequent first. */
  ops: Record<string, number>;
  minCosine: number | null;
  maxAbsError: number | null;
  passed: boolean;
  ms: number;
}

/** Headline figures of a compiled artifact (what `compile` and `demo` print). */
export function artifactSummary(r: CompileResult): ArtifactSummary {
  const m = r.manifest;
  const ops = new Map<string, number>();
  for (const e of m.models) for (const [k, v] of Object.entries(e.ops)) ops.set(k, (ops.get(k) ?? 0) + v);
  const outs = m.models.flatMap((e) => e.verification?.outputs ?? []);
  return {
    target: r.report.target,
    files: m.files.length + 1,
    bytes: m.files.reduce((s, f) => s + f.bytes, 0),
    models: m.models.length,
    nodes: [...ops.values()].reduce((s, v) => s + v, 0),
    ops: Object.fromEntries([...ops].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))),
    minCosine: outs.length ? Math.min(...outs.map((o) => o.cosine)) : null,
    maxAbsError: outs.length ? Math.max(...outs.map((o) => o.maxAbsError)) : null,
    passed: r.report.passed,
    ms: r.report.ms,
  };
}
