// The GPU going away (issue #9): the device is destroyed (`device.destroy()`, through the
// `?debug=gpu` hook) after a run; the next run fails with a message that says so, the page sets
// up a new device by itself (no reload), keeps the settings and the previous frames, and the
// run after that completes with the same result as before the loss.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS } from './harness.mjs';

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
