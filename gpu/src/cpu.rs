//! The CPU backend: always present, and the reference every other backend
//! is checked against.
//!
//! Kernels are Rust functions ([`CpuKernelFn`]) that run to completion on
//! the thread that launches them: in a kernel actor, that is the actor's
//! shard. Streams therefore complete their work as it is submitted, and
//! events are always already reached; the interface still checks every
//! handle, so code written against the CPU behaves the same on a GPU.
//! GEMM is the `gemm` crate's, single-threaded (the shard is the unit of
//! parallelism).
//!
//! Device memory is host memory under a byte budget fixed at open
//! ([`CpuDevice::with_budget`]): an allocation past it is
//! [`GpuError::OutOfMemory`], as on a GPU, so out-of-memory handling is
//! testable on any machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::{
    Arg, BackendKind, Buffer, Device, DeviceId, DeviceInfo, Event, Gemm, HealthReport,
    KernelHandle, LaunchConfig, MemoryInfo, Stream,
};
use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource};

/// A kernel written in Rust for the CPU backend. It reads its arguments
/// through the [`CpuLaunch`] and returns when its work is done.
pub type CpuKernelFn = fn(&mut CpuLaunch<'_>) -> Result<(), GpuError>;

/// At most this many live buffers per CPU device.
pub const MAX_BUFFERS: usize = 1 << 20;
/// At most this many open streams per CPU device.
pub const MAX_STREAMS: usize = 1024;
/// At most this many loaded kernels per CPU device.
pub const MAX_KERNELS: usize = 4096;
/// At most this many live events per CPU device.
pub const MAX_EVENTS: usize = 1 << 16;

/// The budget a CPU device opens with unless told otherwise: half the
/// memory the kernel says is available, at most 16 GiB.
pub fn default_budget() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(4 << 30, |kib| kib * 1024);
    (available / 2).min(16 << 30)
}

/// One buffer's storage: whole `f32` words, so kernels see aligned floats.
struct Storage {
    words: Mutex<Box<[f32]>>,
}

#[derive(Default)]
struct Tables {
    buffers: HashMap<u64, Arc<Storage>>,
    used_bytes: u64,
    streams: HashMap<u32, ()>,
    events: HashMap<u64, ()>,
    kernels: Vec<(String, CpuKernelFn)>,
    standard: HashMap<Kernel, KernelHandle>,
    next_id: u64,
}

/// The host's cores as a [`Device`].
pub struct CpuDevice {
    info: DeviceInfo,
    tables: Mutex<Tables>,
}

impl CpuDevice {
    /// Opens the CPU with the [`default_budget`].
    pub fn new() -> Self {
        CpuDevice::with_budget(default_budget())
    }

    /// Opens the CPU with `bytes` of device memory to hand out.
    pub fn with_budget(bytes: u64) -> Self {
        CpuDevice::with_ordinal(0, bytes)
    }

