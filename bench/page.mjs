// The page benchmark (issue 32): what a visitor waits for and what the page costs, for every
// shipped model at batch 1 and 4, on the page's default backend (`backend=auto`: the CPU backend
// with Web Workers where WebGPU's adapter is a CPU one, SwiftShader here) and on `backend=gpu`
// (WebGPU, whatever the adapter), each a fresh browser context (nothing cached):
//
//   nav → first step   navigation start → the first sampler step drawn (#run-status counts it in
//                      data-frames): wasm download + compile, model download + upload, x_T, one
//                      step. The page runs by itself (`autorun=1`), so no click is in it.
//   ms per step        x_T drawn → last step drawn, / steps: forward + sampler + readback + draw.
//   peak wasm memory   the wasm instances' Memory.buffer.byteLength at the end of the run (wasm
//                      memory only grows, so the end is the peak): the page's instance, and the
//                      CPU backend's workers' (each its own instance), found by wrapping
//                      WebAssembly.instantiate(Streaming) in an init script (page) and at the top
//                      of cpu-worker*.js (a route that prepends it; workers get no init scripts).
//   peak JS heap       the page's V8 heap (CDP Runtime.getHeapUsage usedSize), polled every
//                      250 ms through the run, max; no forced GC (what a visitor's tab holds).
//   downloaded         the response bodies' sizes (Playwright request.sizes(), page and workers)
//                      from navigation to the end of the run, by kind (wasm, js, model files,
//                      other). The bench server sends no Content-Encoding: these are raw bytes;
//                      the wasm's gzip size is printed beside it.
// emoji-sr is the upscaler of the edit view's "upscale" mode (no ?model= of its own): the page
// opens on `model=emoji`, runs it, switches to upscale, "Use the result", and the upscale run
// is the one timed; its "first step" figure is click → first step drawn (loading emoji-sr, the
// first time, included), its memory and bytes count the emoji run too.
//
//   node bench/page.mjs [--models fashion,emoji,emoji-latent,emoji-sr] [--batches 1,4]
//                       [--backends auto,gpu] [--runs N] [--steps S] [--sampler ddim] [--out FILE]
//   node bench/page.mjs --table FILE.json     # the markdown table of an earlier run
//
// --runs (default 3) fresh page loads per (model, batch, backend), the cells interleaved (all
// cells once, then all again, …) and each figure the median over the loads, min–max in the JSON.
// --steps (default 20) with --sampler (default ddim) and seed 1; guidance and the rest are the
// model's defaults (fashion: guidance 2, so each forward is a batch of 2 × batch). Needs the
// release build in dist/ (trunk build --release). Writes target/bench/page-<date>.json.
import { existsSync, readdirSync, readFileSync, mkdirSync, writeFileSync, statSync } from 'node:fs';
import { gzipSync, constants as zc } from 'node:zlib';
import { join, resolve, dirname, relative } from 'node:path';
import { loadavg, cpus } from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startServer, launch, trackWasmMemory, wasmMemory } from '../tests/e2e/harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MODELS = ['fashion', 'emoji', 'emoji-latent', 'emoji-sr'];
const log = (...m) => console.error(`[page ${new Date().toISOString().slice(11, 19)}]`, ...m);

