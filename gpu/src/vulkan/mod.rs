//! The Vulkan backend: any Vulkan 1.2+ device with a compute queue and
//! timeline semaphores, through `ash`; kernels are WGSL compiled to SPIR-V
//! by naga. Runs for real on Mesa's lavapipe (a CPU implementation), which
//! is how it is tested without a GPU.
//!
//! - `raw`: instance, logical device, timeline semaphores, error mapping.
//! - `memory`: buffers, each with its own allocation; mapped when the
//!   device offers host-visible device memory, else reached by staging.
//! - `stream`: streams as batches of commands on the one compute queue.
//! - `shader`: WGSL → SPIR-V and the binding layout a kernel declares.
//! - `pipeline`: compute pipelines for loaded kernels.
//! - `record`: the device's lookups, range checks and command recording,
//!   shared by the `Device` methods below.
//!
//! Events are `(timeline semaphore, value)` pairs: recording one submits the
//! stream's open batch and names the value it will signal; `wait_event`
//! makes the waiting stream's next submission wait for that value, and
//! `event_synchronize` waits for it on the host.
//!
//! All bookkeeping sits behind one lock; long waits (`synchronize`,
//! `read`, `write`, `event_synchronize`) run with the lock released.

mod memory;
mod pipeline;
mod raw;
mod record;
mod shader;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ash::vk;

use self::memory::{Allocation, Placement};
use self::raw::{Instance, Shared, Timeline, vk_error};
use self::stream::{MAX_BINDINGS, StreamState};
use crate::device::{
    Arg, BackendKind, Buffer, Device, DeviceId, DeviceInfo, Event, Gemm, HealthReport,
    KernelHandle, LaunchConfig, MemoryInfo, Stream,
};
use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource};
use crate::launch::{gemm_args, gemm_config};

/// Buffers per device: far above what a training step keeps alive (the
/// pool recycles), low enough that a leak shows up as an error.
const MAX_BUFFERS: usize = 16_384;
/// Streams per device: a few per kernel actor.
const MAX_STREAMS: usize = 64;
/// Live events per device.
const MAX_EVENTS: usize = 4_096;
/// Loaded kernels per device: the nine standard ones and user kernels.
const MAX_KERNELS: usize = 256;

/// Tags handles with the device that made them, so another device's handle
/// is caught instead of naming an unrelated entry.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
/// Bits of a buffer or event id below the device tag.
const TAG_SHIFT: u32 = 40;

/// How a [`VulkanDevice`] is opened.
#[derive(Debug, Clone)]
pub struct VulkanConfig {
    /// The longest a host wait (synchronize, read, events) blocks before it
    /// reports [`GpuError::KernelTimeout`].
    pub wait_timeout: Duration,
    /// Keeps buffers unmapped and moves data through staging buffers even
    /// where device memory is host-visible: the discrete-GPU path, testable
    /// on lavapipe.
    pub force_staging: bool,
}

impl Default for VulkanConfig {
    fn default() -> Self {
        // Two minutes: a large GEMM on lavapipe takes seconds, and a real
        // hang is still reported well before a job's own timeout.
        VulkanConfig { wait_timeout: Duration::from_secs(120), force_staging: false }
    }
}

/// A compiled kernel's pipeline and layout.
struct Pipeline {
    name: String,
    standard: Option<Kernel>,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    buffers: u32,
    push_bytes: u32,
    workgroup_size: [u32; 3],
}

#[derive(Default)]
struct State {
    buffers: HashMap<u64, Allocation>,
    next_buffer: u64,
    streams: HashMap<u32, StreamState>,
    next_stream: u32,
    events: HashMap<u64, (Arc<Timeline>, u64)>,
    next_event: u64,
    kernels: Vec<Pipeline>,
    standard: HashMap<Kernel, KernelHandle>,
}

/// One Vulkan physical device, opened with one compute queue.
pub struct VulkanDevice {
    shared: Arc<Shared>,
    info: DeviceInfo,
    config: VulkanConfig,
    tag: u64,
    state: Mutex<State>,
    /// Bytes of buffer memory this device holds, for `memory()` without
    /// VK_EXT_memory_budget.
    allocated: AtomicU64,
}

