// Shared checks for the core passes: run a pipeline on a model, save, and compare onnxruntime's
// outputs with the spec's expected outputs (conformance) or with the original (cosine).
import fs from 'node:fs';
import path from 'node:path';
import { DataType, Model, Tensor, Value, loadModel, saveModel } from '../../ir/index.js';
import { evaluateDim } from '../../passes/shape/sym.js';
import { parsePipeline, runPipeline, type StepReport } from '../../passes/manager.js';
import { validateModel } from '../../passes/validate.js';
import { allClose, compareTensors, loadTestDataSet, runModel } from '../../runtime/ort.js';
import { CONFORMANCE } from '../conformance-root.js';

export { CONFORMANCE };

/** node/: every 5th model; pytorch-converted and pytorch-operator: all. */
export function conformanceSample(): string[] {
  const list = (suite: string) =>
    fs
      .readdirSync(path.join(CONFORMANCE, suite))
      .sort()
      .filter((t) => fs.existsSync(path.join(CONFORMANCE, suite, t, 'model.onnx')))
      .map((t) => path.join(suite, t));
  return [...list('node').filter((_, i) => i % 5 === 0), ...list('pytorch-converted'), ...list('pytorch-operator')];
}

export interface CaseData {
  /** Inputs, expected outputs (output_K.pb) and what onnxruntime gave on the original. */
  sets: { inputs: Record<string, Tensor>; outputs: Record<string, Tensor>; original: Record<string, Tensor> }[];
}

/** Test data of a case when onnxruntime reproduces output_K.pb on the original, else undefined. */
export async function originalPasses(caseDir: string, model: Model): Promise<CaseData | undefined> {
  const src = path.join(caseDir, 'model.onnx');
  const sets: CaseData['sets'] = [];
  for (const set of fs
    .readdirSync(caseDir)
    .filter((d) => d.startsWith('test_data_set'))
    .sort()) {
    try {
      const data = loadTestDataSet(path.join(caseDir, set), model);
      const original = await runModel(src, data.inputs);
      if (!Object.keys(data.outputs).every((k) => original[k] && allClose(data.outputs[k]!, original[k]!))) return undefined;
      sets.push({ ...data, original });
    } catch {
      return undefined;
    }
  }
  return sets.length ? { sets } : undefined;
}

export interface PipelineResult {
  reports: StepReport[];
  failure?: string;
}

/** Run `spec` on a fresh load of the case, save to `out`, and check outputs against the data. */
export async function checkCase(caseDir: string, data: CaseData, spec: string, out: string): Promise<PipelineResult> {
  const model = loadModel(path.join(caseDir, 'model.onnx'));
  let reports: StepReport[];
  try {
    reports = await runPipeline(model, parsePipeline(spec), { verifyEach: true });
  } catch (e) {
    return { reports: [], failure: `pass threw: ${(e as Error).message.split('\n')[0]}` };
  }
  const errs = validateModel(model);
  if (errs.length) return { reports, failure: `invalid graph: ${errs[0]}` };
  saveModel(model, out);
  for (const set of data.sets) {
    let got: Record<string, Tensor>;
    try {
      got = await runModel(out, set.inputs);
    } catch (e) {
      return { reports, failure: `onnxruntime rejects the result: ${(e as Error).message.split('\n')[0]}` };
    }
    for (const [k, exp] of Object.entries(set.outputs)) {
      const g = got[k];
      if (!g || !allClose(exp, g)) return { reports, failure: `output '${k}' differs from output_K.pb` };
      const orig = set.original[k]!;
      if (exp.dtype === DataType.FLOAT && exp.size && compareTensors(orig, g).cosine < 0.99999)
        return { reports, failure: `output '${k}': cosine to the original below 0.99999` };
    }
  }
  return { reports };
}

export function nodeCount(model: Model): number {
  let n = 0;
  for (const g of model.graph.allGraphs()) n += g.nodes.length;
  return n;
}

export interface ShapeCheck {
  checked: number;
  numericDims: number;
  symbolicDims: number;
  unknownDims: number;
  /** Values with a dim left unknown. */
  partial: string[];
  mismatches: string[];
}

/**
 * Run infer-shapes on `model` (intermediate types cleared first), expose every typed value of the
 * main graph as an output, run onnxruntime and check each inferred dtype and dim against the
 * real tensor: numbers equal, symbolic expressions evaluate to the real size under `bind`.
 */
export async function checkInferredShapes(
  model: Model,
  feeds: Record<string, Tensor>,
  bind: Record<string, number>,
  file: string,
): Promise<ShapeCheck> {
  const g = model.graph;
  for (const gg of g.allGraphs()) {
    for (const n of gg.nodes)
      for (const o of n.outputs)
        if (o) {
          o.type = undefined;
          o.hasValueInfo = false;
        }
  }
  await runPipeline(model, parsePipeline('infer-shapes'));
  const probe: Value[] = [];
  for (const n of g.nodes) for (const o of n.outputs) if (o?.type?.shape && !o.isGraphOutput) probe.push(o);
  g.outputs.push(...probe);
  saveModel(model, file);
  const got = await runModel(file, feeds);
  const res: ShapeCheck = { checked: 0, numericDims: 0, symbolicDims: 0, unknownDims: 0, partial: [], mismatches: [] };
  for (const v of g.outputs) {
    const t = got[v.name],
      type = v.type;
    if (!t || !type?.shape) continue;
    res.checked++;
    if (t.dtype !== type.elemType) res.mismatches.push(`${v.name}: dtype ${type.elemType} inferred, ${t.dtype} real`);
    if (t.dims.length !== type.shape.length) {
      res.mismatches.push(`${v.name}: rank ${type.shape.length} inferred, [${t.dims}] real`);
      continue;
    }
    type.shape.forEach((d, i) => {
      if (d === null) {
        res.unknownDims++;
        if (!res.partial.includes(v.name)) res.partial.push(v.name);
        return;
      }
      if (typeof d === 'number') res.numericDims++;
      else res.symbolicDims++;
      const val = evaluateDim(d, bind);
      if (val === null && typeof d === 'string' && /^[A-Za-z_][\w]*$/.test(d) && !(d in bind)) {
        bind[d] = t.dims[i]!;
        return;
      }
      if (val !== t.dims[i]) res.mismatches.push(`${v.name}: dim ${i} inferred ${d}, real ${t.dims[i]}`);
    });
  }
  return res;
}
