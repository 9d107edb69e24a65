// npu artifact details: weights and activations in full QDQ form (A16W4 decoder, A16W8 vision),
// one static file per shape bucket (decoder chunked prefill + 1-token decode, one vision encoder
// per image size, or per tile size and encoder batch of a tiling policy) sharing one weights file,
// and QNN provider options.
import { DataType, Model, Tensor } from '../../ir/index.js';
import { positionIdsFromMask } from '../position-ids.js';
import { calibrationSets } from '../calibration.js';
import { DEFAULT_IMAGE, resolveDims, tilingVariants, type DimContext } from '../dims.js';
import type { SubModel, Variant } from '../target.js';
import { quantizeForHtp } from './qdq.js';
import { runCalibrationSets } from '../run-feeds.js';
import { imageInput, meanStd, preprocessFromMeta, shapesOf } from '../../runtime/inputs.js';
import { syntheticScene, toPixelValues, type Normalize } from '../../runtime/image.js';
import { rng } from '../../runtime/ort.js';

function dimContext(sm: SubModel, seq: number, image = sm.opts.imageSizes[0] ?? DEFAULT_IMAGE): DimContext {
  return { seq, context: sm.opts.context, image, patch: sm.patch, fix: sm.opts.fix };
}

export async function npuFinalize(model: Model, sm: SubModel): Promise<Record<string, number>> {
  // --quant none: a float graph (the HTP runs it in fp16 with enable_htp_fp16_precision).
  if (sm.plan.format === 'none') return {};
  const s = await quantizeForHtp(model, await htpCalibrationSets(model, sm), sm.progress, sm.opts.calibrationMethod);
  return {
    int8Weights: s.int8Weights,
    int32Biases: s.int32Biases,
    uint16Constants: s.uint16Constants,
    uint16Activations: s.activations,
    sharedEncodings: s.sharedEncodings,
    fixedEncodings: s.fixedEncodings,
    activationsLeftFloat: s.leftFloat,
  };
}

/** Calibration sets for the graph as exported (position ids come from the mask, as the runtime will
 * make them: random ids would calibrate rotary angles over the wrong positions). */
async function htpCalibrationSets(model: Model, sm: SubModel): Promise<Record<string, Tensor>[]> {
  const run = await runCalibrationSets(model, sm, 'static');
  if (run) return run;
  const g = model.graph;
  const pos = g.inputs.find((v) => v.name === 'position_ids');
  const mask = g.inputs.find((v) => /attention_mask/.test(v.name));
  const tok = g.inputs.find((v) => /input_ids|inputs_embeds/.test(v.name));
  if (!pos || !mask || !tok) return withScenes(model, sm, calibrationSets(model, sm, 4));
  // Sets are made (or read) for the exported inputs, then given the ids the runtime would compute.
  const sets = calibrationSets(model, sm, 4, ['position_ids']).map((s) => ({
    ...s,
    position_ids: positionIdsFromMask(s[mask.name]!, s[tok.name]!.dims[1]!, pos.dtype),
  }));
  // Rotary angles grow with the position: one more set at the last positions of the static context,
  // so that the ranges cover every position the artifact will see.
  const first = sets[0]!,
    ids = first.position_ids!.toNumbers();
  const shift = sm.opts.context - 1 - Math.max(...ids);
  if (shift > 0)
    sets.push({
      ...first,
      position_ids: Tensor.fromNumbers(
        'position_ids',
        pos.dtype ?? DataType.INT64,
        [...first.position_ids!.dims],
        Array.from(ids, (x) => x + shift),
      ),
    });
  return sets;
}

/** Scenes per synthetic calibration of an image model. */
const SCENES = 8;

/** Synthetic calibration of an image input: beside the noise sets, seeded scenes (shapes on
 * gradients) normalized as the model's preprocessing says. On white noise alone a trained
 * classifier's deep activations stayed 18x under their range on real images, and one of its 33
 * test images changed class. */
