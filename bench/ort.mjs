// The onnxruntime-web side of the in-browser bench (bench/browser.mjs drives it). Served by the
// bench server: onnxruntime-web's dist/ at /ort/ (no CDN), the exported models and their
// reference input/output at /onnx/<model>/ (training/export_onnx.py).
//
// window.ortOpen({ onnx, input, ep, numThreads }) creates a session for the ONNX file at `onnx`
// with execution provider `ep` ('webgpu' or 'wasm'), runs it once on the reference input
// (`input`, a bench_input_b{N}.json) and checks the output against PyTorch's (relative L2);
// window.ortTime({ warmup, runs }) then runs it `warmup` times untimed and `runs` times timed
// (each with host tensors in and the output read back to the host with getData(), as our
// engine's forward + download), as often as the driver asks; window.ortClose() releases it.
// numThreads applies to the wasm backend and is read once, when the first session of the page
// starts the wasm runtime: use one page per setting.
//
// ort.html loads the package's default ESM entry (`onnxruntime-web`, dist/ort.min.mjs: the wasm EP
// and the JS-implemented "JSEP" webgpu EP); ort.html?bundle=webgpu loads `onnxruntime-web/webgpu`
// (dist/ort.webgpu.min.mjs: the C++ WebGPU EP compiled to wasm).
const BUNDLES = { default: '/ort/ort.min.mjs', webgpu: '/ort/ort.webgpu.min.mjs' };
const BUNDLE = BUNDLES[new URLSearchParams(location.search).get('bundle') ?? 'default'];
const ort = await import(BUNDLE);

ort.env.wasm.wasmPaths = '/ort/';
ort.env.logLevel = 'error';
const status = document.getElementById('status');

function relL2(got, want) {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    const d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

function feeds(input) {
  const f = {
    sample: new ort.Tensor('float32', Float32Array.from(input.inputs.sample.data), input.inputs.sample.shape),
    timestep: new ort.Tensor('float32', Float32Array.from(input.inputs.timestep.data), input.inputs.timestep.shape),
  };
  const labels = input.inputs.class_labels;
  if (labels) f.class_labels = new ort.Tensor('int64', BigInt64Array.from(labels.data.map(BigInt)), labels.shape);
  return f;
}

async function adapterInfo() {
  if (!navigator.gpu) return null;
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info ?? {};
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter ?? a.isFallbackAdapter ?? null };
}

// One open session at a time (bench/browser.mjs alternates rows: it opens a session per model and
// batch, checks it, times it in several rounds between the other rows' rounds, then closes it).
let open = null;

/// Creates the session, runs it once on the reference input and checks the output against
/// PyTorch's (that run is untimed); resolves to what it found, with `error` if it failed.
window.ortOpen = async ({ onnx, input, ep, numThreads, tolerance = 1e-3 }) => {
  const result = { ep, numThreads: null, crossOriginIsolated: self.crossOriginIsolated, ortVersion: ort.env.versions?.web ?? null, bundle: BUNDLE };
  try {
    if (open) await window.ortClose();
    if (ep === 'wasm' && numThreads != null) ort.env.wasm.numThreads = numThreads;
    const ref = await (await fetch(input)).json();
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(onnx, { executionProviders: [ep], graphOptimizationLevel: 'all' });
    result.sessionMs = performance.now() - t0;
    result.numThreads = ort.env.wasm.numThreads;
    const f = feeds(ref);
    open = { session, feeds: f, onnx, ep };
    const t1 = performance.now();
    const out = (await session.run(f))[session.outputNames[0]];
    const data = await out.getData();
    result.checkMs = performance.now() - t1;
    result.outputLocation = out.location;
    result.relL2 = relL2(data, ref.expected.data);
    result.outputShape = out.dims;
    if (!(result.relL2 <= tolerance)) throw new Error(`output differs from PyTorch's: relative L2 ${result.relL2.toExponential(2)} > ${tolerance}`);
  } catch (e) {
    result.error = String(e?.message ?? e).split('\n')[0].slice(0, 300);
  }
  status.textContent = JSON.stringify(result);
  return result;
};

/// `warmup` untimed runs, then `runs` timed ones, on the open session. Each run, timed or not,
/// is the same: session.run with host (CPU) input tensors, then the output tensor's getData()
/// (ort's outputs default to the CPU, so the run already downloaded it from a GPU; getData()
/// makes sure the values are in a JS Float32Array when the clock stops).
window.ortTime = async ({ warmup, runs }) => {
  if (!open) throw new Error('ortTime: no open session (ortOpen first)');
  const { session, feeds: f, ep, onnx } = open;
  const once = async () => {
    const o = (await session.run(f))[session.outputNames[0]];
    const data = await o.getData();
    if (!(data.length > 0)) throw new Error('empty output');
  };
  for (let w = 0; w < warmup; w++) {
    status.textContent = `${ep} ${onnx}: warm-up ${w + 1}/${warmup}`;
    await once();
    await new Promise((ok) => setTimeout(ok, 0));
  }
  const ms = [];
  for (let r = 0; r < runs; r++) {
    status.textContent = `${ep} ${onnx}: run ${r + 1}/${runs}`;
    const t = performance.now();
    await once();
    ms.push(performance.now() - t);
    await new Promise((ok) => setTimeout(ok, 0));
  }
  return { ms };
};

window.ortClose = async () => {
  if (!open) return;
  const { session } = open;
  open = null;
  await session.release();
};

window.ortInfo = async () => ({
  crossOriginIsolated: self.crossOriginIsolated,
  hardwareConcurrency: navigator.hardwareConcurrency,
  userAgent: navigator.userAgent,
  adapter: await adapterInfo(),
  ortVersion: ort.env.versions?.web ?? null,
});
status.textContent = 'ready';
window.ortReady = true;