function parseArgs(argv) {
  const a = { models: MODELS, batches: [1, 4], backends: ['auto', 'gpu'], runs: 3, steps: 20, sampler: 'ddim', out: null, table: null };
  for (let i = 0; i < argv.length; i++) {
    const next = () => { if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`); return argv[++i]; };
    switch (argv[i]) {
      case '--models': a.models = next().split(','); break;
      case '--batches': a.batches = next().split(',').map(Number); break;
      case '--backends': a.backends = next().split(','); break;
      case '--runs': a.runs = Number(next()); break;
      case '--steps': a.steps = Number(next()); break;
      case '--sampler': a.sampler = next(); break;
      case '--out': a.out = next(); break;
      case '--table': a.table = next(); break;
      case '-h': case '--help':
        console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
        process.exit(0);
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  for (const m of a.models) if (!MODELS.includes(m)) throw new Error(`unknown model ${m} (${MODELS.join(', ')})`);
  for (const b of a.backends) if (!['auto', 'gpu', 'cpu'].includes(b)) throw new Error(`unknown backend ${b} (auto, gpu, cpu)`);
  if (!(a.runs >= 1 && a.steps >= 1)) throw new Error('--runs and --steps must be at least 1');
  return a;
}

/// Runs in the page before its scripts: the time and count of every change of #run-status's
/// data-frames / data-state.
const FRAME_TRACK = `(() => {
  window.__frameEvents = [];
  let last = null;
  const look = () => {
    const st = document.getElementById('run-status');
    if (!st) return;
    const n = Number(st.getAttribute('data-frames'));
    const s = st.getAttribute('data-state');
    const key = n + '/' + s;
    if (key !== last) { last = key; window.__frameEvents.push({ n, s, t: performance.now() }); }
  };
  new MutationObserver(look).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-frames', 'data-state'] });
})();
`;

const stats = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return null;
  const n = s.length;
  return { median: n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, min: s[0], max: s[n - 1], n };
};

/// One fresh page load and run; every figure of one cell.
async function measure(browser, base, { model, batch, backend, steps, sampler }) {
  const context = await browser.newContext();
  const tracked = await trackWasmMemory(context);
  await context.addInitScript(FRAME_TRACK);
  const bytes = { wasm: 0, js: 0, model: 0, other: 0, requests: 0, modelFiles: {} };
  const pending = [];
  context.on('requestfinished', (req) => pending.push((async () => {
    const s = await req.sizes().catch(() => null);
    if (!s) return;
    const path = new URL(req.url()).pathname;
    const kind = path.endsWith('.wasm') ? 'wasm' : /\.m?js$/.test(path) ? 'js' : path.startsWith('/models/') ? 'model' : 'other';
    bytes[kind] += s.responseBodySize;
    bytes.requests++;
    if (kind === 'model') bytes.modelFiles[path] = s.responseBodySize;
  })()));
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const cdp = await context.newCDPSession(page);
  let heapPeak = 0, polling = true;
  const poll = (async () => {
    while (polling) {
      try { heapPeak = Math.max(heapPeak, (await cdp.send('Runtime.getHeapUsage')).usedSize); } catch { /* navigating */ }
      await new Promise((ok) => setTimeout(ok, 250));
    }
  })();
  const upscale = model === 'emoji-sr';
  const q = new URLSearchParams({ model: upscale ? 'emoji' : model, steps: String(steps), sampler, seed: '1', batch: String(batch), backend, autorun: '1' });
  if (sampler === 'ddim') q.set('eta', '0');
  const r = { model, batch, backend, url: `/?${q}` };
  const done = '#run-status[data-state="done"], #run-status[data-state="error"], #panic';
  try {
    await page.goto(`${base}/?${q}`);
    await page.waitForSelector(done, { timeout: 900_000 });
    let since = 0;
    if (upscale) {
      // The emoji run's picture, upscaled by emoji-sr: the timed run.
      r.firstRunState = await page.getAttribute('#run-status', 'data-state');
      await page.selectOption('#mode', 'upscale');
      await page.click('#edit-use-result');
      await page.fill('#steps', String(steps));
      since = await page.evaluate(() => performance.now());
      await page.click('#generate');
      await page.waitForFunction((t) => window.__frameEvents.some((e) => e.t > t && e.s === 'running'), since, { timeout: 60_000 }).catch(() => {});
      await page.waitForSelector(done, { timeout: 900_000 });
    }
    const ev = await page.evaluate(() => window.__frameEvents);
    const mine = ev.filter((e) => e.t >= since);
    // The run's frames: after its last reset to 0 frames (a new run clears them).
    const start = mine.reduce((k, e, i) => (e.n === 0 ? i : k), 0);
    const run = mine.slice(start);
    const at = (n) => run.find((e) => e.n >= n)?.t;
    r.state = await page.getAttribute('#run-status', 'data-state');
    r.frames = Number(await page.getAttribute('#run-status', 'data-frames'));
    if (await page.locator('#panic').count()) r.state = 'panic';
    if (r.state !== 'done') r.error = (await page.textContent('#run-error').catch(() => '')) || r.state;
    const xT = at(1), first = at(2), last = at(steps + 1);
    r.firstStepMs = first - since; // navigation start = 0 (or the upscale click)
    r.firstStepFrom = upscale ? 'click on Upscale (emoji-sr loaded then)' : 'navigation start';
    r.msPerStep = (last - xT) / steps;
    r.adapter = await page.textContent('#adapter').catch(() => null);
    r.adapterDetail = await page.getAttribute('#adapter', 'title').catch(() => null);
    r.settings = await page.evaluate(() => Object.fromEntries(['sampler', 'steps', 'guidance', 'batch', 'eta', 'seed'].map((k) => [k, document.getElementById(k)?.value ?? null])));
    const mem = await wasmMemory(page);
    r.wasmPageBytes = mem.page;
    r.wasmWorkerBytes = mem.workers;
    r.workers = page.workers().length;
    r.workerScriptsRouted = tracked.workerScripts();
    r.wasmPeakBytes = mem.total;
  } catch (e) {
    r.error = String(e.message).split('\n')[0].slice(0, 300);
  }
  polling = false;
  await poll;
  try { heapPeak = Math.max(heapPeak, (await cdp.send('Runtime.getHeapUsage')).usedSize); } catch { /* closed */ }
  r.jsHeapPeakBytes = heapPeak;
  await Promise.all(pending);
  r.downloaded = { ...bytes, total: bytes.wasm + bytes.js + bytes.model + bytes.other };
  r.errors = errors.slice(0, 5);
  await context.close();
  return r;
}

const sizeOf = (dir) => readdirSync(dir, { withFileTypes: true }).reduce((s, e) => s + (e.isDirectory() ? sizeOf(join(dir, e.name)) : statSync(join(dir, e.name)).size), 0);

function wasmSizes() {
  const dist = join(ROOT, 'dist');
  return readdirSync(dist).filter((n) => n.endsWith('_bg.wasm')).map((n) => {
    const raw = readFileSync(join(dist, n));
    return { file: n, raw: raw.length, gzip9: gzipSync(raw, { level: zc.Z_BEST_COMPRESSION }).length };
  });
}

const MiB = (b) => (b / 1048576).toFixed(1);
const ms = (x) => (x == null ? 'n/a' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const range = (s, f) => (s ? `${f(s.median)} (${f(s.min)}–${f(s.max)})` : 'n/a');

/// The markdown table of a page-<date>.json.
export function markdown(res) {
  const out = [
    `Page benchmark, ${res.date} (\`${res.command}\`; ${res.browser}; ${res.runs} fresh page load(s) per row, median (min–max); ${res.steps}-step ${res.sampler}, seed 1, the model's other defaults)`,
    '',
    '| model | batch | backend | first step drawn, ms | ms per drawn step | peak wasm memory, MiB (page + workers) | peak JS heap, MiB | downloaded, MiB (wasm / model) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const c of res.cells) {
    if (!c.stats) { out.push(`| ${c.model} | ${c.batch} | ${c.backend} | failed: ${c.error ?? ''} | | | | |`); continue; }
    const s = c.stats;
    const be = `${c.backend}: ${c.adapter ?? ''}`.replace(/\|/g, '/');
    const first = `${range(s.firstStepMs, ms)}${c.model === 'emoji-sr' ? ' (from the Upscale click)' : ''}`;
    out.push(`| ${c.model} | ${c.batch} | ${be} | ${first} | ${range(s.msPerStep, ms)} | ${range(s.wasmPeakBytes, MiB)} (${c.wasmSplit}) | ${range(s.jsHeapPeakBytes, MiB)} | ${range(s.downloaded, MiB)} (${MiB(c.downloadedSplit.wasm)} / ${MiB(c.downloadedSplit.model)}) |`);
  }
  out.push('');
  out.push(`Release wasm (one of the two is downloaded): ${res.wasm.map((w) => `${w.file} ${w.raw} bytes raw (${MiB(w.raw)} MiB), ${w.gzip9} gzip -9 (${MiB(w.gzip9)} MiB)`).join('; ')}.`);
  out.push(`Model folders (every file; the page fetches the ones it needs): ${Object.entries(res.modelSizes).map(([m, b]) => `${m} ${MiB(b)} MiB`).join(', ')}.`);
  return out.join('\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.table) { console.log(markdown(JSON.parse(readFileSync(args.table, 'utf8')))); return; }
  if (!existsSync(join(ROOT, 'dist/index.html'))) throw new Error('no dist/: build the app first (trunk build --release)');
  const started = new Date();
  const res = {
    date: started.toISOString(), command: `node bench/page.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    runs: args.runs, steps: args.steps, sampler: args.sampler, cpus: cpus().length, loadavgStart: loadavg(), cells: [], order: [],
  };
  const srv = await startServer();
  const browser = await launch();
  res.browser = `Chromium ${browser.version()}`;
  const cells = [];
  for (const model of args.models) for (const batch of args.batches) for (const backend of args.backends) cells.push({ model, batch, backend, runs: [] });
  try {
    // Interleaved: every cell once, then every cell again, so drifting load touches all alike.
    for (let k = 0; k < args.runs; k++) {
      for (const c of cells) {
        const load = loadavg();
        log(`${c.model} b${c.batch} ${c.backend}, load ${k + 1}/${args.runs}; load average ${load.map((x) => x.toFixed(2)).join('/')}`);
        const r = await measure(browser, srv.base, { ...c, steps: args.steps, sampler: args.sampler });
        r.loadavg = load;
        res.order.push({ model: c.model, batch: c.batch, backend: c.backend, load: k + 1 });
        c.runs.push(r);
        log(r.error ? `  error: ${r.error}` : `  first step ${ms(r.firstStepMs)} ms, ${ms(r.msPerStep)} ms/step, wasm ${MiB(r.wasmPeakBytes)} MiB (${r.wasmWorkerBytes.length} worker instances), JS heap ${MiB(r.jsHeapPeakBytes)} MiB, downloaded ${MiB(r.downloaded.total)} MiB; ${r.adapter}`);
      }
    }
  } finally {
    await browser.close();
    srv.server.close();
  }
  for (const c of cells) {
    const ok = c.runs.filter((r) => !r.error);
    const pick = (f) => stats(ok.map(f));
    const last = ok[ok.length - 1] ?? c.runs[c.runs.length - 1];
    res.cells.push({
      model: c.model, batch: c.batch, backend: c.backend, adapter: last?.adapter, adapterDetail: last?.adapterDetail, settings: last?.settings,
      error: ok.length ? undefined : last?.error,
      stats: ok.length ? {
        firstStepMs: pick((r) => r.firstStepMs), msPerStep: pick((r) => r.msPerStep), wasmPeakBytes: pick((r) => r.wasmPeakBytes),
        jsHeapPeakBytes: pick((r) => r.jsHeapPeakBytes), downloaded: pick((r) => r.downloaded.total),
      } : null,
      wasmSplit: last ? `${(last.wasmPageBytes ?? []).map(MiB).join(' + ') || '?'} page${last.wasmWorkerBytes?.length ? ` + ${last.wasmWorkerBytes.map(MiB).join(' + ')} workers` : ''}` : '',
      downloadedSplit: last?.downloaded ?? {},
      runs: c.runs,
    });
  }
  res.wasm = wasmSizes();
  res.modelSizes = Object.fromEntries(MODELS.map((m) => [m, sizeOf(join(ROOT, 'assets/models', m))]));
  const git = (...a) => { try { return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8' }).trim(); } catch { return null; } };
  res.build = { commit: git('rev-parse', 'HEAD'), distBuilt: statSync(join(ROOT, 'dist/index.html')).mtime.toISOString() };
  res.loadavgEnd = loadavg();
  res.elapsedS = (Date.now() - started.getTime()) / 1000;
  const text = markdown(res);
  console.log(text);
  console.log(`\n${res.cpus} CPUs; load average ${res.loadavgStart.map((x) => x.toFixed(2)).join('/')} at the start, ${res.loadavgEnd.map((x) => x.toFixed(2)).join('/')} at the end; ${res.elapsedS.toFixed(0)} s; built from ${res.build.commit}, dist/ ${res.build.distBuilt}`);
  const out = args.out ?? join(ROOT, 'target/bench', `page-${started.toISOString().slice(0, 16).replace(/[:T]/g, '-')}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(res, null, 1));
  log(`wrote ${relative(ROOT, out)}`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => { console.error(e); process.exit(1); });
}
