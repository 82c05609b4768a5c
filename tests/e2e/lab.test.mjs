// The sampler lab (src/app/lab.rs) as a user drives it on the shipped Fashion-MNIST model: a
// small sweep draws one line per sampler, DDIM η=0's distance to the reference falls with every
// step count, the grid replays a run in the main view, and the η sweep shows DDIM at η=1 landing
// on DDPM's image.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS, waitIn } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

async function setValue(page, sel, value) {
  await page.fill(sel, String(value));
  await page.dispatchEvent(sel, 'change');
}

async function waitDone(page, status) {
  return waitIn(page, `() => { const s = document.querySelector(${JSON.stringify(status)});
    const e = document.querySelector('#lab .error'); if (e) return 'error: ' + e.textContent;
    return s?.dataset.state === 'done' ? 'done' : false; }`, 300_000);
}

test('lab: convergence sweep, grid replay, η sweep', { timeout: 600_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/?model=fashion&backend=cpu&seed=5&class=2`);
  await page.waitForSelector('#lab-run:not([disabled])', { timeout: 120_000 });
  await page.locator('#lab').scrollIntoViewIfNeeded();
  // Before a run the plot invites one and the grid does not exist.
  assert.match(await page.textContent('#lab-plot'), /Run the sweep/);
  assert.equal(await page.$('#lab-grid'), null);

  // ddim, ddpm and dpm++2m only.
  for (const box of await page.$$('.lab-samplers input[type=checkbox]')) {
    const name = await box.getAttribute('data-sampler');
    const want = ['ddim', 'ddpm', 'dpm++2m'].includes(name);
    if ((await box.isChecked()) !== want) await box.click();
  }
  await setValue(page, '#lab-steps', '4, 8,16,32');
  await setValue(page, '#lab-ref-steps', 200);
  await setValue(page, '#lab-paths-n', 2);
  await page.click('#lab-run');
  assert.equal(await waitDone(page, '#lab-status'), 'done');

  const lines = await page.$$eval('#lab-plot polyline.lab-line', (ls) => ls.map((l) => ({
    sampler: l.dataset.sampler,
    ys: l.getAttribute('points').trim().split(/\s+/).map((p) => Number(p.split(',')[1])),
  })));
  assert.deepEqual(lines.map((l) => l.sampler).sort(), ['ddim', 'ddpm', 'dpm++2m']);
  for (const l of lines) assert.equal(l.ys.length, 4, `${l.sampler}: ${l.ys}`);
  // SVG y grows downwards: a falling error is a rising y at every step count.
  const ddim = lines.find((l) => l.sampler === 'ddim').ys;
  for (let i = 1; i < ddim.length; i++) assert.ok(ddim[i] > ddim[i - 1], `DDIM η=0 error did not fall: y ${ddim}`);
  // DDPM runs two noise paths: its dots outnumber its step counts, and it has range bars.
  assert.equal(await page.$$eval('#lab-plot circle.lab-dot', (d) => d.length), 4 + 8 + 4);
  assert.ok(await page.$$eval('#lab-plot line.lab-range', (d) => d.length) >= 1);
  // The grid: one row per sampler, one cell per step count (path 0), each image drawn.
  assert.equal(await page.$$eval('#lab-grid .lab-cell', (c) => c.length), 12);
  // The PCA paths: the reference and the three runs at the step count nearest 20 (16).
  assert.equal(await page.$$eval('#lab-paths .lab-path-xt', (p) => p.length), 4);
  await page.screenshot({ path: join(ARTIFACTS, 'lab-sweep.png'), fullPage: true });

  // A grid cell replays its run in the main view with its settings.
  await page.click('#lab-grid .lab-cell[data-sampler="dpm++2m"][data-steps="8"]');
  await page.waitForSelector('#run-status[data-state="done"]', { timeout: 120_000 });
  assert.equal(await page.inputValue('#sampler'), 'dpm++2m');
  assert.equal(await page.getAttribute('#run-status', 'data-frames'), '9');

  // η sweep at 10 steps: the distance to DDPM shrinks to (almost) nothing at η = 1.
  await setValue(page, '#lab-eta-steps', 10);
  await page.click('#lab-eta-run');
  await waitIn(page, `() => document.querySelectorAll('#lab-eta-row .lab-eta-cell').length === 6
    && document.querySelector('#lab-status').dataset.state === 'done'`, 120_000);
  const eta = await page.$$eval('#lab-eta-row .lab-eta-cell[data-eta] figcaption',
    (f) => f.map((x) => Number(x.textContent.split('·')[1])));
  assert.equal(eta.length, 5);
  assert.ok(eta[4] < 0.01 && eta[4] < eta[0] / 5, `η sweep distances to DDPM: ${eta}`);
  assert.deepEqual(errors, []);
});
