// The in-browser benchmark (issue 8): in one headless Chromium (WebGPU on SwiftShader, the e2e
// harness's flags), the median ms per UNet forward (output read back to the host) of every
// shipped model at batch 1 and 4, on
//   ours-webgpu      the app page's WebGPU backend (window.stepwiseBench, ?debug=bench&backend=gpu)
//   ours-cpu         the app page's CPU backend (?backend=cpu&threads=2; wasm: the page's thread
//                    and one Web Worker, which split batches of 2 or more; src/cpu/workers.rs)
//   ours-cpu-1t      the same on one thread (?threads=1: no worker)
//   ours-webgpu-f16  opt-in: the WebGPU backend with f16 weights (?precision=f16), an error row where
//                    the adapter lacks shader-f16 (SwiftShader does) rather than f32 timings
//   ours-cpu-1t-simd128  opt-in: that with the baseline module (?simd=128), not the relaxed-SIMD
//                    one the page loads where the browser has relaxed SIMD (scripts/wasm_relaxed.mjs)
//   ort-webgpu       onnxruntime-web's webgpu EP, imported as the docs say for WebGPU
//                    (`onnxruntime-web/webgpu`, dist/ort.webgpu.min.mjs: the C++ WebGPU EP)
//   ort-wasm-2t/-1t  onnxruntime-web's wasm EP (`onnxruntime-web`, dist/ort.min.mjs), numThreads 2
//                    (when crossOriginIsolated; ort falls back to 1 otherwise) and 1
//   ort-webgpu-jsep  opt-in: the webgpu EP of the default entry (dist/ort.min.mjs: JSEP)
// on the same weights (the ONNX files are exported from the same folders), each output checked
// against PyTorch's (relative L2 <= 1e-3) before anything is timed. Then the page figures: time to
// the first drawn step, ms per step of a 50-step DDIM run with drawing, and the wasm's size.
//
//   node bench/browser.mjs [--rounds R] [--runs N] [--warmup W] [--models fashion,emoji,emoji-latent,emoji-sr[,cifar10]] [--batches 1,4]
//                          [--rows ours-webgpu,ours-cpu,ours-cpu-1t,ours-cpu-1t-simd128,ours-webgpu-f16,ort-webgpu,ort-wasm-2t,ort-wasm-1t,ort-webgpu-jsep]
//                          [--row-budget-s S] [--no-page] [--require-gpu] [--out FILE]
//
// --require-gpu (scripts/bench_gpu_browser.sh) stops with an error where WebGPU's adapter is a
// CPU implementation (SwiftShader, llvmpipe, a fallback adapter) instead of timing it.
//
// Alternating, so that a machine whose load drifts weighs on every row alike: every row's page is
// opened once; then for each (model, batch) every row is checked, then --rounds (default 3)
// rounds run, each row in turn in an order rotated by one per round (A B C, B C A, C A B): --warmup
// (default 1, at least 1, the same for every row) untimed forwards, then --runs (default 3) timed
// ones, fewer (at least 1) where they would take over --row-budget-s (default 60) / rounds at the
// check's pace. Reported per row: the median of all its timed runs with min–max, and each
// round's median; the JSON has every run, the `order` the rows actually ran in, the load
// average at each round's start (`roundLoad`), and what each row's timing `includes`. Needs the
// release build in dist/
// (trunk build --release) and tools/node_modules (scripts/setup.sh test); creates the ONNX exports
// in target/onnx/<model>/ with training/export_onnx.py when missing. Writes everything it prints
// as JSON to target/bench/browser-<date>.json. `cifar10` (google/ddpm-cifar10-32's architecture
// with random weights, 12.4 GFLOP per forward: minutes per row on SwiftShader) is opt-in; its
// folder is made by tests/fixtures/unet/make_cifar10_like.py into target/fixtures/cifar10_like and
// served at /models/cifar10/.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, mkdirSync, writeFileSync, statSync } from 'node:fs';
import { gzipSync, constants as zc } from 'node:zlib';
import { join, resolve, dirname } from 'node:path';
import { loadavg, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startServer, launch, waitIn, BENCH_MOUNTS } from '../tests/e2e/harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PYTHON = process.env.STEPWISE_PYTHON ?? join(process.env.STEPWISE_VENV ?? join(process.env.HOME, '.cache/stepwise/venv'), 'bin/python');
const SHIPPED_MODELS = ['fashion', 'emoji', 'emoji-latent', 'emoji-sr'];
const ALL_MODELS = [...SHIPPED_MODELS, 'cifar10'];
const CIFAR10_DIR = join(ROOT, 'target/fixtures/cifar10_like');
/// A model's folder, relative to the root.
const modelDir = (m) => (m === 'cifar10' ? 'target/fixtures/cifar10_like' : `assets/models/${m}`);
const ALL_ROWS = ['ours-webgpu', 'ours-cpu', 'ours-cpu-1t', 'ort-webgpu', 'ort-wasm-2t', 'ort-wasm-1t', 'ort-webgpu-jsep', 'ours-cpu-1t-simd128', 'ours-webgpu-f16'];
// ort-webgpu-jsep (the JS "JSEP" webgpu EP of the package's default entry) is opt-in: on
// SwiftShader it takes 1.4-1.7x the /webgpu bundle's C++ EP's time at batch 1, 0.9-1.9x at
// batch 4 (and its emoji-sr output is right where the C++ EP's is not); it adds ~7 minutes.
const DEFAULT_ROWS = ALL_ROWS.slice(0, 5);
const TOLERANCE = 1e-3;
/// Adapter names of CPU implementations of WebGPU (--require-gpu refuses them).
const CPU_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|software|basic render/i;

