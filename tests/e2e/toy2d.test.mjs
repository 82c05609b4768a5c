// The "Paths" view (src/app/toy2d.rs): runs the exact-score mixture and the trained two-moons MLP
// in the page and checks that the canvas drew the particles (in the run's colour), the ODE vs SDE
// overlay (both colours), and that scrubbing to step 0 shows the noise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS, pixels, waitIn } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

const ODE = [122, 162, 255]; // #7aa2ff
const SDE = [255, 179, 107]; // #ffb36b

/// Pixels within a small distance of `rgb` (particles are drawn opaque in their colour).
function count(px, rgb) {
  let n = 0;
  for (let i = 0; i < px.data.length; i += 4) {
    const d = Math.abs(px.data[i] - rgb[0]) + Math.abs(px.data[i + 1] - rgb[1]) + Math.abs(px.data[i + 2] - rgb[2]);
    if (d < 30) n++;
  }
  return n;
}

async function runAndWait(page, previous) {
  await page.click('#toy2d-run');
  // The status line changes when the run has finished (it names the run's timing).
  return waitIn(page, `() => { const s = document.querySelector('#toy2d-status')?.textContent ?? '';
    const e = document.querySelector('#toy2d-error'); if (e) return 'error: ' + e.textContent;
    return s && s !== ${JSON.stringify(previous)} ? s : false; }`, 60_000);
}

test('paths: mixture, ODE vs SDE, and the trained moons', { timeout: 180_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/?backend=cpu`);
  await page.waitForSelector('#toy2d #toy2d-run:not([disabled])', { timeout: 60_000 });
  await page.locator('#toy2d').scrollIntoViewIfNeeded();
  assert.equal(await page.textContent('#toy2d h2'), 'Paths: samplers in 2D');
  assert.equal(await page.inputValue('#toy2d-dist'), 'mixture');
  await page.fill('#toy2d-steps', '20');
  await page.dispatchEvent('#toy2d-steps', 'change');
  await page.fill('#toy2d-particles', '300');
  await page.dispatchEvent('#toy2d-particles', 'change');
  await page.selectOption('#toy2d-sampler', 'ddim');

  const s1 = await runAndWait(page, '');
  assert.ok(!s1.startsWith('error'), s1);
  assert.match(s1, /300 particles, 20 steps/);
  // Let the autoplay reach the end, then check the drawing.
  await page.click('#toy2d-play'); // pause
  await page.fill('#toy2d-step', '20');
  await page.dispatchEvent('#toy2d-step', 'input');
  assert.equal(await page.getAttribute('#toy2d-canvas', 'data-drawn'), '300');
  const px = await pixels(page, 'toy2d-canvas');
  assert.ok(px.w >= 64 && px.w === px.h, `canvas ${px.w}×${px.h}`);
  const blue = count(px, ODE);
  assert.ok(blue > 300, `only ${blue} particle-coloured pixels`);
  assert.match(await page.textContent('#toy2d-frame'), /end: the samples/);
  await page.screenshot({ path: join(ARTIFACTS, 'toy2d-mixture.png') });

  // ODE vs SDE: two runs from the same noise, two colours, a legend naming both.
  await page.check('#toy2d-ode-sde');
  const s2 = await runAndWait(page, s1);
  assert.ok(!s2.startsWith('error'), s2);
  await page.click('#toy2d-play');
  await page.fill('#toy2d-step', '20');
  await page.dispatchEvent('#toy2d-step', 'input');
  assert.equal(await page.getAttribute('#toy2d-canvas', 'data-drawn'), '600');
  const legend = await page.textContent('#toy2d-legend');
  assert.match(legend, /DDIM η = 0 \(ODE\)/);
  assert.match(legend, /DDPM \(SDE\)/);
  const both = await pixels(page, 'toy2d-canvas');
  assert.ok(count(both, ODE) > 200 && count(both, SDE) > 200, `ODE ${count(both, ODE)}, SDE ${count(both, SDE)}`);
  await page.screenshot({ path: join(ARTIFACTS, 'toy2d-ode-sde.png') });
  // At step 0 both start from the same points: SDE is drawn last, so it covers the ODE dots.
  await page.fill('#toy2d-step', '0');
  await page.dispatchEvent('#toy2d-step', 'input');
  const start = await pixels(page, 'toy2d-canvas');
  assert.ok(count(start, ODE) < count(start, SDE) / 4, `start: ODE ${count(start, ODE)}, SDE ${count(start, SDE)}`);

  // The trained two-moons MLP, fetched from toy2d/moons/.
  await page.uncheck('#toy2d-ode-sde');
  await page.selectOption('#toy2d-dist', 'moons');
  const s3 = await runAndWait(page, s2);
  assert.ok(!s3.startsWith('error'), s3);
  const dist = Number(/ddim, η = 0 ([0-9]+\.[0-9]+)/.exec(s3)?.[1]);
  assert.ok(dist < 0.05, `moons: mean distance to the data ${dist} (${s3})`);
  assert.deepEqual(errors.filter((e) => /toy2d|panicked/i.test(e)), []);
});
