// Elementwise ops over flat f32 arrays: SiLU, (a + b)·s, x·mul + add, the per-channel time
// modulation of ResnetBlock2D, and channel concatenation. One invocation per output element.

struct Params {
    len: u32, c: u32, spatial: u32, e: u32,
    shift_col: u32, scale_col: u32, has_scale: u32, ca: u32,
    cb: u32, f0: f32, f1: f32, _pad: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn silu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.len) { return; }
    let v = in0[i];
    out[i] = v / (1.0 + exp(-v));
}

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.len) { return; }
    out[i] = (in0[i] + in1[i]) * p.f0;
}

@compute @workgroup_size(64)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.len) { return; }
    out[i] = in0[i] * p.f0 + p.f1;
}

// out[n,c,s] = x[n,c,s] · (1 + emb[n, scale_col + c]) + emb[n, shift_col + c]
@compute @workgroup_size(64)
fn modulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.len) { return; }
    let ch = (i / p.spatial) % p.c;
    let n = i / (p.spatial * p.c);
    var scale = 0.0;
    if (p.has_scale != 0u) { scale = in1[n * p.e + p.scale_col + ch]; }
    out[i] = in0[i] * (1.0 + scale) + in1[n * p.e + p.shift_col + ch];
}

// [N, ca, S] ++ [N, cb, S] → [N, ca + cb, S]
@compute @workgroup_size(64)
fn concat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.len) { return; }
    let ct = p.ca + p.cb;
    let s = i % p.spatial;
    let ch = (i / p.spatial) % ct;
    let n = i / (p.spatial * ct);
    if (ch < p.ca) {
        out[i] = in0[(n * p.ca + ch) * p.spatial + s];
    } else {
        out[i] = in1[(n * p.cb + ch - p.ca) * p.spatial + s];
    }
}
