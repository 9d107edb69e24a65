// Registers every built-in pass. One import and one line per pass file.
import { registerPass } from './registry.js';
import { cleanup } from './cleanup.js';
import { inferShapes } from './infer-shapes.js';
import { foldConstants } from './fold-constants.js';
import { fuseLayerNorm } from './fuse-layernorm.js';
import { fuseRmsNorm } from './fuse-rmsnorm.js';
import { fuseGelu } from './fuse-gelu.js';
import { fuseQuickGelu } from './fuse-quickgelu.js';
import { fuseSkipLayerNorm } from './fuse-skip-layernorm.js';
import { fuseRotary } from './fuse-rotary.js';
import { fuseAttention } from './fuse-attention.js';
import { gemmToMatMulAdd, matmulAddToGemm } from './gemm-matmul.js';
import { quantizeWeights } from './quantize.js';
import { upgradeOpsetPass } from './upgrade-opset.js';
import { convertQuantFormat } from './convert-quant-format.js';
import { toFp16 } from './to-fp16.js';
import { emulateFp16 } from './emulate-fp16.js';
import { fixShapes } from './fix-shapes.js';
import { foldBatchNorm } from './fold-batchnorm.js';
import { positionIdsInput } from './position-ids-input.js';
import { maskedScatter } from './masked-scatter.js';
import { lowerContrib } from './lower-contrib.js';

for (const p of [
  cleanup,
  inferShapes,
  foldConstants,
  fuseLayerNorm,
  fuseRmsNorm,
  fuseGelu,
  fuseQuickGelu,
  fuseSkipLayerNorm,
  fuseRotary,
  fuseAttention,
  gemmToMatMulAdd,
  matmulAddToGemm,
  quantizeWeights,
  upgradeOpsetPass,
  convertQuantFormat,
  toFp16,
  emulateFp16,
  fixShapes,
  foldBatchNorm,
  positionIdsInput,
  maskedScatter,
  lowerContrib,
])
  registerPass(p);
