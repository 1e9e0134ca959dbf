//! The ROCm backend. Detection runs everywhere: on a machine with HIP's
//! library but no AMD GPU it must answer NotAvailable "no device"; with a
//! GPU it must find one. The rest needs an AMD GPU (`--ignored`).
#![cfg(feature = "rocm")]

mod common;

use zbmd_gpu::rocm::{RocmDevice, device_count};
use zbmd_gpu::{Arg, BackendKind, Device, GpuError, KernelSource, LaunchConfig};

fn open() -> RocmDevice {
    RocmDevice::open(0).expect("an AMD GPU with a working ROCm stack")
}

/// Whether the machine has the kernel driver HIP talks to.
fn kfd_present() -> bool {
    std::path::Path::new("/dev/kfd").exists()
}

#[test]
fn detection_answers_with_a_value_never_a_panic() {
    match device_count() {
        Ok(count) => {
            assert!(count >= 1);
            let device = open();
            assert_eq!(device.info().id.backend, BackendKind::Rocm);
            assert!(device.info().capability.starts_with("gfx"), "{:?}", device.info());
            assert!(device.arch().starts_with(&device.info().capability));
        }
        Err(GpuError::NotAvailable { backend, reason }) => {
            assert_eq!(backend, BackendKind::Rocm);
            if !kfd_present() {
                assert_eq!(reason, "no device");
            }
            let opened = RocmDevice::open(0).map(|_| ());
            assert_eq!(opened, Err(GpuError::NotAvailable { backend, reason }));
        }
        Err(other) => panic!("detection must answer NotAvailable, not {other:?}"),
    }
}

#[test]
#[ignore = "needs an AMD GPU"]
fn device_conforms() {
    let device = open();
    common::conformance::check_device(&device);
}

#[test]
#[ignore = "needs an AMD GPU"]
fn a_user_kernel_compiles_and_runs() {
    let device = open();
    let source = r#"
        extern "C" __global__ void negate(const float* x, float* out, unsigned int n) {
            unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) out[i] = -x[i];
        }"#;
    let kernel = device
        .compile(&KernelSource::Hip { entry: "negate".into(), source: source.into() })
        .expect("compiles");
    let n = 300;
    let input: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    let stream = device.create_stream().unwrap();
    let (x, out) = (device.alloc(n * 4).unwrap(), device.alloc(n * 4).unwrap());
    device.write(stream, x, 0, &bytes).unwrap();
    let args = [Arg::Buffer(x), Arg::Buffer(out), Arg::U32(n as u32)];
    device.launch(stream, kernel, LaunchConfig::linear(n, 64), &args).unwrap();
    let mut result = vec![0u8; n * 4];
    device.read(stream, out, 0, &mut result).unwrap();
    for (chunk, want) in result.chunks_exact(4).zip(&input) {
        assert_eq!(f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]), -want);
    }
}

#[test]
#[ignore = "needs an AMD GPU"]
fn a_syntax_error_is_a_compile_error_with_hiprtcs_log() {
    let device = open();
    let source = "extern \"C\" __global__ void broken(float* x) { x[0] = ; }";
    match device.compile(&KernelSource::Hip { entry: "broken".into(), source: source.into() }) {
        Err(GpuError::Compile { kernel, log, .. }) => {
            assert_eq!(kernel, "broken");
            assert!(log.contains("error"), "the log should carry hiprtc's diagnostics: {log}");
        }
        other => panic!("expected Compile, got {other:?}"),
    }
    let cuda = KernelSource::Cuda { entry: "main".into(), source: String::new() };
    assert!(matches!(device.compile(&cuda), Err(GpuError::InvalidArgument { .. })));
}

#[test]
#[ignore = "needs an AMD GPU"]
fn an_absurd_allocation_is_out_of_memory() {
    let device = open();
    let requested = 1usize << 50;
    match device.alloc(requested) {
        Err(GpuError::OutOfMemory { device: id, requested_bytes: asked, .. }) => {
            assert_eq!((id, asked), (device.id(), requested));
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}
