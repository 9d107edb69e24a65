// `npm run peer [-- DIR] [--json FILE] [--only NAME]`: onnxruntime's own fusion-test graphs as a peer
// suite. For each graph in DIR/expected.json (default $EDGEC_ORT_FUSION or ../shared/ort-fusion): load
// it, run edgec's default optimize pipeline, count the fused ops and compare with what onnxruntime's
// test expects (Attention, MultiHeadAttention, GroupQueryAttention and PackedAttention are one
// family), and run the graph before and after in onnxruntime on the stored inputs. Not part of
// `npm test`: a fresh clone has no ../shared.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AttrType, DataType, loadModel, loadTensorFile, saveModel, Tensor, type Model, type Value } from '../ir/index.js';
import { parsePipeline, runPipeline, type StepReport } from '../passes/manager.js';
import { DEFAULT_PIPELINE } from '../passes/pipelines.js';
import { runModel, compareTensors } from '../runtime/ort.js';

const ATTENTION = new Set(['Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'PackedAttention']);
/** Left out on purpose (see the folder's README): BERT-only, not run by the WebGPU EP. */
const EXCLUDED = new Set(['EmbedLayerNormalization']);
const family = (op: string) => (ATTENTION.has(op) ? 'Attention*' : op);
const ROTARY_MHA =
  "onnxruntime's own optimizer makes no MultiHeadAttention here either (expected.json's ort_reference_opt_level0: RotaryEmbedding=2):" +
  " the expectation is the test's hand-drawn fused graph, which its assertTrue(str, str) never compares, and the source is not a" +
  ' valid model (q reshaped to 3 dims for a [B, S, N, D] view, Transpose without perm, index constants declared float), so no' +
  ' fusion can be proven on it';
/** Where onnxruntime's expectation is wrong, or rests on what edgec deliberately does not do: per graph, the
 * families concerned and the reason (printed). Those families' misses there are not counted as misses. */
interface Deviation {
  families: string[];
  reason: string;
}
const dev = (families: string[], reason: string): Deviation => ({ families, reason });
const DEVIATIONS: Record<string, Deviation> = {
  ...Object.fromEntries(
    [
      'simplified_layernorm_add_idx0',
      'simplified_layernorm_add_idx1',
      'simplified_layernorm_gather_idx1',
      'simplified_layernorm_graph_input',
    ].map((m) => [
      m,
      dev(
        ['SimplifiedLayerNormalization'],
        'ReduceMean without axes averages over every dim: not an RMSNorm over the last axis, so edgec leaves it (the _axes_fixed twin is the real one)',
      ),
    ]),
  ),
  ...Object.fromEntries(
    ['rotary_mha_70b_distributed_merged', 'rotary_mha_merged', 'rotary_mha_no_past', 'rotary_mha_past'].map((m) => [
      m,
      dev(['Attention*'], ROTARY_MHA),
    ]),
  ),
  rotary_mha_llama2_msft: dev(
    ['Attention*', 'RotaryEmbedding'],
    `${ROTARY_MHA}; and its q and k projections have the same weights (all 1.0) and cos/sin caches, so cleanup's common-subexpression` +
      ' elimination computes the two RotaryEmbedding nodes once (RotaryEmbedding=1)',
  ),
  gpt2_megatron: dev(
    ['Attention*', 'SkipLayerNormalization', 'LayerNormalization'],
    'Megatron masks the scores as s * m - 10000 * (1 - m) with m a float graph input: an additive bias only for a 0/1 mask, which' +
      ' nothing in the graph guarantees (onnxruntime assumes it), so edgec leaves the attention unfused, and the SkipLayerNormalization' +
      ' after it then has no provable [B, S, H] residual (one LayerNormalization more)',
  ),
};
/** Known causes of an ill-conditioned graph (see the README's peer section). */
const CONDITIONING: Record<string, string> = Object.fromEntries(
  ['gpt2_attention', 'gpt2_attention_reverse_add'].map((m) => [
    m,
    'every weight is 1.0: the output is LayerNorm(c + x) with c ~ 4161 the same across the row and std(x) ~ 1.5, which fp32 resolves' +
      " only to ulp(4161); onnxruntime's SkipLayerNormalization CPU kernel (variance as E[x^2] - E[x]^2) is less accurate there than Add +" +
      ' LayerNormalization, while the fused attention alone is bit-identical',
  ]),
);
/** fp32 tolerance for "outputs equal": |a - b| <= ATOL + RTOL * |a| everywhere. */
const ATOL = 1e-4,
  RTOL = 1e-3;

interface Entry {
  expected?: Record<string, number>;
  onnxruntime_node?: { runs?: boolean };
}

export interface PeerRow {
  model: string;
  expected: Record<string, number>;
  produced: Record<string, number>;
  /** Families whose count differs, as 'fam exp->got'. */
  misses: string[];
  met: boolean | null;
  /** Why edgec deliberately differs from onnxruntime's expectation here, where it does. */
  deviation?: string;
  /** Families that differ deliberately, as 'fam exp->got' (not in `misses`). */
  deviated: string[];
  error?: string;
  /** 'equal' | 'ILL-CONDITIONED ...' | 'DIFFER ...' | 'n/a (why)' */
  check: string;
  /** Why the graph is ill-conditioned, where known. */
  conditioning?: string;
  skipped: string[];
}

function countFamilies(model: Model, fused: Set<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const g of model.graph.allGraphs()) {
    for (const n of g.nodes) {
      if (!fused.has(n.opType)) continue;
      const f = family(n.opType);
      out[f] = (out[f] ?? 0) + 1;
    }
  }
  return out;
}

function familyExpectation(exp: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [op, n] of Object.entries(exp)) {
    if (EXCLUDED.has(op)) continue;
    const f = family(op);
    out[f] = (out[f] ?? 0) + n;
  }
  // An EmbedLayerNormalization onnxruntime would make stays a LayerNormalization here.
  const embed = exp.EmbedLayerNormalization ?? 0;
  if (embed) out.LayerNormalization = (out.LayerNormalization ?? 0) + embed;
  return out;
}

