// Tiling planner: every expected grid below is worked out by hand from the paper's / reference
// code's rule; the arithmetic is in the comments. Then property sweeps over many image sizes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { POLICIES, PolicyName, TilePlan, parseImageSize, planImage, planToSvg, pyRound } from '../../targets/plan/index.js';
import { main } from '../../cli/main.js';

const plan = (p: PolicyName, w: number, h: number, o: Record<string, number | boolean> = {}) => planImage(p, { width: w, height: h }, o);
const grid = (p: TilePlan, layer = 'main') => {
  const g = p.grids.find((x) => x.layer === layer);
  return g ? `${g.cols}x${g.rows}` : 'none';
};
const sizes = (p: TilePlan) => p.tiles.map((t) => `${t.resize.width}x${t.resize.height}`);
const batchSizes = (p: TilePlan) => p.batches.map((b) => b.tiles.length).join('+');

describe('python round', () => {
  it('rounds halves to even like the reference preprocessors', () => {
    expect([0.5, 1.5, 2.5, 42.5, 42.51, 3.49].map(pyRound)).toEqual([0, 2, 2, 42, 43, 3]);
  });
});

describe('minicpm-v adaptive slicing (slice size 448, N < 10, 1.8 MP, patch 14, 64 queries)', () => {
  it('448x448: N = ceil(200704/200704) = 1 -> no slicing; source resized to r=1, h=int(448)=448 -> 448x448', () => {
    const p = plan('minicpm-v', 448, 448);
    expect(grid(p)).toBe('none');
    expect(sizes(p)).toEqual(['448x448']);
    expect(p.tokens).toMatchObject({ encoder: 32 * 32, projected: 64 });
  });

  it('300x200 (tiny, upscaled): N = ceil(60000/200704) = 1; r=1.5, h=int(448/1.2247)=int(365.8)=365, w=int(547.5)=547 -> 39*14=546, round(26.07)*14=364', () => {
    const p = plan('minicpm-v', 300, 200);
    expect(sizes(p)).toEqual(['546x364']);
    expect(p.tokens).toMatchObject({ encoder: 39 * 26, projected: 64 });
  });

  it('1000x500: N = ceil(2.49) = 3; candidates of 2,3,4: 1x2 2x1 1x3 3x1 1x4 2x2 4x1; log(2) matches 2x1 exactly', () => {
    // slices: refine 1000x500 -> cells 500x500 -> r=1, 448x448. Source: 500000 > 448^2 so r=2,
    // h=int(448/1.4142)=316, w=632 -> round(45.14)*14=630, round(22.57)*14=322.
    const p = plan('minicpm-v', 1000, 500);
    expect(grid(p)).toBe('2x1');
    expect(sizes(p)).toEqual(['630x322', '448x448', '448x448']);
    expect(p.tokens).toMatchObject({ encoder: 45 * 23 + 2 * 1024, projected: 3 * 64 });
    expect(p.tiles[2]!.crop).toEqual({ x0: 500, y0: 0, x1: 1000, y1: 500 });
  });

  it('768x1536: N = ceil(5.88) = 6; candidates of 5,6,7; |log 0.5 - log(2/3)| = 0.288 is least -> 2 cols x 3 rows', () => {
    // refine: ensure_divide(768,2)=768, ensure_divide(1536,3)=1536 -> cell 384x512, r=0.75,
    // h=int(448/0.866)=517, w=int(387.75)=387 -> round(27.64)*14=392, round(36.93)*14=518.
    // source: r=0.5, h=int(633.6)=633, w=int(316.5)=316 -> 23*14=322, 45*14=630.
    const p = plan('minicpm-v', 768, 1536);
    expect(grid(p)).toBe('2x3');
    expect(sizes(p)).toEqual(['322x630', ...new Array(6).fill('392x518')]);
    expect(p.tokens.projected).toBe(7 * 64);
    expect(batchSizes(p)).toBe('1+4+2');
  });

  it('1920x1080 (2.07 MP > 1.8 MP): scaled by sqrt(1.8e6/2073600)=0.9317 to 1788x1006; N = ceil(8.96) = 9; candidates of 8, 9; log(1.7773)=0.575 is nearest log 2 -> 4x2', () => {
    // refine: ensure_divide(1788,4)=1788, ensure_divide(1006,2)=1006 -> cells 447x503, r=0.8887,
    // h=int(448/0.9427)=475, w=int(422.1)=422 -> 30*14=420, round(33.93)*14=476.
    // source 1788x1006: r=1.7773, h=int(448/1.3332)=336, w=int(597.2)=597 -> round(42.64)*14=602, 24*14=336.
    const p = plan('minicpm-v', 1920, 1080);
    expect(p.effectiveImage).toEqual({ width: 1788, height: 1006 });
    expect(grid(p)).toBe('4x2');
    expect(sizes(p)).toEqual(['602x336', ...new Array(8).fill('420x476')]);
    expect(p.tiles[8]!.crop).toEqual({ x0: 1440, y0: 540, x1: 1920, y1: 1080 });
  });

  it('4000x200 (20:1): N = ceil(3.99) = 4; candidates of 3,4,5; log 20 = 3.00 is nearest log 5 = 1.61 -> 5x1', () => {
    // refine 4000x200, cells 800x200, r=4, h=int(448/2)=224, w=896 -> 896x224 (64x16 patches).
    // source: r=20, h=int(448/4.472)=100, w=2000 -> round(142.86)*14=2002, round(7.14)*14=98.
    const p = plan('minicpm-v', 4000, 200);
    expect(grid(p)).toBe('5x1');
    expect(sizes(p)).toEqual(['2002x98', ...new Array(5).fill('896x224')]);
    expect(p.tokens).toMatchObject({ encoder: 143 * 7 + 5 * 64 * 16, projected: 6 * 64 });
    expect(batchSizes(p)).toBe('1+4+1');
  });

  it('4000x3000 (12 MP, above 1.8 MP): scaled by sqrt(1.8e6/1.2e7)=0.3873 to 1549x1161; N = 9; 3x3 (log 1.334 = 0.288 < |0.288-0.693|)', () => {
    // refine: ensure_divide(1549,3)=516*3=1548, 1161 -> cells 516x387, r=1.333, h=int(387.98)=387,
    // w=516 -> round(36.86)*14=518, round(27.64)*14=392. Source 1549x1161 -> h=387, w=516 -> 518x392.
    const p = plan('minicpm-v', 4000, 3000);
    expect(p.effectiveImage).toEqual({ width: 1549, height: 1161 });
    expect(grid(p)).toBe('3x3');
    expect(new Set(sizes(p))).toEqual(new Set(['518x392']));
    expect(p.tokens).toMatchObject({ encoder: 10 * 37 * 28, projected: 640 });
    // Crop boxes stay in source pixels: the last slice ends at the source corner.
    expect(p.tiles[9]!.crop).toEqual({ x0: 8000 / 3, y0: 2000, x1: 4000, y1: 3000 });
  });

  it('1344x1344 (the 1.8 MP showcase): 1806336 px > 1.8e6 -> 1341x1341, N = ceil(8.96) = 9, grid 3x3, 10 x 448^2 slices, 640 tokens', () => {
    const p = plan('minicpm-v', 1344, 1344);
    expect(grid(p)).toBe('3x3');
    expect(new Set(sizes(p))).toEqual(new Set(['448x448']));
    expect(p.tokens.projected).toBe(640);
    expect(plan('minicpm-v', 1344, 1344, { queryNum: 96 }).tokens.projected).toBe(960);
  });
});

