//! AMD GPUs through HIP (feature `rocm`).
//!
//! Built on hip-runtime-sys's bindings of the HIP runtime, plus a small
//! hand-written binding of hiprtc (the crate has none). Unlike the CUDA
//! backend, libamdhip64 is *linked*, not loaded: a binary built with
//! `rocm` needs the library to start at all, so "library missing" is a
//! link- or load-time failure, not a run-time answer. What detection does
//! answer as a value is a machine with the library and no AMD GPU: HIP
//! reports `hipErrorNoDevice`, which `open_all` turns into
//! [`NotAvailable`](GpuError::NotAvailable) "no device".
//!
//! - **Device selection.** HIP's current device is per thread; every method
//!   calls `hipSetDevice` first, so any thread may call any method.
//! - **Memory** comes straight from `hipMalloc`/`hipFree` (no cache: HIP's
//!   own allocator already pools). A `write` waits for its copy to finish:
//!   HIP does not promise to have consumed pageable host memory when
//!   `hipMemcpyHtoDAsync` returns, and the caller may reuse it at once.
//! - **Kernels.** The standard kernels (`kernels/hip/standard.hip`) are
//!   compiled by hiprtc once per device for its `gcnArchName`, loaded with
//!   `hipModuleLoadData` and launched with `hipModuleLaunchKernel`. GEMM
//!   uses the standard kernel (Debian ships no rocBLAS).
//!
//! Locking follows the CUDA backend: one mutex over the tables, held while
//! work is submitted; waits happen outside it on [`Arc`]-held handles.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use hip::hipError_t;
use hip_runtime_sys as hip;

use crate::device::{
    Arg, BackendKind, Buffer, Device, DeviceId, DeviceInfo, Event, Gemm, HealthReport,
    KernelHandle, LaunchConfig, MemoryInfo, Stream,
};
use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource, gemm_args, gemm_config};

/// The standard kernels' HIP source.
const STANDARD_SOURCE: &str = include_str!("../../kernels/hip/standard.hip");

/// Live buffers per device (as for CUDA: a bound that catches leaks).
const BUFFERS_MAX: usize = 1 << 20;
/// Live streams per device (a kernel actor holds one or two).
const STREAMS_MAX: usize = 64;
/// Live events per device.
const EVENTS_MAX: usize = 1 << 16;
/// Loaded kernels per device: the nine standard ones plus user kernels.
const KERNELS_MAX: usize = 4096;
/// Arguments one launch may pass; every launch hands HIP this many zeroed
/// 64-byte slots, so a kernel declaring more parameters reads zeros.
const KERNEL_ARGS_MAX: usize = 32;
/// Words behind each parameter slot.
const ARG_SLOT_WORDS: usize = 8;

/// hiprtc, which hip-runtime-sys does not bind. In HIP 5.x its symbols live
/// in libamdhip64 (linked by hip-runtime-sys); ROCm 6 moved them to
/// libhiprtc, which this block would then have to name.
mod hiprtc {
    use std::ffi::{c_char, c_int, c_void};

    /// `hiprtcProgram`: an opaque pointer.
    pub(super) type Program = *mut c_void;
    /// `HIPRTC_SUCCESS`.
    pub(super) const SUCCESS: c_int = 0;
    /// `HIPRTC_ERROR_COMPILATION`.
    pub(super) const ERROR_COMPILATION: c_int = 6;

    // SAFETY (of the declarations): each signature is copied from
    // /usr/include/hip/hiprtc.h (HIP 5.2): `hiprtcResult` is a C enum,
    // passed as `int`; `size_t` is `usize`; strings are NUL-terminated
    // `const char*`. Results are read as plain integers, so an unknown code
    // is still a valid value.
    #[link(name = "amdhip64")]
    unsafe extern "C" {
        #[link_name = "hiprtcCreateProgram"]
        pub(super) fn create_program(
            prog: *mut Program,
            src: *const c_char,
            name: *const c_char,
            num_headers: c_int,
            headers: *const *const c_char,
            include_names: *const *const c_char,
        ) -> c_int;
        #[link_name = "hiprtcCompileProgram"]
        pub(super) fn compile_program(
            prog: Program,
            num_options: c_int,
            options: *const *const c_char,
        ) -> c_int;
        #[link_name = "hiprtcGetProgramLogSize"]
        pub(super) fn get_program_log_size(prog: Program, size: *mut usize) -> c_int;
        #[link_name = "hiprtcGetProgramLog"]
        pub(super) fn get_program_log(prog: Program, log: *mut c_char) -> c_int;
        #[link_name = "hiprtcGetCodeSize"]
        pub(super) fn get_code_size(prog: Program, size: *mut usize) -> c_int;
        #[link_name = "hiprtcGetCode"]
        pub(super) fn get_code(prog: Program, code: *mut c_char) -> c_int;
        #[link_name = "hiprtcDestroyProgram"]
        pub(super) fn destroy_program(prog: *mut Program) -> c_int;
    }
}

