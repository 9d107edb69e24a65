// report.html: the manifest as a page a reviewer can open from the artifact folder. Built only
// from the manifest (no times, no paths), so it is as reproducible as the manifest itself.
import type { Manifest } from './manifest.js';

const esc = (s: unknown) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function shape(s: (number | string | null)[] | null): string {
  return s ? `[${s.map((d) => (d === null ? '?' : d)).join(', ')}]` : '?';
}

export function reportHtml(m: Omit<Manifest, 'files'>, files: Manifest['files']): string {
  const size = (file: string, ext: string[]) => files.filter((f) => f.path === file || ext.includes(f.path)).reduce((s, f) => s + f.bytes, 0);
  const rows = m.models.map((e) => {
    const outs = e.verification?.outputs ?? [];
    const topOps = Object.entries(e.ops).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${esc(k)} ${v}`).join(', ');
    const ver = outs.map((o) => `${esc(o.name)}: cos ${o.cosine} / max abs ${o.maxAbsError}`).join('<br>');
    return `<tr><td>${esc(e.file)}</td><td>${esc(e.role)}</td><td>${size(e.file, e.externalData)}</td><td>${e.inputs.map((i) => `${esc(i.name)} ${esc(i.dtype)}${esc(shape(i.shape))}`).join('<br>')}</td><td>${topOps}</td><td>${esc(JSON.stringify((e.quantization as { observed?: unknown }).observed ?? {}))}</td><td class="${e.verification?.passed === false ? 'bad' : 'ok'}">${e.verification ? `&ge; ${e.verification.threshold}<br>${ver}` : 'not run'}</td></tr>`;
  });
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>edgec ${esc(m.target)} artifact</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}.ok{background:#efe}.bad{background:#fee}</style></head>
<body><h1>edgec ${esc(m.tool.version)}: ${esc(m.target)} artifact (${esc(m.profile.name)})</h1>
<p>Options: ${esc(JSON.stringify(m.options))}</p>
<p>Verification: ${m.verification.ran ? (m.verification.passed ? 'passed' : 'FAILED') : 'not run'}</p>
<table><tr><th>file</th><th>role</th><th>bytes</th><th>inputs</th><th>top ops</th><th>weights</th><th>verification</th></tr>
${rows.join('\n')}
</table>
<h2>Files</h2><table><tr><th>path</th><th>bytes</th><th>sha256</th></tr>
${files.map((f) => `<tr><td>${esc(f.path)}</td><td>${f.bytes}</td><td><code>${f.sha256}</code></td></tr>`).join('\n')}
</table></body></html>
`;
}

/** index.html of an `edgec build` folder: every item with its status and a link to its report. */
export function buildIndexHtml(summary: { tool: { version: string }; items: { id: string; passed: boolean; error?: string; summary?: { bytes: number; minCosine: number | null } }[]; passed: boolean }, _manifests: Record<string, Omit<Manifest, 'files'> & Pick<Manifest, 'files'> | undefined>): string {
  const rows = summary.items.map((r) => `<tr><td><a href="${esc(r.id)}/report.html">${esc(r.id)}</a></td><td class="${r.passed ? 'ok' : 'bad'}">${r.passed ? 'passed' : `FAILED: ${esc(r.error ?? '')}`}</td><td>${r.summary?.bytes ?? '-'}</td><td>${r.summary?.minCosine ?? '-'}</td></tr>`);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>edgec build</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.ok{background:#efe}.bad{background:#fee}</style></head>
<body><h1>edgec ${esc(summary.tool.version)} build: ${summary.passed ? 'passed' : 'FAILED'}</h1>
<table><tr><th>item</th><th>status</th><th>bytes</th><th>min cosine</th></tr>
${rows.join('\n')}
</table></body></html>
`;
}