function close(ref: Tensor, got: Tensor): { ok: boolean; maxAbs: number } {
  const c = compareTensors(ref, got);
  if (!c.shapeMatch) return { ok: false, maxAbs: Infinity };
  const a = ref.toNumbers(),
    b = got.toNumbers();
  let ok = true;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (x === y || (Number.isNaN(x) && Number.isNaN(y))) continue;
    if (!(Math.abs(x - y) <= ATOL + RTOL * Math.abs(x))) ok = false;
  }
  return { ok, maxAbs: c.maxAbsError };
}

async function runOne(dir: string, name: string, entry: Entry, fusedOps: Set<string>, tmp: string): Promise<PeerRow> {
  const expected = familyExpectation(entry.expected ?? {});
  const row: PeerRow = { model: name, expected, produced: {}, misses: [], deviated: [], met: null, check: 'n/a', skipped: [] };
  const file = path.join(dir, `${name}.onnx`);
  let model: Model;
  try {
    model = loadModel(file);
  } catch (e) {
    row.error = `load: ${(e as Error).message}`;
    row.met = false;
    return row;
  }
  let reports: StepReport[];
  try {
    reports = await runPipeline(model, parsePipeline(DEFAULT_PIPELINE), { modelDir: dir });
  } catch (e) {
    row.error = `optimize: ${(e as Error).message}`;
    row.met = false;
    return row;
  }
  row.skipped = reports.filter((r) => r.pass.startsWith('fuse')).flatMap((r) => (r.stats.skipped ?? []).map((s) => `${r.pass}: ${s}`));
  row.produced = countFamilies(model, fusedOps);
  // An EmbedLayerNormalization onnxruntime would make (left out here) may come out as a SkipLayerNormalization
  // over the embedding sum: counted with LayerNormalization, as familyExpectation counts the Embed.
  const embed = entry.expected?.EmbedLayerNormalization ?? 0;
  const extraSkip = Math.min(embed, Math.max(0, (row.produced.SkipLayerNormalization ?? 0) - (expected.SkipLayerNormalization ?? 0)));
  const counted = { ...row.produced };
  if (extraSkip) {
    counted.SkipLayerNormalization = (counted.SkipLayerNormalization ?? 0) - extraSkip;
    counted.LayerNormalization = (counted.LayerNormalization ?? 0) + extraSkip;
  }
  for (const [f, n] of Object.entries(expected)) {
    // A test that asserts on LayerNormalization but not on its Skip form ran without (or ignores)
    // skip fusion: a residual Add folded into the norm still counts as that norm.
    const skip = `Skip${f}`;
    const absorbed = f.endsWith('LayerNormalization') && !(skip in expected) ? (counted[skip] ?? 0) : 0;
    const got = (counted[f] ?? 0) + absorbed;
    if (got !== n) (DEVIATIONS[name]?.families.includes(f) ? row.deviated : row.misses).push(`${f} ${n}->${got}`);
  }
  row.met = entry.expected ? row.misses.length === 0 : null;
  if (row.deviated.length) {
    row.deviation = DEVIATIONS[name]!.reason;
    row.met = null;
  }

  const data = path.join(dir, name, 'test_data_set_0');
  if (!entry.onnxruntime_node?.runs) {
    row.check = 'n/a (onnxruntime cannot run the source)';
    return row;
  }
  if (!fs.existsSync(data)) {
    row.check = 'n/a (no test data)';
    return row;
  }
  const out = path.join(tmp, `${name}.opt.onnx`);
  try {
    saveModel(model, out);
    const inputs = readInputs(data, loadModel(file));
    const ref = await runModel(file, inputs);
    const got = await runModel(out, inputs);
    let ok = true,
      worst = 0;
    for (const [k, t] of Object.entries(ref)) {
      const g = got[k];
      if (!g) {
        ok = false;
        worst = Infinity;
        continue;
      }
      const c = close(t, g);
      ok &&= c.ok;
      worst = Math.max(worst, c.maxAbs);
    }
    row.check = ok ? `equal (max abs ${worst.toExponential(1)})` : await judgeDifference(file, inputs, ref, got, worst);
    if (row.check.startsWith('ILL')) row.conditioning = CONDITIONING[name];
  } catch (e) {
    row.check = `RUN FAILED: ${(e as Error).message.split('\n')[0]!.slice(0, 160)}`;
  }
  return row;
}

