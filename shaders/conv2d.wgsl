// 2-D convolution, NCHW, weights [Co, Ci, kh, kw], any stride and (asymmetric) zero padding.
// Each invocation computes a 4 (output channels) × 4 (consecutive output columns) register tile:
// 16 accumulators, no workgroup barriers (software rasterisers such as SwiftShader punish them).

struct Params {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, kh: u32,
    kw: u32, stride: u32, pad_top: u32, pad_left: u32,
    has_bias: u32, co_tiles: u32, x_tiles: u32, _pad: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let total = p.n * p.co_tiles * p.ho * p.x_tiles;
    if (id >= total) { return; }
    // id = ((n * co_tiles + co_tile) * ho + oy) * x_tiles + x_tile: neighbours share input rows.
    let x_tile = id % p.x_tiles;
    let oy = (id / p.x_tiles) % p.ho;
    let co_tile = (id / (p.x_tiles * p.ho)) % p.co_tiles;
    let n = id / (p.x_tiles * p.ho * p.co_tiles);
    let co0 = co_tile * 4u;
    let ox0 = x_tile * 4u;

    // Four accumulators held in named registers: a dynamically indexed private array would be
    // spilled to memory by LLVM-based drivers (lavapipe, SwiftShader), 10-100x slower.
    var acc0 = vec4<f32>(0.0); // column ox0 + 0, channels co0..co0+3
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let ksize = p.kh * p.kw;
    let wstride = p.cin * ksize; // distance between output channels in the weights
    // Clamp channel indices so that tiles past `cout` read valid memory; they are not written.
    let c1 = min(co0 + 1u, p.cout - 1u);
    let c2 = min(co0 + 2u, p.cout - 1u);
    let c3 = min(co0 + 3u, p.cout - 1u);
    let w_last = i32(p.w) - 1;
    for (var ci = 0u; ci < p.cin; ci++) {
        let xplane = (n * p.cin + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad_top);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            let xrow = xplane + u32(iy) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let widx = ci * ksize + ky * p.kw + kx;
                let wv = vec4<f32>(wt[co0 * wstride + widx], wt[c1 * wstride + widx],
                                   wt[c2 * wstride + widx], wt[c3 * wstride + widx]);
                // Input columns of the four outputs; out-of-image taps read a clamped address
                // and are zeroed (the padding).
                let ix = vec4<i32>(i32(ox0 * p.stride + kx) - i32(p.pad_left)) + vec4<i32>(0, 1, 2, 3) * i32(p.stride);
                let inside = (ix >= vec4<i32>(0)) & (ix <= vec4<i32>(w_last));
                let cx = vec4<u32>(clamp(ix, vec4<i32>(0), vec4<i32>(w_last)));
                let xv = select(vec4<f32>(0.0),
                                vec4<f32>(x[xrow + cx.x], x[xrow + cx.y], x[xrow + cx.z], x[xrow + cx.w]),
                                inside);
                acc0 += xv.x * wv;
                acc1 += xv.y * wv;
                acc2 += xv.z * wv;
                acc3 += xv.w * wv;
            }
        }
    }
    // Transpose to per-channel rows of four columns for the stores.
    let rows = transpose(mat4x4<f32>(acc0, acc1, acc2, acc3));
    for (var c = 0u; c < 4u; c++) {
        let co = co0 + c;
        if (co >= p.cout) { break; }
        var b = 0.0;
        if (p.has_bias != 0u) { b = bias[co]; }
        let obase = ((n * p.cout + co) * p.ho + oy) * p.wo;
        let row = rows[c];
        for (var j = 0u; j < 4u; j++) {
            let ox = ox0 + j;
            if (ox < p.wo) { out[obase + ox] = row[j] + b; }
        }
    }
}

// The same convolution as an implicit GEMM tiled through workgroup memory, for real GPUs:
// C[co, pixel] = Σ_k W[co, k] · X̂[k, pixel] with k = (ci, ky, kx) and pixel = (n, oy, ox) across
// the batch; X̂ (im2col) is never stored, each tile of it is gathered straight into shared
// memory. A 16×16 workgroup computes a 64 (channels) × 64 (pixels) tile, 4×4 per invocation,
// stepping through K 16 at a time: each loaded value is used 64 times. Opt-in
// (STEPWISE_CONV=tiled): on the H200 it was not faster than the kernel above for these UNets,
// whose 4×4..16×16 layers leave a 64×64 tile too few workgroups (BENCHMARKS.md).
const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(256)
fn conv2d_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let ksize = p.kh * p.kw;
    let kdim = p.cin * ksize;
    let hw_out = p.ho * p.wo;
    let npix = p.n * hw_out;
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let tm = tid / 16u; // this invocation's 4 channels: m0 + tm*4 ..
    let tn = tid % 16u; // and 4 pixels: n0 + tn*4 ..
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < kdim; k0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            // Weights: consecutive invocations read consecutive k of one channel.
            let ia = tid + e * 256u;
            let ak = ia % TK;
            let am = ia / TK;
            let gm = m0 + am;
            let gk = k0 + ak;
            var av = 0.0;
            if (gm < p.cout && gk < kdim) { av = wt[gm * kdim + gk]; }
            a_tile[ak * TM + am] = av;
            // Input patch: consecutive invocations read consecutive output pixels.
            let bn = ia % TN;
            let bk = ia / TN;
            let gn = n0 + bn;
            let kk = k0 + bk;
            var bv = 0.0;
            if (gn < npix && kk < kdim) {
                let img = gn / hw_out;
                let r = gn % hw_out;
                let oy = r / p.wo;
                let ox = r % p.wo;
                let ci = kk / ksize;
                let kr = kk % ksize;
                let iy = i32(oy * p.stride + kr / p.kw) - i32(p.pad_top);
                let ix = i32(ox * p.stride + kr % p.kw) - i32(p.pad_left);
                if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                    bv = x[((img * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
                }
            }
            b_tile[bk * TN + bn] = bv;
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let a = vec4<f32>(a_tile[k * TM + tm * 4u], a_tile[k * TM + tm * 4u + 1u],
                              a_tile[k * TM + tm * 4u + 2u], a_tile[k * TM + tm * 4u + 3u]);
            let b = vec4<f32>(b_tile[k * TN + tn * 4u], b_tile[k * TN + tn * 4u + 1u],
                              b_tile[k * TN + tn * 4u + 2u], b_tile[k * TN + tn * 4u + 3u]);
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let co = m0 + tm * 4u + i;
        if (co >= p.cout) { break; }
        var b = 0.0;
        if (p.has_bias != 0u) { b = bias[co]; }
        let row = rows[i];
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + tn * 4u + j;
            if (gn < npix) {
                let img = gn / hw_out;
                out[(img * p.cout + co) * hw_out + gn % hw_out] = row[j] + b;
            }
        }
    }
}
