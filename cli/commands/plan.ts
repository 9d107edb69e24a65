// `edgec plan --image WxH --policy P [--json] [--svg file] [policy options]`: how an image is tiled
// for the vision encoder, the encoder batches and the visual token counts.
import fs from 'node:fs';
import type { Command } from 'commander';
import { InputError } from '../../ir/index.js';
import { POLICIES, PolicyName, TilePlan, parseImageSize, planImage, planToSvg } from '../../targets/plan/index.js';
import type { RegisterCommand } from './index.js';
import { table } from '../format.js';

/** CLI flag -> option name per policy (a flag that does not apply to a policy is an error). */
const FLAGS: { flag: string; attr: string; help: string; keys: Partial<Record<PolicyName, string>> }[] = [
  {
    flag: '--slice-size <n>',
    attr: 'sliceSize',
    help: 'tile/slice/patch side in pixels',
    keys: { 'minicpm-v': 'sliceSize', internvl: 'tileSize', 'mini-monkey': 'tileSize', 'bluelm-v': 'patch' },
  },
  { flag: '--max-slices <n>', attr: 'maxSlices', help: 'minicpm-v: most slices (N < 10)', keys: { 'minicpm-v': 'maxSlices' } },
  { flag: '--max-pixels <n>', attr: 'maxPixels', help: 'minicpm-v: downscale above this many pixels', keys: { 'minicpm-v': 'maxPixels' } },
  { flag: '--query-num <n>', attr: 'queryNum', help: 'minicpm-v: resampler queries per slice', keys: { 'minicpm-v': 'queryNum' } },
  {
    flag: '--min-tiles <n>',
    attr: 'minTiles',
    help: 'internvl: fewest tiles; mini-monkey: detail layer fewest',
    keys: { internvl: 'minTiles', 'mini-monkey': 'detailMin' },
  },
  {
    flag: '--max-tiles <n>',
    attr: 'maxTiles',
    help: 'internvl: most tiles; mini-monkey: detail layer most',
    keys: { internvl: 'maxTiles', 'mini-monkey': 'detailMax' },
  },
  {
    flag: '--adaptive-min <n>',
    attr: 'adaptiveMin',
    help: 'mini-monkey: adaptive layer fewest tiles',
    keys: { 'mini-monkey': 'adaptiveMin' },
  },
  {
    flag: '--adaptive-max <n>',
    attr: 'adaptiveMax',
    help: 'mini-monkey: adaptive layer most tiles',
    keys: { 'mini-monkey': 'adaptiveMax' },
  },
  { flag: '--alpha <x>', attr: 'alpha', help: 'bluelm-v: relaxed matching threshold', keys: { 'bluelm-v': 'alpha' } },
  { flag: '--max-patches <n>', attr: 'maxPatches', help: 'bluelm-v: most grid patches', keys: { 'bluelm-v': 'maxPatches' } },
  { flag: '--max-side <n>', attr: 'maxSide', help: 'bluelm-v: most patches along one side', keys: { 'bluelm-v': 'maxSide' } },
  {
    flag: '--patch-size <n>',
    attr: 'patchSize',
    help: 'ViT patch size',
    keys: { 'minicpm-v': 'patchSize', internvl: 'patchSize', 'mini-monkey': 'patchSize', 'bluelm-v': 'vitPatch' },
  },
  {
    flag: '--downsample <x>',
    attr: 'downsample',
    help: 'internvl/mini-monkey: pixel-shuffle factor',
    keys: { internvl: 'downsample', 'mini-monkey': 'downsample' },
  },
  {
    flag: '--batch <n>',
    attr: 'batch',
    help: 'tiles per encoder call (static batch)',
    keys: { 'minicpm-v': 'batch', internvl: 'batch', 'mini-monkey': 'batch', 'bluelm-v': 'batch' },
  },
];

