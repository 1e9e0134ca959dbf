//! The native layer on a host fake of a vendor API: every table, bound,
//! check and the memory cache run here without a GPU, against a ledger of
//! the vendor calls they make.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::*;
use crate::device::Device;
use crate::handle::{Arg, Buffer, Event, KernelHandle, Stream};
use crate::info::{BackendKind, DeviceId, DeviceInfo};
use crate::kernel::Kernel;

const ID: DeviceId = DeviceId::new(BackendKind::Cuda, 0);

/// What the fake's "driver" holds and has been asked to do.
#[derive(Default)]
struct Ledger {
    /// Live allocations by address.
    memory: BTreeMap<DevicePtr, Vec<u8>>,
    next_address: DevicePtr,
    capacity_bytes: usize,
    mallocs: usize,
    frees: usize,
    streams: (u32, u32),
    events: (u32, u32),
    records: usize,
    event_waits: usize,
    modules: HashMap<u32, String>,
    unloaded: usize,
    launches: Vec<(String, Vec<u64>)>,
}

impl Ledger {
    /// The bytes `len` long at `address`, which must lie in one allocation.
    fn span(&mut self, address: DevicePtr, len: usize) -> &mut [u8] {
        let (&base, bytes) = self.memory.range_mut(..=address).next_back().expect("an allocation");
        let start = (address - base) as usize;
        assert!(start + len <= bytes.len(), "the native layer let a copy overrun");
        &mut bytes[start..start + len]
    }
}

/// Adds one to `counter`, returning the new count (a fresh handle).
fn count(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

/// A vendor API over host memory; every stream is synchronous.
struct HostApi(Arc<Mutex<Ledger>>);

impl HostApi {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.0.lock().unwrap()
    }
}

impl Sealed for HostApi {}

// SAFETY: the handles are plain integers.
unsafe impl NativeApi for HostApi {
    type Stream = u32;
    type Event = u32;
    type Module = u32;
    type Function = u32;

    fn bind(&self) -> Result<(), GpuError> {
        Ok(())
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        let ledger = self.ledger();
        let used: usize = ledger.memory.values().map(Vec::len).sum();
        let total_bytes = ledger.capacity_bytes as u64;
        Ok(MemoryInfo { free_bytes: total_bytes - used as u64, total_bytes })
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        Ok(HealthReport { responsive: true, ..HealthReport::default() })
    }

    fn malloc(&self, bytes: usize) -> Result<Option<DevicePtr>, GpuError> {
        let free = self.memory()?.free_bytes as usize;
        let mut ledger = self.ledger();
        ledger.mallocs += 1;
        if bytes > free {
            return Ok(None);
        }
        let address = ledger.next_address + 4096;
        ledger.next_address = address + bytes as u64;
        ledger.memory.insert(address, vec![0; bytes]);
        Ok(Some(address))
    }

    unsafe fn free(&self, ptr: DevicePtr) -> Result<(), GpuError> {
        let mut ledger = self.ledger();
        ledger.frees += 1;
        assert!(ledger.memory.remove(&ptr).is_some(), "freed {ptr:#x} twice");
        Ok(())
    }

    const WRITE_WAITS: bool = true;

    unsafe fn copy(&self, _stream: u32, transfer: Transfer<'_>) -> Result<(), GpuError> {
        let mut ledger = self.ledger();
        match transfer {
            Transfer::ToDevice { dst, src } => ledger.span(dst, src.len()).copy_from_slice(src),
            Transfer::ToHost { dst, src } => dst.copy_from_slice(ledger.span(src, dst.len())),
            Transfer::OnDevice { dst, src, bytes } => {
                let from = ledger.span(src, bytes).to_vec();
                ledger.span(dst, bytes).copy_from_slice(&from);
            }
        }
        Ok(())
    }

    fn create_stream(&self) -> Result<u32, GpuError> {
        Ok(count(&mut self.ledger().streams.0))
    }

    unsafe fn destroy_stream(&self, _stream: u32) {
        self.ledger().streams.1 += 1;
    }

    unsafe fn synchronize(&self, _stream: u32) -> Result<(), GpuError> {
        Ok(())
    }

    fn synchronize_device(&self) {}

    fn create_event(&self) -> Result<u32, GpuError> {
        Ok(count(&mut self.ledger().events.0))
    }

