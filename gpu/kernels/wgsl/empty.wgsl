// zbmd_empty: does nothing; measures launch overhead. Arguments: [n: u32].
struct Params {
    n: u32,
}

var<push_constant> params: Params;

@compute @workgroup_size(256)
fn zbmd_empty() {
}
