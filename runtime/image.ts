// Images for `edgec run`: PNG (pngjs) and JPEG (jpeg-js) decoded to RGB floats in [0, 1], cropped
// and resized (bilinear, half-pixel centres as PIL/torchvision without antialias), normalized to
// CHW pixel_values.
import fs from 'node:fs';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { InputError } from '../ir/index.js';

/** Interleaved RGB in [0, 1]. */
export interface RgbImage {
  width: number;
  height: number;
  data: Float32Array;
}

export function decodeImage(file: string): RgbImage {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    throw new InputError('no such image file', file);
  }
  let width: number, height: number, rgba: Uint8Array;
  try {
    if (buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
      const png = PNG.sync.read(buf);
      ({ width, height } = png);
      rgba = png.data;
    } else if (buf[0] === 0xff && buf[1] === 0xd8) {
      const j = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
      ({ width, height } = j);
      rgba = j.data;
    } else throw new InputError('is not a PNG or JPEG image (convert it to one)', file);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot decode the image: ${(e as Error).message}`, file);
  }
  const data = new Float32Array(width * height * 3);
  for (let i = 0, j = 0; i < width * height; i++, j += 4) {
    data[i * 3] = rgba[j]! / 255;
    data[i * 3 + 1] = rgba[j + 1]! / 255;
    data[i * 3 + 2] = rgba[j + 2]! / 255;
  }
  return { width, height, data };
}

/** The region [x0, x1) x [y0, y1) (source pixels, may be fractional) resized to w x h, bilinear. */
export function cropResize(img: RgbImage, box: { x0: number; y0: number; x1: number; y1: number }, w: number, h: number): RgbImage {
  const out = new Float32Array(w * h * 3);
  const sx = (box.x1 - box.x0) / w,
    sy = (box.y1 - box.y0) / h;
  const clamp = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
  for (let y = 0; y < h; y++) {
    const fy = clamp(box.y0 + (y + 0.5) * sy - 0.5, img.height - 1);
    const y0 = Math.floor(fy),
      y1 = Math.min(y0 + 1, img.height - 1),
      dy = fy - y0;
    for (let x = 0; x < w; x++) {
      const fx = clamp(box.x0 + (x + 0.5) * sx - 0.5, img.width - 1);
      const x0 = Math.floor(fx),
        x1 = Math.min(x0 + 1, img.width - 1),
        dx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 3 + c]!;
        out[(y * w + x) * 3 + c] = (p(y0, x0) * (1 - dx) + p(y0, x1) * dx) * (1 - dy) + (p(y1, x0) * (1 - dx) + p(y1, x1) * dx) * dy;
      }
    }
  }
  return { width: w, height: h, data: out };
}

export interface Normalize {
  mean: [number, number, number];
  std: [number, number, number];
}

/** SigLIP / CLIP-style default when the artifact carries no preprocessor_config.json. */
export const DEFAULT_NORMALIZE: Normalize = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };

/** CHW float32 `(x - mean) / std`. */
export function toPixelValues(img: RgbImage, n: Normalize = DEFAULT_NORMALIZE): Float32Array {
  const hw = img.width * img.height;
  const out = new Float32Array(3 * hw);
  for (let i = 0; i < hw; i++) for (let c = 0; c < 3; c++) out[c * hw + i] = (img.data[i * 3 + c]! - n.mean[c]!) / n.std[c]!;
  return out;
}

/** A seeded synthetic scene: a colour gradient with a few random filled discs, rings, boxes and bars,
 * edges antialiased. Calibration stand-in when no image is given: trained conv nets fire far
 * harder on edges and shapes than on white noise (a trained classifier's SE-block activations
 * reached 18x the range noise gave them). `rand` in [0, 1). */
export function syntheticScene(width: number, height: number, rand: () => number): RgbImage {
  const data = new Float32Array(width * height * 3);
  const c0 = [rand(), rand(), rand()],
    c1 = [rand(), rand(), rand()],
    angle = rand() * Math.PI * 2;
  const [ux, uy] = [Math.cos(angle), Math.sin(angle)];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = Math.min(1, Math.max(0, 0.5 + ((x / width - 0.5) * ux + (y / height - 0.5) * uy)));
      for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = c0[c]! * (1 - t) + c1[c]! * t;
    }
  }
  const shapes = 2 + Math.floor(rand() * 5),
    side = Math.min(width, height);
  for (let k = 0; k < shapes; k++) {
    const kind = Math.floor(rand() * 4),
      col = [rand(), rand(), rand()];
    const cx = rand() * width,
      cy = rand() * height,
      r = side * (0.08 + rand() * 0.3),
      w = side * (0.03 + rand() * 0.08);
    // Signed distance (pixels) to the shape's edge, negative inside.
    const dist = (x: number, y: number): number => {
      const dx = x - cx,
        dy = y - cy,
        d = Math.hypot(dx, dy);
      if (kind === 0) return d - r;
      if (kind === 1) return Math.abs(d - r) - w;
      if (kind === 2) return Math.max(Math.abs(dx), Math.abs(dy)) - r;
      return Math.min(Math.max(Math.abs(dx) - r, Math.abs(dy) - w), Math.max(Math.abs(dx) - w, Math.abs(dy) - r));
    };
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const a = Math.min(1, Math.max(0, 0.5 - dist(x + 0.5, y + 0.5)));
        if (!a) continue;
        for (let c = 0; c < 3; c++) {
          const i = (y * width + x) * 3 + c;
          data[i] = data[i]! * (1 - a) + col[c]! * a;
        }
      }
    }
  }
  return { width, height, data };
}

/** A PNG of an RGB image (tests and examples write their own inputs). */
export function encodePng(img: RgbImage): Buffer {
  const png = new PNG({ width: img.width, height: img.height });
  for (let i = 0; i < img.width * img.height; i++) {
    for (let c = 0; c < 3; c++) png.data[i * 4 + c] = Math.round(Math.min(Math.max(img.data[i * 3 + c]!, 0), 1) * 255);
    png.data[i * 4 + 3] = 255;
  }
  return PNG.sync.write(png);
}
