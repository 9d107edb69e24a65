// A short seeded run of the fuzzer (fuzz/run.ts) over every command that reads a model: each
// execution is handled (exit 0, 1 or 2 with one line naming the file, never 70 or a stack trace),
// nothing is written next to the input and the input is unchanged (fuzz() checks each of these and
// reports a finding). The long run is `npm run fuzz`, whose supervisor also catches hangs and
// memory blow-ups; each of its findings becomes a case of fixtures/hostile.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fuzz } from '../../fuzz/run.js';

const EXECS = 250;

describe('seeded fuzz run', () => {
  it(`${EXECS} mutants of the seed models across inspect/convert/optimize/quantize/verify/compile: all handled`, async () => {
    // No time limit per case here (a loaded machine is not a finding): a hang meets the test's timeout.
    const r = await fuzz({ seed: 20261205, maxExecs: EXECS, slowMs: Infinity });
    expect(r.findings.map((f) => `${f.command}: ${f.why}`)).toEqual([]);
    expect(r.execs).toBe(EXECS);
    expect(Object.keys(r.codes).sort()).toEqual(expect.arrayContaining(['0', '2']));
    for (const code of Object.keys(r.codes)) expect(['0', '1', '2']).toContain(code);
    for (const c of ['inspect', 'convert', 'optimize', 'quantize', 'verify', 'compile']) expect(r.byCommand[c], c).toBeGreaterThan(0);
  }, 300_000);

  it('a restart at case N replays the sequence: the same mutant and command line', async () => {
    const a = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fuzzhb-'));
    const b = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-fuzzhb-'));
    try {
      await fuzz({ seed: 5, maxExecs: 12, heartbeat: a, commands: ['inspect'] });
      await fuzz({ seed: 5, skip: 11, maxExecs: 1, heartbeat: b, commands: ['inspect'] });
      const [ja, jb] = [a, b].map(
        (d) => JSON.parse(fs.readFileSync(path.join(d, 'case.json'), 'utf8')) as { index: number; ops: string[] },
      );
      expect(ja.index).toBe(11);
      expect(jb).toMatchObject({ index: 11, ops: ja.ops });
      expect(fs.readFileSync(path.join(b, 'case.onnx'))).toEqual(fs.readFileSync(path.join(a, 'case.onnx')));
    } finally {
      for (const d of [a, b]) fs.rmSync(d, { recursive: true, force: true });
    }
  }, 60_000);
});
