export * from './dtype.js';
export * from './errors.js';
export * from './graph.js';
export * from './tensor.js';
export { loadModel, decodeModel, loadTensorFile, decodeTensor, decodeType, longToInt, MAX_IR_VERSION } from './reader.js';
export { saveModel, encodeModel, encodeTensor, externalSources, INLINE_LIMIT, type SaveOptions, type SaveResult } from './writer.js';
export { checkLocation, resolveExternal, readRange, forEachChunk, type ExternalRef } from './external-data.js';
export { GraphBuilder, type BuilderOptions, type OpOptions } from './builder.js';
export { summarize, guessRole, type ModelSummary, type Role } from './summary.js';