describe('internvl dynamic tiling (448, 1..12 tiles, thumbnail)', () => {
  it('448x448: 1x1 has diff 0; 2x2 ties but area 200704 <= 0.5*448^2*4 = 401408 -> 1 tile, no thumbnail', () => {
    const p = plan('internvl', 448, 448);
    expect(grid(p)).toBe('1x1');
    expect(p.tiles).toHaveLength(1);
    expect(p.tokens).toMatchObject({ encoder: 1024, projected: 256 });
  });

  it('800x800: 2x2 ties 1x1 and 640000 > 401408 -> 2x2; 3x3 needs > 903168 -> no; 4+1 tiles, 1280 tokens', () => {
    const p = plan('internvl', 800, 800);
    expect(grid(p)).toBe('2x2');
    expect(p.tiles.map((t) => t.kind)).toEqual(['tile', 'tile', 'tile', 'tile', 'global']);
    expect(p.tokens.projected).toBe(1280);
    expect(batchSizes(p)).toBe('4+1');
  });

  it('1344x1344: 1806336 > 903168 -> 3x3 (4x4 = 16 > 12); 10 tiles, 2560 tokens', () => {
    expect(grid(plan('internvl', 1344, 1344))).toBe('3x3');
    expect(plan('internvl', 1344, 1344).tokens.projected).toBe(2560);
  });

  it('1344x1344 with --max-tiles 6: 3x3 is out, 2x2 (tie with 1x1, area > 401408) -> 5 tiles', () => {
    const p = plan('internvl', 1344, 1344, { maxTiles: 6 });
    expect(grid(p)).toBe('2x2');
    expect(p.tiles).toHaveLength(5);
  });

  it('300x200 (tiny): aspect 1.5 = 3/2 exactly (6x4 = 24 tiles is out) -> 3x2 + thumbnail = 7 (InternVL upscales)', () => {
    const p = plan('internvl', 300, 200);
    expect(grid(p)).toBe('3x2');
    expect(p.tiles).toHaveLength(7);
    expect(p.tiles[1]!.crop).toEqual({ x0: 100, y0: 0, x1: 200, y1: 100 });
  });

  it('1000x500: 2x1 exact; 4x2 ties but 500000 <= 0.5*448^2*8 = 802816 -> 2x1 + thumbnail', () => {
    expect(grid(plan('internvl', 1000, 500))).toBe('2x1');
    expect(plan('internvl', 1000, 500).tiles).toHaveLength(3);
  });

  it('768x1536: 1x2 exact; 2x4 ties and 1179648 > 802816 -> 2x4 + thumbnail = 9', () => {
    expect(grid(plan('internvl', 768, 1536))).toBe('2x4');
    expect(plan('internvl', 768, 1536).tiles).toHaveLength(9);
  });

  it('2000x100 (20:1): nearest ratio with <= 12 tiles is 12/1 (diff 8) -> 12x1 + thumbnail, batches 4+4+4+1', () => {
    const p = plan('internvl', 2000, 100);
    expect(grid(p)).toBe('12x1');
    expect(batchSizes(p)).toBe('4+4+4+1');
    expect(p.batches[3]!.padded).toBe(3);
  });

  it('4000x3000: 4/3 exact at 12 tiles -> 4x3 + thumbnail = 13 tiles, 3328 tokens', () => {
    expect(grid(plan('internvl', 4000, 3000))).toBe('4x3');
    expect(plan('internvl', 4000, 3000).tokens.projected).toBe(13 * 256);
  });
});