/**
 * Outputs outside the fp32 tolerance: judged against the source evaluated in float64 (every float tensor,
 * Cast and Constant of the graph made double; onnxruntime runs it). When the fp32 source itself is outside
 * the tolerance of that exact result, fp32 cannot resolve the graph and the tolerance check cannot judge a
 * fusion: ILL-CONDITIONED, with both distances from the exact result (not counted as equal). Otherwise, or
 * when the graph has an op onnxruntime cannot run in float64, the outputs DIFFER.
 */
async function judgeDifference(
  file: string,
  inputs: Record<string, Tensor>,
  ref: Record<string, Tensor>,
  got: Record<string, Tensor>,
  worst: number,
): Promise<string> {
  const differ = `DIFFER (max abs ${worst.toExponential(2)}`;
  let exact: Record<string, Tensor>;
  try {
    exact = await runFloat64(file, inputs);
  } catch (e) {
    return `${differ}; no float64 reference: ${(e as Error).message.split('\n')[0]!.slice(0, 80)})`;
  }
  let srcOff = false,
    srcErr = 0,
    fusedErr = 0;
  for (const [k, r] of Object.entries(ref)) {
    const x = exact[k];
    if (!x || r.dtype !== DataType.FLOAT) continue;
    const e = x.toNumbers(),
      a = r.toNumbers(),
      b = got[k]?.toNumbers() ?? new Float64Array(a.length).fill(NaN);
    for (let i = 0; i < e.length; i++) {
      const tol = ATOL + RTOL * Math.abs(e[i]!);
      if (!(Math.abs(a[i]! - e[i]!) <= tol)) srcOff = true;
      srcErr = Math.max(srcErr, Math.abs(a[i]! - e[i]!));
      fusedErr = Math.max(fusedErr, Math.abs(b[i]! - e[i]!));
    }
  }
  const vs = `fp32 source vs float64 ${srcErr.toExponential(2)}, fused vs float64 ${fusedErr.toExponential(2)}`;
  return srcOff ? `ILL-CONDITIONED (max abs ${worst.toExponential(2)}; ${vs})` : `${differ}; ${vs})`;
}

