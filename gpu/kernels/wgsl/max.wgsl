// zbmd_max: out[0] = max of x[0..n], -inf for n = 0. Arguments: [x, out, n: u32].
// One workgroup of 256: grid-stride partial maxima, then a shared-memory tree.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn zbmd_max(@builtin(local_invocation_index) lane: u32) {
    // -inf: WGSL has no infinite literal, so build it from its bits.
    var acc = bitcast<f32>(0xff800000u);
    for (var i = lane; i < params.n; i += 256u) {
        acc = max(acc, x[i]);
    }
    partial[lane] = acc;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] = max(partial[lane], partial[lane + half]);
        }
        workgroupBarrier();
    }
    if lane == 0u {
        out[0] = partial[0];
    }
}
