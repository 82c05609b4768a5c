// Nearest-neighbour 2× upsampling of NCHW (diffusers' Upsample2D before its conv).

struct Params {
    planes: u32, h: u32, w: u32, _p: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn upsample_nearest2x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let w2 = p.w * 2u;
    let h2 = p.h * 2u;
    if (i >= p.planes * h2 * w2) { return; }
    let ox = i % w2;
    let oy = (i / w2) % h2;
    let plane = i / (w2 * h2);
    out[i] = x[(plane * p.h + oy / 2u) * p.w + ox / 2u];
}