    /// Opens the CPU as device `ordinal` of the CPU backend (tests open
    /// several to stand for several devices).
    pub fn with_ordinal(ordinal: u32, bytes: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let info = DeviceInfo {
            id: DeviceId::new(BackendKind::Cpu, ordinal),
            name: format!("cpu: {} ({cores} cores)", cpu_model()),
            memory_total: bytes,
            capability: cpu_capability(),
            is_software: true,
            max_block_threads: 1024,
        };
        CpuDevice { info, tables: Mutex::new(Tables::default()) }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while the lock is held leaves the tables consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn storage(&self, buffer: Buffer) -> Result<Arc<Storage>, GpuError> {
        self.tables().buffers.get(&buffer.id).cloned().ok_or_else(|| {
            GpuError::invalid(self.id(), format!("buffer {} is not live on this device", buffer.id))
        })
    }

    fn check_stream(&self, stream: Stream) -> Result<(), GpuError> {
        if self.tables().streams.contains_key(&stream.0) {
            Ok(())
        } else {
            Err(GpuError::invalid(
                self.id(),
                format!("stream {} is not open on this device", stream.0),
            ))
        }
    }

    fn check_range(&self, buffer: Buffer, offset: usize, len: usize) -> Result<(), GpuError> {
        match offset.checked_add(len) {
            Some(end) if end <= buffer.bytes => Ok(()),
            _ => Err(GpuError::invalid(
                self.id(),
                format!(
                    "bytes {offset}..{} are outside buffer {} of {} bytes",
                    offset.saturating_add(len),
                    buffer.id,
                    buffer.bytes
                ),
            )),
        }
    }

    fn register(&self, name: String, function: CpuKernelFn) -> Result<KernelHandle, GpuError> {
        let mut tables = self.tables();
        if tables.kernels.len() >= MAX_KERNELS {
            return Err(GpuError::LimitReached {
                device: self.id(),
                what: "kernels",
                limit: MAX_KERNELS,
            });
        }
        tables.kernels.push((name, function));
        Ok(KernelHandle((tables.kernels.len() - 1) as u32))
    }
}

impl Default for CpuDevice {
    fn default() -> Self {
        CpuDevice::new()
    }
}

impl Device for CpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let used = self.tables().used_bytes;
        Ok(MemoryInfo { free: self.info.memory_total - used, total: self.info.memory_total })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        let id = {
            let mut tables = self.tables();
            let free = self.info.memory_total - tables.used_bytes;
            if bytes as u64 > free {
                return Err(GpuError::OutOfMemory {
                    device: self.id(),
                    requested: bytes,
                    free: free as usize,
                });
            }
            if tables.buffers.len() >= MAX_BUFFERS {
                return Err(GpuError::LimitReached {
                    device: self.id(),
                    what: "buffers",
                    limit: MAX_BUFFERS,
                });
            }
            // Reserve before allocating, outside the lock, so a large
            // zeroing allocation does not stall other callers.
            tables.used_bytes += bytes as u64;
            tables.next_id += 1;
            tables.next_id
        };
        let words = vec![0.0f32; bytes.div_ceil(4)].into_boxed_slice();
        let storage = Arc::new(Storage { words: Mutex::new(words) });
        self.tables().buffers.insert(id, storage);
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        let mut tables = self.tables();
        match tables.buffers.remove(&buffer.id) {
            Some(_) => {
                tables.used_bytes -= buffer.bytes as u64;
                Ok(())
            }
            None => Err(GpuError::invalid(
                self.id(),
                format!("buffer {} is not live on this device", buffer.id),
            )),
        }
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        self.check_range(dst, offset, src.len())?;
        let storage = self.storage(dst)?;
        let mut words = lock(&storage);
        bytemuck::cast_slice_mut::<f32, u8>(&mut words)[offset..offset + src.len()]
            .copy_from_slice(src);
        Ok(())
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        self.check_range(src, offset, dst.len())?;
        let storage = self.storage(src)?;
        let words = lock(&storage);
        dst.copy_from_slice(&bytemuck::cast_slice::<f32, u8>(&words)[offset..offset + dst.len()]);
        Ok(())
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        self.check_range(src, 0, bytes)?;
        self.check_range(dst, 0, bytes)?;
        if src.id == dst.id {
            return Ok(());
        }
        let (from, to) = (self.storage(src)?, self.storage(dst)?);
        // Lock in id order, as launches do, so two copies cannot deadlock.
        let (from_words, mut to_words) = if src.id < dst.id {
            let from_words = lock(&from);
            (from_words, lock(&to))
        } else {
            let to_words = lock(&to);
            (lock(&from), to_words)
        };
        bytemuck::cast_slice_mut::<f32, u8>(&mut to_words)[..bytes]
            .copy_from_slice(&bytemuck::cast_slice::<f32, u8>(&from_words)[..bytes]);
        Ok(())
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        let mut tables = self.tables();
        if tables.streams.len() >= MAX_STREAMS {
            return Err(GpuError::LimitReached {
                device: self.id(),
                what: "streams",
                limit: MAX_STREAMS,
            });
        }
        tables.next_id += 1;
        let id = tables.next_id as u32;
        tables.streams.insert(id, ());
        Ok(Stream(id))
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        match self.tables().streams.remove(&stream.0) {
            Some(()) => Ok(()),
            None => Err(GpuError::invalid(
                self.id(),
                format!("stream {} is not open on this device", stream.0),
            )),
        }
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        // Work ran as it was submitted.
        self.check_stream(stream)
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        self.check_stream(stream)?;
        let mut tables = self.tables();
        if tables.events.len() >= MAX_EVENTS {
            return Err(GpuError::LimitReached {
                device: self.id(),
                what: "events",
                limit: MAX_EVENTS,
            });
        }
        tables.next_id += 1;
        let id = tables.next_id;
        tables.events.insert(id, ());
        Ok(Event(id))
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        self.event_synchronize(event)
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        if self.tables().events.contains_key(&event.0) {
            Ok(())
        } else {
            Err(GpuError::invalid(
                self.id(),
                format!("event {} is not live on this device", event.0),
            ))
        }
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        match self.tables().events.remove(&event.0) {
            Some(()) => Ok(()),
            None => Err(GpuError::invalid(
                self.id(),
                format!("event {} is not live on this device", event.0),
            )),
        }
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        if let Some(&handle) = self.tables().standard.get(&kernel) {
            return Ok(handle);
        }
        let handle = self.register(kernel.name().to_owned(), standard(kernel))?;
        self.tables().standard.insert(kernel, handle);
        Ok(handle)
    }

    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError> {
        match source {
            KernelSource::Cpu { entry, function } => self.register(entry.clone(), *function),
            other => Err(GpuError::invalid(
                self.id(),
                format!(
                    "the CPU backend runs Rust kernels; `{}` is written for another backend",
                    other.entry()
                ),
            )),
        }
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        self.check_stream(stream)?;
        let (name, function) =
            self.tables().kernels.get(kernel.0 as usize).cloned().ok_or_else(|| {
                GpuError::invalid(
                    self.id(),
                    format!("kernel {} is not loaded on this device", kernel.0),
                )
            })?;
        // Each distinct buffer once, locked in id order (no lock-order
        // inversions between concurrent launches).
        let mut distinct: Vec<(u64, Arc<Storage>)> = Vec::with_capacity(args.len());
        for arg in args {
            if let Arg::Buffer(buffer) = arg {
                if distinct.iter().all(|(id, _)| *id != buffer.id) {
                    distinct.push((buffer.id, self.storage(*buffer)?));
                }
            }
        }
        distinct.sort_unstable_by_key(|(id, _)| *id);
        let mut guards: Vec<(u64, MutexGuard<'_, Box<[f32]>>)> =
            distinct.iter().map(|(id, storage)| (*id, lock(storage))).collect();
        let views: Vec<(u64, *mut f32, usize)> =
            guards.iter_mut().map(|(id, words)| (*id, words.as_mut_ptr(), words.len())).collect();
        let mut launch = CpuLaunch {
            device: self.id(),
            kernel: &name,
            config,
            args,
            views,
            scratch: Vec::new(),
        };
        let result = function(&mut launch);
        drop(launch);
        drop(guards);
        result
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.id())?;
        let handle = self.load_kernel(Kernel::Gemm)?;
        let args = crate::kernel::gemm_args(self, gemm)?;
        self.launch(stream, handle, crate::kernel::gemm_config(gemm), &args)
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        Ok(HealthReport {
            responsive: true,
            ecc_corrected: None,
            ecc_uncorrected: None,
            detail: String::new(),
        })
    }
}

