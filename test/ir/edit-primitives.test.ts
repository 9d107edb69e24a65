// The IR's edit primitives, and the rule that only ir/ writes producer links or edits the lists of
// nodes, values, inputs and outputs (everything else goes through the primitives).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { DataType, Graph, GraphBuilder, Model, Tensor } from '../../ir/index.js';

const FLOAT = DataType.FLOAT;

function chain() {
  const b = new GraphBuilder({ opset: 17 });
  const x = b.input('x', FLOAT, [2, 3]);
  const a = b.op1('Relu', [x]);
  const y = b.op1('Neg', [a]);
  b.output(y, 'y', FLOAT, [2, 3]);
  return { b, g: b.graph, x, a, y: b.graph.outputs[0]! };
}

describe('IR edit primitives', () => {
  it('setOutput hands a value between nodes and keeps producer links right', () => {
    const { g, a } = chain();
    const relu = a.producer!;
    const old = relu.setOutput(0, null);
    expect(old).toBe(a);
    expect(a.producer).toBeNull();
    const n = g.addNode({ opType: 'Sigmoid', inputs: ['x'], outputs: [] }, relu);
    n.setOutput(2, a);
    expect(n.outputs).toEqual([null, null, a]);
    expect(a.producer).toBe(n);
    expect(() => relu.setOutput(0, a)).toThrow(/already has a producer/);
  });

  it('splitFromProducer leaves the value free for a node spliced in after its producer', () => {
    const { g, a } = chain();
    const relu = a.producer!;
    const inner = a.splitFromProducer('a_inner', { elemType: FLOAT, shape: [2, 3] });
    expect(inner.producer).toBe(relu);
    expect(a.producer).toBeNull();
    expect(a.uses.length).toBe(1);
    const cast = g.after(relu).add({ opType: 'Identity', inputs: [inner], outputs: [a] });
    expect(g.nodes.indexOf(cast)).toBe(g.nodes.indexOf(relu) + 1);
    expect(a.producer).toBe(cast);
  });

  it('an insertion point keeps the order nodes were added in', () => {
    const { g, a } = chain();
    const relu = a.producer!;
    const at = g.after(relu);
    const p = at.op('Abs', [a]);
    const q = at.op('Abs', [p]);
    expect(g.nodes.map((n) => n.opType)).toEqual(['Relu', 'Abs', 'Abs', 'Neg']);
    expect(q.producer!.inputs[0]).toBe(p);
  });

  it('replaceNode puts new nodes in place and hands them the outputs', () => {
    const { g, x, a } = chain();
    const relu = a.producer!;
    const [n] = g.replaceNode(relu, [{ opType: 'Sigmoid', inputs: [x], outputs: [a] }]);
    expect(g.nodes.map((k) => k.opType)).toEqual(['Sigmoid', 'Neg']);
    expect(a.producer).toBe(n);
    expect(x.uses.map((u) => u.node)).toEqual([n]);
  });

  it('removeDead removes dead nodes and what only they used, and keeps the rest', () => {
    const b = new GraphBuilder({ opset: 17 });
    const x = b.input('x', FLOAT, [4]);
    const w = b.initializer(Tensor.fromFloat32('w', [4], new Float32Array(4)));
    const s = b.op1('Add', [x, w]);
    const t = b.op1('Relu', [s]);
    b.output(b.op1('Neg', [x]), 'y', FLOAT, [4]);
    const g = b.graph;
    g.removeDead([t.producer!]);
    expect(g.nodes.map((n) => n.opType)).toEqual(['Neg']);
    expect(g.values.has(w.name)).toBe(false);
    expect(g.initializerNames).toEqual([]);
  });

  it('removeNodes sweeps many disconnected nodes at once', () => {
    const { g, a } = chain();
    const neg = g.nodes[1]!;
    g.replaceAllUses(g.outputs[0]!, a);
    g.removeNodes(new Set([neg]));
    expect(g.nodes.map((n) => n.opType)).toEqual(['Relu']);
    expect(a.uses.length).toBe(0);
  });

  it('renameValue renames an initializer everywhere the graph lists it', () => {
    const g = new Graph();
    const v = g.addInitializer(Tensor.fromFloat32('w_tmp', [1], Float32Array.of(1)));
    g.renameValue(v, 'w');
    expect(v.initializer!.name).toBe('w');
    expect(g.initializerNames).toEqual(['w']);
    expect(g.values.get('w')).toBe(v);
    expect(g.values.has('w_tmp')).toBe(false);
  });

  it('requireOpset adds or raises an import, never lowers it', () => {
    const m = new Model();
    m.requireOpset('com.microsoft', 1);
    m.requireOpset('', 17);
    expect(m.opset('com.microsoft')).toBe(1);
    expect(m.opset('')).toBe(21);
  });
});

