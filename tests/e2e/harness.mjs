// Shared end-to-end harness: a static server for dist/ (the Trunk build) and tests/fixtures/
// (at /fixtures/), with the cross-origin isolation headers WebGPU/wasm threads want, and headless
// Debian Chromium with WebGPU on SwiftShader, driven by playwright-core.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { readFile, stat, mkdir } from 'node:fs/promises';
import { extname, join, normalize, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(ROOT, 'tools/package.json'));
const { chromium } = require('playwright-core');

export const ARTIFACTS = join(ROOT, 'tests/artifacts');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };
const MOUNTS = [['/fixtures/', join(ROOT, 'tests/fixtures')], ['/', join(ROOT, 'dist')]];

/// What bench/browser.mjs serves besides the app: its pages, onnxruntime-web's dist/ (no CDN)
/// and the ONNX exports with their reference inputs (training/export_onnx.py).
export const BENCH_MOUNTS = [
  ['/bench/', join(ROOT, 'bench')],
  ['/ort/', join(ROOT, 'tools/node_modules/onnxruntime-web/dist')],
  ['/onnx/', join(ROOT, 'target/onnx')],
];

/// Serves dist/ at / and tests/fixtures/ at /fixtures/, plus `extraMounts` ([prefix, dir] pairs,
/// checked first), all with the cross-origin isolation headers.
export async function startServer(extraMounts = []) {
  const mounts = [...extraMounts, ...MOUNTS];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const path = decodeURIComponent(url.pathname);
    const [prefix, dir] = mounts.find(([p]) => path.startsWith(p));
    let file = normalize(join(dir, path.slice(prefix.length)));
    if (!file.startsWith(dir)) { res.writeHead(403).end(); return; }
    try {
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        // As any static server sends it: the page's download progress and its cache's
        // revalidation (a HEAD answer's length against the cached one) read it.
        'content-length': body.length,
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-embedder-policy': 'require-corp',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

export async function launch() {
  await mkdir(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      // WebGPU on SwiftShader; STEPWISE_CHROMIUM_GPU_ARGS replaces these flags (e.g. with
      // '--use-angle=vulkan' for a real GPU: scripts/bench_gpu_browser.sh).
      ...(process.env.STEPWISE_CHROMIUM_GPU_ARGS ?? '--enable-unsafe-webgpu --enable-features=Vulkan --use-angle=swiftshader').split(' ').filter(Boolean),
      '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Extra flags, e.g. STEPWISE_CHROMIUM_ARGS='--js-flags=--perf-basic-prof' for `perf` profiles.
      ...(process.env.STEPWISE_CHROMIUM_ARGS ?? '').split(' ').filter(Boolean),
    ],
  });
}

/// A page that records console errors and uncaught exceptions. The app's URLs get
/// `backend=gpu` unless they name a backend: on its own the page picks the CPU backend where
/// WebGPU's adapter is a CPU one (SwiftShader here), and these tests are WebGPU's; the default
/// has its own test (app.test.mjs, `backend: 'auto'`).
export async function openPage(browser, url) {
  const u = new URL(url);
  if (!u.searchParams.has('backend') && (u.pathname === '/' || u.pathname.endsWith('/index.html'))) {
    u.searchParams.set('backend', 'gpu');
    url = u.toString();
  }
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return { page, errors };
}

/// Keeps every wasm instance's memory in `context`'s pages (an init script) and in the CPU
/// backend's workers (cpu-worker*.js, served with the same lines prepended: workers get no init
/// scripts), by wrapping WebAssembly.instantiate and instantiateStreaming; `wasmMemory(page)`
/// then reads their sizes. Used by the soak test and bench/page.mjs.
export const WASM_TRACK = `(() => {
  const mems = [];
  const keep = (r) => {
    const inst = r instanceof WebAssembly.Instance ? r : r && r.instance;
    const m = inst && inst.exports && inst.exports.memory;
    if (m instanceof WebAssembly.Memory && !mems.includes(m)) mems.push(m);
    return r;
  };
  for (const k of ['instantiate', 'instantiateStreaming']) {
    const f = WebAssembly[k];
    if (f) WebAssembly[k] = function (...a) { return f.apply(this, a).then(keep); };
  }
  self.__stepwiseWasmBytes = () => mems.map((m) => m.buffer.byteLength);
})();
`;

