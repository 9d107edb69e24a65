// MiniCPM-V adaptive slicing (arXiv 2408.01800 §3.2; OpenBMB `slice_image`): ideal slice count
// N = ceil(W*H / 448^2) capped at max-slices (N < 10); candidate grids are the factorisations of
// N-1, N, N+1 (1 and > max excluded); the grid (cols, rows) minimising |log(W/H) - log(cols/rows)|
// wins (first on ties). Each slice is resized to about 448^2 area keeping its aspect, sides rounded
// to patch multiples; the whole image is added first as the source slice. Above max-pixels the image
// is first scaled down (1.8 MP, e.g. 1344x1344, is the documented limit).
import { Size, Tile, TilePlan, checkImage, finishPlan, fullBox, gridBoxes, pyRound } from './types.js';

export interface MiniCPMOptions {
  sliceSize: number;
  maxSlices: number;
  patchSize: number;
  maxPixels: number;
  /** Perceiver-resampler queries per slice: 64 (V1/V2, 2.6) or 96 (Llama3-V 2.5). */
  queryNum: number;
  batch: number;
}

export const MINICPM_DEFAULTS: MiniCPMOptions = {
  sliceSize: 448,
  maxSlices: 9,
  patchSize: 14,
  maxPixels: 1_800_000,
  queryNum: 64,
  batch: 4,
};

const ensureDivide = (length: number, patch: number) => Math.max(pyRound(length / patch) * patch, patch);

/** `find_best_resize`: keep aspect, about scale^2 pixels, sides multiples of the patch size. */
export function findBestResize(w: number, h: number, scale: number, patch: number, allowUpscale: boolean): Size {
  if (w * h > scale * scale || allowUpscale) {
    const r = w / h;
    h = Math.trunc(scale / Math.sqrt(r));
    w = Math.trunc(h * r);
  }
  return { width: ensureDivide(w, patch), height: ensureDivide(h, patch) };
}

export function planMiniCPM(img: Size, opts: Partial<MiniCPMOptions> = {}): TilePlan {
  checkImage(img);
  const o = { ...MINICPM_DEFAULTS, ...opts };
  if (o.maxSlices < 1) throw new RangeError('minicpm-v: max-slices must be >= 1');
  const reasoning: string[] = [];
  let eff = img;
  if (img.width * img.height > o.maxPixels) {
    const s = Math.sqrt(o.maxPixels / (img.width * img.height));
    eff = { width: Math.max(1, Math.floor(img.width * s)), height: Math.max(1, Math.floor(img.height * s)) };
    reasoning.push(`${img.width * img.height} px > ${o.maxPixels}: downscaled to ${eff.width}x${eff.height}`);
  }
  const { width: W, height: H } = eff;
  const logRatio = Math.log(W / H);
  const multiple = Math.min(Math.ceil((W * H) / (o.sliceSize * o.sliceSize)), o.maxSlices);
  const tokensOf = (s: Size) => (s.width / o.patchSize) * (s.height / o.patchSize);
  const tiles: Tile[] = [];
  const grids: TilePlan['grids'] = [];
  const global = (size: Size): Tile => ({
    index: 0,
    kind: 'global',
    layer: 'global',
    row: 0,
    col: 0,
    crop: fullBox(img),
    resize: size,
    encoderTokens: tokensOf(size),
    projectedTokens: o.queryNum,
  });
  if (multiple <= 1) {
    tiles.push(global(findBestResize(W, H, o.sliceSize, o.patchSize, true)));
    reasoning.push(`N = ceil(${W}*${H}/${o.sliceSize}^2) = ${multiple}: no slicing, the source slice only`);
  } else {
    tiles.push(global(findBestResize(W, H, o.sliceSize, o.patchSize, false)));
    const cands: [number, number][] = [];
    for (const n of [multiple - 1, multiple, multiple + 1]) {
      if (n === 1 || n > o.maxSlices) continue;
      for (let m = 1; m <= n; m++) if (n % m === 0) cands.push([m, n / m]);
    }
    let best: [number, number] = [1, 1];
    let minErr = Infinity;
    for (const g of cands) {
      const err = Math.abs(logRatio - Math.log(g[0] / g[1]));
      if (err < minErr) {
        best = g;
        minErr = err;
      }
    }
    const [gx, gy] = best;
    // `get_refine_size`: the image is resized to grid * (per-slice best size), then cut evenly.
    const refineW = ensureDivide(W, gx),
      refineH = ensureDivide(H, gy);
    const cell = findBestResize(refineW / gx, refineH / gy, o.sliceSize, o.patchSize, true);
    for (const b of gridBoxes(img, gx, gy)) {
      tiles.push({
        index: 0,
        kind: 'tile',
        layer: 'main',
        row: b.row,
        col: b.col,
        crop: b.crop,
        resize: cell,
        encoderTokens: tokensOf(cell),
        projectedTokens: o.queryNum,
      });
    }
    grids.push({ cols: gx, rows: gy, layer: 'main' });
    reasoning.push(
      `N = ceil(${W}*${H}/${o.sliceSize}^2) capped at ${o.maxSlices} = ${multiple}; candidates ${cands.map((c) => `${c[0]}x${c[1]}`).join(' ')}; best ${gx}x${gy} (|log-ratio error| ${minErr.toFixed(4)}); slices ${cell.width}x${cell.height}`,
    );
  }
  return finishPlan(
    {
      policy: 'minicpm-v',
      image: img,
      effectiveImage: eff,
      options: { ...o },
      grids,
      tiles,
      reasoning,
      tokenRule: `(w/${o.patchSize})*(h/${o.patchSize}) ViT tokens per slice, perceiver resampler -> ${o.queryNum} queries per slice`,
    },
    o.batch,
  );
}
