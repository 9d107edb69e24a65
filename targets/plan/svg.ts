// SVG of a plan: the image outline, every tile's crop box (one colour per layer) and its index,
// in source-pixel coordinates scaled to a fixed drawing width. Deterministic text.
import type { TilePlan } from './types.js';

const COLORS: Record<string, string> = { main: '#1f77b4', detail: '#1f77b4', adaptive: '#d62728', global: '#2ca02c' };

const num = (v: number) => (Math.round(v * 100) / 100).toString();

export function planToSvg(plan: TilePlan, drawWidth = 640): string {
  const { width: W, height: H } = plan.image;
  const s = drawWidth / W;
  const dh = H * s;
  const lines: string[] = [];
  lines.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(drawWidth + 20)}" height="${num(dh + 44)}" viewBox="-10 -10 ${num(drawWidth + 20)} ${num(dh + 44)}" font-family="monospace" font-size="11">`,
  );
  lines.push(`<rect x="0" y="0" width="${num(drawWidth)}" height="${num(dh)}" fill="#f4f4f4" stroke="#000" stroke-width="1"/>`);
  // Global tiles first (they span the image), then grid layers; adaptive inset so both stay visible.
  const order = [...plan.tiles].sort((a, b) => Number(b.kind === 'global') - Number(a.kind === 'global'));
  for (const t of order) {
    const inset = t.layer === 'adaptive' ? 3 : t.kind === 'global' ? 1.5 : 0;
    const x = t.crop.x0 * s + inset,
      y = t.crop.y0 * s + inset;
    const w = Math.max(0, (t.crop.x1 - t.crop.x0) * s - 2 * inset),
      h = Math.max(0, (t.crop.y1 - t.crop.y0) * s - 2 * inset);
    const c = COLORS[t.layer] ?? '#000';
    lines.push(
      `<rect x="${num(x)}" y="${num(y)}" width="${num(w)}" height="${num(h)}" fill="none" stroke="${c}" stroke-width="${t.kind === 'global' ? 3 : 1.5}"${t.layer === 'adaptive' ? ' stroke-dasharray="6 3"' : ''}><title>tile ${t.index} ${t.layer} r${t.row} c${t.col} -> ${t.resize.width}x${t.resize.height}</title></rect>`,
    );
    if (t.kind !== 'global')
      lines.push(`<text x="${num(x + 4)}" y="${num(y + 13 + (t.layer === 'adaptive' ? 12 : 0))}" fill="${c}">${t.index}</text>`);
  }
  const grids = plan.grids.map((g) => `${g.layer} ${g.cols}x${g.rows}`).join(', ') || 'no grid';
  lines.push(
    `<text x="0" y="${num(dh + 18)}">${plan.policy} ${W}x${H}: ${grids}; ${plan.tiles.length} tiles, ${plan.batches.length} encoder calls, ${plan.tokens.projected} visual tokens</text>`,
  );
  lines.push('</svg>');
  return lines.join('\n') + '\n';
}
