// emulate-fp16: rewrite an fp16 model into its exact fp16-storage emulation in float32, for checking
// q4f16 artifacts on a machine without fp16 compute. Every float16 value is computed in float32 and
// rounded through a Cast to float16 and back (overflow to +-inf included) before any consumer sees it;
// float16 initializers and constants become float32 (exact). Graph inputs and outputs keep their types.
//
// Why: onnxruntime's CPU EP has no fp16 kernel for most ops and runs them in fp32 behind Casts that
// it drops between neighbours, so x*x = 90000 then *0.001 gives 90 on the CPU at every graph
// optimization level, where fp16 hardware gives inf. The emulation rounds what the fp16 graph stores.
// Arithmetic inside one op stays fp32 (a GPU kernel may accumulate in fp16): to-fp16's range margin
// covers that.
import { AttrType, DataType, Model, Tensor, Value, type Graph } from '../ir/index.js';
import type { Pass, PassStats } from './pass.js';

function f16ToF32Tensor(t: Tensor): Tensor {
  return Tensor.fromFloat32(t.name, [...t.dims], t.toFloat32());
}

function isF16(v: Value | null | undefined): v is Value {
  return !!v && (v.type?.elemType ?? v.initializer?.dtype) === DataType.FLOAT16;
}

function emulateGraph(g: Graph): number {
  let points = 0;
  for (const name of [...g.initializerNames]) {
    const v = g.values.get(name);
    if (v?.initializer?.dtype === DataType.FLOAT16 && !v.isGraphInput) g.setInitializer(v, f16ToF32Tensor(v.initializer));
  }
  // fp16 graph inputs feed their consumers through one Cast to fp32.
  for (const inp of g.inputs) {
    if (!isF16(inp) || inp.initializer) continue;
    const wide = g.createValue(`${inp.name}_emu32`, { elemType: DataType.FLOAT, shape: inp.shape });
    const uses = [...inp.uses];
    g.addNode({ opType: 'Cast', name: `${inp.name}_emu_cast`, inputs: [inp], outputs: [wide], attrs: { to: DataType.FLOAT } }, g.nodes[0]);
    for (const u of uses) u.node.setInput(u.index, wide);
  }
  for (const n of [...g.nodes]) {
    if (n.opType === 'Constant' || n.opType === 'ConstantOfShape') {
      const t = n.attrTensor('value');
      if (t?.dtype === DataType.FLOAT16) n.setAttr({ name: 'value', type: AttrType.TENSOR, value: f16ToF32Tensor(t) });
    }
    n.outputs.forEach((o) => {
      if (!isF16(o)) return;
      points++;
      const castToF16 = n.opType === 'Cast' && n.domain === '' && n.attrInt('to') === DataType.FLOAT16;
      const after = g.nodes[g.nodes.indexOf(n) + 1];
      // The node writes `raw`; Casts make the rounded value under the old name (graph outputs keep fp16).
      const raw = o.splitFromProducer(g.uniqueName(`${o.name}_emu_raw`), {
        elemType: castToF16 ? DataType.FLOAT16 : DataType.FLOAT,
        shape: o.shape,
      });
      let half = raw;
      if (!castToF16) {
        half = g.createValue(`${o.name}_emu_f16`, { elemType: DataType.FLOAT16, shape: o.shape });
        g.addNode({ opType: 'Cast', name: `${o.name}_emu_round`, inputs: [raw], outputs: [half], attrs: { to: DataType.FLOAT16 } }, after);
      }
      if (o.isGraphOutput) {
        const uses = [...o.uses];
        g.addNode({ opType: 'Identity', name: `${o.name}_emu_out`, inputs: [half], outputs: [o] }, after);
        if (uses.length) {
          const wide = g.createValue(`${o.name}_emu32`, { elemType: DataType.FLOAT, shape: o.shape });
          g.addNode({ opType: 'Cast', name: `${o.name}_emu_widen`, inputs: [half], outputs: [wide], attrs: { to: DataType.FLOAT } }, after);
          for (const u of uses) u.node.setInput(u.index, wide);
        }
      } else {
        o.type = { elemType: DataType.FLOAT, shape: o.shape };
        g.addNode({ opType: 'Cast', name: `${o.name}_emu_widen`, inputs: [half], outputs: [o], attrs: { to: DataType.FLOAT } }, after);
      }
    });
  }
  g.sortTopologically();
  return points;
}

export const emulateFp16: Pass = {
  name: 'emulate-fp16',
  description: 'for checking only: fp16 model -> float32 model that rounds every fp16 value it stores (exact fp16 storage emulation)',
  options: {},
  requires: ['shapes'],
  run(model: Model): PassStats {
    let points = 0;
    for (const g of [...model.graph.allGraphs()]) points += emulateGraph(g);
    return { counts: { roundingPoints: points } };
  },
};
