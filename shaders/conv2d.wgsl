// 2-D convolution, NCHW, weights [Co, Ci, kh, kw], any stride and (asymmetric) zero padding.
// Each invocation computes a 4 (output channels) × 4 (consecutive output columns) register tile,
// its sums in one 4 × 4 matrix, with no workgroup barriers (software rasterisers such as
// SwiftShader punish them).
// `wtype`, the weights' type, is not declared here: the module is compiled with a prelude that
// makes it f32 or (with `enable f16;`) f16 (ops::conv2d::SHADER, SHADER_F16). Sums are f32,
// except in `conv2d_tiled` under SHADER_F16_ARITH's prelude, which makes `ctype` (its tiles'
// and products' type) f16 and sets CHUNK_SUMS (see there).

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    has_bias: u32, co_tiles: u32, x_tiles: u32, splits: u32,
    k_chunk: u32, has_add: u32, has_residual: u32, out_scale: f32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<wtype>; // f32, or f16 with f16 weights
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> chan_add: array<f32>; // [N, Co]
@group(0) @binding(5) var<storage, read> residual: array<f32>; // like `out`
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

// The epilogue of output element `idx` (image `img`, channel `co`) from its sum `v`:
// (residual + (v + bias + chan_add)) · out_scale, the steps of a ResnetBlock2D around its
// convolutions (see ConvEpilogue).
fn epilogue(img: u32, co: u32, idx: u32, v: f32) -> f32 {
    var o = v;
    if (p.has_bias != 0u) { o += bias[co]; }
    if (p.has_add != 0u) { o += chan_add[img * p.cout + co]; }
    if (p.has_residual != 0u) { o = residual[idx] + o; }
    return o * p.out_scale;
}

// A register kernel's output tile: image `n`, output row `oy`, channels co0.., columns ox0...
struct Tile {
    n: u32,
    co0: u32,
    oy: u32,
    ox0: u32,
}

// The `size` × `size` tile (channels × columns) of invocation gid + gid.y · nwg.x · 64, numbered
// ((n · co_tiles + co_tile) · ho + oy) · x_tiles + x_tile so that neighbouring invocations share
// input rows. Invocations past the last tile get n ≥ p.n and return.
fn register_tile(gid: vec3<u32>, nwg: vec3<u32>, size: u32) -> Tile {
    let id = gid.x + gid.y * nwg.x * 64u;
    let x_tile = id % p.x_tiles;
    let oy = (id / p.x_tiles) % p.ho;
    let co_tile = (id / (p.x_tiles * p.ho)) % p.co_tiles;
    let n = id / (p.x_tiles * p.ho * p.co_tiles);
    return Tile(n, co_tile * size, oy, x_tile * size);
}

@compute @workgroup_size(64)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = register_tile(gid, nwg, 4u);
    if (t.n >= p.n) { return; }

    // The tile's sums, column j for output column ox0 + j (channels co0..co0+3 in it). A matrix,
    // not an array, so that LLVM-based drivers (lavapipe, SwiftShader) keep it in registers: a
    // dynamically indexed private array is spilled to memory, 10-100x slower.
    var acc = mat4x4<f32>();
    let ksize = p.kh * p.kw;
    let wstride = p.cin * ksize; // distance between output channels in the weights
    let wa = weight_rows(t.co0, wstride);
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = input_row(t, ci, ky);
            if (row < 0) { continue; } // padding
            let xrow = u32(row);
            for (var kx = 0u; kx < p.kw; kx++) {
                let widx = ci * ksize + ky * p.kw + kx;
                let wv = weights4(wa, widx);
                // The four outputs' input columns at this tap.
                acc += outer(wv, load4(xrow, columns(tap_columns(t.ox0, kx))));
            }
        }
    }
    store_tile(t, acc);
}

// The stores of `conv2d`'s and `conv2d3`'s tile `t` from its accumulators as columns (`a[j]`:
// column ox0 + j, channels co0..co0+3), transposed to per-channel rows of four columns.
fn store_tile(t: Tile, a: mat4x4<f32>) {
    let rows = transpose(a);
    for (var c = 0u; c < 4u; c++) {
        let co = t.co0 + c;
        if (co >= p.cout) { break; }
        let obase = ((t.n * p.cout + co) * p.ho + t.oy) * p.wo;
        let row = rows[c];
        for (var j = 0u; j < 4u; j++) {
            let ox = t.ox0 + j;
            if (ox < p.wo) { out[obase + ox] = epilogue(t.n, co, obase + ox, row[j]); }
        }
    }
}

