// Release builds: edgec.config.json lists models and targets; build() compiles every (model, target)
// item into <out>/<model>/<target>. A content-hash key (edgec version, target, options, the bytes of
// every input and calibration file) per item skips items whose key did not change; --shard i/n
// takes every n-th item of the sorted list so a CI matrix can fan out, and mergeShards() joins the
// shards' summaries. Everything written is deterministic (no times, no absolute paths), so two
// shards gathered and merged equal one unsharded build byte for byte.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { CheckError, InputError, type Progress } from '../ir/index.js';
import { artifactSummary, compile, type ArtifactSummary, type CompileOptions, type CompileResult } from './compile.js';
import { sha256File, toolVersion, writeJson } from './manifest.js';
import { buildIndexHtml } from './report-html.js';
import type { QuantChoice, TargetName } from './target.js';

export interface BuildOptionsJson {
  quant?: QuantChoice;
  blockSize?: number;
  method?: string;
  fp16?: boolean;
  fix?: Record<string, number>;
  imageSizes?: string[];
  context?: number;
  prefillChunk?: number;
  pipeline?: string;
  policy?: string;
  policyOptions?: Record<string, number | boolean>;
  batchSizes?: number[];
  profile?: string;
  runtimeVersion?: string;
  allowFallback?: boolean;
  verify?: boolean;
  seed?: number;
}

export interface BuildConfig {
  out?: string;
  models: { name: string; path: string; targets?: string[]; calibration?: string; options?: BuildOptionsJson }[];
  targets: { name?: string; target: TargetName; options?: BuildOptionsJson }[];
}

export interface BuildItem {
  /** `<model>/<target name>`: also the artifact folder under out. */
  id: string;
  model: string;
  target: string;
  input: string;
  out: string;
  options: CompileOptions;
  /** Relative paths (to the config's folder) of the files whose bytes the key covers. */
  inputs: string[];
}

/** What build-summary.json records per item: the same bytes however the build was split. */
export interface ItemRecord {
  id: string;
  model: string;
  target: string;
  key: string;
  passed: boolean;
  error?: string;
  details?: string[];
  summary?: Omit<ArtifactSummary, 'ms'>;
}

export interface BuildSummary {
  tool: { name: 'edgec'; version: string };
  shard?: string;
  items: ItemRecord[];
  passed: boolean;
}

export interface BuildOutcome {
  record: ItemRecord;
  status: 'built' | 'cached' | 'failed' | 'input-error';
  ms: number;
}

export interface BuildResult {
  out: string;
  summaryFile: string;
  summary: BuildSummary;
  outcomes: BuildOutcome[];
  /** 0 every item passed, 1 some check failed, 2 some input was bad. */
  exitCode: number;
}

export const DEFAULT_CONFIG = 'edgec.config.json';
const STATE = '.edgec-build';

let schema: object | undefined;
function configSchema(): object {
  if (schema) return schema;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const p = path.join(dir, 'edgec.config.schema.json');
    if (fs.existsSync(p)) return (schema = JSON.parse(fs.readFileSync(p, 'utf8')) as object);
  }
  throw new Error('edgec.config.schema.json not found next to the package');
}

/** Read and validate a config against edgec.config.schema.json (the file editors complete from). */
export function loadBuildConfig(file: string): BuildConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const why =
      (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'no such file (write one, or pass --config FILE)'
        : `not valid JSON: ${(e as Error).message}`;
    throw new InputError(why, file);
  }
  const validate = new Ajv({ allErrors: false, strict: false }).compile(configSchema());
  if (!validate(raw)) {
    const err = validate.errors![0]!;
    const where = err.instancePath || '(top level)';
    const extra =
      err.params && 'additionalProperty' in err.params
        ? ` '${String(err.params.additionalProperty)}'`
        : err.params && 'allowedValues' in err.params
          ? ` (${(err.params.allowedValues as unknown[]).join(', ')})`
          : '';
    throw new InputError(`${where} ${err.message}${extra}; see edgec.config.schema.json`, file);
  }
  const cfg = raw as BuildConfig;
  const names = new Set<string>();
  for (const t of cfg.targets) {
    const n = t.name ?? t.target;
    if (names.has(n)) throw new InputError(`target name '${n}' used twice; give each entry a distinct "name"`, file);
    names.add(n);
  }
  const models = new Set<string>();
  for (const m of cfg.models) {
    if (models.has(m.name)) throw new InputError(`model name '${m.name}' used twice`, file);
    models.add(m.name);
    for (const t of m.targets ?? [])
      if (!names.has(t)) throw new InputError(`model '${m.name}' names unknown target '${t}' (known: ${[...names].join(', ')})`, file);
  }
  return cfg;
}

