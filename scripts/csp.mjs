// Trunk post-build hook: give the page a Content-Security-Policy without 'unsafe-eval' or
// 'unsafe-inline' scripts (issue #9, "Containment"). Trunk writes its wasm loader as an inline
// <script type="module">; this moves it to boot.js beside index.html and puts the policy first in
// <head>. The page may load code, models and images only from its own origin ('self'), plus
// data:/blob: images (the user's opened files, decoded in the browser); wasm compilation needs
// 'wasm-unsafe-eval', which allows WebAssembly.compile and nothing else.
// tests/e2e/csp.test.mjs checks the built page against it.
import { readFile, readdir, writeFile } from 'node:fs/promises';
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

// Where scripts/wasm_relaxed.mjs built a relaxed-SIMD module beside Trunk's, the loader picks
// one: the relaxed module where the browser validates a relaxed-SIMD instruction (and the page's
// URL has no ?simd=128), the baseline elsewhere. The probe is
// `(func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)`.
// Trunk's preload of the baseline module goes: it would download a module the page may not use.
function chooseModule(loader, relaxed) {
  const at = loader.match(/module_or_path:\s*'([^']+_bg\.wasm)'/);
  if (!at) throw new Error("csp.mjs: Trunk's loader names no _bg.wasm: did Trunk change its loader?");
  const probe = '[0,97,115,109,1,0,0,0,1,5,1,96,0,1,123,3,2,1,0,10,15,1,13,0,65,1,253,15,65,2,253,15,253,128,2,11]';
  const chooser = `// Written by scripts/csp.mjs: relaxed SIMD where this browser has it (scripts/wasm_relaxed.mjs).
const relaxedSimd = new URLSearchParams(location.search).get('simd') !== '128'
  && WebAssembly.validate(new Uint8Array(${probe}));
`;
  const lines = loader.trim().split('\n');
  const imports = lines.filter((l) => l.startsWith('import '));
  const rest = lines.filter((l) => !l.startsWith('import ')).join('\n')
    .replace(at[0], `module_or_path: relaxedSimd ? '${at[1].replace(/_bg\.wasm$/, `-relaxed_bg.wasm`)}' : '${at[1]}'`);
  if (!relaxed.includes(at[1].split('/').pop().replace(/_bg\.wasm$/, ''))) {
    throw new Error(`csp.mjs: the relaxed-SIMD module ${relaxed} does not match the loader's ${at[1]}`);
  }
  return [...imports, chooser, rest].join('\n');
}

const dir = process.env.TRUNK_STAGING_DIR ?? process.argv[2] ?? 'dist';
const path = join(dir, 'index.html');
let html = await readFile(path, 'utf8');
const inline = /<script type="module"(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/;
const m = html.match(inline);
const relaxed = (await readdir(dir)).find((f) => f.endsWith('-relaxed_bg.wasm'));
if (m) {
  const loader = relaxed ? chooseModule(m[1], relaxed) : m[1].trim();
  await writeFile(join(dir, 'boot.js'), loader + '\n');
  await writeFile(join(dir, 'cpu-worker.js'), workerScript(m[1]));
  html = html.replace(inline, '<script type="module" src="./boot.js"></script>');
  if (relaxed) html = html.replace(/\s*<link rel="preload" href="[^"]+_bg\.wasm"[^>]*>/, '');
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
console.log(`csp.mjs: ${path}: policy set, loader in boot.js${m && relaxed ? ' (relaxed SIMD where the browser has it)' : ''}`);