/// Opens every usable Vulkan device, ordinal = physical-device index.
/// No loader or driver, or no usable device, is [`GpuError::NotAvailable`].
pub(crate) fn open_all() -> Result<Vec<Arc<dyn Device>>, GpuError> {
    let instance = Instance::create()?;
    let physical = enumerate(&instance)?;
    let mut devices: Vec<Arc<dyn Device>> = Vec::new();
    let mut skipped = Vec::new();
    for (index, &device) in physical.iter().enumerate() {
        let opened = raw::inspect(&instance, device)
            .map_err(|reason| GpuError::NotAvailable { backend: BackendKind::Vulkan, reason })
            .and_then(|candidate| {
                VulkanDevice::from_candidate(
                    Arc::clone(&instance),
                    &candidate,
                    index as u32,
                    VulkanConfig::default(),
                )
            });
        match opened {
            Ok(device) => devices.push(Arc::new(device)),
            Err(error) => {
                tracing::warn!(ordinal = index, %error, "vulkan device skipped");
                skipped.push(format!("device {index}: {error}"));
            }
        }
    }
    if devices.is_empty() {
        let reason = if skipped.is_empty() {
            "no device".to_string()
        } else {
            format!("no device ({})", skipped.join("; "))
        };
        return Err(GpuError::NotAvailable { backend: BackendKind::Vulkan, reason });
    }
    Ok(devices)
}

fn enumerate(instance: &Instance) -> Result<Vec<vk::PhysicalDevice>, GpuError> {
    // SAFETY: the instance is live.
    unsafe { instance.raw.enumerate_physical_devices() }.map_err(|result| GpuError::NotAvailable {
        backend: BackendKind::Vulkan,
        reason: format!("no device: vkEnumeratePhysicalDevices: {result:?}"),
    })
}

impl VulkanDevice {
    /// Opens physical device number `ordinal` with `config`.
    pub fn open(ordinal: u32, config: VulkanConfig) -> Result<VulkanDevice, GpuError> {
        let instance = Instance::create()?;
        let physical = enumerate(&instance)?;
        let not_available =
            |reason: String| GpuError::NotAvailable { backend: BackendKind::Vulkan, reason };
        let device = *physical.get(ordinal as usize).ok_or_else(|| {
            not_available(format!("no device: ordinal {ordinal} of {}", physical.len()))
        })?;
        let candidate = raw::inspect(&instance, device)
            .map_err(|reason| not_available(format!("device {ordinal}: {reason}")))?;
        Self::from_candidate(instance, &candidate, ordinal, config)
    }

    fn from_candidate(
        instance: Arc<Instance>,
        candidate: &raw::Candidate,
        ordinal: u32,
        config: VulkanConfig,
    ) -> Result<VulkanDevice, GpuError> {
        let id = DeviceId::new(BackendKind::Vulkan, ordinal);
        let shared = Shared::create(instance, candidate, id)?;
        let properties = &candidate.properties;
        let kind = match properties.device_type {
            vk::PhysicalDeviceType::CPU => "cpu",
            vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
            vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
            vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
            _ => "other",
        };
        let memory_total_bytes =
            shared.device_local_heaps().map(|heap| shared.memory.memory_heaps[heap].size).sum();
        let info = DeviceInfo {
            id,
            name: raw::device_name(properties),
            memory_total_bytes,
            capability: format!(
                "Vulkan {}.{} ({kind})",
                vk::api_version_major(properties.api_version),
                vk::api_version_minor(properties.api_version)
            ),
            is_software: properties.device_type == vk::PhysicalDeviceType::CPU,
            max_block_threads: properties.limits.max_compute_work_group_invocations,
        };
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        Ok(VulkanDevice {
            shared,
            info,
            config,
            tag,
            state: Mutex::new(State::default()),
            allocated: AtomicU64::new(0),
        })
    }
}

