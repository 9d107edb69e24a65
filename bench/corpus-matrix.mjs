// Corpus x target matrix: every fixtures/export model compiled for webgpu, mobile and npu without
// --allow-fallback, each emitted model verified on the exporter's test sets (static npu variants on
// the sets whose shapes they were built for), plus task figures: top-1 of the trained classifiers
// (fp32 vs artifact) and the text detector's probability-map IoU at 0.5. Run after `npx tsc`:
//   node bench/corpus-matrix.mjs [model ...]      (prints a markdown table; --json for JSON)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../dist/ir/index.js';
import { loadTestDataSet, runModel, compareTensors } from '../dist/runtime/ort.js';
import { compile } from '../dist/targets/compile.js';
import { derivedInputs } from '../dist/targets/position-ids.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'fixtures', 'export');
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const models = args.length ? args : fs.readdirSync(ROOT).filter((d) => fs.existsSync(path.join(ROOT, d, 'model.onnx'))).sort();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-matrix-'));
const sets = (m) => fs.readdirSync(path.join(ROOT, m)).filter((d) => /^test_data_set_\d+$/.test(d)).sort();

/** npu options: static dims from one test set (the KV decoder: the 8-token chunk set as prefill). */
function npuOptions(m, src) {
  const meta = JSON.parse(fs.readFileSync(path.join(ROOT, m, 'meta.json'), 'utf8'));
  const s = sets(m);
  const kv = src.graph.inputs.some((v) => /past/.test(v.name));
  const verifySet = kv ? s[2] : s[0];
  const data = loadTestDataSet(path.join(ROOT, m, verifySet), src).inputs;
  const fix = {};
  for (const v of src.graph.inputs) (v.type?.shape ?? []).forEach((d, i) => { if (typeof d === 'string' && data[v.name]) fix[d] = data[v.name].dims[i]; });
  const o = { fix, calibration: path.join(ROOT, m, s.find((x) => x !== verifySet) ?? verifySet) };
  if (kv) { const seq = data.input_ids.dims[1], total = data.attention_mask.dims[1]; Object.assign(o, { prefillChunk: seq, context: total }); delete fix.sequence_length; delete fix.past_sequence_length; delete fix.total_sequence_length; }
  else if (/decoder/.test(m)) { o.context = data.input_ids.dims[1]; delete fix.sequence_length; }
  const img = Object.values(data).find((t) => t.dims.length === 4);
  if (img) o.imageSizes = [`${img.dims[3]}x${img.dims[2]}`];
  return { o, meta };
}

function top1(logits, labels) {
  const [n, c] = [logits.dims[0], logits.dims.at(-1)], x = logits.toFloat32();
  let ok = 0;
  for (let i = 0; i < n; i++) { let b = 0; for (let k = 1; k < c; k++) if (x[i * c + k] > x[i * c + b]) b = k; if (b === labels[i]) ok++; }
  return ok / n;
}

function iou(a, b) {
  const x = a.toFloat32(), y = b.toFloat32();
  let i = 0, u = 0;
  for (let k = 0; k < x.length; k++) { const p = x[k] > 0.5, q = y[k] > 0.5; if (p && q) i++; if (p || q) u++; }
  return u ? i / u : 1;
}

const rows = [];
for (const m of models) {
  const srcFile = path.join(ROOT, m, 'model.onnx');
  const src = loadModel(srcFile);
  for (const target of ['webgpu', 'mobile', 'npu']) {
    const row = { model: m, target, compiled: false, verified: 0, passed: 0, minCos: null, task: '', error: '' };
    rows.push(row);
    const extra = target === 'npu' ? npuOptions(m, src) : { o: {}, meta: JSON.parse(fs.readFileSync(path.join(ROOT, m, 'meta.json'), 'utf8')) };
    const out = path.join(work, `${m}-${target}`);
    try {
      const t0 = performance.now();
      const r = await compile(srcFile, { target, out, verify: false, ...extra.o });
      row.ms = Math.round(performance.now() - t0);
      row.compiled = true;
      row.bytes = r.manifest.files.reduce((s, f) => s + f.bytes, 0);
      row.srcBytes = fs.readdirSync(path.join(ROOT, m)).filter((f) => /\.onnx(\.data)?$/.test(f)).reduce((s, f) => s + fs.statSync(path.join(ROOT, m, f)).size, 0);
      const task = [];
      for (const e of r.manifest.models) {
        const cand = loadModel(path.join(out, e.file));
        for (const [si, set] of sets(m).entries()) {
          const data = loadTestDataSet(path.join(ROOT, m, set), src);
          const fits = cand.graph.inputs.filter((v) => !v.initializer && data.inputs[v.name]).every((v) => (v.type?.shape ?? []).every((d, i) => typeof d !== 'number' || d === data.inputs[v.name].dims[i]));
          const derive = derivedInputs(src, cand);
          const feeds = { ...data.inputs, ...(derive ? derive(data.inputs) : {}) };
          if (!fits || cand.graph.inputs.some((v) => !v.initializer && !feeds[v.name])) continue;
          const ref = await runModel(srcFile, data.inputs);
          const got = await runModel(path.join(out, e.file), Object.fromEntries(cand.graph.inputs.filter((v) => !v.initializer).map((v) => [v.name, feeds[v.name]])));
          let minCos = 1;
          for (const k of Object.keys(ref)) minCos = Math.min(minCos, compareTensors(ref[k], got[k]).cosine);
          const threshold = e.verification?.threshold ?? (target === 'npu' ? 0.99 : 0.99);
          row.verified++;
          if (minCos >= 0.99) row.passed++;
          row.minCos = row.minCos === null ? minCos : Math.min(row.minCos, minCos);
          const labels = extra.meta.test_labels?.[si];
          const out0 = Object.keys(ref)[0];
          if (labels && labels.length === ref[out0].dims[0]) task.push(`top1 ${(100 * top1(ref[out0], labels)).toFixed(1)}->${(100 * top1(got[out0], labels)).toFixed(1)} (n=${labels.length})`);
          if (m === 'textdet') task.push(`IoU@0.5 ${iou(ref[out0], got[out0]).toFixed(3)}`);
          void threshold;
        }
      }
      row.task = task.join('; ');
    } catch (err) {
      row.error = String(err.message ?? err).split('\n')[0].slice(0, 160);
    }
    console.error(`${m} ${target}: ${row.compiled ? `compiled, ${row.passed}/${row.verified} test sets cos>=0.99, min cos ${row.minCos?.toFixed(5)}` : row.error} ${row.task}`);
  }
}
fs.rmSync(work, { recursive: true, force: true });
if (process.argv.includes('--json')) console.log(JSON.stringify(rows, null, 1));
else {
  console.log('| model | target | compiles | test sets cos>=0.99 | min cos | size vs source | task |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.model} | ${r.target} | ${r.compiled ? 'yes' : `NO: ${r.error}`} | ${r.passed}/${r.verified} | ${r.minCos?.toFixed(5) ?? '-'} | ${r.bytes ? (r.bytes / r.srcBytes).toFixed(2) : '-'} | ${r.task} |`);
}
