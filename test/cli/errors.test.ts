// Error classes: a defect of edgec (an unexpected exception inside a pass) is exit 70 "internal
// error" naming the pass and sub-model, never bad input; its original stack shows under --verbose.
// And output that arrives whole: a long error through a slow pipe is not cut short.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, InputError, InternalError, saveModel } from '../../ir/index.js';
import { registerPass } from '../../passes/registry.js';
import { PassError, type Pass } from '../../passes/pass.js';
import { reportError } from '../../cli/main.js';
import { ROOT, cli, mlpModel, snapshot, tmpDir } from './helpers.js';

const root = tmpDir('errors');
const good = path.join(root, 'in', 'model.onnx');

function explodeInsideThePass(): never {
  const o = undefined as unknown as { field: { x: number } };
  return o.field.x as never; // a TypeError, as a real bug would raise
}

const passes: Pass[] = [
  { name: 'test-throw', description: 'throws a TypeError (a defect)', options: {}, run: () => explodeInsideThePass() },
  {
    name: 'test-input',
    description: 'rejects its input',
    options: {},
    run: () => {
      throw new InputError('has no decoder', 'model.onnx');
    },
  },
  {
    name: 'test-async-throw',
    description: 'rejects with a RangeError',
    options: {},
    run: async () => {
      await Promise.resolve();
      throw new RangeError('offset out of range');
    },
  },
];

beforeAll(() => {
  for (const p of passes) registerPass(p);
  saveModel(mlpModel(), good);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at /m);

describe('internal errors are told apart from bad input', () => {
  it('a throwing pass in optimize: exit 70, "internal error in pass", one line, nothing written', async () => {
    const before = snapshot(root);
    const out = path.join(root, 'out', 'o.onnx');
    const r = await cli('optimize', good, '-o', out, '--pipeline', 'cleanup,test-throw');
    expect(r.code).toBe(70);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^edgec: internal error in pass 'test-throw': Cannot read properties of undefined \(reading 'field'\) \(run with --verbose for details\)$/,
    );
    noStack(r.stderr);
    expect(snapshot(root)).toEqual(before);
  });

  it('--verbose shows the original stack (the cause), not only the rethrow', async () => {
    const r = await cli('optimize', good, '-o', path.join(root, 'o.onnx'), '--pipeline', 'test-throw', '--verbose');
    expect(r.code).toBe(70);
    expect(r.stderr).toMatch(/^caused by: TypeError: Cannot read properties of undefined/m);
    expect(r.stderr).toContain('explodeInsideThePass');
    expect(r.stderr.trimEnd().split('\n').pop()).toBe(
      "edgec: internal error in pass 'test-throw': Cannot read properties of undefined (reading 'field')",
    );
  });

  it('an async rejection in compile names the pass and the sub-model', async () => {
    const c = await cli(
      'compile',
      good,
      '--target',
      'mobile',
      '-o',
      path.join(root, 'art'),
      '--pipeline',
      'cleanup,test-async-throw',
      '--no-verify',
    );
    expect(c.code).toBe(70);
    expect(c.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(c.stderr).toMatch(/^edgec: internal error in pass 'test-async-throw' of sub-model 'model': offset out of range/);
    expect(fs.existsSync(path.join(root, 'art'))).toBe(false);
    expect(fs.readdirSync(root).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  it('a pass that rejects its input is still bad input (exit 2)', async () => {
    const r = await cli('optimize', good, '-o', path.join(root, 'o.onnx'), '--pipeline', 'test-input');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('edgec: model.onnx: has no decoder\n');
  });

  it('a pass that leaves an invalid graph is a defect; a pass refusing its options is not', () => {
    const quiet = (e: unknown) => {
      const ew = process.stderr.write;
      process.stderr.write = (() => true) as typeof ew;
      try {
        return reportError(e, false);
      } finally {
        process.stderr.write = ew;
      }
    };
    expect(quiet(new PassError('fuse-x', 'left an invalid graph: cycle', undefined, true))).toBe(70);
    expect(quiet(new PassError('fuse-x', "option 'block' must be >= 16"))).toBe(2);
    const wrapped = new InternalError(new Error('x'), "pass 'p'").within("sub-model 'decoder'");
    expect(wrapped.where).toEqual(["pass 'p'", "sub-model 'decoder'"]);
    expect((wrapped.cause as Error).message).toBe('x');
  });

  it('the OS refusing a write is its own class (exit 74), naming the path', () => {
    const e = Object.assign(new Error("EACCES: permission denied, open '/ro/x.onnx'"), {
      code: 'EACCES',
      syscall: 'open',
      path: '/ro/x.onnx',
      errno: -13,
    });
    let stderr = '';
    const ew = process.stderr.write;
    process.stderr.write = ((s: string) => {
      stderr += s;
      return true;
    }) as typeof ew;
    try {
      expect(reportError(e, false)).toBe(74);
    } finally {
      process.stderr.write = ew;
    }
    expect(stderr).toBe('edgec: /ro/x.onnx: permission denied (EACCES in open)\n');
  });
});

describe('output arrives whole through a pipe', () => {
  it('a 1,500-line check failure read by a slow reader arrives complete, with exit code 1', () => {
    // 1,500 nodes of an op no target runs: with --verbose, compile lists one line per node (without it, ~20).
    const b = new GraphBuilder({ opset: 17, opsets: { 'com.example': 1 } });
    let x = b.input('x', DataType.FLOAT, [1, 4]);
    for (let i = 0; i < 1500; i++) x = b.op1('Frobnicate', [x], { domain: 'com.example', name: `frob_${i}` });
    b.output(x, 'y', DataType.FLOAT, [1, 4]);
    const file = path.join(root, 'frob', 'frob.onnx');
    saveModel(b.build(), file);
    const main = path.join(ROOT, 'dist/cli/main.js');
    expect(fs.existsSync(main)).toBe(true);
    // pipefail: the exit status is edgec's; the reader sleeps while edgec fills the pipe.
    const cmd = `set -o pipefail; "${process.execPath}" "${main}" compile "${file}" --target webgpu -o "${path.join(root, 'frob-art')}" --no-verify --verbose 2>&1 >/dev/null | (sleep 1; cat)`;
    const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', maxBuffer: 64 << 20 });
    expect(r.status).toBe(1);
    // --verbose puts the stack first; then the error line and every node, the last one included.
    const lines = r.stdout.trimEnd().split('\n');
    const head = lines.findIndex((l) => /^edgec: 1500 nodes cannot run on webgpu/.test(l));
    expect(head).toBeGreaterThanOrEqual(0);
    expect(lines.slice(head + 1).filter((l) => /frob_\d+/.test(l))).toHaveLength(1500);
    expect(lines[lines.length - 1]).toMatch(/frob_1499/);
  }, 60_000);
});
