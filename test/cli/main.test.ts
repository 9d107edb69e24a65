// Error to exit-code mapping of cli/main.ts.
import { describe, expect, it } from 'vitest';
import { CheckError, InputError } from '../../ir/index.js';
import { PassError } from '../../passes/pass.js';
import { reportError } from '../../cli/main.js';
import { cli } from './helpers.js';

function report(e: unknown, verbose = false): { code: number; stderr: string } {
  let stderr = '';
  const ew = process.stderr.write;
  process.stderr.write = ((s: string) => {
    stderr += s;
    return true;
  }) as typeof ew;
  try {
    return { code: reportError(e, verbose), stderr };
  } finally {
    process.stderr.write = ew;
  }
}

describe('reportError', () => {
  it('bad input is exit 2 with one line', () => {
    expect(report(new InputError('is empty', 'm.onnx'))).toEqual({ code: 2, stderr: 'edgec: m.onnx: is empty\n' });
  });

  it('a pass rejecting its options is exit 2', () => {
    expect(report(new PassError('quantize', 'block must be a power of two'))).toEqual({
      code: 2,
      stderr: "edgec: pass 'quantize': block must be a power of two\n",
    });
  });

  it('a failed check is exit 1, with its details indented', () => {
    expect(report(new CheckError('2 ops unsupported', ['Foo', 'Bar']))).toEqual({
      code: 1,
      stderr: 'edgec: 2 ops unsupported\n  Foo\n  Bar\n',
    });
  });

  it('anything else is exit 70 with one line; the stack only with --verbose', () => {
    const e = new TypeError('boom\nsecond line');
    const quiet = report(e);
    expect(quiet).toEqual({ code: 70, stderr: 'edgec: internal error: boom (run with --verbose for details)\n' });
    const loud = report(e, true);
    expect(loud.code).toBe(70);
    expect(loud.stderr).toMatch(/^\s+at /m);
    expect(loud.stderr.trimEnd().split('\n').pop()).toBe('edgec: internal error: boom');
  });

  it('usage errors from commander are exit 2, help is 0', async () => {
    const r = await cli('inspect', '--no-such-flag', 'x.onnx');
    expect(r.code).toBe(2);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect((await cli('verify', 'only-one.onnx')).code).toBe(2);
    const h = await cli('inspect', '--help');
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--json');
  });
});