// `conv2d` for 3-wide kernels at stride 1, as `conv2d_wide3` for `conv2d_wide`: the six input
// columns that a row's three taps share are loaded once, 6 input loads for 12 weight loads where
// `conv2d` makes 12 and 12.
@compute @workgroup_size(64)
fn conv2d3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = register_tile(gid, nwg, 4u);
    if (t.n >= p.n) { return; }
    var acc = mat4x4<f32>(); // as in `conv2d`
    let ksize = p.kh * 3u;
    let wa = weight_rows(t.co0, p.cin * ksize);
    // Input columns ox0 − pad_left + 0 … 5: those of tap kx for output column ox0 + j are j + kx.
    let ixa = tap_columns(t.ox0, 0u);
    let ca = columns(ixa);
    let cc = columns(ixa + vec4<i32>(4)); // .xy
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = input_row(t, ci, ky);
            if (row < 0) { continue; } // padding
            let xrow = u32(row);
            let wk = ci * ksize + ky * 3u;
            let xa = load4(xrow, ca);
            let xc = load2(xrow, cc);
            let ya = vec4<f32>(xa.yzw, xc.x);
            let za = vec4<f32>(xa.zw, xc);
            acc += outer(weights4(wa, wk), xa);
            acc += outer(weights4(wa, wk + 1u), ya);
            acc += outer(weights4(wa, wk + 2u), za);
        }
    }
    store_tile(t, acc);
}

// Input columns of one row: where to read (clamped into the row) and which are inside it. Taps
// outside the image read the clamped address and are zeroed: the padding.
struct Columns {
    at: vec4<u32>,
    inside: vec4<bool>,
}

fn columns(ix: vec4<i32>) -> Columns {
    let last = vec4<i32>(i32(p.w) - 1);
    return Columns(vec4<u32>(clamp(ix, vec4<i32>(0), last)), (ix >= vec4<i32>(0)) & (ix <= last));
}

// Where input row oy · stride + ky − pad_top of channel `ci` of tile `t`'s image starts in `x`,
// or −1 where that row is padding.
fn input_row(t: Tile, ci: u32, ky: u32) -> i32 {
    let iy = i32(t.oy * p.stride + ky) - i32(p.pad_top);
    if (iy < 0 || iy >= i32(p.h)) { return -1; }
    return i32(((t.n * p.cin + ci) * p.h + u32(iy)) * p.w);
}

// The input columns that tap `kx` reads for output columns ox0 .. ox0 + 3.
fn tap_columns(ox0: u32, kx: u32) -> vec4<i32> {
    return vec4<i32>(i32(ox0 * p.stride + kx) - i32(p.pad_left)) + vec4<i32>(0, 1, 2, 3) * i32(p.stride);
}

// Row `row`'s input at `c`, zero outside the image; `load2` the first two of `c` only.
fn load4(row: u32, c: Columns) -> vec4<f32> {
    return select(vec4<f32>(0.0), vec4<f32>(x[row + c.at.x], x[row + c.at.y], x[row + c.at.z], x[row + c.at.w]), c.inside);
}

fn load2(row: u32, c: Columns) -> vec2<f32> {
    return select(vec2<f32>(0.0), vec2<f32>(x[row + c.at.x], x[row + c.at.y]), c.inside.xy);
}

// w ⊗ x: one tap's products for four channels (`w`) × four output columns (`x`), column j
// being x[j] · w, the accumulators' layout.
fn outer(w: vec4<f32>, x: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(w * x.x, w * x.y, w * x.z, w * x.w);
}

// The weights at offset `k` of the four rows `rows` (from `weight_rows`), widened to f32.
fn weights4(rows: vec4<u32>, k: u32) -> vec4<f32> {
    return vec4<f32>(f32(wt[rows.x + k]), f32(wt[rows.y + k]), f32(wt[rows.z + k]), f32(wt[rows.w + k]));
}

