// Latent diffusion in the page (issue #6): the shipped emoji-latent model generates; each step
// shows the latent channels of x_t as panels beside the VAE-decoded x̂0; the decode cadence is
// stated; the latent-vs-pixel timing panel measures both models on this device.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS, pixels } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

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

test('a latent model inpaints in latent space: the mask is regenerated, the rest kept', { timeout: 900_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/?model=emoji-latent&sampler=ddim&steps=3&eta=0&seed=2&batch=1`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  const done = async () => {
    await page.click('#generate');
    await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"], #panic', { timeout: 600_000 });
    if (await page.locator('#panic').count()) assert.fail(await page.textContent('#panic'));
    assert.equal(await page.getAttribute('#run-status', 'data-state'), 'done', await page.textContent('#run-status'));
  };
  await done();
  await page.selectOption('#mode', 'inpaint');
  await page.click('#edit-use-result');
  const before = await pixels(page, 'edit-picture');
  assert.deepEqual([before.w, before.h], [64, 64], 'the picture is the decoded image size');
  await page.click('#brush-mask');
  await page.fill('#brush-size', '8');
  await page.locator('.edit-stack').scrollIntoViewIfNeeded();
  const box = await page.locator('.edit-stack').boundingBox();
  await page.mouse.move(box.x + 0.15 * box.width, box.y + 0.3 * box.height);
  await page.mouse.down();
  await page.mouse.move(box.x + 0.85 * box.width, box.y + 0.3 * box.height, { steps: 10 });
  await page.mouse.up();
  const mask = await pixels(page, 'edit-mask');
  await page.fill('#steps', '4');
  await done();
  // x̂0 at the end is the decoded final latents: 64×64.
  const after = await pixels(page, 'x0');
  assert.deepEqual([after.w, after.h], [64, 64]);
  let kept = 0, nk = 0, redrawn = 0, nr = 0;
  for (let p = 0; p < 64 * 64; p++) {
    const d = [0, 1, 2].reduce((s, c) => s + Math.abs(after.data[p * 4 + c] - before.data[p * 4 + c]), 0) / 3;
    // Latent pixels are 4×4 image pixels: compare away from the mask's block edges.
    const masked = mask.data[p * 4 + 3] > 0;
    if (masked) { redrawn += d; nr++; } else { kept += d; nk++; }
  }
  assert.ok(nr > 100, `mask covers ${nr} pixels`);
  assert.ok(kept / nk < redrawn / nr, `the kept region (mean change ${kept / nk}) should change less than the redrawn one (${redrawn / nr})`);
  assert.ok(kept / nk < 25, `the kept region is only re-encoded and decoded (mean change ${kept / nk})`);
  await page.screenshot({ path: join(ARTIFACTS, 'latent-inpaint.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
