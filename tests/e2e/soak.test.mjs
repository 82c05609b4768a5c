// Long sessions (issue #9): SOAK_RUNS (default 200) consecutive generations in one page, switching
// models, samplers, step counts and batch sizes, with Stop pressed mid-run every 7th time. Each run
// must end cleanly (done, or stopped when Stop was pressed) with the right number of frames and no
// error; a repeated setting must give the bit-identical result it gave before (no stale state);
// the JS heap (after a forced GC), the wasm memory and the live GPU buffers must stay flat between
// the end of the warm-up (every combination seen once) and the end. Then the same on the CPU
// backend with a Web Worker (SOAK_CPU_RUNS, default 24): JS heap and wasm memory (the page's and
// the worker's) flat. Prints the figures for RELIABILITY.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, trackWasmMemory, wasmMemory } from './harness.mjs';

const RUNS = Number(process.env.SOAK_RUNS ?? 200);
// The CPU backend with a Web Worker (`backend=cpu&threads=2`): 24 runs by default (the test
// command), SOAK_CPU_RUNS=200 for the documented full run (RELIABILITY.md).
const CPU_RUNS = Number(process.env.SOAK_CPU_RUNS ?? 24);
let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

const MODELS = ['fashion', 'emoji'];
const SAMPLERS = ['ddim', 'ddpm', 'dpm++2m', 'euler-a'];
const STEPS = [1, 2, 3];
const BATCH = [1, 2];
const MiB = (b) => (b / 1048576).toFixed(2);

