// 2× resampling of NCHW: nearest-neighbour upsampling (diffusers' Upsample2D, before its conv or
// inside a ResnetBlock2D with up=True) and 2×2 average pooling (Downsample2D without a conv, inside a
// ResnetBlock2D with down=True). `h`, `w`: the input's.

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

// torch's AvgPool2d(2, 2): each output is the mean of its 2×2 window, summed in torch's order; an
// odd last row or column is dropped.
@compute @workgroup_size(64)
fn avg_pool2x2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let wo = p.w / 2u;
    let ho = p.h / 2u;
    if (i >= p.planes * ho * wo) { return; }
    let ox = i % wo;
    let oy = (i / wo) % ho;
    let plane = i / (wo * ho);
    let top = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    out[i] = (x[top] + x[top + 1u] + x[top + p.w] + x[top + p.w + 1u]) / 4.0;
}