// Where output channels c..c+3's weights start (`wstride` apart), each channel clamped to the
// last so that tiles past `cout` read valid memory; those channels are not written.
fn weight_rows(c: u32, wstride: u32) -> vec4<u32> {
    return min(vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.cout - 1u)) * wstride;
}

// The 8 × 8 tile's sums of `conv2d_wide` and `conv2d_wide3`, a matrix column per output column:
// `a` columns ox0..ox0+3 and `a4` ox0+4..ox0+7 for channels co0..co0+3, `b` and `b4` the same
// for channels co0+4..co0+7.
struct Sums8 {
    a: mat4x4<f32>,
    a4: mat4x4<f32>,
    b: mat4x4<f32>,
    b4: mat4x4<f32>,
}

// `s` plus one tap: the weights at offset `k` of rows `wa` (channels co0..co0+3) and `wb`
// (co0+4..co0+7) times input columns `xa` (for outputs ox0..ox0+3) and `xb` (ox0+4..ox0+7).
fn tap8(s: Sums8, wa: vec4<u32>, wb: vec4<u32>, k: u32, xa: vec4<f32>, xb: vec4<f32>) -> Sums8 {
    let wv = weights4(wa, k);
    let wu = weights4(wb, k);
    return Sums8(s.a + outer(wv, xa), s.a4 + outer(wv, xb), s.b + outer(wu, xa), s.b4 + outer(wu, xb));
}

// The stores of `conv2d_wide`'s and `conv2d_wide3`'s tile `t` from its sums, transposed to
// per-channel rows of four columns.
fn store_wide(t: Tile, s: Sums8) {
    let n = t.n;
    let co0 = t.co0;
    let oy = t.oy;
    let ox0 = t.ox0;
    let ra = transpose(s.a);
    let rb = transpose(s.a4);
    let sa = transpose(s.b);
    let sb = transpose(s.b4);
    for (var c = 0u; c < 8u; c++) {
        let co = co0 + c;
        if (co >= p.cout) { break; }
        let obase = ((n * p.cout + co) * p.ho + oy) * p.wo;
        var lo = ra[c & 3u];
        var hi = rb[c & 3u];
        if (c >= 4u) { lo = sa[c & 3u]; hi = sb[c & 3u]; }
        for (var j = 0u; j < 4u; j++) {
            let ox = ox0 + j;
            if (ox < p.wo) { out[obase + ox] = epilogue(n, co, obase + ox, lo[j]); }
            if (ox + 4u < p.wo) { out[obase + ox + 4u] = epilogue(n, co, obase + ox + 4u, hi[j]); }
        }
    }
}

// The same for outputs at least 8 columns wide: 8 channels × 8 consecutive columns per
// invocation, four 4 × 4 matrices of sums (`Sums8`). A CPU adapter runs each invocation in a SIMD
// lane and every load of these kernels as a gather, so loads per multiply-add decide its speed:
// 16 per 64 here against 8 per 16 in `conv2d` (lavapipe: 1.5-1.8x on emoji at batch 4;
// SwiftShader: BENCHMARKS.md).
// Narrower outputs (the 4×4 layers) would leave half of each tile idle and keep `conv2d` (`conv2d3`).
@compute @workgroup_size(64)
fn conv2d_wide(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = register_tile(gid, nwg, 8u);
    if (t.n >= p.n) { return; }
    var acc = Sums8(); // kept in registers, as in `conv2d`
    let ksize = p.kh * p.kw;
    let wstride = p.cin * ksize; // distance between output channels in the weights
    let wa = weight_rows(t.co0, wstride);
    let wb = weight_rows(t.co0 + 4u, wstride);
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = input_row(t, ci, ky);
            if (row < 0) { continue; } // padding
            let xrow = u32(row);
            for (var kx = 0u; kx < p.kw; kx++) {
                // The eight outputs' input columns at this tap.
                let ixa = tap_columns(t.ox0, kx);
                let xa = load4(xrow, columns(ixa));
                let xb = load4(xrow, columns(ixa + vec4<i32>(4 * i32(p.stride))));
                acc = tap8(acc, wa, wb, ci * ksize + ky * p.kw + kx, xa, xb);
            }
        }
    }
    store_wide(t, acc);
}

