// npm pretest: the suite needs two Debian packages, the ONNX spec's test data (libonnx-testdata)
// and a headless browser for the WebGPU tests (chromium). Install what is missing when we can
// (root with apt-get, as on CI and in containers); otherwise stop with the command that fixes it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const conformance = path.resolve(process.env.EDGEC_CONFORMANCE || '/usr/share/libonnx-testdata/data');
const missing = [];
if (!fs.existsSync(path.join(conformance, 'node'))) {
  if (process.env.EDGEC_CONFORMANCE) {
    console.error(`EDGEC_CONFORMANCE=${process.env.EDGEC_CONFORMANCE} holds no node/ folder: point it at onnx's backend/test/data, or unset it to use Debian's libonnx-testdata`);
    process.exit(1);
  }
  missing.push('libonnx-testdata');
}
// Run it, not just look for it: Debian's /usr/bin/chromium is a wrapper around /usr/lib/chromium.
const browser = spawnSync('/usr/bin/chromium', ['--headless', '--no-sandbox', '--version'], { stdio: 'ignore', timeout: 30_000 });
if (browser.status !== 0) missing.push('chromium');
if (missing.length === 0) process.exit(0);

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const root = typeof process.getuid === 'function' && process.getuid() === 0;
if (root && has('apt-get')) {
  console.error(`edgec tests: installing ${missing.join(' ')} with apt-get (Debian packages the test suite needs)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env }).status === 0;
  if (run(['update', '-q']) && run(["install", "--reinstall", "-y", "-q", ...missing])) process.exit(0);
  console.error(`edgec tests: apt-get could not install ${missing.join(' ')}; install them and run npm test again`);
  process.exit(1);
}
const how = has('apt-get') ? `sudo apt-get install -y ${missing.join(' ')}` : `install ${missing.join(' and ')} from your distribution`;
console.error(`edgec tests need ${missing.join(' and ')}: run \`${how}\`, then npm test again`
  + (missing.includes('libonnx-testdata') ? ' (or set EDGEC_CONFORMANCE to a copy of onnx/backend/test/data)' : ''));
process.exit(1);
