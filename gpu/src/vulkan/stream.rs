//! Streams: a command pool, batches of recorded commands, and a timeline
//! semaphore on the device's one compute queue.
//!
//! Commands are recorded into the stream's open batch (a command buffer
//! plus the descriptor pool its launches draw from) and submitted when the
//! host needs their effect (`synchronize`, `read`, `write`, events, `free`)
//! or the batch holds [`BATCH_COMMANDS`] commands. Each submission signals
//! the stream's timeline with the next value, so "the stream's work up to
//! here" is one `(semaphore, value)` pair: events are such pairs, and
//! `wait_event` adds one to the stream's next submission's waits.
//!
//! Order inside a stream comes from a global memory barrier before every
//! command (compute and transfer writes → compute and transfer accesses);
//! a barrier's first scope is all work earlier in submission order on the
//! queue, earlier batches included. A batch ends with a barrier that makes
//! its writes visible to host reads. Finished batches are reset and reused;
//! at most [`MAX_IN_FLIGHT`] are pending per stream, and a further flush
//! first waits for the oldest (back-pressure rather than unbounded growth).

use std::collections::VecDeque;
use std::sync::Arc;

use ash::vk;

use super::raw::{Shared, Timeline, vk_error};
use crate::error::GpuError;

/// Commands per batch: enough to amortise a submission over many small
/// launches, few enough that work starts soon without a synchronize.
pub(super) const BATCH_COMMANDS: u32 = 64;

/// Storage buffers one launch may bind (the standard kernels use 3).
pub(super) const MAX_BINDINGS: u32 = 8;

/// Batches submitted and not yet known finished, per stream.
pub(super) const MAX_IN_FLIGHT: usize = 8;

/// One command buffer and the descriptor pool of its launches.
struct Batch {
    cmd: vk::CommandBuffer,
    descriptors: vk::DescriptorPool,
    commands: u32,
    /// Other streams' timelines this batch waits on, kept alive until it ends.
    keep: Vec<Arc<Timeline>>,
}

/// One stream's Vulkan objects and bookkeeping.
pub(super) struct StreamState {
    pool: vk::CommandPool,
    /// Signalled with 1, 2, ... as this stream's submissions finish.
    pub timeline: Arc<Timeline>,
    /// The value the latest submission signals.
    pub submitted: u64,
    open: Option<Batch>,
    in_flight: VecDeque<(Batch, u64)>,
    spare: Vec<Batch>,
    /// Waits for the next submission: other streams' events.
    waits: Vec<(Arc<Timeline>, u64)>,
    /// The last kernel recorded, to name in a timeout.
    pub last_kernel: String,
}