    unsafe fn destroy_event(&self, _event: u32) {
        self.ledger().events.1 += 1;
    }

    unsafe fn record_event(&self, _event: u32, _stream: u32) -> Result<(), GpuError> {
        self.ledger().records += 1;
        Ok(())
    }

    unsafe fn wait_event(&self, _stream: u32, _event: u32) -> Result<(), GpuError> {
        Ok(())
    }

    unsafe fn event_synchronize(&self, _event: u32) -> Result<(), GpuError> {
        self.ledger().event_waits += 1;
        Ok(())
    }

    const STANDARD_SOURCE: &'static str = "zbmd_empty zbmd_vector_add zbmd_scale zbmd_relu \
        zbmd_relu_grad zbmd_sum zbmd_max zbmd_softmax zbmd_gemm";
    const USER_LANGUAGE: (&'static str, &'static str) = ("CUDA C", "KernelSource::Cuda");

    fn user_source(source: &KernelSource) -> Option<(&str, &str)> {
        let KernelSource::Cuda { entry, source } = source else { return None };
        Some((entry, source))
    }

    fn load_module(&self, _name: &str, source: &str) -> Result<u32, GpuError> {
        let mut ledger = self.ledger();
        let module = ledger.modules.len() as u32;
        ledger.modules.insert(module, source.to_string());
        Ok(module)
    }

    unsafe fn function(&self, module: u32, entry: &str) -> Result<u32, GpuError> {
        if self.ledger().modules[&module].contains(entry) {
            Ok(module)
        } else {
            Err(GpuError::Compile { device: ID, kernel: entry.into(), log: "none".into() })
        }
    }

    unsafe fn unload_module(&self, _module: u32) {
        self.ledger().unloaded += 1;
    }

    unsafe fn launch(&self, launch: Launch<'_, Self>) -> Result<(), GpuError> {
        // SAFETY: every parameter points at a live 64-byte slot (the trait's
        // contract), whose first word holds the argument.
        let words = launch.params.iter().map(|&p| unsafe { *p.cast::<u64>() }).collect();
        self.ledger().launches.push((launch.name.to_string(), words));
        Ok(())
    }
}

/// A fake device of `capacity_bytes` with a cache of `cache_bytes_max`.
fn device(
    capacity_bytes: usize,
    cache_bytes_max: usize,
) -> (NativeDevice<HostApi>, Arc<Mutex<Ledger>>) {
    let ledger = Arc::new(Mutex::new(Ledger { capacity_bytes, ..Ledger::default() }));
    let info = DeviceInfo {
        id: ID,
        name: "host fake".into(),
        memory_total_bytes: capacity_bytes as u64,
        capability: "none".into(),
        is_software: true,
        max_block_threads: 1024,
    };
    (NativeDevice::new(HostApi(Arc::clone(&ledger)), info, cache_bytes_max, None), ledger)
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T, GpuError>) -> bool {
    matches!(result, Err(GpuError::InvalidArgument { .. }))
}

#[test]
fn bytes_round_trip_and_copy_on_the_device_within_their_buffers() {
    let (device, _) = device(1 << 20, 0);
    let stream = device.create_stream().unwrap();
    let (a, b) = (device.alloc(16).unwrap(), device.alloc(16).unwrap());
    device.write(stream, a, 4, &[1, 2, 3, 4]).unwrap();
    device.write(stream, a, 16, &[]).unwrap();
    device.copy(stream, a, b, 16).unwrap();
    let mut back = [9u8; 8];
    device.read(stream, b, 2, &mut back).unwrap();
    assert_eq!(back, [0, 0, 1, 2, 3, 4, 0, 0]);
    assert!(is_invalid(device.write(stream, a, 13, &[0; 4])), "overruns by one");
    assert!(is_invalid(device.read(stream, a, usize::MAX, &mut back)), "offset overflows");
    assert!(is_invalid(device.copy(stream, a, b, 17)));
}

