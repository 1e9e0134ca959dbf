//! WGSL to SPIR-V through naga (parse → validate → `spv::write_vec`), and
//! the binding layout a kernel declares, read from naga's module: how many
//! storage buffers (`@group(0) @binding(0..n)`, in argument order) and how
//! many bytes of push constants (the scalars, 4 bytes each).

use naga::back::spv;
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
use naga::valid::{Capabilities, ValidationFlags, Validator};

use crate::device::DeviceId;
use crate::error::GpuError;
use crate::kernel::Kernel;

/// A kernel compiled to SPIR-V, with the layout its pipeline needs.
#[derive(Debug)]
pub(super) struct CompiledShader {
    /// The SPIR-V words.
    pub words: Vec<u32>,
    /// Storage buffers at bindings `0..buffers` of group 0.
    pub buffers: u32,
    /// Bytes of the push-constant block (0 when there is none).
    pub push_bytes: u32,
    /// The entry point's `@workgroup_size`.
    pub workgroup_size: [u32; 3],
}

/// The embedded WGSL source of a standard kernel.
pub(super) fn standard_source(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Empty => include_str!("../../kernels/wgsl/empty.wgsl"),
        Kernel::VectorAdd => include_str!("../../kernels/wgsl/vector_add.wgsl"),
        Kernel::Scale => include_str!("../../kernels/wgsl/scale.wgsl"),
        Kernel::Relu => include_str!("../../kernels/wgsl/relu.wgsl"),
        Kernel::ReluGrad => include_str!("../../kernels/wgsl/relu_grad.wgsl"),
        Kernel::Sum => include_str!("../../kernels/wgsl/sum.wgsl"),
        Kernel::Max => include_str!("../../kernels/wgsl/max.wgsl"),
        Kernel::Softmax => include_str!("../../kernels/wgsl/softmax.wgsl"),
        Kernel::Gemm => include_str!("../../kernels/wgsl/gemm.wgsl"),
    }
}

/// Compiles `entry` of a WGSL `source` to SPIR-V. Parse, validation and
/// code-generation failures are [`GpuError::Compile`] naming `entry`, with
/// naga's report; a layout outside zbmd's convention is
/// [`GpuError::InvalidArgument`].
pub(super) fn compile_wgsl(
    device: DeviceId,
    entry: &str,
    source: &str,
) -> Result<CompiledShader, GpuError> {
    let compile_error = |log: String| GpuError::Compile { device, kernel: entry.to_string(), log };
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|error| compile_error(error.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::PUSH_CONSTANT)
        .validate(&module)
        .map_err(|error| compile_error(error.emit_to_string(source)))?;
    let workgroup_size = module
        .entry_points
        .iter()
        .find(|point| point.name == entry && point.stage == naga::ShaderStage::Compute)
        .map(|point| point.workgroup_size)
        .ok_or_else(|| {
            compile_error(format!("the source has no @compute entry point named `{entry}`"))
        })?;
    let (buffers, push_bytes) = layout(device, entry, &module)?;
    let options = spv::Options {
        // Out-of-range indices from a user's kernel must not reach memory
        // outside its buffers: reads give zero, writes are skipped.
        bounds_check_policies: BoundsCheckPolicies {
            index: BoundsCheckPolicy::Restrict,
            buffer: BoundsCheckPolicy::ReadZeroSkipWrite,
            image_load: BoundsCheckPolicy::Restrict,
            binding_array: BoundsCheckPolicy::Restrict,
        },
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.into(),
    };
    let words = spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|error| compile_error(format!("SPIR-V generation: {error}")))?;
    Ok(CompiledShader { words, buffers, push_bytes, workgroup_size })
}

/// Reads the storage-buffer count and push-constant size from `module`,
/// checking zbmd's convention: buffers at group 0, bindings `0..n`; no other
/// resources; scalars 4 bytes each.
fn layout(device: DeviceId, entry: &str, module: &naga::Module) -> Result<(u32, u32), GpuError> {
    let wrong = |detail: String| GpuError::invalid(device, format!("kernel `{entry}`: {detail}"));
    let mut bindings = Vec::new();
    let mut push_bytes = 0;
    for (_, global) in module.global_variables.iter() {
        let name = global.name.as_deref().unwrap_or("?");
        match global.space {
            naga::AddressSpace::Storage { .. } => match global.binding {
                Some(naga::ResourceBinding { group: 0, binding }) => bindings.push(binding),
                other => {
                    return Err(wrong(format!(
                        "storage buffer `{name}` must be at @group(0), found {other:?}"
                    )));
                }
            },
            naga::AddressSpace::PushConstant => {
                push_bytes = module.types[global.ty].inner.size(module.to_ctx());
            }
            naga::AddressSpace::Function
            | naga::AddressSpace::Private
            | naga::AddressSpace::WorkGroup => {}
            other => {
                return Err(wrong(format!(
                    "`{name}` is in address space {other:?}; only storage buffers and one \
                     push-constant block are supported"
                )));
            }
        }
    }
    bindings.sort_unstable();
    if bindings.iter().enumerate().any(|(index, &binding)| binding != index as u32) {
        return Err(wrong(format!(
            "storage buffers must use bindings 0, 1, ... in argument order, found {bindings:?}"
        )));
    }
    if push_bytes % 4 != 0 {
        return Err(wrong(format!("push constants are {push_bytes} bytes, not 4 per scalar")));
    }
    Ok((bindings.len() as u32, push_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::BackendKind;

    const ID: DeviceId = DeviceId::new(BackendKind::Vulkan, 0);

    #[test]
    fn every_standard_kernel_compiles_with_its_arity() {
        for kernel in Kernel::ALL {
            let shader = compile_wgsl(ID, kernel.name(), standard_source(kernel))
                .unwrap_or_else(|error| panic!("{}: {error}", kernel.name()));
            let (buffers, scalars) = kernel.arity();
            assert_eq!(shader.buffers as usize, buffers, "{}", kernel.name());
            assert_eq!(shader.push_bytes as usize, 4 * scalars, "{}", kernel.name());
            assert_eq!(shader.words[0], 0x0723_0203, "SPIR-V magic");
        }
    }

    #[test]
    fn a_missing_entry_point_is_a_compile_error_naming_it() {
        let error = compile_wgsl(ID, "nope", standard_source(Kernel::Relu)).unwrap_err();
        assert!(matches!(&error, GpuError::Compile { kernel, .. } if kernel == "nope"), "{error}");
    }

    #[test]
    fn buffers_with_a_gap_in_their_bindings_are_rejected() {
        let source = "@group(0) @binding(1) var<storage, read_write> x: array<f32>;\n\
                      @compute @workgroup_size(1) fn k() { x[0] = 1.0; }";
        let error = compile_wgsl(ID, "k", source).unwrap_err();
        assert!(matches!(error, GpuError::InvalidArgument { .. }), "{error}");
    }
}
