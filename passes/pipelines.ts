// Named default pipelines. Fusion passes join DEFAULT_PIPELINE as they land.

/** What `edgec optimize` runs without --pipeline: tidy, type, fold, tidy what folding freed. */
export const DEFAULT_PIPELINE = 'cleanup,infer-shapes,fold-constants,cleanup,infer-shapes,' +
  'gemm-to-matmul-add,fuse-layernorm,fuse-rmsnorm,fuse-gelu,fuse-skip-layernorm,fuse-rotary,fuse-attention';

export const PIPELINES: Record<string, string> = {
  default: DEFAULT_PIPELINE,
  /** Structure only, no evaluation: safe on any graph. */
  minimal: 'cleanup,infer-shapes',
};

/** A pipeline name from PIPELINES, or the spec itself. */
export function resolvePipelineName(spec: string): string {
  return PIPELINES[spec.trim()] ?? spec;
}
