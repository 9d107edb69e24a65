// Run models in headless Chromium with onnxruntime-web's WebGPU EP (SwiftShader adapter on CPU).
// One browser serves many runs: Chromium startup dominates, so callers keep a session open.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { DataType, Tensor, byteLength, numElements } from '../ir/index.js';
import { OrtProfile, parseTrace, summarizeTrace } from './profile.js';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--enable-unsafe-swiftshader',
  '--use-webgpu-adapter=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

const WEB_TYPES: Partial<Record<DataType, string>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.FLOAT16]: 'float16',
  [DataType.INT64]: 'int64',
  [DataType.INT32]: 'int32',
  [DataType.UINT8]: 'uint8',
  [DataType.INT8]: 'int8',
  [DataType.BOOL]: 'bool',
  [DataType.UINT16]: 'uint16',
};
const FROM_WEB: Record<string, DataType> = Object.fromEntries(Object.entries(WEB_TYPES).map(([k, v]) => [v, Number(k)]));

const MIME: Record<string, string> = {
  '.mjs': 'text/javascript',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.html': 'text/html',
  '.json': 'application/json',
};

export interface BrowserRunOptions {
  /** External data files of the model, relative to its folder (passed as InferenceSession externalData). */
  externalData?: string[];
  /** Output names to fetch (default: all). */
  outputs?: string[];
}

export interface AdapterInfo {
  features: string[];
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

interface WireTensor {
  type: string;
  dims: number[];
  b64: string;
}

/** Per execution provider (WebGpuExecutionProvider, CPUExecutionProvider): node count and the nodes
 * (onnxruntime names them only when the graph is split across providers). */
export type Placement = Record<string, { count: number; nodes: { op: string; name: string }[] }>;

/** A localhost server plus one Chromium page with onnxruntime-web loaded. */
export class WebGpuBrowser {
  private roots = new Map<string, string>();
  private next = 0;

  private constructor(
    private server: http.Server,
    private browser: BrowserContext,
    private page: Page,
    private profileDir: string,
    private base: string,
  ) {}