#[test]
fn stale_forged_and_foreign_handles_are_invalid_arguments() {
    let (device, _) = device(1 << 20, 0);
    let stream = device.create_stream().unwrap();
    let buffer = device.alloc(64).unwrap();
    assert!(is_invalid(device.free(Buffer { id: buffer.id, bytes: 65 })), "wrong size");
    device.free(buffer).unwrap();
    assert!(is_invalid(device.free(buffer)), "freed twice");
    assert!(is_invalid(device.write(stream, buffer, 0, &[1])), "used after free");
    assert!(is_invalid(device.synchronize(Stream(stream.0 + 1))));
    assert!(is_invalid(device.event_synchronize(Event(7))));
    assert!(is_invalid(device.destroy_event(Event(7))));
    let launch = device.launch(stream, KernelHandle(3), LaunchConfig::linear(1, 1), &[]);
    assert!(is_invalid(launch));
    device.destroy_stream(stream).unwrap();
    assert!(is_invalid(device.synchronize(stream)), "destroyed");
}

#[test]
fn a_freed_block_is_fenced_cached_and_reused_at_its_address() {
    let (device, ledger) = device(1 << 20, 1 << 16);
    let streams = [device.create_stream().unwrap(), device.create_stream().unwrap()];
    let first = device.alloc(1000).unwrap();
    let address = device.device_pointer(first).unwrap();
    device.free(first).unwrap();
    let stats = device.cache_stats();
    assert_eq!((stats.live_buffers, stats.cached_blocks, stats.cached_bytes), (0, 1, 1024));
    assert_eq!(ledger.lock().unwrap().records, streams.len(), "one fence per live stream");
    assert_eq!(ledger.lock().unwrap().frees, 0, "cached, not freed");
    let free_bytes = device.memory().unwrap().free_bytes;
    assert_eq!(free_bytes, device.driver_memory().unwrap().free_bytes + 1024);

    let second = device.alloc(600).unwrap();
    assert_eq!(device.device_pointer(second).unwrap(), address, "same size class, same block");
    assert_ne!(second.id, first.id, "a reused block gets a fresh handle");
    assert_eq!(ledger.lock().unwrap().event_waits, streams.len(), "the fences were waited for");
    assert_eq!(ledger.lock().unwrap().mallocs, 1);
    device.free(second).unwrap();
    device.trim_cache().unwrap();
    assert_eq!(device.cache_stats().cached_bytes, 0);
    assert_eq!(ledger.lock().unwrap().frees, 1);
}

#[test]
fn without_a_cache_memory_goes_straight_back_and_is_of_the_size_asked() {
    let (device, ledger) = device(1 << 20, 0);
    let empty = device.alloc(0).unwrap();
    let odd = device.alloc(1000).unwrap();
    let sizes: Vec<usize> = ledger.lock().unwrap().memory.values().map(Vec::len).collect();
    assert_eq!(sizes, [1, 1000], "at least one byte, else exactly the request");
    device.free(empty).unwrap();
    device.free(odd).unwrap();
    let ledger = ledger.lock().unwrap();
    assert_eq!((ledger.frees, ledger.records), (2, 0), "no fences without a cache");
    assert_eq!(device.cache_stats().cache_bytes_max, 0);
}

