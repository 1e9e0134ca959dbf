// zbmd_vector_add: out[i] = a[i] + b[i]. Arguments: [a, b, out, n: u32].
// Workgroups may be folded into a 2-D grid when there are more than the
// device's per-dimension limit; the linear index undoes the fold.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;

@compute @workgroup_size(256)
fn zbmd_vector_add(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (group.y * groups.x + group.x) * 256u + lane;
    if i < params.n {
        out[i] = a[i] + b[i];
    }
}
