// Shared types of the tiling planner: how an image becomes encoder tiles, encoder batches and visual
// tokens. The plan is plain JSON: it is the preprocessing spec that goes into artifact manifests.

export type PolicyName = 'minicpm-v' | 'bluelm-v' | 'internvl' | 'mini-monkey';
export const POLICIES: readonly PolicyName[] = ['minicpm-v', 'bluelm-v', 'internvl', 'mini-monkey'];

/** A rectangle in source-image pixels: [x0, x1) x [y0, y1), fractional where the resize is not integral. */
export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

export interface Size {
  width: number;
  height: number;
}

export interface Tile {
  index: number;
  /** 'tile': a cell of a grid; 'global': the whole image at tile resolution (thumbnail / source slice). */
  kind: 'tile' | 'global';
  /** Grid layer the tile belongs to (Mini-Monkey has 'detail' and 'adaptive'; others 'main'). */
  layer: 'main' | 'detail' | 'adaptive' | 'global';
  row: number;
  col: number;
  /** Region of the source image this tile shows (before padding, BlueLM may pad part of a tile). */
  crop: Box;
  /** Pixel size fed to the encoder. */
  resize: Size;
  /** Encoder output tokens for this tile, and tokens after the projector's merge/compression. */
  encoderTokens: number;
  projectedTokens: number;
}

export interface Grid {
  cols: number;
  rows: number;
  layer: Tile['layer'];
}

export interface EncoderBatch {
  /** Input shape of this call: [batch, 3, height, width]. */
  shape: [number, number, number, number];
  tiles: number[];
  /** Slots filled with padding because a static-shape encoder always takes `batch` tiles. */
  padded: number;
}

export interface TilePlan {
  policy: PolicyName;
  image: Size;
  /** Size the tiling rule saw (after a pixel-limit downscale; equal to image otherwise). */
  effectiveImage: Size;
  options: Record<string, number | boolean>;
  grids: Grid[];
  tiles: Tile[];
  batches: EncoderBatch[];
  /** Distinct encoder input sizes (what resolution buckets must cover). */
  tileSizes: Size[];
  tokens: { encoder: number; projected: number; rule: string };
  /** How the choice was made (candidate grids and scores), for the report. */
  reasoning: string[];
}

/** Python's round(): halves go to the even neighbour. The reference preprocessors use it. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Cells of a cols x rows grid over the whole image, row by row (as the references crop). */
export function gridBoxes(img: Size, cols: number, rows: number): { row: number; col: number; crop: Box }[] {
  const out: { row: number; col: number; crop: Box }[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out.push({
        row: r,
        col: c,
        crop: {
          x0: (c * img.width) / cols,
          y0: (r * img.height) / rows,
          x1: ((c + 1) * img.width) / cols,
          y1: ((r + 1) * img.height) / rows,
        },
      });
    }
  }
  return out;
}

export const fullBox = (img: Size): Box => ({ x0: 0, y0: 0, x1: img.width, y1: img.height });

/** Consecutive same-shape tiles go to one encoder call of at most `batch` tiles. */
export function makeBatches(tiles: Tile[], batch: number): EncoderBatch[] {
  const groups = new Map<string, Tile[]>();
  for (const t of tiles) {
    const k = `${t.resize.width}x${t.resize.height}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(t);
  }
  const out: EncoderBatch[] = [];
  for (const g of groups.values()) {
    for (let i = 0; i < g.length; i += batch) {
      const chunk = g.slice(i, i + batch);
      out.push({
        shape: [batch, 3, chunk[0]!.resize.height, chunk[0]!.resize.width],
        tiles: chunk.map((t) => t.index),
        padded: batch - chunk.length,
      });
    }
  }
  return out;
}

export function distinctSizes(tiles: Tile[]): Size[] {
  const seen = new Map<string, Size>();
  for (const t of tiles) seen.set(`${t.resize.width}x${t.resize.height}`, t.resize);
  return [...seen.values()];
}

export function finishPlan(p: Omit<TilePlan, 'batches' | 'tileSizes' | 'tokens'> & { tokenRule: string }, batch: number): TilePlan {
  p.tiles.forEach((t, i) => {
    t.index = i;
  });
  const { tokenRule, ...rest } = p;
  return {
    ...rest,
    batches: makeBatches(p.tiles, batch),
    tileSizes: distinctSizes(p.tiles),
    tokens: {
      encoder: p.tiles.reduce((s, t) => s + t.encoderTokens, 0),
      projected: p.tiles.reduce((s, t) => s + t.projectedTokens, 0),
      rule: tokenRule,
    },
  };
}

/** InternVL-style tiles: closest aspect ratio among (i, j) grids with min <= i*j <= max. */
export function targetRatios(minNum: number, maxNum: number): [number, number][] {
  // The reference builds a Python set then sorts by i*j (stable). Set order of small-int tuples is
  // not portable, so equal-product grids go in (i, j) order; ties between them need an exactly equal
  // aspect-ratio distance, which only happens for the same ratio (e.g. 1:1, 2:2), whose products differ.
  const seen = new Set<string>();
  const out: [number, number][] = [];
  for (let n = minNum; n <= maxNum; n++) {
    for (let i = 1; i <= n; i++) {
      for (let j = 1; j <= n; j++) {
        if (i * j > maxNum || i * j < minNum || seen.has(`${i},${j}`)) continue;
        seen.add(`${i},${j}`);
        out.push([i, j]);
      }
    }
  }
  return out.sort((a, b) => a[0] * a[1] - b[0] * b[1] || a[0] - b[0]);
}

/** InternVL `find_closest_aspect_ratio`: smallest |aspect - i/j|; on an exact tie the later (larger)
 * grid wins when the image area exceeds half of that grid's pixel area. */
export function closestAspectRatio(aspect: number, ratios: [number, number][], img: Size, tile: number): [number, number] {
  let bestDiff = Infinity;
  let best: [number, number] = [1, 1];
  const area = img.width * img.height;
  for (const r of ratios) {
    const diff = Math.abs(aspect - r[0] / r[1]);
    if (diff < bestDiff) {
      bestDiff = diff;
      best = r;
    } else if (diff === bestDiff && area > 0.5 * tile * tile * r[0] * r[1]) {
      best = r;
    }
  }
  return best;
}

export function checkImage(img: Size): void {
  for (const v of [img.width, img.height]) {
    if (!Number.isInteger(v) || v < 1 || v > 1 << 20)
      throw new RangeError(`image size must be whole pixels in 1..${1 << 20}, got ${img.width}x${img.height}`);
  }
}
