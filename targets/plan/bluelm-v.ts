// BlueLM-V-3B relaxed aspect-ratio matching (arXiv 2411.10640 §3.2). Candidate grids of 384x384
// patches (cols x rows, cols*rows <= max-patches). LLaVA-NeXT keeps the grid with the largest effective
// resolution (image scaled to fit the grid, capped at its own size), ties broken by least waste;
// that picks grids that only upscale. Relaxed rule, candidates in increasing patch count:
//   take g if  Reff(g) - Reff* > alpha * Reff*                                  (clearly sharper)
//          or  |Reff(g) - Reff*| < alpha * Reff*  and  Rwaste(g) < Rwaste*       (as sharp, less waste)
// The image is resized to fit the grid canvas, padded, cut into patches, plus a 384x384 thumbnail.
// SigLIP-400M gives floor(384/14)^2 = 729 tokens per patch; the VILA-style 2x2 token downsampler
// leaves ceil(27/2)^2 = 196. Patches run 4 per NPU call (9 patches: 4+4+1).
import { Size, Tile, TilePlan, checkImage, finishPlan, fullBox } from './types.js';

/** LLaVA-NeXT resize_and_pad: the image resized to fit the cols x rows canvas of patch-pixel cells
 * keeping its aspect (rw x rh), pasted at (px, py) on black; the rest is padding. */
export function bluelmCanvas(
  img: Size,
  cols: number,
  rows: number,
  patch: number,
): { cw: number; ch: number; rw: number; rh: number; px: number; py: number } {
  const cw = cols * patch,
    ch = rows * patch;
  const s = Math.min(cw / img.width, ch / img.height);
  const rw = Math.min(cw, Math.ceil(img.width * s)),
    rh = Math.min(ch, Math.ceil(img.height * s));
  return { cw, ch, rw, rh, px: Math.floor((cw - rw) / 2), py: Math.floor((ch - rh) / 2) };
}

export interface BlueLMOptions {
  patch: number;
  maxPatches: number;
  /** Most patches along one side (a 1x9 strip is no use to a 384px ViT). */
  maxSide: number;
  alpha: number;
  thumbnail: boolean;
  vitPatch: number;
  /** Token downsampler window (2 = 2x2 concat). */
  merge: number;
  batch: number;
}

export const BLUELM_DEFAULTS: BlueLMOptions = {
  patch: 384,
  maxPatches: 9,
  maxSide: 4,
  alpha: 0.1,
  thumbnail: true,
  vitPatch: 14,
  merge: 2,
  batch: 4,
};

export interface GridScore {
  cols: number;
  rows: number;
  effective: number;
  wasted: number;
}

export function scoreGrid(img: Size, cols: number, rows: number, patch: number): GridScore {
  const cw = cols * patch,
    ch = rows * patch;
  const scale = Math.min(cw / img.width, ch / img.height);
  const eff = Math.min(Math.trunc(img.width * scale) * Math.trunc(img.height * scale), img.width * img.height);
  return { cols, rows, effective: eff, wasted: cw * ch - eff };
}

export function blueLMCandidates(o: Pick<BlueLMOptions, 'maxPatches' | 'maxSide'>): [number, number][] {
  const out: [number, number][] = [];
  for (let c = 1; c <= o.maxSide; c++) for (let r = 1; r <= o.maxSide; r++) if (c * r <= o.maxPatches) out.push([c, r]);
  return out.sort((a, b) => a[0] * a[1] - b[0] * b[1] || a[0] - b[0]);
}

export function relaxedMatch(img: Size, o: BlueLMOptions): { best: GridScore; scores: GridScore[] } {
  const scores = blueLMCandidates(o).map(([c, r]) => scoreGrid(img, c, r, o.patch));
  let best = scores[0]!;
  for (const s of scores.slice(1)) {
    const d = s.effective - best.effective;
    if (d > o.alpha * best.effective || (Math.abs(d) < o.alpha * best.effective && s.wasted < best.wasted)) best = s;
  }
  return { best, scores };
}

export function planBlueLM(img: Size, opts: Partial<BlueLMOptions> = {}): TilePlan {
  checkImage(img);
  const o = { ...BLUELM_DEFAULTS, ...opts };
  if (o.alpha < 0) throw new RangeError('bluelm-v: alpha must be >= 0');
  const { best, scores } = relaxedMatch(img, o);
  const side = Math.floor(o.patch / o.vitPatch);
  const enc = side * side,
    proj = Math.ceil(side / o.merge) ** 2;
  const { cw, ch, rw, rh, px, py } = bluelmCanvas(img, best.cols, best.rows, o.patch);
  const toSrcX = (x: number) => Math.min(img.width, Math.max(0, ((x - px) * img.width) / rw));
  const toSrcY = (y: number) => Math.min(img.height, Math.max(0, ((y - py) * img.height) / rh));
  const tiles: Tile[] = [];
  for (let r = 0; r < best.rows; r++) {
    for (let c = 0; c < best.cols; c++) {
      tiles.push({
        index: 0,
        kind: 'tile',
        layer: 'main',
        row: r,
        col: c,
        crop: { x0: toSrcX(c * o.patch), y0: toSrcY(r * o.patch), x1: toSrcX((c + 1) * o.patch), y1: toSrcY((r + 1) * o.patch) },
        resize: { width: o.patch, height: o.patch },
        encoderTokens: enc,
        projectedTokens: proj,
      });
    }
  }
  if (o.thumbnail)
    tiles.push({
      index: 0,
      kind: 'global',
      layer: 'global',
      row: 0,
      col: 0,
      crop: fullBox(img),
      resize: { width: o.patch, height: o.patch },
      encoderTokens: enc,
      projectedTokens: proj,
    });
  return finishPlan(
    {
      policy: 'bluelm-v',
      image: img,
      effectiveImage: img,
      options: { ...o },
      grids: [{ cols: best.cols, rows: best.rows, layer: 'main' }],
      tiles,
      reasoning: [
        `candidates (cols x rows: effective/wasted px): ${scores.map((g) => `${g.cols}x${g.rows}:${g.effective}/${g.wasted}`).join(' ')}`,
        `relaxed match (alpha ${o.alpha}) -> ${best.cols}x${best.rows}; image resized to ${rw}x${rh} on a ${cw}x${ch} canvas`,
      ],
      tokenRule: `${enc} SigLIP tokens per ${o.patch}px patch, ${o.merge}x${o.merge} token downsampler -> ${proj}`,
    },
    o.batch,
  );
}
