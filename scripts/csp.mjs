// Trunk post-build hook: give the page a Content-Security-Policy without 'unsafe-eval' or
// 'unsafe-inline' scripts (issue #9, "Containment"). Trunk writes its wasm loader as an inline
// <script type="module">; this moves it to boot.js beside index.html and puts the policy first in
// <head>. The page may load code, models and images only from its own origin ('self'), plus
// data:/blob: images (the user's opened files, decoded in the browser); wasm compilation needs
// 'wasm-unsafe-eval', which allows WebAssembly.compile and nothing else.
// tests/e2e/csp.test.mjs checks the built page against it.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const POLICY = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "worker-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

// The CPU backend's Web Worker (src/cpu/workers.rs): imports the app's JS glue (the path Trunk's
// loader names, hash included), instantiates the compiled module the page sends as its first
// message, and hands the messages that came meanwhile, and all later ones, to the module.
function workerScript(loader) {
  const glue = loader.match(/from\s+'([^']+\.js)'/);
  if (!glue) throw new Error("csp.mjs: Trunk's loader imports no JS glue: did Trunk change its loader?");
  return `// Written by scripts/csp.mjs: the CPU backend's worker (src/cpu/workers.rs).
import init, { cpu_worker_start } from '${glue[1]}';
const early = [];
let started = false;
self.onmessage = async (e) => {
  if (started) { early.push(e.data); return; }
  started = true;
  try {
    await init({ module_or_path: e.data.module });
    cpu_worker_start(early);
  } catch (err) {
    // The page then computes this worker's shares itself (an exception here would reach only
    // this worker's console).
    self.postMessage({ failed: \`the CPU worker did not start: \${err}\` });
  }
};
`;
}

const dir = process.env.TRUNK_STAGING_DIR ?? process.argv[2] ?? 'dist';
const path = join(dir, 'index.html');
let html = await readFile(path, 'utf8');
const inline = /<script type="module"(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/;
const m = html.match(inline);
if (m) {
  await writeFile(join(dir, 'boot.js'), m[1].trim() + '\n');
  await writeFile(join(dir, 'cpu-worker.js'), workerScript(m[1]));
  html = html.replace(inline, '<script type="module" src="./boot.js"></script>');
} else if (!html.includes('src="./boot.js"')) {
  throw new Error(`csp.mjs: no inline module script in ${path}: did Trunk change its loader?`);
}
if (/<script(?![^>]*\bsrc=)[^>]*>/.test(html)) {
  throw new Error(`csp.mjs: ${path} still has an inline script, which the policy would block`);
}
if (!html.includes('http-equiv="Content-Security-Policy"')) {
  html = html.replace(/<head>/, `<head>\n    <meta http-equiv="Content-Security-Policy" content="${POLICY}" />`);
}
await writeFile(path, html);
console.log(`csp.mjs: ${path}: policy set, loader in boot.js`);