function parseArgs(argv) {
  const a = { runs: 3, rounds: 3, warmup: 1, rowBudgetS: 60, models: SHIPPED_MODELS, batches: [1, 4], rows: DEFAULT_ROWS, page: true, out: null };
  for (let i = 0; i < argv.length; i++) {
    const next = () => { if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`); return argv[++i]; };
    switch (argv[i]) {
      case '--runs': a.runs = Number(next()); break;
      case '--rounds': a.rounds = Number(next()); break;
      case '--warmup': a.warmup = Number(next()); break;
      case '--row-budget-s': a.rowBudgetS = Number(next()); break;
      case '--models': a.models = next().split(','); break;
      case '--batches': a.batches = next().split(',').map(Number); break;
      case '--rows': a.rows = next().split(','); break;
      case '--no-page': a.page = false; break;
      case '--require-gpu': a.requireGpu = true; break;
      case '--out': a.out = next(); break;
      case '-h': case '--help':
        console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
        process.exit(0);
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!(a.runs >= 1)) throw new Error('--runs must be at least 1');
  if (!(a.rounds >= 1)) throw new Error('--rounds must be at least 1');
  // window.stepwiseBench runs one untimed forward before its timed ones: at least 1 for ours, so
  // at least 1 for everyone.
  if (!(a.warmup >= 1 && Number.isInteger(a.warmup))) throw new Error('--warmup must be a whole number, at least 1');
  for (const m of a.models) if (!ALL_MODELS.includes(m)) throw new Error(`unknown model ${m} (${ALL_MODELS.join(', ')})`);
  for (const r of a.rows) if (!ALL_ROWS.includes(r)) throw new Error(`unknown row ${r} (${ALL_ROWS.join(', ')})`);
  return a;
}

const log = (...m) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...m);

/// The ONNX file and reference input of every (model, batch), exported when missing.
function ensureExports(models, batches) {
  if (models.includes('cifar10') && !existsSync(join(CIFAR10_DIR, 'config.json'))) {
    log('making the cifar10 architecture (tests/fixtures/unet/make_cifar10_like.py)');
    execFileSync(PYTHON, ['tests/fixtures/unet/make_cifar10_like.py', CIFAR10_DIR], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  for (const m of models) {
    const dir = join(ROOT, 'target/onnx', m);
    const missing = batches.filter((n) => !existsSync(join(dir, `unet_b${n}.onnx`)) || !existsSync(join(dir, `bench_input_b${n}.json`)));
    if (missing.length === 0) continue;
    log(`exporting ${m} at batch ${missing.join(', ')} to ONNX (training/export_onnx.py)`);
    execFileSync(PYTHON, ['training/export_onnx.py', modelDir(m), `target/onnx/${m}`, '--batch', ...missing.map(String)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  }
}

function stats(ms) {
  const s = [...ms].sort((x, y) => x - y);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return { median, min: s[0], max: s[n - 1] };
}

/// Opens a page and waits until `ready` (a function evaluated in the page) is true.
async function open(browser, url, ready) {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await waitIn(page, ready);
  return { page, errors };
}

/// The page's adapter line once the backend is chosen (it says "detecting" until then).
async function adapterLine(page) {
  await page.waitForFunction(() => {
    const text = document.querySelector('#adapter')?.textContent;
    return text !== undefined && !text.includes('detecting');
  }, null, { timeout: 60_000 });
  return page.textContent('#adapter');
}

/// Our row's check: one forward through the app page's window.stepwiseBench (loading the model
/// on first use: fetch + upload), compared with PyTorch's output. Untimed.
async function oursCheck(page, model, batch) {
  return page.evaluate(async ({ model, batch, tolerance }) => {
    window.__benchRefs ??= {};
    const key = `${model}/${batch}`;
    const r = {};
    try {
      const ref = window.__benchRefs[key] ??= await (await fetch(`/onnx/${model}/bench_input_b${batch}.json`)).json();
      const t0 = performance.now();
      const check = await window.stepwiseBench(`models/${model}`, Float32Array.from(ref.inputs.sample.data), ref.inputs.sample.shape,
        Float32Array.from(ref.inputs.timestep.data), ref.inputs.class_labels ? ref.inputs.class_labels.data : null, 0);
      r.checkMs = performance.now() - t0; // includes loading the model (fetch + upload) the first time
      r.backend = check.backend;
      const want = ref.expected.data, got = check.output;
      if (got.length !== want.length) throw new Error(`output has ${got.length} values, PyTorch's ${want.length}`);
      let num = 0, den = 0;
      for (let i = 0; i < want.length; i++) { num += (got[i] - want[i]) ** 2; den += want[i] ** 2; }
      r.relL2 = Math.sqrt(num / den);
      if (!(r.relL2 <= tolerance)) throw new Error(`output differs from PyTorch's: relative L2 ${r.relL2.toExponential(2)} > ${tolerance}`);
    } catch (e) {
      r.error = String(e?.message ?? e).split('\n')[0].slice(0, 300);
    }
    return r;
  }, { model, batch, tolerance: TOLERANCE });
}

