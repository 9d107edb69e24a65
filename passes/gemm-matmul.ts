// Gemm <-> MatMul + Add. Weight quantizers (MatMulNBits, QDQ) want MatMul with a constant [K, N]
// weight, so gemm-to-matmul-add rewrites every Gemm whose B is constant (transposes and alpha folded
// into the weight, beta into a constant C). matmul-add-to-gemm is the inverse for 2-D MatMul + Add.
import { DataType, Tensor, dtypeBits, isFloat, type Dim, type Graph, type Node, type Value } from '../ir/index.js';
import { constTensor, other, replaceOutput, sameDim } from './pattern.js';
import { defineRule, fusionPass, skip, type Match } from './rule.js';

/** Row-major 2-D transpose on raw element bytes: keeps every bit of the weights. */
function transpose2d(t: Tensor, name: string): Tensor {
  const [r, c] = t.dims as [number, number];
  const es = dtypeBits(t.dtype) / 8;
  const src = t.bytes();
  const dst = new Uint8Array(src.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst.set(src.subarray((i * c + j) * es, (i * c + j + 1) * es), (j * r + i) * es);
  return Tensor.fromBytes(name, t.dtype, [c, r], dst);
}

function scaled(t: Tensor, k: number, name: string): Tensor {
  const v = t.toFloat32().map((x) => x * k);
  return t.dtype === DataType.FLOAT ? Tensor.fromFloat32(name, [...t.dims], v) : Tensor.fromNumbers(name, t.dtype, [...t.dims], v);
}

const FLOAT_GEMM = new Set([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16]);

interface GemmMatch extends Match {
  gemm: Node;
  a: Value;
  b: Value;
  c: Value | null;
  bt: Tensor;
}

/** Per graph: Gemms sharing one weight (tied projections) share its rewritten copy too. */
type WeightCache = Map<Value, Map<string, Value>>;

export const gemmToMatMulRule = defineRule<GemmMatch, WeightCache>({
  name: 'gemm-to-matmul-add',
  anchors: ['Gemm'],
  counts: { gemm: 'Gemms rewritten to MatMul (+ Add)' },
  where: (gemm) => `Gemm '${gemm.name}'`,
  state: () => new Map(),
  match(gemm, { model }) {
    const where = `Gemm '${gemm.name}'`;
    // Before opset 7 Add broadcasts only with its legacy attribute: not worth a second code path.
    if ((model.opset('') ?? 0) < 7) return skip(`${where}: opset < 7`);
    const [a, b, c] = [gemm.inputs[0], gemm.inputs[1], gemm.inputs[2] ?? null];
    const bt = constTensor(b);
    if (!a || !b || !bt) return skip(`${where}: B is not constant`);
    if (bt.dims.length !== 2 || bt.dtype === DataType.BFLOAT16 || !FLOAT_GEMM.has(bt.dtype))
      return skip(`${where}: B is not a 2-D float constant`);
    return { nodes: [gemm], outputs: [gemm.outputs[0]!], gemm, a, b, c, bt };
  },
  rewrite(m, { graph, state }) {
    gemmToMatMul(graph, m, state);
    return 'gemm';
  },
});

function gemmToMatMul(g: Graph, { gemm, a, b, c, bt }: GemmMatch, weights: WeightCache): void {
  const alpha = gemm.attrFloat('alpha', 1),
    beta = gemm.attrFloat('beta', 1);
  const transA = gemm.attrInt('transA', 0),
    transB = gemm.attrInt('transB', 0);
  const out = gemm.outputs[0]!;
  const key = `${transB}|${alpha}`;
  let wv = transB || alpha !== 1 ? weights.get(b)?.get(key) : b;
  if (!wv) {
    let w = bt;
    if (transB) w = transpose2d(w, `${b.name}_T`);
    if (alpha !== 1) w = scaled(w, alpha, `${b.name}_scaled`);
    wv = g.addInitializer(w);
    if (!weights.has(b)) weights.set(b, new Map());
    weights.get(b)!.set(key, wv);
  }
  let aIn: Value = a;
  if (transA)
    aIn = g.addNode(
      {
        opType: 'Transpose',
        name: `${gemm.name}/TransposeA`,
        inputs: [a],
        outputs: [`${gemm.name}/TransposeA_output_0`],
        attrs: { perm: [1, 0] },
      },
      gemm,
    ).outputs[0]!;
  let cIn: Value | null = c && beta !== 0 ? c : null;
  if (cIn && beta !== 1) {
    const ct = constTensor(cIn);
    if (ct && isFloat(ct.dtype)) cIn = g.addInitializer(scaled(ct, beta, `${cIn.name}_scaled`));
    else {
      const k = g.addInitializer(Tensor.fromNumbers(`${gemm.name}/beta`, c!.dtype ?? bt.dtype, [], [beta]));
      cIn = g.addNode({ opType: 'Mul', name: `${gemm.name}/MulBeta`, inputs: [cIn, k], outputs: [`${gemm.name}/MulBeta_output_0`] }, gemm)
        .outputs[0]!;
    }
  }
  if (!cIn) {
    replaceOutput(g, out, { opType: 'MatMul', name: `${gemm.name}/MatMul`, inputs: [aIn, wv] }, [gemm]);
  } else {
    const mm = g.addNode(
      { opType: 'MatMul', name: `${gemm.name}/MatMul`, inputs: [aIn, wv], outputs: [`${gemm.name}/MatMul_output_0`] },
      gemm,
    ).outputs[0]!;
    mm.type = out.type ? { elemType: out.type.elemType, shape: out.type.shape ? [...out.type.shape] : undefined } : undefined;
    replaceOutput(g, out, { opType: 'Add', name: `${gemm.name}/Add`, inputs: [mm, cIn] }, [gemm]);
  }
}

interface ToGemmMatch extends Match {
  mm: Node;
  add: Node;
  a: Value;
  b: Value;
  c: Value;
}

export const matmulAddToGemmRule = defineRule<ToGemmMatch>({
  name: 'matmul-add-to-gemm',
  anchors: ['MatMul'],
  counts: { gemm: '2-D MatMul + Add pairs fused into Gemm' },
  where: (mm) => `MatMul '${mm.name}'`,
  match(mm) {
    const [a, b] = mm.inputs;
    const y = mm.outputs[0]!;
    if (!a || !b || y.uses.length !== 1 || y.isGraphOutput) return null;
    const add = y.uses[0]!.node;
    if (add.opType !== 'Add' || add.domain !== '') return null;
    const where = `MatMul '${mm.name}' + Add '${add.name}'`;
    const sa = a.shape,
      sb = b.shape ?? constTensor(b)?.dims;
    if (!sa || sa.length !== 2 || !sb || sb.length !== 2) return skip(`${where}: not 2-D (or rank unknown)`);
    if (!FLOAT_GEMM.has((a.dtype ?? DataType.UNDEFINED) as DataType)) return skip(`${where}: not a float MatMul`);
    const c = other(add, y)!;
    const sc = c.shape ?? constTensor(c)?.dims;
    const m = sa[0],
      n = sb[1];
    if (!sc || sc.length > 2) return skip(`${where}: bias shape unknown or rank > 2`);
    const okN = (d: Dim) => d === 1 || sameDim(d, n);
    const okM = (d: Dim) => d === 1 || sameDim(d, m);
    const fits = sc.length === 0 || (sc.length === 1 && okN(sc[0]!)) || (sc.length === 2 && okM(sc[0]!) && okN(sc[1]!));
    if (!fits) return skip(`${where}: bias does not broadcast to [M, N]`);
    return { nodes: [add, mm], outputs: [add.outputs[0]!], mm, add, a, b, c };
  },
  rewrite({ mm, add, a, b, c, nodes }, { graph }) {
    replaceOutput(graph, add.outputs[0]!, { opType: 'Gemm', name: `${mm.name}/Gemm`, inputs: [a, b, c] }, nodes);
    return 'gemm';
  },
});

export const gemmToMatMulAdd = fusionPass({
  name: 'gemm-to-matmul-add',
  description: 'Gemm with a constant B -> MatMul (+ Add), transB/alpha folded into the weight, beta into C',
  options: {},
  rules: [gemmToMatMulRule],
});

export const matmulAddToGemm = fusionPass({
  name: 'matmul-add-to-gemm',
  description: '2-D MatMul followed by a broadcastable Add -> Gemm',
  options: {},
  requires: ['shapes'],
  rules: [matmulAddToGemmRule],
});