  static async launch(): Promise<WebGpuBrowser> {
    if (!fs.existsSync(CHROMIUM_PATH)) throw new Error(`${CHROMIUM_PATH} not found (apt-get install chromium)`);
    const ortDist = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));
    const roots = new Map<string, string>();
    const server = http.createServer((req, res) => serve(req, res, ortDist, roots));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edgec-chromium-'));
    let browser: BrowserContext | undefined;
    try {
      // A fresh profile per session: nothing cached from an earlier run can leak in.
      browser = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_FLAGS });
      const page = browser.pages()[0] ?? (await browser.newPage());
      await page.goto(`${base}/index.html`);
      await page.waitForFunction(() => (globalThis as unknown as { edgecReady?: boolean }).edgecReady === true);
      const b = new WebGpuBrowser(server, browser, page, profileDir, base);
      b.roots = roots;
      return b;
    } catch (e) {
      await browser?.close().catch(() => undefined);
      server.close();
      fs.rmSync(profileDir, { recursive: true, force: true });
      throw e;
    }
  }

  /** What the WebGPU adapter offers (SwiftShader: no shader-f16). */
  async adapter(): Promise<AdapterInfo> {
    return this.page.evaluate(async () => {
      const a = await (navigator as unknown as { gpu: GPU }).gpu.requestAdapter();
      if (!a) throw new Error('no WebGPU adapter');
      return {
        features: [...a.features].map(String).sort(),
        maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
        maxBufferSize: a.limits.maxBufferSize,
      };
    });
  }

  /** Run a self-contained function in the page (serialized by source: it may capture nothing). */
  async evaluate<R, A>(fn: (arg: A) => Promise<R>, arg: A): Promise<R> {
    return this.page.evaluate(fn as (a: unknown) => Promise<R>, arg as unknown);
  }

  /** Run `modelFile` (its folder is served) on the WebGPU EP; returns outputs as IR tensors. */
  async run(modelFile: string, feeds: Record<string, Tensor>, opts: BrowserRunOptions = {}): Promise<Record<string, Tensor>> {
    const { key, url, ext } = this.serve(modelFile, opts);
    const wire = toWire(feeds);
    try {
      const out = await this.page.evaluate(
        (a) => (globalThis as unknown as { edgecRun: (x: unknown) => Promise<Record<string, WireTensor>> }).edgecRun(a),
        { url, ext, wire, outputs: opts.outputs ?? null },
      );
      const result: Record<string, Tensor> = {};
      for (const [k, w] of Object.entries(out)) {
        const dtype = FROM_WEB[w.type];
        if (dtype === undefined) throw new Error(`unsupported onnxruntime-web output type ${w.type}`);
        const bytes = new Uint8Array(Buffer.from(w.b64, 'base64'));
        result[k] = Tensor.fromBytes(k, dtype, w.dims, bytes.subarray(0, byteLength(dtype, numElements(w.dims))));
      }
      return result;
    } finally {
      this.roots.delete(key);
    }
  }

  /** Profile `modelFile` with onnxruntime-web's profiler on the WebGPU EP (GPU times per program from
   * timestamp queries) or the wasm EP: one warm-up run and `runs` timed runs. */
  async profile(
    modelFile: string,
    feeds: Record<string, Tensor>,
    opts: BrowserRunOptions & { ep?: 'webgpu' | 'wasm'; runs?: number } = {},
  ): Promise<OrtProfile> {
    const { key, url, ext } = this.serve(modelFile, opts);
    const runs = opts.runs ?? 5;
    const lines: string[] = [];
    const listen = (m: { text(): string }) => lines.push(m.text());
    this.page.on('console', listen);
    try {
      const wallMs = await this.page.evaluate(
        (a) => (globalThis as unknown as { edgecProfile: (x: unknown) => Promise<number[]> }).edgecProfile(a),
        { url, ext, wire: toWire(feeds), ep: opts.ep ?? 'webgpu', runs },
      );
      const ep = opts.ep ?? 'webgpu';
      // Console events reach us asynchronously: wait for the trace's closing bracket.
      for (let i = 0; i < 100 && !lines.some((l) => l.trim() === ']'); i++) await new Promise((r) => setTimeout(r, 50));
      return summarizeTrace(parseTrace(lines.join('\n')), runs + 1, `onnxruntime-web ${ep}`, wallMs);
    } finally {
      this.page.off('console', listen);
      this.roots.delete(key);
    }
  }

  /** Which execution provider onnxruntime-web assigns each node to (after its own load-time fusions). */
  async placement(modelFile: string, opts: BrowserRunOptions = {}): Promise<Placement> {
    const { key, url, ext } = this.serve(modelFile, opts);
    const lines: string[] = [];
    const listen = (m: { text(): string }) => lines.push(m.text());
    this.page.on('console', listen);
    try {
      await this.page.evaluate((a) => (globalThis as unknown as { edgecPlace: (x: unknown) => Promise<void> }).edgecPlace(a), { url, ext });
    } finally {
      this.page.off('console', listen);
      this.roots.delete(key);
    }
    const out: Placement = {};
    let ep: string | undefined;
    for (const l of lines) {
      const head = /(?:All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(l);
      if (head) {
        ep = head[1]!;
        out[ep] = { count: Number(head[2]), nodes: [] };
        continue;
      }
      const node = /VerifyEachNodeIsAssignedToAnEp\]\s{2,}(\w+) \((.*)\)\s*$/.exec(l);
      if (node && ep) out[ep]!.nodes.push({ op: node[1]!, name: node[2]! });
    }
    return out;
  }

  private serve(modelFile: string, opts: BrowserRunOptions): { key: string; url: string; ext: { path: string; data: string }[] } {
    const dir = path.dirname(path.resolve(modelFile));
    const key = `m${this.next++}`;
    this.roots.set(key, dir);
    const url = `/files/${key}/${encodeURIComponent(path.basename(modelFile))}`;
    const ext = (opts.externalData ?? []).map((p) => ({
      path: p,
      data: `/files/${key}/${p.split('/').map(encodeURIComponent).join('/')}`,
    }));
    return { key, url, ext };
  }

  async close(): Promise<void> {
    await this.browser.close().catch(() => undefined);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.profileDir, { recursive: true, force: true });
  }

  get url(): string {
    return this.base;
  }
}

