// `edgec compile <model|dir> --target webgpu|npu|mobile`: the product. Thin: parse, compile, print.
import type { Command } from 'commander';
import { CheckError, InputError } from '../../ir/index.js';
import { artifactSummary, compile, type CompileOptions, type CompileResult } from '../../targets/compile.js';
import { modelFilePaths } from '../../targets/manifest.js';
import { TARGET_NAMES, type QuantChoice, type TargetName } from '../../targets/target.js';
import { PIPELINES } from '../../passes/pipelines.js';
import { fmtBytes, table } from '../format.js';
import { progressView } from '../progress.js';
import type { RegisterCommand } from './index.js';
import { ROLES, type Role } from '../../ir/summary.js';
import { IMAGE_PRESETS, describeInputs, type Preprocess } from '../../runtime/inputs.js';
import { formatMetric } from '../../runtime/metrics.js';
import type { RangeMethod } from '../../runtime/calibrate.js';

interface CompileCliOpts {
  target: string;
  out?: string;
  quant?: string;
  blockSize: string;
  method: string;
  fix: string[];
  imageSizes?: string;
  context?: string;
  prefillChunk?: string;
  pipeline?: string;
  calibration?: string;
  calibrationMethod?: string;
  strict?: boolean;
  inputs?: string[];
  images?: string[];
  tokens?: string;
  preset?: string;
  role?: string[];
  policy?: string;
  policyOption: string[];
  batchSizes?: string;
  profile?: string;
  allowFallback?: boolean;
  force?: boolean;
  profileRun?: boolean;
  verify: boolean;
  fp16: boolean;
  runtimeVersion?: string;
  threads?: string;
  json?: boolean;
}

const collect = (v: string, prev: string[]) => [
  ...prev,
  ...v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
];
const repeat = (v: string, prev: string[]) => [...prev, v];

/** `FILE=ROLE` pairs (file name or stem). */
export function parseRoles(items: string[] | undefined): Record<string, Role> | undefined {
  if (!items?.length) return undefined;
  const out: Record<string, Role> = {};
  for (const it of items) {
    const m = /^(.+)=([a-z-]+)$/.exec(it);
    if (!m || !ROLES.includes(m[2] as Role)) throw new InputError(`--role '${it}' is not FILE=ROLE with ROLE one of ${ROLES.join('|')}`);
    out[m[1]!.replace(/\.onnx$/i, '')] = m[2] as Role;
  }
  return out;
}

export function parsePreset(preset: string | undefined): Preprocess | undefined {
  if (preset === undefined) return undefined;
  if (!IMAGE_PRESETS[preset.toLowerCase()])
    throw new InputError(`--preset must be one of ${Object.keys(IMAGE_PRESETS).join('|')}, got '${preset}'`);
  return { preset: preset.toLowerCase() };
}

function posInt(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InputError(`${flag} '${v}' is not a positive integer`);
  return Number(v);
}

export function parseCompileOptions(o: CompileCliOpts, input: string): CompileOptions {
  if (!TARGET_NAMES.includes(o.target as TargetName))
    throw new InputError(`--target must be one of ${TARGET_NAMES.join('|')}, got '${o.target}'`);
  if (o.quant && !['int4', 'int8', 'fp16', 'none'].includes(o.quant))
    throw new InputError(`--quant must be int4|int8|fp16|none, got '${o.quant}'`);
  const fix: Record<string, number> = {};
  for (const f of o.fix) {
    const m = /^([^=]+)=(\d+)$/.exec(f);
    if (!m || Number(m[2]) < 1) throw new InputError(`--fix '${f}' is not name=positive integer`);
    fix[m[1]!] = Number(m[2]);
  }
  const policyOptions: Record<string, number | boolean> = {};
  for (const f of o.policyOption) {
    const m = /^([A-Za-z]+)=(true|false|\d+(?:\.\d+)?)$/.exec(f);
    if (!m) throw new InputError(`--policy-option '${f}' is not name=number|true|false`);
    policyOptions[m[1]!] = m[2] === 'true' ? true : m[2] === 'false' ? false : Number(m[2]);
  }
  return {
    target: o.target as TargetName,
    out: o.out ?? `${input.replace(/[\\/]+$/, '').replace(/\.onnx$/i, '')}-${o.target}`,
    quant: o.quant as QuantChoice | undefined,
    blockSize: posInt('--block-size', o.blockSize),
    method: o.method,
    fix,
    imageSizes: o.imageSizes
      ? o.imageSizes
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : undefined,
    context: posInt('--context', o.context),
    prefillChunk: posInt('--prefill-chunk', o.prefillChunk),
    pipeline: o.pipeline,
    calibration: o.calibration,
    calibrationMethod: o.calibrationMethod as RangeMethod | undefined,
    strict: o.strict,
    inputs: o.inputs ?? [],
    images: o.images ?? [],
    tokens: o.tokens,
    preprocess: parsePreset(o.preset),
    roles: parseRoles(o.role),
    policy: o.policy,
    policyOptions: o.policyOption.length ? policyOptions : undefined,
    batchSizes: o.batchSizes?.split(',').map((b) => posInt('--batch-sizes', b.trim())!),
    profile: o.profile,
    allowFallback: o.allowFallback,
    force: o.force,
    profileRun: o.profileRun,
    verify: o.verify,
    fp16: o.fp16,
    runtimeVersion: o.runtimeVersion,
    threads: posInt('--threads', o.threads),
  };
}