describe('mini-monkey multi-scale adaptive cropping (detail 4..12, adaptive 3..7 non-divisor, thumbnail)', () => {
  it('448x448: detail 2x2 (3x3 tie needs area > 903168); adaptive drops 2x2, 2x3 is nearest (|1-2/3| = 0.33) -> 6+4+1 tiles', () => {
    const p = plan('mini-monkey', 448, 448);
    expect(grid(p, 'detail')).toBe('2x2');
    expect(grid(p, 'adaptive')).toBe('2x3');
    expect(p.tiles.map((t) => t.layer)).toEqual([...new Array(6).fill('adaptive'), ...new Array(4).fill('detail'), 'global']);
    expect(p.tokens.projected).toBe(11 * 256);
  });

  it('1344x1344: detail 3x3 (1806336 > 903168); adaptive drops 1x3 and 3x1 (divisors), 2x2 matches -> 4+9+1 = 14', () => {
    const p = plan('mini-monkey', 1344, 1344);
    expect(grid(p, 'detail')).toBe('3x3');
    expect(grid(p, 'adaptive')).toBe('2x2');
    expect(p.tiles).toHaveLength(14);
  });

  it('1920x1080: detail 4x2 (|1.778-2| = 0.222, ties 2x1? not in 4..12); adaptive drops 2x2, 4x1; 3x2 (0.278) -> 6+8+1', () => {
    const p = plan('mini-monkey', 1920, 1080);
    expect(grid(p, 'detail')).toBe('4x2');
    expect(grid(p, 'adaptive')).toBe('3x2');
    expect(p.tiles).toHaveLength(15);
  });

  it('2000x100 (20:1): detail 12x1; adaptive drops 3x1, 4x1, 6x1 (divide 12), keeps 5x1, 7x1 -> 7x1; 7+12+1 = 20 tiles = 5120 tokens (the documented maximum)', () => {
    const p = plan('mini-monkey', 2000, 100);
    expect(grid(p, 'detail')).toBe('12x1');
    expect(grid(p, 'adaptive')).toBe('7x1');
    expect(p.tokens.projected).toBe(5120);
    expect(batchSizes(p)).toBe('4+4+4+4+4');
  });
});

