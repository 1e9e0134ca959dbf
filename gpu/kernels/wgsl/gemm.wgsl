// zbmd_gemm: c = alpha * a . b + beta * c, row-major, a m x k, b k x n.
// Arguments: [a, b, c, m: u32, n: u32, k: u32, alpha: f32, beta: f32].
// Workgroups of 16 x 16 each compute one 16 x 16 tile of c, staging the
// matching tiles of a and b through workgroup memory (the classic shared
// memory tiling of CUDA's programming guide, section "Shared Memory").
struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
var<push_constant> params: Params;
var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn zbmd_gemm(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let row = group.y * 16u + local.y;
    let col = group.x * 16u + local.x;
    let slot = local.y * 16u + local.x;
    let tiles = (params.k + 15u) / 16u;
    var acc = 0.0;
    for (var t = 0u; t < tiles; t++) {
        let a_col = t * 16u + local.x;
        let b_row = t * 16u + local.y;
        var a_value = 0.0;
        if row < params.m && a_col < params.k {
            a_value = a[row * params.k + a_col];
        }
        var b_value = 0.0;
        if b_row < params.k && col < params.n {
            b_value = b[b_row * params.n + col];
        }
        tile_a[slot] = a_value;
        tile_b[slot] = b_value;
        workgroupBarrier();
        for (var e = 0u; e < 16u; e++) {
            acc += tile_a[local.y * 16u + e] * tile_b[e * 16u + local.x];
        }
        workgroupBarrier();
    }
    if row < params.m && col < params.n {
        let index = row * params.n + col;
        // beta = 0 overwrites: c may hold anything, NaN included.
        var old = 0.0;
        if params.beta != 0.0 {
            old = params.beta * c[index];
        }
        c[index] = params.alpha * acc + old;
    }
}
