//! Compute pipelines: a shader module from SPIR-V, a descriptor set layout
//! with one storage buffer per buffer argument, a pipeline layout with the
//! scalars' push-constant range; and recording one dispatch of them.

use ash::vk;

use super::raw::{Shared, vk_error};
use super::shader::CompiledShader;
use crate::error::GpuError;

/// The objects a dispatch binds.
pub(super) struct Binding {
    pub layout: vk::PipelineLayout,
    pub set_layout: vk::DescriptorSetLayout,
    pub pipeline: vk::Pipeline,
}

/// Creates the set layout, pipeline layout and pipeline for `compiled`.
pub(super) fn create(
    shared: &Shared,
    entry: &str,
    compiled: &CompiledShader,
) -> Result<(vk::DescriptorSetLayout, vk::PipelineLayout, vk::Pipeline), GpuError> {
    let id = shared.id;
    let entry = std::ffi::CString::new(entry)
        .map_err(|_| GpuError::invalid(id, format!("kernel name {entry:?} holds a NUL byte")))?;
    let module_info = vk::ShaderModuleCreateInfo::default().code(&compiled.words);
    // SAFETY: the words are SPIR-V that naga generated from a validated module.
    let module = unsafe { shared.raw.create_shader_module(&module_info, None) }
        .map_err(|result| vk_error(id, "vkCreateShaderModule", result))?;
    let bindings: Vec<_> = (0..compiled.buffers)
        .map(|binding| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(binding)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        })
        .collect();
    let set_info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
    let ranges = [vk::PushConstantRange::default()
        .stage_flags(vk::ShaderStageFlags::COMPUTE)
        .offset(0)
        .size(compiled.push_bytes)];
    let push: &[vk::PushConstantRange] = if compiled.push_bytes > 0 { &ranges } else { &[] };
    let mut set_layout = vk::DescriptorSetLayout::null();
    let mut layout = vk::PipelineLayout::null();
    let created = (|| {
        // SAFETY: bindings are distinct, each one storage buffer for compute.
        set_layout = unsafe { shared.raw.create_descriptor_set_layout(&set_info, None) }
            .map_err(|result| vk_error(id, "vkCreateDescriptorSetLayout", result))?;
        let set_layouts = [set_layout];
        let layout_info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&set_layouts)
            .push_constant_ranges(push);
        // SAFETY: the set layout is live; the push range is within the
        // device's maxPushConstantsSize (checked by the caller) and a multiple of 4.
        layout = unsafe { shared.raw.create_pipeline_layout(&layout_info, None) }
            .map_err(|result| vk_error(id, "vkCreatePipelineLayout", result))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(&entry);
        let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout);
        // SAFETY: the module has a compute entry point of this name (naga
        // checked it) whose resources match the layout (read from the module).
        unsafe { shared.raw.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) }
            .map(|pipelines| pipelines[0])
            .map_err(|(_, result)| vk_error(id, "vkCreateComputePipelines", result))
    })();
    // SAFETY: pipeline creation is over; a module may be destroyed after it.
    unsafe { shared.raw.destroy_shader_module(module, None) };
    match created {
        Ok(pipeline) => Ok((set_layout, layout, pipeline)),
        Err(error) => {
            // SAFETY: the objects are unused (no pipeline was made from them);
            // destroying a null handle is a no-op.
            unsafe { destroy(shared, set_layout, layout, vk::Pipeline::null()) };
            Err(error)
        }
    }
}

/// Destroys a kernel's objects.
///
/// # Safety
/// No pending or executing work may use them.
pub(super) unsafe fn destroy(
    shared: &Shared,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
) {
    // SAFETY: the caller guarantees the objects are idle; null handles are no-ops.
    unsafe {
        shared.raw.destroy_pipeline(pipeline, None);
        shared.raw.destroy_pipeline_layout(layout, None);
        shared.raw.destroy_descriptor_set_layout(set_layout, None);
    }
}

/// Records one dispatch: a descriptor set from `pool` naming `buffers`,
/// the push constants, and `grid` workgroups.
pub(super) fn record_dispatch(
    shared: &Shared,
    cmd: vk::CommandBuffer,
    pool: vk::DescriptorPool,
    binding: &Binding,
    buffers: &[vk::Buffer],
    push: &[u8],
    grid: [u32; 3],
) -> Result<(), GpuError> {
    let set_layouts = [binding.set_layout];
    let info =
        vk::DescriptorSetAllocateInfo::default().descriptor_pool(pool).set_layouts(&set_layouts);
    // SAFETY: the pool is the open batch's, sized for one set per command of
    // the batch with up to MAX_BINDINGS storage buffers each.
    let set = unsafe { shared.raw.allocate_descriptor_sets(&info) }
        .map_err(|result| vk_error(shared.id, "vkAllocateDescriptorSets", result))?[0];
    let infos: Vec<_> = buffers
        .iter()
        .map(|&buffer| {
            [vk::DescriptorBufferInfo::default().buffer(buffer).offset(0).range(vk::WHOLE_SIZE)]
        })
        .collect();
    let writes: Vec<_> = infos
        .iter()
        .enumerate()
        .map(|(index, info)| {
            vk::WriteDescriptorSet::default()
                .dst_set(set)
                .dst_binding(index as u32)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .buffer_info(info)
        })
        .collect();
    // SAFETY: the set is fresh (not bound by any command yet); each write
    // names a live storage buffer at a binding the layout declares; the
    // buffers' sizes are within maxStorageBufferRange (checked by the caller).
    unsafe { shared.raw.update_descriptor_sets(&writes, &[]) };
    // SAFETY: the command buffer is recording outside a render pass; the
    // pipeline, layout and set agree (made together); the push bytes are
    // exactly the layout's range; the grid is within the device's limits.
    unsafe {
        shared.raw.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, binding.pipeline);
        shared.raw.cmd_bind_descriptor_sets(
            cmd,
            vk::PipelineBindPoint::COMPUTE,
            binding.layout,
            0,
            &[set],
            &[],
        );
        if !push.is_empty() {
            shared.raw.cmd_push_constants(
                cmd,
                binding.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                push,
            );
        }
        shared.raw.cmd_dispatch(cmd, grid[0], grid[1], grid[2]);
    }
    Ok(())
}
