// The CPU backend's Web Workers (src/cpu/workers.rs) in headless Chromium. With ?threads=2 a CPU
// forward of a batch splits between the page's thread and one worker: it must give PyTorch's
// output on a golden fixture, the one-thread output on fresh random inputs (uneven splits,
// per-image timesteps and labels), and a guided run's images; a worker that is missing, or that
// answers wrong, must cost speed and not results.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, openPage, pixels, waitIn, benchForward as forward, readSafetensors, relL2, randn } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLASS_MODEL = '/fixtures/unet/class_scale_shift'; // 1×16×16, 11 class embeds, golden batch 3
const RGB_MODEL = '/fixtures/unet/attn_multihead'; // 3×16×16 with attention

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

/// A bench page on the CPU backend with `threads` threads; `console` collects warnings and errors.
async function cpuPage(threads, setup) {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));
  if (setup) await setup(page);
  await page.goto(`${srv.base}/?debug=bench&backend=cpu&threads=${threads}`);
  await waitIn(page, () => typeof window.stepwiseBench === 'function');
  return { page, consoleLines };
}

test('a CPU batch splits between the page and a worker and gives PyTorch output', { timeout: 300_000 }, async () => {
  const input = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/input.safetensors'));
  const expected = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/expected.safetensors'));
  const two = await cpuPage(2);
  const one = await cpuPage(1);

  // The golden batch of 3 (shares of 1 and 2), each image with its own timestep and label.
  const g = await forward(two.page, CLASS_MODEL, input.sample.data, input.sample.shape, input.timestep.data, input.class_labels.data);
  assert.match(g.backend, /^CPU backend/);
  assert.equal(g.threads, 2, 'the batch ran on the page and one worker');
  const err = relL2(g.output, expected.sample.data);
  assert.ok(err <= 1e-4, `relative L2 against PyTorch ${err.toExponential(2)} > 1e-4`);

  // Fresh random inputs, uneven batches, against the same page on one thread.
  for (const [model, c, n, labelled] of [[CLASS_MODEL, 1, 5, true], [RGB_MODEL, 3, 4, false], [RGB_MODEL, 3, 2, false]]) {
    const shape = [n, c, 16, 16];
    const sample = randn(n * c * 256);
    const t = Array.from({ length: n }, () => Math.floor(Math.random() * 1000));
    const labels = labelled ? Array.from({ length: n }, () => Math.floor(Math.random() * 11)) : null;
    const a = await forward(two.page, model, sample, shape, t, labels);
    const b = await forward(one.page, model, sample, shape, t, labels);
    assert.equal(a.threads, 2, `${model} batch ${n}: on two threads`);
    assert.equal(b.threads, 1, `${model} batch ${n}: ?threads=1 starts no worker`);
    const e = relL2(a.output, b.output);
    assert.ok(e <= 1e-5, `${model} batch ${n}: two threads differ from one by relative L2 ${e.toExponential(2)}`);
  }
  for (const p of [two, one]) {
    // (The bare fixture folder costs the 404 of a unet/config.json probe; nothing may fail.)
    assert.deepEqual(p.consoleLines.filter((l) => /^pageerror|worker/i.test(l)), []);
    await p.page.close();
  }
});

