// What a runtime feeds a decoder whose position ids were turned into an input (position-ids-input):
// cumsum(attention_mask) - 1 over the new tokens, 1 at padding, as the exported graph computed them.
import { DataType, Model, Tensor } from '../ir/index.js';

export function positionIdsFromMask(mask: Tensor, seq: number, dtype: DataType = DataType.INT64): Tensor {
  const [b, total] = mask.dims as [number, number];
  const m = mask.toNumbers();
  const out = new Array<number>(b * seq);
  for (let i = 0; i < b; i++) {
    let sum = 0;
    for (let j = 0; j < total; j++) {
      sum += m[i * total + j]!;
      const k = j - (total - seq);
      if (k >= 0) out[i * seq + k] = m[i * total + j] === 0 ? 1 : sum - 1;
    }
  }
  return dtype === DataType.INT64
    ? Tensor.fromInt64('position_ids', [b, seq], out)
    : Tensor.fromNumbers('position_ids', dtype, [b, seq], out);
}

/** Inputs a compiled model takes that its source does not, derived from the source's feeds. */
export function derivedInputs(source: Model, compiled: Model): ((feeds: Record<string, Tensor>) => Record<string, Tensor>) | undefined {
  const pos = compiled.graph.inputs.find((v) => v.name === 'position_ids');
  if (!pos || source.graph.inputs.some((v) => v.name === 'position_ids')) return undefined;
  const maskName = source.graph.inputs.find((v) => /attention_mask/.test(v.name))?.name;
  const tokName = source.graph.inputs.find((v) => /input_ids|inputs_embeds/.test(v.name))?.name;
  if (!maskName || !tokName) return undefined;
  return (feeds) => ({ position_ids: positionIdsFromMask(feeds[maskName]!, feeds[tokName]!.dims[1]!, pos.dtype ?? DataType.INT64) });
}
