// Shapes that chain in an MLLM folder (targets/chain.ts): encoder -> projector -> decoder must agree
// for every variant. A folder of the real SigLIP and InternVL-projector exports compiled with
// --policy internvl: the projector's static variants take the encoder's token count, a --fix that
// contradicts it fails with the mismatch named (exit 1, one line), and the 2x2-merge projector
// alone gets a static output from --fix num_tokens.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, type Dim, type Model } from '../../ir/index.js';
import { compile } from '../../targets/compile.js';
import { shapeChainMismatch, type Emitted } from '../../targets/chain.js';
import type { Role } from '../../ir/summary.js';
import type { SubModel } from '../../targets/target.js';
import { cli } from '../cli/helpers.js';
import { tempDir } from './helpers.js';

const ROOT = path.resolve(__dirname, '../../fixtures/export');
const tmp = tempDir('shape-chain');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function folder(): string {
  const dir = path.join(tmp, 'siglip-internvl');
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'siglip_vit', 'model.onnx'), path.join(dir, 'vision_encoder.onnx'));
  fs.copyFileSync(path.join(ROOT, 'projector', 'model.onnx'), path.join(dir, 'projector.onnx'));
  return dir;
}

describe('encoder -> projector shapes on real exports', () => {
  it('--policy internvl on npu: a --fix num_tokens the 448 tiles contradict fails naming both files and shapes', async () => {
    const r = await cli(
      'compile',
      folder(),
      '--target',
      'npu',
      '--policy',
      'internvl',
      '--fix',
      'num_tokens=256',
      '--no-verify',
      '-o',
      path.join(tmp, 'bad'),
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      'edgec: shapes do not chain: vision_encoder_448x448_b4.onnx outputs last_hidden_state [4,784,64] but projector_448x448_b4.onnx takes image_features [4,256,64]',
    ]);
    expect(fs.existsSync(path.join(tmp, 'bad'))).toBe(false);
  }, 240_000);

  it('--policy internvl on npu: each projector variant takes its encoder variant output; the 2x2 merge gives a quarter of the tokens', async () => {
    const r = await compile(folder(), { target: 'npu', policy: 'internvl', out: path.join(tmp, 'ok'), verify: false });
    const shapes = Object.fromEntries(r.manifest.models.map((e) => [e.file, { in: e.inputs[0]!.shape, out: e.outputs[0]!.shape }]));
    expect(shapes['vision_encoder_448x448_b4.onnx']!.out).toEqual([4, 784, 64]);
    expect(shapes['projector_448x448_b4.onnx']).toEqual({ in: [4, 784, 64], out: [4, 196, 128] });
    expect(shapes['projector_448x448_b1.onnx']).toEqual({ in: [1, 784, 64], out: [1, 196, 128] });
    // Files in folder order, as before the projectors were compiled last.
    expect(r.manifest.models.map((e) => e.name)).toEqual(['projector', 'projector', 'vision_encoder', 'vision_encoder']);
  }, 240_000);

  it('the 2x2-merge projector alone on npu: --fix num_tokens=256 leaves no dim symbolic, output [1, 64, 128], verified', async () => {
    const r = await compile(path.join(ROOT, 'projector', 'model.onnx'), {
      target: 'npu',
      fix: { num_tokens: 256 },
      out: path.join(tmp, 'proj'),
    });
    const e = r.manifest.models[0]!;
    expect(e.inputs[0]!.shape).toEqual([1, 256, 64]);
    expect(e.outputs[0]!.shape).toEqual([1, 64, 128]);
    expect(e.verification!.passed).toBe(true);
  }, 240_000);
});

/** One-input one-output model with the given float shapes. */
function model(inName: string, inShape: Dim[], outShape: Dim[], inType = DataType.FLOAT): Model {
  const b = new GraphBuilder();
  const x = b.input(inName, inType, inShape);
  b.output(b.op1('Identity', [x]), 'out', DataType.FLOAT, outShape);
  return b.build();
}

const entry = (role: Role, file: string, suffix: string, m: Model): Emitted => ({
  sm: { role, name: file } as SubModel,
  variant: { suffix, dims: {} },
  file,
  model: m,
});

describe('shapeChainMismatch', () => {
  const enc = (suffix: string, tokens: number) =>
    entry('vision-encoder', `enc_${suffix}`, suffix, model('pixel_values', [4, 3, 448, 448], [4, tokens, 64]));
  const proj = (suffix: string, tokens: Dim, hidden = 128) =>
    entry('projector', `proj_${suffix}`, suffix, model('image_features', [4, tokens, 64], [4, 'merged', hidden]));

  it('pairs variants by shape bucket; symbolic dims agree with anything', () => {
    expect(shapeChainMismatch([enc('448', 1024), proj('448', 1024), enc('224', 256), proj('224', 256)])).toBeUndefined();
    expect(shapeChainMismatch([enc('448', 1024), proj('', 'tokens')])).toBeUndefined();
    expect(shapeChainMismatch([enc('448', 1024), proj('448', 256), enc('224', 256), proj('224', 256)])).toBe(
      'enc_448 outputs out [4,1024,64] but proj_448 takes image_features [4,256,64]',
    );
  });

  it('the projector hidden size against the decoder inputs_embeds and the token embeddings', () => {
    const dec = entry('decoder', 'decoder', '', model('inputs_embeds', ['batch', 'seq', 96], ['batch', 'seq', 272]));
    expect(shapeChainMismatch([proj('', 'tokens', 128), dec])).toBe(
      'proj_ outputs out [4,merged,128] but decoder takes inputs_embeds [batch,seq,96]',
    );
    const emb = entry('embeddings', 'embed_tokens', '', model('input_ids', ['batch', 'seq'], ['batch', 'seq', 96], DataType.INT64));
    expect(shapeChainMismatch([proj('', 'tokens', 128), emb])).toBe(
      'proj_ outputs out [4,merged,128] but embed_tokens gives token embeddings [batch,seq,96]',
    );
    expect(shapeChainMismatch([proj('', 'tokens', 96), dec, emb])).toBeUndefined();
  });
});