test('a missing or wrong CPU worker costs speed, not results', { timeout: 300_000 }, async () => {
  const input = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/input.safetensors'));
  const expected = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/expected.safetensors'));
  // The page is cross-origin isolated: a worker script must come with the same policy to load.
  const headers = { 'cross-origin-embedder-policy': 'require-corp', 'cross-origin-opener-policy': 'same-origin' };
  const cases = [
    ['missing', (route) => route.fulfill({ status: 404, headers, body: 'not found' }), /cpu-worker(-relaxed)?\.js did not load/],
    // A worker that answers every forward with 3 values.
    ['wrong', (route) => route.fulfill({
      headers,
      contentType: 'text/javascript',
      body: 'self.onmessage = (e) => { if (e.data.op === "forward") self.postMessage({ id: e.data.id, output: new Float32Array(3) }); };',
    }), /3 values for a share of/],
    // A worker whose module does not start.
    ['broken', (route) => route.fulfill({
      headers,
      contentType: 'text/javascript',
      body: 'self.onmessage = () => self.postMessage({ failed: "the CPU worker did not start: test" });',
    }), /did not start: test/],
  ];
  for (const [name, handler, warning] of cases) {
    // The relaxed-SIMD module's workers load cpu-worker-relaxed.js (its own glue), the baseline's
    // cpu-worker.js.
    const p = await cpuPage(2, (page) => page.route(/\/cpu-worker(-relaxed)?\.js$/, handler));
    for (let run = 0; run < 2; run++) {
      const g = await forward(p.page, CLASS_MODEL, input.sample.data, input.sample.shape, input.timestep.data, input.class_labels.data);
      const err = relL2(g.output, expected.sample.data);
      assert.ok(err <= 1e-4, `${name} worker, run ${run}: relative L2 against PyTorch ${err.toExponential(2)} > 1e-4`);
      assert.equal(g.threads, 1, `${name} worker, run ${run}: the failed worker is not counted`);
    }
    const warned = p.consoleLines.filter((l) => l.startsWith('warning'));
    assert.ok(warned.some((l) => warning.test(l)), `${name} worker: no console warning matching ${warning}: ${JSON.stringify(p.consoleLines)}`);
    await p.page.close();
  }
});

test('a guided CPU run splits its pair of forwards and draws the one-thread images', { timeout: 300_000 }, async () => {
  const run = async (threads) => {
    const params = new URLSearchParams({ backend: 'cpu', threads, debug: 'gpu', model_url: CLASS_MODEL, sampler: 'ddim', steps: 4, seed: 11, class: 3, guidance: 3, batch: 1 });
    const { page, errors } = await openPage(browser, `${srv.base}/?${params}`);
    await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
    await page.click('#generate');
    await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"]', { timeout: 240_000 });
    assert.equal(await page.getAttribute('#run-status', 'data-state'), 'done', await page.textContent('#run-status'));
    const frames = Number(await page.getAttribute('#run-status', 'data-frames'));
    // The header's short line; the technical one is its title.
    const adapter = `${await page.textContent('#adapter')} | ${await page.getAttribute('#adapter', 'title')}`;
    const image = await pixels(page, 'xt');
    const stats = await page.evaluate(() => window.stepwiseStats());
    assert.deepEqual(errors, []);
    await page.close();
    return { frames, image, stats, adapter };
  };
  const a = await run(2);
  const b = await run(1);
  assert.equal(a.frames, 5);
  assert.equal(b.frames, 5);
  // Chromium has relaxed SIMD, so the page loads that module (tests/e2e/wasm_simd.test.mjs).
  assert.match(a.adapter, /^CPU \(2 threads, relaxed SIMD\) \| CPU backend on 2 threads, relaxed SIMD \(requested with \?backend=cpu\)$/);
  assert.match(b.adapter, /^CPU \(1 thread, relaxed SIMD\) \| CPU backend on 1 thread, relaxed SIMD \(/);
  assert.equal(a.stats.cpuSimd, 'relaxed SIMD');
  // Four steps, each one forward of the conditional and unconditional pair: split, the second
  // image on the worker.
  assert.equal(a.stats.cpuThreads, 2);
  assert.equal(a.stats.cpuSplitForwards, 4);
  assert.equal(a.stats.cpuWorkerShares, 4);
  assert.equal(b.stats.cpuThreads, 1);
  assert.equal(b.stats.cpuSplitForwards, 0);
  assert.equal(a.image.data.length, b.image.data.length);
  const worst = a.image.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.image.data[i])), 0);
  assert.ok(worst <= 1, `the final images differ by ${worst} grey levels`);
});
