// Long sessions (issue #9): SOAK_RUNS (default 200) consecutive generations in one page, switching
// models, samplers, step counts and batch sizes, with Stop pressed mid-run every 7th time. Each run
// must end cleanly (done, or stopped when Stop was pressed) with the right number of frames and no
// error; a repeated setting must give the bit-identical result it gave before (no stale state);
// the JS heap (after a forced GC) and the live GPU buffers must stay flat between the end of the
// warm-up (every combination seen once) and the end. Prints the figures for
// RELIABILITY.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './harness.mjs';

const RUNS = Number(process.env.SOAK_RUNS ?? 200);
let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

const MODELS = ['fashion', 'emoji'];
const SAMPLERS = ['ddim', 'ddpm', 'dpm++2m', 'euler-a'];
const STEPS = [1, 2, 3];
const BATCH = [1, 2];

test(`soak: ${RUNS} generations with switches and stops`, { timeout: 3_600_000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${srv.base}/?debug=gpu&backend=gpu&model=fashion&seed=5`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  const cdp = await page.context().newCDPSession(page);
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    return (await cdp.send('Runtime.getHeapUsage')).usedSize;
  };
  const setRange = (sel, v) => page.fill(sel, String(v));
  const hashes = new Map();
  let warm = null, stops = 0, repeats = 0, prevPool = {};
  const t0 = Date.now();
  for (let i = 0; i < RUNS; i++) {
    const model = MODELS[Math.floor(i / 24) % 2];
    const sampler = SAMPLERS[i % 4], steps = STEPS[i % 3], batch = BATCH[Math.floor(i / 12) % 2];
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
    if (i === 47) warm = { heap: await heap(), gpu: await page.evaluate(() => window.stepwiseStats()) };
    if (process.env.SOAK_TRACE) {
      const g = await page.evaluate(() => window.stepwiseStats());
      const grew = Object.entries(g.pooledBySize).filter(([k, v]) => v > (prevPool[k] ?? 0)).map(([k, v]) => `${k}:${prevPool[k] ?? 0}->${v}`);
      console.log(`run ${i} ${key} ${state} created ${g.buffersCreated} pooled ${g.buffersPooled} ${grew.join(' ')}`);
      prevPool = g.pooledBySize;
    }
  }
  const end = { heap: await heap(), gpu: await page.evaluate(() => window.stepwiseStats()) };
  const minutes = ((Date.now() - t0) / 60000).toFixed(1);
  console.log(`SOAK ${RUNS} runs in ${minutes} min: ${stops} stopped mid-run, ${repeats} repeats bit-identical; ` +
    `JS heap after GC ${(warm.heap / 1e6).toFixed(2)} MB after warm-up (run 48) -> ${(end.heap / 1e6).toFixed(2)} MB at the end; ` +
    `GPU buffers created ${warm.gpu.buffersCreated} -> ${end.gpu.buffersCreated}, pooled ${warm.gpu.buffersPooled} -> ${end.gpu.buffersPooled}, ` +
    `bytes held ${(warm.gpu.bytesHeld / 1e6).toFixed(2)} -> ${(end.gpu.bytesHeld / 1e6).toFixed(2)} MB`);
  assert.ok(end.heap < warm.heap * 1.2 + 2e6, `JS heap grew from ${warm.heap} to ${end.heap}`);
  // After warm-up (every model, sampler, step count and batch seen) nothing is allocated on the
  // GPU: no buffer created, the pool and the bytes held exactly as they were. (Re-selecting a
  // model once re-uploaded its weights and left the old copy in the pool: RELIABILITY.md.)
  assert.equal(end.gpu.buffersCreated, warm.gpu.buffersCreated, 'GPU buffers were created after warm-up');
  assert.equal(end.gpu.buffersPooled, warm.gpu.buffersPooled, 'the buffer pool grew after warm-up');
  assert.equal(end.gpu.bytesHeld, warm.gpu.bytesHeld, 'GPU memory held grew after warm-up');
  assert.ok(stops > 0 && repeats > 0);
  assert.deepEqual(errors, []);
  await page.close();
});
