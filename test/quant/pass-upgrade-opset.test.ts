// upgrade-opset on the ONNX conformance corpus: every model below opset 21 that onnxruntime runs
// gives the same onnxruntime outputs after conversion to 21 (ops whose signatures changed are
// sampled in full; the rest by a fixed stride).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AttrType, Model, Tensor, encodeModel, loadModel } from '../../ir/index.js';
import { parsePipeline, runPipeline } from '../../passes/manager.js';
import { allClose, loadTestDataSet, runModel } from '../../runtime/ort.js';
import { upgradeOpset } from '../../passes/upgrade-opset.js';
import { validateModel } from '../../passes/validate.js';
import { cleanup, run } from './helpers.js';
import { CONFORMANCE } from '../conformance-root.js';

const ROOT = CONFORMANCE;
const CHANGED =
  /reduce|squeeze|split|pad|clip|resize|upsample|softmax|hardmax|slice|topk|dropout|batchnorm|scatter|reshape|cast|concat|group_norm|AvgPool|BatchNorm|Linear|operator/i;

function corpus(): string[] {
  const out: string[] = [];
  let i = 0;
  for (const sub of ['node', 'pytorch-converted', 'pytorch-operator', 'simple']) {
    const dir = path.join(ROOT, sub);
    if (!fs.existsSync(dir)) continue;
    for (const d of fs.readdirSync(dir).sort()) {
      const f = path.join(dir, d, 'model.onnx');
      if (!fs.existsSync(f) || !fs.existsSync(path.join(dir, d, 'test_data_set_0'))) continue;
      if (CHANGED.test(d) || i++ % 12 === 0) out.push(f);
    }
  }
  return out;
}

/** Attributes that must have become inputs by opset 21. */
function leftovers(m: Model): string[] {
  const bad: string[] = [];
  for (const g of m.graph.allGraphs()) {
    for (const n of g.nodes) {
      const a = (name: string) => n.attributes.some((x) => x.name === name);
      if (/^Reduce/.test(n.opType) && a('axes')) bad.push(`${n.opType} axes`);
      if ((n.opType === 'Squeeze' || n.opType === 'Unsqueeze') && a('axes')) bad.push(`${n.opType} axes`);
      if (n.opType === 'Split' && a('split')) bad.push('Split split');
      if (n.opType === 'Clip' && (a('min') || a('max'))) bad.push('Clip min/max');
      if (n.opType === 'Pad' && a('pads')) bad.push('Pad pads');
      if (n.opType === 'Slice' && a('starts')) bad.push('Slice starts');
      if (n.opType === 'Upsample') bad.push('Upsample');
      if (n.attributes.some((x) => x.name === 'consumed_inputs' || (n.opType === 'Cast' && x.name === 'to' && x.type === AttrType.STRING)))
        bad.push(`${n.opType} legacy attr`);
    }
  }
  return bad;
}

afterAll(cleanup);

describe('upgrade-opset on conformance models', () => {
  it.skipIf(!fs.existsSync(ROOT))('same onnxruntime outputs at opset 21', async () => {
    const files = corpus();
    let compared = 0,
      notRunnable = 0;
    const blocked: string[] = [],
      failures: string[] = [];
    for (const f of files) {
      const name = path.relative(ROOT, path.dirname(f));
      const m = loadModel(f);
      const from = m.opset('') ?? 1;
      if (from >= 21 || m.opsetImports.some((o) => o.domain !== '' && o.domain !== 'ai.onnx')) continue;
      let data;
      try {
        data = loadTestDataSet(path.join(path.dirname(f), 'test_data_set_0'), m);
      } catch {
        continue;
      }
      let before: Record<string, Tensor>;
      try {
        before = await runModel(f, data.inputs);
      } catch {
        notRunnable++;
        continue;
      }
      const r = upgradeOpset(m, 21);
      if (r.blockers.length) {
        blocked.push(`${name}: ${r.blockers[0]}`);
        continue;
      }
      expect(validateModel(m), name).toEqual([]);
      expect(m.opset('')).toBe(21);
      expect(leftovers(m), name).toEqual([]);
      try {
        const after = await run(m, data.inputs);
        for (const k of Object.keys(before)) {
          if (!after[k] || !allClose(before[k]!, after[k]!, 1e-5, 1e-6)) failures.push(`${name}: output '${k}' differs`);
        }
        compared++;
      } catch (e) {
        failures.push(`${name}: ${(e as Error).message.split('\n')[0]!.slice(0, 200)}`);
      }
    }
    console.log(
      `upgrade-opset: ${compared} models compared (of ${files.length} sampled), ${notRunnable} not runnable in onnxruntime before conversion, ${blocked.length} refused: ${blocked.join(' | ')}`,
    );
    expect(failures).toEqual([]);
    expect(compared).toBeGreaterThan(120);
  });
});

describe('upgrade-opset pass', () => {
  it.skipIf(!fs.existsSync(path.join(ROOT, 'node/test_scan_sum')))(
    'refuses what it cannot convert and leaves the model unchanged',
    async () => {
      const m = loadModel(path.join(ROOT, 'node/test_scan_sum/model.onnx'));
      const before = Buffer.from(encodeModel(m));
      const [r] = await runPipeline(m, parsePipeline('upgrade-opset{to=21}'));
      expect(r!.stats.skipped!.join(' ')).toMatch(/Scan-8 has a batch axis/);
      expect(Buffer.from(encodeModel(m)).equals(before)).toBe(true);
    },
  );

  const avgPool = path.join(ROOT, 'pytorch-converted/test_AvgPool1d/model.onnx');
  it.skipIf(!fs.existsSync(avgPool))('converts a pytorch-converted opset-6 model and reports the count', async () => {
    const m = loadModel(avgPool);
    const [r] = await runPipeline(m, parsePipeline('upgrade-opset'), { verifyEach: true });
    expect(r!.stats.counts).toMatchObject({ from: 6, to: 21 });
    expect(r!.stats.counts.nodesConverted).toBeGreaterThan(0);
    expect(m.opset('')).toBe(21);
  });
});
