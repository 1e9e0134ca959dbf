//! The [`VulkanDevice`](super::VulkanDevice)'s private helpers: handle
//! lookups in its state, range checks, and the recording of copies,
//! pipelines and dispatches that the `Device` methods in `mod.rs` share.
//! Kept apart so that `mod.rs` reads as opening the device plus the trait.

use super::*;

impl VulkanDevice {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn timeout_ns(&self) -> u64 {
        u64::try_from(self.config.wait_timeout.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn invalid(&self, detail: impl Into<String>) -> GpuError {
        GpuError::invalid(self.info.id, detail)
    }

    pub(super) fn next_id(&self, counter: &mut u64) -> u64 {
        *counter += 1;
        (self.tag << TAG_SHIFT) | (*counter & ((1 << TAG_SHIFT) - 1))
    }

    pub(super) fn stream<'s>(
        &self,
        state: &'s mut State,
        stream: Stream,
    ) -> Result<&'s mut StreamState, GpuError> {
        state.streams.get_mut(&stream.0).ok_or_else(|| {
            self.invalid(format!("stream {} is closed or not of this device", stream.0))
        })
    }

    pub(super) fn buffer<'s>(
        &self,
        state: &'s State,
        buffer: Buffer,
    ) -> Result<&'s Allocation, GpuError> {
        let allocation = state.buffers.get(&buffer.id).ok_or_else(|| {
            self.invalid(format!("buffer {:#x} is freed or not of this device", buffer.id))
        })?;
        if allocation.bytes != buffer.bytes {
            return Err(self.invalid(format!(
                "buffer {:#x} says {} bytes but holds {}",
                buffer.id, buffer.bytes, allocation.bytes
            )));
        }
        Ok(allocation)
    }

    pub(super) fn check_range(
        &self,
        what: &str,
        buffer: Buffer,
        offset: usize,
        len: usize,
    ) -> Result<(), GpuError> {
        if offset.checked_add(len).is_none_or(|end| end > buffer.bytes) {
            return Err(self.invalid(format!(
                "{what}: {len} bytes at offset {offset} overrun buffer {:#x} of {} bytes",
                buffer.id, buffer.bytes
            )));
        }
        Ok(())
    }

    /// Flushes `stream`, then waits (lock released) for its work so far.
    pub(super) fn drain<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        stream: Stream,
    ) -> Result<MutexGuard<'a, State>, GpuError> {
        let timeout_ns = self.timeout_ns();
        let entry = self.stream(&mut state, stream)?;
        entry.flush(&self.shared, timeout_ns)?;
        let (timeline, value, kernel) =
            (Arc::clone(&entry.timeline), entry.submitted, entry.last_kernel.clone());
        drop(state);
        if !timeline.wait(value, timeout_ns)? {
            return Err(GpuError::KernelTimeout { device: self.info.id, kernel });
        }
        let mut state = self.lock();
        if let Some(entry) = state.streams.get_mut(&stream.0) {
            entry.reclaim(&self.shared)?;
        }
        Ok(state)
    }

    /// Records a buffer-to-buffer copy into `stream`.
    pub(super) fn record_copy(
        &self,
        entry: &mut StreamState,
        src: vk::Buffer,
        dst: vk::Buffer,
        region: vk::BufferCopy,
    ) -> Result<(), GpuError> {
        let (cmd, _) = entry.begin_command(&self.shared, self.timeout_ns())?;
        // SAFETY: the command buffer is recording; both buffers are live with
        // TRANSFER usage and the region lies inside each (checked by callers).
        unsafe { self.shared.raw.cmd_copy_buffer(cmd, src, dst, &[region]) };
        Ok(())
    }

    pub(super) fn create_pipeline(
        &self,
        state: &mut State,
        name: &str,
        standard: Option<Kernel>,
        source: &str,
    ) -> Result<KernelHandle, GpuError> {
        if state.kernels.len() >= MAX_KERNELS {
            return Err(GpuError::LimitReached {
                device: self.info.id,
                what: "kernels",
                limit: MAX_KERNELS,
            });
        }
        let compiled = shader::compile_wgsl(self.info.id, name, source)?;
        let limits = &self.shared.limits;
        let max_buffers = MAX_BINDINGS.min(limits.max_per_stage_descriptor_storage_buffers);
        if compiled.buffers > max_buffers || compiled.push_bytes > limits.max_push_constants_size {
            return Err(self.invalid(format!(
                "kernel `{name}` binds {} buffers and {} push-constant bytes; this device allows \
                 {max_buffers} and {}",
                compiled.buffers, compiled.push_bytes, limits.max_push_constants_size
            )));
        }
        let objects = pipeline::create(&self.shared, name, &compiled)?;
        let handle = KernelHandle(state.kernels.len() as u32);
        state.kernels.push(Pipeline {
            name: name.to_string(),
            standard,
            set_layout: objects.0,
            layout: objects.1,
            pipeline: objects.2,
            buffers: compiled.buffers,
            push_bytes: compiled.push_bytes,
            workgroup_size: compiled.workgroup_size,
        });
        Ok(handle)
    }

    /// The workgroup grid to dispatch: `config.grid`, except that a standard
    /// one-dimensional kernel's grid wider than the device allows is folded
    /// into two dimensions (its shader undoes the fold).
    pub(super) fn dispatch_grid(
        &self,
        kernel: &Pipeline,
        config: LaunchConfig,
    ) -> Result<[u32; 3], GpuError> {
        let max = self.shared.limits.max_compute_work_group_count;
        let mut grid = config.grid;
        let foldable = kernel.standard.is_some_and(|standard| standard != Kernel::Gemm);
        if foldable && grid[1] == 1 && grid[2] == 1 && grid[0] > max[0] {
            grid = [max[0], grid[0].div_ceil(max[0]), 1];
        }
        if grid.contains(&0) || grid.iter().zip(max).any(|(&g, m)| g > m) {
            return Err(self.invalid(format!(
                "kernel `{}`: grid {:?} is empty or exceeds this device's {max:?}",
                kernel.name, config.grid
            )));
        }
        if config.block != kernel.workgroup_size {
            return Err(self.invalid(format!(
                "kernel `{}` has @workgroup_size{:?} but the launch asks for blocks of {:?}",
                kernel.name, kernel.workgroup_size, config.block
            )));
        }
        Ok(grid)
    }

    /// Splits `args` into buffers and push-constant bytes, checking them
    /// against the kernel's layout.
    pub(super) fn split_args(
        &self,
        state: &State,
        kernel: &Pipeline,
        args: &[Arg],
    ) -> Result<(Vec<vk::Buffer>, Vec<u8>), GpuError> {
        let mut buffers = Vec::with_capacity(kernel.buffers as usize);
        let mut push = Vec::with_capacity(kernel.push_bytes as usize);
        for (index, arg) in args.iter().enumerate() {
            match *arg {
                Arg::Buffer(buffer) if push.is_empty() => {
                    let allocation = self.buffer(state, buffer)?;
                    if allocation.size > u64::from(self.shared.limits.max_storage_buffer_range) {
                        return Err(self.invalid(format!(
                            "kernel `{}`: buffer argument {index} is {} bytes, over this device's \
                             storage-buffer range of {}",
                            kernel.name,
                            allocation.bytes,
                            self.shared.limits.max_storage_buffer_range
                        )));
                    }
                    buffers.push(allocation.buffer);
                }
                Arg::U32(value) => push.extend_from_slice(&value.to_ne_bytes()),
                Arg::F32(value) => push.extend_from_slice(&value.to_ne_bytes()),
                Arg::Buffer(_) => {
                    return Err(self.invalid(format!(
                        "kernel `{}`: argument {index} is a buffer after a scalar",
                        kernel.name
                    )));
                }
            }
        }
        if buffers.len() != kernel.buffers as usize || push.len() != kernel.push_bytes as usize {
            return Err(self.invalid(format!(
                "kernel `{}` takes {} buffers and {} scalars, got {} and {}",
                kernel.name,
                kernel.buffers,
                kernel.push_bytes / 4,
                buffers.len(),
                push.len() / 4
            )));
        }
        Ok((buffers, push))
    }
}