// `conv2d_wide` for the common 3-wide kernels at stride 1 (a UNet's 3×3 convolutions): the three
// taps of a row read the same ten input columns, so each (input channel, kernel row) loads them
// once and shifts them in registers, 10 input loads for 24 weight loads where `conv2d_wide`
// makes 24 and 24.
@compute @workgroup_size(64)
fn conv2d_wide3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = register_tile(gid, nwg, 8u);
    if (t.n >= p.n) { return; }
    var acc = Sums8();
    let ksize = p.kh * 3u;
    let wstride = p.cin * ksize;
    let wa = weight_rows(t.co0, wstride);
    let wb = weight_rows(t.co0 + 4u, wstride);
    // Input columns ox0 − pad_left + 0 … 9: those of tap kx for output column ox0 + j are j + kx.
    let ixa = tap_columns(t.ox0, 0u);
    let ca = columns(ixa);
    let cb = columns(ixa + vec4<i32>(4));
    let cc = columns(ixa + vec4<i32>(8)); // .xy
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = input_row(t, ci, ky);
            if (row < 0) { continue; } // padding
            let xrow = u32(row);
            let wk = ci * ksize + ky * 3u;
            let xa = load4(xrow, ca);
            let xb = load4(xrow, cb);
            let xc = load2(xrow, cc);
            let ya = vec4<f32>(xa.yzw, xb.x);
            let yb = vec4<f32>(xb.yzw, xc.x);
            let za = vec4<f32>(xa.zw, xb.xy);
            let zb = vec4<f32>(xb.zw, xc);
            // Tap kx reads columns kx.. of the ten: x for kx = 0, y for 1, z for 2.
            acc = tap8(acc, wa, wb, wk, xa, xb);
            acc = tap8(acc, wa, wb, wk + 1u, ya, yb);
            acc = tap8(acc, wa, wb, wk + 2u, za, zb);
        }
    }
    store_wide(t, acc);
}

// The same convolution as an implicit GEMM through workgroup memory, for real GPUs:
// C[co, pixel] = Σ_k W[co, k] · X̂[k, pixel] with k = (ci, ky, kx) and pixel = (n, oy, ox) across
// the batch. X̂ (im2col) is never stored: each 16 × 32 tile of it is gathered straight into
// workgroup memory. 64 invocations compute a 32 (channels) × 32 (pixels) tile, 4 × 4 each.
//
// Split-K: these UNets' low-resolution layers have few output tiles (an 8×8×256 layer has 16)
// and long sums (K = 2304), which leaves most of a large GPU idle while a few invocations loop.
// Workgroup z sums only K range [z·k_chunk, (z+1)·k_chunk) and, when there are several splits,
// writes its partial sums to `out` laid out [split][co][pixel]; conv2d_split_sum then adds the
// splits and applies the epilogue into the NCHW output. With one split the tile writes the
// output itself.
//
// f16 arithmetic (SHADER_F16_ARITH): the tiles hold f16 (`ctype`), and each K step's 16 products
// are multiplied and summed in f16, then added to the f32 sums (CHUNK_SUMS), so an f16 sum never
// has more than 16 terms. Otherwise `ctype` is f32 and the sums run in f32 throughout.
const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
var<workgroup> a_tile: array<vec4<ctype>, 128>; // [TK][TM / 4]: weights
var<workgroup> b_tile: array<vec4<ctype>, 128>; // [TK][TN / 4]: gathered input