/** Every (model, target) item of a config, sorted by id; `only` keeps items whose model or target or id matches. */
export function buildItems(cfg: BuildConfig, configFile: string, only?: string[]): BuildItem[] {
  const dir = path.dirname(path.resolve(configFile));
  const out = path.resolve(dir, cfg.out ?? 'edgec-out');
  const items: BuildItem[] = [];
  for (const m of cfg.models) {
    const input = path.resolve(dir, m.path);
    for (const t of cfg.targets) {
      const tname = t.name ?? t.target;
      if (m.targets && !m.targets.includes(tname)) continue;
      const o: BuildOptionsJson = { ...t.options, ...m.options };
      const id = `${m.name}/${tname}`;
      const calibration = m.calibration ? path.resolve(dir, m.calibration) : undefined;
      items.push({
        id,
        model: m.name,
        target: tname,
        input,
        out: path.join(out, m.name, tname),
        options: {
          target: t.target,
          out: path.join(out, m.name, tname),
          quant: o.quant,
          blockSize: o.blockSize,
          method: o.method,
          fp16: o.fp16,
          fix: o.fix,
          imageSizes: o.imageSizes,
          context: o.context,
          prefillChunk: o.prefillChunk,
          pipeline: o.pipeline,
          calibration,
          policy: o.policy,
          policyOptions: o.policyOptions,
          batchSizes: o.batchSizes,
          profile: o.profile,
          allowFallback: o.allowFallback,
          verify: o.verify,
          seed: o.seed,
          ...(o.runtimeVersion ? { runtimeVersion: o.runtimeVersion } : {}),
        },
        inputs: [...inputFiles(input), ...(calibration ? filesUnder(calibration) : [])].map((f) => rel(dir, f)),
      });
    }
  }
  items.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (!only?.length) return items;
  const kept = items.filter((i) => only.some((s) => s === i.id || s === i.model || s === i.target));
  if (!kept.length)
    throw new InputError(`--only ${only.join(',')} matches no item (items: ${items.map((i) => i.id).join(', ')})`, configFile);
  return kept;
}

const rel = (dir: string, f: string) => path.relative(dir, f).split(path.sep).join('/');

/** The files a model's bytes live in: a folder's top-level files (sub-models, external data,
 * config/tokenizer files), or a file, its external data siblings (`<file>.data`, `<file>_data*`) and the
 * config.json beside it (fuse-rotary sizes tables by it). */
function inputFiles(input: string): string[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch {
    return [input];
  } // compile names the missing input
  if (st.isDirectory())
    return fs
      .readdirSync(input)
      .filter((f) => !f.startsWith('.'))
      .sort()
      .map((f) => path.join(input, f))
      .filter((f) => fs.statSync(f).isFile());
  const base = path.basename(input);
  const sib = fs
    .readdirSync(path.dirname(input))
    .filter((f) => f !== base && f.startsWith(base))
    .sort();
  const dir = path.dirname(input);
  const configs = [dir, ...(path.basename(dir) === 'onnx' ? [path.dirname(dir)] : [])]
    .map((d) => path.join(d, 'config.json'))
    .filter((f) => fs.existsSync(f) && fs.statSync(f).isFile());
  return [input, ...sib.map((f) => path.join(dir, f)), ...configs];
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [dir];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** The item's cache key: edgec version, target and options, and the sha256 of every input file. */
export function itemKey(item: BuildItem, configFile: string): string {
  const dir = path.dirname(path.resolve(configFile));
  const o = { ...item.options } as Record<string, unknown>;
  delete o.out;
  delete o.calibration; // its files are hashed below
  const files = item.inputs.map((f) => {
    const p = path.resolve(dir, f);
    return [f, fs.existsSync(p) && fs.statSync(p).isFile() ? sha256File(p) : 'missing'];
  });
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify({ edgec: toolVersion(), id: item.id, options: sortKeys(o), files }));
  return h.digest('hex');
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .filter(([, x]) => x !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, x]) => [k, sortKeys(x)]),
    );
  return v;
}

