// `edgec profile <model|artifact> --target T [--device NAME] [--measure] [--json]`: per sub-model,
// the roofline prediction on a device and (with --measure) onnxruntime's profile in the target's runtime.
import type { Command } from 'commander';
import { InputError } from '../../ir/index.js';
import { PERF_DEVICES } from '../../targets/devices.js';
import { POLICIES, parseImageSize, type PolicyName } from '../../targets/plan/index.js';
import { ProfileReport, ProfileRuntime, profileModel } from '../../targets/profile.js';
import type { RegisterCommand } from './index.js';
import { table } from '../format.js';

const ints = (s: string, flag: string): number[] =>
  s.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 0) throw new InputError(`${flag} takes non-negative integers, got '${x}'`);
    return n;
  });

export const registerProfile: RegisterCommand = (program: Command) => {
  program
    .command('profile <model>')
    .description('predicted (roofline on a device) and measured (onnxruntime profiler) time per op, decode/prefill latency, encode time')
    .requiredOption('--target <t>', 'webgpu|npu|mobile')
    .addHelpText(
      'after',
      `
Examples:
  $ edgec profile out/mobile --target mobile                      # roofline prediction per op type on the default device
  $ edgec profile out/webgpu --target webgpu --measure --json     # also measured in headless Chromium WebGPU
  $ edgec profile models/vision_encoder.onnx --target npu --policy internvl --image 1344x896`,
    )
    .option('--device <name>', `device figures: ${Object.keys(PERF_DEVICES).join('|')}`)
    .option('--measure', 'also run it: onnxruntime-node CPU (mobile, npu), WebGPU in headless Chromium (webgpu)')
    .option('--runtime <r>', 'measure on node|wasm|webgpu instead of the target default')
    .option('--runs <n>', 'measured runs after a warm-up', '3')
    .option('--past <list>', 'decode past lengths', '128,512')
    .option('--prefill <n>', 'prefill tokens', '128')
    .option('--image <WxH>', 'vision input size', '448x448')
    .option('--policy <name>', `tile --image with a policy and sum the encoder calls: ${POLICIES.join('|')}`)
    .option('--assume-bits <n>', 'cost float weights as if quantized to n bits (block 32, fp16 scales)')
    .option('--activation-bytes <n>', 'cost float activations and KV caches at n bytes per element')
    .option('--top <n>', 'slowest nodes to list', '10')
    .option('--json', 'print JSON')
    .action(async (model: string, o: Record<string, string | boolean | undefined>) => {
      const target = String(o.target);
      if (!['webgpu', 'npu', 'mobile'].includes(target)) throw new InputError(`--target must be webgpu, npu or mobile, got '${target}'`);
      const runtime = o.runtime as ProfileRuntime | undefined;
      if (runtime && !['node', 'wasm', 'webgpu'].includes(runtime))
        throw new InputError(`--runtime must be node, wasm or webgpu, got '${runtime}'`);
      const policy = o.policy as PolicyName | undefined;
      if (policy && !POLICIES.includes(policy)) throw new InputError(`--policy must be one of ${POLICIES.join('|')}`);
      let image;
      try {
        image = parseImageSize(String(o.image));
      } catch (e) {
        throw new InputError(`--image: ${(e as Error).message}`);
      }
      const r = await profileModel(model, {
        target: target as 'webgpu',
        device: o.device as string | undefined,
        measure: !!o.measure || !!runtime,
        runtime,
        runs: ints(String(o.runs), '--runs')[0],
        past: ints(String(o.past), '--past'),
        prefill: ints(String(o.prefill), '--prefill')[0],
        image,
        policy,
        topN: ints(String(o.top), '--top')[0],
        assumeWeightBits: o.assumeBits ? ints(String(o.assumeBits), '--assume-bits')[0] : undefined,
        activationBytes: o.activationBytes ? ints(String(o.activationBytes), '--activation-bytes')[0] : undefined,
      });
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatProfile(r));
    });
};

function formatProfile(r: ProfileReport): string {
  const out = [`target ${r.target}, device ${r.device} (${r.unit})`];
  for (const m of r.models) {
    out.push('', `${m.file} (${m.role})${m.unresolvedNodes ? `, ${m.unresolvedNodes} nodes with unknown shapes costed as free` : ''}`);
    const rows = [['scenario', 'predicted ms', 'tok/s', 'matmul share', 'measured wall ms', 'kernels ms', 'tok/s', 'matmul share']];
    for (const s of m.scenarios) {
      const p = s.predicted,
        x = s.measured;
      rows.push([
        s.name,
        p.totalMs.toFixed(3),
        p.tokensPerSecond?.toFixed(1) ?? '',
        `${(p.matmulShare * 100).toFixed(0)}%`,
        x ? x.wallMs.toFixed(3) : s.measureError ? `failed: ${s.measureError.slice(0, 50)}` : '',
        x ? `${x.totalMs.toFixed(3)} (${x.timer})` : '',
        x?.tokensPerSecond?.toFixed(1) ?? '',
        x ? `${(x.matmulShare * 100).toFixed(0)}%` : '',
      ]);
    }
    out.push(...table(rows, '  '));
    const last = m.scenarios[0];
    if (last) {
      const ops = (list: { op: string; ms: number }[]) =>
        list
          .slice(0, 6)
          .map((o) => `${o.op} ${o.ms.toFixed(3)}`)
          .join(', ');
      out.push(`  by op (${last.name}), predicted: ${ops(last.predicted.byOp)}`);
      if (last.measured) out.push(`  by op (${last.name}), measured on ${last.measured.runtime}: ${ops(last.measured.byOp)}`);
      if (last.measured)
        out.push(
          `  slowest nodes measured: ${last.measured.top
            .slice(0, 5)
            .map((n) => `${n.name} (${n.op}) ${n.ms.toFixed(3)}`)
            .join(', ')}`,
        );
    }
    if (m.plan)
      out.push(
        `  ${m.plan.policy} plan for ${m.plan.image.width}x${m.plan.image.height}: ${m.plan.calls.length} encoder calls, predicted ${m.plan.totalMs.toFixed(1)} ms`,
      );
  }
  out.push('', 'device figures:', ...r.deviceSources.map((s) => `  ${s}`));
  return `${out.join('\n')}\n`;
}