function toWire(feeds: Record<string, Tensor>): Record<string, WireTensor> {
  const wire: Record<string, WireTensor> = {};
  for (const [k, t] of Object.entries(feeds)) {
    const type = WEB_TYPES[t.dtype];
    if (!type) throw new Error(`onnxruntime-web cannot take tensor '${k}' of this dtype`);
    wire[k] = { type, dims: t.dims, b64: Buffer.from(t.bytes()).toString('base64') };
  }
  return wire;
}

function serve(req: http.IncomingMessage, res: http.ServerResponse, ortDist: string, roots: Map<string, string>): void {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  let file: string | undefined;
  if (url.pathname === '/index.html') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(PAGE);
    return;
  }
  if (parts[0] === 'ort' && parts.length === 2) file = safeJoin(ortDist, parts[1]!);
  else if (parts[0] === 'files' && parts.length >= 3 && roots.has(parts[1]!))
    file = safeJoin(roots.get(parts[1]!)!, parts.slice(2).join('/'));
  if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream', 'content-length': fs.statSync(file).size });
  fs.createReadStream(file).pipe(res);
}

function safeJoin(root: string, rel: string): string | undefined {
  const p = path.resolve(root, rel);
  return p.startsWith(path.resolve(root) + path.sep) ? p : undefined;
}

// The page side lives here as plain JS (not a function passed through evaluate) so that test
// transformers cannot rewrite its dynamic import.
const PAGE = `<!doctype html><title>edgec</title><script type="module">
import * as ort from '/ort/ort.webgpu.min.mjs';
ort.env.wasm.wasmPaths = '/ort/';
ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';
const decode = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const encode = (u) => { let s = ''; for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000)); return btoa(s); };
const ctor = { float32: Float32Array, float16: Uint16Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, int8: Int8Array, bool: Uint8Array, uint16: Uint16Array };
const toFeeds = (wire) => {
  const feeds = {};
  for (const [k, w] of Object.entries(wire)) {
    const bytes = decode(w.b64);
    const C = ctor[w.type];
    feeds[k] = new ort.Tensor(w.type, new C(bytes.buffer, 0, bytes.length / C.BYTES_PER_ELEMENT), w.dims);
  }
  return feeds;
};
globalThis.edgecRun = async ({ url, ext, wire, outputs }) => {
  const session = await ort.InferenceSession.create(url, { executionProviders: ['webgpu'], externalData: ext, graphOptimizationLevel: 'all' });
  try {
    const feeds = toFeeds(wire);
    const res = await session.run(feeds, outputs ?? session.outputNames);
    const got = {};
    for (const [k, t] of Object.entries(res)) {
      const d = await t.getData();
      got[k] = { type: t.type, dims: [...t.dims].map(Number), b64: encode(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)) };
    }
    return got;
  } finally {
    await session.release();
  }
};
// onnxruntime's profiler prints its events to the console on the web; the caller collects them.
globalThis.edgecProfile = async ({ url, ext, wire, ep, runs }) => {
  const session = await ort.InferenceSession.create(url, { executionProviders: [ep], externalData: ext, graphOptimizationLevel: 'all', enableProfiling: true });
  const wall = [];
  try {
    const feeds = toFeeds(wire);
    for (let i = 0; i <= runs; i++) {
      const t0 = performance.now();
      const res = await session.run(feeds);
      for (const t of Object.values(res)) { await t.getData(); t.dispose?.(); }
      if (i > 0) wall.push(performance.now() - t0);
    }
    session.endProfiling();
  } finally {
    await session.release();
  }
  return wall;
};
// Session creation with verbose logs: onnxruntime prints which EP each node was placed on.
globalThis.edgecPlace = async ({ url, ext }) => {
  ort.env.logLevel = 'verbose';
  try {
    const session = await ort.InferenceSession.create(url, { executionProviders: ['webgpu'], externalData: ext, graphOptimizationLevel: 'all', logSeverityLevel: 0, logVerbosityLevel: 0 });
    await session.release();
  } finally {
    ort.env.logLevel = 'error';
  }
};
globalThis.edgecReady = true;
</script>`;
