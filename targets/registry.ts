// Targets by name.
import { InputError } from '../ir/index.js';
import { mobile } from './mobile/index.js';
import { npu } from './npu/index.js';
import type { Target } from './target.js';
import { TARGET_NAMES } from './target.js';
import { webgpu } from './webgpu/index.js';

const TARGETS: Record<string, Target> = { webgpu, npu, mobile };

export function getTarget(name: string): Target {
  const t = TARGETS[name];
  if (!t) throw new InputError(`unknown target '${name}' (known: ${TARGET_NAMES.join(', ')})`);
  return t;
}