// Library code outside ir/ (tests may build broken graphs on purpose).
const ROOT = path.resolve(__dirname, '../..');
const DIRS = ['passes', 'targets', 'cli', 'runtime', 'fixtures', 'bench', 'kernels'];
const LISTS = new Set(['nodes', 'values', 'inputs', 'outputs', 'initializerNames']);
const MUTATORS = new Set(['push', 'pop', 'shift', 'unshift', 'splice', 'sort', 'reverse', 'fill', 'copyWithin', 'set', 'delete', 'clear']);
/** Receivers named like IR lists that are not: a match record's node list, shape inference's value map, a profile table. */
const NOT_IR = new Set([
  'passes/pattern.ts:m.nodes',
  'passes/fuse-attention.ts:q.nodes',
  'passes/infer-shapes.ts:this.values',
  'runtime/webgpu-browser.ts:out[ep]!.nodes',
]);

function sources(): string[] {
  const out: string[] = [path.join(ROOT, 'index.ts')];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out.push(p);
    }
  };
  for (const d of DIRS) walk(path.join(ROOT, d));
  return out;
}

/** Every write of `.producer` and every edit of an IR list (assignment, element write, mutating call). */
function irEdits(file: string): string[] {
  const rel = path.relative(ROOT, file).split(path.sep).join('/');
  const sf = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const report = (node: ts.Node, what: string) => {
    const line = sf.getLineAndCharacterOfPosition(node.getStart()).line + 1;
    found.push(`${rel}:${line}: ${what}`);
  };
  const listAccess = (e: ts.Expression): ts.PropertyAccessExpression | null => {
    let x = e;
    while (ts.isElementAccessExpression(x) || ts.isNonNullExpression(x)) x = x.expression;
    return ts.isPropertyAccessExpression(x) && LISTS.has(x.name.text) && !NOT_IR.has(`${rel}:${x.getText()}`) ? x : null;
  };
  const visit = (node: ts.Node) => {
    if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.EqualsToken) {
      let lhs: ts.Expression = node.left;
      while (ts.isNonNullExpression(lhs)) lhs = lhs.expression;
      if (ts.isPropertyAccessExpression(lhs) && lhs.name.text === 'producer') report(node, lhs.getText());
      else if (listAccess(lhs)) report(node, `${lhs.getText()} =`);
    }
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && MUTATORS.has(node.expression.name.text)) {
      const recv = listAccess(node.expression.expression);
      if (recv) report(node, `${node.expression.getText()}()`);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

describe('only ir/ edits producer links and IR lists', () => {
  it('no library file outside ir/ writes .producer or edits nodes/values/inputs/outputs by hand', () => {
    const edits = sources().flatMap(irEdits);
    expect(
      edits,
      'use Node.setOutput, Value.splitFromProducer, Graph.replaceNode/removeNode(s)/removeDead/setOutputs and the other ir/ primitives',
    ).toEqual([]);
  });

  it('the check sees the edits it forbids', () => {
    const tmp = path.join(os.tmpdir(), `edgec-edit-check-${process.pid}.ts`);
    fs.writeFileSync(
      tmp,
      'export function f(v: any, n: any, g: any) { v.producer = null; n.outputs[0] = v; g.nodes.splice(0, 1); g.values.delete("a"); g.outputs = []; }\n',
    );
    try {
      expect(irEdits(tmp).map((s) => s.replace(/^.*?: /, ''))).toEqual([
        'v.producer',
        'n.outputs[0] =',
        'g.nodes.splice()',
        'g.values.delete()',
        'g.outputs =',
      ]);
    } finally {
      fs.rmSync(tmp);
    }
  });
});
