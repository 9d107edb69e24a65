// The page side of the kernel harness: one self-contained function handed to the browser (it is
// serialized by source, so it may reference nothing outside itself). It opens a device with the
// features asked for, compiles each kernel, runs it once for its output, then times it: GPU
// timestamps around a pass of `reps` dispatches where the adapter has timestamp-query, otherwise
// wall time from submit to onSubmittedWorkDone over the same dispatches.

export interface PageBuffer {
  /** Initial contents, base64; or only a size (zero-filled). */
  b64?: string;
  bytes: number;
}

export interface PageJob {
  name: string;
  wgsl: string;
  dispatch: [number, number, number];
  /** Bindings in order; the last is the output. */
  buffers: PageBuffer[];
  /** Read back the last buffer. */
  read: boolean;
  /** Dispatches per timed pass; 0 = do not time. */
  reps: number;
  /** Timed passes (the median is reported). */
  trials: number;
}

export interface PageRequest {
  features: string[];
  jobs: PageJob[];
}

export interface PageJobResult {
  name: string;
  /** Compilation or validation errors (empty when it ran). */
  errors: string[];
  out?: string;
  /** Median seconds per dispatch. */
  seconds?: number;
  timer?: 'timestamp' | 'wall';
}

export interface PageResult {
  features: string[];
  subgroupMinSize: number;
  subgroupMaxSize: number;
  adapter: string;
  results: PageJobResult[];
}

export async function runOnPage(req: PageRequest): Promise<PageResult> {
  const gpu = (navigator as Navigator & { gpu: GPU }).gpu;
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  const have = [...adapter.features].map(String);
  const want = req.features.filter((f) => have.includes(f)) as GPUFeatureName[];
  const timestamps = have.includes('timestamp-query');
  if (timestamps) want.push('timestamp-query');
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const decode = (s: string): Uint8Array => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const encode = (u: Uint8Array): string => {
    let s = '';
    for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const results: PageJobResult[] = [];
  for (const job of req.jobs) {
    const res: PageJobResult = { name: job.name, errors: [] };
    results.push(res);
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: job.wgsl });
    const info2 = await module.getCompilationInfo();
    for (const m of info2.messages) if (m.type === 'error') res.errors.push(`${m.lineNum}:${m.linePos} ${m.message}`);
    if (res.errors.length) {
      await device.popErrorScope();
      continue;
    }
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const buffers = job.buffers.map((b, i) => {
      const size = Math.max(16, Math.ceil(b.bytes / 16) * 16);
      const last = i === job.buffers.length - 1;
      const buf = device.createBuffer({
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | (last ? GPUBufferUsage.COPY_SRC : 0),
        mappedAtCreation: !!b.b64,
      });
      if (b.b64) {
        new Uint8Array(buf.getMappedRange()).set(decode(b.b64));
        buf.unmap();
      }
      return buf;
    });
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const dispatch = (pass: GPUComputePassEncoder, n: number): void => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      for (let i = 0; i < n; i++) pass.dispatchWorkgroups(job.dispatch[0], job.dispatch[1], job.dispatch[2]);
    };
    const enc = device.createCommandEncoder();
    const p = enc.beginComputePass();
    dispatch(p, 1);
    p.end();
    const outBuf = buffers[buffers.length - 1]!;
    const outBytes = job.buffers[job.buffers.length - 1]!.bytes;
    let staging: GPUBuffer | undefined;
    if (job.read) {
      staging = device.createBuffer({ size: outBuf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      enc.copyBufferToBuffer(outBuf, 0, staging, 0, outBuf.size);
    }
    device.queue.submit([enc.finish()]);
    const err = await device.popErrorScope();
    if (err) {
      res.errors.push(err.message);
      buffers.forEach((b) => b.destroy());
      continue;
    }
    if (staging) {
      await staging.mapAsync(GPUMapMode.READ);
      res.out = encode(new Uint8Array(staging.getMappedRange()).slice(0, outBytes));
      staging.destroy();
    }
    if (job.reps > 0) {
      const times: number[] = [];
      for (let t = 0; t < job.trials; t++) {
        if (timestamps) {
          const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
          const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
          const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
          const e = device.createCommandEncoder();
          const pass = e.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
          dispatch(pass, job.reps);
          pass.end();
          e.resolveQuerySet(qs, 0, 2, resolve, 0);
          e.copyBufferToBuffer(resolve, 0, read, 0, 16);
          device.queue.submit([e.finish()]);
          await read.mapAsync(GPUMapMode.READ);
          const ts = new BigUint64Array(read.getMappedRange().slice(0));
          times.push(Number(ts[1]! - ts[0]!) / 1e9 / job.reps);
          read.destroy();
          resolve.destroy();
          qs.destroy();
          res.timer = 'timestamp';
        } else {
          const e = device.createCommandEncoder();
          const pass = e.beginComputePass();
          dispatch(pass, job.reps);
          pass.end();
          const t0 = performance.now();
          device.queue.submit([e.finish()]);
          await device.queue.onSubmittedWorkDone();
          times.push((performance.now() - t0) / 1e3 / job.reps);
          res.timer = 'wall';
        }
      }
      times.sort((x, y) => x - y);
      res.seconds = times[times.length >> 1];
    }
    buffers.forEach((b) => b.destroy());
  }
  device.destroy();
  return {
    features: have.sort(),
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
    adapter: `${info.vendor} ${info.architecture}`.trim(),
    results,
  };
}
