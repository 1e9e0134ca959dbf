// zbmd_relu: out[i] = max(x[i], 0). Arguments: [x, out, n: u32].
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;

@compute @workgroup_size(256)
fn zbmd_relu(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (group.y * groups.x + group.x) * 256u + lane;
    if i < params.n {
        out[i] = max(x[i], 0.0);
    }
}