impl Device for VulkanDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let total_bytes = self.info.memory_total_bytes;
        let free_bytes = if self.shared.has_budget {
            self.shared.budget_free()
        } else {
            total_bytes.saturating_sub(self.allocated.load(Ordering::Relaxed))
        };
        Ok(MemoryInfo { free_bytes: free_bytes.min(total_bytes), total_bytes })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        let free_bytes = self.memory()?.free_bytes as usize;
        if bytes as u64 > self.info.memory_total_bytes {
            return Err(GpuError::OutOfMemory {
                device: self.info.id,
                requested_bytes: bytes,
                free_bytes,
            });
        }
        let mut state = self.lock();
        if state.buffers.len() >= MAX_BUFFERS {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "buffers",
                limit: MAX_BUFFERS,
            });
        }
        let placement =
            if self.config.force_staging { Placement::StorageUnmapped } else { Placement::Storage };
        let allocation =
            Allocation::create(&self.shared, bytes, placement).map_err(|error| match error {
                GpuError::OutOfMemory { device, requested_bytes, .. } => {
                    GpuError::OutOfMemory { device, requested_bytes, free_bytes }
                }
                other => other,
            })?;
        self.allocated.fetch_add(allocation.size, Ordering::Relaxed);
        let mut counter = state.next_buffer;
        let id = self.next_id(&mut counter);
        state.next_buffer = counter;
        state.buffers.insert(id, allocation);
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        let mut state = self.lock();
        self.buffer(&state, buffer)?;
        let timeout_ns = self.timeout_ns();
        for entry in state.streams.values_mut() {
            entry.flush(&self.shared, timeout_ns)?;
        }
        {
            let queue = self.shared.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // SAFETY: the queue is locked for the wait.
            unsafe { self.shared.raw.queue_wait_idle(*queue) }
                .map_err(|result| vk_error(self.info.id, "vkQueueWaitIdle", result))?;
        }
        let allocation = state.buffers.remove(&buffer.id).expect("looked up above");
        // SAFETY: every stream was flushed and the queue is idle, so no
        // queued work uses the buffer; its handle left the table.
        unsafe { allocation.destroy(&self.shared) };
        self.allocated.fetch_sub(allocation.size, Ordering::Relaxed);
        Ok(())
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        let mut state = self.lock();
        self.check_range("write", dst, offset, src.len())?;
        let target = self.buffer(&state, dst)?;
        if target.mapping.is_some() {
            let state = self.drain(state, stream)?;
            self.buffer(&state, dst)?.write_mapped(offset, src);
            return Ok(());
        }
        let target = target.buffer;
        let staging = Allocation::create(&self.shared, src.len(), Placement::Staging)?;
        staging.write_mapped(0, src);
        let region =
            vk::BufferCopy { src_offset: 0, dst_offset: offset as u64, size: src.len() as u64 };
        let recorded = self
            .stream(&mut state, stream)
            .and_then(|entry| self.record_copy(entry, staging.buffer, target, region));
        let drained = recorded.and_then(|()| self.drain(state, stream));
        // SAFETY: the copy finished (drain waited for it) or was never
        // recorded. On a failed wait the staging buffer is leaked instead.
        drained.map(|_state| unsafe { staging.destroy(&self.shared) })
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        let mut state = self.lock();
        self.check_range("read", src, offset, dst.len())?;
        let source = self.buffer(&state, src)?;
        if source.mapping.is_some() {
            let state = self.drain(state, stream)?;
            self.buffer(&state, src)?.read_mapped(offset, dst);
            return Ok(());
        }
        let source = source.buffer;
        let staging = Allocation::create(&self.shared, dst.len(), Placement::Staging)?;
        let region =
            vk::BufferCopy { src_offset: offset as u64, dst_offset: 0, size: dst.len() as u64 };
        let recorded = self
            .stream(&mut state, stream)
            .and_then(|entry| self.record_copy(entry, source, staging.buffer, region));
        let _state = recorded.and_then(|()| self.drain(state, stream))?;
        staging.read_mapped(0, dst);
        // SAFETY: the copy into the staging buffer finished (drain waited).
        unsafe { staging.destroy(&self.shared) };
        Ok(())
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        let mut state = self.lock();
        self.check_range("copy source", src, 0, bytes)?;
        self.check_range("copy destination", dst, 0, bytes)?;
        let from = self.buffer(&state, src)?.buffer;
        let to = self.buffer(&state, dst)?.buffer;
        if bytes == 0 {
            return Ok(());
        }
        let entry = self.stream(&mut state, stream)?;
        self.record_copy(
            entry,
            from,
            to,
            vk::BufferCopy { src_offset: 0, dst_offset: 0, size: bytes as u64 },
        )
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        let mut state = self.lock();
        if state.streams.len() >= MAX_STREAMS {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "streams",
                limit: MAX_STREAMS,
            });
        }
        let entry = StreamState::create(&self.shared)?;
        state.next_stream = state.next_stream.wrapping_add(1);
        while state.streams.contains_key(&state.next_stream) {
            state.next_stream = state.next_stream.wrapping_add(1);
        }
        let id = state.next_stream;
        state.streams.insert(id, entry);
        Ok(Stream(id))
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        let mut state = self.drain(self.lock(), stream)?;
        let mut entry = state.streams.remove(&stream.0).expect("drain checked the stream");
        // SAFETY: drain waited for every batch the stream submitted and it
        // left the table, so nothing records into it again.
        unsafe { entry.destroy(&self.shared) };
        Ok(())
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        self.drain(self.lock(), stream).map(drop)
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        let mut state = self.lock();
        if state.events.len() >= MAX_EVENTS {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "events",
                limit: MAX_EVENTS,
            });
        }
        let timeout_ns = self.timeout_ns();
        let entry = self.stream(&mut state, stream)?;
        entry.flush(&self.shared, timeout_ns)?;
        let point = (Arc::clone(&entry.timeline), entry.submitted);
        let mut counter = state.next_event;
        let id = self.next_id(&mut counter);
        state.next_event = counter;
        state.events.insert(id, point);
        Ok(Event(id))
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        let mut state = self.lock();
        let (timeline, value) = state
            .events
            .get(&event.0)
            .map(|(timeline, value)| (Arc::clone(timeline), *value))
            .ok_or_else(|| {
                self.invalid(format!("event {:#x} is destroyed or not of this device", event.0))
            })?;
        let entry = self.stream(&mut state, stream)?;
        if !Arc::ptr_eq(&timeline, &entry.timeline) && timeline.reached()? < value {
            entry.add_wait(timeline, value);
        }
        Ok(())
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        let (timeline, value) = {
            let state = self.lock();
            let (timeline, value) = state.events.get(&event.0).ok_or_else(|| {
                self.invalid(format!("event {:#x} is destroyed or not of this device", event.0))
            })?;
            (Arc::clone(timeline), *value)
        };
        if timeline.wait(value, self.timeout_ns())? {
            Ok(())
        } else {
            Err(GpuError::KernelTimeout {
                device: self.info.id,
                kernel: format!("event {:#x}", event.0),
            })
        }
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        self.lock().events.remove(&event.0).map(drop).ok_or_else(|| {
            self.invalid(format!("event {:#x} is destroyed or not of this device", event.0))
        })
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        let mut state = self.lock();
        if let Some(&handle) = state.standard.get(&kernel) {
            return Ok(handle);
        }
        let handle = self.create_pipeline(
            &mut state,
            kernel.name(),
            Some(kernel),
            shader::standard_source(kernel),
        )?;
        state.standard.insert(kernel, handle);
        Ok(handle)
    }

    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError> {
        let KernelSource::Wgsl { entry, source } = source else {
            let language = match source {
                KernelSource::Cuda { .. } => "CUDA C",
                KernelSource::Hip { .. } => "HIP",
                _ => "a CPU function",
            };
            return Err(self.invalid(format!(
                "kernel `{}`: Vulkan compiles WGSL, not {language}",
                source.entry()
            )));
        };
        self.create_pipeline(&mut self.lock(), entry, None, source)
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        let mut state = self.lock();
        let pipeline = state.kernels.get(kernel.0 as usize).ok_or_else(|| {
            self.invalid(format!("kernel handle {} is not loaded here", kernel.0))
        })?;
        let grid = self.dispatch_grid(pipeline, config)?;
        let (buffers, push) = self.split_args(&state, pipeline, args)?;
        let (layout, set_layout, raw_pipeline) =
            (pipeline.layout, pipeline.set_layout, pipeline.pipeline);
        let name = pipeline.name.clone();
        let timeout_ns = self.timeout_ns();
        let entry = self.stream(&mut state, stream)?;
        let (cmd, pool) = entry.begin_command(&self.shared, timeout_ns)?;
        entry.last_kernel = name;
        let binding = pipeline::Binding { layout, set_layout, pipeline: raw_pipeline };
        pipeline::record_dispatch(&self.shared, cmd, pool, &binding, &buffers, &push, grid)
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.info.id)?;
        let handle = self.load_kernel(Kernel::Gemm)?;
        let args = gemm_args(self, gemm)?;
        self.launch(stream, handle, gemm_config(gemm), &args)
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        let (responsive, detail) = match self.shared.ping(self.timeout_ns()) {
            Ok(()) => (true, "fence round trip on the compute queue".to_string()),
            Err(error) => (false, error.to_string()),
        };
        Ok(HealthReport { responsive, ecc_corrected: None, ecc_uncorrected: None, detail })
    }
}

impl Drop for VulkanDevice {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: waiting idle first means no queued work uses any object
        // destroyed below; `&mut self` means no call is in progress.
        unsafe {
            let _ = self.shared.raw.device_wait_idle();
            for entry in state.streams.values_mut() {
                entry.destroy(&self.shared);
            }
            for allocation in state.buffers.values() {
                allocation.destroy(&self.shared);
            }
            for kernel in &state.kernels {
                pipeline::destroy(&self.shared, kernel.set_layout, kernel.layout, kernel.pipeline);
            }
        }
        state.streams.clear();
        state.buffers.clear();
        state.kernels.clear();
        // Events and timelines drop with `state`, then `shared` (the device).
    }
}
