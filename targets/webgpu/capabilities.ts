// onnxruntime-web WebGPU EP coverage (formats-and-runtimes.md §5.2): the ONNX ops with WebGPU
// kernels and the com.microsoft contribs of webgpu_contrib_kernels.cc. Shape arithmetic
// (Shape, Range, ...) is listed because ORT places it on CPU by design, not as a fallback.
import { DataType, Node } from '../../ir/index.js';
import { CapabilityTable, ops } from '../target.js';

function matMulNBits(n: Node): string | undefined {
  const bits = n.attrInt('bits', 4);
  if (bits !== 4 && bits !== 8) return `MatMulNBits bits=${bits}: the WebGPU kernel runs 4 or 8`;
  if (n.input(4)) return 'MatMulNBits with g_idx: rejected by the WebGPU kernel';
  const zp = n.input(3);
  if (zp && zp.dtype !== undefined && zp.dtype !== DataType.UINT8) return 'MatMulNBits float zero points: the WebGPU kernel takes uint8 only';
  return undefined;
}

function gatherBlockQuantized(n: Node): string | undefined {
  const bits = n.attrInt('bits', 4);
  return bits === 4 || bits === 8 ? undefined : `GatherBlockQuantized bits=${bits}: WebGPU runs 4 or 8`;
}

export const WEBGPU_CAPABILITIES = new CapabilityTable('onnxruntime-web WebGPU EP', [
  ...ops('', `Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
    Ceil Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear
    Div Einsum Elu Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
    GlobalMaxPool Greater GreaterOrEqual GridSample HardSigmoid HardSwish Identity InstanceNormalization
    LayerNormalization LeakyRelu Less LessOrEqual Log MatMul MaxPool Mul Neg Not Or Pad Pow Range Reciprocal
    ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize RotaryEmbedding ScatterElements ScatterND Shape Sigmoid Sign
    SimplifiedLayerNormalization Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
    Sub Tan Tanh ThresholdedRelu Tile Transpose Trilu Unsqueeze Where Xor RMSNormalization`),
  ...ops('com.microsoft', `Attention BiasAdd BiasGelu BiasSplitGelu FastGelu FusedConv GatherBlockQuantized Gelu
    GroupQueryAttention MatMulNBits MatMulNBitsQkv MatMulNBitsMlp MultiHeadAttention QuickGelu RotaryEmbedding
    MRotaryEmbedding SimplifiedLayerNormalization SkipLayerNormalization SkipSimplifiedLayerNormalization`,
  { MatMulNBits: matMulNBits, GatherBlockQuantized: gatherBlockQuantized }),
], [DataType.FLOAT, DataType.FLOAT16]);
