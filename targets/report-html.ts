// report.html: the manifest (plus what compile measured) as one self-contained page. Charts are
// drawn by Apache ECharts' server-side renderer into inline SVG at compile time: no script, no
// network, and the same compile gives the same bytes (no times, no paths).
import { createRequire } from 'node:module';
import { dtypeName, type Model } from '../ir/index.js';
import { opKey } from '../ir/summary.js';
import { modelFilePaths, type Manifest } from './manifest.js';
import { planToSvg } from './plan/svg.js';
import type { TilePlan } from './plan/types.js';

const esc = (s: unknown) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function shape(s: (number | string | null)[] | null): string {
  return s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?';
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024,
    i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${u[i]}`;
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

// Loaded on first use (its single-file bundle): commands that write no report do not pay for it.
let lib: typeof import('echarts') | undefined;
const echartsLib = () => (lib ??= createRequire(import.meta.url)('echarts') as typeof import('echarts'));

/** One chart as inline SVG. */
function chart(option: Record<string, unknown>, width = 580, height = 300): string {
  const c = echartsLib().init(null, null, { renderer: 'svg', ssr: true, width, height });
  c.setOption({ animation: false, color: PALETTE, textStyle: { fontFamily: 'system-ui, sans-serif' }, ...option });
  // zrender numbers instances and style classes process-wide: renumber per chart so the same
  // compile gives the same bytes whatever ran before it in the process.
  const ids = new Map<string, string>();
  const n = ++charted;
  const svg = c.renderToSVGString().replace(/zr\d+-[A-Za-z]+-\d+/g, (t) => ids.get(t) ?? (ids.set(t, `ec${n}-${ids.size}`), ids.get(t)!));
  c.dispose();
  return `<div class="chart">${svg}</div>`;
}

let charted = 0;

/** Long labels keep their distinctive end: `…` + the last `n` characters. */
const tail = (t: string, n = 34) => (t.length > n ? `\u2026${t.slice(t.length - n + 1)}` : t);

/** Horizontal bars, one series per stack key. Label room is computed here: the server-side
 * renderer has no font metrics, so ECharts' containLabel would clip long names. */
function hbars(
  title: string,
  categories: string[],
  series: { name: string; data: number[] }[],
  unit: (v: number) => string,
  opts: { height?: number; markLine?: number; min?: number; max?: number } = {},
): string {
  const cats = categories.map((c) => tail(c));
  const legend = series.length > 1;
  const height = opts.height ?? Math.max(160, 70 + cats.length * 24 + (legend ? 30 : 0));
  const left = Math.min(250, 12 + Math.max(...cats.map((c) => c.length)) * 6.6);
  return chart(
    {
      title: { text: title, left: 'center', textStyle: { fontSize: 14 } },
      legend: legend ? { bottom: 0, type: 'scroll', itemGap: 24, formatter: (n: string) => tail(n, 18) } : undefined,
      grid: { left, right: 70, top: 34, bottom: legend ? 56 : 28, containLabel: false },
      xAxis: {
        type: 'value',
        min: opts.min,
        max: opts.max,
        splitNumber: 3,
        axisLabel: { formatter: (v: number) => unit(v), hideOverlap: true },
      },
      yAxis: { type: 'category', data: cats, inverse: true, axisLabel: { fontSize: 11 } },
      series: series.map((s, i) => ({
        name: tail(s.name, 18),
        type: 'bar',
        stack: legend ? 'all' : undefined,
        data: s.data,
        barMaxWidth: 18,
        label: !legend ? { show: true, position: 'right', fontSize: 11, formatter: (p: { value: number }) => unit(p.value) } : undefined,
        ...(i === 0 && opts.markLine !== undefined
          ? {
              markLine: {
                symbol: 'none',
                data: [{ xAxis: opts.markLine }],
                label: { formatter: `threshold ${opts.markLine}`, position: 'insideEndTop' },
                lineStyle: { color: '#e15759', type: 'dashed' },
              },
            }
          : {}),
      })),
    },
    580,
    height,
  );
}

/** What compile measured beside the manifest (report only; nothing here goes into manifest.json). */
export interface ReportContext {
  /** The emitted graphs, by artifact file. */
  models?: { file: string; model: Model }[];
  /** Per sub-model: pass steps (fusion counts), quantization error per layer, check issues. */
  subModels?: {
    name: string;
    steps: { pass: string; counts: Record<string, number>; skipped?: string[] }[];
    layers?: { weight: string; relError: number }[];
    issues: { node: string; op: string; kind: string; reason: string }[];
  }[];
}

type Entry = Manifest['models'][number];

/** Initializer bytes by consuming op type and by dtype. */
function weightBreakdown(models: { model: Model }[]): { byOp: Map<string, number>; byDtype: Map<string, number> } {
  const byOp = new Map<string, number>(),
    byDtype = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const { model } of models) {
    for (const g of model.graph.allGraphs()) {
      for (const t of g.initializers) {
        const v = g.values.get(t.name);
        const op = v?.uses[0] ? opKey(v.uses[0].node).replace('com.microsoft:', '') : 'unused';
        add(byOp, op, t.byteLength);
        add(byDtype, dtypeName(t.dtype), t.byteLength);
      }
    }
  }
  return { byOp, byDtype };
}

const top = (m: Map<string, number>, n: number): [string, number][] => {
  const all = [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  if (all.length <= n) return all;
  return [...all.slice(0, n - 1), ['other', all.slice(n - 1).reduce((s, [, v]) => s + v, 0)]];
};

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;padding:16px 24px;max-width:1232px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0;max-width:100%}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top;text-align:left}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}.ok{background:#e9f7e9}.bad{background:#fde8e8}
.grid{display:flex;flex-wrap:wrap;gap:12px 24px}.chart{flex:0 0 580px}.chart svg{display:block}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600}.badge.ok{color:#1b5e20}.badge.bad{color:#b71c1c}
code{font-size:12px;word-break:break-all}.muted{color:#666}.badtext{color:#b00;font-weight:bold}.wrap{overflow-x:auto}.plan svg{max-width:100%;height:auto}`;

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>${STYLE}</style></head>
<body>
${body}
</body></html>
`;
}

export function reportHtml(m: Omit<Manifest, 'files'>, files: Manifest['files'], ctx: ReportContext = {}): string {
  charted = 0;
  const size = (e: Entry) => {
    const own = modelFilePaths(e);
    return files.filter((f) => own.includes(f.path)).reduce((s, f) => s + f.bytes, 0);
  };
  const ver = m.verification;
  const status = ver.ran
    ? ver.passed
      ? '<span class="badge ok">verification passed</span>'
      : '<span class="badge bad">verification FAILED</span>'
    : '<span class="badge">verification not run</span>';
  const parts: string[] = [];
  parts.push(`<h1>edgec ${esc(m.tool.version)}: ${esc(m.target)} artifact <span class="muted">(${esc(m.profile.name)})</span></h1>`);
  parts.push(
    `<p>${status} &nbsp; ${m.models.length} model files, ${fmtBytes(files.reduce((s, f) => s + f.bytes, 0))} in ${files.length + 1} files</p>`,
  );
  // What the figures rest on, said up front in red when it is not real data or not the target.
  const fallbackCount = m.models.reduce((s, e) => s + (e.fallback?.length ?? 0), 0);
  const synthetic = [...new Set(m.models.filter((e) => e.calibration?.synthetic).map((e) => e.name))];
  if (fallbackCount)
    parts.push(
      `<p class="badtext">--allow-fallback: ${fallbackCount} node(s) cannot run on ${esc(m.target)} and fall back to the CPU (listed under Fused ops and fallbacks)</p>`,
    );
  if (synthetic.length)
    parts.push(`<p class="badtext">${esc(synthetic.join(', '))}: calibrated on synthetic inputs: accuracy on real data unknown</p>`);
  parts.push(
    `<table><tr>${Object.keys(m.options)
      .map((k) => `<th>${esc(k)}</th>`)
      .join('')}</tr><tr>${Object.values(m.options)
      .map((v) => `<td>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</td>`)
      .join('')}</tr></table>`,
  );

  // Sizes.
  const charts: string[] = [];
  const bySub = new Map<string, number>();
  for (const e of m.models) bySub.set(e.file, size(e));
  charts.push(hbars('Size by model file', [...bySub.keys()], [{ name: 'bytes', data: [...bySub.values()] }], fmtBytes));
  if (ctx.models?.length) {
    const { byOp, byDtype } = weightBreakdown(ctx.models);
    const ops = top(byOp, 10),
      dts = top(byDtype, 10);
    charts.push(
      hbars(
        'Weight bytes by consuming op type',
        ops.map(([k]) => k),
        [{ name: 'bytes', data: ops.map(([, v]) => v) }],
        fmtBytes,
      ),
    );
    charts.push(
      hbars(
        'Weight bytes by stored dtype',
        dts.map(([k]) => k),
        [{ name: 'bytes', data: dts.map(([, v]) => v) }],
        fmtBytes,
      ),
    );
  }
  // Node counts by op type, stacked by sub-model.
  // Variants of a sub-model share its graph: count each sub-model once.
  const names = [...new Set(m.models.map((e) => e.name))];
  const firstOf = (n: string) => m.models.find((x) => x.name === n)!;
  const short = (k: string) => k.replace('com.microsoft:', '');
  const opTotals = new Map<string, number>();
  for (const n of names) for (const [k, v] of Object.entries(firstOf(n).ops)) opTotals.set(short(k), (opTotals.get(short(k)) ?? 0) + v);
  const topOps = top(opTotals, 12)
    .map(([k]) => k)
    .filter((k) => k !== 'other');
  const count = (n: string, op: string) =>
    Object.entries(firstOf(n).ops)
      .filter(([k]) => short(k) === op)
      .reduce((s, [, v]) => s + v, 0);
  charts.push(
    hbars(
      'Nodes by op type (top 12)',
      topOps,
      names.map((n) => ({ name: n, data: topOps.map((op) => count(n, op)) })),
      (v) => String(Math.round(v)),
    ),
  );
  parts.push(`<h2>Size</h2><div class="grid">${charts.join('')}</div>`);

  // Quantization error per layer.
  const layers = (ctx.subModels ?? []).flatMap((s) => (s.layers ?? []).map((l) => ({ sub: s.name, name: l.weight, err: l.relError })));
  if (layers.length) {
    const shown = layers.length > 48 ? [...layers].sort((a, b) => b.err - a.err).slice(0, 48) : layers;
    parts.push(
      `<h2>Quantization error per layer</h2><p class="muted">||W - dequant(W)|| / ||W|| per quantized weight${layers.length > shown.length ? ` (the ${shown.length} largest of ${layers.length})` : ''}.</p>`,
    );
    parts.push(
      `<div class="grid">${hbars(
        'Relative weight error, by sub-model',
        shown.map((l) => l.name),
        [...new Set(shown.map((l) => l.sub))].map((sub) => ({
          name: sub,
          data: shown.map((l) => (l.sub === sub ? Number(l.err.toPrecision(4)) : 0)),
        })),
        (v) => v.toFixed(3),
        { height: 100 + shown.length * 18 },
      )}</div>`,
    );
  }

  // Fusions and fallbacks.
  const fusion = new Map<string, Map<string, number>>();
  for (const s of ctx.subModels ?? []) {
    for (const st of s.steps) {
      if (!st.pass.startsWith('fuse-')) continue;
      const made = Object.entries(st.counts).reduce((a, [, v]) => a + v, 0);
      if (!made) continue;
      const row = fusion.get(st.pass) ?? new Map<string, number>();
      row.set(s.name, (row.get(s.name) ?? 0) + made);
      fusion.set(st.pass, row);
    }
  }
  const issues = (ctx.subModels ?? []).flatMap((s) => s.issues.map((i) => ({ model: s.name, ...i })));
  const fallbacks = m.models.flatMap((e) => (e.fallback ?? []).map((f) => ({ file: e.file, ...f })));
  parts.push('<h2>Fused ops and fallbacks</h2>');
  if (fusion.size) {
    const passes = [...fusion.keys()].sort();
    parts.push(
      `<div class="grid">${hbars(
        `Fusions made on ${m.target}`,
        passes,
        names.map((n) => ({ name: n, data: passes.map((p) => fusion.get(p)!.get(n) ?? 0) })),
        (v) => String(Math.round(v)),
      )}</div>`,
    );
  } else parts.push('<p class="muted">No fusion fired (or fusion counts were not recorded).</p>');
  if (issues.length || fallbacks.length) {
    parts.push(
      `<table><tr><th>model</th><th>node</th><th>op</th><th>why it falls back</th></tr>${issues.map((i) => `<tr class="bad"><td>${esc(i.model)}</td><td>${esc(i.node)}</td><td>${esc(i.op)}</td><td>${esc(i.kind)}: ${esc(i.reason)}</td></tr>`).join('')}${fallbacks.map((f) => `<tr class="bad"><td>${esc(f.file)}</td><td>${esc(f.node)}</td><td>${esc(f.op)}</td><td class="badtext">falls back to CPU: ${esc(f.reason)}</td></tr>`).join('')}</table>`,
    );
  } else parts.push(`<p>Every node runs on ${esc(m.target)} (no fallback).</p>`);

  // Verification and task metrics.
  const verified = m.models.filter((e) => e.verification);
  parts.push('<h2>Verification</h2>');
  if (verified.length) {
    const rows = verified.flatMap((e) => e.verification!.outputs.map((o) => ({ e, o })));
    const thr = Math.min(...verified.map((e) => e.verification!.threshold));
    const minCos = Math.min(...rows.map((r) => r.o.cosine));
    parts.push(
      `<div class="grid">${hbars(
        'Cosine to the original, per output',
        rows.map((r) => `${r.e.file}: ${r.o.name}`),
        [{ name: 'cosine', data: rows.map((r) => r.o.cosine) }],
        (v) => v.toFixed(4),
        { markLine: thr, min: Math.max(0, Math.floor(Math.min(minCos, thr) * 100 - 1) / 100), max: 1 },
      )}</div>`,
    );
    parts.push(
      `<table><tr><th>file</th><th>inputs used</th><th>output</th><th class="num">cosine</th><th class="num">max abs error</th><th>threshold</th></tr>${rows.map(({ e, o }, i) => `<tr class="${(e.verification!.judgedBy ? e.verification!.passed : o.cosine >= e.verification!.threshold) ? 'ok' : 'bad'}"><td>${i === 0 || rows[i - 1]!.e !== e ? esc(e.file) : ''}</td><td>${i === 0 || rows[i - 1]!.e !== e ? e.verification!.inputs.map((x) => `${esc(x.name)} ${esc(shape(x.shape))}`).join('<br>') : ''}</td><td>${esc(o.name)}</td><td class="num">${o.cosine}</td><td class="num">${o.maxAbsError}</td><td>${e.verification!.judgedBy ? esc(e.verification!.judgedBy) : `&ge; ${e.verification!.threshold}`}</td></tr>`).join('')}</table>`,
    );
  } else parts.push('<p class="muted">Not run (--no-verify).</p>');

  // Inputs used: what verification and calibration measured on (synthetic calibration in red).
  const used = m.models.filter((e) => e.verification?.inputsUsed || e.calibration);
  if (used.length) {
    const cell = (u: { source: string; from: string[]; count: number } | undefined) =>
      u ? `${u.count} ${esc(u.source)} set(s): ${esc(u.from.join(', '))}` : '-';
    parts.push(
      `<h2>Inputs used</h2><table><tr><th>file</th><th>verification</th><th>calibration</th></tr>${used.map((e) => `<tr><td>${esc(e.file)}</td><td>${cell(e.verification?.inputsUsed)}</td><td${e.calibration?.synthetic ? ' class="badtext"' : ''}>${cell(e.calibration)}${e.calibration?.note ? `: ${esc(e.calibration.note)}` : ''}</td></tr>`).join('')}</table>`,
    );
  }

  // Task metrics (runtime/metrics.ts thresholds), then other verification facts other passes record (shown as given).
  const metrics = verified.flatMap((e) => [
    ...(e.verification!.metrics ?? []).map((t) => ({ file: e.file, t })),
    ...(e.verification!.throughCache?.metrics ?? []).map((t) => ({
      file: e.file,
      t: { ...t, name: `through its own KV cache: ${t.name}` },
    })),
  ]);
  const extra = verified.flatMap((e) =>
    Object.entries(e.verification!)
      .filter(([k]) => !['threshold', 'passed', 'inputs', 'outputs', 'metrics', 'inputsUsed', 'throughCache'].includes(k))
      .map(([k, v]) => ({ file: e.file, k, v })),
  );
  const top2 = Object.entries(m as unknown as Record<string, unknown>).filter(([k]) => /metric|task/i.test(k));
  if (metrics.length || extra.length || top2.length) {
    parts.push(
      `<h2>Task metrics</h2><table><tr><th>file</th><th>metric</th><th>value</th><th>threshold</th><th class="num">sets</th></tr>${metrics.map(({ file, t }) => `<tr class="${t.passed === false ? 'bad' : t.passed ? 'ok' : ''}"><td>${esc(file)}</td><td>${esc(t.name)}</td><td class="num${t.passed === false ? ' badtext' : ''}">${esc(t.value)}</td><td>${t.threshold === undefined ? '-' : `${t.higherIsBetter ? '&ge;' : '&le;'} ${t.threshold}`}${t.note ? ` <span class="muted">${esc(t.note)}</span>` : ''}</td><td class="num">${t.count}</td></tr>`).join('')}${extra.map((x) => `<tr><td>${esc(x.file)}</td><td>${esc(x.k)}</td><td colspan="3"><code>${esc(JSON.stringify(x.v))}</code></td></tr>`).join('')}${top2.map(([k, v]) => `<tr><td>artifact</td><td>${esc(k)}</td><td colspan="3"><code>${esc(JSON.stringify(v))}</code></td></tr>`).join('')}</table>`,
    );
  }

  // Profile by op type (compile --profile-run): each sub-model's first scenario, measured when it ran.
  const perf = (
    m as {
      performance?: {
        device: string;
        models: {
          file: string;
          scenarios: {
            name: string;
            predicted: { byOp: { op: string; ms: number }[] };
            measured?: { byOp: { op: string; ms: number }[]; runtime: string };
          }[];
        }[];
      };
    }
  ).performance;
  if (perf?.models?.length) {
    const rows = perf.models
      .filter((x) => x.scenarios[0])
      .map((x) => ({ file: x.file, sc: x.scenarios[0]!, by: x.scenarios[0]!.measured?.byOp ?? x.scenarios[0]!.predicted.byOp }));
    const totals = new Map<string, number>();
    for (const r of rows) for (const o of r.by) totals.set(short(o.op), (totals.get(short(o.op)) ?? 0) + o.ms);
    const ops = top(totals, 12)
      .map(([k]) => k)
      .filter((k) => k !== 'other');
    const measured = rows.some((r) => r.sc.measured);
    parts.push(
      `<h2>Profile by op type</h2><p class="muted">${esc(perf.device)}; per file: ${rows.map((r) => `${esc(r.file)} ${esc(r.sc.name)} (${r.sc.measured ? `measured, ${esc(r.sc.measured.runtime)}` : 'predicted'})`).join('; ')}.</p>`,
    );
    parts.push(
      `<div class="grid">${hbars(
        `Time by op type (${measured ? 'measured' : 'roofline prediction'})`,
        ops,
        rows.map((r) => ({ name: r.file, data: ops.map((op) => r.by.filter((o) => short(o.op) === op).reduce((a, o) => a + o.ms, 0)) })),
        (v) => `${Number(v.toPrecision(3))} ms`,
      )}</div>`,
    );
  }

  // Tiling plan.
  const pre = m.preprocessing as { tiling?: { example?: TilePlan }; imageSizes?: string[] } | undefined;
  if (pre?.tiling?.example?.tiles) {
    const ex = pre.tiling.example;
    parts.push(
      `<h2>Image tiling plan</h2><p>${esc(ex.policy)}: a ${ex.image.width}x${ex.image.height} example image becomes ${ex.tiles.length} tiles (${ex.tokens.encoder} encoder tokens, ${ex.tokens.projected} after the projector).</p><div class="plan">${planToSvg(ex, 640)}</div>`,
    );
  } else if (pre?.imageSizes) {
    parts.push(
      `<h2>Image preprocessing</h2><p>Images are resized to ${pre.imageSizes.map(esc).join(', ')} (one static vision encoder each).</p>`,
    );
  }

  // Model files.
  parts.push(
    `<h2>Model files</h2><div class="wrap"><table><tr><th>file</th><th>role</th><th class="num">bytes</th><th>inputs</th><th>outputs</th><th>weights observed</th></tr>${m.models.map((e) => `<tr><td>${esc(e.file)}</td><td>${esc(e.role)}</td><td class="num">${fmtBytes(size(e))}</td><td>${e.inputs.map((i) => `${esc(i.name)} ${esc(i.dtype)}${esc(shape(i.shape))}`).join('<br>')}</td><td>${e.outputs.map((i) => `${esc(i.name)} ${esc(i.dtype)}${esc(shape(i.shape))}`).join('<br>')}</td><td><code>${esc(JSON.stringify((e.quantization as { observed?: unknown }).observed ?? {}))}</code></td></tr>`).join('')}</table></div>`,
  );
  parts.push(
    `<h2>Files</h2><div class="wrap"><table><tr><th>path</th><th class="num">bytes</th><th>sha256</th></tr>${files.map((f) => `<tr><td>${esc(f.path)}</td><td class="num">${f.bytes}</td><td><code>${f.sha256}</code></td></tr>`).join('')}</table></div>`,
  );
  return page(`edgec ${m.target} artifact`, parts.join('\n'));
}

export interface IndexItem {
  id: string;
  passed: boolean;
  error?: string;
  summary?: { bytes: number; minCosine: number | null; target: string };
}

/** index.html of an `edgec build` folder: every item, its size and closeness, a link to its report. */
export function buildIndexHtml(
  summary: { tool: { version: string }; items: IndexItem[]; passed: boolean },
  _manifests: Record<string, unknown> = {},
): string {
  charted = 0;
  const items = summary.items;
  const parts: string[] = [];
  const failed = items.filter((i) => !i.passed).length;
  parts.push(
    `<h1>edgec ${esc(summary.tool.version)} release build</h1><p>${failed ? `<span class="badge bad">${failed} of ${items.length} items FAILED</span>` : `<span class="badge ok">all ${items.length} items passed</span>`}</p>`,
  );
  const sized = items.filter((i) => i.summary);
  if (sized.length) {
    const cos = sized.filter((i) => i.summary!.minCosine !== null);
    parts.push(
      `<div class="grid">${hbars(
        'Artifact size',
        sized.map((i) => i.id),
        [{ name: 'bytes', data: sized.map((i) => i.summary!.bytes) }],
        fmtBytes,
      )}${
        cos.length
          ? hbars(
              'Lowest output cosine to the original',
              cos.map((i) => i.id),
              [{ name: 'cosine', data: cos.map((i) => i.summary!.minCosine!) }],
              (v) => v.toFixed(4),
              { min: Math.max(0, Math.floor(Math.min(...cos.map((i) => i.summary!.minCosine!)) * 100 - 1) / 100), max: 1 },
            )
          : ''
      }</div>`,
    );
  }
  parts.push(
    `<table><tr><th>item</th><th>status</th><th class="num">size</th><th class="num">min cosine</th><th>report</th></tr>${items.map((r) => `<tr class="${r.passed ? 'ok' : 'bad'}"><td>${esc(r.id)}</td><td>${r.passed ? 'passed' : `FAILED: ${esc(r.error ?? '')}`}</td><td class="num">${r.summary ? fmtBytes(r.summary.bytes) : '-'}</td><td class="num">${r.summary?.minCosine ?? '-'}</td><td>${r.summary ? `<a href="${esc(r.id)}/report.html">${esc(r.id)}/report.html</a>` : '-'}</td></tr>`).join('')}</table>`,
  );
  return page('edgec build', parts.join('\n'));
}
