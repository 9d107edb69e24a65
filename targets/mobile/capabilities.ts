// onnxruntime CPU EP (+ XNNPACK for 2-D MatMul/Conv) in a mobile build (formats-and-runtimes.md §6.2):
// every ai.onnx op, the com.microsoft contribs LLMs use, fp32 activations. 8-bit MatMulNBits
// fails on Android ("Only 4b quantization is supported for unpacked compute"), so 4-bit only.
import { DataType } from '../../ir/index.js';
import { CapabilityTable, ops } from '../target.js';

export const MOBILE_CAPABILITIES = new CapabilityTable('onnxruntime CPU/XNNPACK (mobile)', [
  ...ops('com.microsoft', `Attention BiasGelu FastGelu Gelu GatherBlockQuantized GroupQueryAttention
    MatMulNBits MultiHeadAttention QuickGelu RotaryEmbedding SimplifiedLayerNormalization SkipLayerNormalization
    SkipSimplifiedLayerNormalization DynamicQuantizeMatMul MatMulIntegerToFloat`, {
    MatMulNBits: (n) => (n.attrInt('bits', 4) === 4 ? undefined : `MatMulNBits bits=${n.attrInt('bits', 4)}: mobile CPU builds run 4-bit only`),
  }),
], [DataType.FLOAT], true);
