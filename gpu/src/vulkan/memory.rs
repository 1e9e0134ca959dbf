//! Buffers and their memory: one `vkAllocateMemory` per buffer, from the
//! first memory type that fits in the order a placement prefers. Storage
//! buffers prefer memory both device-local and host-visible-coherent (what
//! lavapipe, integrated GPUs and resizable-BAR GPUs offer), which the host
//! reads and writes through a persistent mapping; else device-local memory,
//! reached through a staging buffer.

use std::ptr::NonNull;

use ash::vk;

use super::raw::{Shared, vk_error};
use crate::error::GpuError;

/// Where a buffer's memory should live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// A storage buffer: device-local and mapped if offered, else device-local.
    Storage,
    /// A storage buffer never mapped (tests of the staging path).
    StorageUnmapped,
    /// A staging buffer: host-visible and coherent, mapped.
    Staging,
}

/// A persistent host mapping of a whole allocation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapping(NonNull<u8>);

// SAFETY: the pointer names device memory mapped for the allocation's whole
// life; it is only dereferenced under the device's state lock, so moving the
// handle between threads is no different from moving the `vk::DeviceMemory`.
unsafe impl Send for Mapping {}

/// A buffer, its memory and (when host-visible) its mapping.
#[derive(Debug)]
pub(super) struct Allocation {
    pub buffer: vk::Buffer,
    pub memory: vk::DeviceMemory,
    /// The size the caller asked for.
    pub bytes: usize,
    /// The Vulkan buffer's size: `bytes` rounded up to whole `f32`s, at least 4.
    pub size: u64,
    pub mapping: Option<Mapping>,
}

impl Allocation {
    /// Creates a buffer of `bytes` with its own memory.
    pub fn create(shared: &Shared, bytes: usize, placement: Placement) -> Result<Self, GpuError> {
        let size = (bytes.max(4).div_ceil(4) * 4) as u64;
        let usage = vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::TRANSFER_SRC
            | vk::BufferUsageFlags::TRANSFER_DST;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: `info` is valid: non-zero size, exclusive to one queue family.
        let buffer = unsafe { shared.raw.create_buffer(&info, None) }
            .map_err(|result| oom(shared, "vkCreateBuffer", result, bytes))?;
        match Self::bind_memory(shared, buffer, placement, bytes) {
            Ok((memory, mapping)) => Ok(Allocation { buffer, memory, bytes, size, mapping }),
            Err(error) => {
                // SAFETY: the buffer was just created and nothing uses it.
                unsafe { shared.raw.destroy_buffer(buffer, None) };
                Err(error)
            }
        }
    }

    fn bind_memory(
        shared: &Shared,
        buffer: vk::Buffer,
        placement: Placement,
        bytes: usize,
    ) -> Result<(vk::DeviceMemory, Option<Mapping>), GpuError> {
        // SAFETY: `buffer` is a live buffer of this device.
        let needs = unsafe { shared.raw.get_buffer_memory_requirements(buffer) };
        let (type_index, mapped) = choose_type(shared, needs.memory_type_bits, placement)
            .ok_or_else(|| {
                GpuError::invalid(shared.id, format!("no memory type fits a {placement:?} buffer"))
            })?;
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(needs.size)
            .memory_type_index(type_index);
        // SAFETY: the type index is one the buffer accepts; the size is its need.
        let memory = unsafe { shared.raw.allocate_memory(&info, None) }
            .map_err(|result| oom(shared, "vkAllocateMemory", result, bytes))?;
        let bound = (|| {
            // SAFETY: fresh memory of a type the buffer accepts, offset 0.
            unsafe { shared.raw.bind_buffer_memory(buffer, memory, 0) }
                .map_err(|result| oom(shared, "vkBindBufferMemory", result, bytes))?;
            if !mapped {
                return Ok(None);
            }
            // SAFETY: the memory is host-visible (chosen so) and not yet mapped.
            let pointer = unsafe {
                shared.raw.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
            }
            .map_err(|result| oom(shared, "vkMapMemory", result, bytes))?;
            Ok(NonNull::new(pointer.cast::<u8>()).map(Mapping))
        })();
        match bound {
            Ok(mapping) => Ok((memory, mapping)),
            Err(error) => {
                // SAFETY: the memory is not in use by any queued work.
                unsafe { shared.raw.free_memory(memory, None) };
                Err(error)
            }
        }
    }

    /// Destroys the buffer and frees its memory (unmapped implicitly).
    ///
    /// # Safety
    /// No pending or executing queue work may use the buffer.
    pub unsafe fn destroy(&self, shared: &Shared) {
        // SAFETY: the caller guarantees the buffer is idle; freeing memory
        // unmaps it (vkFreeMemory's implicit unmap).
        unsafe {
            shared.raw.destroy_buffer(self.buffer, None);
            shared.raw.free_memory(self.memory, None);
        }
    }

    /// Copies `src` into the mapping at `offset`. The caller has checked the
    /// range and that no queued work uses the bytes.
    pub fn write_mapped(&self, offset: usize, src: &[u8]) {
        let mapping = self.mapping.expect("write_mapped on an unmapped buffer");
        assert!(offset + src.len() <= self.bytes, "write_mapped out of range");
        // SAFETY: the mapping covers `size >= bytes` bytes and the range is
        // inside it (asserted); coherent memory needs no flush; `src` is host
        // memory, so the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), mapping.0.as_ptr().add(offset), src.len())
        };
    }

    /// Copies from the mapping at `offset` into `dst`; the caller has checked
    /// the range and waited for the work that wrote it.
    pub fn read_mapped(&self, offset: usize, dst: &mut [u8]) {
        let mapping = self.mapping.expect("read_mapped on an unmapped buffer");
        assert!(offset + dst.len() <= self.bytes, "read_mapped out of range");
        // SAFETY: as in `write_mapped`; the writer's work finished and a
        // barrier made its writes visible to the host.
        unsafe {
            std::ptr::copy_nonoverlapping(
                mapping.0.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
    }
}

/// The first memory type among `allowed` that suits `placement`, and
/// whether to map it.
fn choose_type(shared: &Shared, allowed: u32, placement: Placement) -> Option<(u32, bool)> {
    use vk::MemoryPropertyFlags as F;
    let host = F::HOST_VISIBLE | F::HOST_COHERENT;
    let preferences: &[(F, bool)] = match placement {
        Placement::Storage => {
            &[(F::DEVICE_LOCAL | host, true), (F::DEVICE_LOCAL, false), (host, true)]
        }
        Placement::StorageUnmapped => &[(F::DEVICE_LOCAL, false), (F::empty(), false)],
        Placement::Staging => &[(host, true)],
    };
    let types = &shared.memory.memory_types[..shared.memory.memory_type_count as usize];
    preferences.iter().find_map(|&(flags, mapped)| {
        types
            .iter()
            .enumerate()
            .find(|(index, kind)| {
                allowed & (1 << index) != 0 && kind.property_flags.contains(flags)
            })
            .map(|(index, _)| (index as u32, mapped))
    })
}

fn oom(shared: &Shared, call: &str, result: vk::Result, bytes: usize) -> GpuError {
    match vk_error(shared.id, call, result) {
        GpuError::OutOfMemory { device, free_bytes, .. } => {
            GpuError::OutOfMemory { device, requested_bytes: bytes, free_bytes }
        }
        other => other,
    }
}
