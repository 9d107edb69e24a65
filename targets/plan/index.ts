// Tiling planner entry: one call for every policy. Options are numbers/booleans named as in the
// policy files (sliceSize, maxSlices, minTiles, maxTiles, alpha, batch, ...).
import { POLICIES, PolicyName, Size, TilePlan } from './types.js';
import { MINICPM_DEFAULTS, planMiniCPM } from './minicpm-v.js';
import { BLUELM_DEFAULTS, bluelmCanvas, planBlueLM } from './bluelm-v.js';
import { INTERNVL_DEFAULTS, planInternVL } from './internvl.js';
import { MINI_MONKEY_DEFAULTS, planMiniMonkey } from './mini-monkey.js';

export * from './types.js';
export { planToSvg } from './svg.js';
export { planMiniCPM, planBlueLM, planInternVL, planMiniMonkey, bluelmCanvas };

export const POLICY_DEFAULTS: Record<PolicyName, Record<string, number | boolean>> = {
  'minicpm-v': { ...MINICPM_DEFAULTS },
  'bluelm-v': { ...BLUELM_DEFAULTS },
  internvl: { ...INTERNVL_DEFAULTS },
  'mini-monkey': { ...MINI_MONKEY_DEFAULTS },
};

export function planImage(policy: PolicyName, image: Size, options: Record<string, number | boolean> = {}): TilePlan {
  if (!POLICIES.includes(policy)) throw new RangeError(`unknown policy '${policy}' (known: ${POLICIES.join(', ')})`);
  const known = POLICY_DEFAULTS[policy];
  for (const [k, v] of Object.entries(options)) {
    if (!(k in known)) throw new RangeError(`policy ${policy} has no option '${k}' (known: ${Object.keys(known).join(', ')})`);
    if (typeof v !== typeof known[k]) throw new RangeError(`option '${k}' of ${policy} must be a ${typeof known[k]}`);
    if (typeof v !== 'number') continue;
    // alpha and downsample are real numbers; everything else counts pixels, tiles or tokens.
    if (k === 'alpha' ? !(v >= 0) : k === 'downsample' ? !(v > 0 && v <= 1) : !(Number.isInteger(v) && v >= 1)) {
      throw new RangeError(
        `option '${k}' of ${policy} must be ${k === 'alpha' ? 'a number >= 0' : k === 'downsample' ? 'in (0, 1]' : 'a positive integer'}, got ${v}`,
      );
    }
  }
  switch (policy) {
    case 'minicpm-v':
      return planMiniCPM(image, options);
    case 'bluelm-v':
      return planBlueLM(image, options);
    case 'internvl':
      return planInternVL(image, options);
    case 'mini-monkey':
      return planMiniMonkey(image, options);
  }
}

/** Parse `WxH` (e.g. 1344x896). */
export function parseImageSize(s: string): Size {
  const m = /^(\d+)[xX](\d+)$/.exec(s.trim());
  if (!m) throw new RangeError(`image size must be WxH (e.g. 1344x896), got '${s}'`);
  return { width: Number(m[1]), height: Number(m[2]) };
}
