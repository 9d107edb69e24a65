// The ONNX spec's own test corpus: every model loads and saves; where onnxruntime reproduces
// output_K.pb from the original, the saved model does too; a second save gives identical bytes.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel, saveModel } from '../../ir/index.js';
import { runModel, loadTestDataSet, allClose } from '../../runtime/ort.js';
import { CONFORMANCE } from '../conformance-root.js';

const ROOT = CONFORMANCE;
const SUITES = ['node', 'pytorch-converted', 'pytorch-operator', 'simple'];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-conf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cases(suite: string): string[] {
  const dir = path.join(ROOT, suite);
  return fs
    .readdirSync(dir)
    .sort()
    .filter((t) => fs.existsSync(path.join(dir, t, 'model.onnx')));
}

describe.each(SUITES)('conformance/%s', (suite) => {
  it('loads, saves, runs and re-saves identically', async () => {
    const counts = { models: 0, passed: 0, ortUnsupported: 0, noTensorData: 0, failed: 0 };
    const failures: string[] = [];
    for (const name of cases(suite)) {
      counts.models++;
      const src = path.join(ROOT, suite, name, 'model.onnx');
      const out = path.join(tmp, `${suite}-${name}.onnx`);
      const model = loadModel(src);
      saveModel(model, out);
      const again = path.join(tmp, `${suite}-${name}.2.onnx`);
      saveModel(loadModel(out), again);
      if (!fs.readFileSync(out).equals(fs.readFileSync(again))) {
        failures.push(`${name}: second save differs`);
        continue;
      }

      const sets = fs
        .readdirSync(path.join(ROOT, suite, name))
        .filter((d) => d.startsWith('test_data_set'))
        .sort();
      let status: 'passed' | 'ortUnsupported' | 'noTensorData' | 'failed' = 'passed';
      for (const set of sets) {
        let data;
        try {
          data = loadTestDataSet(path.join(ROOT, suite, name, set), model);
        } catch {
          status = 'noTensorData'; // sequence/optional test data: not TensorProto files
          break;
        }
        let expectedOk = false;
        try {
          const ref = await runModel(src, data.inputs);
          expectedOk = Object.keys(data.outputs).every((k) => ref[k] && allClose(data.outputs[k]!, ref[k]!));
        } catch {
          /* onnxruntime cannot run the original */
        }
        if (!expectedOk) {
          status = 'ortUnsupported';
          break;
        }
        try {
          const got = await runModel(out, data.inputs);
          const bad = Object.keys(data.outputs).filter((k) => !got[k] || !allClose(data.outputs[k]!, got[k]!));
          if (bad.length) {
            status = 'failed';
            failures.push(`${name}/${set}: outputs ${bad.join(',')} differ after save`);
            break;
          }
        } catch (e) {
          status = 'failed';
          failures.push(`${name}/${set}: saved model fails: ${(e as Error).message.split('\n')[0]}`);
          break;
        }
      }
      counts[status]++;
    }
    console.log(`conformance/${suite}: ${JSON.stringify(counts)}`);
    expect(failures).toEqual([]);
    expect(counts.passed).toBeGreaterThan(0);
  }, 600_000);
});
