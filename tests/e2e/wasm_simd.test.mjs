// The two wasm modules (scripts/wasm_relaxed.mjs, scripts/csp.mjs's loader): the page downloads
// only the relaxed-SIMD module where the browser validates relaxed SIMD, only the baseline where it
// does not (or with ?simd=128); both give PyTorch's output, and each other's on fresh random input.
// A browser without relaxed SIMD is Node's V8 with the feature turned off: there the baseline
// module must validate and the relaxed one must not, or the fallback would be no fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, launch, waitIn, benchForward as forward, readSafetensors, relL2, randn } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = join(ROOT, 'dist');
const CLASS_MODEL = '/fixtures/unet/class_scale_shift'; // 1×16×16, 11 class embeds, golden batch 3
const RGB_MODEL = '/fixtures/unet/attn_multihead'; // 3×16×16 with attention

let srv, browser;
before(async () => { srv = await startServer(); browser = await launch(); });
after(async () => { await browser?.close(); srv?.server.close(); });

/// A bench page on the CPU backend, one thread: { page, wasm (the .wasm files it fetched), glue
/// (the app's JS glue files it fetched) }.
/// `noRelaxed` makes the page's WebAssembly.validate refuse relaxed-SIMD code, as a browser
/// without it does (Chromium's V8 has no switch to turn the feature off).
async function cpuPage(query, noRelaxed) {
  const page = await browser.newPage();
  const [wasm, glue] = [[], []];
  page.on('request', (r) => {
    const file = new URL(r.url()).pathname.slice(1);
    if (file.endsWith('.wasm')) wasm.push(file);
    if (/^stepwise-app-.*\.js$/.test(file)) glue.push(file);
  });
  if (noRelaxed) {
    await page.addInitScript(() => {
      const validate = WebAssembly.validate;
      // Relaxed SIMD's opcodes are 0xfd 0x100-0x113: LEB128 0x80-0x93 then 0x02.
      WebAssembly.validate = (bytes) => {
        const b = new Uint8Array(bytes.buffer ?? bytes);
        for (let i = 0; i + 2 < b.length; i++) if (b[i] === 0xfd && b[i + 1] >= 0x80 && b[i + 1] <= 0x93 && b[i + 2] === 0x02) return false;
        return validate(bytes);
      };
    });
  }
  await page.goto(`${srv.base}/?debug=bench&backend=cpu&threads=1${query}`);
  await waitIn(page, () => typeof window.stepwiseBench === 'function');
  return { page, wasm, glue };
}

function modules() {
  const files = readdirSync(DIST);
  const relaxed = files.find((f) => f.endsWith('-relaxed_bg.wasm'));
  const baseline = files.find((f) => f.endsWith('_bg.wasm') && f !== relaxed);
  assert.ok(relaxed, `dist/ has no relaxed-SIMD module (${files.join(', ')}): build with trunk build --release`);
  assert.ok(baseline, 'dist/ has no baseline module');
  return { relaxed, baseline };
}

test('the page loads one module, the relaxed-SIMD one where the browser has relaxed SIMD, and both give PyTorch output', { timeout: 300_000 }, async () => {
  const { relaxed, baseline } = modules();
  const input = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/input.safetensors'));
  const expected = await readSafetensors(join(ROOT, 'tests/fixtures/unet/class_scale_shift/expected.safetensors'));
  const cases = [
    ['Chromium', '', false, relaxed, 'relaxed SIMD'],
    ['?simd=128', '&simd=128', false, baseline, 'SIMD128'],
    ['a browser without relaxed SIMD', '', true, baseline, 'SIMD128'],
  ];
  const outputs = [];
  const shape = [2, 3, 16, 16];
  const sample = randn(2 * 3 * 16 * 16);
  const timesteps = [Math.floor(Math.random() * 1000), Math.floor(Math.random() * 1000)];
  for (const [name, query, noRelaxed, file, simd] of cases) {
    const { page, wasm, glue } = await cpuPage(query, noRelaxed);
    assert.deepEqual(wasm, [file], `${name}: the .wasm files fetched`);
    // Each module has its own glue (scripts/wasm_relaxed.mjs), and the page imports only its.
    assert.deepEqual(glue, [file.replace(/_bg\.wasm$/, '.js')], `${name}: the JS glue fetched`);
    const g = await forward(page, CLASS_MODEL, input.sample.data, input.sample.shape, input.timestep.data, input.class_labels.data);
    assert.match(g.backend, new RegExp(`^CPU backend on 1 thread, ${simd} \\(`), name);
    const err = relL2(g.output, expected.sample.data);
    assert.ok(err <= 1e-4, `${name}: relative L2 against PyTorch ${err.toExponential(2)} > 1e-4`);
    outputs.push((await forward(page, RGB_MODEL, sample, shape, timesteps, null)).output);
    await page.close();
  }
  // Fused or not, the two modules' multiply-adds differ by a rounding per tap.
  const err = relL2(outputs[0], outputs[1]);
  assert.ok(err <= 1e-5, `relaxed SIMD against SIMD128 on fresh random input: relative L2 ${err.toExponential(2)} > 1e-5`);
  assert.deepEqual(outputs[1], outputs[2], 'the two ways to the baseline module give the same output');
});

test('without relaxed SIMD the baseline module validates, the relaxed one and the probe do not', () => {
  const { relaxed, baseline } = modules();
  const boot = readFileSync(join(DIST, 'boot.js'), 'utf8');
  const probe = boot.match(/new Uint8Array\((\[[\d,]+\])\)/);
  assert.ok(probe, 'boot.js has no relaxed-SIMD probe');
  const check = (flag) => JSON.parse(execFileSync(process.execPath, [flag, '--input-type=module', '-e', `
    import { readFileSync } from 'node:fs';
    const v = (b) => WebAssembly.validate(b);
    console.log(JSON.stringify({
      probe: v(new Uint8Array(${probe[1]})),
      baseline: v(readFileSync(${JSON.stringify(join(DIST, baseline))})),
      relaxed: v(readFileSync(${JSON.stringify(join(DIST, relaxed))})),
    }));`], { encoding: 'utf8' }));
  assert.deepEqual(check('--no-experimental-wasm-relaxed-simd'), { probe: false, baseline: true, relaxed: false });
  assert.deepEqual(check('--experimental-wasm-relaxed-simd'), { probe: true, baseline: true, relaxed: true });
});