/// `runs` generations in one page at `query`; `setting(i)` picks run i's model, sampler, steps
/// and batch; the figures after run `warmAt` (every setting seen) are compared with the end's.
async function soak({ query, runs, setting, warmAt, gpu }) {
  const context = await browser.newContext();
  await trackWasmMemory(context);
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${srv.base}/?${query}`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  const cdp = await context.newCDPSession(page);
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    return (await cdp.send('Runtime.getHeapUsage')).usedSize;
  };
  const figures = async () => ({ heap: await heap(), wasm: await wasmMemory(page), stats: await page.evaluate(() => window.stepwiseStats()) });
  const setRange = (sel, v) => page.fill(sel, String(v));
  const hashes = new Map();
  let warm = null, stops = 0, repeats = 0, prevPool = {};
  const t0 = Date.now();
  for (let i = 0; i < runs; i++) {
    const { model, sampler, steps, batch } = setting(i);
    if ((await page.inputValue('#model')) !== model) {
      await page.selectOption('#model', model);
      await page.waitForFunction((m) => document.querySelector('#model').value === m, model);
    }
    await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
    await page.selectOption('#sampler', sampler);
    await setRange('#steps', steps);
    await setRange('#batch', batch);
    if (model === 'fashion') await page.selectOption('#class', '-1');
    const stop = i % 7 === 6 && steps > 1;
    await page.click('#generate');
    if (stop) {
      await page.waitForFunction(() => Number(document.querySelector('#run-status').dataset.frames) >= 2, null, { timeout: 120_000 });
      await page.click('#generate');  // Stop
    }
    await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="stopped"], #run-status[data-state="error"], #panic', { timeout: 300_000 });
    assert.equal(await page.locator('#panic').count(), 0, `run ${i}: panic`);
    const state = await page.getAttribute('#run-status', 'data-state');
    const frames = Number(await page.getAttribute('#run-status', 'data-frames'));
    const key = `${model}/${sampler}/${steps}/${batch}`;
    if (stop && state === 'stopped') {
      stops++;
      assert.ok(frames < steps + 1, `run ${i} (${key}): stopped but has all ${frames} frames`);
    } else {
      if (state !== 'done') assert.fail(`run ${i} (${key}): ${state} ${await page.textContent('#run-error').catch(() => '')}`);
      assert.equal(frames, steps + 1, `run ${i} (${key}): ${frames} frames`);
      const hash = await page.getAttribute('#run-status', 'data-hash');
      if (hashes.has(key)) {
        repeats++;
        assert.equal(hash, hashes.get(key), `run ${i} (${key}): a repeat gave a different image`);
      } else hashes.set(key, hash);
    }
    if (i === warmAt - 1) warm = await figures();
    if (process.env.SOAK_TRACE) {
      const g = await page.evaluate(() => window.stepwiseStats());
      const w = await wasmMemory(page);
      const grew = Object.entries(g.pooledBySize ?? {}).filter(([k, v]) => v > (prevPool[k] ?? 0)).map(([k, v]) => `${k}:${prevPool[k] ?? 0}->${v}`);
      console.log(`run ${i} ${key} ${state} wasm ${w.page.map(MiB).join('+')} page ${w.workers.map(MiB).join('+')} workers` +
        (gpu ? ` created ${g.buffersCreated} pooled ${g.buffersPooled} ${grew.join(' ')}` : ` split forwards ${g.cpuSplitForwards}, worker shares ${g.cpuWorkerShares}`));
      prevPool = g.pooledBySize ?? {};
    }
  }
  const end = await figures();
  const minutes = ((Date.now() - t0) / 60000).toFixed(1);
  const wasmLine = `wasm memory ${MiB(warm.wasm.total)} -> ${MiB(end.wasm.total)} MiB (page ${warm.wasm.page.map(MiB).join('+')} -> ${end.wasm.page.map(MiB).join('+')}, ` +
    `${end.wasm.workers.length} worker instance(s) ${warm.wasm.workers.map(MiB).join('+') || '-'} -> ${end.wasm.workers.map(MiB).join('+') || '-'})`;
  const gpuLine = gpu ? `; GPU buffers created ${warm.stats.buffersCreated} -> ${end.stats.buffersCreated}, pooled ${warm.stats.buffersPooled} -> ${end.stats.buffersPooled}, ` +
    `bytes held ${(warm.stats.bytesHeld / 1e6).toFixed(2)} -> ${(end.stats.bytesHeld / 1e6).toFixed(2)} MB` : `; CPU forwards split with workers ${end.stats.cpuSplitForwards}, shares computed by workers ${end.stats.cpuWorkerShares}`;
  console.log(`SOAK ${gpu ? 'gpu' : 'cpu'} ${runs} runs in ${minutes} min: ${stops} stopped mid-run, ${repeats} repeats bit-identical; ` +
    `JS heap after GC ${(warm.heap / 1e6).toFixed(2)} MB after warm-up (run ${warmAt}) -> ${(end.heap / 1e6).toFixed(2)} MB at the end; ${wasmLine}${gpuLine}`);
  assert.ok(end.heap < warm.heap * 1.2 + 2e6, `JS heap grew from ${warm.heap} to ${end.heap}`);
  // wasm memory never shrinks; after warm-up it may grow by a page or so of allocator slack, not
  // with the run count (each instance: the page's and every worker's).
  const grown = (a, b) => b > a * 1.02 + 1048576;
  assert.equal(end.wasm.page.length, warm.wasm.page.length, 'wasm instances appeared in the page after warm-up');
  end.wasm.page.forEach((b, k) => assert.ok(!grown(warm.wasm.page[k], b), `the page's wasm memory grew from ${warm.wasm.page[k]} to ${b} bytes after warm-up`));
  end.wasm.workers.forEach((b, k) => assert.ok(!grown(warm.wasm.workers[k] ?? 0, b), `a worker's wasm memory grew from ${warm.wasm.workers[k]} to ${b} bytes after warm-up`));
  assert.ok(end.wasm.page.length > 0, 'no wasm memory found in the page');
  if (gpu) {
    // After warm-up (every model, sampler, step count and batch seen) nothing is allocated on the
    // GPU: no buffer created, the pool and the bytes held exactly as they were. (Re-selecting a
    // model once re-uploaded its weights and left the old copy in the pool: RELIABILITY.md.)
    assert.equal(end.stats.buffersCreated, warm.stats.buffersCreated, 'GPU buffers were created after warm-up');
    assert.equal(end.stats.buffersPooled, warm.stats.buffersPooled, 'the buffer pool grew after warm-up');
    assert.equal(end.stats.bytesHeld, warm.stats.bytesHeld, 'GPU memory held grew after warm-up');
  } else {
    assert.ok(end.wasm.workers.length >= 1, 'no worker wasm instance: the CPU backend ran without its worker');
    assert.ok(end.stats.cpuWorkerShares > 0, 'no batch share was computed by a worker');
  }
  assert.ok(stops > 0 && repeats > 0);
  assert.deepEqual(errors, []);
  await context.close();
}

test(`soak: ${RUNS} generations with switches and stops`, { timeout: 3_600_000 }, async () => {
  await soak({
    query: 'debug=gpu&backend=gpu&model=fashion&seed=5',
    runs: RUNS,
    gpu: true,
    warmAt: 48,
    setting: (i) => ({ model: MODELS[Math.floor(i / 24) % 2], sampler: SAMPLERS[i % 4], steps: STEPS[i % 3], batch: BATCH[Math.floor(i / 12) % 2] }),
  });
});

// Every setting of a 12-run cycle (both models, the four samplers, 1–3 steps, batch 1 and 2) by
// run 12, so the default 24 runs repeat most of them; every 7th run has 40 steps instead, so that
// its Stop lands mid-run (a 3-step run on the CPU ends before the click).
const CPU_STOP_STEPS = 40;
test(`soak, CPU backend with a worker: ${CPU_RUNS} generations with switches and stops`, { timeout: 3_600_000 }, async () => {
  await soak({
    query: 'debug=gpu&backend=cpu&threads=2&model=fashion&seed=5',
    runs: CPU_RUNS,
    gpu: false,
    warmAt: 12,
    setting: (i) => ({ model: MODELS[Math.floor(i / 6) % 2], sampler: SAMPLERS[i % 4], steps: i % 7 === 6 ? CPU_STOP_STEPS : STEPS[i % 3], batch: BATCH[Math.floor(i / 3) % 2] }),
  });
});