export function parseShard(s: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s);
  if (!m || Number(m[1]) < 1 || Number(m[1]) > Number(m[2])) throw new InputError(`--shard '${s}' is not i/n with 1 <= i <= n`);
  return { index: Number(m[1]), count: Number(m[2]) };
}

/** Shard i of n: items i-1, i-1+n, ... of the sorted list (any machine computes the same split). */
export function shardItems<T>(items: T[], shard?: { index: number; count: number }): T[] {
  return shard ? items.filter((_, k) => k % shard.count === shard.index - 1) : items;
}

const recordFile = (out: string, id: string) => path.join(out, STATE, `${id.replace('/', '--')}.json`);

function readRecord(out: string, id: string): ItemRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(recordFile(out, id), 'utf8')) as ItemRecord;
  } catch {
    return undefined;
  }
}

/** The artifact a record describes is still there, with the sizes its manifest lists. */
function artifactIntact(dir: string): boolean {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { files: { path: string; bytes: number }[] };
    return m.files.every((f) => fs.statSync(path.join(dir, f.path)).size === f.bytes);
  } catch {
    return false;
  }
}

export interface BuildRunOptions {
  only?: string[];
  shard?: { index: number; count: number };
  progress?: Progress;
}

export async function build(configFile: string, o: BuildRunOptions = {}): Promise<BuildResult> {
  const cfg = loadBuildConfig(configFile);
  const all = buildItems(cfg, configFile, o.only);
  const items = shardItems(all, o.shard);
  const out = path.resolve(path.dirname(path.resolve(configFile)), cfg.out ?? 'edgec-out');
  fs.mkdirSync(path.join(out, STATE), { recursive: true });
  const outcomes: BuildOutcome[] = [];
  for (const [k, item] of items.entries()) {
    o.progress?.('build', k, items.length, item.id);
    const t0 = performance.now();
    const key = itemKey(item, configFile);
    const prev = readRecord(out, item.id);
    if (prev?.key === key && (prev.summary ? artifactIntact(item.out) : true)) {
      outcomes.push({ record: prev, status: 'cached', ms: Math.round(performance.now() - t0) });
      continue;
    }
    const base = { id: item.id, model: item.model, target: item.target, key };
    let record: ItemRecord;
    let status: BuildOutcome['status'];
    try {
      fs.mkdirSync(path.dirname(item.out), { recursive: true });
      const r = await compile(item.input, { ...item.options, progress: o.progress });
      record = { ...base, passed: true, summary: stripMs(artifactSummary(r)) };
      status = 'built';
    } catch (e) {
      if (e instanceof CheckError) {
        const partial = (e as { result?: CompileResult }).result;
        record = {
          ...base,
          passed: false,
          error: e.message.split('\n')[0],
          ...(e.details.length ? { details: e.details.slice(0, 20) } : {}),
          ...(partial ? { summary: stripMs(artifactSummary(partial)) } : {}),
        };
        status = 'failed';
      } else if (e instanceof InputError) {
        // Not cached: the fix is usually outside the hashed inputs (a missing file, a bad option).
        outcomes.push({
          record: { ...base, passed: false, error: e.message.split('\n')[0] },
          status: 'input-error',
          ms: Math.round(performance.now() - t0),
        });
        fs.rmSync(recordFile(out, item.id), { force: true });
        continue;
      } else throw e;
    }
    writeJsonAtomic(recordFile(out, item.id), record);
    outcomes.push({ record, status, ms: Math.round(performance.now() - t0) });
  }
  o.progress?.('build', items.length, items.length);
  const summary: BuildSummary = {
    tool: { name: 'edgec', version: toolVersion() },
    ...(o.shard ? { shard: `${o.shard.index}/${o.shard.count}` } : {}),
    items: outcomes.map((x) => x.record),
    passed: outcomes.every((x) => x.record.passed),
  };
  const summaryFile = o.shard
    ? path.join(out, `build-summary.shard-${o.shard.index}-of-${o.shard.count}.json`)
    : path.join(out, 'build-summary.json');
  writeJsonAtomic(summaryFile, summary);
  if (!o.shard) writeIndex(out, summary);
  return { out, summaryFile, summary, outcomes, exitCode: exitCode(summary.items, outcomes) };
}