describe('bluelm-v relaxed aspect-ratio matching (384 patches, <= 9, alpha 0.1, thumbnail, 729 -> 196)', () => {
  it('768x1536: 1x2 (eff 294912) -> 2x3 (663552, +125%) -> 2x4 (1179648 = full, waste 0) -> 8+1 patches, 4+4+1 calls, 6561 -> 1764 tokens', () => {
    const p = plan('bluelm-v', 768, 1536);
    expect(grid(p)).toBe('2x4');
    expect(batchSizes(p)).toBe('4+4+1');
    expect(p.tokens).toMatchObject({ encoder: 6561, projected: 1764 });
    expect(p.tiles[7]!.crop).toEqual({ x0: 384, y0: 1152, x1: 768, y1: 1536 });
  });

  it('800x800: 2x2 gives eff 768^2 = 589824; 3x3 would reach 640000 (+8.5% < alpha) with waste 687104 > 0 -> keeps 2x2; alpha 0 (LLaVA-NeXT) upscales to 3x3', () => {
    expect(grid(plan('bluelm-v', 800, 800))).toBe('2x2');
    expect(grid(plan('bluelm-v', 800, 800, { alpha: 0 }))).toBe('3x3');
  });

  it('300x200 (tiny): every grid already holds the whole image (eff 60000); least waste is 1x1 -> 1+1 patches in one call of 4 (2 padded)', () => {
    const p = plan('bluelm-v', 300, 200);
    expect(grid(p)).toBe('1x1');
    expect(p.batches).toEqual([{ shape: [4, 3, 384, 384], tiles: [0, 1], padded: 2 }]);
  });

  it('1000x500: 2x1 (eff 768*384) -> 3x2 (scale 1.152 caps at 500000, +70%); 4x2, 3x3 same eff more waste -> 3x2, centred with 96 px pad rows', () => {
    const p = plan('bluelm-v', 1000, 500);
    expect(grid(p)).toBe('3x2');
    // canvas 1152x768, image 1152x576 at y 96..672: row 0 shows source y 0..(384-96)*500/576 = 250.
    expect(p.tiles[0]!.crop).toEqual({ x0: 0, y0: 0, x1: 1000 / 3, y1: 250 });
    expect(p.tiles[5]!.crop).toEqual({ x0: 2000 / 3, y0: 250, x1: 1000, y1: 500 });
  });

  it('2000x100 (20:1): width-bound, eff grows 7296 -> 29184 -> 65664 -> 116736 with 1..4 columns (max side 4) -> 4x1', () => {
    expect(grid(plan('bluelm-v', 2000, 100))).toBe('4x1');
  });
});

describe('tiny and tall images, every policy', () => {
  it('10x10: minicpm N = ceil(100/200704) = 1, upscaled r=1 -> 448x448; internvl 1x1; mini-monkey 2x2 detail + 2x3 adaptive + 1; bluelm eff 100 everywhere -> 1x1 + 1', () => {
    expect(sizes(plan('minicpm-v', 10, 10))).toEqual(['448x448']);
    expect(plan('internvl', 10, 10).tiles).toHaveLength(1);
    const mm = plan('mini-monkey', 10, 10);
    expect([grid(mm, 'detail'), grid(mm, 'adaptive'), mm.tiles.length]).toEqual(['2x2', '2x3', 11]);
    expect([grid(plan('bluelm-v', 10, 10)), plan('bluelm-v', 10, 10).tiles.length]).toEqual(['1x1', 2]);
  });

  it('100x2000 (1:20): internvl 1x12 (1/12 nearest to 0.05); bluelm 1x4 (height-bound, max side 4); minicpm N=1 -> r=0.05, h=int(448/0.2236)=2003, w=int(100.15)=100 -> 98x2002', () => {
    expect(grid(plan('internvl', 100, 2000))).toBe('1x12');
    expect(grid(plan('bluelm-v', 100, 2000))).toBe('1x4');
    expect(sizes(plan('minicpm-v', 100, 2000))).toEqual(['98x2002']);
  });
});

// ---- properties over a sweep of sizes ------------------------------------------------------------

const SWEEP: [number, number][] = [];
for (const w of [1, 14, 100, 333, 448, 640, 895, 1024, 1344, 1920, 3000, 4032, 8000]) {
  for (const h of [1, 37, 224, 448, 500, 768, 1080, 1344, 2048, 4000, 9000]) SWEEP.push([w, h]);
}

