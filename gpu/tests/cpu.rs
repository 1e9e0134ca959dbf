//! The CPU backend against the conformance suite every backend passes.

mod common;

use zbmd_gpu::{CpuDevice, Device, GpuError, HostLaunch, KernelSource, LaunchConfig};

#[test]
fn the_cpu_passes_the_conformance_suite() {
    common::conformance::check_device(&CpuDevice::with_budget(256 << 20));
}

/// A user kernel: `out = x * x`, written in Rust.
fn square(launch: &mut HostLaunch<'_>) -> Result<(), GpuError> {
    let n = launch.u32(2)? as usize;
    let ([x], out) = launch.io([0], 1)?;
    for (out, x) in out[..n].iter_mut().zip(&x[..n]) {
        *out = x * x;
    }
    Ok(())
}

#[test]
fn a_user_rust_kernel_compiles_and_runs_and_other_languages_are_refused() {
    let device = CpuDevice::with_budget(1 << 20);
    let stream = device.create_stream().unwrap();
    let kernel =
        device.compile(&KernelSource::Cpu { entry: "square".into(), function: square }).unwrap();
    let (x, out) = (device.alloc(16).unwrap(), device.alloc(16).unwrap());
    device.write(stream, x, 0, bytemuck_bytes(&[1.0, -2.0, 3.0, 0.5])).unwrap();
    let args = [zbmd_gpu::Arg::Buffer(x), zbmd_gpu::Arg::Buffer(out), zbmd_gpu::Arg::U32(4)];
    device.launch(stream, kernel, LaunchConfig::linear(4, 256), &args).unwrap();
    let mut bytes = [0u8; 16];
    device.read(stream, out, 0, &mut bytes).unwrap();
    let squares: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(squares, [1.0, 4.0, 9.0, 0.25]);

    let cuda = KernelSource::Cuda {
        entry: "k".into(),
        source: "extern \"C\" __global__ void k() {}".into(),
    };
    assert!(matches!(device.compile(&cuda), Err(GpuError::InvalidArgument { .. })));
    // A scalar where a buffer belongs is refused, not misread.
    let wrong = [zbmd_gpu::Arg::U32(0), zbmd_gpu::Arg::Buffer(out), zbmd_gpu::Arg::U32(4)];
    assert!(matches!(
        device.launch(stream, kernel, LaunchConfig::linear(4, 256), &wrong),
        Err(GpuError::InvalidArgument { .. })
    ));
}

fn bytemuck_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}
