// The engine in the browser: every GPU kernel against the CPU reference and the golden UNet
// fixtures, on headless Chromium's WebGPU (SwiftShader), through the app's ?selftest page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch, openPage, ARTIFACTS } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

const FIXTURES = ['attn_multihead', 'class_scale_shift', 'legacy_cifar_like', 'no_mid_attn_timestep_class', 'no_mid_learned_time', 'defaults_minimal_config', 'resnet_resample']
  .map((f) => `/fixtures/unet/${f}`).join(',');

test('kernels and golden UNets match on the browser GPU', { timeout: 600_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/?selftest&fixtures=${FIXTURES}`);
  // The JSON sits in a collapsed Details disclosure: attached, not visible.
  await page.waitForSelector('#selftest-result', { state: 'attached', timeout: 540_000 });
  await page.screenshot({ path: join(ARTIFACTS, 'selftest.png'), fullPage: true });
  const result = JSON.parse(await page.textContent('#selftest-result'));
  assert.equal(result.error, undefined, `self-test error: ${result.error}`);
  // For people: the verdict first, then a row per check; the JSON above is under Details.
  const verdict = await page.textContent('#selftest-verdict');
  assert.ok(verdict.startsWith(result.failed === 0 ? `All ${result.checks.length} checks pass on ${result.adapter}.` : `${result.failed} of ${result.checks.length} checks fail`), verdict);
  assert.ok(await page.evaluate(() => Boolean(document.querySelector('#selftest-verdict')
    .compareDocumentPosition(document.querySelector('#selftest-table')) & Node.DOCUMENT_POSITION_FOLLOWING)), 'the verdict comes before the table');
  assert.equal(await page.locator('#selftest-table tbody tr').count(), result.checks.length);
  assert.equal(await page.isVisible('#selftest-result'), false, 'the JSON is collapsed');
  const failed = result.checks.filter((c) => !(c.rel_l2 <= c.tol));
  console.log(`adapter ${result.adapter}, seed ${result.seed}: ${result.passed} passed, ${result.failed} failed`);
  assert.deepEqual(failed, [], `failing checks (seed ${result.seed})`);
  assert.ok(result.checks.length >= 40, `expected every kernel family and 7 golden cases, got ${result.checks.length} checks`);
  assert.ok(result.checks.filter((c) => c.name.startsWith('golden')).length === 7);
  // The page probes both diffusers layouts (pipeline folder, bare UNet folder); the browser logs
  // the probe that 404s as a console error. Anything else is a real error.
  const real = errors.filter((e) => !/status of 404/.test(e));
  assert.deepEqual(real, []);
});

test('the main page loads and names the adapter', { timeout: 120_000 }, async () => {
  const { page, errors } = await openPage(browser, `${srv.base}/`);
  // Until the app mounts there is no #adapter: wait for it to exist and be past detection.
  await page.waitForFunction(() => {
    const text = document.querySelector('#adapter')?.textContent;
    return text !== undefined && !text.includes('detecting');
  }, null, { timeout: 60_000 });
  const adapter = await page.textContent('#adapter');
  assert.match(adapter, /^GPU: /, `expected a WebGPU adapter, got "${adapter}"`);
  await page.screenshot({ path: join(ARTIFACTS, 'home.png'), fullPage: true });
  assert.deepEqual(errors, []);
});
