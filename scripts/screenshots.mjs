// The README's screenshots: the release page (dist/, `trunk build --release`) as a newcomer meets
// it, on a desktop (1280×800) and a phone (390×844, touch), at the first screen after the model
// loads and after the first run, in headless Chromium on this machine (the page's own backend
// choice: `backend` is not set).
//
//   node scripts/screenshots.mjs [OUT_DIR]      # default docs/screenshots
//
// A bare URL is a first visit: the page starts its short default run by itself (issue 35), so
// "first" is taken when the model is ready and "run" when that run is done. JPEG, quality 80, so
// the four files stay small enough to keep in git.
import { mkdir } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch } from '../tests/e2e/harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = resolve(process.argv[2] ?? join(ROOT, 'docs/screenshots'));
const DEVICES = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
};

await mkdir(OUT, { recursive: true });
const srv = await startServer();
const browser = await launch();
try {
  for (const [name, options] of Object.entries(DEVICES)) {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${srv.base}/`);
    await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
    await page.screenshot({ path: join(OUT, `${name}-first.jpg`), type: 'jpeg', quality: 80 });
    // The default run (started by the page on a first visit; pressed here if it did not start).
    const state = await page.getAttribute('#run-status', 'data-state');
    if (state === 'idle') await page.click('#generate');
    await page.waitForSelector('#run-status[data-state="done"]', { timeout: 300_000 });
    await page.screenshot({ path: join(OUT, `${name}-run.jpg`), type: 'jpeg', quality: 80 });
    if (errors.length) throw new Error(`${name}: page errors: ${errors.join('; ')}`);
    console.log(`${name}: ${join(OUT, `${name}-first.jpg`)}, ${join(OUT, `${name}-run.jpg`)}`);
    await context.close();
  }
} finally {
  await browser.close();
  srv.server.close();
}
