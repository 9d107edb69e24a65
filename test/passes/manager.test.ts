// PassManager: textual pipelines and config objects, typed and validated options, --verify-each,
// per-pass statistics.
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, InputError, Model } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { PassError, type Pass } from '../../passes/pass.js';
import { getPass, registerPass } from '../../passes/registry.js';
import { DEFAULT_PIPELINE, PIPELINES, resolvePipelineName } from '../../passes/pipelines.js';

// Test-only passes: one with every option type, one that breaks the graph on purpose.
const optsPass: Pass = {
  name: 'test-options',
  description: 'options of every type',
  options: {
    block: {
      type: 'int',
      default: 32,
      min: 16,
      max: 256,
      description: 'block',
      validate: (v) => ((v as number) & ((v as number) - 1) ? 'must be a power of two' : undefined),
    },
    sym: { type: 'bool', default: false, description: 'symmetric' },
    ratio: { type: 'float', default: 0.5, description: 'ratio' },
    method: { type: 'enum', default: 'rtn', values: ['rtn', 'gptq'], description: 'method' },
    skip: { type: 'list', default: [], description: 'names' },
  },
  run: () => ({ counts: {} }),
};
const breakPass: Pass = {
  name: 'test-break',
  description: 'removes the producer of a used value',
  options: {},
  run(model) {
    const n = model.graph.nodes[0]!;
    model.graph.nodes.splice(0, 1);
    for (const o of n.outputs) if (o) model.graph.values.delete(o.name);
    return { counts: { broken: 1 } };
  },
};
if (!getPass('test-options')) {
  registerPass(optsPass);
  registerPass(breakPass);
}

function chain(): Model {
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', DataType.FLOAT, [2, 3]);
  const c = b.op1('Add', [b.constF32('a', [3], [1, 2, 3]), b.constF32('b', [3], [1, 1, 1])]);
  const r = b.op1('Relu', [b.op1('Add', [x, c])]);
  b.op1('Neg', [r]); // dead
  b.output(b.op1('Identity', [r]), 'y', DataType.FLOAT);
  return b.build();
}

describe('parsePipeline', () => {
  it('parses names and typed options, with commas inside braces', () => {
    const steps = parsePipeline(
      ' cleanup , test-options{block=64,sym=true, ratio=0.25,method=gptq,skip=lm_head;embed} ,fold-constants{maxBytes=4096}',
    );
    expect(steps.map((s) => s.pass.name)).toEqual(['cleanup', 'test-options', 'fold-constants']);
    expect(steps[1]!.options).toEqual({ block: 64, sym: true, ratio: 0.25, method: 'gptq', skip: ['lm_head', 'embed'] });
    expect(steps[2]!.options).toEqual({ maxBytes: 4096, shapes: true });
    expect(parsePipeline('test-options{sym}')[0]!.options.sym).toBe(true);
    expect(parsePipeline('test-options')[0]!.options).toEqual({ block: 32, sym: false, ratio: 0.5, method: 'rtn', skip: [] });
  });

  it('takes config objects with real types', () => {
    const steps = parsePipeline([{ pass: 'test-options', options: { block: 128, sym: true } }, { pass: 'cleanup' }]);
    expect(steps[0]!.options).toMatchObject({ block: 128, sym: true });
    expect(steps[1]!.pass.name).toBe('cleanup');
  });

  it('rejects bad specs with an InputError naming the culprit', () => {
    const bad: [string, RegExp][] = [
      ['cleanup,no-such-pass', /unknown pass 'no-such-pass'/],
      ['test-options{blocksize=32}', /unknown option 'blocksize'.*known: block, sym/],
      ['test-options{block=abc}', /option 'block' must be a number/],
      ['test-options{block=31.5}', /option 'block' must be an integer/],
      ['test-options{block=512}', /option 'block' must be <= 256/],
      ['test-options{block=48}', /power of two/],
      ['test-options{sym=maybe}', /option 'sym' must be true or false/],
      ['test-options{method=awq}', /must be one of rtn\|gptq/],
      ['test-options{block=32', /missing '}'/],
      ['test-options{block=32}cleanup', /expected ','/],
      ['cleanup,,fold-constants', /empty pass name/],
      ['cleanup,', /trailing ','/],
      ['test-options{block=32,block=64}', /given twice/],
    ];
    for (const [spec, re] of bad) {
      let err: unknown;
      try {
        parsePipeline(spec);
      } catch (e) {
        err = e;
      }
      expect(err, spec).toBeInstanceOf(InputError);
      expect((err as Error).message, spec).toMatch(re);
      expect((err as Error).message).not.toContain('\n');
    }
    expect(() => parsePipeline([{ pass: 'fold-constants', options: { maxBytes: -1 } }])).toThrow(/must be >= 0/);
  });

  it('names pipelines; the default one parses', () => {
    expect(resolvePipelineName('default')).toBe(DEFAULT_PIPELINE);
    for (const p of Object.values(PIPELINES)) expect(parsePipeline(p).length).toBeGreaterThan(0);
  });
});

describe('runPipeline', () => {
  it('reports nodes, additions, removals, initializer bytes and pass counts per step', async () => {
    const m = chain();
    const reports = await runPipeline(m, parsePipeline('cleanup,fold-constants'), { verifyEach: true });
    expect(reports.map((r) => r.pass)).toEqual(['cleanup', 'fold-constants']);
    const [c, f] = reports as [(typeof reports)[0], (typeof reports)[0]];
    expect(c).toMatchObject({
      nodesBefore: 5,
      nodesAfter: 3,
      nodesAdded: 0,
      nodesRemoved: 2,
      initializerBytesBefore: 24,
      initializerBytesAfter: 24,
    });
    expect(c.stats.counts).toMatchObject({ deadNodes: 1, identity: 1 });
    expect(f).toMatchObject({ nodesBefore: 3, nodesAfter: 2, nodesRemoved: 1, initializerBytesBefore: 24, initializerBytesAfter: 12 });
    expect(f.stats.counts.folded).toBe(1);
    expect(f.ms).toBeGreaterThanOrEqual(0);
  });

  it('--verify-each names the pass and the node that broke the graph', async () => {
    const m = chain();
    let err: unknown;
    try {
      await runPipeline(m, parsePipeline('cleanup,test-break'), { verifyEach: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PassError);
    expect((err as PassError).pass).toBe('test-break');
    expect((err as PassError).node).toBeTruthy();
    expect((err as Error).message).toMatch(/pass 'test-break' at node '[^']+'.*used before it is defined/);
    // Without verification the same pipeline runs through: the check is what catches it.
    await expect(runPipeline(chain(), parsePipeline('cleanup,test-break'))).resolves.toHaveLength(2);
  });
});
