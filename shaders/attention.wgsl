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

// The same softmax for real GPUs: one 64-wide workgroup per row, strided over the columns, with
// tree reductions in workgroup memory for the maximum and the sum (a row per invocation leaves
// a large GPU mostly idle: 256 rows are 256 invocations).
const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn softmax_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    // `row` is the same for the whole workgroup, so this return keeps the barriers uniform.
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = -0x1.fffffep+127f; // the lowest f32 (a decimal literal may round past it)
    for (var j = lid; j < p.cols; j += WG) { m = max(m, x[base + j]); }
    red[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = lid; j < p.cols; j += WG) { sum += exp(x[base + j] - m); }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var j = lid; j < p.cols; j += WG) { out[base + j] = exp(x[base + j] - m) * inv; }
}
