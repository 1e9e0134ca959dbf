// zbmd_softmax: row-wise softmax of a rows x cols matrix, one workgroup of
// 256 per row. Numerically stable: each row's max is subtracted before exp.
// Arguments: [x, out, rows: u32, cols: u32].
struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
var<push_constant> params: Params;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn zbmd_softmax(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // Uniform across the workgroup, so the barriers below stay in uniform
    // control flow even for a folded grid's spare workgroups.
    let row = group.y * groups.x + group.x;
    let live = row < params.rows;
    let base = row * params.cols;

    var row_max = bitcast<f32>(0xff800000u);
    if live {
        for (var i = lane; i < params.cols; i += 256u) {
            row_max = max(row_max, x[base + i]);
        }
    }
    partial[lane] = row_max;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] = max(partial[lane], partial[lane + half]);
        }
        workgroupBarrier();
    }
    row_max = partial[0];
    workgroupBarrier();

    var total = 0.0;
    if live {
        for (var i = lane; i < params.cols; i += 256u) {
            total += exp(x[base + i] - row_max);
        }
    }
    partial[lane] = total;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if lane < half {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    total = partial[0];

    if live {
        for (var i = lane; i < params.cols; i += 256u) {
            out[base + i] = exp(x[base + i] - row_max) / total;
        }
    }
}
