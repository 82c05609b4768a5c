// Group normalisation over NC(HW) with per-channel affine and optional fused SiLU.
// One workgroup per (sample, group): a two-pass mean / variance with a shared-memory tree
// reduction (the variance pass subtracts the mean first, which keeps it accurate for large
// activations, unlike E[x²] − E[x]²).

struct Params {
    c: u32, spatial: u32, groups: u32, silu: u32,
    eps: f32, _p0: u32, _p1: u32, _p2: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn reduce(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn group_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let ng = wid.x; // = n * groups + g
    let g = ng % p.groups;
    let cpg = p.c / p.groups;
    let len = cpg * p.spatial;
    let start = ng * len; // groups are contiguous in NCHW
    var s = 0.0;
    for (var i = lid; i < len; i += WG) { s += x[start + i]; }
    let mean = reduce(lid, s) / f32(len);
    var v = 0.0;
    for (var i = lid; i < len; i += WG) { let d = x[start + i] - mean; v += d * d; }
    let inv = inverseSqrt(reduce(lid, v) / f32(len) + p.eps);
    for (var i = lid; i < len; i += WG) {
        let ch = g * cpg + i / p.spatial;
        var y = (x[start + i] - mean) * inv * gamma[ch] + beta[ch];
        if (p.silu != 0u) { y = y / (1.0 + exp(-y)); }
        out[start + i] = y;
    }
}
