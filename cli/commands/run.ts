// `edgec run <artifact>`: the compiled MLLM end to end in onnxruntime-node, greedy decoding.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../../ir/index.js';
import { runArtifact, type RunResult } from '../../targets/run.js';
import type { OptLevel } from '../../runtime/generate.js';
import { paint } from '../progress.js';
import type { RegisterCommand } from './index.js';

interface RunCliOpts {
  image?: string;
  tokens?: string;
  prompt?: string;
  maxNewTokens: string;
  imageSize?: string;
  compare?: string;
  graphOptimization?: string;
  eos?: string;
  json?: boolean;
}

function parseIds(s: string): number[] {
  const ids = s.split(/[\s,]+/).filter(Boolean);
  if (!ids.length || ids.some((t) => !/^\d+$/.test(t))) throw new InputError(`--tokens '${s}' is not a comma-separated list of token ids`);
  return ids.map(Number);
}

function print(r: RunResult): void {
  const out = process.stdout;
  const t = r.tiling;
  const how = t
    ? ` (${t.policy}: ${t.image.width}x${t.image.height} -> ${t.grids.join(' + ')}, ${t.tiles} tiles in ${t.encoderCalls} encoder calls)`
    : r.imageSize
      ? ` (${r.imageSize.width}x${r.imageSize.height})`
      : '';
  out.write(`${r.target}: ${r.imageTokens} image tokens${how} + ${r.promptTokens} prompt tokens\n`);
  if (r.text !== undefined) out.write(`prompt ids ${r.promptIds.join(' ')}\n`);
  out.write(`generated  ${r.tokens.join(' ')}\n`);
  if (r.text !== undefined) out.write(`text       ${JSON.stringify(r.text)}\n`);
  if (r.noText) out.write(`(no text: ${r.noText})\n`);
  if (!r.reference) return;
  out.write(`fp32 source ${r.reference.tokens.join(' ')}\n`);
  if (r.reference.text !== undefined) out.write(`source text ${JSON.stringify(r.reference.text)}\n`);
  if (r.firstDivergence === null) {
    out.write(paint(`same ${r.tokens.length} tokens as the fp32 source\n`, 'green'));
    return;
  }
  const i = r.firstDivergence!;
  if (r.firstLogits) out.write(`first-step logits vs source: cosine ${r.firstLogits.cosine}, max abs ${r.firstLogits.maxAbsError}\n`);
  const gap = (t: [number, number][] | undefined) => (t ? `top-2 logit gap ${(t[0]![1] - t[1]![1]).toFixed(3)}` : '');
  out.write(
    paint(
      `first divergence at generated token ${i}: artifact ${r.tokens[i] ?? '(ended)'} (${gap(r.top2[i])}), source ${r.reference.tokens[i] ?? '(ended)'} (${gap(r.reference.top2[i])})\n`,
      'red',
    ),
  );
}

export const registerRun: RegisterCommand = (program: Command, setExit) => {
  program
    .command('run')
    .description(
      'run a compiled MLLM artifact end to end in onnxruntime-node (image -> vision encoder -> projector, prompt embeddings, decoder with KV cache, greedy)',
    )
    .argument('<artifact>', 'artifact folder (holds manifest.json)')
    .option(
      '--image <file>',
      "PNG or JPEG, resized to the compiled vision size (tiled as the manifest's policy says) and normalized (preprocessor_config.json when present)",
    )
    .option('--tokens <ids>', 'prompt token ids, comma-separated (after the image tokens)')
    .option('--prompt <text>', 'prompt text (needs tokenizer.json in the artifact)')
    .option('--max-new-tokens <n>', 'tokens to generate', '16')
    .option('--image-size <WxH>', 'encoder input size when the vision encoder is dynamic (default 224x224)')
    .option('--compare <source>', 'also run the fp32 source folder and report the first diverging token')
    .option(
      '--graph-optimization <level>',
      'onnxruntime graph optimization: disabled|basic|extended|all (default: what the manifest ships)',
    )
    .option('--eos <id>', 'stop after this token id')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec run out/webgpu --image cat.png --tokens 1,15,27 --max-new-tokens 8
  $ edgec run out/npu --image cat.png --tokens 1,15,27 --compare models/tiny-mllm   # the fp32 source, same greedy tokens?
  $ edgec run out/mobile --tokens 5,6,7 --json
  $ edgec run out/webgpu --image cat.png --prompt "Describe the image." --max-new-tokens 8   # tokenizer.json in the artifact
  $ edgec run out/npu-internvl --image photo.jpg --prompt "Describe the image." --compare models/tiny-mllm   # tiled as compiled with --policy

Exit codes: 0 ran (and, with --compare, the same tokens), 1 the tokens diverge from the source, 2 bad input.`,
    )
    .action(async (dir: string, o: RunCliOpts) => {
      if (!fs.existsSync(path.join(dir, 'manifest.json')))
        throw new InputError('is not an edgec artifact (no manifest.json); compile one first', dir);
      if (o.tokens === undefined && o.prompt === undefined)
        throw new InputError('give the prompt as --tokens 1,2,3 (or --prompt TEXT with a tokenizer)');
      const ids = o.tokens === undefined ? undefined : parseIds(o.tokens);
      const n = Number(o.maxNewTokens);
      if (!Number.isInteger(n) || n < 1) throw new InputError(`--max-new-tokens '${o.maxNewTokens}' is not a positive integer`);
      const level = o.graphOptimization as OptLevel | undefined;
      if (level && !['disabled', 'basic', 'extended', 'all'].includes(level))
        throw new InputError(`--graph-optimization must be disabled|basic|extended|all, got '${level}'`);
      const r = await runArtifact(dir, {
        image: o.image,
        ids,
        prompt: o.prompt,
        maxNewTokens: n,
        imageSize: o.imageSize,
        compare: o.compare,
        graphOptimizationLevel: level,
        eos: o.eos === undefined ? undefined : Number(o.eos),
      });
      if (o.json)
        process.stdout.write(`${JSON.stringify(r, (k, v) => (k === 'firstLogits' && v instanceof Float32Array ? undefined : v), 2)}\n`);
      else print(r);
      setExit(r.firstDivergence === undefined || r.firstDivergence === null ? 0 : 1);
    });
};