/// One round of our row: `warmup` untimed forwards, then `runs` timed ones. window.stepwiseBench
/// always runs one untimed forward before its timed ones, so `warmup - 1` calls with no timed run
/// come first. Each forward is timed inside the page (performance.now() around upload +
/// forward + download, src/app/engine/bench.rs).
async function oursTime(page, model, batch, warmup, runs) {
  return page.evaluate(async ({ model, batch, warmup, runs }) => {
    const ref = window.__benchRefs[`${model}/${batch}`];
    const args = () => [`models/${model}`, Float32Array.from(ref.inputs.sample.data), ref.inputs.sample.shape,
      Float32Array.from(ref.inputs.timestep.data), ref.inputs.class_labels ? ref.inputs.class_labels.data : null];
    for (let w = 1; w < warmup; w++) await window.stepwiseBench(...args(), 0);
    const timed = await window.stepwiseBench(...args(), runs);
    return { ms: timed.ms, recordMs: timed.recordMs, threads: timed.threads };
  }, { model, batch, warmup, runs });
}

const ROW_LABEL = {
  'ours-webgpu': 'ours webgpu',
  'ours-webgpu-f16': 'ours webgpu, f16 weights',
  'ours-cpu': 'ours cpu (wasm, 2 threads)',
  'ours-cpu-1t': 'ours cpu (wasm, 1 thread)',
  'ours-cpu-1t-simd128': 'ours cpu (1 thread, SIMD128)',
  'ort-webgpu': 'ort-web webgpu',
  'ort-webgpu-jsep': 'ort-web webgpu (JSEP)',
  'ort-wasm-2t': 'ort-web wasm, numThreads 2',
  'ort-wasm-1t': 'ort-web wasm, numThreads 1',
};