/// The name HIP gives an error code (`hipErrorOutOfMemory`).
fn error_name(code: hipError_t) -> String {
    format!("{code:?}")
}

/// Converts a failed HIP call into a [`GpuError`] of the right class.
pub(crate) fn hip_error(device: DeviceId, code: hipError_t, what: &str) -> GpuError {
    let name = error_name(code);
    let detail = format!("{what}: {name}");
    match code {
        hipError_t::hipErrorOutOfMemory | hipError_t::hipErrorRuntimeMemory => {
            GpuError::OutOfMemory { device, requested: 0, free: 0 }
        }
        hipError_t::hipErrorECCNotCorrectable => GpuError::Ecc { device, detail },
        hipError_t::hipErrorLaunchTimeOut => {
            GpuError::KernelTimeout { device, kernel: what.to_string() }
        }
        hipError_t::hipErrorLaunchOutOfResources | hipError_t::hipErrorNotReady => {
            GpuError::Busy { device, detail }
        }
        hipError_t::hipErrorIllegalAddress
        | hipError_t::hipErrorLaunchFailure
        | hipError_t::hipErrorAssert
        | hipError_t::hipErrorContextIsDestroyed
        | hipError_t::hipErrorDeinitialized
        | hipError_t::hipErrorPriorLaunchFailure => GpuError::DeviceLost { device, detail },
        hipError_t::hipErrorInvalidValue
        | hipError_t::hipErrorInvalidHandle
        | hipError_t::hipErrorInvalidDevicePointer
        | hipError_t::hipErrorInvalidConfiguration
        | hipError_t::hipErrorNotFound => GpuError::invalid(device, detail),
        _ => GpuError::Driver { device, code: name, detail },
    }
}

/// Turns a HIP status into a `Result`.
fn check(code: hipError_t) -> Result<(), hipError_t> {
    if code == hipError_t::hipSuccess { Ok(()) } else { Err(code) }
}

/// How many AMD GPUs HIP sees; [`NotAvailable`](GpuError::NotAvailable)
/// "no device" when it sees none (`hipErrorNoDevice`, as on a machine with
/// the library but no GPU or no `/dev/kfd`).
pub fn device_count() -> Result<usize, GpuError> {
    let absent = |reason: String| GpuError::NotAvailable { backend: BackendKind::Rocm, reason };
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid out-pointer for the call's duration.
    match check(unsafe { hip::hipGetDeviceCount(&mut count) }) {
        Ok(()) if count > 0 => Ok(count as usize),
        Ok(()) | Err(hipError_t::hipErrorNoDevice) => Err(absent("no device".into())),
        Err(code) => Err(absent(format!("hipGetDeviceCount failed: {}", error_name(code)))),
    }
}

/// Opens every AMD GPU, or says why there are none.
pub(crate) fn open_all() -> Result<Vec<Arc<dyn Device>>, GpuError> {
    let count = device_count()?;
    let mut devices: Vec<Arc<dyn Device>> = Vec::with_capacity(count);
    for ordinal in 0..count {
        let device = RocmDevice::open(ordinal as u32)?;
        tracing::info!(device = %device.info.id, name = %device.info.name, "opened ROCm device");
        devices.push(Arc::new(device));
    }
    Ok(devices)
}

/// One AMD GPU.
pub struct RocmDevice {
    info: DeviceInfo,
    ordinal: c_int,
    /// The full `gcnArchName` (`gfx90a:sramecc+:xnack-`), hiprtc's target.
    arch: String,
    state: Mutex<State>,
}

