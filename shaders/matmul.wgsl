// Batched strided matmul: C[z] = (alpha · A[z]·B[z] + bias + residual[z]) · out_scale.
// Every operand is addressed through (offset, row, col, outer, inner) element strides, with the
// batch index z split as (z / batch_inner, z % batch_inner): linear layers, 1×1 projections of NCHW
// activations and multi-head attention products all run here without transposes or copies.
// Each invocation computes a 4×4 register tile (no barriers: see conv2d.wgsl).
// B's element type `btype` comes from a prelude (ops::matmul::SHADER, SHADER_F16): f32, or f16
// for a linear layer's f16 weights, widened as loaded; sums are f32.
//
// Split-K (real GPUs, where the output has too few tiles to fill the card, e.g. a time-embedding
// projection with one row and K = 512): dispatch z runs over (batch entry, split), each split sums
// K range [split·k_chunk, (split+1)·k_chunk) into `c` laid out [split][batch][m][n], and
// matmul_split_sum adds the splits and applies alpha, bias, residual and out_scale.

struct Params {
    m: u32, n: u32, k: u32, batch_inner: u32,
    a_off: u32, a_row: u32, a_col: u32, a_outer: u32,
    a_inner: u32, b_off: u32, b_row: u32, b_col: u32,
    b_outer: u32, b_inner: u32, c_off: u32, c_row: u32,
    c_col: u32, c_outer: u32, c_inner: u32, bias_mode: u32,
    has_residual: u32, alpha: f32, out_scale: f32, splits: u32,
    k_chunk: u32, batches: u32, _p0: u32, _p1: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<btype>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    if (col0 >= p.n || row0 >= p.m) { return; }
    let split = gid.z % p.splits;
    let z = gid.z / p.splits;
    let zo = z / p.batch_inner;
    let zi = z % p.batch_inner;
    let a_base = p.a_off + zo * p.a_outer + zi * p.a_inner;
    let b_base = p.b_off + zo * p.b_outer + zi * p.b_inner;
    let c_base = p.c_off + zo * p.c_outer + zi * p.c_inner;
    // Rows/columns past the edge are clamped for reading and skipped for writing.
    var ar: vec4<u32>;
    var bc: vec4<u32>;
    for (var i = 0u; i < 4u; i++) {
        ar[i] = a_base + min(row0 + i, p.m - 1u) * p.a_row;
        bc[i] = b_base + min(col0 + i, p.n - 1u) * p.b_col;
    }
    // Named accumulators, not an indexed array: LLVM-based drivers spill dynamically indexed
    // private arrays to memory.
    var acc0 = vec4<f32>(0.0); // row row0 + 0, columns col0..col0+3
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let k_begin = split * p.k_chunk;
    let k_end = min(p.k, k_begin + p.k_chunk);
    for (var kk = k_begin; kk < k_end; kk++) {
        let ak = kk * p.a_col;
        let bk = kk * p.b_row;
        let bv = vec4<f32>(f32(b[bc.x + bk]), f32(b[bc.y + bk]), f32(b[bc.z + bk]), f32(b[bc.w + bk]));
        acc0 += a[ar.x + ak] * bv;
        acc1 += a[ar.y + ak] * bv;
        acc2 += a[ar.z + ak] * bv;
        acc3 += a[ar.w + ak] * bv;
    }
    if (p.splits > 1u) {
        let base = (split * p.batches + z) * p.m;
        store_partial(base, row0, col0, acc0);
        store_partial(base, row0 + 1u, col0, acc1);
        store_partial(base, row0 + 2u, col0, acc2);
        store_partial(base, row0 + 3u, col0, acc3);
        return;
    }
    store_row(c_base, row0, col0, acc0);
    store_row(c_base, row0 + 1u, col0, acc1);
    store_row(c_base, row0 + 2u, col0, acc2);
    store_row(c_base, row0 + 3u, col0, acc3);
}

// Split-K partial sums, dense: row `row` of entry `base / m` of split `base / (batches·m)`.
fn store_partial(base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var cc = 0u; cc < 4u; cc++) {
        let col = col0 + cc;
        if (col >= p.n) { return; }
        c[(base + row) * p.n + col] = v[cc];
    }
}

fn store_row(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var cc = 0u; cc < 4u; cc++) {
        let col = col0 + cc;
        if (col >= p.n) { return; }
        store(c_base, row, col, v[cc]);
    }
}

// The epilogue of one output element: alpha, bias, residual, out_scale.
fn store(c_base: u32, row: u32, col: u32, sum: f32) {
    var o = p.alpha * sum;
    if (p.bias_mode == 1u) { o += bias[row]; }
    if (p.bias_mode == 2u) { o += bias[col]; }
    let idx = c_base + row * p.c_row + col * p.c_col;
    if (p.has_residual != 0u) { o += residual[idx]; }
    c[idx] = o * p.out_scale;
}

// The split-K epilogue: sums the [split][batch][m][n] partials (bound as `a`) and stores each
// element as `matmul` would. One invocation per output element.
@compute @workgroup_size(64)
fn matmul_split_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let per_split = p.batches * p.m * p.n;
    if (id >= per_split) { return; }
    var s = 0.0;
    for (var k = 0u; k < p.splits; k++) { s += a[k * per_split + id]; }
    let col = id % p.n;
    let row = (id / p.n) % p.m;
    let z = id / (p.m * p.n);
    let c_base = p.c_off + (z / p.batch_inner) * p.c_outer + (z % p.batch_inner) * p.c_inner;
    store(c_base, row, col, s);
}
