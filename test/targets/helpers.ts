// Shared by the target tests: the tiny MLLM written once per test file into a temp folder.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeTinyMllm } from '../../fixtures/tiny-mllm.js';
import { DataType, loadModel } from '../../ir/index.js';
import { sha256File } from '../../targets/manifest.js';

export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `edgec-${tag}-`));
}

export function tinyMllm(dir: string): string {
  const src = path.join(dir, 'tiny-mllm');
  fs.mkdirSync(src, { recursive: true });
  writeTinyMllm(src);
  return src;
}

/** Every file under a folder ('/' relative paths, sorted). */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.push(path.relative(dir, p).split(path.sep).join('/'));
    }
  };
  walk(dir);
  return out;
}

/** Every file under a folder with its bytes, by relative path (webgpu artifacts keep models in onnx/). */
export function readTree(dir: string): Record<string, Buffer> {
  return Object.fromEntries(listFiles(dir).map((f) => [f, fs.readFileSync(path.join(dir, f))]));
}

export function manifestMatchesFiles(dir: string): { ok: boolean; problems: string[] } {
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
    files: { path: string; bytes: number; sha256: string }[];
  };
  const problems: string[] = [];
  const listed = new Set(m.files.map((f) => f.path));
  for (const f of listFiles(dir)) if (f !== 'manifest.json' && !listed.has(f)) problems.push(`${f} not in manifest`);
  for (const f of m.files) {
    const p = path.join(dir, f.path);
    if (!fs.existsSync(p)) {
      problems.push(`${f.path} missing`);
      continue;
    }
    if (fs.statSync(p).size !== f.bytes) problems.push(`${f.path} size`);
    if (sha256File(p) !== f.sha256) problems.push(`${f.path} sha256`);
  }
  return { ok: problems.length === 0, problems };
}

/** Largest initializer (bytes) over the .onnx files of a folder. */
export function largestInitializer(dir: string): number {
  let max = 0;
  for (const f of listFiles(dir).filter((x) => x.endsWith('.onnx'))) {
    const m = loadModel(path.join(dir, f));
    for (const g of m.graph.allGraphs()) for (const t of g.initializers) max = Math.max(max, t.byteLength);
  }
  return max;
}

export const FLOATS = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]);
