// The app's exports (step strip, animated GIF), the history's memory cap, opening a model from
// the user's own files (picked folder, broken and hostile files), the forward view's shipped
// examples and uploads, the compare settings in the URL and the adapter line, in headless
// Chromium with WebGPU on SwiftShader. Screenshots and downloads land in tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, openPage, ARTIFACTS, pixels } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

const CLASS_MODEL = '/fixtures/unet/class_scale_shift'; // pipeline folder, 1×16×16, 11 class embeds
const RUN_TIMEOUT = 360_000;
const appUrl = (params) => `${srv.base}/?${new URLSearchParams(params)}`;

async function waitDone(page) {
  await page.waitForSelector('#run-status[data-state="running"], #run-status[data-state="done"]', { timeout: 30_000 });
  await page.waitForSelector('#run-status[data-state="done"]', { timeout: RUN_TIMEOUT });
}

async function generate(params) {
  const { page, errors } = await openPage(browser, appUrl(params));
  await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  await page.click('#generate');
  await waitDone(page);
  return { page, errors };
}

function std(data) {
  const v = data.filter((_, i) => i % 4 === 0);
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
}

async function download(page, selector, name) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  const path = join(ARTIFACTS, name);
  await d.saveAs(path);
  return { file: d.suggestedFilename(), bytes: await readFile(path) };
}

