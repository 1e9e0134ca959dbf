// zbmd_relu_grad: out[i] = grad[i] where x[i] > 0, else 0.
// Arguments: [x, grad, out, n: u32].
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;

@compute @workgroup_size(256)
fn zbmd_relu_grad(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (group.y * groups.x + group.x) * 256u + lane;
    if i < params.n {
        out[i] = select(0.0, grad[i], x[i] > 0.0);
    }
}
