// cleanup: each rule fires where it should and nowhere else; onnxruntime gives bit-identical outputs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, Graph, GraphBuilder, Model, Tensor, loadModel, saveModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import { compareOutputs, randomInputs, runModel } from '../../runtime/ort.js';
import { nodeCount } from './harness.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-cleanup-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Run cleanup and check onnxruntime outputs are unchanged (exactly: cleanup computes nothing). */
async function cleanupKeepsOutputs(model: Model, name: string, fixed?: Record<string, Tensor>) {
  const feeds = randomInputs(model, { seed: 7, fixed });
  const a = path.join(tmp, `${name}-a.onnx`),
    b = path.join(tmp, `${name}-b.onnx`);
  saveModel(model, a);
  const before = await runModel(a, feeds);
  const [r] = await runPipeline(model, parsePipeline('cleanup'), { verifyEach: true });
  expect(validateModel(model)).toEqual([]);
  saveModel(model, b);
  const after = await runModel(b, feeds);
  expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort());
  for (const c of compareOutputs(before, after)) expect(c.maxAbsError, c.name).toBe(0);
  return { counts: r!.stats.counts, report: r!, reloaded: loadModel(b) };
}

describe('cleanup', () => {
  it('removes dead code, no-ops, duplicates and common subexpressions, keeping output names', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [2, 4]);
    b.input('unused_real_input', DataType.FLOAT, [3]);
    const w1 = b.constF32(
      'w1',
      [4, 4],
      Array.from({ length: 16 }, (_, i) => i / 10),
    );
    const w2 = b.constF32(
      'w2',
      [4, 4],
      Array.from({ length: 16 }, (_, i) => i / 10),
    ); // same bytes as w1
    b.constF32('never_used', [8], new Array(8).fill(1));
    const over = b.constF32('unused_overridable', [2], [1, 2]);
    b.graph.inputs.push(over);
    const m1 = b.op1('MatMul', [x, w1]);
    const m2 = b.op1('MatMul', [x, w2]); // after dedupe: the same as m1
    const sum = b.op1('Add', [m1, m2]);
    b.op1('Relu', [sum]); // dead
    const cast = b.op1('Cast', [sum], { attrs: { to: DataType.FLOAT } });
    const resh = b.op1('Reshape', [cast, b.constInt64('shape', [2, -1])]);
    const tr = b.op1('Transpose', [resh], { attrs: { perm: [0, 1] } });
    const ex = b.op1('Expand', [tr, b.constInt64('one', [1])]);
    const [drop] = b.op('Dropout', [ex], { outputs: 1 });
    const id1 = b.op1('Identity', [drop!]);
    const id2 = b.op1('Identity', [id1]);
    b.output(id2, 'y', DataType.FLOAT, [2, 4]);
    b.output(b.op1('Identity', [x]), 'x_copy', DataType.FLOAT, [2, 4]); // Identity of an input: kept
    const m = b.build();
    await runPipeline(m, parsePipeline('infer-shapes'));
    const { counts, reloaded } = await cleanupKeepsOutputs(m, 'rules');
    expect(counts).toMatchObject({
      duplicateInitializers: 1,
      commonSubexpressions: 1,
      noopCast: 1,
      noopReshape: 1,
      noopTranspose: 1,
      noopExpand: 1,
      dropout: 1,
      identity: 2,
      unusedInputs: 1,
    });
    expect(reloaded.graph.inputs.map((v) => v.name)).toEqual(['x', 'unused_real_input']);
    expect(reloaded.graph.outputs.map((v) => v.name)).toEqual(['y', 'x_copy']);
    expect(reloaded.graph.nodes.map((n) => n.opType)).toEqual(['MatMul', 'Add', 'Identity']);
    expect(reloaded.graph.initializers.map((t) => t.name)).toEqual(['w1']);
    expect(reloaded.graph.value('y').producer!.opType).toBe('Add');
  });

  it('keeps nodes that differ in attributes and never merges random ops', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [2, 3]);
    const s1 = b.op1('Softmax', [x], { attrs: { axis: 0 } });
    const s2 = b.op1('Softmax', [x], { attrs: { axis: 1 } });
    const s3 = b.op1('Softmax', [x], { attrs: { axis: 1 } });
    const r1 = b.op1('RandomUniformLike', [x], { attrs: { seed: 1.0 } });
    const r2 = b.op1('RandomUniformLike', [x], { attrs: { seed: 1.0 } });
    b.output(b.op1('Add', [b.op1('Add', [s1, s2]), s3]), 'y', DataType.FLOAT);
    b.output(b.op1('Sub', [r1, r2]), 'r', DataType.FLOAT);
    const m = b.build();
    const [rep] = await runPipeline(m, parsePipeline('cleanup'), { verifyEach: true });
    expect(rep!.stats.counts.commonSubexpressions).toBe(1);
    expect(m.graph.nodes.filter((n) => n.opType === 'Softmax')).toHaveLength(2);
    expect(m.graph.nodes.filter((n) => n.opType === 'RandomUniformLike')).toHaveLength(2);
    expect(rep!.nodesRemoved).toBe(1);
  });

  it('cleans If branches and keeps outer values their bodies use', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [4]);
    const cond = b.input('cond', DataType.BOOL, []);
    const w = b.constF32('w', [4], [1, 2, 3, 4]);
    const branch = (name: string, op: string) => {
      const g = new Graph(name);
      g.parent = b.graph;
      const id = g.addNode({ opType: 'Identity', inputs: [w], outputs: [`${name}_id`] }).outputs[0]!;
      g.addNode({ opType: 'Neg', inputs: [x], outputs: [`${name}_dead`] });
      const out = g.addNode({ opType: op, inputs: [x, id], outputs: [`${name}_out`] }).outputs[0]!;
      out.type = { elemType: DataType.FLOAT, shape: [4] };
      g.outputs.push(out);
      return g;
    };
    const y = b.op1('If', [cond], { attrs: { then_branch: branch('then', 'Add'), else_branch: branch('else', 'Mul') } });
    b.output(y, 'y', DataType.FLOAT, [4]);
    const m = b.build();
    const { counts, reloaded } = await cleanupKeepsOutputs(m, 'if');
    expect(counts.identity).toBe(2);
    expect(counts.deadNodes).toBe(2);
    expect(reloaded.graph.initializers.map((t) => t.name)).toEqual(['w']);
    expect(nodeCount(reloaded)).toBe(3);
  });

  it('keeps the Identity a branch needs to return an outer value (onnxruntime requires it)', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [4]);
    const cond = b.input('cond', DataType.BOOL, []);
    const outer = b.op1('Identity', [b.op1('Relu', [x])]);
    const branch = (name: string, op: string) => {
      const g = new Graph(name);
      g.parent = b.graph;
      const o = g.addNode({ opType: op, inputs: [op === 'Identity' ? outer : x], outputs: [`${name}_out`] }).outputs[0]!;
      o.type = { elemType: DataType.FLOAT, shape: [4] };
      g.outputs.push(o);
      return g;
    };
    b.output(
      b.op1('If', [cond], { attrs: { then_branch: branch('then', 'Neg'), else_branch: branch('else', 'Identity') } }),
      'y',
      DataType.FLOAT,
      [4],
    );
    const m = b.build();
    const { counts, reloaded } = await cleanupKeepsOutputs(m, 'outer-out', { cond: Tensor.fromNumbers('cond', DataType.BOOL, [], [0]) });
    expect(counts.identity).toBe(1);
    expect(reloaded.graph.nodes.map((n) => n.opType)).toEqual(['Relu', 'If']);
    expect(reloaded.graph.nodes[1]!.subgraphs()[1]!.nodes.map((n) => n.opType)).toEqual(['Identity']);
  });

  it('renames through to keep a graph output whose Identity reads another node', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [3]);
    const r = b.op1('Relu', [x]);
    const n = b.op1('Neg', [r]);
    b.output(b.op1('Identity', [r]), 'relu_out', DataType.FLOAT, [3]);
    b.output(n, 'neg_out', DataType.FLOAT, [3]);
    const m = b.build();
    const { counts, reloaded } = await cleanupKeepsOutputs(m, 'rename');
    expect(counts.identity).toBe(1);
    expect(reloaded.graph.nodes.map((k) => `${k.opType}:${k.outputs[0]!.name}`)).toEqual(['Relu:relu_out', 'Neg:neg_out']);
    expect(reloaded.graph.nodes[1]!.inputs[0]!.name).toBe('relu_out');
  });

  it('leaves a model with nothing to remove byte-identical', async () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', DataType.FLOAT, [3]);
    b.output(b.op1('Relu', [x]), 'y', DataType.FLOAT, [3]);
    const m = b.build();
    const f1 = path.join(tmp, 'same-1.onnx'),
      f2 = path.join(tmp, 'same-2.onnx');
    saveModel(m, f1);
    await runPipeline(m, parsePipeline('cleanup'));
    saveModel(m, f2);
    expect(fs.readFileSync(f1).equals(fs.readFileSync(f2))).toBe(true);
  });
});
