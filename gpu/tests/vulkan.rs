//! The Vulkan backend on Mesa's lavapipe (or whatever Vulkan device is
//! first): the shared conformance suite, on both the mapped and the staging
//! data paths, and what is particular to Vulkan: user WGSL kernels and
//! compile errors.

#![cfg(feature = "vulkan")]

mod common;

use common::conformance::{self, download, upload};
use zbmd_gpu::kernel::KernelSource;
use zbmd_gpu::vulkan::{VulkanConfig, VulkanDevice};
use zbmd_gpu::{Arg, BackendKind, Device, GpuError, LaunchConfig};

fn open(config: VulkanConfig) -> VulkanDevice {
    VulkanDevice::open(0, config)
        .expect("a Vulkan device (install mesa-vulkan-drivers for lavapipe)")
}

#[test]
fn lavapipe_passes_the_conformance_suite() {
    let device = open(VulkanConfig::default());
    let info = device.info();
    assert_eq!(info.id.backend, BackendKind::Vulkan);
    assert!(info.capability.starts_with("Vulkan 1."), "{}", info.capability);
    if info.name.contains("llvmpipe") {
        assert!(info.is_software, "lavapipe is a software device");
        assert!(info.capability.ends_with("(cpu)"), "{}", info.capability);
    }
    conformance::check_device(&device);
}

#[test]
fn the_staging_path_passes_the_conformance_suite() {
    let device = open(VulkanConfig { force_staging: true, ..VulkanConfig::default() });
    conformance::check_device(&device);
}

#[test]
fn health_answers_and_allocations_show_in_free_memory() {
    let device = open(VulkanConfig::default());
    let health = device.health().expect("health");
    assert!(health.responsive, "{health:?}");
    assert_eq!(health.ecc_corrected, None);
    let before = device.memory().expect("memory");
    assert_eq!(before.total_bytes, device.info().memory_total_bytes);
    let buffer = device.alloc(64 << 20).expect("alloc");
    let during = device.memory().expect("memory");
    assert!(during.free_bytes + (64 << 20) <= before.free_bytes, "{before:?} -> {during:?}");
    device.free(buffer).expect("free");
    assert_eq!(device.memory().expect("memory").free_bytes, before.free_bytes);
}

const AXPY: &str = "
struct Params { alpha: f32, n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
var<push_constant> params: Params;

@compute @workgroup_size(64)
fn axpy(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < params.n {
        y[id.x] = params.alpha * x[id.x] + y[id.x];
    }
}
";

#[test]
fn a_user_wgsl_kernel_compiles_and_runs() {
    let device = open(VulkanConfig::default());
    let stream = device.create_stream().expect("stream");
    let kernel = device
        .compile(&KernelSource::Wgsl { entry: "axpy".into(), source: AXPY.into() })
        .expect("compile axpy");
    let n = 1000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
    let (dx, dy) = (upload(&device, stream, &x), upload(&device, stream, &y));
    let args = [Arg::Buffer(dx), Arg::Buffer(dy), Arg::F32(3.0), Arg::U32(n as u32)];
    device.launch(stream, kernel, LaunchConfig::linear(n, 64), &args).expect("launch axpy");
    let got = download(&device, stream, dy, n);
    for i in 0..n {
        assert_eq!(got[i], 3.0 * x[i] + y[i], "axpy at {i}");
    }
    // The block must match the shader's @workgroup_size.
    let wrong_block = device.launch(stream, kernel, LaunchConfig::linear(n, 256), &args);
    assert!(matches!(wrong_block, Err(GpuError::InvalidArgument { .. })), "{wrong_block:?}");
    device.synchronize(stream).expect("synchronize");
}

#[test]
fn a_wgsl_syntax_error_is_a_compile_error_naming_the_kernel() {
    let device = open(VulkanConfig::default());
    let source = KernelSource::Wgsl {
        entry: "broken".into(),
        source: "@compute @workgroup_size(1) fn broken() { let x = ; }".into(),
    };
    match device.compile(&source) {
        Err(GpuError::Compile { kernel, log, .. }) => {
            assert_eq!(kernel, "broken");
            assert!(!log.is_empty());
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn sources_in_other_languages_are_rejected() {
    let device = open(VulkanConfig::default());
    let glsl = "#version 450\nlayout(local_size_x = 1) in;\nvoid main() {}";
    let cuda = KernelSource::Cuda { entry: "main".into(), source: glsl.into() };
    match device.compile(&cuda) {
        Err(GpuError::InvalidArgument { detail, .. }) => {
            assert!(detail.contains("WGSL"), "{detail}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // GLSL handed over as WGSL fails to parse: a clean compile error.
    let as_wgsl = KernelSource::Wgsl { entry: "main".into(), source: glsl.into() };
    assert!(matches!(device.compile(&as_wgsl), Err(GpuError::Compile { .. })));
}