#[test]
fn out_of_memory_empties_the_cache_and_retries_once_then_says_how_much_is_free() {
    let (device, ledger) = device(8192, 8192);
    let cached = device.alloc(4096).unwrap();
    device.free(cached).unwrap();
    assert_eq!(device.cache_stats().cached_blocks, 1);
    let big = device.alloc(8000).unwrap();
    assert_eq!(device.cache_stats().cached_blocks, 0, "emptied to make room");
    assert_eq!(ledger.lock().unwrap().mallocs, 3, "the first block, the refusal, the retry");
    match device.alloc(100) {
        Err(GpuError::OutOfMemory { device: id, requested_bytes, free_bytes }) => {
            assert_eq!((id, requested_bytes, free_bytes), (ID, 100, 0));
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    device.free(big).unwrap();
    let overflow = device.alloc(usize::MAX);
    assert!(matches!(overflow, Err(GpuError::OutOfMemory { requested_bytes: usize::MAX, .. })));
}

#[test]
fn streams_and_events_are_bounded_and_their_spares_reused() {
    let (device, ledger) = device(1 << 20, 0);
    let streams: Vec<Stream> = (0..STREAMS_MAX).map(|_| device.create_stream().unwrap()).collect();
    let limit = GpuError::LimitReached { device: ID, what: "streams", limit: STREAMS_MAX };
    assert_eq!(device.create_stream(), Err(limit));
    device.destroy_stream(streams[0]).unwrap();
    let again = device.create_stream().unwrap();
    assert_ne!(again, streams[0], "a fresh id");
    assert_eq!(ledger.lock().unwrap().streams, (STREAMS_MAX as u32, 0), "the spare came back");

    let event = device.record_event(again).unwrap();
    device.wait_event(streams[1], event).unwrap();
    device.event_synchronize(event).unwrap();
    device.destroy_event(event).unwrap();
    let next = device.record_event(again).unwrap();
    assert_ne!(next, event);
    assert_eq!(ledger.lock().unwrap().events, (1, 0), "the released event was reused");
}

#[test]
fn a_launch_passes_every_slot_with_buffers_as_their_addresses() {
    let (device, ledger) = device(1 << 20, 0);
    let stream = device.create_stream().unwrap();
    let source = KernelSource::Cuda { entry: "axpb".into(), source: "void axpb()".into() };
    let kernel = device.compile(&source).unwrap();
    let x = device.alloc(64).unwrap();
    let args = [Arg::Buffer(x), Arg::F32(2.0), Arg::U32(16)];
    device.launch(stream, kernel, LaunchConfig::linear(16, 16), &args).unwrap();
    let (name, words) = ledger.lock().unwrap().launches.pop().unwrap();
    assert_eq!(name, "axpb");
    assert_eq!(words.len(), KERNEL_ARGS_MAX);
    assert_eq!(words[..4], [device.device_pointer(x).unwrap(), 2f32.to_bits().into(), 16, 0]);
    let missing = KernelSource::Cuda { entry: "gone".into(), source: "void axpb()".into() };
    assert!(matches!(device.compile(&missing), Err(GpuError::Compile { .. })));
    assert_eq!(ledger.lock().unwrap().unloaded, 1, "the failed module was unloaded");
    let wgsl = KernelSource::Wgsl { entry: "main".into(), source: String::new() };
    match device.compile(&wgsl) {
        Err(GpuError::InvalidArgument { detail, .. }) => {
            assert!(detail.contains("is not CUDA C") && detail.contains("KernelSource::Cuda"));
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn the_standard_kernels_load_once_and_gemm_falls_back_to_them() {
    let (device, ledger) = device(1 << 20, 0);
    let handles: Vec<KernelHandle> =
        Kernel::ALL.iter().map(|&k| device.load_kernel(k).unwrap()).collect();
    assert_eq!(ledger.lock().unwrap().modules.len(), 1, "one module for all nine");
    let gemm_at = Kernel::ALL.iter().position(|&k| k == Kernel::Gemm).unwrap();
    assert_eq!(device.load_kernel(Kernel::Gemm).unwrap(), handles[gemm_at]);
    let stream = device.create_stream().unwrap();
    let [a, b, c] =
        [device.alloc(16).unwrap(), device.alloc(16).unwrap(), device.alloc(16).unwrap()];
    let gemm = Gemm { m: 2, n: 2, k: 2, alpha: 1.0, beta: 0.0, a, b, c };
    device.gemm(stream, &gemm).unwrap();
    assert!(!device.has_blas());
    assert_eq!(ledger.lock().unwrap().launches.last().unwrap().0, Kernel::Gemm.name());
}

#[test]
fn dropping_the_device_returns_everything_it_holds() {
    let (device, ledger) = device(1 << 20, 1 << 16);
    let stream = device.create_stream().unwrap();
    let spare = device.create_stream().unwrap();
    device.destroy_stream(spare).unwrap();
    let _live = device.alloc(100).unwrap();
    let cached = device.alloc(5000).unwrap();
    device.free(cached).unwrap();
    device.record_event(stream).unwrap();
    device.load_kernel(Kernel::Empty).unwrap();
    drop(device);
    let ledger = ledger.lock().unwrap();
    assert!(ledger.memory.is_empty(), "live and cached blocks freed");
    assert_eq!(ledger.streams.0, ledger.streams.1, "every stream destroyed");
    assert_eq!(ledger.events.0, ledger.events.1, "every event destroyed, fences included");
    assert_eq!(ledger.unloaded, 1, "the module unloaded");
}