function checkPlan(p: TilePlan): void {
  const { width: W, height: H } = p.image;
  // Every grid layer tiles the image exactly: boxes inside it, areas summing to W*H.
  for (const g of p.grids) {
    const ts = p.tiles.filter((t) => t.layer === g.layer);
    expect(ts).toHaveLength(g.cols * g.rows);
    let area = 0;
    for (const t of ts) {
      expect(t.crop.x0).toBeGreaterThanOrEqual(0);
      expect(t.crop.y0).toBeGreaterThanOrEqual(0);
      expect(t.crop.x1).toBeLessThanOrEqual(W + 1e-9);
      expect(t.crop.y1).toBeLessThanOrEqual(H + 1e-9);
      area += (t.crop.x1 - t.crop.x0) * (t.crop.y1 - t.crop.y0);
    }
    expect(Math.abs(area - W * H)).toBeLessThan(1e-6 * W * H);
  }
  for (const t of p.tiles.filter((x) => x.kind === 'global')) expect(t.crop).toEqual({ x0: 0, y0: 0, x1: W, y1: H });
  // Batches: every tile exactly once, shapes match, counts consistent.
  const seen = p.batches.flatMap((b) => b.tiles).sort((a, b) => a - b);
  expect(seen).toEqual(p.tiles.map((t) => t.index));
  for (const b of p.batches) {
    for (const i of b.tiles) expect([b.shape[2], b.shape[3]]).toEqual([p.tiles[i]!.resize.height, p.tiles[i]!.resize.width]);
    expect(b.tiles.length + b.padded).toBe(b.shape[0]);
  }
  expect(p.tokens.encoder).toBe(p.tiles.reduce((s, t) => s + t.encoderTokens, 0));
  expect(p.tokens.projected).toBe(p.tiles.reduce((s, t) => s + t.projectedTokens, 0));
  expect(JSON.parse(JSON.stringify(p))).toEqual(p);
}

