// Sinusoidal timestep embeddings (diffusers' get_timestep_embedding) and nn.Embedding lookups.
// The frequencies come from the host (computed in f32 exactly as PyTorch does), so the argument
// t·f is bit-identical to the CPU reference; sin/cos get an explicit Cody–Waite range reduction
// because timesteps reach 1000 rad and GPU sin/cos lose accuracy far from zero.

struct Params {
    n: u32, dim: u32, half_dim: u32, flip: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const INV_TWO_PI: f32 = 0.15915494309189535;
const TWO_PI_HI: f32 = 6.28125;                 // exactly representable, few mantissa bits
const TWO_PI_LO: f32 = 0.0019353071795864769;   // 2π − TWO_PI_HI

fn reduce_angle(x: f32) -> f32 {
    let k = round(x * INV_TWO_PI);
    return (x - k * TWO_PI_HI) - k * TWO_PI_LO;
}

// out[n, i] over dim columns; `table` holds the half_dim frequencies.
@compute @workgroup_size(64)
fn timestep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n * p.dim) { return; }
    let n = idx / p.dim;
    let j = idx % p.dim;
    if (j >= 2u * p.half_dim) { out[idx] = 0.0; return; } // odd dim: zero pad
    let i = j % p.half_dim;
    let arg = reduce_angle(t[n] * table[i]);
    let first_half = j < p.half_dim;
    // [sin, cos], or [cos, sin] when flip_sin_to_cos
    let use_cos = first_half == (p.flip != 0u);
    out[idx] = select(sin(arg), cos(arg), use_cos);
}

// out[n, d] = table[ids[n], d]; ids were validated on the host, the clamp is defence in depth.
@compute @workgroup_size(64)
fn lookup(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n * p.dim) { return; }
    let n = idx / p.dim;
    let d = idx % p.dim;
    let row = min(u32(t[n]), p.half_dim - 1u); // half_dim carries the vocabulary size here
    out[idx] = table[row * p.dim + d];
}