/// What each row's timing includes, exactly (also in the JSON, per row).
const INCLUDES_OURS_GPU = 'forward + readback to JS: the input uploaded from the wasm heap, the UNet forward (commands recorded, submitted, run), the output mapped back into the wasm heap; timed in the page (performance.now(), src/app/engine/bench.rs); model fetch and weight upload excluded';
const INCLUDES_OURS_CPU = 'forward + readback to JS: the input copied into a CPU tensor, the UNet forward on the CPU backend (a batch of 2 or more split between the page\'s thread and Web Workers, their postMessage round trips included), the output in the wasm heap; timed in the page (performance.now(), src/app/engine/bench.rs); model fetch excluded';
const INCLUDES_ORT_GPU = 'forward + readback to JS: session.run with CPU input tensors (uploaded by ort), the forward, the output downloaded to a CPU tensor (ort\'s default output location) and its getData(); timed in the page (performance.now(), bench/ort.mjs); session creation excluded';
const INCLUDES_ORT_WASM = 'forward + readback to JS: session.run with CPU input tensors (copied into ort\'s wasm heap), the forward, the output copied out to a CPU tensor and its getData(); timed in the page (performance.now(), bench/ort.mjs); session creation excluded';
const INCLUDES = {
  'ours-webgpu': INCLUDES_OURS_GPU, 'ours-webgpu-f16': INCLUDES_OURS_GPU,
  'ours-cpu': INCLUDES_OURS_CPU, 'ours-cpu-1t': INCLUDES_OURS_CPU, 'ours-cpu-1t-simd128': INCLUDES_OURS_CPU,
  'ort-webgpu': INCLUDES_ORT_GPU, 'ort-webgpu-jsep': INCLUDES_ORT_GPU,
  'ort-wasm-2t': INCLUDES_ORT_WASM, 'ort-wasm-1t': INCLUDES_ORT_WASM,
};

/// The page of one row kind, opened once and kept for the whole run (a page per kind: ort reads
/// numThreads once per page, and the app page picks its backend once): { page, errors } or
/// { error }.
async function openRow(browser, base, kind) {
  try {
    if (kind.startsWith('ours')) {
      const params = {
        'ours-cpu': '&backend=cpu&threads=2',
        'ours-cpu-1t': '&backend=cpu&threads=1',
        'ours-cpu-1t-simd128': '&backend=cpu&threads=1&simd=128',
        // WebGPU on any adapter: the page alone picks the CPU backend on a software one.
        'ours-webgpu': '&backend=gpu',
        'ours-webgpu-f16': '&backend=gpu&precision=f16',
      }[kind] ?? '';
      return await open(browser, `${base}/?debug=bench${params}`, () => typeof window.stepwiseBench === 'function');
    }
    return await open(browser, `${base}/bench/ort.html${kind.startsWith('ort-webgpu') && kind !== 'ort-webgpu-jsep' ? '?bundle=webgpu' : ''}`, () => window.ortReady === true);
  } catch (e) {
    return { error: `page did not open: ${String(e.message).split('\n')[0]}` };
  }
}

/// Checks a row on one (model, batch) before anything is timed: our forward, or ort's session
/// creation and first run, compared with PyTorch's output.
async function checkRow(kind, page, model, batch) {
  if (kind === 'ours-webgpu-f16') {
    const adapter = await adapterLine(page);
    if (!/, f16 weights/.test(adapter)) return { error: `no f16 weights: ${adapter}` };
  }
  if (kind.startsWith('ours')) return oursCheck(page, model, batch);
  const ep = kind.startsWith('ort-webgpu') ? 'webgpu' : 'wasm';
  const numThreads = kind === 'ort-wasm-2t' ? 2 : kind === 'ort-wasm-1t' ? 1 : null;
  return page.evaluate((o) => window.ortOpen(o), {
    onnx: `/onnx/${model}/unet_b${batch}.onnx`, input: `/onnx/${model}/bench_input_b${batch}.json`, ep, numThreads, tolerance: TOLERANCE,
  });
}

async function timeRow(kind, page, model, batch, warmup, runs) {
  if (kind.startsWith('ours')) return oursTime(page, model, batch, warmup, runs);
  return page.evaluate((o) => window.ortTime(o), { warmup, runs });
}

/// `rows` rotated left by `k`: round 0 runs A B C, round 1 B C A, round 2 C A B, …
const rotate = (rows, k) => rows.map((_, i) => rows[(i + k) % rows.length]);