/** The source run with every float tensor made float64 (initializers, inputs, Cast targets, Constant values). */
async function runFloat64(file: string, inputs: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const m = loadModel(file);
  const toDouble = (t: Tensor) => Tensor.fromNumbers(t.name, DataType.DOUBLE, t.dims, t.toNumbers());
  for (const g of m.graph.allGraphs()) {
    const seen = new Set<Value>();
    const fix = (v: Value | null) => {
      if (!v || seen.has(v)) return;
      seen.add(v);
      if (v.initializer?.dtype === DataType.FLOAT) g.setInitializer(v, toDouble(v.initializer));
      else if (v.type?.elemType === DataType.FLOAT) v.type = { ...v.type, elemType: DataType.DOUBLE };
    };
    [...g.inputs, ...g.outputs].forEach(fix);
    for (const n of g.nodes) {
      n.inputs.forEach(fix);
      n.outputs.forEach(fix);
      for (const a of n.attributes) {
        if (n.opType === 'Cast' && a.name === 'to' && a.type === AttrType.INT && Number(a.value) === DataType.FLOAT)
          n.setAttr({ ...a, value: DataType.DOUBLE });
        if (a.type === AttrType.TENSOR && a.value.dtype === DataType.FLOAT) n.setAttr({ ...a, value: toDouble(a.value) });
      }
    }
  }
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-peer64-')), 'f64.onnx');
  try {
    saveModel(m, out);
    const feeds = Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, t.dtype === DataType.FLOAT ? toDouble(t) : t]));
    return await runModel(out, feeds);
  } finally {
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  }
}

/** input_K.pb named by the model's K-th graph input (outputs are not read: some are sequences). */
function readInputs(dir: string, model: Model): Record<string, Tensor> {
  const names = model.graph.inputs.filter((v) => !v.initializer).map((v) => v.name);
  const out: Record<string, Tensor> = {};
  names.forEach((n, k) => {
    const f = path.join(dir, `input_${k}.pb`);
    if (!fs.existsSync(f)) return;
    const t = loadTensorFile(f);
    t.name = n;
    out[n] = t;
  });
  return out;
}