function withScenes(model: Model, sm: SubModel, sets: Record<string, Tensor>[]): Record<string, Tensor>[] {
  const img = imageInput(model);
  const used = sm.calibrationUsed;
  const first = sets[0]?.[img?.name ?? ''];
  if (!img || !used?.synthetic || !first || first.dims[1] !== 3) return sets;
  const [, , h, w] = first.dims as [number, number, number, number];
  const norm = meanStd(sm.opts.preprocess ?? preprocessFromMeta(sm.source));
  const rand = rng(sm.opts.seed + 31);
  const n = { mean: norm.mean as Normalize['mean'], std: norm.std as Normalize['std'] };
  // Each scene set keeps a noise set's other inputs, and its batch.
  const scenes = Array.from({ length: SCENES }, (_, i) => {
    const base = sets[i % sets.length]!,
      b = base[img.name]!.dims[0]!;
    const px = new Float32Array(b * 3 * h * w);
    for (let k = 0; k < b; k++) px.set(toPixelValues(syntheticScene(w, h, rand), n), k * 3 * h * w);
    return { ...base, [img.name]: Tensor.fromFloat32(img.name, [b, 3, h, w], px) };
  });
  const all = [...sets, ...scenes];
  sm.calibrationUsed = {
    ...used,
    count: all.length,
    from: [...used.from, `${SCENES} synthetic scenes (seeded shapes on gradients, ${norm.name})`],
    shapes: shapesOf(all),
  };
  return all;
}

export function npuVariants(model: Model, sm: SubModel): Variant[] {
  const seqLike = model.graph.inputs.some((v) =>
    (v.type?.shape ?? []).some((d) => typeof d === 'string' && /^(seq|seq_len|sequence|sequence_length)$/i.test(d)),
  );
  // Prefill chunks and 1-token decode steps only make sense with a KV cache to carry state.
  const kv = model.graph.inputs.some((v) => /past|cache/i.test(v.name));
  if (sm.role === 'decoder' && seqLike && !kv) {
    return [{ suffix: `seq${sm.opts.context}`, dims: resolveDims(model, dimContext(sm, sm.opts.context)).dims }];
  }
  if (((sm.role === 'decoder' && kv) || sm.role === 'embeddings') && seqLike) {
    const chunk = sm.opts.prefillChunk;
    return [
      { suffix: `prefill${chunk}`, dims: resolveDims(model, dimContext(sm, chunk)).dims },
      { suffix: 'decode', dims: resolveDims(model, dimContext(sm, 1)).dims },
    ];
  }
  if (sm.role === 'vision-encoder' || sm.role === 'projector') {
    const tiling = sm.opts.tiling;
    if (tiling) return tilingVariants(model, sm, tiling, sm.opts.prefillChunk, () => true);
    const sizes = sm.opts.imageSizes.length ? sm.opts.imageSizes : [DEFAULT_IMAGE];
    return sizes.map((s) => ({ suffix: `${s.width}x${s.height}`, dims: resolveDims(model, dimContext(sm, sm.opts.prefillChunk, s)).dims }));
  }
  return [{ suffix: 'static', dims: resolveDims(model, dimContext(sm, sm.opts.prefillChunk)).dims }];
}

export function npuFileName(sm: SubModel, v: Variant): string {
  return `${sm.name}_${v.suffix}.onnx`;
}

export function npuSessionOptions(_model: Model, sm: SubModel, externalData: string[]): Record<string, unknown> {
  return {
    executionProvider: 'QNNExecutionProvider',
    providerOptions: {
      backend_path: 'libQnnHtp.so',
      htp_performance_mode: 'burst',
      htp_graph_finalization_optimization_mode: '3',
      enable_htp_fp16_precision: '1',
      offload_graph_io_quantization: '1',
    },
    sessionConfig: {
      // Partial offload would hide a slow CPU path; fail instead.
      'session.disable_cpu_ep_fallback': '1',
      'ep.context_enable': '1',
      'ep.context_embed_mode': '0',
      // Prefill and decode graphs of one model share weights in one context binary.
      ...(sm.role === 'decoder' || sm.role === 'embeddings' ? { 'ep.share_ep_contexts': '1' } : {}),
    },
    externalData,
  };
}
