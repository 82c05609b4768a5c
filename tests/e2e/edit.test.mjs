// Image editing in the page (issue #7): SDEdit from a painted-on result, RePaint inpainting of a
// painted mask, and 2× super-resolution with the shipped emoji-sr model. Each run is checked on
// its pixels, not only on its completion, and leaves a screenshot in tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS, pixels } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

async function run(page, frames) {
  await page.click('#generate');
  await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"], #panic', { timeout: 600_000 });
  if (await page.locator('#panic').count()) assert.fail(await page.textContent('#panic'));
  if (await page.getAttribute('#run-status', 'data-state') === 'error') {
    assert.fail(`the run failed: ${await page.textContent('#run-error')}`);
  }
  if (frames !== undefined) {
    assert.equal(Number(await page.getAttribute('#run-status', 'data-frames')), frames);
  }
}

// A stroke across the edit canvas, in fractions of its size.
async function stroke(page, from, to) {
  await page.locator('.edit-stack').scrollIntoViewIfNeeded();
  const box = await page.locator('.edit-stack').boundingBox();
  const at = ([fx, fy]) => [box.x + fx * box.width, box.y + fy * box.height];
  await page.mouse.move(...at(from));
  await page.mouse.down();
  await page.mouse.move(...at(to), { steps: 8 });
  await page.mouse.up();
}

const meanAbs = (a, b) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;

async function start(query) {
  const { page, errors } = await openPage(browser, `${srv.base}/?${query}`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  return { page, errors };
}

test('SDEdit: strength 0 returns the picture, 0.5 keeps its layout and runs half the steps', { timeout: 900_000 }, async () => {
  const { page, errors } = await start('model=emoji&sampler=ddim&steps=4&eta=0&seed=3&batch=1');
  await run(page, 5);
  await page.selectOption('#mode', 'sdedit');
  assert.equal((await page.textContent('#generate')).trim(), 'Edit');
  await page.click('#edit-use-result');
  const result = await pixels(page, 'xt');
  const taken = await pixels(page, 'edit-picture');
  assert.deepEqual(taken.data, result.data, 'Use the result copies the picture');
  // The brush paints on the picture.
  await page.click('#brush-picture');
  await stroke(page, [0.1, 0.5], [0.9, 0.5]);
  const painted = await pixels(page, 'edit-picture');
  assert.ok(meanAbs(painted.data, taken.data) > 1, `the brush stroke changed the picture (${meanAbs(painted.data, taken.data)})`);

  await page.fill('#steps', '10');
  await page.fill('#strength', '0');
  await run(page, 1);
  assert.deepEqual((await pixels(page, 'xt')).data, painted.data, 'strength 0 returns the input');

  await page.fill('#strength', '0.5');
  await run(page, 6);  // int(10 · 0.5) = 5 steps after x_T
  const edited = await pixels(page, 'xt');
  assert.notDeepEqual(edited.data, painted.data);
  // Closer to its input than a fresh sample from noise is.
  await page.screenshot({ path: join(ARTIFACTS, 'edit-sdedit.png'), fullPage: true });
  await page.selectOption('#mode', 'generate');
  await page.fill('#seed', '77');
  await page.dispatchEvent('#seed', 'change');
  await run(page, 11);
  const fresh = await pixels(page, 'xt');
  const dEdit = meanAbs(edited.data, painted.data), dFresh = meanAbs(fresh.data, painted.data);
  assert.ok(dEdit < dFresh, `SDEdit at 0.5 should stay nearer its input (${dEdit}) than a new sample (${dFresh})`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('inpainting regenerates the mask only: the rest stays pixel-exact', { timeout: 900_000 }, async () => {
  const { page, errors } = await start('model=fashion&sampler=ddim&steps=4&eta=1&seed=4&batch=1&class=7');
  await run(page, 5);
  await page.selectOption('#mode', 'inpaint');
  await page.click('#edit-use-result');
  const before = await pixels(page, 'edit-picture');
  // Without a mask the run refuses, in words.
  await page.click('#edit-clear-mask');
  await page.click('#generate');
  assert.match(await page.textContent('#run-error'), /Paint the region to regenerate/);
  await page.click('#brush-mask');
  await page.fill('#brush-size', '4');
  await stroke(page, [0.2, 0.3], [0.8, 0.3]);
  await stroke(page, [0.2, 0.45], [0.8, 0.45]);
  const mask = await pixels(page, 'edit-mask');
  const masked = (p) => mask.data[p * 4 + 3] > 0;
  const n = mask.w * mask.h;
  const count = Array.from({ length: n }, (_, p) => masked(p)).filter(Boolean).length;
  assert.ok(count > 40 && count < n / 2, `mask covers ${count} of ${n} pixels`);
  await page.fill('#steps', '8');
  await page.fill('#resample', '2');
  await run(page, 9);
  const after = await pixels(page, 'xt');
  let keptDiff = 0, maskDiff = 0;
  for (let p = 0; p < n; p++) {
    const d = Math.abs(after.data[p * 4] - before.data[p * 4]);
    if (masked(p)) maskDiff += d; else keptDiff += d;
  }
  assert.equal(keptDiff, 0, 'the unmasked region must be the original, pixel for pixel');
  assert.ok(maskDiff / count > 2, `the masked region was regenerated (mean change ${maskDiff / count})`);
  await page.screenshot({ path: join(ARTIFACTS, 'edit-inpaint.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('upscaling: 32×32 to 64×64 with emoji-sr, consistent with its input', { timeout: 900_000 }, async () => {
  const { page, errors } = await start('model=emoji&sampler=ddim&steps=4&eta=0&seed=8&batch=1');
  await run(page, 5);
  await page.selectOption('#mode', 'upscale');
  await page.click('#edit-use-result');
  const low = await pixels(page, 'edit-picture');
  assert.deepEqual([low.w, low.h], [32, 32]);
  await page.fill('#steps', '4');
  await run(page, 5);
  const high = await pixels(page, 'xt');
  assert.deepEqual([high.w, high.h], [64, 64]);
  // Every 2×2 block averages to its input pixel (the consistency step), up to 8-bit rounding
  // and the final clamp to [0, 255].
  let worst = 0;
  for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) for (let c = 0; c < 3; c++) {
    let sum = 0;
    for (const [dy, dx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) sum += high.data[((2 * y + dy) * 64 + 2 * x + dx) * 4 + c];
    const v = low.data[(y * 32 + x) * 4 + c];
    if (v > 4 && v < 251) worst = Math.max(worst, Math.abs(sum / 4 - v));
  }
  assert.ok(worst <= 2, `a 2×2 block of the upscale differs from its input pixel by ${worst}`);
  await page.screenshot({ path: join(ARTIFACTS, 'edit-upscale.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
