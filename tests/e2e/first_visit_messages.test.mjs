// The first visit's messages and loading (issue 35): a browser without WebGPU gets one short,
// dismissible sentence and a working page with no internal words on it; a model that does not
// load says why in a sentence, with the raw error behind "Details"; a second visit finds the
// shipped model in the Cache API with the network gone; the status line counts the download's
// bytes; the self-test page without WebGPU says so in a sentence.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve, dirname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, openPage, waitIn, ARTIFACTS } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLASS_MODEL = '/fixtures/unet/class_scale_shift'; // pipeline folder, 1×16×16, 0.9 MB of weights
/// Words that belong to the code, not to a user's screen.
const INTERNAL = ['not compiled in', 'wgpu', 'JsValue', 'wasm-function', '?backend'];

let srv, browser;
before(async () => {
  srv = await startServer();
  // /slow/… serves tests/fixtures/… in 16 kB pieces every 40 ms, so that a download is caught
  // in the middle; the rest goes to the harness.
  const serve = srv.server.listeners('request')[0];
  srv.server.removeAllListeners('request');
  srv.server.on('request', async (req, res) => {
    if (!req.url.startsWith('/slow/')) return serve(req, res);
    const dir = join(ROOT, 'tests/fixtures');
    const file = normalize(join(dir, decodeURIComponent(new URL(req.url, 'http://x').pathname.slice('/slow/'.length))));
    const size = await stat(file).then((s) => s.isFile() && s.size, () => false);
    if (!file.startsWith(dir) || size === false) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-length': size, 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' });
    if (req.method === 'HEAD') { res.end(); return; }
    const stream = createReadStream(file, { highWaterMark: 16384 });
    stream.on('data', (chunk) => { stream.pause(); res.write(chunk); setTimeout(() => stream.resume(), 40); });
    stream.on('end', () => res.end());
  });
  browser = await launch();
});
after(async () => { await browser?.close(); srv?.server.close(); });

function appUrl(params) {
  return `${srv.base}/?${new URLSearchParams(params)}`;
}

/// The text a user sees: the body's rendered text, which leaves out collapsed <details>.
async function visibleText(page) {
  return page.evaluate(() => document.body.innerText);
}

function assertNoInternals(text, where) {
  for (const w of INTERNAL) assert.ok(!text.includes(w), `${where} shows "${w}": ${JSON.stringify(text)}`);
}

test('without WebGPU: one short note, dismissible, no internals on screen, and a run works', { timeout: 300_000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // A browser without WebGPU: no navigator.gpu at all.
  await page.addInitScript(() => { delete Navigator.prototype.gpu; });
  await page.goto(appUrl({ backend: 'auto', model_url: CLASS_MODEL, sampler: 'ddim', steps: 2, seed: 3, class: 1 }));
  await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  assert.equal(await page.evaluate(() => 'gpu' in navigator), false);
  assert.equal(await page.locator('#boot').count(), 0, 'the "Loading the app…" placeholder is gone');
  assert.equal(await page.textContent('#cpu-note > span'), 'Your browser has no WebGPU, so stepwise runs on the CPU: slower, but everything works.');
  assert.match(await page.textContent('#adapter'), /^CPU \(\d+ threads?, .*SIMD.*\)$/);
  // The technical line is one click away.
  assert.equal(await page.textContent('#cpu-note details summary'), 'Details');
  assert.match(await page.textContent('#cpu-note details pre'), /this browser has no WebGPU/);
  assertNoInternals(await visibleText(page), 'the page');
  await page.screenshot({ path: join(ARTIFACTS, 'first-visit-no-webgpu.png'), fullPage: true });

  await page.click('#cpu-note button.close');
  assert.equal(await page.locator('#cpu-note').count(), 0, 'the note goes away');

  await page.click('#generate');
  await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"]', { timeout: 240_000 });
  assert.equal(await page.getAttribute('#run-status', 'data-state'), 'done', await page.textContent('#run-status'));
  assert.equal(Number(await page.getAttribute('#run-status', 'data-frames')), 3);
  assertNoInternals(await visibleText(page), 'the page after a run');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a model that does not load says why in a sentence, the raw error under Details', { timeout: 120_000 }, async () => {
  // Not there at all: the server answers 404.
  const { page } = await openPage(browser, appUrl({ backend: 'cpu', model_url: '/fixtures/unet/no-such-model' }));
  await page.waitForSelector('#model-error', { timeout: 60_000 });
  const shown = await page.innerText('#model-error .message');
  assert.match(shown, /^Could not load the model “\/fixtures\/unet\/no-such-model \(from the URL\)”: there is no model at that address \(the server answered 404\)\. The other models still work: pick one in the Model list\.$/);
  assertNoInternals(await visibleText(page), 'the page');
  assert.equal(await page.textContent('#model-error details summary'), 'Details');
  assert.equal(await page.locator('#model-error details[open]').count(), 0, 'collapsed');
  assert.match(await page.textContent('#model-error details pre'), /no model at \/fixtures\/unet\/no-such-model: neither .*unet\/config\.json nor .*config\.json exists/);
  await page.screenshot({ path: join(ARTIFACTS, 'first-visit-missing-model.png'), fullPage: true });
  await page.close();

  // The network fails: "network error", not a JsValue dump, even in the details.
  const blocked = await openPage(browser, 'about:blank');
  await blocked.page.route('**/fixtures/unet/class_scale_shift/**', (r) => r.abort());
  await blocked.page.goto(appUrl({ backend: 'cpu', model_url: CLASS_MODEL }));
  await blocked.page.waitForSelector('#model-error', { timeout: 60_000 });
  assert.match(await blocked.page.innerText('#model-error .message'), /: the network failed \(are you offline, or is the server down\?\)\./);
  const all = await blocked.page.textContent('#model-error');
  assert.match(all, /fetch \/fixtures\/unet\/class_scale_shift\/unet\/config\.json: network error \(TypeError: Failed to fetch\)/);
  assert.ok(!/JsValue|wasm-function/.test(all), all);
  await blocked.page.close();
});