/**
 * One line per sub-model: what the fuse-* passes made, their notes (fallback ops and why, table sizes)
 * grouped by text with the node names dropped, and how many candidates they left with a reason.
 */
export function fusionSummary(m: CompileResult['report']['models'][number]): string {
  const fuse = m.steps.filter((st) => st.pass.startsWith('fuse-'));
  const made = fuse.flatMap((st) =>
    Object.entries(st.counts)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`),
  );
  const notes = new Map<string, number>();
  for (const st of fuse)
    for (const n of st.notes ?? []) {
      const text = n.replace(/^\w+ at '[^']*': /, '');
      notes.set(text, (notes.get(text) ?? 0) + 1);
    }
  const noted = [...notes].map(([t, n]) => `; ${n > 1 ? `${n}x ` : ''}${t}`).join('');
  const left = fuse.reduce((a, st) => a + (st.skipped?.length ?? 0), 0);
  return `fusions ${m.name}: ${made.join(', ') || 'none'}${noted}${left ? `; ${left} candidate(s) left (reasons in --json: steps[].skipped)` : ''}`;
}

export function printCompile(r: CompileResult): void {
  const rows = [['file', 'role', 'size', 'nodes', 'min cos', 'max abs', 'verified']];
  for (const m of r.manifest.models) {
    const own = modelFilePaths(m);
    const files = r.manifest.files.filter((f) => own.includes(f.path));
    const outs = m.verification?.outputs ?? [];
    rows.push([
      m.file,
      m.role,
      fmtBytes(files.reduce((s, f) => s + f.bytes, 0)),
      String(Object.values(m.ops).reduce((s, v) => s + v, 0)),
      outs.length ? Math.min(...outs.map((o) => o.cosine)).toFixed(5) : '-',
      outs.length ? Math.max(...outs.map((o) => o.maxAbsError)).toExponential(2) : '-',
      m.verification
        ? m.verification.judgedBy
          ? `${m.verification.passed ? 'ok' : 'FAIL'} (${m.verification.judgedBy})`
          : m.verification.passed
            ? `ok (>= ${m.verification.threshold})`
            : `FAIL (< ${m.verification.threshold})`
        : 'skipped',
    ]);
  }
  process.stdout.write(`${table(rows, '', [false, false, true, true, true, true, false]).join('\n')}\n`);
  for (const m of r.report.models)
    if (m.missingPasses.length) process.stdout.write(`note: ${m.name}: passes not in this build: ${m.missingPasses.join(', ')}\n`);
  for (const m of r.report.models) process.stdout.write(`${fusionSummary(m)}\n`);
  for (const m of r.report.models) {
    for (const v of m.verification) {
      process.stdout.write(`${v.file}: verified on ${describeInputs(v.result.inputsUsed)}\n`);
      for (const t of v.result.metrics) process.stdout.write(`  ${formatMetric(t)}\n`);
    }
    if (m.throughCache) {
      process.stdout.write(`${m.name}: through its own KV cache, ${m.throughCache.steps} steps: ${m.throughCache.from}\n`);
      for (const t of m.throughCache.metrics) process.stdout.write(`  ${formatMetric(t)}\n`);
    }
    if (m.calibration) process.stdout.write(`${m.name}: calibrated on ${describeInputs(m.calibration)}\n`);
  }
  const s = artifactSummary(r);
  process.stdout.write(
    `${r.report.target} artifact (${r.report.profile}): ${s.files} files, ${fmtBytes(s.bytes)}, ${(s.ms / 1000).toFixed(1)} s -> ${r.outDir}\n`,
  );
}

const jsonSafe = (_k: string, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v);

export const registerCompile: RegisterCommand = (program: Command, setExit) => {
  program
    .command('compile')
    .description('compile a model or a folder of MLLM sub-models into a target artifact (checked and verified)')
    .argument(
      '<model>',
      'an .onnx file or a folder of sub-models (vision_encoder.onnx, projector.onnx, embed_tokens.onnx, decoder_model_merged.onnx)',
    )
    .requiredOption('--target <name>', `target: ${TARGET_NAMES.join('|')}`)
    .option('-o, --out <dir>', 'artifact folder (default: <model>-<target>)')
    .option('--quant <kind>', 'weights for every sub-model: int4|int8|fp16|none (default: per role)')
    .option('--block-size <n>', 'quantization block size along K', '32')
    .option('--method <name>', 'quantization method (rtn, ...)', 'rtn')
    .option('--fix <name=dim>', 'fix a symbolic dim (repeatable); webgpu/mobile stay dynamic without it or --image-sizes', collect, [])
    .option('--image-sizes <WxH,...>', 'vision sizes: one static vision encoder/projector per size (npu default 224x224)')
    .option('--context <n>', 'npu: KV length (past + new tokens) of the static decoder', undefined)
    .option('--prefill-chunk <n>', 'npu: tokens per prefill call (default context/16, at most 128)')
    .option(
      '--pipeline <spec>',
      `replace the default pass pipeline: text (e.g. "cleanup,fold-constants,quantize-weights{bits=4}") or a named pipeline (${[...TARGET_NAMES, ...Object.keys(PIPELINES)].join('|')}; a target's name runs that target's pipeline)`,
    )
    .option(
      '--calibration <dir>',
      'calibration data (npu activation ranges, gptq): test_data_set_N folders or PNG/JPEG images; a sub-folder per sub-model for a folder (default: --inputs/--images/--tokens, else synthetic)',
    )
    .option('--calibration-method <m>', 'activation range method: minmax|percentile|entropy (as onnxruntime calibrate.py)')
    .option('--strict', 'refuse to calibrate on synthetic inputs')
    .option(
      '--inputs <dir>',
      'verification inputs: ONNX test-data folder, every test_data_set_N used (repeatable; a sub-folder per sub-model for a folder)',
      repeat,
      [],
    )
    .option(
      '--images <dir|file>',
      'verification images (PNG/JPEG), resized and normalised for the vision encoder/classifier (repeatable)',
      repeat,
      [],
    )
    .option('--tokens <file>', 'token id sequences for the decoder (one per line): teacher-forced agreement, KL and perplexity')
    .option('--preset <name>', `image mean/std: ${Object.keys(IMAGE_PRESETS).join('|')} (default imagenet)`)
    .option('--role <file=role>', `role of a model file over the guess: ${ROLES.join('|')} (repeatable)`, repeat, [])
    .option(
      '--policy <name>',
      'image tiling policy (minicpm-v|bluelm-v|internvl|mini-monkey): vision variants per tile size and batch, plan-to-variant map in the manifest',
    )
    .option(
      '--policy-option <name=value>',
      'a policy parameter as `edgec plan --json` names it, e.g. tileSize=448 (repeatable)',
      collect,
      [],
    )
    .option('--batch-sizes <n,...>', 'encoder batch sizes per tile size (default: the policy batch, and 1 for the remainder)')
    .option('--profile <name>', 'device profile of the target')
    .option('--allow-fallback', 'emit even when some nodes cannot run on the target')
    .option('--no-verify', 'skip the onnxruntime comparison against the original')
    .option('--no-fp16', 'keep fp32 activations (WebGPU devices without shader-f16)')
    .option('--force', 'replace -o even when it exists and is not an edgec artifact')
    .option('--threads <n>', 'worker threads quantizing weights in parallel (same bytes for any count)', '1')
    .option('--runtime-version <X.Y>', 'oldest onnxruntime the artifact must load in: only ops and attributes it accepts (e.g. 1.20)')
    .option(
      '--profile-run',
      "profile the artifact (roofline prediction and a measured run in the target's runtime) into manifest.performance",
    )
    .option('--json', 'print the manifest and report as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec compile models/tiny-mllm --target mobile -o out/mobile              # a phone CPU build (XNNPACK, int4 decoder)
  $ edgec compile models/tiny-mllm --target npu --image-sizes 448x448 -o out/npu
  $ edgec compile models/tiny-mllm --target npu --policy internvl --batch-sizes 4,1
  $ edgec compile models/tiny-mllm --target webgpu --runtime-version 1.20      # loads in onnxruntime-web 1.20
  $ edgec compile decoder.onnx --target webgpu --no-fp16 --method gptq --calibration calib/ --json

Exit codes: 0 built and verified, 1 a check failed (verification, an op the target cannot run), 2 bad input.`,
    )
    .action(async (input: string, o: CompileCliOpts) => {
      const opts = parseCompileOptions(o, input);
      let r: CompileResult;
      const view = progressView({ json: o.json });
      try {
        r = await compile(input, { ...opts, progress: view.progress });
      } catch (e) {
        view.stop();
        const partial = (e as { result?: CompileResult }).result;
        if (e instanceof CheckError && partial) {
          for (const w of partial.report.warnings) process.stderr.write(`edgec: ${w}\n`);
          if (o.json)
            process.stdout.write(
              `${JSON.stringify({ summary: artifactSummary(partial), manifest: partial.manifest, report: partial.report }, jsonSafe, 2)}\n`,
            );
          else printCompile(partial);
        }
        throw e;
      }
      view.stop();
      for (const w of r.report.warnings) process.stderr.write(`edgec: ${w}\n`);
      if (o.json)
        process.stdout.write(`${JSON.stringify({ summary: artifactSummary(r), manifest: r.manifest, report: r.report }, jsonSafe, 2)}\n`);
      else printCompile(r);
      setExit(0);
    });
};
