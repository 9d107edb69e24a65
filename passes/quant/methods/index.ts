// Registry of weight quantization methods; the quantize pass looks them up by name.
import { InputError } from '../../../ir/errors.js';
import type { QuantMethod } from '../types.js';
import { awq, awqGptq } from './awq.js';
import { gptq } from './gptq.js';
import { mseSearch } from './mse-search.js';
import { rtn } from './rtn.js';

const METHODS: readonly QuantMethod[] = [rtn, mseSearch, gptq, awq, awqGptq];

export function allMethods(): readonly QuantMethod[] {
  return METHODS;
}

export function getMethod(name: string): QuantMethod {
  const m = METHODS.find((x) => x.name === name);
  if (!m) throw new InputError(`unknown quantization method '${name}' (known: ${METHODS.map((x) => x.name).join(', ')})`);
  return m;
}