// SAFETY: HIP handles (streams, events, modules, functions, device
// pointers) may be used from any thread once the device is selected, which
// every method does first; all mutable state is behind `state`'s mutex.
unsafe impl Send for RocmDevice {}
// SAFETY: as for `Send`.
unsafe impl Sync for RocmDevice {}

/// A stream destroyed when its last holder lets go.
struct RawStream {
    stream: hip::hipStream_t,
    ordinal: c_int,
}

/// An event destroyed when its last holder lets go.
struct RawEvent {
    event: hip::hipEvent_t,
    ordinal: c_int,
}

// SAFETY: usable from any thread once the device is selected (Drop selects
// it); the handle itself is never mutated.
unsafe impl Send for RawStream {}
// SAFETY: as above.
unsafe impl Sync for RawStream {}
// SAFETY: as above.
unsafe impl Send for RawEvent {}
// SAFETY: as above.
unsafe impl Sync for RawEvent {}

impl Drop for RawStream {
    fn drop(&mut self) {
        // SAFETY: the stream is destroyed once, here, by its only owner.
        unsafe {
            let _ = hip::hipSetDevice(self.ordinal);
            let _ = hip::hipStreamDestroy(self.stream);
        }
    }
}

impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: as for `RawStream`.
        unsafe {
            let _ = hip::hipSetDevice(self.ordinal);
            let _ = hip::hipEventDestroy(self.event);
        }
    }
}

struct LoadedKernel {
    function: hip::hipFunction_t,
    name: String,
    standard: Option<Kernel>,
}

struct State {
    buffers: HashMap<u64, (hip::hipDeviceptr_t, usize)>,
    next_buffer: u64,
    streams: HashMap<u32, Arc<RawStream>>,
    next_stream: u32,
    events: HashMap<u64, Arc<RawEvent>>,
    next_event: u64,
    modules: Vec<hip::hipModule_t>,
    kernels: Vec<LoadedKernel>,
    standard_handles: HashMap<Kernel, KernelHandle>,
}

/// `hipDeviceProp_t` with room to spare: a runtime whose struct is larger
/// than the one hip-runtime-sys was generated from writes into the padding
/// instead of past the end.
#[repr(C)]
struct Properties {
    properties: hip::hipDeviceProp_t,
    _spare: [u8; 4096],
}

impl RocmDevice {
    /// Opens AMD GPU `ordinal`, or says why not.
    pub fn open(ordinal: u32) -> Result<RocmDevice, GpuError> {
        let count = device_count()?;
        let id = DeviceId::new(BackendKind::Rocm, ordinal);
        if ordinal as usize >= count {
            return Err(GpuError::invalid(id, format!("there are only {count} ROCm devices")));
        }
        let hip_ordinal = ordinal as c_int;
        // SAFETY: the ordinal is in range (checked above).
        check(unsafe { hip::hipSetDevice(hip_ordinal) })
            .map_err(|e| hip_error(id, e, "hipSetDevice"))?;
        // SAFETY: `Properties` is plain old data (integers, arrays, raw
        // pointers), for which all-zero bytes are a valid value.
        let mut props: Box<Properties> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the pointer addresses a writable, zeroed struct at least
        // as large as the runtime's (see `Properties`).
        check(unsafe { hip::hipGetDeviceProperties(&mut props.properties, hip_ordinal) })
            .map_err(|e| hip_error(id, e, "hipGetDeviceProperties"))?;
        let text = |chars: &[c_char]| {
            let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let arch = text(&props.properties.gcnArchName);
        let name = text(&props.properties.name);
        let capability = arch.split(':').next().unwrap_or_default().to_string();
        let mut free = 0usize;
        let mut total = 0usize;
        // SAFETY: valid out-pointers; the device is selected.
        check(unsafe { hip::hipMemGetInfo(&mut free, &mut total) })
            .map_err(|e| hip_error(id, e, "hipMemGetInfo"))?;
        let info = DeviceInfo {
            id,
            name,
            memory_total: total as u64,
            capability,
            is_software: false,
            max_block_threads: props.properties.maxThreadsPerBlock.max(1) as u32,
        };
        let state = State {
            buffers: HashMap::new(),
            next_buffer: 1,
            streams: HashMap::new(),
            next_stream: 1,
            events: HashMap::new(),
            next_event: 1,
            modules: Vec::new(),
            kernels: Vec::new(),
            standard_handles: HashMap::new(),
        };
        Ok(RocmDevice { info, ordinal: hip_ordinal, arch, state: Mutex::new(state) })
    }

    /// The full architecture name hiprtc compiles for
    /// (`gfx90a:sramecc+:xnack-`); [`DeviceInfo::capability`] is its first part.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert or remove: a poisoned lock still
        // guards consistent tables.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn select(&self) -> Result<(), GpuError> {
        // SAFETY: the ordinal was valid when the device opened.
        check(unsafe { hip::hipSetDevice(self.ordinal) }).map_err(self.fail("hipSetDevice"))
    }

