// Row softmax for attention scores, numerically safe: the row maximum is subtracted before exp,
// so no score range overflows. One invocation per row (rows are long, barriers are costly).

struct Params {
    rows: u32, cols: u32, _p0: u32, _p1: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = x[base];
    for (var j = 1u; j < p.cols; j++) { m = max(m, x[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let e = exp(x[base + j] - m);
        out[base + j] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.cols; j++) { out[base + j] = out[base + j] * inv; }
}
