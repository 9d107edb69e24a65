// `edgec inspect <model> [--json]`: what the model is, as a table or JSON.
import type { Command } from 'commander';
import { loadModel } from '../../ir/index.js';
import { ModelSummary, summarize } from '../../ir/summary.js';
import type { RegisterCommand } from './index.js';
import { fmtBytes, fmtShape, table } from '../format.js';

export const registerInspect: RegisterCommand = (program: Command) => {
  program
    .command('inspect')
    .description('show IR version, opsets, inputs/outputs, op histogram, parameters, external data and the guessed role')
    .argument('<model>', 'ONNX model file')
    .option('--json', 'print the summary as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec inspect model.onnx                  # opsets, I/O with symbolic dims, op histogram, params by dtype, role guess
  $ edgec inspect models/tiny-mllm/decoder_model_merged.onnx --json | jq .ops
`,
    )
    .action((file: string, opts: { json?: boolean }) => {
      const s = summarize(loadModel(file));
      process.stdout.write(opts.json ? `${JSON.stringify({ file, ...s }, null, 2)}\n` : formatSummary(file, s));
    });
};

export function formatSummary(file: string, s: ModelSummary): string {
  const out: string[] = [];
  out.push(`${file}`);
  out.push(`  role        ${s.role.role}  (${s.role.evidence.join('; ')})`);
  out.push(`  ir_version  ${s.irVersion}   producer ${s.producer.name || '-'} ${s.producer.version}`.trimEnd());
  out.push(`  opsets      ${s.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}`);
  out.push(`  nodes       ${s.nodes.total}${s.nodes.subgraphs ? ` (${s.nodes.inSubgraphs} in ${s.nodes.subgraphs} subgraphs)` : ''}`);
  out.push('', 'inputs');
  out.push(
    ...table(
      s.inputs.map((v) => [v.name, v.dtype, fmtShape(v.shape)]),
      '  ',
    ),
  );
  out.push('', 'outputs');
  out.push(
    ...table(
      s.outputs.map((v) => [v.name, v.dtype, fmtShape(v.shape)]),
      '  ',
    ),
  );
  if (s.dynamic.values.length) {
    out.push('', `dynamic dims (${s.dynamic.symbols.join(', ') || 'unnamed'})`);
    out.push(
      ...table(
        s.dynamic.values.map((d) => [
          d.kind,
          d.name,
          d.dims.map((x) => (x.axis < 0 ? 'rank unknown' : `${x.axis}:${x.dim ?? '?'}`)).join(' '),
        ]),
        '  ',
      ),
    );
  }
  out.push('', 'ops');
  out.push(
    ...table(
      Object.entries(s.ops).map(([k, n]) => [k, String(n)]),
      '  ',
      [false, true],
    ),
  );
  out.push(
    '',
    `parameters  ${s.parameters.elements.toLocaleString('en-US')} in ${s.parameters.tensors} tensors, ${fmtBytes(s.parameters.bytes)}`,
  );
  out.push(
    ...table(
      Object.entries(s.parameters.byDtype).map(([k, d]) => [k, String(d.tensors), d.elements.toLocaleString('en-US'), fmtBytes(d.bytes)]),
      '  ',
      [false, true, true, true],
    ),
  );
  if (s.externalData.tensors) {
    out.push('', `external data  ${s.externalData.tensors} tensors, ${fmtBytes(s.externalData.bytes)}`);
    out.push(
      ...table(
        s.externalData.files.map((f) => [f.location, `${f.tensors} tensors`, fmtBytes(f.bytes)]),
        '  ',
        [false, true, true],
      ),
    );
  }
  if (s.largestTensors.length) {
    out.push('', `largest tensors`);
    out.push(
      ...table(
        s.largestTensors.map((t) => [t.name, t.dtype, fmtShape(t.shape), fmtBytes(t.bytes), t.external ? 'external' : '']),
        '  ',
        [false, false, false, true, false],
      ),
    );
  }
  return `${out.join('\n')}\n`;
}
