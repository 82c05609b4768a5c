// The onnxruntime-web side of the in-browser bench (bench/browser.mjs drives it). Served by the
// bench server: onnxruntime-web's dist/ at /ort/ (no CDN), the exported models and their
// reference input/output at /onnx/<model>/ (training/export_onnx.py).
//
// window.ortBench({ onnx, input, ep, numThreads, runs }) creates a session for the ONNX file at
// `onnx` with execution provider `ep` ('webgpu' or 'wasm'), runs it once on the reference input
// (`input`, a bench_input_b{N}.json), checks the output against PyTorch's (relative L2), and
// only then times `runs` more runs (each with host tensors in and the output read back to the
// host, as our engine's forward + download). numThreads applies to the wasm backend and is read
// once, when the first session of the page starts the wasm runtime: use one page per setting.
//
// ort.html loads the package's default ESM entry (`onnxruntime-web`, dist/ort.min.mjs: the wasm EP
// and the JS-implemented "JSEP" webgpu EP); ort.html?bundle=webgpu loads `onnxruntime-web/webgpu`
// (dist/ort.webgpu.min.mjs: the C++ WebGPU EP compiled to wasm).
const BUNDLES = { default: '/ort/ort.min.mjs', webgpu: '/ort/ort.webgpu.min.mjs' };
const BUNDLE = BUNDLES[new URLSearchParams(location.search).get('bundle') ?? 'default'];
const ort = await import(BUNDLE);

ort.env.wasm.wasmPaths = '/ort/';
ort.env.logLevel = 'error';

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
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description };
}

window.ortBench = async ({ onnx, input, ep, numThreads, runs, budgetMs = Infinity, tolerance = 1e-3 }) => {
  const status = document.getElementById('status');
  const result = { ep, numThreads: null, crossOriginIsolated: self.crossOriginIsolated, ortVersion: ort.env.versions?.web ?? null, bundle: BUNDLE };
  try {
    if (ep === 'wasm' && numThreads != null) ort.env.wasm.numThreads = numThreads;
    const ref = await (await fetch(input)).json();
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(onnx, { executionProviders: [ep], graphOptimizationLevel: 'all' });
    result.sessionMs = performance.now() - t0;
    result.numThreads = ort.env.wasm.numThreads;
    const f = feeds(ref);
    const t1 = performance.now();
    const out = (await session.run(f))[session.outputNames[0]];
    result.checkMs = performance.now() - t1;
    const data = out.data;
    result.relL2 = relL2(data, ref.expected.data);
    result.outputShape = out.dims;
    if (!(result.relL2 <= tolerance)) throw new Error(`output differs from PyTorch's: relative L2 ${result.relL2.toExponential(2)} > ${tolerance}`);
    // Fewer runs (at least 3) where `runs` would take longer than the budget.
    result.runs = Math.min(runs, Math.max(3, Math.floor(budgetMs / result.checkMs)));
    result.ms = [];
    for (let r = 0; r < result.runs; r++) {
      status.textContent = `${ep} ${onnx}: run ${r + 1}/${result.runs}`;
      const t = performance.now();
      const o = (await session.run(f))[session.outputNames[0]];
      // The output is a host tensor (outputs default to the CPU); touch it so it is really there.
      if (!(o.data.length > 0)) throw new Error('empty output');
      result.ms.push(performance.now() - t);
      await new Promise((ok) => setTimeout(ok, 0));
    }
    await session.release();
  } catch (e) {
    result.error = String(e?.message ?? e).split('\n')[0].slice(0, 300);
  }
  status.textContent = JSON.stringify(result);
  return result;
};

window.ortInfo = async () => ({
  crossOriginIsolated: self.crossOriginIsolated,
  hardwareConcurrency: navigator.hardwareConcurrency,
  userAgent: navigator.userAgent,
  adapter: await adapterInfo(),
  ortVersion: ort.env.versions?.web ?? null,
});
document.getElementById('status').textContent = 'ready';
window.ortReady = true;