test('a second visit loads the app and the shipped model from the Cache API with the network gone', { timeout: 180_000 }, async () => {
  // One context: the Cache API is per origin and profile (a new page would get a fresh one).
  const context = await browser.newContext();
  const first = await context.newPage();
  await first.goto(appUrl({ backend: 'cpu' }));
  await first.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  const status = await first.textContent('#model-status');
  const cached = await first.evaluate(async () => {
    const names = await caches.keys();
    const c = await caches.open(names.find((n) => n.startsWith('stepwise-')));
    return (await c.keys()).map((r) => new URL(r.url).pathname);
  });
  assert.ok(cached.includes('/models/index.json'), cached.join(', '));
  assert.ok(cached.some((p) => p.endsWith('/unet/diffusion_pytorch_model.safetensors')), cached.join(', '));
  // The app's own wasm too (boot.js, scripts/csp.mjs): the one module this browser loaded.
  const wasm = await first.evaluate(async () => {
    const c = await caches.open('wasm:stepwise');
    return (await c.keys()).map((r) => new URL(r.url).pathname);
  });
  assert.equal(wasm.length, 1, wasm.join(', '));
  assert.match(wasm[0], /^\/stepwise-app-[0-9a-f]+(-relaxed)?_bg\.wasm$/);
  await first.close();

  const second = await context.newPage();
  const errors = [];
  second.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  let aborted = 0;
  await second.route('**/models/**', (r) => { aborted++; return r.abort(); });
  await second.route('**/*_bg.wasm', (r) => { aborted++; return r.abort(); });
  await second.goto(appUrl({ backend: 'cpu' }));
  await second.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  assert.equal(await second.textContent('#model-status'), status);
  assert.ok(aborted > 0, 'the page did try the network');
  assert.equal(await second.locator('#model-error').count(), 0);
  // The only errors are the blocked requests themselves.
  assert.deepEqual(errors.filter((e) => !/Failed to load resource|ERR_FAILED/.test(e)), []);
  await context.close();
});

test('the model status counts the downloaded bytes while a model loads', { timeout: 120_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ backend: 'cpu', model_url: '/slow/unet/class_scale_shift' }));
  // 0.9 MB at 16 kB / 40 ms: about two seconds of "loading… 0.3 of 0.9 MB".
  const text = await waitIn(page, `() => {
    const t = document.querySelector('#model-status')?.textContent ?? '';
    // Past the configs (a kB), in the middle of the weights.
    const m = t.match(/^loading… (\\d+\\.\\d) of (\\d+\\.\\d) (kB|MB)$/);
    return m && Number(m[1]) > 0 && Number(m[1]) < Number(m[2]) && t;
  }`, 60_000);
  assert.ok(text, 'a byte count was shown');
  const [got, total] = text.match(/([\d.]+) of ([\d.]+)/).slice(1).map(Number);
  assert.ok(got > 0 && got < total, text);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  assert.match(await page.textContent('#model-status'), /1×16×16, 10 classes/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the self-test page without WebGPU says so in a sentence, the JSON under Details', { timeout: 120_000 }, async () => {
  // (Its verdict-first layout on a GPU is checked where the self-test already runs:
  // selftest.test.mjs.)
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript(() => { delete Navigator.prototype.gpu; });
  await page.goto(`${srv.base}/?selftest`);
  await page.waitForSelector('#selftest-verdict', { timeout: 60_000 });
  assert.equal(await page.textContent('#selftest-verdict'), 'This browser has no WebGPU, so there is no GPU to test. The main page runs on the CPU instead, and everything works there.');
  assertNoInternals(await visibleText(page), 'the self-test page');
  assert.equal(await page.isVisible('#selftest-result'), false, 'the JSON is collapsed');
  assert.ok(JSON.parse(await page.textContent('#selftest-result')).error);
  await page.screenshot({ path: join(ARTIFACTS, 'first-visit-selftest-no-webgpu.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
