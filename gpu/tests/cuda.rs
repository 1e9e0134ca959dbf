//! The CUDA backend. Detection runs everywhere: without libcuda it must
//! answer NotAvailable as a value; with a GPU it must find one. The rest
//! needs an NVIDIA GPU (`make test-gpu` runs them with `--ignored`).
#![cfg(feature = "cuda")]

mod common;

use zbmd_gpu::cuda::{CudaDevice, device_count};
use zbmd_gpu::{Arg, BackendKind, Device, Gemm, GpuError, KernelSource, LaunchConfig};

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn open() -> CudaDevice {
    CudaDevice::open(0).expect("an NVIDIA GPU with a working driver")
}

/// Deterministic values in [-1, 1) (no RNG crate needed).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn detection_answers_with_a_value_never_a_panic() {
    // SAFETY: probing dlopens libcuda and closes it again.
    let driver_present = unsafe { cudarc::driver::sys::is_culib_present() };
    match device_count() {
        Ok(count) => {
            assert!(driver_present && count >= 1);
            let device = open();
            assert_eq!(device.info().id.backend, BackendKind::Cuda);
            assert!(device.info().capability.starts_with("sm_"), "{:?}", device.info());
            assert!(device.info().memory_total_bytes > 0);
        }
        Err(GpuError::NotAvailable { backend, reason }) => {
            assert_eq!(backend, BackendKind::Cuda);
            if driver_present {
                assert!(reason == "no device" || reason.starts_with("cuInit failed"), "{reason}");
            } else {
                assert_eq!(reason, "driver not found (libcuda.so)");
            }
            let opened = CudaDevice::open(0).map(|_| ());
            assert_eq!(opened, Err(GpuError::NotAvailable { backend, reason }));
        }
        Err(other) => panic!("detection must answer NotAvailable, not {other:?}"),
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn device_conforms() {
    let device = open();
    common::conformance::check_device(&device);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_user_kernel_compiles_and_runs() {
    let device = open();
    let source = r#"
        extern "C" __global__ void axpb(const float* x, float* out, float a, float b, unsigned int n) {
            unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) out[i] = a * x[i] + b;
        }"#;
    let kernel = device
        .compile(&KernelSource::Cuda { entry: "axpb".into(), source: source.into() })
        .expect("compiles");
    let n = 1000;
    let input = values(n, 1);
    let stream = device.create_stream().unwrap();
    let x = device.alloc(n * 4).unwrap();
    let out = device.alloc(n * 4).unwrap();
    device.write(stream, x, 0, &to_bytes(&input)).unwrap();
    let args =
        [Arg::Buffer(x), Arg::Buffer(out), Arg::F32(3.0), Arg::F32(-1.0), Arg::U32(n as u32)];
    device.launch(stream, kernel, LaunchConfig::linear(n, 128), &args).unwrap();
    let mut bytes = vec![0u8; n * 4];
    device.read(stream, out, 0, &mut bytes).unwrap();
    for (got, x) in from_bytes(&bytes).iter().zip(&input) {
        assert_eq!(*got, 3.0 * x - 1.0);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_syntax_error_is_a_compile_error_with_nvrtcs_log() {
    let device = open();
    let source = "extern \"C\" __global__ void broken(float* x) { x[0] = ; }";
    let error = device
        .compile(&KernelSource::Cuda { entry: "broken".into(), source: source.into() })
        .unwrap_err();
    match &error {
        GpuError::Compile { kernel, log, .. } => {
            assert_eq!(kernel, "broken");
            assert!(log.contains("error"), "the log should carry NVRTC's diagnostics: {log}");
        }
        other => panic!("expected Compile, got {other:?}"),
    }
    let wgsl = KernelSource::Wgsl { entry: "main".into(), source: String::new() };
    assert!(matches!(device.compile(&wgsl), Err(GpuError::InvalidArgument { .. })));
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn the_cache_reuses_a_freed_block_without_asking_the_driver() {
    let device = open();
    let bytes = 64 << 20;
    let first = device.alloc(bytes).unwrap();
    let address = device.device_pointer(first).unwrap();
    device.free(first).unwrap();
    let stats = device.cache_stats();
    assert_eq!((stats.live_buffers, stats.cached_blocks), (0, 1));
    assert!(stats.cached_bytes >= bytes);
    let free_before = device.driver_memory().unwrap().free_bytes;
    assert!(
        device.memory().unwrap().free_bytes >= free_before + bytes as u64,
        "cached bytes count as free"
    );

    let second = device.alloc(bytes).unwrap();
    let free_after = device.driver_memory().unwrap().free_bytes;
    assert!(free_after >= free_before, "the driver lost {} bytes", free_before - free_after);
    assert_eq!(device.device_pointer(second).unwrap(), address);
    assert_ne!(second.id, first.id, "a reused block gets a fresh handle");
    assert!(matches!(device.free(first), Err(GpuError::InvalidArgument { .. })), "stale handle");
    device.free(second).unwrap();
    device.trim_cache().unwrap();
    assert_eq!(device.cache_stats().cached_bytes, 0);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn an_absurd_allocation_is_out_of_memory() {
    let device = open();
    let requested = 1usize << 50;
    match device.alloc(requested) {
        Err(GpuError::OutOfMemory { device: id, requested_bytes: asked, .. }) => {
            assert_eq!((id, asked), (device.id(), requested));
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // The device is still usable afterwards.
    let buffer = device.alloc(4096).unwrap();
    device.free(buffer).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cublas_and_the_standard_kernel_agree_with_a_row_major_reference() {
    let device = open();
    assert!(device.has_cublas(), "cuBLAS should be present next to the driver");
    let (m, n, k) = (37, 21, 19);
    let (a_values, b_values, c_values) = (values(m * k, 2), values(k * n, 3), values(m * n, 4));
    let (alpha, beta) = (1.5f32, 0.5f32);
    let mut expected = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f32 = (0..k).map(|e| a_values[i * k + e] * b_values[e * n + j]).sum();
            expected[i * n + j] = alpha * dot + beta * c_values[i * n + j];
        }
    }
    let kernels = zbmd_gpu::Kernels::load(&device).unwrap();
    let stream = device.create_stream().unwrap();
    let [a, b, c] = [m * k, k * n, m * n].map(|len| device.alloc(len * 4).unwrap());
    device.write(stream, a, 0, &to_bytes(&a_values)).unwrap();
    device.write(stream, b, 0, &to_bytes(&b_values)).unwrap();
    let gemm = Gemm { m, n, k, alpha, beta, a, b, c };
    for standard in [false, true] {
        device.write(stream, c, 0, &to_bytes(&c_values)).unwrap();
        if standard {
            kernels.gemm(&device, stream, &gemm).unwrap();
        } else {
            device.gemm(stream, &gemm).unwrap();
        }
        let mut bytes = vec![0u8; m * n * 4];
        device.read(stream, c, 0, &mut bytes).unwrap();
        for (index, (got, want)) in from_bytes(&bytes).iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "standard={standard} c[{index}] = {got}, want {want}"
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn an_event_orders_work_across_streams() {
    let device = open();
    let n = 1 << 20;
    let input = values(n, 5);
    let (producer, consumer) = (device.create_stream().unwrap(), device.create_stream().unwrap());
    let (src, dst) = (device.alloc(n * 4).unwrap(), device.alloc(n * 4).unwrap());
    device.write(producer, src, 0, &to_bytes(&input)).unwrap();
    let written = device.record_event(producer).unwrap();
    device.wait_event(consumer, written).unwrap();
    device.copy(consumer, src, dst, n * 4).unwrap();
    let mut bytes = vec![0u8; n * 4];
    device.read(consumer, dst, 0, &mut bytes).unwrap();
    assert_eq!(from_bytes(&bytes), input);
    device.event_synchronize(written).unwrap();
    device.destroy_event(written).unwrap();
    assert!(matches!(device.event_synchronize(written), Err(GpuError::InvalidArgument { .. })));
    device.destroy_stream(producer).unwrap();
    assert!(matches!(device.synchronize(producer), Err(GpuError::InvalidArgument { .. })));
}
