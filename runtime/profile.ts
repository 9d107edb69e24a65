// onnxruntime's own profiler, read back: the Chrome-trace events it writes (a file from
// onnxruntime-node, console lines from onnxruntime-web) summarized per node and per run.
// Node events ("<node>_kernel_time") are host-side times; on the WebGPU EP the "Api" events carry
// each GPU program's duration from timestamp queries, which is what the kernels really cost there.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Tensor } from '../ir/index.js';
import { sessionFeeds } from './ort.js';

export interface TraceEvent {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  pid?: number;
  args?: { op_name?: string; provider?: string; [k: string]: unknown };
}

export interface NodeTime {
  /** Node name in the graph as onnxruntime saw it (after its own fusions). */
  name: string;
  op: string;
  /** Microseconds per run (median over runs). */
  us: number;
  provider?: string;
}

export interface OrtProfile {
  runtime: string;
  /** Runs profiled (the first, with its one-time costs, is excluded from node medians). */
  runs: number;
  /** Wall milliseconds of each run, as the caller saw it. */
  wallMs: number[];
  /** Per node, host-side kernel time. */
  nodes: NodeTime[];
  /** Per node, GPU time from timestamp queries (WebGPU EP only; empty elsewhere). */
  gpuNodes: NodeTime[];
}

export interface ProfileOptions {
  /** Timed runs after one warm-up run (default 5). */
  runs?: number;
  intraOpNumThreads?: number;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? (s.length & 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : 0;
};

/** Parse the profiler's output: a JSON array, or console lines of one event each. */
export function parseTrace(text: string): TraceEvent[] {
  const t = text.trim();
  if (t.startsWith('[') && t.endsWith(']')) {
    try {
      return JSON.parse(t) as TraceEvent[];
    } catch {
      /* fall through to per line */
    }
  }
  const out: TraceEvent[] = [];
  for (const line of t.split('\n')) {
    const l = line.trim().replace(/,$/, '');
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as TraceEvent);
    } catch {
      /* a truncated line */
    }
  }
  return out;
}

/**
 * Per-node medians over runs. `runs` counts every profiled run including the warm-up; node events
 * of the warm-up run (the first occurrence of each node) are dropped.
 */
export function summarizeTrace(events: TraceEvent[], runs: number, runtime: string, wallMs: number[]): OrtProfile {
  const host = new Map<string, { op: string; provider?: string; durs: number[] }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const name = e.name.slice(0, -'_kernel_time'.length);
    const h = host.get(name) ?? { op: e.args?.op_name ?? '?', provider: e.args?.provider, durs: [] };
    h.durs.push(e.dur);
    host.set(name, h);
  }
  const nodes = [...host].map(([name, h]) => ({
    name,
    op: h.op,
    provider: h.provider,
    us: median(h.durs.length > 1 ? h.durs.slice(1) : h.durs),
  }));
  // GPU programs: "Api" events named "<node>&<op>&<program>"; a node may run several programs.
  const gpu = new Map<string, { op: string; programs: Map<string, number[]> }>();
  for (const e of events) {
    if (e.cat !== 'Api' || !e.name.includes('&')) continue;
    const [name = '', op = '?', program = ''] = e.name.split('&');
    const g = gpu.get(name) ?? { op, programs: new Map() };
    const p = g.programs.get(program) ?? [];
    p.push(e.dur);
    g.programs.set(program, p);
    gpu.set(name, g);
  }
  const gpuNodes = [...gpu].map(([name, g]) => {
    let us = 0;
    for (const durs of g.programs.values()) us += median(durs) * Math.max(1, Math.round(durs.length / runs));
    return { name, op: g.op, us };
  });
  return { runtime, runs: runs - 1, wallMs, nodes: nodes.sort((a, b) => b.us - a.us), gpuNodes: gpuNodes.sort((a, b) => b.us - a.us) };
}

/** Profile a model in onnxruntime-node (CPU EP): one warm-up run and `runs` timed runs. */
export async function profileNode(modelPath: string, feeds: Record<string, Tensor>, opts: ProfileOptions = {}): Promise<OrtProfile> {
  const runs = opts.runs ?? 5;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-profile-'));
  try {
    const session = await ort.InferenceSession.create(modelPath, {
      graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
      intraOpNumThreads: opts.intraOpNumThreads ?? 1,
      enableProfiling: true,
      profileFilePrefix: path.join(dir, 'ort'),
      logSeverityLevel: 3,
    });
    const wallMs: number[] = [];
    try {
      const ortFeeds = sessionFeeds(session.inputNames, feeds);
      for (let i = 0; i <= runs; i++) {
        const t0 = performance.now();
        await session.run(ortFeeds);
        if (i > 0) wallMs.push(performance.now() - t0);
      }
      session.endProfiling();
    } finally {
      await session.release();
    }
    // onnxruntime writes <prefix>_<date>.json (into the folder of the prefix, or the cwd on some builds).
    let file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) {
      const cwd = fs.readdirSync('.').filter((f) => f.startsWith(path.join(dir, 'ort').replace(/\//g, '_')) || f.startsWith('ort_'));
      throw new Error(`onnxruntime wrote no profile into ${dir}${cwd.length ? ` (found ${cwd.join(', ')})` : ''}`);
    }
    file = path.join(dir, file);
    return summarizeTrace(parseTrace(fs.readFileSync(file, 'utf8')), runs + 1, 'onnxruntime-node cpu', wallMs);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Wall milliseconds of `runs` runs (after one warm-up) of one onnxruntime-node session, no profiler. */
export async function timeNode(modelPath: string, feeds: Record<string, Tensor>, opts: ProfileOptions = {}): Promise<number[]> {
  const session = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: opts.graphOptimizationLevel ?? 'all',
    intraOpNumThreads: opts.intraOpNumThreads ?? 1,
    logSeverityLevel: 3,
  });
  try {
    const ortFeeds = sessionFeeds(session.inputNames, feeds);
    const out: number[] = [];
    for (let i = 0; i <= (opts.runs ?? 5); i++) {
      const t0 = performance.now();
      await session.run(ortFeeds);
      if (i > 0) out.push(performance.now() - t0);
    }
    return out;
  } finally {
    await session.release();
  }
}