describe('properties over a size sweep', () => {
  it(`minicpm-v: ${SWEEP.length} sizes: grid from N-1..N+1 within 2..9 slices, patch-multiple slices near 448^2, 64 tokens each`, () => {
    for (const [w, h] of SWEEP) {
      const p = plan('minicpm-v', w, h);
      checkPlan(p);
      const { width: ew, height: eh } = p.effectiveImage;
      expect(ew * eh).toBeLessThanOrEqual(1_800_000);
      const n = Math.min(Math.ceil((ew * eh) / 448 ** 2), 9);
      const g = p.grids[0];
      if (n <= 1) expect(g).toBeUndefined();
      else {
        expect(g!.cols * g!.rows).toBeGreaterThanOrEqual(Math.max(2, n - 1));
        expect(g!.cols * g!.rows).toBeLessThanOrEqual(Math.min(9, n + 1));
      }
      expect(p.tiles.length).toBeLessThanOrEqual(10);
      for (const t of p.tiles) {
        expect(t.resize.width % 14).toBe(0);
        expect(t.resize.height % 14).toBe(0);
        expect(t.encoderTokens).toBe((t.resize.width / 14) * (t.resize.height / 14));
        // Sliced and downscaled sources sit near 448^2 unless the aspect is so extreme that the short side is one patch.
        if (Math.min(t.resize.width, t.resize.height) > 14 * 4)
          expect(Math.abs((t.resize.width * t.resize.height) / 448 ** 2 - 1)).toBeLessThan(0.3);
      }
      expect(p.tokens.projected).toBe(64 * p.tiles.length);
    }
  });

  it(`internvl: ${SWEEP.length} sizes: 1..12 tiles of 448^2, thumbnail iff > 1 tile, 256 tokens per tile`, () => {
    for (const [w, h] of SWEEP) {
      const p = plan('internvl', w, h);
      checkPlan(p);
      const n = p.grids[0]!.cols * p.grids[0]!.rows;
      expect(n).toBeGreaterThanOrEqual(1);
      expect(n).toBeLessThanOrEqual(12);
      expect(p.tiles.length).toBe(n > 1 ? n + 1 : 1);
      expect(p.tokens.projected).toBe(256 * p.tiles.length);
    }
  });

  it(`mini-monkey: ${SWEEP.length} sizes: detail 4..12, adaptive 3..7 and never a divisor grid of the detail grid, <= 20 tiles`, () => {
    for (const [w, h] of SWEEP) {
      const p = plan('mini-monkey', w, h);
      checkPlan(p);
      const d = p.grids.find((g) => g.layer === 'detail')!,
        a = p.grids.find((g) => g.layer === 'adaptive')!;
      expect(d.cols * d.rows).toBeGreaterThanOrEqual(4);
      expect(d.cols * d.rows).toBeLessThanOrEqual(12);
      expect(a.cols * a.rows).toBeGreaterThanOrEqual(3);
      expect(a.cols * a.rows).toBeLessThanOrEqual(7);
      expect(d.cols % a.cols === 0 && d.rows % a.rows === 0).toBe(false);
      expect(p.tiles.length).toBe(d.cols * d.rows + a.cols * a.rows + 1);
      expect(p.tiles.length).toBeLessThanOrEqual(20);
    }
  });

  it(`bluelm-v: ${SWEEP.length} sizes: <= 9 patches, + thumbnail, batches of 4, 196 tokens per patch; never a bigger grid than alpha 0 picks`, () => {
    for (const [w, h] of SWEEP) {
      const p = plan('bluelm-v', w, h);
      checkPlan(p);
      const n = p.grids[0]!.cols * p.grids[0]!.rows;
      expect(n).toBeLessThanOrEqual(9);
      expect(p.tiles.length).toBe(n + 1);
      expect(p.batches.length).toBe(Math.ceil(p.tiles.length / 4));
      expect(p.tokens.projected).toBe(196 * p.tiles.length);
      const strict = plan('bluelm-v', w, h, { alpha: 0 }).grids[0]!;
      expect(n).toBeLessThanOrEqual(strict.cols * strict.rows);
    }
  });

  it('same input and options give the same plan and the same SVG bytes', () => {
    for (const pol of POLICIES) {
      const a = plan(pol, 1234, 777),
        b = plan(pol, 1234, 777);
      expect(JSON.stringify(a)).toBe(JSON.stringify(b));
      const svg = planToSvg(a);
      expect(svg).toBe(planToSvg(b));
      expect(svg.startsWith('<svg')).toBe(true);
      expect((svg.match(/<rect /g) ?? []).length).toBe(a.tiles.length + 1);
    }
  });

  it('rejects bad sizes and options', () => {
    expect(() => parseImageSize('12x')).toThrow(/WxH/);
    expect(() => plan('internvl', 0, 10)).toThrow(/image size/);
    expect(() => plan('internvl', 10, 10, { alpha: 0.1 })).toThrow(/no option 'alpha'/);
    expect(() => plan('internvl', 10, 10, { minTiles: 5, maxTiles: 2 })).toThrow(/min-tiles/);
    expect(() => plan('minicpm-v', 10, 10, { sliceSize: 0 })).toThrow(/positive integer/);
    expect(() => plan('bluelm-v', 10, 10, { batch: 2.5 })).toThrow(/positive integer/);
    expect(() => plan('internvl', 10, 10, { downsample: 2 })).toThrow(/\(0, 1\]/);
  });
});

describe('edgec plan', () => {
  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '',
      err = '';
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      out += String(s);
      return true;
    });
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
      err += String(s);
      return true;
    });
    try {
      return { code: await main(args), out, err };
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
  }

  it('prints JSON equal to the library plan and writes the SVG', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-plan-'));
    try {
      const svg = path.join(dir, 'p.svg');
      const r = await run([
        'plan',
        '--image',
        '768x1536',
        '--policy',
        'bluelm-v',
        '--alpha',
        '0.2',
        '--batch',
        '2',
        '--json',
        '--svg',
        svg,
      ]);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toEqual(JSON.parse(JSON.stringify(plan('bluelm-v', 768, 1536, { alpha: 0.2, batch: 2 }))));
      expect(fs.readFileSync(svg, 'utf8')).toBe(planToSvg(plan('bluelm-v', 768, 1536, { alpha: 0.2, batch: 2 })));
      const t = await run(['plan', '--image', '1344x1344', '--policy', 'internvl', '--max-tiles', '6']);
      expect(t.out).toMatch(/main 2x2/);
      expect(t.out).toMatch(/1280 after projector/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad input exits 2 with one line', async () => {
    const r = await run(['plan', '--image', '10by10', '--policy', 'internvl']);
    expect(r.code).toBe(2);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect((await run(['plan', '--image', '10x10', '--policy', 'internvl', '--alpha', '1'])).code).toBe(2);
    expect((await run(['plan', '--image', '10x10', '--policy', 'nope'])).code).toBe(2);
  });
});
