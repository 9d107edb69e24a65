// report.html in headless Chromium (playwright-core + Debian's chromium, as the WebGPU runner
// launches it): the charts are drawn, nothing is logged as an error, no request leaves the page,
// and it fits 1280 px. A screenshot is kept in test-artifacts/ (gitignored) for a person to look at.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_PATH } from '../../runtime/webgpu-browser.js';
import { compile } from '../../targets/compile.js';
import { build } from '../../targets/build.js';
import { ROOT } from '../cli/helpers.js';
import { tempDir, tinyMllm } from './helpers.js';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');

describe('report.html in Chromium', () => {
  let tmp: string, src: string, browser: Browser;
  beforeAll(async () => {
    tmp = tempDir('report');
    src = tinyMllm(tmp);
    browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update'],
    });
    fs.mkdirSync(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function open(
    file: string,
    shot: string,
  ): Promise<{ errors: string[]; requests: string[]; svgs: number; marks: number; width: number; text: string }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [],
      requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => {
      if (r.url() !== `file://${file}`) requests.push(r.url());
    });
    await page.goto(`file://${file}`, { waitUntil: 'load' });
    const facts = await page.evaluate(() => ({
      svgs: document.querySelectorAll('.chart svg').length,
      // Bars and lines ECharts drew (paths with a fill or stroke inside the chart SVGs).
      marks: document.querySelectorAll('.chart svg path').length,
      width: document.documentElement.scrollWidth,
      text: document.body.innerText,
    }));
    await page.screenshot({ path: path.join(ARTIFACTS, shot), fullPage: true });
    await page.close();
    return { errors, requests, ...facts };
  }

  it('an npu artifact with a tiling plan: charts, plan picture, no errors, no network, 1280 px', async () => {
    const out = path.join(tmp, 'npu');
    await compile(src, { target: 'npu', out, policy: 'internvl', policyOptions: { tileSize: 56 }, batchSizes: [4, 1] });
    const r = await open(path.join(out, 'report.html'), 'report-npu.png');
    expect(r.errors).toEqual([]);
    expect(r.requests).toEqual([]);
    expect(r.svgs).toBeGreaterThanOrEqual(6);
    expect(r.marks).toBeGreaterThan(40);
    expect(r.width).toBeLessThanOrEqual(1280);
    for (const s of [
      'Size by model file',
      'Weight bytes by stored dtype',
      'Quantization error per layer',
      'Cosine to the original',
      'Image tiling plan',
      'inputs used',
    ])
      expect(r.text).toContain(s);
  });

  it('a webgpu artifact and the build index', async () => {
    const dir = path.join(tmp, 'proj');
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'edgec.config.json'),
      JSON.stringify({
        out: 'out',
        models: [{ name: 'tiny', path: src, options: { imageSizes: ['56x56'] } }],
        targets: [{ target: 'webgpu' }, { target: 'mobile' }],
      }),
    );
    const b = await build(path.join(dir, 'edgec.config.json'));
    expect(b.exitCode).toBe(0);
    const w = await open(path.join(dir, 'out/tiny/webgpu/report.html'), 'report-webgpu.png');
    expect(w.errors).toEqual([]);
    expect(w.requests).toEqual([]);
    expect(w.text).toContain('Fusions made on webgpu');
    const i = await open(path.join(dir, 'out/index.html'), 'build-index.png');
    expect(i.errors).toEqual([]);
    expect(i.requests).toEqual([]);
    expect(i.svgs).toBe(2);
    expect(i.text).toContain('all 2 items passed');
  });
});