fn lock(storage: &Storage) -> MutexGuard<'_, Box<[f32]>> {
    // A kernel that panicked mid-write leaves floats, never invalid memory.
    storage.words.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One CPU kernel launch: its shape, its scalars and views of its buffers.
///
/// Buffers are reached by argument index. [`io`](Self::io) hands out the
/// inputs and the one output a kernel writes together; if the output is
/// also one of the inputs (an in-place launch), that input is copied first,
/// so a kernel never sees aliased slices.
pub struct CpuLaunch<'a> {
    device: DeviceId,
    kernel: &'a str,
    config: LaunchConfig,
    args: &'a [Arg],
    /// Each distinct buffer: its id and its words, locked by `launch` for
    /// the launch's whole life.
    views: Vec<(u64, *mut f32, usize)>,
    scratch: Vec<Vec<f32>>,
}

impl CpuLaunch<'_> {
    /// The launch's shape.
    pub fn config(&self) -> LaunchConfig {
        self.config
    }

    /// The device it runs on.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The number of arguments.
    pub fn arg_count(&self) -> usize {
        self.args.len()
    }

    fn error(&self, detail: String) -> GpuError {
        GpuError::invalid(self.device, format!("{}: {detail}", self.kernel))
    }

    /// Argument `index` as a `u32`.
    pub fn u32(&self, index: usize) -> Result<u32, GpuError> {
        match self.args.get(index) {
            Some(Arg::U32(value)) => Ok(*value),
            other => Err(self.error(format!("argument {index} should be a u32, is {other:?}"))),
        }
    }

    /// Argument `index` as an `f32`.
    pub fn f32(&self, index: usize) -> Result<f32, GpuError> {
        match self.args.get(index) {
            Some(Arg::F32(value)) => Ok(*value),
            other => Err(self.error(format!("argument {index} should be an f32, is {other:?}"))),
        }
    }

    fn view(&self, index: usize) -> Result<(u64, *mut f32, usize), GpuError> {
        let Some(Arg::Buffer(buffer)) = self.args.get(index) else {
            return Err(self.error(format!(
                "argument {index} should be a buffer, is {:?}",
                self.args.get(index)
            )));
        };
        let &(id, ptr, words) =
            self.views.iter().find(|(id, _, _)| *id == buffer.id).ok_or_else(|| {
                self.error(format!(
                    "argument {index}: buffer {} was not bound to this launch",
                    buffer.id
                ))
            })?;
        // A buffer's words round its bytes up; a kernel sees whole floats only.
        Ok((id, ptr, words.min(buffer.bytes / 4)))
    }

    /// Read-only views of buffer arguments `inputs` and a mutable view of
    /// buffer argument `output`.
    pub fn io<const N: usize>(
        &mut self,
        inputs: [usize; N],
        output: usize,
    ) -> Result<([&[f32]; N], &mut [f32]), GpuError> {
        let (out_id, out_ptr, out_len) = self.view(output)?;
        let mut resolved = [(std::ptr::null::<f32>(), 0usize); N];
        for (slot, &index) in resolved.iter_mut().zip(&inputs) {
            let (id, ptr, len) = self.view(index)?;
            *slot = if id == out_id {
                // SAFETY: `ptr` points at `len` initialised floats of a
                // buffer whose lock this launch holds, and no mutable view
                // of it exists yet (views are only handed out below).
                let copy = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
                self.scratch.push(copy);
                let copy = self.scratch.last().expect("just pushed");
                (copy.as_ptr(), copy.len())
            } else {
                (ptr.cast_const(), len)
            };
        }
        // SAFETY: every pointer names floats that stay valid for the
        // launch: buffer words are locked by `launch` until this
        // `CpuLaunch` is dropped, and scratch copies are never moved or
        // freed before then (`scratch` only grows, and a `Vec`'s heap data
        // does not move when the outer `Vec` reallocates). The output is the
        // only mutable view, and no input view aliases it: an input that
        // named the output's buffer was copied to scratch above.
        unsafe {
            let views = resolved.map(|(ptr, len)| std::slice::from_raw_parts(ptr, len));
            Ok((views, std::slice::from_raw_parts_mut(out_ptr, out_len)))
        }
    }
}