    fn fail<'a>(&self, what: &'a str) -> impl Fn(hipError_t) -> GpuError + 'a {
        let id = self.info.id;
        move |code| hip_error(id, code, what)
    }

    fn limit(&self, what: &'static str, limit: usize) -> GpuError {
        GpuError::LimitReached { device: self.info.id, what, limit }
    }

    fn buffer(&self, state: &State, buffer: Buffer) -> Result<hip::hipDeviceptr_t, GpuError> {
        match state.buffers.get(&buffer.id) {
            Some(&(ptr, bytes)) if bytes == buffer.bytes => Ok(ptr),
            Some(&(_, bytes)) => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "buffer {} says {} bytes but was allocated with {bytes}",
                    buffer.id, buffer.bytes
                ),
            )),
            None => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "buffer {} is not live on this device (freed, or another device's)",
                    buffer.id
                ),
            )),
        }
    }

    /// The address of `bytes` at `offset` in `buffer`, checked to lie inside.
    fn span(
        &self,
        state: &State,
        buffer: Buffer,
        offset: usize,
        bytes: usize,
    ) -> Result<hip::hipDeviceptr_t, GpuError> {
        let ptr = self.buffer(state, buffer)?;
        match offset.checked_add(bytes) {
            Some(end) if end <= buffer.bytes => Ok(ptr.cast::<u8>().wrapping_add(offset).cast()),
            _ => Err(GpuError::invalid(
                self.info.id,
                format!(
                    "{bytes} bytes at offset {offset} overrun buffer {} of {} bytes",
                    buffer.id, buffer.bytes
                ),
            )),
        }
    }

    fn stream(&self, state: &State, stream: Stream) -> Result<Arc<RawStream>, GpuError> {
        state.streams.get(&stream.0).cloned().ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("stream {} is not open on this device", stream.0),
            )
        })
    }

    fn event(&self, state: &State, event: Event) -> Result<Arc<RawEvent>, GpuError> {
        state.events.get(&event.0).cloned().ok_or_else(|| {
            GpuError::invalid(self.info.id, format!("event {} is not live on this device", event.0))
        })
    }

    /// Compiles HIP source with hiprtc for this device's architecture.
    fn compile_code(&self, name: &str, source: &str) -> Result<Vec<u8>, GpuError> {
        let compile_error =
            |log: String| GpuError::Compile { device: self.info.id, kernel: name.to_string(), log };
        let c_source = CString::new(source)
            .map_err(|_| compile_error("the source contains a NUL byte".into()))?;
        let c_name = CString::new(format!("{name}.hip"))
            .map_err(|_| compile_error("the name contains a NUL byte".into()))?;
        let option = CString::new(format!("--gpu-architecture={}", self.arch))
            .map_err(|_| compile_error("the architecture name contains a NUL byte".into()))?;
        let options = [option.as_ptr()];
        let mut program: hiprtc::Program = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated strings; no headers.
        let created = unsafe {
            hiprtc::create_program(
                &mut program,
                c_source.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if created != hiprtc::SUCCESS {
            return Err(compile_error(format!("hiprtcCreateProgram failed with code {created}")));
        }
        // SAFETY: `program` was created above and is destroyed only at the
        // end of this function; the options outlive the call.
        let compiled =
            unsafe { hiprtc::compile_program(program, options.len() as c_int, options.as_ptr()) };
        let log = program_log(program);
        let code = match compiled {
            hiprtc::SUCCESS => {
                program_code(program).ok_or_else(|| compile_error("hiprtcGetCode failed".into()))
            }
            hiprtc::ERROR_COMPILATION => Err(compile_error(log)),
            other => {
                Err(compile_error(format!("hiprtcCompileProgram failed with code {other}: {log}")))
            }
        };
        // SAFETY: `program` is live and not used after this.
        unsafe { hiprtc::destroy_program(&mut program) };
        code
    }

    /// Compiles `source`, loads it and looks up `entries`.
    fn load_source(
        &self,
        state: &mut State,
        name: &str,
        source: &str,
        entries: &[&str],
    ) -> Result<Vec<hip::hipFunction_t>, GpuError> {
        if state.kernels.len() + entries.len() > KERNELS_MAX {
            return Err(self.limit("kernels", KERNELS_MAX));
        }
        let code = self.compile_code(name, source)?;
        let mut module: hip::hipModule_t = std::ptr::null_mut();
        // SAFETY: `code` is a complete code object from hiprtc, alive for the
        // call (HIP copies it); the device is selected.
        check(unsafe { hip::hipModuleLoadData(&mut module, code.as_ptr().cast()) })
            .map_err(self.fail("hipModuleLoadData"))?;
        let mut functions = Vec::with_capacity(entries.len());
        for entry in entries {
            let c_entry = CString::new(*entry).map_err(|_| {
                GpuError::invalid(self.info.id, format!("entry `{entry}` contains a NUL byte"))
            })?;
            let mut function: hip::hipFunction_t = std::ptr::null_mut();
            // SAFETY: `module` was just loaded; valid out-pointer and name.
            match check(unsafe {
                hip::hipModuleGetFunction(&mut function, module, c_entry.as_ptr())
            }) {
                Ok(()) => functions.push(function),
                Err(code) => {
                    // SAFETY: nothing refers to the module yet.
                    unsafe { hip::hipModuleUnload(module) };
                    return Err(GpuError::Compile {
                        device: self.info.id,
                        kernel: entry.to_string(),
                        log: format!(
                            "no `extern \"C\" __global__` function `{entry}` in the module ({})",
                            error_name(code)
                        ),
                    });
                }
            }
        }
        state.modules.push(module);
        Ok(functions)
    }

    fn push_kernel(
        state: &mut State,
        function: hip::hipFunction_t,
        name: &str,
        standard: Option<Kernel>,
    ) -> KernelHandle {
        let handle = KernelHandle(state.kernels.len() as u32);
        state.kernels.push(LoadedKernel { function, name: name.to_string(), standard });
        handle
    }

    fn check_launch(
        &self,
        loaded: &LoadedKernel,
        config: &LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        let name = loaded.name.as_str();
        let per_block: u64 = config.block.iter().map(|&b| u64::from(b)).product();
        if per_block == 0 || config.grid.contains(&0) {
            return Err(GpuError::invalid(
                self.info.id,
                format!("{name}: empty launch shape {config:?}"),
            ));
        }
        if per_block > u64::from(self.info.max_block_threads) {
            return Err(GpuError::invalid(
                self.info.id,
                format!(
                    "{name}: {per_block} threads per block exceed the device's {}",
                    self.info.max_block_threads
                ),
            ));
        }
        if args.len() > KERNEL_ARGS_MAX {
            return Err(self.limit("kernel arguments", KERNEL_ARGS_MAX));
        }
        if let Some(standard) = loaded.standard {
            let (buffers, scalars) = standard.arity();
            let kinds_match = args.len() == buffers + scalars
                && args
                    .iter()
                    .enumerate()
                    .all(|(i, arg)| matches!(arg, Arg::Buffer(_)) == (i < buffers));
            if !kinds_match {
                return Err(GpuError::invalid(
                    self.info.id,
                    format!("{name} takes {buffers} buffers then {scalars} scalars, got {args:?}"),
                ));
            }
        }
        Ok(())
    }
}

fn program_log(program: hiprtc::Program) -> String {
    let mut size = 0usize;
    // SAFETY: `program` is live (the caller's); valid out-pointer.
    if unsafe { hiprtc::get_program_log_size(program, &mut size) } != hiprtc::SUCCESS || size == 0 {
        return String::new();
    }
    let mut log = vec![0 as c_char; size];
    // SAFETY: `log` has the `size` bytes hiprtc asked for.
    if unsafe { hiprtc::get_program_log(program, log.as_mut_ptr()) } != hiprtc::SUCCESS {
        return String::new();
    }
    log.push(0);
    // SAFETY: `log` ends with the NUL pushed just above.
    unsafe { CStr::from_ptr(log.as_ptr()) }.to_string_lossy().trim().to_string()
}

fn program_code(program: hiprtc::Program) -> Option<Vec<u8>> {
    let mut size = 0usize;
    // SAFETY: `program` is live (the caller's); valid out-pointer.
    if unsafe { hiprtc::get_code_size(program, &mut size) } != hiprtc::SUCCESS || size == 0 {
        return None;
    }
    let mut code = vec![0u8; size];
    // SAFETY: `code` has the `size` bytes hiprtc asked for.
    (unsafe { hiprtc::get_code(program, code.as_mut_ptr().cast()) } == hiprtc::SUCCESS)
        .then_some(code)
}

impl Device for RocmDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        self.select()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers; the device is selected.
        check(unsafe { hip::hipMemGetInfo(&mut free, &mut total) })
            .map_err(self.fail("hipMemGetInfo"))?;
        Ok(MemoryInfo { free: free as u64, total: total as u64 })
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        self.select()?;
        let mut state = self.lock();
        if state.buffers.len() >= BUFFERS_MAX {
            return Err(self.limit("buffers", BUFFERS_MAX));
        }
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer; at least one byte so the handle names
        // real memory even for an empty buffer.
        match check(unsafe { hip::hipMalloc(&mut ptr, bytes.max(1)) }) {
            Ok(()) => {}
            Err(hipError_t::hipErrorOutOfMemory) => {
                let free = self.memory().map(|m| m.free as usize).unwrap_or(0);
                return Err(GpuError::OutOfMemory { device: self.info.id, requested: bytes, free });
            }
            Err(code) => return Err(hip_error(self.info.id, code, &format!("hipMalloc({bytes})"))),
        }
        let id = state.next_buffer;
        state.next_buffer += 1;
        state.buffers.insert(id, (ptr, bytes));
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        self.select()?;
        let mut state = self.lock();
        let ptr = self.buffer(&state, buffer)?;
        state.buffers.remove(&buffer.id);
        // SAFETY: `ptr` came from hipMalloc and just left the table, so it is
        // freed once; hipFree waits for work still using it.
        check(unsafe { hip::hipFree(ptr) }).map_err(self.fail("hipFree"))
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        self.select()?;
        let raw = {
            let state = self.lock();
            let raw = self.stream(&state, stream)?;
            let address = self.span(&state, dst, offset, src.len())?;
            if src.is_empty() {
                return Ok(());
            }
            // SAFETY: the span lies in a live allocation and the stream is
            // live. HIP reads `src` (declared `*mut` but only read) possibly
            // after returning, so the stream is synchronized below before
            // `src` is released to the caller.
            check(unsafe {
                hip::hipMemcpyHtoDAsync(
                    address,
                    src.as_ptr().cast_mut().cast(),
                    src.len(),
                    raw.stream,
                )
            })
            .map_err(self.fail("hipMemcpyHtoDAsync"))?;
            raw
        };
        // SAFETY: the stream is held alive by the Arc.
        check(unsafe { hip::hipStreamSynchronize(raw.stream) })
            .map_err(self.fail("hipStreamSynchronize (write)"))
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        self.select()?;
        let raw = {
            let state = self.lock();
            let raw = self.stream(&state, stream)?;
            let address = self.span(&state, src, offset, dst.len())?;
            if dst.is_empty() {
                return Ok(());
            }
            // SAFETY: the span lies in a live allocation, the stream is live,
            // and `dst` stays borrowed until the stream is synchronized below.
            check(unsafe {
                hip::hipMemcpyDtoHAsync(dst.as_mut_ptr().cast(), address, dst.len(), raw.stream)
            })
            .map_err(self.fail("hipMemcpyDtoHAsync"))?;
            raw
        };
        // SAFETY: the stream is held alive by the Arc.
        check(unsafe { hip::hipStreamSynchronize(raw.stream) })
            .map_err(self.fail("hipStreamSynchronize (read)"))
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        self.select()?;
        let state = self.lock();
        let raw = self.stream(&state, stream)?;
        let from = self.span(&state, src, 0, bytes)?;
        let to = self.span(&state, dst, 0, bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: both spans lie in live allocations and the stream is live.
        check(unsafe { hip::hipMemcpyDtoDAsync(to, from, bytes, raw.stream) })
            .map_err(self.fail("hipMemcpyDtoDAsync"))
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        self.select()?;
        let mut state = self.lock();
        if state.streams.len() >= STREAMS_MAX {
            return Err(self.limit("streams", STREAMS_MAX));
        }
        let mut stream: hip::hipStream_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the device is selected.
        check(unsafe { hip::hipStreamCreateWithFlags(&mut stream, hip::hipStreamNonBlocking) })
            .map_err(self.fail("hipStreamCreateWithFlags"))?;
        let id = state.next_stream;
        state.next_stream = state.next_stream.wrapping_add(1).max(1);
        state.streams.insert(id, Arc::new(RawStream { stream, ordinal: self.ordinal }));
        Ok(Stream(id))
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        self.select()?;
        let raw = {
            let mut state = self.lock();
            self.stream(&state, stream)?;
            state.streams.remove(&stream.0).expect("checked just above")
        };
        // SAFETY: the stream is held alive by the Arc; it is destroyed when
        // the Arc drops, after this wait.
        check(unsafe { hip::hipStreamSynchronize(raw.stream) })
            .map_err(self.fail("hipStreamSynchronize"))
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        self.select()?;
        let raw = self.stream(&self.lock(), stream)?;
        // SAFETY: the stream is held alive by the Arc.
        check(unsafe { hip::hipStreamSynchronize(raw.stream) })
            .map_err(self.fail("hipStreamSynchronize"))
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        self.select()?;
        let mut state = self.lock();
        if state.events.len() >= EVENTS_MAX {
            return Err(self.limit("events", EVENTS_MAX));
        }
        let raw_stream = self.stream(&state, stream)?;
        let mut event: hip::hipEvent_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the device is selected.
        check(unsafe { hip::hipEventCreateWithFlags(&mut event, hip::hipEventDisableTiming) })
            .map_err(self.fail("hipEventCreateWithFlags"))?;
        let raw = RawEvent { event, ordinal: self.ordinal };
        // SAFETY: both handles are live.
        check(unsafe { hip::hipEventRecord(raw.event, raw_stream.stream) })
            .map_err(self.fail("hipEventRecord"))?;
        let id = state.next_event;
        state.next_event += 1;
        state.events.insert(id, Arc::new(raw));
        Ok(Event(id))
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        self.select()?;
        let state = self.lock();
        let raw_stream = self.stream(&state, stream)?;
        let raw_event = self.event(&state, event)?;
        // SAFETY: both handles are live; HIP requires flags 0.
        check(unsafe { hip::hipStreamWaitEvent(raw_stream.stream, raw_event.event, 0) })
            .map_err(self.fail("hipStreamWaitEvent"))
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        self.select()?;
        let raw = self.event(&self.lock(), event)?;
        // SAFETY: the event is held alive by the Arc.
        check(unsafe { hip::hipEventSynchronize(raw.event) })
            .map_err(self.fail("hipEventSynchronize"))
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        self.select()?;
        let mut state = self.lock();
        self.event(&state, event)?;
        state.events.remove(&event.0);
        Ok(())
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        self.select()?;
        let mut state = self.lock();
        if let Some(&handle) = state.standard_handles.get(&kernel) {
            return Ok(handle);
        }
        let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
        let functions = self.load_source(&mut state, "zbmd_standard", STANDARD_SOURCE, &names)?;
        for (standard, function) in Kernel::ALL.into_iter().zip(functions) {
            let handle = Self::push_kernel(&mut state, function, standard.name(), Some(standard));
            state.standard_handles.insert(standard, handle);
        }
        state.standard_handles.get(&kernel).copied().ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("{} missing from the standard module", kernel.name()),
            )
        })
    }

    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError> {
        let KernelSource::Hip { entry, source } = source else {
            return Err(GpuError::invalid(
                self.info.id,
                format!(
                    "kernel `{}` is not HIP: the ROCm backend compiles only KernelSource::Hip",
                    source.entry()
                ),
            ));
        };
        self.select()?;
        let mut state = self.lock();
        let functions = self.load_source(&mut state, entry, source, &[entry.as_str()])?;
        Ok(Self::push_kernel(&mut state, functions[0], entry, None))
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        self.select()?;
        let state = self.lock();
        let loaded = state.kernels.get(kernel.0 as usize).ok_or_else(|| {
            GpuError::invalid(
                self.info.id,
                format!("kernel {} is not loaded on this device", kernel.0),
            )
        })?;
        self.check_launch(loaded, &config, args)?;
        let raw_stream = self.stream(&state, stream)?;
        let mut slots = [[0u64; ARG_SLOT_WORDS]; KERNEL_ARGS_MAX];
        for (slot, arg) in slots.iter_mut().zip(args) {
            match *arg {
                Arg::Buffer(buffer) => slot[0] = self.buffer(&state, buffer)? as u64,
                Arg::U32(value) => slot[0] = u64::from(value),
                Arg::F32(value) => slot[0] = u64::from(value.to_bits()),
            }
        }
        let mut params: Vec<*mut c_void> =
            slots.iter_mut().map(|slot| slot.as_mut_ptr().cast()).collect();
        let [gx, gy, gz] = config.grid;
        let [bx, by, bz] = config.block;
        // SAFETY: (1) the function belongs to a module loaded on this device
        // and kept until the device drops; (2) the stream is live; (3) each
        // parameter pointer addresses a zeroed 64-byte slot holding the
        // argument in its low bytes (little-endian), copied by HIP before it
        // returns; (4) buffer arguments are live allocations (their sizes are
        // checked by `kernel::check_args` for the standard kernels).
        check(unsafe {
            hip::hipModuleLaunchKernel(
                loaded.function,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                0,
                raw_stream.stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
        .map_err(|code| hip_error(self.info.id, code, &loaded.name))
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        gemm.validate(self.info.id)?;
        if gemm.m == 0 || gemm.n == 0 {
            return Ok(());
        }
        let kernel = self.load_kernel(Kernel::Gemm)?;
        self.launch(stream, kernel, gemm_config(gemm), &gemm_args(self, gemm)?)
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        Ok(match self.memory() {
            Ok(memory) => HealthReport {
                responsive: true,
                detail: format!(
                    "{} of {} bytes free; ECC counts need rocm-smi",
                    memory.free, memory.total
                ),
                ..HealthReport::default()
            },
            Err(error) => HealthReport {
                responsive: false,
                detail: error.to_string(),
                ..HealthReport::default()
            },
        })
    }
}

impl Drop for RocmDevice {
    fn drop(&mut self) {
        // Best effort: a lost device fails every call.
        // SAFETY: selecting and synchronizing the device touch no Rust memory.
        unsafe {
            let _ = hip::hipSetDevice(self.ordinal);
            let _ = hip::hipDeviceSynchronize();
        }
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, (ptr, _)) in state.buffers.drain() {
            // SAFETY: each live pointer came from hipMalloc and is freed once.
            let _ = unsafe { hip::hipFree(ptr) };
        }
        // `&mut self`: no method runs, so these Arcs are the only holders.
        state.streams.clear();
        state.events.clear();
        for module in state.modules.drain(..) {
            // SAFETY: loaded on this device; the device was synchronized and
            // nothing launches from it again.
            let _ = unsafe { hip::hipModuleUnload(module) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn hip_codes_map_to_the_class_a_caller_acts_on() {
        let device = DeviceId::new(BackendKind::Rocm, 0);
        let cases = [
            (hipError_t::hipErrorOutOfMemory, ErrorClass::OutOfMemory),
            (hipError_t::hipErrorECCNotCorrectable, ErrorClass::Device),
            (hipError_t::hipErrorLaunchTimeOut, ErrorClass::Transient),
            (hipError_t::hipErrorLaunchOutOfResources, ErrorClass::Transient),
            (hipError_t::hipErrorIllegalAddress, ErrorClass::Device),
            (hipError_t::hipErrorInvalidValue, ErrorClass::Request),
            (hipError_t::hipErrorUnknown, ErrorClass::Device),
        ];
        for (code, class) in cases {
            assert_eq!(hip_error(device, code, "op").class(), class, "{code:?}");
        }
        let lost = hip_error(device, hipError_t::hipErrorIllegalAddress, "sync");
        assert_eq!(
            lost,
            GpuError::DeviceLost { device, detail: "sync: hipErrorIllegalAddress".into() }
        );
    }
}
