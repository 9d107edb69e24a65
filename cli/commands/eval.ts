// `edgec eval --model fp32.onnx --candidate q.onnx --tokens FILE`: perplexity, its increase, KL and top-1
// agreement of quantized candidates against their fp32 model, with bootstrap standard errors.
import type { Command } from 'commander';
import { InputError } from '../../ir/index.js';
import { evaluateLm, type Figure } from '../../runtime/eval.js';
import type { RegisterCommand } from './index.js';
import { table } from '../format.js';

interface EvalCliOpts {
  model?: string;
  candidate: string[];
  tokens?: string;
  inputs: string[];
  bootstrap: string;
  seed: string;
  json?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];
const pm = (f: Figure, digits: number, exp = false) => {
  const v = exp ? f.value.toExponential(digits) : f.value.toFixed(digits);
  return Number.isNaN(f.stderr) ? v : `${v} ± ${exp ? f.stderr.toExponential(1) : f.stderr.toFixed(digits)}`;
};

export const registerEval: RegisterCommand = (program: Command) => {
  program
    .command('eval')
    .description('perplexity of a decoder and its quantized candidates on held-out tokens; KL and top-1 agreement against it')
    .option('--model <file>', 'the fp32 decoder (input_ids [, attention_mask] -> logits)')
    .option('--candidate <file>', 'a quantized model to compare (repeatable; the reference runs once)', collect, [])
    .option('--tokens <file>', 'held-out windows: token ids, one window per line')
    .option('--inputs <dir>', 'held-out windows as ONNX test data (every batch row a window; repeatable)', collect, [])
    .option('--bootstrap <n>', 'resamples of the windows for the standard errors (0: none)', '1000')
    .option('--seed <n>', 'seed of the resampling', '1234')
    .option('--json', 'print the figures as JSON')
    .addHelpText(
      'after',
      `
Figures: perplexity = exp(mean next-token NLL); delta = candidate minus reference (paired over the same windows);
KL = mean KL(reference || candidate) per position, nats; top-1 = positions whose argmax agrees. "± x" is the
standard error from resampling whole windows.

Examples:
  $ edgec eval --model fixtures/lm/model.onnx --candidate q4.onnx --tokens fixtures/lm/windows.txt
  $ edgec eval --model model.onnx --candidate rtn.onnx --candidate gptq.onnx --inputs fixtures/lm --json
`,
    )
    .action(async (opts: EvalCliOpts) => {
      if (!opts.model) throw new InputError('--model <file> is required: the fp32 decoder the candidates are compared with');
      for (const [flag, v] of [
        ['--bootstrap', opts.bootstrap],
        ['--seed', opts.seed],
      ] as const)
        if (!/^\d+$/.test(v)) throw new InputError(`${flag} '${v}' is not a non-negative integer`);
      const r = await evaluateLm(opts.model, opts.candidate, {
        tokens: opts.tokens,
        inputs: opts.inputs,
        bootstrap: Number(opts.bootstrap),
        seed: Number(opts.seed),
      });
      if (opts.json) {
        const { inputsText, ...rest } = r;
        void inputsText;
        process.stdout.write(`${JSON.stringify(rest, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
        return;
      }
      const rows = [
        ['model', 'perplexity', 'delta ppl', 'KL (nats)', 'top-1'],
        [r.reference.path, pm(r.reference.perplexity, 3), '', '', ''],
        ...r.candidates.map((c) => [c.path, pm(c.perplexity, 3), pm(c.perplexityDelta, 3), pm(c.kl, 2, true), pm(c.top1, 4)]),
      ];
      process.stdout.write(`${table(rows, '', [false, true, true, true, true]).join('\n')}\n`);
      process.stdout.write(
        `${r.windows} windows, ${r.scored} next tokens scored, ${r.positions} positions compared; ` +
          `± standard error over ${r.bootstrap} window resamples; measured on ${r.inputsText}\n`,
      );
    });
};
