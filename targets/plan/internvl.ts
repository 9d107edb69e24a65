// InternVL dynamic tiling (InternVL 1.5/2 `dynamic_preprocess`): the image is resized to the
// closest-aspect-ratio grid of 448x448 tiles with min..max tiles, cut into tiles, plus a 448x448
// thumbnail of the whole image when there is more than one tile. Each tile gives (448/14)^2 = 1024
// ViT tokens; pixel shuffle (downsample 0.5) leaves 256.
import { Size, Tile, TilePlan, checkImage, closestAspectRatio, finishPlan, fullBox, gridBoxes, targetRatios } from './types.js';

export interface InternVLOptions {
  tileSize: number;
  minTiles: number;
  maxTiles: number;
  thumbnail: boolean;
  patchSize: number;
  /** Pixel-shuffle factor: tokens per tile = ((tileSize/patchSize) * downsample)^2. */
  downsample: number;
  batch: number;
}

export const INTERNVL_DEFAULTS: InternVLOptions = {
  tileSize: 448,
  minTiles: 1,
  maxTiles: 12,
  thumbnail: true,
  patchSize: 14,
  downsample: 0.5,
  batch: 4,
};

export function internvlTokens(o: { tileSize: number; patchSize: number; downsample: number }): { encoder: number; projected: number } {
  const side = Math.floor(o.tileSize / o.patchSize);
  return { encoder: side * side, projected: Math.floor(side * o.downsample) ** 2 };
}

/** Tiles of one InternVL-style layer over a given candidate list. */
export function internvlLayer(
  img: Size,
  ratios: [number, number][],
  o: { tileSize: number; patchSize: number; downsample: number },
  layer: Tile['layer'],
): { grid: [number, number]; tiles: Tile[] } {
  const grid = closestAspectRatio(img.width / img.height, ratios, img, o.tileSize);
  const tk = internvlTokens(o);
  const tiles = gridBoxes(img, grid[0], grid[1]).map((b): Tile => ({
    index: 0,
    kind: 'tile',
    layer,
    row: b.row,
    col: b.col,
    crop: b.crop,
    resize: { width: o.tileSize, height: o.tileSize },
    encoderTokens: tk.encoder,
    projectedTokens: tk.projected,
  }));
  return { grid, tiles };
}

export function globalTile(img: Size, size: Size, encoderTokens: number, projectedTokens: number): Tile {
  return { index: 0, kind: 'global', layer: 'global', row: 0, col: 0, crop: fullBox(img), resize: size, encoderTokens, projectedTokens };
}

export function planInternVL(img: Size, opts: Partial<InternVLOptions> = {}): TilePlan {
  checkImage(img);
  const o = { ...INTERNVL_DEFAULTS, ...opts };
  if (o.minTiles < 1 || o.maxTiles < o.minTiles)
    throw new RangeError(`internvl: need 1 <= min-tiles <= max-tiles, got ${o.minTiles}..${o.maxTiles}`);
  const ratios = targetRatios(o.minTiles, o.maxTiles);
  const { grid, tiles } = internvlLayer(img, ratios, o, 'main');
  const tk = internvlTokens(o);
  if (o.thumbnail && tiles.length !== 1) tiles.push(globalTile(img, { width: o.tileSize, height: o.tileSize }, tk.encoder, tk.projected));
  return finishPlan(
    {
      policy: 'internvl',
      image: img,
      effectiveImage: img,
      options: { ...o },
      grids: [{ cols: grid[0], rows: grid[1], layer: 'main' }],
      tiles,
      reasoning: [
        `aspect ${(img.width / img.height).toFixed(4)}; ${ratios.length} candidate grids with ${o.minTiles}..${o.maxTiles} tiles; closest ${grid[0]}x${grid[1]} (cols x rows)`,
      ],
      tokenRule: `${tk.encoder} ViT tokens per ${o.tileSize}px tile, pixel shuffle x${o.downsample} -> ${tk.projected}`,
    },
    o.batch,
  );
}
