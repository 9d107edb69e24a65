// QNN HTP coverage (formats-and-runtimes.md §6.1): a finite op list, quantized (QDQ) tensors only,
// 8/16-bit activations, int4/int8 weights, no Loop/If, Gather with non-negative indices only,
// LpNormalization p=2. Shape arithmetic must be folded away: the graph is static.
import { DataType, Node } from '../../ir/index.js';
import { CapabilityTable, ops } from '../target.js';

const Q_TYPES = new Set<number>([DataType.UINT8, DataType.UINT16, DataType.INT8, DataType.INT16, DataType.INT4, DataType.UINT4, DataType.INT32]);

function quantType(n: Node, slot: 'in' | 'out'): string | undefined {
  const v = slot === 'in' ? n.input(0) : n.output(0);
  if (v?.dtype !== undefined && !Q_TYPES.has(v.dtype)) return `${n.opType} of ${DataType[v.dtype]}: HTP quantizes to 4/8/16-bit integers`;
  return undefined;
}

export const NPU_CAPABILITIES = new CapabilityTable('QNN HTP', [
  ...ops('', `Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Conv ConvTranspose Cos
    DepthToSpace Div Elu Equal Exp Expand Flatten Floor Gather GatherElements Gelu Gemm GlobalAveragePool
    Greater GreaterOrEqual GridSample HardSigmoid HardSwish InstanceNormalization LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Min Mul Neg Not Or Pad Pow PRelu
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize Round Sigmoid Sign SimplifiedLayerNormalization Sin Slice
    Softmax SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Unsqueeze Where`),
  ...ops('', 'LpNormalization', { LpNormalization: (n) => (n.attrInt('p', 2) === 2 ? undefined : 'LpNormalization: HTP runs p=2 only') }),
  ...ops('', 'QuantizeLinear', { QuantizeLinear: (n) => quantType(n, 'out') }),
  ...ops('', 'DequantizeLinear', { DequantizeLinear: (n) => quantType(n, 'in') }),
  ...ops('com.microsoft', 'QuantizeLinear DequantizeLinear'),
], [DataType.FLOAT, DataType.FLOAT16]);