@compute @workgroup_size(64)
fn conv2d_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let ksize = p.kh * p.kw;
    let kdim = p.cin * ksize;
    let hw_out = p.ho * p.wo;
    let npix = p.n * hw_out;
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let k_begin = wg.z * p.k_chunk;
    let k_end = min(kdim, k_begin + p.k_chunk);

    // Weight loads: tile row a_m, 8 consecutive k from a_k0. Rows past `cout` read a clamped
    // row; their sums are never stored.
    let a_m = tid / 2u;
    let a_k0 = (tid % 2u) * 8u;
    let w_row = min(m0 + a_m, p.cout - 1u) * kdim;
    // Input loads: tile row b_k, pixels b_n + 4j for j = 0..7 (so 4 neighbouring invocations
    // read 4 neighbouring pixels). Each pixel's image offset and top-left input corner are
    // computed once, outside the K loop.
    let b_k = tid / 4u;
    let b_n = tid % 4u;
    let plane = p.h * p.w;
    var img_base: array<u32, 8>;
    var iy0: array<i32, 8>;
    var ix0: array<i32, 8>;
    for (var j = 0u; j < 8u; j++) {
        let gn = n0 + b_n + 4u * j;
        let img = gn / hw_out;
        let r = gn % hw_out;
        img_base[j] = img * p.cin * plane;
        iy0[j] = i32((r / p.wo) * p.stride) - i32(p.pad_top);
        // Pixels past the batch get a column no tap can reach, so every load of theirs is padding.
        ix0[j] = select(i32((r % p.wo) * p.stride) - i32(p.pad_left), -1000000, gn >= npix);
    }

    // This invocation's output: channels m0 + 4·t_m .., pixels n0 + 4·t_n ..
    let t_m = tid / 8u;
    let t_n = tid % 8u;
    var acc0 = vec4<f32>(0.0); // channel +0, four pixels
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // The sums in `ctype`: the whole sums where that is f32, one K step's where it is f16.
    var h0 = vec4<ctype>(0.0);
    var h1 = vec4<ctype>(0.0);
    var h2 = vec4<ctype>(0.0);
    var h3 = vec4<ctype>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var j = 0u; j < 8u; j++) {
            let k = k0 + a_k0 + j;
            var v = 0.0;
            if (k < k_end) { v = f32(wt[w_row + k]); }
            a_tile[(a_k0 + j) * 8u + a_m / 4u][a_m % 4u] = ctype(v);
        }
        let k = k0 + b_k;
        let ci = k / ksize;
        let kr = k % ksize;
        let ky = i32(kr / p.kw);
        let kx = i32(kr % p.kw);
        let k_in = k < k_end;
        for (var j = 0u; j < 8u; j++) {
            let iy = iy0[j] + ky;
            let ix = ix0[j] + kx;
            var v = 0.0;
            if (k_in && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                v = x[img_base[j] + ci * plane + u32(iy) * p.w + u32(ix)];
            }
            b_tile[b_k * 8u + j][b_n] = ctype(v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = a_tile[kk * 8u + t_m];
            let b = b_tile[kk * 8u + t_n];
            h0 += a.x * b;
            h1 += a.y * b;
            h2 += a.z * b;
            h3 += a.w * b;
        }
        if (CHUNK_SUMS) {
            acc0 += vec4<f32>(h0);
            acc1 += vec4<f32>(h1);
            acc2 += vec4<f32>(h2);
            acc3 += vec4<f32>(h3);
            h0 = vec4<ctype>(0.0);
            h1 = vec4<ctype>(0.0);
            h2 = vec4<ctype>(0.0);
            h3 = vec4<ctype>(0.0);
        }
        workgroupBarrier();
    }
    if (!CHUNK_SUMS) {
        acc0 = vec4<f32>(h0);
        acc1 = vec4<f32>(h1);
        acc2 = vec4<f32>(h2);
        acc3 = vec4<f32>(h3);
    }
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let co = m0 + t_m * 4u + i;
        if (co >= p.cout) { break; }
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + t_n * 4u + j;
            if (gn >= npix) { break; }
            if (p.splits == 1u) {
                let img = gn / hw_out;
                let idx = (img * p.cout + co) * hw_out + gn % hw_out;
                out[idx] = epilogue(img, co, idx, rows[i][j]);
            } else {
                out[(wg.z * p.cout + co) * npix + gn] = rows[i][j];
            }
        }
    }
}

// The split-K sum: the NCHW output from the [split][co][pixel] partial sums (bound as `x`),
// through the epilogue. One invocation per output element.
@compute @workgroup_size(64)
fn conv2d_split_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let hw_out = p.ho * p.wo;
    let npix = p.n * hw_out;
    if (id >= p.cout * npix) { return; }
    let r = id % hw_out;
    let co = (id / hw_out) % p.cout;
    let img = id / (hw_out * p.cout);
    let gn = img * hw_out + r;
    var s = 0.0;
    for (var z = 0u; z < p.splits; z++) { s += x[(z * p.cout + co) * npix + gn]; }
    out[id] = epilogue(img, co, id, s);
}
