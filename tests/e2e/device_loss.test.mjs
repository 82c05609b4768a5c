// The GPU going away (issue #9): the device is destroyed (`device.destroy()`, through the
// `?debug=gpu` hook) after a run; the next run fails with a message that says so, the page sets
// up a new device by itself (no reload), keeps the settings and the previous frames, and the
// run after that completes with the same result as before the loss. The second test loses the
// device in the middle of a run: the message says so, the frames drawn so far stay on screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS, pixels } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

async function settle(page) {
  await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"], #panic', { timeout: 300_000 });
  assert.equal(await page.locator('#panic').count(), 0, 'no panic');
  return page.getAttribute('#run-status', 'data-state');
}

test('a lost GPU device is reported and replaced without a reload', { timeout: 600_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/?debug=gpu&model=fashion&sampler=ddim&steps=3&eta=0&seed=9&batch=1&class=3`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  assert.match(await page.textContent('#adapter'), /^GPU/);
  await page.click('#generate');
  assert.equal(await settle(page), 'done');
  const hash = await page.getAttribute('#run-status', 'data-hash');

  assert.equal(await page.evaluate(() => window.stepwiseLoseDevice()), true);
  await page.click('#generate');
  assert.equal(await settle(page), 'error');
  await page.waitForFunction(() => /Now running on/.test(document.querySelector('#run-error')?.textContent ?? ''), null, { timeout: 120_000 });
  const msg = await page.textContent('#run-error');
  assert.match(msg, /GPU device was lost/);
  await page.screenshot({ path: join(ARTIFACTS, 'device-lost.png'), fullPage: true });
  // Settings kept; the model is loaded again on the new device.
  assert.equal(await page.inputValue('#steps'), '3');
  assert.equal(await page.inputValue('#seed'), '9');
  await page.waitForFunction(() => !/loading/.test(document.querySelector('#model-status').textContent), null, { timeout: 120_000 });
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  await page.click('#generate');
  assert.equal(await settle(page), 'done');
  assert.equal(await page.getAttribute('#run-status', 'data-hash'), hash, 'same seed, same result on the new device');
  assert.equal(await page.locator('#run-error').count(), 0);
  // Expected console noise from the destroyed device only.
  assert.deepEqual(errors.filter((e) => !/destroyed|lost|Device|GPU/i.test(e)), []);
  await page.close();
});

test('a GPU device lost in the middle of a run: a clear message, the frames so far kept, the next run works', { timeout: 900_000 }, async () => {
  const steps = 12;
  const { page, errors } = await openPage(browser, `${srv.base}/?debug=gpu&model=fashion&sampler=ddim&steps=${steps}&eta=0&seed=4&batch=1&class=7`);
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  assert.match(await page.textContent('#adapter'), /^GPU/);
  // A clean run first: the result the run after the loss must reproduce.
  await page.click('#generate');
  assert.equal(await settle(page), 'done');
  const hash = await page.getAttribute('#run-status', 'data-hash');

  await page.click('#generate');
  await page.waitForFunction(() => Number(document.querySelector('#run-status').dataset.frames) >= 3, null, { timeout: 300_000 });
  assert.equal(await page.getAttribute('#run-status', 'data-state'), 'running', 'the run is still going when the device goes');
  assert.equal(await page.evaluate(() => window.stepwiseLoseDevice()), true);
  assert.equal(await settle(page), 'error');
  await page.waitForFunction(() => /Now running on/.test(document.querySelector('#run-error')?.textContent ?? ''), null, { timeout: 120_000 });
  const msg = await page.textContent('#run-error');
  assert.match(msg, /The GPU device was lost \(.+\) during the run; the frames so far are kept\. Now running on /);
  // The frames drawn before the loss stay: more than x_T, fewer than the whole run, and the
  // picture on screen is one of them (not blank).
  const kept = Number(await page.getAttribute('#run-status', 'data-frames'));
  assert.ok(kept >= 3 && kept < steps + 1, `${kept} frames kept`);
  const shown = await pixels(page, 'xt');
  const values = new Set();
  for (let i = 0; i < shown.data.length; i += 4) values.add(shown.data[i]);
  assert.ok(values.size > 8, `the kept frame on screen has ${values.size} distinct values`);
  await page.screenshot({ path: join(ARTIFACTS, 'device-lost-mid-run.png'), fullPage: true });
  assert.equal(await page.inputValue('#steps'), String(steps));
  assert.equal(await page.inputValue('#seed'), '4');
  // The next run, on the new device (or the CPU backend if none came), completes as before.
  await page.waitForFunction(() => !/loading/.test(document.querySelector('#model-status').textContent), null, { timeout: 120_000 });
  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  await page.click('#generate');
  assert.equal(await settle(page), 'done');
  assert.equal(Number(await page.getAttribute('#run-status', 'data-frames')), steps + 1);
  assert.equal(await page.getAttribute('#run-status', 'data-hash'), hash, 'same seed, same result after the loss');
  assert.equal(await page.locator('#run-error').count(), 0);
  assert.deepEqual(errors.filter((e) => !/destroyed|lost|Device|GPU/i.test(e)), []);
  await page.close();
});