export const registerPlan: RegisterCommand = (program: Command) => {
  const cmd = program
    .command('plan')
    .description('tile an image for a vision encoder (MiniCPM-V, BlueLM-V, InternVL, Mini-Monkey rules): tiles, batches, tokens')
    .requiredOption('--image <WxH>', 'image size, e.g. 1344x896')
    .requiredOption('--policy <name>', POLICIES.join('|'))
    .option('--json', 'print the plan as JSON (the preprocessing spec for manifests)')
    .option('--svg <file>', 'write an SVG of the tiles over the image')
    .option('--no-thumbnail', 'internvl/bluelm-v: no global thumbnail tile')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec plan --image 1344x896 --policy minicpm-v
  $ edgec plan --image 1920x1080 --policy internvl --json --svg tiles.svg
`,
    );
  for (const f of FLAGS) cmd.option(f.flag, f.help);
  cmd.action((opts: Record<string, string | boolean | undefined>) => {
    const policy = String(opts.policy) as PolicyName;
    if (!POLICIES.includes(policy)) throw new InputError(`--policy must be one of ${POLICIES.join('|')}, got '${policy}'`);
    let image;
    try {
      image = parseImageSize(String(opts.image));
    } catch (e) {
      throw new InputError(`--image: ${(e as Error).message}`);
    }
    const options: Record<string, number | boolean> = {};
    for (const f of FLAGS) {
      const v = opts[f.attr];
      if (v === undefined) continue;
      const key = f.keys[policy];
      if (!key) throw new InputError(`${f.flag.split(' ')[0]} does not apply to policy ${policy}`);
      const n = Number(v);
      if (!Number.isFinite(n)) throw new InputError(`${f.flag.split(' ')[0]} must be a number, got '${String(v)}'`);
      options[key] = n;
    }
    if (opts.thumbnail === false) {
      if (policy !== 'internvl' && policy !== 'bluelm-v') throw new InputError(`--no-thumbnail does not apply to policy ${policy}`);
      options.thumbnail = false;
    }
    let plan: TilePlan;
    try {
      plan = planImage(policy, image, options);
    } catch (e) {
      throw new InputError((e as Error).message);
    }
    if (opts.svg) fs.writeFileSync(String(opts.svg), planToSvg(plan));
    process.stdout.write(opts.json ? `${JSON.stringify(plan, null, 2)}\n` : formatPlan(plan));
  });
};

const r2 = (v: number) => String(Math.round(v * 100) / 100);

export function formatPlan(p: TilePlan): string {
  const out: string[] = [];
  out.push(
    `${p.policy}  image ${p.image.width}x${p.image.height}${p.effectiveImage.width !== p.image.width || p.effectiveImage.height !== p.image.height ? ` (tiled as ${p.effectiveImage.width}x${p.effectiveImage.height})` : ''}`,
  );
  out.push(`  grids    ${p.grids.map((g) => `${g.layer} ${g.cols}x${g.rows}`).join(', ') || 'none (global slice only)'}`);
  out.push(`  tiles    ${p.tiles.length}   sizes ${p.tileSizes.map((s) => `${s.width}x${s.height}`).join(', ')}`);
  out.push(`  batches  ${p.batches.map((b) => `[${b.shape.join('x')}]${b.padded ? ` (${b.padded} padded)` : ''}`).join(' ')}`);
  out.push(`  tokens   ${p.tokens.encoder} encoder -> ${p.tokens.projected} after projector   (${p.tokens.rule})`);
  for (const r of p.reasoning) out.push(`  why      ${r}`);
  out.push('');
  out.push(
    ...table(
      [
        ['#', 'layer', 'row', 'col', 'crop x0,y0-x1,y1 (source px)', 'resize', 'tokens'],
        ...p.tiles.map((t) => [
          String(t.index),
          t.layer,
          String(t.row),
          String(t.col),
          `${r2(t.crop.x0)},${r2(t.crop.y0)}-${r2(t.crop.x1)},${r2(t.crop.y1)}`,
          `${t.resize.width}x${t.resize.height}`,
          `${t.encoderTokens}->${t.projectedTokens}`,
        ]),
      ],
      '  ',
    ),
  );
  return `${out.join('\n')}\n`;
}
