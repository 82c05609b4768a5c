// Latent diffusion in the page (issue #6): the shipped emoji-latent model generates; each step
// shows the latent channels of x_t as panels beside the VAE-decoded x̂0; the decode cadence is
// stated; the latent-vs-pixel timing panel measures both models on this device.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

async function pixels(page, id) {
  return page.evaluate((sel) => {
    const c = document.querySelector(sel);
    return { w: c.width, h: c.height, data: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data) };
  }, `#${id}`);
}

test('the latent model shows latent panels and a decoded image, and times latent vs pixel', { timeout: 900_000 }, async () => {
  const steps = 6;
  const { page, errors } = await openPage(browser, `${srv.base}/?model=emoji-latent&sampler=ddim&steps=${steps}&eta=0&seed=5&batch=1`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /latent model: 3×64×64 images from 4×16×16/);
  await page.click('#generate');
  await page.waitForSelector('#run-status[data-state="done"]', { timeout: 600_000 });
  assert.equal(Number(await page.getAttribute('#run-status', 'data-frames')), steps + 1);
  // x_t: 4 latent channels of 16×16 side by side with 1-pixel gaps.
  const xt = await pixels(page, 'xt');
  assert.deepEqual([xt.w, xt.h], [4 * 16 + 3, 16]);
  // x̂0: the decoded 64×64 image, not blank (some spread of values).
  const x0 = await pixels(page, 'x0');
  assert.deepEqual([x0.w, x0.h], [64, 64]);
  const red = x0.data.filter((_, i) => i % 4 === 0);
  const mean = red.reduce((a, b) => a + b, 0) / red.length;
  const std = Math.sqrt(red.reduce((a, b) => a + (b - mean) ** 2, 0) / red.length);
  assert.ok(std > 3, `decoded image is blank (std ${std})`);
  assert.match(await page.textContent('#decode-note'), /decoded (at every step|every \d+ steps)/);
  await page.screenshot({ path: join(ARTIFACTS, 'latent-done.png'), fullPage: true });
  // The timing panel: both models measured on this device, and the one-line reason.
  await page.click('#measure-speed');
  await page.waitForSelector('#speed-why', { timeout: 600_000 });
  assert.match(await page.textContent('#speed-table'), /pixel UNet on 3×64×64/);
  assert.match(await page.textContent('#speed-why'), /Latent diffusion is [\d.]+× faster per image here: its UNet works on 4×16×16 latents, 16× fewer positions/);
  await page.screenshot({ path: join(ARTIFACTS, 'latent-speed.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
