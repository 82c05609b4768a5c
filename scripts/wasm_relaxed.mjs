// Trunk post-build hook (release builds): a second build of the app's wasm with WebAssembly's
// relaxed SIMD (`+relaxed-simd`), beside Trunk's baseline build (`+simd128`, .cargo/config.toml).
//
// Why: relaxed SIMD's fused multiply-add (`f32x4.relaxed_madd`, one vfmadd on x86 with FMA) halves
// the CPU backend's convolution microkernel's arithmetic instructions and frees the register its
// separate multiply and add needed, so V8 keeps all 12 accumulators in registers (16 xmm, one
// reserved): 1.2-1.7x on whole forwards (BENCHMARKS.md). Relaxed SIMD is not in every browser that
// runs this page (Chrome/Edge 114+ have it), and one unsupported instruction makes a whole module
// invalid, so there are two modules: scripts/csp.mjs's boot.js loads this one where
// `WebAssembly.validate` accepts a relaxed-SIMD probe, the baseline elsewhere (and with ?simd=128).
//
// The second build is the same crate, bin and profile into target/wasm-relaxed (its own target
// directory, so that the two builds' flags do not rebuild each other), run through the same
// wasm-bindgen and wasm-opt. Its JS glue goes beside the module as <stem>-relaxed.js: wasm-bindgen
// numbers its closure adapters by function index, which differs between the two builds, so one
// glue cannot load both modules (the builds' glue differed once their code did). Both import the
// same snippets, which this checks.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const stage = process.env.TRUNK_STAGING_DIR ?? process.argv[2];
if (!stage) throw new Error('wasm_relaxed.mjs: no TRUNK_STAGING_DIR (run it as a Trunk hook, or pass the dist folder)');
const profile = process.env.TRUNK_PROFILE ?? 'release';
if (profile !== 'release') {
  // `trunk serve` without --release: one module (boot.js then loads the baseline).
  console.log(`wasm_relaxed.mjs: ${profile} build, no relaxed-SIMD module`);
  process.exit(0);
}

const wasms = readdirSync(stage).filter((f) => f.endsWith('_bg.wasm') && !f.endsWith('-relaxed_bg.wasm'));
if (wasms.length !== 1) throw new Error(`wasm_relaxed.mjs: expected one *_bg.wasm in ${stage}, found ${wasms.join(', ') || 'none'}`);
const stem = wasms[0].slice(0, -'_bg.wasm'.length);
const targetDir = join(ROOT, 'target/wasm-relaxed');
const run = (cmd, args, env = {}) =>
  execFileSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, ...env } });

// Trunk builds with `--offline` (Trunk.toml); so does this, and with the flags Trunk passes.
run('cargo', ['build', '--release', '--target=wasm32-unknown-unknown', '--bin', 'stepwise-app', '--offline',
  '--target-dir', targetDir], { CARGO_ENCODED_RUSTFLAGS: '-Ctarget-feature=+simd128,+relaxed-simd' });

const out = join(targetDir, 'bindgen');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
// Trunk names the output after the bin, then adds its hash to the files' names.
run('wasm-bindgen', ['--target=web', `--out-dir=${out}`, '--out-name=stepwise-app', '--no-typescript',
  join(targetDir, 'wasm32-unknown-unknown/release/stepwise-app.wasm')]);
const glue = readFileSync(join(out, 'stepwise-app.js'), 'utf8');
for (const [, snippet] of glue.matchAll(/from\s+"(\.\/snippets\/[^"]+)"/g)) {
  if (!existsSync(join(stage, snippet))) {
    throw new Error(`wasm_relaxed.mjs: the relaxed-SIMD glue imports ${snippet}, which Trunk's build did not write`);
  }
}
writeFileSync(join(stage, `${stem}-relaxed.js`), glue);
// wasm-opt as Trunk runs it (index.html's data-wasm-opt); it reads the module's features from its
// target_features section.
const level = readFileSync(join(ROOT, 'index.html'), 'utf8').match(/data-bin="stepwise-app"[^>]*data-wasm-opt="(\w+)"/);
if (!level) throw new Error('wasm_relaxed.mjs: index.html has no data-wasm-opt on the stepwise-app link');
run('wasm-opt', [`-O${level[1]}`, `--output=${join(stage, `${stem}-relaxed_bg.wasm`)}`, join(out, 'stepwise-app_bg.wasm')]);
console.log(`wasm_relaxed.mjs: wrote ${stem}-relaxed_bg.wasm and ${stem}-relaxed.js`);
