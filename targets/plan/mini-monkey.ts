// Mini-Monkey multi-scale adaptive cropping (Yuliang-Liu/Monkey project/mini_monkey/demo.py):
// a detail layer chosen like InternVL with 4..12 tiles, an adaptive layer with 3..7 tiles restricted
// to grids that do not divide the detail grid (kept when cols_detail % i != 0 or rows_detail % j != 0),
// and one 448x448 thumbnail. Order as the demo concatenates: adaptive tiles, detail tiles, thumbnail.
import { Size, TilePlan, checkImage, finishPlan, targetRatios } from './types.js';
import { globalTile, internvlLayer, internvlTokens } from './internvl.js';

export interface MiniMonkeyOptions {
  tileSize: number;
  detailMin: number;
  detailMax: number;
  adaptiveMin: number;
  adaptiveMax: number;
  patchSize: number;
  downsample: number;
  batch: number;
}

export const MINI_MONKEY_DEFAULTS: MiniMonkeyOptions = {
  tileSize: 448,
  detailMin: 4,
  detailMax: 12,
  adaptiveMin: 3,
  adaptiveMax: 7,
  patchSize: 14,
  downsample: 0.5,
  batch: 4,
};

export function planMiniMonkey(img: Size, opts: Partial<MiniMonkeyOptions> = {}): TilePlan {
  checkImage(img);
  const o = { ...MINI_MONKEY_DEFAULTS, ...opts };
  if (o.detailMin < 1 || o.detailMax < o.detailMin || o.adaptiveMin < 1 || o.adaptiveMax < o.adaptiveMin)
    throw new RangeError('mini-monkey: tile ranges must satisfy 1 <= min <= max');
  const detail = internvlLayer(img, targetRatios(o.detailMin, o.detailMax), o, 'detail');
  const [dc, dr] = detail.grid;
  const adaptiveCands = targetRatios(o.adaptiveMin, o.adaptiveMax).filter(([i, j]) => dc % i !== 0 || dr % j !== 0);
  const adaptive = internvlLayer(img, adaptiveCands, o, 'adaptive');
  const tk = internvlTokens(o);
  // With one adaptive tile (no candidate left: the reference falls back to 1x1) that tile is the
  // whole image at 448x448, i.e. the thumbnail itself, and the demo's `[:-1]` drops nothing else.
  const adaptiveTiles = adaptive.tiles.length > 1 ? adaptive.tiles : [];
  const tiles = [...adaptiveTiles, ...detail.tiles, globalTile(img, { width: o.tileSize, height: o.tileSize }, tk.encoder, tk.projected)];
  return finishPlan(
    {
      policy: 'mini-monkey',
      image: img,
      effectiveImage: img,
      options: { ...o },
      grids: [
        { cols: adaptive.grid[0], rows: adaptive.grid[1], layer: 'adaptive' },
        { cols: dc, rows: dr, layer: 'detail' },
      ],
      tiles,
      reasoning: [
        `detail layer: closest of ${o.detailMin}..${o.detailMax}-tile grids -> ${dc}x${dr}`,
        `adaptive layer: ${adaptiveCands.length} non-divisor grids of ${o.adaptiveMin}..${o.adaptiveMax} tiles -> ${adaptive.grid[0]}x${adaptive.grid[1]}`,
      ],
      tokenRule: `${tk.encoder} ViT tokens per ${o.tileSize}px tile, pixel shuffle x${o.downsample} -> ${tk.projected} (the SCM that later drops 50% of detail tokens inside the LLM is not counted)`,
    },
    o.batch,
  );
}
