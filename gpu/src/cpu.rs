//! The CPU backend: always present, and the reference every other backend
//! is checked against.
//!
//! Kernels are Rust functions ([`HostKernelFn`]) that run to completion on
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
use crate::host::{HostKernelFn, HostLaunch};
use crate::kernel::{Kernel, KernelSource};
use crate::launch::{gemm_args, gemm_config};

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
    kernels: Vec<(String, HostKernelFn)>,
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
            memory_total_bytes: bytes,
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

    fn register(&self, name: String, function: HostKernelFn) -> Result<KernelHandle, GpuError> {
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
        let total_bytes = self.info.memory_total_bytes;
        Ok(MemoryInfo { free_bytes: total_bytes - used, total_bytes })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        let id = {
            let mut tables = self.tables();
            let free_bytes = self.info.memory_total_bytes - tables.used_bytes;
            if bytes as u64 > free_bytes {
                return Err(GpuError::OutOfMemory {
                    device: self.id(),
                    requested_bytes: bytes,
                    free_bytes: free_bytes as usize,
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
        let views = guards.iter_mut().map(|(id, words)| (*id, &mut words[..]));
        let mut launch = HostLaunch::new(self.id(), &name, config, args, views);
        let result = function(&mut launch);
        drop(launch);
        drop(guards);
        result
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.id())?;
        let handle = self.load_kernel(Kernel::Gemm)?;
        let args = gemm_args(self, gemm)?;
        self.launch(stream, handle, gemm_config(gemm), &args)
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

/// The Rust version of a standard kernel.
fn standard(kernel: Kernel) -> HostKernelFn {
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
        assert!(
            matches!(error, GpuError::OutOfMemory { requested_bytes: 100, free_bytes: 24, .. }),
            "{error}"
        );
        device.free(first).unwrap();
        device.alloc(1000).expect("freed memory is reusable");
    }

    #[test]
    fn in_place_launches_see_their_input_before_the_write() {
        let device = CpuDevice::with_budget(1 << 20);
        let stream = device.create_stream().unwrap();
        let kernels = crate::launch::Kernels::load(&device).unwrap();
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
