// The first visit (issue 35): the controls, their defaults and validation, the state they keep,
// the layout of the first screen, and accessibility (axe-core in every view, focus, tips, the
// live region, the mask without a pointer). Screenshots land in tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, openPage, ARTIFACTS, pixels } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(ROOT, 'tools/package.json'));

let srv, browser, axeSource;
before(async () => {
  srv = await startServer();
  browser = await launch();
  axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
});
after(async () => { await browser?.close(); srv?.server.close(); });

const CLASS_MODEL = '/fixtures/unet/class_scale_shift'; // pipeline folder, 1×16×16, 11 class embeds
const appUrl = (params) => `${srv.base}/?${new URLSearchParams(params)}`;
const ready = (page) => page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
const state = (page) => page.getAttribute('#run-status', 'data-state');

async function runToEnd(page) {
  await page.click('#generate');
  await page.waitForSelector('#run-status[data-state="done"], #run-status[data-state="error"]', { timeout: 300_000 });
  assert.equal(await state(page), 'done', await page.locator('#run-error').textContent().catch(() => ''));
}

/// axe-core's violations of impact serious or critical on the page as it is now. The source goes
/// in through the DevTools protocol (page.evaluate): the app's CSP forbids injected <script>s.
async function axe(page, what) {
  if (await page.evaluate('typeof window.axe') === 'undefined') {
    await page.evaluate(axeSource);
  }
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 6).map((n) => n.target.join(' ')) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of violations) if (!bad.includes(v)) console.log(`axe (${what}, ${v.impact}): ${v.id}: ${v.help} at ${v.nodes.join(', ')}`);
  assert.deepEqual(bad, [], `${what}: ${JSON.stringify(bad, null, 1)}`);
  return violations;
}

test('axe-core finds nothing serious in any view: idle, after a run, the edit modes, compare, and the self-test page', { timeout: 600_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ model_url: CLASS_MODEL, sampler: 'ddim', steps: 3, seed: 5, class: 1 }));
  await ready(page);
  // The whole page holds every view: generate, compare, lab, noising, paths (toy2d).
  await axe(page, 'idle');
  await runToEnd(page);
  await axe(page, 'after a run');
  for (const mode of ['sdedit', 'inpaint', 'upscale']) {
    await page.selectOption('#mode', mode);
    await axe(page, `mode ${mode}`);
  }
  await page.selectOption('#mode', 'generate');
  await page.fill('#cmp-a-steps', '2');
  await page.press('#cmp-a-steps', 'Enter');
  await page.fill('#cmp-b-steps', '2');
  await page.press('#cmp-b-steps', 'Enter');
  await page.click('#compare-run');
  await page.waitForSelector('#compare-status[data-state="done"]', { timeout: 300_000 });
  await axe(page, 'after a comparison');
  assert.deepEqual(errors, []);
  await page.close();

  const st = await browser.newPage();
  await st.goto(`${srv.base}/?selftest&fixtures=${CLASS_MODEL}`);
  await st.waitForSelector('#selftest-result', { state: 'attached', timeout: 400_000 });
  await axe(st, 'self-test');
  await st.close();
});

