// zbmd_sum: out[0] = sum of x[0..n]. Arguments: [x, out, n: u32].
// One workgroup of 256: each lane sums a grid-stride slice, then a
// shared-memory tree halves the 256 partial sums to one.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn zbmd_sum(@builtin(local_invocation_index) lane: u32) {
    var acc = 0.0;
    for (var i = lane; i < params.n; i += 256u) {
        acc += x[i];
    }
    partial[lane] = acc;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    if lane == 0u {
        out[0] = partial[0];
    }
}