impl StreamState {
    /// A stream with no work.
    pub fn create(shared: &Arc<Shared>) -> Result<Self, GpuError> {
        let timeline = Timeline::create(shared)?;
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(shared.queue_family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: the queue family is the device's compute family.
        let pool = unsafe { shared.raw.create_command_pool(&info, None) }
            .map_err(|result| vk_error(shared.id, "vkCreateCommandPool", result))?;
        Ok(StreamState {
            pool,
            timeline,
            submitted: 0,
            open: None,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            waits: Vec::new(),
            last_kernel: "(no kernel)".into(),
        })
    }

    /// Opens room for one more command: returns the command buffer to
    /// record into (a barrier already recorded ahead of the command) and the
    /// descriptor pool for its sets. Flushes a full batch first.
    pub fn begin_command(
        &mut self,
        shared: &Shared,
        timeout_ns: u64,
    ) -> Result<(vk::CommandBuffer, vk::DescriptorPool), GpuError> {
        if self.open.as_ref().is_some_and(|batch| batch.commands >= BATCH_COMMANDS) {
            self.flush(shared, timeout_ns)?;
        }
        if self.open.is_none() {
            let batch = match self.spare.pop() {
                Some(batch) => batch,
                None => self.new_batch(shared)?,
            };
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: the command buffer is in the initial state (new, or
            // reset after its last submission finished).
            unsafe { shared.raw.begin_command_buffer(batch.cmd, &begin) }
                .map_err(|result| vk_error(shared.id, "vkBeginCommandBuffer", result))?;
            self.open = Some(batch);
        }
        let batch = self.open.as_mut().expect("a batch was just opened");
        batch.commands += 1;
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(
                vk::AccessFlags::SHADER_READ
                    | vk::AccessFlags::SHADER_WRITE
                    | vk::AccessFlags::TRANSFER_READ
                    | vk::AccessFlags::TRANSFER_WRITE,
            );
        let stages = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
        // SAFETY: the command buffer is recording; the barrier is outside a
        // render pass and names stages the compute queue supports.
        unsafe {
            shared.raw.cmd_pipeline_barrier(
                batch.cmd,
                stages,
                stages,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
        Ok((batch.cmd, batch.descriptors))
    }

    fn new_batch(&mut self, shared: &Shared) -> Result<Batch, GpuError> {
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is this stream's, used only under the state lock.
        let cmd = unsafe { shared.raw.allocate_command_buffers(&info) }
            .map_err(|result| vk_error(shared.id, "vkAllocateCommandBuffers", result))?[0];
        let sizes = [vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count(BATCH_COMMANDS * MAX_BINDINGS)];
        let info =
            vk::DescriptorPoolCreateInfo::default().max_sets(BATCH_COMMANDS).pool_sizes(&sizes);
        // SAFETY: a valid create info; the pool is owned by this batch.
        match unsafe { shared.raw.create_descriptor_pool(&info, None) } {
            Ok(descriptors) => Ok(Batch { cmd, descriptors, commands: 0, keep: Vec::new() }),
            Err(result) => {
                // SAFETY: the command buffer was never recorded or submitted.
                unsafe { shared.raw.free_command_buffers(self.pool, &[cmd]) };
                Err(vk_error(shared.id, "vkCreateDescriptorPool", result))
            }
        }
    }

    /// Makes the next submission wait for `timeline` to reach `value`.
    pub fn add_wait(&mut self, timeline: Arc<Timeline>, value: u64) {
        self.waits.push((timeline, value));
    }

    /// Submits the open batch and pending waits, if any.
    pub fn flush(&mut self, shared: &Shared, timeout_ns: u64) -> Result<(), GpuError> {
        if self.open.is_none() && self.waits.is_empty() {
            return Ok(());
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let oldest = self.in_flight.front().map_or(0, |(_, value)| *value);
            self.wait_for(oldest, timeout_ns)?;
            self.reclaim(shared)?;
        }
        let mut batch = match self.open.take() {
            Some(batch) => batch,
            None => self.spare.pop().map_or_else(|| self.new_batch(shared), Ok)?,
        };
        let recorded = batch.commands > 0;
        if recorded {
            end_batch(shared, batch.cmd)?;
        }
        let value = self.submitted + 1;
        let waits: Vec<_> = std::mem::take(&mut self.waits);
        let wait_semaphores: Vec<_> = waits.iter().map(|(timeline, _)| timeline.raw).collect();
        let wait_values: Vec<_> = waits.iter().map(|(_, value)| *value).collect();
        let wait_stages = vec![vk::PipelineStageFlags::ALL_COMMANDS; waits.len()];
        let signal = [self.timeline.raw];
        let signal_values = [value];
        let commands = [batch.cmd];
        let mut timeline_info = vk::TimelineSemaphoreSubmitInfo::default()
            .wait_semaphore_values(&wait_values)
            .signal_semaphore_values(&signal_values);
        let submit = vk::SubmitInfo::default()
            .wait_semaphores(&wait_semaphores)
            .wait_dst_stage_mask(&wait_stages)
            .command_buffers(if recorded { &commands } else { &[] })
            .signal_semaphores(&signal)
            .push_next(&mut timeline_info);
        let submitted = {
            let queue = shared.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // SAFETY: the queue is locked; the command buffer is executable
            // and not pending; every semaphore is a live timeline and the
            // signal value exceeds this timeline's previous ones; the arrays
            // outlive the call.
            unsafe { shared.raw.queue_submit(*queue, &[submit], vk::Fence::null()) }
        };
        batch.keep = waits.into_iter().map(|(timeline, _)| timeline).collect();
        if let Err(result) = submitted {
            recycle(shared, &mut batch)?;
            self.spare.push(batch);
            return Err(vk_error(shared.id, "vkQueueSubmit", result));
        }
        self.submitted = value;
        self.in_flight.push_back((batch, value));
        Ok(())
    }

    /// Blocks until this stream's timeline reaches `value`.
    pub fn wait_for(&self, value: u64, timeout_ns: u64) -> Result<(), GpuError> {
        if self.timeline.wait(value, timeout_ns)? {
            Ok(())
        } else {
            Err(GpuError::KernelTimeout {
                device: self.timeline.shared.id,
                kernel: self.last_kernel.clone(),
            })
        }
    }

    /// Resets and keeps every batch that has finished.
    pub fn reclaim(&mut self, shared: &Shared) -> Result<(), GpuError> {
        let reached = self.timeline.reached()?;
        while self.in_flight.front().is_some_and(|(_, value)| *value <= reached) {
            let (mut batch, _) = self.in_flight.pop_front().expect("front was checked");
            recycle(shared, &mut batch)?;
            self.spare.push(batch);
        }
        Ok(())
    }

    /// Destroys the stream's objects.
    ///
    /// # Safety
    /// None of the stream's submitted batches may be pending or executing.
    pub unsafe fn destroy(&mut self, shared: &Shared) {
        let batches = self
            .open
            .take()
            .into_iter()
            .chain(self.in_flight.drain(..).map(|(batch, _)| batch))
            .chain(self.spare.drain(..));
        for batch in batches {
            // SAFETY: the caller guarantees no batch is in use by the queue.
            unsafe { shared.raw.destroy_descriptor_pool(batch.descriptors, None) };
        }
        // SAFETY: as above; destroying the pool frees its command buffers.
        unsafe { shared.raw.destroy_command_pool(self.pool, None) };
    }
}

/// Ends a batch with a barrier making its writes visible to host reads.
fn end_batch(shared: &Shared, cmd: vk::CommandBuffer) -> Result<(), GpuError> {
    let barrier = vk::MemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
        .dst_access_mask(vk::AccessFlags::HOST_READ);
    // SAFETY: the command buffer is recording, outside a render pass.
    unsafe {
        shared.raw.cmd_pipeline_barrier(
            cmd,
            vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::HOST,
            vk::DependencyFlags::empty(),
            &[barrier],
            &[],
            &[],
        )
    };
    // SAFETY: the command buffer is recording.
    unsafe { shared.raw.end_command_buffer(cmd) }
        .map_err(|result| vk_error(shared.id, "vkEndCommandBuffer", result))
}

/// Returns a finished (or never submitted) batch to the initial state.
fn recycle(shared: &Shared, batch: &mut Batch) -> Result<(), GpuError> {
    batch.commands = 0;
    batch.keep.clear();
    // SAFETY: the batch's work finished (or was never submitted), so neither
    // its command buffer nor its descriptor sets are in use; its pool was
    // created with RESET_COMMAND_BUFFER.
    unsafe {
        shared
            .raw
            .reset_command_buffer(batch.cmd, vk::CommandBufferResetFlags::empty())
            .map_err(|result| vk_error(shared.id, "vkResetCommandBuffer", result))?;
        shared
            .raw
            .reset_descriptor_pool(batch.descriptors, vk::DescriptorPoolResetFlags::empty())
            .map_err(|result| vk_error(shared.id, "vkResetDescriptorPool", result))
    }
}
