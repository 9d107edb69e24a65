// ONNX Resize (opsets 11-19) for constant folding: nearest / linear / cubic, every coordinate
// transformation mode, nearest_mode, cubic_coeff_a, exclude_outside, extrapolation_value and
// axes. Interpolation is separable, so it runs one axis at a time in float64. antialias=1 and
// keep_aspect_ratio_policy other than 'stretch' are not implemented (the node is left unfolded).
import { Node, Tensor, isFloat } from '../../ir/index.js';
import { Unsupported, make, nums, registerEvaluator, strides } from './index.js';

type CoordMode =
  | 'half_pixel'
  | 'half_pixel_symmetric'
  | 'pytorch_half_pixel'
  | 'align_corners'
  | 'asymmetric'
  | 'tf_half_pixel_for_nn'
  | 'tf_crop_and_resize';

interface AxisSpec {
  inSize: number;
  outSize: number;
  scale: number;
  roiStart: number;
  roiEnd: number;
}

/** Output coordinate -> input coordinate, per the spec's coordinate_transformation_mode formulas.
 * In float32 step by step as onnxruntime computes it: nearest picks on exact .5 ties then agree
 * with the runtime that runs the unfolded graph. align_corners uses the integer output length
 * (onnxruntime; the spec's numpy reference uses scale * length there). */
function toInput(mode: CoordMode, x: number, a: AxisSpec): number {
  const f = Math.fround;
  const { inSize, outSize } = a;
  const scale = f(a.scale);
  const hp = () => f(f(f(x + 0.5) / scale) - 0.5);
  switch (mode) {
    case 'half_pixel':
      return hp();
    case 'half_pixel_symmetric': {
      const adjustment = f(outSize / f(scale * inSize));
      const offset = f(f(inSize / 2) * f(1 - adjustment));
      return f(f(offset + f(f(x + 0.5) / scale)) - 0.5);
    }
    case 'pytorch_half_pixel':
      return outSize > 1 ? hp() : 0;
    case 'align_corners':
      return outSize === 1 ? 0 : f(f(x * (inSize - 1)) / (outSize - 1));
    case 'asymmetric':
      return f(x / scale);
    case 'tf_half_pixel_for_nn':
      return f(f(x + 0.5) / scale);
    case 'tf_crop_and_resize': {
      const s = f(a.roiStart),
        e = f(a.roiEnd);
      return outSize > 1 ? f(f(s * (inSize - 1)) + f(f(x * f(e - s)) * (inSize - 1)) / (outSize - 1)) : f(f(0.5 * f(s + e)) * (inSize - 1));
    }
  }
}

function nearestIndex(x: number, mode: string): number {
  switch (mode) {
    case 'round_prefer_floor':
      return x === Math.floor(x) + 0.5 ? Math.floor(x) : Math.round(x);
    case 'round_prefer_ceil':
      return x === Math.floor(x) + 0.5 ? Math.ceil(x) : Math.round(x);
    case 'floor':
      return Math.floor(x);
    case 'ceil':
      return Math.ceil(x);
    default:
      throw new Unsupported(`nearest_mode '${mode}'`);
  }
}

function cubicCoeffs(t: number, A: number): number[] {
  const t1 = t + 1,
    t2 = 1 - t,
    t3 = 2 - t;
  return [
    ((A * t1 - 5 * A) * t1 + 8 * A) * t1 - 4 * A,
    ((A + 2) * t - (A + 3)) * t * t + 1,
    ((A + 2) * t2 - (A + 3)) * t2 * t2 + 1,
    ((A * t3 - 5 * A) * t3 + 8 * A) * t3 - 4 * A,
  ];
}

/** For each output position: input indices and weights (NaN index = extrapolate). */
function axisTaps(
  a: AxisSpec,
  mode: string,
  coord: CoordMode,
  nearestMode: string,
  A: number,
  excludeOutside: boolean,
): { idx: number[]; w: number[]; outside: boolean }[] {
  const taps: { idx: number[]; w: number[]; outside: boolean }[] = [];
  const n = a.inSize;
  const clampI = (i: number) => Math.min(Math.max(i, 0), n - 1);
  for (let o = 0; o < a.outSize; o++) {
    const x = toInput(coord, o, a);
    const outside = coord === 'tf_crop_and_resize' && (x < 0 || x > n - 1);
    if (mode === 'nearest') {
      // The multi-step formulas (half_pixel_symmetric, tf_crop_and_resize) are not reproduced to
      // the ulp (onnxruntime picked pixel 0 for a coordinate we compute as 0.5000002): a nearest
      // pick that close to a rounding boundary is left to the runtime.
      if (coord === 'half_pixel_symmetric' || coord === 'tf_crop_and_resize') {
        const edge = nearestMode.startsWith('round') ? Math.floor(x) + 0.5 : Math.round(x);
        if (Math.abs(x - edge) < 1e-5 * Math.max(1, Math.abs(x)))
          throw new Unsupported(`nearest coordinate ${x} sits on a rounding boundary`);
      }
      taps.push({ idx: [clampI(nearestIndex(x, nearestMode))], w: [1], outside });
    } else if (mode === 'linear') {
      const xc = Math.min(Math.max(x, 0), n - 1);
      const f = Math.floor(xc),
        t = xc - f;
      taps.push({ idx: [f, clampI(f + 1)], w: [1 - t, t], outside });
    } else {
      const f = Math.floor(x),
        t = x - f;
      const c = cubicCoeffs(t, A);
      const idx = [f - 1, f, f + 1, f + 2];
      if (excludeOutside) {
        let s = 0;
        for (let k = 0; k < 4; k++) {
          if (idx[k]! < 0 || idx[k]! >= n) c[k] = 0;
          s += c[k]!;
        }
        for (let k = 0; k < 4; k++) c[k] = s === 0 ? 0 : c[k]! / s;
      }
      taps.push({ idx: idx.map(clampI), w: c, outside });
    }
  }
  return taps;
}