test('the first screen holds the frames and the run button, on a laptop and on a phone', { timeout: 300_000 }, async () => {
  for (const [w, h, phone] of [[1280, 800, false], [390, 844, true]]) {
    const ctx = await browser.newContext({ viewport: { width: w, height: h }, hasTouch: phone, isMobile: phone });
    const page = await ctx.newPage();
    await page.goto(`${srv.base}/?backend=gpu&autorun=0`);
    await ready(page);
    const geo = await page.evaluate(() => {
      const box = (s) => { const r = document.querySelector(s).getBoundingClientRect(); return { top: r.top, bottom: r.bottom, left: r.left, right: r.right }; };
      return { xt: box('#xt'), gen: box('#generate'), bar: getComputedStyle(document.querySelector('#run-bar')).position, scrollWidth: document.documentElement.scrollWidth };
    });
    await page.screenshot({ path: join(ARTIFACTS, `first-screen-${w}x${h}.png`) });
    const inView = (b) => b.top >= 0 && b.bottom <= h && b.left >= 0 && b.right <= w;
    assert.ok(inView(geo.gen), `${w}×${h}: #generate at ${JSON.stringify(geo.gen)}`);
    assert.ok(geo.xt.top >= 0 && geo.xt.top < h - 100, `${w}×${h}: #xt starts on the first screen (${JSON.stringify(geo.xt)})`);
    assert.ok(geo.scrollWidth <= w, `${w}×${h}: no horizontal scrolling (${geo.scrollWidth})`);
    if (phone) {
      assert.ok(geo.xt.top < geo.gen.top, 'on a phone the frames come before the run bar');
      assert.equal(geo.bar, 'fixed', 'the run bar stays at the bottom of the screen');
      // Touch screens: 44 px targets and no keyboard hint.
      assert.ok(await page.evaluate(() => matchMedia('(pointer: coarse)').matches), 'the phone context has a coarse pointer');
      assert.equal(await page.locator('.kbd-hint').isVisible(), false);
      const small = await page.evaluate(() => [...document.querySelectorAll('button, select, label.file-button')]
        .filter((e) => e.offsetParent && !e.closest('[hidden]'))
        .map((e) => [e.id || e.className || e.textContent.trim(), e.getBoundingClientRect().height])
        .filter(([, hgt]) => hgt < 44));
      assert.deepEqual(small, [], 'touch targets under 44 px');
    } else {
      assert.ok(inView(geo.xt), `${w}×${h}: the whole of #xt on the first screen (${JSON.stringify(geo.xt)})`);
      assert.equal(await page.locator('.kbd-hint').isVisible(), true);
    }
    // The selects show their whole text: the selected option fits the select's box.
    const cut = await page.evaluate(() => {
      const c = document.createElement('canvas').getContext('2d');
      return ['#model', '#class', '#sampler'].flatMap((s) => {
        const e = document.querySelector(s);
        if (!e) return [];
        const st = getComputedStyle(e);
        c.font = `${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
        const text = e.selectedOptions[0]?.textContent ?? '';
        const room = e.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight) - 20; // the arrow
        return c.measureText(text).width > room ? [`${s}: “${text}” needs ${c.measureText(text).width.toFixed(0)} px, has ${room.toFixed(0)}`] : [];
      });
    });
    assert.deepEqual(cut, [], `${w}×${h}: select text cut`);
    await ctx.close();
  }
});

test('bad URL parameters are named in a note, and the controls show what runs', { timeout: 300_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ model_url: CLASS_MODEL, steps: -5, sampler: 'foo', guidance: -50, class: 42, seed: -7, eta: 'x' }));
  await ready(page);
  await page.waitForFunction(() => /class=42/.test(document.querySelector('#url-note')?.textContent ?? ''), null, { timeout: 30_000 });
  const note = await page.textContent('#url-note');
  assert.match(note, /steps=-5 is not a step count: using 50/);
  assert.match(note, /sampler=foo is not a sampler: using DDIM/);
  assert.match(note, /guidance=-50 is out of 0–20: using 0/);
  assert.match(note, /class=42: this model has 10 classes \(0–9\): using one of each/);
  assert.match(note, /seed=-7 is not a seed/);
  assert.match(note, /eta=x is not a number: using 0/);
  assert.equal(await page.inputValue('#steps'), '50');
  assert.equal(await page.inputValue('#sampler'), 'ddim');
  assert.equal(await page.inputValue('#guidance'), '0');
  assert.equal(await page.inputValue('#class'), '-1');
  const seed = await page.inputValue('#seed');
  assert.match(seed, /^\d+$/);
  assert.match(note, new RegExp(`seed=-7 is not a seed \\(a whole number from 0\\): using ${seed}`));
  // What the URL now says is what runs.
  const q = new URL(page.url()).searchParams;
  assert.deepEqual([q.get('steps'), q.get('sampler'), q.get('guidance'), q.get('class'), q.get('seed')], ['50', 'ddim', '0', '-1', seed]);
  // A typed seed that is not one is refused where it is typed: the field goes back to the seed
  // that runs, with a note.
  for (const bad of ['-7', '1.5', '']) {
    await page.fill('#seed', bad);
    await page.dispatchEvent('#seed', 'change');
    assert.equal(await page.inputValue('#seed'), seed, `after typing “${bad}”`);
    assert.match(await page.textContent('#seed-note'), new RegExp(`is not a seed .*keeping ${seed}`));
  }
  await page.fill('#seed', '12');
  await page.dispatchEvent('#seed', 'change');
  assert.equal(await page.textContent('#seed-note'), '');
  await page.screenshot({ path: join(ARTIFACTS, 'first-visit-url-note.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();

  const huge = await openPage(browser, appUrl({ model_url: CLASS_MODEL, guidance: '1e30', steps: 5000, batch: 99 }));
  await ready(huge.page);
  await huge.page.waitForFunction(() => /steps=5000/.test(document.querySelector('#url-note')?.textContent ?? ''), null, { timeout: 30_000 });
  const n2 = await huge.page.textContent('#url-note');
  assert.match(n2, /guidance=1e30 is out of 0–20: using 20/);
  assert.match(n2, /steps=5000: this model has 1000 training steps: using 1000/);
  assert.match(n2, /batch=99 is out of 1–16: using 16/);
  assert.equal(await huge.page.inputValue('#guidance'), '20');
  assert.equal(await huge.page.textContent('label[for=guidance] output'), '20.0');
  assert.equal(await huge.page.inputValue('#steps'), '1000');
  assert.deepEqual(huge.errors, []);
  await huge.page.close();
});

test('values set while the model loads are kept; untouched ones take the model\'s defaults', { timeout: 300_000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  let release;
  const gate = new Promise((ok) => { release = ok; });
  await page.route('**/*.safetensors', async (route) => { await gate; await route.continue(); });
  await page.goto(`${srv.base}/?backend=gpu&model=fashion`);
  await page.waitForSelector('#steps');
  assert.match(await page.textContent('#model-status'), /loading/);
  // η waits for the model's default instead of showing a value that is about to change.
  assert.equal(await page.textContent('label[for=eta] output'), '…');
  await page.fill('#steps', '20');
  release();
  await ready(page);
  assert.equal(await page.inputValue('#steps'), '20', 'the steps set while loading are kept');
  // fashion's stepwise.json: guidance 2, η 0.
  assert.equal(await page.inputValue('#guidance'), '2');
  assert.equal(await page.textContent('label[for=eta] output'), '0.00');
  assert.deepEqual(errors, []);
  await page.close();
});

test('another model clears the run on screen; another mode clears the old error; Upscale refuses a model that is not its pair', { timeout: 600_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ model_url: CLASS_MODEL, sampler: 'ddim', steps: 3, seed: 5, class: 1 }));
  await ready(page);
  // Idle: an invitation, not progress; placeholders on the canvases.
  assert.equal(await page.locator('#run-invite').isVisible(), true);
  assert.match(await page.textContent('#run-invite'), /Press Generate to watch noise become an image/);
  assert.equal(await page.locator('#progress').isVisible(), false);
  assert.equal(await page.locator('.frames .placeholder').first().isVisible(), true);
  assert.match(await page.getAttribute('#xt', 'aria-label'), /empty until a run starts/);
  await runToEnd(page);
  assert.equal(await page.locator('#run-invite').isVisible(), false);
  assert.equal(await page.locator('.frames .placeholder').first().isVisible(), false);
  assert.match(await page.getAttribute('#xt', 'aria-label'), /^x_t, the sample, at step 3 of 3, t = \d+$/);
  assert.match(await page.textContent('#run-live'), /^Done: 3 steps in [\d.]+ s\.$/);
  assert.match(await page.textContent('#run-line'), /^done: 3 steps in/);

  // Upscale with a 1×16×16 model: refused in words, nothing runs.
  await page.selectOption('#mode', 'upscale');
  await page.click('#generate');
  assert.match(await page.textContent('#run-error'), /emoji-sr.*32×32 RGB.*1×16×16/);
  assert.equal(await page.getAttribute('#run-status', 'data-frames'), '4', 'the frames stay');
  // Another mode: the complaint goes.
  await page.selectOption('#mode', 'inpaint');
  assert.equal(await page.locator('#run-error').count(), 0);
  // The mask without a pointer: a half, inverted, cleared.
  await page.click('#edit-use-result');
  await page.click('#mask-left');
  let m = await pixels(page, 'edit-mask');
  const painted = (img, x, y) => img.data[(y * img.w + x) * 4 + 3] > 0;
  assert.ok(painted(m, 0, 0) && painted(m, m.w / 2 - 1, m.h - 1) && !painted(m, m.w - 1, 0), 'left half masked');
  await page.click('#mask-invert');
  m = await pixels(page, 'edit-mask');
  assert.ok(!painted(m, 0, 0) && painted(m, m.w - 1, 0), 'inverted');
  await page.selectOption('#mode', 'generate');

  // Another model: the old run's frames, summary and stats go.
  await page.selectOption('#model', 'fashion');
  await page.waitForSelector('#run-status[data-frames="0"][data-state="idle"]', { timeout: 10_000 });
  assert.equal(await page.locator('#run-invite').isVisible(), true);
  const blank = await pixels(page, 'xt');
  assert.deepEqual([blank.w, blank.h], [16, 16]);
  assert.ok(blank.data.every((v) => v === 0), 'the x_t canvas is blank');
  await ready(page);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a bare first visit runs by itself; ?autorun=0 and reduced motion do not', { timeout: 300_000 }, async () => {
  const bare = await openPage(browser, `${srv.base}/`);
  await bare.page.waitForSelector('#run-status[data-state="running"], #run-status[data-state="done"]', { timeout: 180_000 });
  assert.match(await bare.page.textContent('#run-live'), /Started|% done|Done/);
  await bare.page.close();

  for (const [what, open] of [
    ['?autorun=0', () => openPage(browser, `${srv.base}/?autorun=0`).then((p) => p.page)],
    ['reduced motion', async () => {
      const ctx = await browser.newContext({ reducedMotion: 'reduce' });
      const p = await ctx.newPage();
      await p.goto(`${srv.base}/?backend=gpu`);
      return p;
    }],
  ]) {
    const page = await open();
    await ready(page);
    await page.waitForTimeout(1500);
    assert.equal(await state(page), 'idle', what);
    assert.equal(await page.getAttribute('#run-status', 'data-frames'), '0', what);
    // Space scrolls the page; it does not start a run.
    await page.evaluate(() => document.activeElement?.blur());
    await page.keyboard.press('Space');
    await page.waitForTimeout(300);
    assert.equal(await state(page), 'idle', `${what}: Space`);
    await page.close();
  }
});

test('keyboard focus is visible on the file pickers; tips explain on hover and on focus', { timeout: 120_000 }, async () => {
  const { page, errors } = await openPage(browser, appUrl({ model_url: CLASS_MODEL, sampler: 'ddim' }));
  await ready(page);
  await page.focus('#model');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'model-files');
  const ring = await page.evaluate(() => getComputedStyle(document.querySelector('label[for=model-files]')).outlineStyle);
  assert.equal(ring, 'solid', 'the visible label shows the hidden input\'s focus');

  const tip = page.locator('button.tip[aria-describedby="tip-eta"]');
  assert.equal(await page.locator('#tip-eta').isVisible(), false);
  await tip.hover();
  assert.equal(await page.locator('#tip-eta').isVisible(), true, 'on hover');
  await page.mouse.move(0, 0);
  assert.equal(await page.locator('#tip-eta').isVisible(), false);
  await tip.focus();
  assert.equal(await page.locator('#tip-eta').isVisible(), true, 'on focus');
  for (const id of ['tip-xt', 'tip-x0', 'tip-eta', 'tip-guidance', 'tip-timestep']) {
    assert.ok((await page.textContent(`#${id}`)).length > 40, id);
  }
  // "New seed" is named by its visible text.
  assert.equal(await page.getAttribute('#new-seed', 'aria-label'), null);
  assert.deepEqual(errors, []);
  await page.close();
});