function fmtCounts(c: Record<string, number>): string {
  return (
    Object.entries(c)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k.replace('LayerNormalization', 'LN')}=${v}`)
      .join(' ') || '-'
  );
}

export async function peerSuite(dir: string, only?: string): Promise<PeerRow[]> {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as {
    fused_op_types: string[];
    models: Record<string, Entry>;
  };
  const fusedOps = new Set(meta.fused_op_types);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-peer-'));
  const rows: PeerRow[] = [];
  try {
    for (const [name, entry] of Object.entries(meta.models)) {
      if (only && !name.includes(only)) continue;
      rows.push(await runOne(dir, name, entry, fusedOps, tmp));
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
}

export function formatPeer(rows: PeerRow[], verbose = false): string {
  const lines: string[] = [];
  const w = Math.max(...rows.map((r) => r.model.length), 5);
  lines.push(`${'model'.padEnd(w)}  met  ${'expected'.padEnd(44)}  ${'produced'.padEnd(44)}  outputs`);
  for (const r of rows) {
    const met = r.deviation ? 'dev' : r.met === null ? ' - ' : r.met ? 'yes' : 'NO ';
    lines.push(
      `${r.model.padEnd(w)}  ${met}  ${fmtCounts(r.expected).padEnd(44)}  ${(r.error ?? fmtCounts(r.produced)).padEnd(44)}  ${r.check}`,
    );
    if (verbose && r.met === false) for (const s of r.skipped) lines.push(`${''.padEnd(w)}       ${s}`);
  }
  // Per family: graphs that expect the family, and how many of those get exactly the expected count; a
  // family that differs deliberately in a graph is counted apart.
  const fam: Record<string, { want: number; met: number; dev: number }> = {};
  for (const r of rows) {
    if (r.met === null && !r.deviation) continue;
    for (const f of Object.keys(r.expected)) {
      const s = (fam[f] ??= { want: 0, met: 0, dev: 0 });
      if (r.deviated.some((m) => m.startsWith(`${f} `))) s.dev++;
      else {
        s.want++;
        if (!r.error && !r.misses.some((m) => m.startsWith(`${f} `))) s.met++;
      }
    }
  }
  const withExp = rows.filter((r) => r.met !== null);
  const devs = rows.filter((r) => r.deviation);
  const ran = rows.filter((r) => ['equal', 'DIFFER', 'RUN', 'ILL'].some((p) => r.check.startsWith(p)));
  const ill = rows.filter((r) => r.check.startsWith('ILL'));
  lines.push('');
  lines.push('per family (graphs expecting it: exact count met / total, and deliberate deviations)');
  for (const [f, s] of Object.entries(fam).sort(([a], [b]) => a.localeCompare(b)))
    lines.push(`  ${f.padEnd(34)} ${s.met} / ${s.want}${s.dev ? `  (+${s.dev} dev)` : ''}`);
  lines.push('');
  lines.push(
    `expectation met: ${withExp.filter((r) => r.met).length} / ${withExp.length} graphs with one` +
      ` (of ${withExp.length + devs.length} graphs with an expectation, ${devs.length} are deliberate deviations, listed below)` +
      ` (EmbedLayerNormalization is left out on purpose and may stay a LayerNormalization or become a SkipLayerNormalization of the embedding sum)`,
  );
  for (const r of devs) lines.push(`deliberately not as onnxruntime expects (dev): ${r.model} (${r.deviated.join(', ')}): ${r.deviation}`);
  lines.push(
    `outputs equal within fp32 tolerance (atol ${ATOL}, rtol ${RTOL}) in onnxruntime: ${ran.filter((r) => r.check.startsWith('equal')).length} / ${ran.length} graphs it runs` +
      (ill.length
        ? `; ${ill.length} ill-conditioned (the fp32 source itself is outside that tolerance of its float64 evaluation, so the check` +
          ' cannot judge the fusion there; not counted as equal)'
        : ''),
  );
  for (const r of ill) lines.push(`ill-conditioned: ${r.model}: ${r.conditioning ?? 'cause not analysed'}`);
  lines.push(
    `load or optimize failures: ${rows.filter((r) => r.error).length}${rows
      .filter((r) => r.error)
      .map((r) => `\n  ${r.model}: ${r.error}`)
      .join('')}`,
  );
  return `${lines.join('\n')}\n`;
}

async function main() {
  const args = process.argv.slice(2);
  const flag = (k: string) => {
    const i = args.indexOf(k);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const json = flag('--json');
  const only = flag('--only');
  const verbose = args.includes('-v') ? (args.splice(args.indexOf('-v'), 1), true) : false;
  const dir = path.resolve(args[0] ?? process.env.EDGEC_ORT_FUSION ?? path.join('..', 'shared', 'ort-fusion'));
  if (!fs.existsSync(path.join(dir, 'expected.json'))) {
    console.log(`peer suite skipped: no onnxruntime fusion-test graphs at ${dir} (give the folder as an argument or in EDGEC_ORT_FUSION)`);
    return;
  }
  const rows = await peerSuite(dir, only);
  process.stdout.write(formatPeer(rows, verbose));
  if (json) fs.writeFileSync(json, JSON.stringify(rows, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