/// The Rust version of a standard kernel.
fn standard(kernel: Kernel) -> CpuKernelFn {
    match kernel {
        Kernel::Empty => |_| Ok(()),
        Kernel::VectorAdd => |launch| {
            let n = launch.u32(3)? as usize;
            let ([a, b], out) = launch.io([0, 1], 2)?;
            for ((out, a), b) in out[..n].iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *out = a + b;
            }
            Ok(())
        },
        Kernel::Scale => |launch| {
            let (alpha, n) = (launch.f32(2)?, launch.u32(3)? as usize);
            let ([x], out) = launch.io([0], 1)?;
            for (out, x) in out[..n].iter_mut().zip(&x[..n]) {
                *out = alpha * x;
            }
            Ok(())
        },
        Kernel::Relu => |launch| {
            let n = launch.u32(2)? as usize;
            let ([x], out) = launch.io([0], 1)?;
            for (out, x) in out[..n].iter_mut().zip(&x[..n]) {
                *out = x.max(0.0);
            }
            Ok(())
        },
        Kernel::ReluGrad => |launch| {
            let n = launch.u32(3)? as usize;
            let ([x, grad], out) = launch.io([0, 1], 2)?;
            for ((out, x), grad) in out[..n].iter_mut().zip(&x[..n]).zip(&grad[..n]) {
                *out = if *x > 0.0 { *grad } else { 0.0 };
            }
            Ok(())
        },
        Kernel::Sum => |launch| {
            let n = launch.u32(2)? as usize;
            let ([x], out) = launch.io([0], 1)?;
            out[0] = x[..n].iter().sum();
            Ok(())
        },
        Kernel::Max => |launch| {
            let n = launch.u32(2)? as usize;
            let ([x], out) = launch.io([0], 1)?;
            out[0] = x[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            Ok(())
        },
        Kernel::Softmax => |launch| {
            let (rows, cols) = (launch.u32(2)? as usize, launch.u32(3)? as usize);
            let ([x], out) = launch.io([0], 1)?;
            for (x, out) in
                x.chunks_exact(cols.max(1)).zip(out.chunks_exact_mut(cols.max(1))).take(rows)
            {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0;
                for (out, x) in out.iter_mut().zip(x) {
                    *out = (x - max).exp();
                    total += *out;
                }
                out.iter_mut().for_each(|out| *out /= total);
            }
            Ok(())
        },
        Kernel::Gemm => |launch| {
            let (m, n, k) =
                (launch.u32(3)? as usize, launch.u32(4)? as usize, launch.u32(5)? as usize);
            let (alpha, beta) = (launch.f32(6)?, launch.f32(7)?);
            let device = launch.device();
            let ([a, b], c) = launch.io([0, 1], 2)?;
            if a.len() < m * k || b.len() < k * n || c.len() < m * n {
                return Err(GpuError::invalid(device, "gemm: a buffer is smaller than its shape"));
            }
            if m == 0 || n == 0 {
                return Ok(());
            }
            // SAFETY: the three slices hold at least m·k, k·n and m·n floats
            // (checked above), row-major with the strides given; `c` is the
            // only mutable view and aliases neither input (`io` copies an
            // aliased input). gemm computes c = beta_c·c + alpha·a·b under
            // its own names (dst := alpha×dst + beta×lhs×rhs), reading `c`
            // only when asked to.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    beta != 0.0,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    beta,
                    alpha,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            Ok(())
        },
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

fn cpu_capability() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let level = if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "sse2"
        };
        format!("x86_64 {level}")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_past_the_budget_is_out_of_memory() {
        let device = CpuDevice::with_budget(1024);
        let first = device.alloc(1000).unwrap();
        let error = device.alloc(100).unwrap_err();
        assert!(matches!(error, GpuError::OutOfMemory { requested: 100, free: 24, .. }), "{error}");
        device.free(first).unwrap();
        device.alloc(1000).expect("freed memory is reusable");
    }

    #[test]
    fn in_place_launches_see_their_input_before_the_write() {
        let device = CpuDevice::with_budget(1 << 20);
        let stream = device.create_stream().unwrap();
        let kernels = crate::Kernels::load(&device).unwrap();
        let x = device.alloc(16).unwrap();
        device.write(stream, x, 0, bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0])).unwrap();
        kernels.vector_add(&device, stream, [x, x, x], 4).unwrap();
        let mut out = [0.0f32; 4];
        device.read(stream, x, 0, bytemuck::cast_slice_mut(&mut out)).unwrap();
        assert_eq!(out, [2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn gemm_follows_alpha_and_beta() {
        let device = CpuDevice::with_budget(1 << 20);
        let stream = device.create_stream().unwrap();
        let upload = |values: &[f32]| {
            let buffer = device.alloc(values.len() * 4).unwrap();
            device.write(stream, buffer, 0, bytemuck::cast_slice(values)).unwrap();
            buffer
        };
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        let (a, b, c) =
            (upload(&[1.0, 2.0, 3.0, 4.0]), upload(&[5.0, 6.0, 7.0, 8.0]), upload(&[1.0; 4]));
        let gemm = Gemm { m: 2, n: 2, k: 2, alpha: 2.0, beta: 0.5, a, b, c };
        device.gemm(stream, &gemm).unwrap();
        let mut out = [0.0f32; 4];
        device.read(stream, c, 0, bytemuck::cast_slice_mut(&mut out)).unwrap();
        assert_eq!(out, [38.5, 44.5, 86.5, 100.5]);
    }
}
