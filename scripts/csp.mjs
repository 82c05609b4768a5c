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

// The CPU backend's Web Worker (src/cpu/workers.rs): imports the app's JS glue `glue` (the path
// Trunk's loader names, hash included, or the relaxed-SIMD build's), instantiates the compiled
// module the page sends as its first message, and hands the messages that came meanwhile, and all
// later ones, to the module.
function workerScript(glue) {
  return `// Written by scripts/csp.mjs: the CPU backend's worker (src/cpu/workers.rs).
import init, { cpu_worker_start } from '${glue}';
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

// The JS glue Trunk's loader imports.
function glueOf(loader) {
  const glue = loader.match(/from\s+'([^']+\.js)'/);
  if (!glue) throw new Error("csp.mjs: Trunk's loader imports no JS glue: did Trunk change its loader?");
  return glue[1];
}

// Where scripts/wasm_relaxed.mjs built a relaxed-SIMD module (and its glue) beside Trunk's, the
// loader picks one pair: the relaxed one where the browser validates a relaxed-SIMD instruction
// (and the page's URL has no ?simd=128), the baseline elsewhere. The probe is
// `(func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)`.
// The glue is imported dynamically, after the choice. Trunk's preloads of the baseline module and
// its glue go: they would download files the page may not use.
function chooseModule(loader, relaxed) {
  const at = loader.match(/module_or_path:\s*'([^']+_bg\.wasm)'/);
  if (!at) throw new Error("csp.mjs: Trunk's loader names no _bg.wasm: did Trunk change its loader?");
  const imp = loader.match(/^import init, \* as bindings from '([^']+\.js)';$/m);
  if (!imp) throw new Error("csp.mjs: Trunk's loader does not import its glue as `init, * as bindings`: did Trunk change its loader?");
  if (!relaxed.includes(at[1].split('/').pop().replace(/_bg\.wasm$/, ''))) {
    throw new Error(`csp.mjs: the relaxed-SIMD module ${relaxed} does not match the loader's ${at[1]}`);
  }
  const relaxedGlue = imp[1].replace(/\.js$/, '-relaxed.js');
  const probe = '[0,97,115,109,1,0,0,0,1,5,1,96,0,1,123,3,2,1,0,10,15,1,13,0,65,1,253,15,65,2,253,15,253,128,2,11]';
  const chooser = `// Written by scripts/csp.mjs: relaxed SIMD where this browser has it (scripts/wasm_relaxed.mjs).
const relaxedSimd = new URLSearchParams(location.search).get('simd') !== '128'
  && WebAssembly.validate(new Uint8Array(${probe}));
const bindings = await import(relaxedSimd ? '${relaxedGlue}' : '${imp[1]}');
const init = bindings.default;`;
  return loader.trim()
    .replace(imp[0], chooser)
    .replace(at[0], `module_or_path: relaxedSimd ? '${at[1].replace(/_bg\.wasm$/, `-relaxed_bg.wasm`)}' : '${at[1]}'`);
}

// The app's wasm through the Cache API (issue 35), so that a second visit starts without the
// network. The file's name carries a hash of its content, so a cached copy is never stale; the
// copies of older builds are dropped once a new one is stored. Where there is no Cache API (an
// insecure page) or it fails, the module comes from the network as before.
const CACHED_WASM = `// Written by scripts/csp.mjs: the wasm module kept in the Cache API.
async function cachedWasm(url) {
  const want = new URL(url, location.href).href;
  let cache;
  try {
    cache = await caches.open('wasm:stepwise');
    const hit = await cache.match(want);
    if (hit) return hit;
  } catch { return fetch(url); }
  const res = await fetch(url);
  if (res.ok) {
    cache.put(want, res.clone())
      .then(() => cache.keys())
      .then((keys) => Promise.all(keys.filter((r) => r.url !== want).map((r) => cache.delete(r))))
      .catch((e) => console.warn('wasm not kept in the Cache API:', e));
  }
  return res;
}
`;

function withCachedWasm(loader) {
  const at = loader.match(/module_or_path:\s*([^}]+?)\s*\}/);
  if (!at) throw new Error("csp.mjs: Trunk's loader passes no module_or_path: did Trunk change its loader?");
  return `${CACHED_WASM}${loader.replace(at[0], `module_or_path: cachedWasm(${at[1]}) }`)}`;
}

const dir = process.env.TRUNK_STAGING_DIR ?? process.argv[2] ?? 'dist';
const path = join(dir, 'index.html');
let html = await readFile(path, 'utf8');
const inline = /<script type="module"(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/;
const m = html.match(inline);
const relaxed = (await readdir(dir)).find((f) => f.endsWith('-relaxed_bg.wasm'));
if (m) {
  const loader = withCachedWasm(relaxed ? chooseModule(m[1], relaxed) : m[1].trim());
  await writeFile(join(dir, 'boot.js'), loader + '\n');
  const glue = glueOf(m[1]);
  await writeFile(join(dir, 'cpu-worker.js'), workerScript(glue));
  if (relaxed) await writeFile(join(dir, 'cpu-worker-relaxed.js'), workerScript(glue.replace(/\.js$/, '-relaxed.js')));
  html = html.replace(inline, '<script type="module" src="./boot.js"></script>');
  if (relaxed) {
    html = html.replace(/\s*<link rel="preload" href="[^"]+_bg\.wasm"[^>]*>/, '');
    html = html.replace(new RegExp(`\\s*<link rel="modulepreload" href="${glue.replace(/[.]/g, '\\.')}"[^>]*>`), '');
  }
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