/// Every (model, batch): each row checked, then `rounds` rounds; in each, every row that passed
/// its check runs `warmup` untimed and its timed forwards, in an order rotated by one per round.
/// The rows' pages stay open for the whole run; only one forward runs at any time.
async function runAlternating(browser, base, args, res) {
  const budgetMs = args.rowBudgetS * 1000;
  const pages = {};
  for (const kind of args.rows) {
    pages[kind] = await openRow(browser, base, kind);
    if (pages[kind].error) log(`${kind}: ${pages[kind].error}`);
  }
  res.order = [];
  res.roundLoad = [];
  for (const m of args.models) {
    for (const b of args.batches) {
      const t0 = Date.now();
      const ok = [];
      for (const kind of args.rows) {
        const r = { includes: INCLUDES[kind] };
        res.results[m][b][kind] = r;
        if (pages[kind].error) { r.error = pages[kind].error; continue; }
        let c;
        try { c = await checkRow(kind, pages[kind].page, m, b); } catch (e) { c = { error: String(e.message).split('\n')[0].slice(0, 300) }; }
        Object.assign(r, c);
        if (args.requireGpu && kind.startsWith('ours-webgpu') && r.backend && (/\bCpu\b/.test(r.backend) || !r.backend.startsWith('GPU'))) {
          throw new Error(`--require-gpu: the app page's WebGPU backend runs on a CPU adapter: ${r.backend}`);
        }
        log(`${kind}: ${m} batch ${b} check: ${r.error ? `error: ${r.error}` : `rel L2 ${r.relL2.toExponential(2)}, ${r.checkMs.toFixed(0)} ms`}`);
        if (r.error) continue;
        // Fewer timed runs per round (at least 1) where `runs` would take over the row's budget
        // at the check's pace (ours' check includes loading the model the first time).
        r.runsPerRound = Math.min(args.runs, Math.max(1, Math.floor(budgetMs / args.rounds / Math.max(r.checkMs, 1e-3))));
        r.rounds = [];
        ok.push(kind);
      }
      for (let round = 0; round < args.rounds && ok.length; round++) {
        const order = rotate(ok, round);
        const load = loadavg();
        res.roundLoad.push({ model: m, batch: b, round: round + 1, order, loadavg: load });
        log(`${m} batch ${b}, round ${round + 1}/${args.rounds}: ${order.join(' → ')}; load average ${load.map((x) => x.toFixed(2)).join('/')}`);
        for (const kind of order) {
          const r = res.results[m][b][kind];
          if (r.error) continue;
          res.order.push({ model: m, batch: b, round: round + 1, row: kind });
          try {
            const t = await timeRow(kind, pages[kind].page, m, b, args.warmup, r.runsPerRound);
            r.rounds.push({ round: round + 1, ms: t.ms, median: stats(t.ms).median, ...(t.recordMs ? { recordMs: t.recordMs } : {}) });
            if (t.threads !== undefined) r.threads = t.threads;
          } catch (e) {
            r.error = `round ${round + 1}: ${String(e.message).split('\n')[0].slice(0, 300)}`;
          }
          log(`  ${kind}: ${r.error ? `error: ${r.error}` : `median ${fmt(r.rounds[r.rounds.length - 1].median)} ms`}`);
        }
      }
      for (const kind of ok) {
        const r = res.results[m][b][kind];
        if (!kind.startsWith('ours')) await pages[kind].page.evaluate(() => window.ortClose()).catch(() => {});
        if (r.error) continue;
        r.ms = r.rounds.flatMap((x) => x.ms);
        r.recordMs = r.rounds.flatMap((x) => x.recordMs ?? []);
        r.roundMedians = r.rounds.map((x) => x.median);
        r.stats = stats(r.ms);
      }
      log(`${m} batch ${b}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  }
  for (const kind of args.rows) {
    const p = pages[kind];
    if (p.errors?.length) log(`${kind}: console errors: ${p.errors.slice(0, 5).join(' | ')}`);
    await p.page?.close();
  }
}

/// (a) navigation → ready (Generate enabled, model loaded), click → first step drawn and
/// navigation → first step drawn; (b) ms per step over a 50-step DDIM run with drawing, from x_T
/// drawn to the last step drawn. Times come from the page's own clock (performance.now(), 0 at
/// navigation start); a frame counts as drawn when #run-status's data-frames counts it.
async function pageFigures(browser, base) {
  const steps = 50;
  const url = `${base}/?model=fashion&steps=${steps}&sampler=ddim`;
  const page = await browser.newPage(); // a fresh context: nothing cached
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  const readyMs = await waitIn(page, () => {
    const b = document.querySelector('#generate');
    return b && !b.disabled ? performance.now() : false;
  }, 180_000);
  const settings = await page.evaluate(() => {
    const v = (id) => document.querySelector(`#${id}`)?.value ?? null;
    return { adapter: document.querySelector('#adapter')?.textContent, sampler: v('sampler'), steps: v('steps'), guidance: v('guidance'), batch: v('batch'), eta: v('eta') };
  });
  await page.evaluate(() => {
    const st = document.querySelector('#run-status');
    window.__frames = [];
    new MutationObserver(() => {
      const n = Number(st.getAttribute('data-frames'));
      const last = window.__frames[window.__frames.length - 1];
      if (!last || last.n !== n) window.__frames.push({ n, t: performance.now() });
    }).observe(st, { attributes: true, attributeFilter: ['data-frames', 'data-state'] });
    window.__click = performance.now();
    document.querySelector('#generate').click();
  });
  await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"]', { timeout: 600_000 });
  const r = await page.evaluate(() => ({ click: window.__click, frames: window.__frames, state: document.querySelector('#run-status').getAttribute('data-state'), total: document.querySelector('#total-time')?.textContent }));
  await page.close();
  const at = (n) => r.frames.find((f) => f.n >= n)?.t;
  const xT = at(1), first = at(2), last = at(steps + 1);
  return {
    url: url.replace(base, ''), settings, state: r.state, pageTotal: r.total, errors,
    navToReadyMs: readyMs,
    clickToXtMs: xT - r.click,
    clickToFirstStepMs: first - r.click,
    navToFirstStepMs: first,
    msPerStep: (last - xT) / steps,
    framesSeen: r.frames.length,
    frameTimes: r.frames.map((f) => [f.n, Math.round(f.t)]),
  };
}

function wasmSize() {
  const size = (f) => {
    const raw = readFileSync(f);
    return { file: f.slice(ROOT.length + 1), raw: raw.length, gzip9: gzipSync(raw, { level: zc.Z_BEST_COMPRESSION }).length };
  };
  const f = wasmFile();
  if (!f) return null;
  const relaxed = f.replace(/_bg\.wasm$/, '-relaxed_bg.wasm');
  return { ...size(f), relaxed: existsSync(relaxed) ? size(relaxed) : null };
}

/// What the numbers were measured on: the commit, the files that differed from it when the run
/// ended (dist/ may have been built from a working tree with changes, maybe not these), and
/// when dist/ was built.
function provenance() {
  const git = (...a) => { try { return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8' }).trimEnd(); } catch { return null; } };
  const w = wasmFile();
  return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no')?.split('\n').filter(Boolean) ?? null, distBuilt: w ? statSync(w).mtime.toISOString() : null };
}

function wasmFile() {
  const dist = join(ROOT, 'dist');
  // The baseline module (the relaxed-SIMD one is `…-relaxed_bg.wasm` beside it).
  const f = readdirSync(dist).find((n) => n.endsWith('_bg.wasm') && !n.endsWith('-relaxed_bg.wasm'));
  return f ? join(dist, f) : null;
}

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function table(res, models, batches, rows) {
  const out = [];
  for (const m of models) {
    for (const b of batches) {
      const r = res.results[m][b];
      const shape = res.shapes[m]?.[b];
      out.push('', `${m}, batch ${b}${shape ? ` (sample ${shape.join('×')}, ${(res.params[m] / 1e6).toFixed(2)} M params)` : ''}`);
      out.push(`  ${'row'.padEnd(28)} ${'median ms'.padStart(10)}  ${'(min–max)'.padEnd(20)} ${'runs'.padStart(4)}  rel L2 vs PyTorch, each round's median`);
      for (const k of rows) {
        const x = r[k];
        if (!x) continue;
        if (x.error) { out.push(`  ${ROW_LABEL[k].padEnd(28)} ${'FAILED'.padStart(10)}  ${x.error}`); continue; }
        const rec = x.recordMs?.length ? `  (host part before the download: median ${fmt(stats(x.recordMs).median)} ms)` : '';
        const per = x.roundMedians?.length > 1 ? `  rounds ${x.roundMedians.map(fmt).join(' / ')}` : '';
        out.push(`  ${ROW_LABEL[k].padEnd(28)} ${fmt(x.stats.median).padStart(10)}  ${`(${fmt(x.stats.min)}–${fmt(x.stats.max)})`.padEnd(20)} ${String(x.ms.length).padStart(4)}  ${x.relL2.toExponential(1)}${per}${x.threads > 1 ? `  (on ${x.threads} threads)` : ''}${rec}`);
      }
      const ratio = (a, c) => (r[a]?.stats && r[c]?.stats ? `${(r[a].stats.median / r[c].stats.median).toFixed(2)}×` : 'n/a');
      const parts = [];
      if (rows.includes('ours-webgpu') && rows.includes('ort-webgpu')) parts.push(`ours-webgpu/ort-webgpu ${ratio('ours-webgpu', 'ort-webgpu')}`);
      if (rows.includes('ours-webgpu-f16') && rows.includes('ours-webgpu')) parts.push(`ours-webgpu-f16/ours-webgpu ${ratio('ours-webgpu-f16', 'ours-webgpu')}`);
      if (rows.includes('ours-webgpu') && rows.includes('ort-webgpu-jsep')) parts.push(`ours-webgpu/ort-webgpu-jsep ${ratio('ours-webgpu', 'ort-webgpu-jsep')}`);
      if (rows.includes('ours-cpu') && rows.includes('ort-wasm-2t')) parts.push(`ours-cpu/ort-wasm-2t ${ratio('ours-cpu', 'ort-wasm-2t')}`);
      if (rows.includes('ours-cpu-1t') && rows.includes('ort-wasm-1t')) parts.push(`ours-cpu-1t/ort-wasm-1t ${ratio('ours-cpu-1t', 'ort-wasm-1t')}`);
      if (rows.includes('ours-cpu-1t') && rows.includes('ours-cpu-1t-simd128')) parts.push(`ours-cpu-1t/ours-cpu-1t-simd128 ${ratio('ours-cpu-1t', 'ours-cpu-1t-simd128')}`);
      if (parts.length) out.push(`  ratios (median, < 1 = ours faster): ${parts.join(', ')}`);
    }
  }
  return out.join('\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!existsSync(join(ROOT, 'dist/index.html'))) throw new Error('no dist/: build the app first (trunk build --release)');
  if (!existsSync(join(ROOT, 'tools/node_modules/onnxruntime-web/dist/ort.min.mjs'))) throw new Error('onnxruntime-web is missing: scripts/setup.sh test');
  ensureExports(args.models, args.batches);

  const started = new Date();
  const srv = await startServer([...BENCH_MOUNTS, ['/models/cifar10/', CIFAR10_DIR]]);
  const browser = await launch();
  const res = { loadavgStart: loadavg(), cpus: cpus().length, date: started.toISOString(), command: `node bench/browser.mjs ${process.argv.slice(2).join(' ')}`.trim(), runs: args.runs, rounds: args.rounds, warmup: args.warmup, rowBudgetS: args.rowBudgetS, tolerance: TOLERANCE, results: {}, shapes: {}, params: {} };
  try {
    res.browser = `Chromium ${browser.version()}`;
    const { page } = await open(browser, `${srv.base}/bench/ort.html`, () => window.ortReady === true);
    res.env = await page.evaluate(() => window.ortInfo());
    await page.close();
    log(`${res.browser}; crossOriginIsolated ${res.env.crossOriginIsolated}; adapter ${JSON.stringify(res.env.adapter)}`);
    if (args.requireGpu) {
      const a = res.env.adapter;
      if (!a) throw new Error('--require-gpu: navigator.gpu.requestAdapter() gave no adapter');
      if (a.isFallbackAdapter || CPU_ADAPTER.test(JSON.stringify(a))) throw new Error(`--require-gpu: the WebGPU adapter is a CPU implementation: ${JSON.stringify(a)}`);
    }
    for (const m of args.models) {
      res.results[m] = {};
      res.shapes[m] = {};
      for (const b of args.batches) {
        res.results[m][b] = {};
        const ref = JSON.parse(readFileSync(join(ROOT, 'target/onnx', m, `bench_input_b${b}.json`), 'utf8'));
        res.shapes[m][b] = ref.inputs.sample.shape;
        res.params[m] = ref.params;
      }
    }
    if (args.page) {
      log('page figures: fashion, 50 DDIM steps, the backend the page picks');
      try { res.page = await pageFigures(browser, srv.base); } catch (e) { res.page = { error: String(e.message).split('\n')[0] }; }
    }
    await runAlternating(browser, srv.base, args, res);
  } finally {
    await browser.close();
    srv.server.close();
  }
  res.wasm = wasmSize();
  res.build = provenance();
  res.loadavgEnd = loadavg();
  res.elapsedS = (Date.now() - started.getTime()) / 1000;

  const a = res.env?.adapter ?? {};
  const ours = (k) => Object.values(res.results).flatMap((x) => Object.values(x)).map((x) => x[k]?.backend).find(Boolean);
  const lines = [
    `stepwise in-browser bench, ${res.date}`,
    `command: ${res.command}`,
    `browser: ${res.browser} (${res.env?.userAgent})`,
    `WebGPU adapter (navigator.gpu.requestAdapter().info): vendor "${a.vendor ?? ''}", architecture "${a.architecture ?? ''}", device "${a.device ?? ''}", description "${a.description ?? ''}"`,
    `ours webgpu backend: ${ours('ours-webgpu') ?? 'n/a'}; ours cpu backend: ${ours('ours-cpu') ?? 'n/a'}`,
    `onnxruntime-web ${res.env?.ortVersion}: webgpu rows import onnxruntime-web/webgpu (dist/ort.webgpu.min.mjs, the C++ WebGPU EP), wasm${args.rows.includes('ort-webgpu-jsep') ? ' and JSEP' : ''} rows import onnxruntime-web (dist/ort.min.mjs); crossOriginIsolated ${res.env?.crossOriginIsolated}; hardwareConcurrency ${res.env?.hardwareConcurrency}`,
    `each row: output checked against PyTorch's (relative L2 <= ${TOLERANCE}) before timing; then ${args.rounds} round(s), the rows alternating in an order rotated by one each round (A B C, B C A, …); in each round every row runs ${args.warmup} untimed warm-up forward(s) then ${args.runs} timed ones (fewer, at least 1, where they would take over ${args.rowBudgetS} s / ${args.rounds} at the check's pace; 'runs' says how many in all); median ms over all timed runs (min–max), then each round's median`,
    `every timing is forward + readback to JS: ours, upload + UNet forward + output read back into the wasm heap, timed inside the page; ort-web, session.run with CPU tensors + output getData(), timed inside the page (the JSON's 'includes' per row says exactly)`,
    table(res, args.models, args.batches, args.rows),
  ];
  if (res.page) {
    const p = res.page;
    lines.push('', `page figures (${p.url ?? ''}, ${p.settings ? `guidance ${p.settings.guidance}, batch ${p.settings.batch}, ${p.settings.adapter}` : ''}):`);
    if (p.error) lines.push(`  FAILED: ${p.error}`);
    else {
      lines.push(`  navigation → ready (Generate enabled, model loaded): ${p.navToReadyMs.toFixed(0)} ms`);
      lines.push(`  click → x_T drawn: ${p.clickToXtMs.toFixed(0)} ms; click → first step drawn: ${p.clickToFirstStepMs.toFixed(0)} ms`);
      lines.push(`  navigation → first step drawn: ${p.navToFirstStepMs.toFixed(0)} ms (includes the wait between ready and the click)`);
      lines.push(`  50-step DDIM with drawing: ${p.msPerStep.toFixed(1)} ms per step (x_T drawn → step 50 drawn, / 50); run state ${p.state}`);
    }
  }
  if (res.build) lines.push('', `built from ${res.build.commit}${res.build.dirty?.length ? `; files changed in the working tree at the end of the run: ${res.build.dirty.map((l) => l.slice(3)).join(', ')}` : ''}; dist/ built ${res.build.distBuilt}`);
  const size = (w) => `${w.raw} bytes raw (${(w.raw / 1048576).toFixed(2)} MiB), ${w.gzip9} bytes gzip -9 (${(w.gzip9 / 1048576).toFixed(2)} MiB)`;
  if (res.wasm) lines.push(`release wasm ${res.wasm.file}: ${size(res.wasm)}`);
  if (res.wasm?.relaxed) lines.push(`relaxed-SIMD wasm ${res.wasm.relaxed.file} (loaded instead where the browser has relaxed SIMD; one of the two is downloaded): ${size(res.wasm.relaxed)}`);
  lines.push(`total ${res.elapsedS.toFixed(0)} s; ${res.cpus} CPUs, load average (1/5/15 min) ${res.loadavgStart.map((x) => x.toFixed(2)).join('/')} at the start, ${res.loadavgEnd.map((x) => x.toFixed(2)).join('/')} at the end`);
  const text = lines.join('\n');
  console.log(text);
  res.text = text;

  const stamp = started.toISOString().slice(0, 16).replace(/[:T]/g, '-');
  const out = args.out ?? join(ROOT, 'target/bench', `browser-${stamp}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(res, null, 1));
  log(`wrote ${out}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