export async function trackWasmMemory(context) {
  await context.addInitScript(WASM_TRACK);
  let routed = 0;
  await context.route(/\/cpu-worker[^/]*\.js(\?.*)?$/, async (route) => {
    const response = await route.fetch();
    routed++;
    await route.fulfill({ response, body: WASM_TRACK + (await response.text()) });
  });
  return { workerScripts: () => routed };
}

/// The wasm memories' sizes in bytes: { page: [..], workers: [..], total } (wasm memory only
/// grows, so these are also the peaks so far).
export async function wasmMemory(page) {
  const read = () => (self.__stepwiseWasmBytes ? self.__stepwiseWasmBytes() : []);
  const pageBytes = await page.evaluate(read);
  const workers = [];
  for (const w of page.workers()) workers.push(...((await w.evaluate(read).catch(() => null)) ?? []));
  return { page: pageBytes, workers, total: [...pageBytes, ...workers].reduce((a, b) => a + b, 0) };
}

/// A canvas's size and RGBA pixels: { w, h, data }.
export async function pixels(page, id) {
  return page.evaluate((sel) => {
    const c = document.querySelector(sel);
    return { w: c.width, h: c.height, data: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data) };
  }, `#${id}`);
}

/// Resolves to the first truthy value of `pred` (a function, polled in the page every 10 ms).
/// Not page.waitForFunction: that evaluates the predicate with eval inside the page, which the
/// app's Content-Security-Policy forbids; an expression sent with page.evaluate goes through the
/// DevTools protocol, which the CSP does not govern.
export async function waitIn(page, pred, timeoutMs = 120_000) {
  const poll = page.evaluate(`new Promise((ok) => { const f = ${pred}; const t = () => { const v = f(); if (v) ok(v); else setTimeout(t, 10); }; t(); })`);
  let timer;
  const limit = new Promise((_, no) => { timer = setTimeout(() => no(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${pred}`)), timeoutMs); });
  try { return await Promise.race([poll, limit]); } finally { clearTimeout(timer); }
}

/// One forward through a `?debug=bench` page's window.stepwiseBench: { threads, output, backend }.
export async function benchForward(page, model, sample, shape, timesteps, labels) {
  return page.evaluate(async ({ model, sample, shape, timesteps, labels }) => {
    const r = await window.stepwiseBench(model, Float32Array.from(sample), shape, Float32Array.from(timesteps), labels, 0);
    return { threads: r.threads, output: Array.from(r.output), backend: r.backend };
  }, { model, sample, shape, timesteps, labels });
}

/// A safetensors file's tensors as { name: { shape, data: number[] } } (f32, i64 and f64 only).
export async function readSafetensors(path) {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = t.data_offsets.map((o) => 8 + n + o);
    const bytes = buf.buffer.slice(buf.byteOffset + a, buf.byteOffset + b);
    const View = { F32: Float32Array, I64: BigInt64Array, F64: Float64Array }[t.dtype];
    if (!View) throw new Error(`${path}: ${name} is ${t.dtype}`);
    out[name] = { shape: t.shape, data: Array.from(new View(bytes), Number) };
  }
  return out;
}

/// ‖got − want‖ / ‖want‖.
export function relL2(got, want) {
  if (got.length !== want.length) throw new Error(`output length ${got.length}, expected ${want.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) { num += (got[i] - want[i]) ** 2; den += want[i] ** 2; }
  return Math.sqrt(num / den);
}

/// n standard normal samples (Box-Muller).
export const randn = (n) => Array.from({ length: n }, () => {
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
});