test('step strip and animated GIF of a run', { timeout: RUN_TIMEOUT + 60_000 }, async () => {
  const steps = 5;
  const { page, errors } = await generate({ model_url: CLASS_MODEL, sampler: 'ddim', steps, seed: 5, class: 1, batch: 1 });
  // The strip: 6 frames (x_T and 5 steps, fewer than 10), x_t over x̂0, 16 px scaled by 6 to 96
  // with 12-pixel gaps.
  const strip = await download(page, '#download-strip', 'export-strip.png');
  assert.match(strip.file, /^stepwise-url-ddim-5steps-seed5-strip\.png$/);
  assert.deepEqual([...strip.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(strip.bytes.readUInt32BE(16), 6 * (96 + 12) + 12);
  assert.equal(strip.bytes.readUInt32BE(20), 2 * (96 + 12) + 12);
  // The GIF: x_t beside x̂0 (16 + 16 + three 2-px gaps = 38 × 20), scaled by 16, one frame per
  // step plus x_T, looping.
  const gif = await download(page, '#download-gif', 'export-run.gif');
  assert.match(gif.file, /^stepwise-url-ddim-5steps-seed5\.gif$/);
  assert.equal(gif.bytes.toString('latin1', 0, 6), 'GIF89a');
  assert.deepEqual([gif.bytes.readUInt16LE(6), gif.bytes.readUInt16LE(8)], [38 * 16, 20 * 16]);
  assert.ok(gif.bytes.includes(Buffer.from('NETSCAPE2.0')), 'loops');
  const frames = gif.bytes.toString('latin1').split('\x21\xf9\x04').length - 1;
  assert.equal(frames, steps + 1, 'one graphic control block per frame');
  // The browser decodes it: draw its first frame and check it is not blank.
  const first = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/gif;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
  }, gif.bytes.toString('base64'));
  assert.ok(std(first) > 20, 'the GIF shows the noise and the frame');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a long run keeps its history under the memory cap and says so', { timeout: RUN_TIMEOUT + 60_000 }, async () => {
  // 16×16 grey frames: 2 KiB per frame (x_t and x̂0). A 20 kB budget holds ~9 of 21.
  const steps = 20;
  const { page, errors } = await generate({ model_url: CLASS_MODEL, sampler: 'ddim', steps, seed: 3, class: 2, batch: 1, history_mb: 0.02 });
  const kept = Number(await page.getAttribute('#run-status', 'data-frames'));
  assert.ok(kept >= 2 && kept * 2048 <= 20_000, `kept ${kept} frames`);
  assert.match(await page.textContent('#history-note'), /every 4th step/);
  assert.match(await page.textContent('#step'), new RegExp(`^${steps} / ${steps}$`));
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press('Home');
  assert.match(await page.textContent('#step'), /x_T/, 'x_T is kept');
  await page.keyboard.press('ArrowRight');
  assert.match(await page.textContent('#step'), /^4 \/ 20$/, 'then every 4th step');
  await page.screenshot({ path: join(ARTIFACTS, 'app-history-cap.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('compare settings round-trip through the URL; the adapter is named', { timeout: 120_000 }, async () => {
  const params = { model_url: CLASS_MODEL, a_sampler: 'euler-a', a_steps: 7, b_sampler: 'dpm++2m', b_steps: 3 };
  const { page, errors } = await openPage(browser, appUrl(params));
  await page.waitForSelector('#compare-run:not([disabled])', { timeout: 60_000 });
  assert.equal(await page.inputValue('#cmp-a-sampler'), 'euler-a');
  assert.equal(await page.inputValue('#cmp-a-steps'), '7');
  assert.equal(await page.inputValue('#cmp-b-sampler'), 'dpm++2m');
  assert.equal(await page.inputValue('#cmp-b-steps'), '3');
  await page.selectOption('#cmp-b-sampler', 'ddpm');
  await page.fill('#cmp-a-steps', '12');
  await page.press('#cmp-a-steps', 'Enter');
  await page.waitForFunction(() => new URL(location.href).searchParams.get('a_steps') === '12');
  const q = new URL(page.url()).searchParams;
  assert.equal(q.get('b_sampler'), 'ddpm');
  const again = await browser.newPage();
  await again.goto(page.url());
  await again.waitForSelector('#compare-run:not([disabled])', { timeout: 60_000 });
  assert.equal(await again.inputValue('#cmp-a-steps'), '12');
  assert.equal(await again.inputValue('#cmp-b-sampler'), 'ddpm');
  // The adapter line names something beyond the backend, even on SwiftShader (whose wgpu adapter
  // name is empty).
  const adapter = await page.textContent('#adapter');
  console.log(`adapter: ${adapter}`);
  assert.match(adapter, /^GPU: \S/);
  assert.doesNotMatch(adapter, /^GPU: \(|unnamed/);
  assert.deepEqual(errors, []);
  await page.close();
  await again.close();
});

test('open your own model: a picked folder runs; broken and hostile files say why', { timeout: RUN_TIMEOUT + 120_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ sampler: 'ddim', steps: 3, seed: 1, class: 1, guidance: 1, batch: 1 }));
  await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  await page.setInputFiles('#model-files', join(ROOT, 'tests/fixtures/unet/class_scale_shift'));
  await page.waitForFunction(() => /1×16×16, 10 classes/.test(document.querySelector('#model-status').textContent), null, { timeout: 60_000 });
  assert.equal(await page.inputValue('#model'), 'files');
  assert.match(await page.textContent('#model'), /class_scale_shift \(your files\)/);
  await page.click('#generate');
  await waitDone(page);
  assert.equal(Number(await page.getAttribute('#run-status', 'data-frames')), 4);
  await page.screenshot({ path: join(ARTIFACTS, 'app-open-own.png'), fullPage: true });

  // A latent pipeline folder (vae/ beside unet/) opens the same way.
  await page.setInputFiles('#model-files', join(ROOT, 'tests/fixtures/latent_pipeline'));
  await page.waitForFunction(() => /latent model/.test(document.querySelector('#model-status').textContent), null, { timeout: 60_000 });
  assert.match(await page.textContent('#model'), /latent_pipeline \(your files\)/);

  // Dropped files: a bare UNet folder's two files, dragged onto the drop zone.
  await page.evaluate(async () => {
    const dt = new DataTransfer();
    for (const name of ['config.json', 'diffusion_pytorch_model.safetensors']) {
      const blob = await (await fetch(`/fixtures/unet/attn_multihead/${name}`)).blob();
      dt.items.add(new File([blob], name));
    }
    document.querySelector('#model-drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction(() => /3×16×16/.test(document.querySelector('#model-status').textContent), null, { timeout: 60_000 });
  assert.match(await page.textContent('#model'), /your files/);

  // Broken: a config with truncated weights, a folder with no model, a lying safetensors header.
  const config = await readFile(join(ROOT, 'tests/fixtures/unet/class_scale_shift/unet/config.json'));
  const weights = await readFile(join(ROOT, 'tests/fixtures/unet/class_scale_shift/unet/diffusion_pytorch_model.safetensors'));
  const lying = Buffer.alloc(16);
  lying.writeBigUInt64LE(1n << 40n); // a header "1 TB long" in a 16-byte file
  const cases = [
    [[{ name: 'config.json', buffer: config }, { name: 'diffusion_pytorch_model.safetensors', buffer: weights.subarray(0, weights.length >> 1) }], /Could not open your model “case0”.*safetensors/s],
    [[{ name: 'README.md', buffer: Buffer.from('# not a model') }], /Could not open your model.*not a diffusers model folder/s],
    [[{ name: 'config.json', buffer: config }, { name: 'diffusion_pytorch_model.safetensors', buffer: lying }], /Could not open your model.*safetensors/s],
    [[{ name: 'config.json', buffer: Buffer.from('{"sample_size": ') }, { name: 'diffusion_pytorch_model.safetensors', buffer: weights }], /Could not open your model.*config\.json/s],
  ];
  // A folder input takes folders only: write each case into its own (read by the page later).
  const tmp = await mkdtemp(join(tmpdir(), 'stepwise-broken-'));
  for (const [i, [files, want]] of cases.entries()) {
    await mkdir(join(tmp, `case${i}`));
    for (const f of files) await writeFile(join(tmp, `case${i}`, f.name), f.buffer);
    await page.setInputFiles('#model-files', join(tmp, `case${i}`));
    await page.waitForSelector('#model-error', { timeout: 60_000 });
    const msg = await page.textContent('#model-error');
    console.log(`broken case ${i}: ${msg}`);
    assert.match(msg, want);
    if (i === 0) await page.screenshot({ path: join(ARTIFACTS, 'app-open-own-error.png'), fullPage: true });
    assert.ok(await page.isDisabled('#generate'));
    // Back to a good folder, so the next case's error is fresh.
    await page.setInputFiles('#model-files', join(ROOT, 'tests/fixtures/unet/class_scale_shift'));
    await page.waitForFunction(() => !document.querySelector('#model-error') && /10 classes/.test(document.querySelector('#model-status').textContent), null, { timeout: 60_000 });
  }
  await rm(tmp, { recursive: true });
  assert.deepEqual(errors.filter((e) => /panic|unreachable|RuntimeError/i.test(e)), [], 'no panics');
  assert.deepEqual(errors, []);
  await page.close();
});

test('the forward view adds noise to a shipped example or an uploaded image', { timeout: 180_000 }, async () => {
  // The shipped fashion model: 1×32×32, the examples' own size.
  const { page, errors } = await openPage(browser, appUrl({ model: 'fashion' }));
  await page.waitForSelector('#generate:not([disabled])', { timeout: 60_000 });
  await page.waitForSelector('#forward-source option[value="ex:0"]', { state: 'attached' });
  const options = await page.$$eval('#forward-source option', (o) => o.map((x) => x.textContent));
  assert.ok(options.length >= 7, `examples listed: ${options}`);
  const setT = (v) => page.evaluate((v) => {
    const r = document.querySelector('#forward-t');
    r.value = v === 'max' ? r.max : String(v);
    r.dispatchEvent(new Event('input', { bubbles: true }));
  }, v);
  await page.selectOption('#forward-source', 'ex:0');
  await setT(0);
  await page.waitForFunction(() => document.querySelector('#forward').width === 32);
  // t = 0 is the example itself (√(1 − ᾱ_0) ≈ 0.01: a grey level of noise at most).
  const png = await page.evaluate(async () => {
    const img = new Image();
    img.src = 'examples/fashion-tshirt.png';
    await img.decode();
    const c = document.createElement('canvas');
    [c.width, c.height] = [32, 32];
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return Array.from(ctx.getImageData(0, 0, 32, 32).data);
  });
  const atZero = await pixels(page, 'forward');
  assert.ok(atZero.data.every((v, i) => Math.abs(v - png[i]) <= 8), 'q(x_0 | x_0) is the example');
  await setT(300);
  await page.locator('#forward').scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(ARTIFACTS, 'app-forward-example.png'), fullPage: true });
  // An uploaded RGB image on the one-channel model: resized to 32×32 and made grey.
  await page.setInputFiles('#forward-upload', join(ROOT, 'assets/examples/emoji-apple.png'));
  await page.waitForFunction(() => document.querySelector('#forward-source').value === 'upload');
  await setT(0);
  await page.waitForFunction(() => {
    const c = document.querySelector('#forward');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return d[0] > 200; // the apple's white corner, not the t-shirt's black one
  });
  const up = await pixels(page, 'forward');
  assert.deepEqual([up.w, up.h], [32, 32]);
  assert.ok(up.data.every((v, i) => i % 4 === 3 || Math.abs(v - up.data[i - (i % 4)]) === 0), 'grey');
  assert.ok(std(up.data) > 20, 'an image, not a flat field');
  await setT(200);
  await page.screenshot({ path: join(ARTIFACTS, 'app-forward-upload.png'), fullPage: true });
  // Not an image: a clear message.
  await page.setInputFiles('#forward-upload', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not a png') });
  await page.waitForSelector('#forward-error');
  assert.match(await page.textContent('#forward-error'), /could not decode/);
  assert.deepEqual(errors, []);
  await page.close();
});
