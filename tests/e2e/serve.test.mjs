// The README's first command (issue 30): `scripts/serve.sh` builds and serves the page. It runs
// here as a user runs it, on a free port (and its own dist folder, so the other browser tests'
// dist/ is left alone), and every file the page needs first must answer 200: the page itself
// (with its CSP and no inline script: Trunk's live-reload script is one), its loader, the glue,
// both wasm modules, and the model list with each listed model's configs, each the file itself
// (trunk serve answers a missing path with index.html and 200).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

async function freePort() {
  const s = createServer();
  await new Promise((ok) => s.listen(0, '127.0.0.1', ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

async function get(url) {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: () => body.toString('utf8') };
}

test('scripts/serve.sh serves the page, its wasm and the models', { timeout: 1_500_000 }, async () => {
  const port = await freePort();
  const dist = await mkdtemp(join(tmpdir(), 'stepwise-serve-'));
  const log = [];
  const child = spawn('scripts/serve.sh', ['--port', String(port), '--dist', dist], {
    cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const s of [child.stdout, child.stderr]) s.on('data', (d) => { log.push(String(d)); if (log.length > 400) log.shift(); });
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const base = `http://127.0.0.1:${port}`;
  try {
    // Up to 20 minutes: on a fresh machine serve.sh installs Trunk and wasm-bindgen first.
    const deadline = Date.now() + 1_200_000;
    let page = null;
    while (Date.now() < deadline && exited === null) {
      try {
        const r = await get(`${base}/`);
        if (r.status === 200 && r.text().includes('boot.js')) { page = r; break; }
      } catch { /* not listening yet */ }
      await new Promise((ok) => setTimeout(ok, 2000));
    }
    assert.ok(page, `serve.sh never served the page (exit ${exited}):\n${log.join('').slice(-4000)}`);
    const html = page.text();
    assert.match(html, /http-equiv="Content-Security-Policy"/, 'the served page carries the CSP');
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script (the CSP would block it)');
    assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');

    const boot = await get(`${base}/boot.js`);
    assert.equal(boot.status, 200, 'boot.js');
    // The files the loader imports: quoted paths ending in .wasm or .js (both modules' where
    // scripts/wasm_relaxed.mjs built a relaxed-SIMD one).
    const files = [...new Set([...boot.text().matchAll(/['"]([^'"\s]+\.(?:wasm|js))['"]/g)].map((m) => m[1]))];
    assert.ok(files.some((f) => f.endsWith('_bg.wasm')), `boot.js names a wasm module: ${boot.text()}`);
    for (const f of files) {
      const r = await get(new URL(f, `${base}/`).href);
      assert.equal(r.status, 200, f);
      assert.notEqual(r.headers.get('content-type'), 'text/html', `${f} is not the index.html fallback`);
      if (f.endsWith('.wasm')) {
        assert.equal(r.headers.get('content-type'), 'application/wasm', `${f} content type`);
        assert.deepEqual([...r.body.subarray(0, 4)], [0, 0x61, 0x73, 0x6d], `${f} is wasm`);
      }
    }

    const index = await get(`${base}/models/index.json`);
    assert.equal(index.status, 200, 'models/index.json');
    const { models } = JSON.parse(index.text());
    assert.ok(models.length >= 3, 'the shipped models are listed');
    for (const m of models) {
      for (const f of ['model_index.json', 'unet/config.json', 'scheduler/scheduler_config.json', 'stepwise.json']) {
        const r = await get(`${base}/${m.path}/${f}`);
        assert.equal(r.status, 200, `${m.path}/${f}`);
        // trunk serve answers unknown paths with index.html: the file must be the JSON itself.
        assert.doesNotThrow(() => JSON.parse(r.text()), `${m.path}/${f} is JSON`);
      }
    }
  } finally {
    try { process.kill(-child.pid, 'SIGTERM'); } catch { /* already gone */ }
    await rm(dist, { recursive: true, force: true });
  }
});
