// Named default pipelines. Fusion passes join DEFAULT_PIPELINE as they land.

/** What `edgec optimize` runs without --pipeline: tidy, type, fold, tidy what folding freed, fuse,
 * then tidy and type once more (fusions leave shared shape chains and constants behind, and their
 * contrib-op outputs need types). New fusions go before the final cleanup. */
export const DEFAULT_PIPELINE =
  'cleanup,infer-shapes,fold-constants,cleanup,infer-shapes,' +
  'gemm-to-matmul-add,fuse-layernorm,fuse-rmsnorm,fuse-gelu,fuse-quickgelu,fuse-rotary,fuse-attention,fuse-skip-layernorm,' +
  'cleanup,infer-shapes';

export const PIPELINES: Record<string, string> = {
  default: DEFAULT_PIPELINE,
  /** Structure only, no evaluation: safe on any graph. */
  minimal: 'cleanup,infer-shapes',
};

/** A pipeline name from PIPELINES, or the spec itself. */
export function resolvePipelineName(spec: string): string {
  return PIPELINES[spec.trim()] ?? spec;
}