/** Join the shard summaries gathered in the build folder into build-summary.json and index.html
 * (the shard files are consumed). Every shard 1..n of one split must be there. */
export function mergeShards(configFile: string): BuildResult {
  const cfg = loadBuildConfig(configFile);
  const out = path.resolve(path.dirname(path.resolve(configFile)), cfg.out ?? 'edgec-out');
  const files = fs.existsSync(out) ? fs.readdirSync(out).filter((f) => /^build-summary\.shard-\d+-of-\d+\.json$/.test(f)) : [];
  if (!files.length) throw new InputError("no build-summary.shard-I-of-N.json to merge (copy every shard's build folder here first)", out);
  const counts = new Set(files.map((f) => Number(/-of-(\d+)/.exec(f)![1])));
  if (counts.size > 1)
    throw new InputError(`shard summaries of different splits (${[...counts].map((n) => `of ${n}`).join(', ')}); keep one split`, out);
  const n = [...counts][0]!;
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((i) => !files.includes(`build-summary.shard-${i}-of-${n}.json`));
  if (missing.length)
    throw new InputError(
      `shard${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${n}`).join(', ')} missing: run them and copy their build folders here`,
      out,
    );
  const records = files.flatMap((f) => (JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')) as BuildSummary).items);
  const want = buildItems(cfg, configFile).map((i) => i.id);
  const have = new Set(records.map((r) => r.id));
  const absent = want.filter((id) => !have.has(id));
  if (absent.length) throw new InputError(`the shards do not cover ${absent.join(', ')} (built with another config?)`, out);
  records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const summary: BuildSummary = { tool: { name: 'edgec', version: toolVersion() }, items: records, passed: records.every((r) => r.passed) };
  const summaryFile = path.join(out, 'build-summary.json');
  writeJsonAtomic(summaryFile, summary);
  writeIndex(out, summary);
  for (const f of files) fs.rmSync(path.join(out, f));
  return {
    out,
    summaryFile,
    summary,
    outcomes: records.map((record) => ({ record, status: record.passed ? 'cached' : 'failed', ms: 0 })),
    exitCode: exitCode(records, []),
  };
}

function exitCode(records: ItemRecord[], outcomes: BuildOutcome[]): number {
  if (outcomes.some((x) => x.status === 'input-error')) return 2;
  return records.every((r) => r.passed) ? 0 : 1;
}

function stripMs(s: ArtifactSummary): Omit<ArtifactSummary, 'ms'> {
  const { ms: _ms, ...rest } = s;
  return rest;
}

function writeIndex(out: string, summary: BuildSummary): void {
  const reports = Object.fromEntries(
    summary.items.map((r) => {
      const dir = path.join(out, ...r.id.split('/'));
      let manifest: unknown;
      try {
        manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
      } catch {
        manifest = undefined;
      }
      return [r.id, manifest];
    }),
  );
  writeAtomic(path.join(out, 'index.html'), buildIndexHtml(summary, reports as Record<string, never>));
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeJson(tmp, value);
  fs.renameSync(tmp, file);
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
