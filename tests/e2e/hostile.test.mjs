// The hostile-model corpus in the page (issue #9): each broken folder of tests/fixtures/hostile
// (made by make_hostile.py there), loaded with ?model_url=, ends in a visible error naming the
// problem (the same piece of text the CLI test expects, expect.txt), never a panic, a hang or a
// blank page, and Generate stays disabled; the valid control folder loads and generates.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, openPage, ARTIFACTS } from './harness.mjs';

const CORPUS = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures/hostile');
let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

async function cases() {
  const out = [];
  for (const name of (await readdir(CORPUS)).sort()) {
    const expect = join(CORPUS, name, 'expect.txt');
    if (await stat(expect).catch(() => null)) out.push([name, (await readFile(expect, 'utf8')).trim()]);
  }
  return out;
}

test('every broken folder gets its own clear message in the page', { timeout: 900_000 }, async () => {
  const all = [...await cases(), ['valid', null]];
  assert.ok(all.length >= 21, `corpus has ${all.length - 1} broken folders`);
  const messages = new Set();
  for (const [name, expect] of all) {
    const { page, errors } = await openPage(browser, `${srv.base}/?model_url=/fixtures/hostile/${name}&steps=2&batch=1`);
    if (name === 'valid') {
      await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
      await page.click('#generate');
      await page.waitForSelector('#run-status[data-state="done"]', { timeout: 300_000 });
    } else {
      await page.waitForSelector('#model-error, #panic', { timeout: 120_000 });
      if (await page.locator('#panic').count()) assert.fail(`${name}: panicked: ${await page.textContent('#panic')}`);
      const text = await page.textContent('#model-error');
      assert.ok(text.includes(expect), `${name}: expected the page to say ${JSON.stringify(expect)}, it says ${JSON.stringify(text)}`);
      messages.add(text.replace(/\/fixtures\/hostile\/[a-z_0-9]+/g, 'DIR'));
      assert.ok(await page.locator('#generate[disabled]').count(), `${name}: Generate must stay disabled`);
      if (name === 'nan_weights') await page.screenshot({ path: join(ARTIFACTS, 'hostile-nan.png') });
    }
    // 404s of optional files (the pipeline layout is tried first) are expected network noise.
    assert.deepEqual(errors.filter((e) => !/404|Failed to load resource/.test(e)), [], name);
    await page.close();
  }
  assert.equal(messages.size, all.length - 1, 'no two kinds of damage share one message');
});