/** Resize one axis of a row-major array. */
function resizeAxis(
  src: Float64Array,
  dims: number[],
  axis: number,
  taps: ReturnType<typeof axisTaps>,
  extrapolation: number,
): { data: Float64Array; dims: number[] } {
  const outDims = [...dims];
  outDims[axis] = taps.length;
  const st = strides(dims);
  const outer = dims.slice(0, axis).reduce((p, d) => p * d, 1);
  const inner = st[axis]!;
  const inLen = dims[axis]!;
  const out = new Float64Array(outer * taps.length * inner);
  for (let b = 0; b < outer; b++) {
    const sBase = b * inLen * inner,
      oBase = b * taps.length * inner;
    for (let o = 0; o < taps.length; o++) {
      const tp = taps[o]!;
      const dst = oBase + o * inner;
      if (tp.outside) {
        out.fill(extrapolation, dst, dst + inner);
        continue;
      }
      for (let k = 0; k < tp.idx.length; k++) {
        const w = tp.w[k]!;
        if (w === 0) continue;
        const s = sBase + tp.idx[k]! * inner;
        for (let i = 0; i < inner; i++) out[dst + i] += w * src[s + i]!;
      }
    }
  }
  return { data: out, dims: outDims };
}

export function evalResize(node: Node, inputs: (Tensor | null)[]): Tensor[] {
  const x = inputs[0];
  if (!x) throw new Unsupported('missing X');
  if (node.inputs.length === 2) throw new Unsupported('Resize-10 form (X, scales) is not folded');
  const mode = node.attrString('mode', 'nearest');
  const coord = node.attrString('coordinate_transformation_mode', 'half_pixel') as CoordMode;
  const nearestMode = node.attrString('nearest_mode', 'round_prefer_floor');
  const A = node.attrFloat('cubic_coeff_a', -0.75);
  const excludeOutside = node.attrInt('exclude_outside', 0) === 1;
  const extrapolation = node.attrFloat('extrapolation_value', 0);
  if (node.attrInt('antialias', 0) !== 0) throw new Unsupported('antialias=1');
  if (node.attrString('keep_aspect_ratio_policy', 'stretch') !== 'stretch') throw new Unsupported('keep_aspect_ratio_policy');
  if (!['nearest', 'linear', 'cubic'].includes(mode)) throw new Unsupported(`mode '${mode}'`);
  if (
    ![
      'half_pixel',
      'half_pixel_symmetric',
      'pytorch_half_pixel',
      'align_corners',
      'asymmetric',
      'tf_half_pixel_for_nn',
      'tf_crop_and_resize',
    ].includes(coord)
  )
    throw new Unsupported(`coordinate_transformation_mode '${coord}'`);
  if (mode !== 'nearest' && !isFloat(x.dtype)) throw new Unsupported(`${mode} resize of an integer tensor`);
  const rank = x.dims.length;
  const axes = node.hasAttr('axes') ? node.attrInts('axes').map((a) => (a < 0 ? a + rank : a)) : [...Array(rank).keys()];
  const given = (t: Tensor | null | undefined) => (t && t.size > 0 ? Array.from(nums(t)) : undefined);
  const roi = given(inputs[1]),
    scalesIn = given(inputs[2]),
    sizesIn = given(inputs[3]);
  if (!scalesIn === !sizesIn) throw new Unsupported('exactly one of scales and sizes must be given');
  const specs: AxisSpec[] = x.dims.map((d) => ({ inSize: d, outSize: d, scale: 1, roiStart: 0, roiEnd: 1 }));
  axes.forEach((ax, k) => {
    const s = specs[ax];
    if (!s) throw new Unsupported(`axis ${ax} out of range`);
    if (roi) {
      s.roiStart = roi[k]!;
      s.roiEnd = roi[k + axes.length]!;
    }
    if (scalesIn) {
      s.scale = scalesIn[k]!;
      if (!(s.scale > 0)) throw new Unsupported(`scale ${s.scale}`);
      const crop = coord === 'tf_crop_and_resize' ? s.roiEnd - s.roiStart : 1;
      s.outSize = Math.floor(s.inSize * crop * s.scale);
    } else {
      s.outSize = sizesIn![k]!;
      s.scale = s.outSize / s.inSize;
    }
  });
  let data = nums(x);
  let dims = [...x.dims];
  for (let ax = 0; ax < rank; ax++) {
    const s = specs[ax]!;
    const identity = s.outSize === s.inSize && s.scale === 1 && coord !== 'tf_crop_and_resize' && coord !== 'tf_half_pixel_for_nn';
    if (identity) continue;
    if (s.inSize === 0 || s.outSize < 0) throw new Unsupported('empty axis');
    ({ data, dims } = resizeAxis(data, dims, ax, axisTaps(s, mode, coord, nearestMode, A, excludeOutside), extrapolation));
  }
  return [make(x.dtype, dims, data)];
}

registerEvaluator('Resize', evalResize);
