//! What a kernel actor costs over calling the device directly, and GEMM on
//! the CPU through the actor against the `gemm` crate called directly.
//!
//! | group | case | `direct` / `gemm-crate` (the baseline) | `zbmd-actor` |
//! |---|---|---|---|
//! | `launch_<backend>` | `empty` | an [`Executor`] on the device launches the empty kernel and synchronizes | the same job through [`GpuPool::run_into`] (the result buffer recycled, as the executor's is): a message to a kernel actor on a shard, which runs the same executor code, and the reply |
//! | `launch_<backend>` | `vector_add_1m` | the executor uploads two 1M-float inputs, launches, reads the result back | the same through the actor |
//! | `gemm_cpu` | `512`, `1024`, `2048` | `gemm::gemm` on host slices, single-threaded (`Parallelism::None`, as a shard runs it) | `Op::Gemm` through the actor on the CPU device: copies in, the same `gemm` call, copy out |
//!
//! Backends: the CPU always; Vulkan when built with `--features vulkan` and
//! a Vulkan device is found (lavapipe here); CUDA with `--features cuda` on
//! a machine with an NVIDIA GPU (`make test-gpu`). The runtime has two
//! shards; the measuring thread is outside it, as a caller would be.
//!
//! Run with `cargo bench -p zbmd-benches --bench gpu --features vulkan`
//! (a few minutes on two cores: GEMM 2048 takes a second per call here).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use zbmd_gpu::{BackendKind, BackendStatus, Device, Executor, GpuPool, Job, Op, detect_backends};
use zbmd_rt::Runtime;

/// Elements of the vector-add case.
const VECTOR: usize = 1 << 20;

fn inputs(n: usize, seed: f32) -> Arc<[f32]> {
    (0..n).map(|i| ((i as f32 + seed) * 0.618).fract()).collect()
}

/// The devices to measure launches on: the first of each backend found.
fn devices() -> Vec<Arc<dyn Device>> {
    let detection = detect_backends(None);
    let mut chosen: Vec<Arc<dyn Device>> = Vec::new();
    for report in &detection.backends {
        match &report.status {
            BackendStatus::Available(_) => {
                let device =
                    detection.devices.iter().find(|device| device.id().backend == report.backend);
                chosen.extend(device.cloned());
            }
            BackendStatus::Absent(reason) => {
                eprintln!("gpu bench: {} skipped: {reason}", report.backend)
            }
        }
    }
    chosen
}

fn launch(c: &mut Criterion) {
    let rt = Runtime::builder().shards(2).build().expect("runtime");
    for device in devices() {
        let backend = device.id().backend.name();
        let mut group = c.benchmark_group(format!("launch_{backend}"));
        group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(3));
        let pool = GpuPool::builder(vec![device.clone()]).actors(1).start(&rt).expect("GPU pool");
        let mut executor = Executor::open(device.clone()).expect("executor");
        let mut out = Vec::new();

        let empty = Job::new(Op::Empty { n: 1 }, vec![]).unwrap();
        group
            .bench_function("empty/direct", |b| b.iter(|| executor.run(&empty, &mut out).unwrap()));
        // The actor gets each result's buffer back for the next, as the
        // executor reuses `out`: like for like.
        let mut spare = Vec::new();
        group.bench_function("empty/zbmd-actor", |b| {
            b.iter(|| spare = pool.run_into(empty.clone(), std::mem::take(&mut spare)).unwrap())
        });

        let add =
            Job::new(Op::VectorAdd { n: VECTOR }, vec![inputs(VECTOR, 1.0), inputs(VECTOR, 2.0)])
                .unwrap();
        group.sample_size(20);
        group.bench_function("vector_add_1m/direct", |b| {
            b.iter(|| executor.run(&add, &mut out).unwrap())
        });
        group.bench_function("vector_add_1m/zbmd-actor", |b| {
            b.iter(|| spare = pool.run_into(add.clone(), std::mem::take(&mut spare)).unwrap())
        });
        group.finish();
        drop(executor);
        pool.shutdown();
        if device.id().backend == BackendKind::Cpu {
            eprintln!("gpu bench: launches measured on {}", device.info().name);
        }
    }
    rt.shutdown();
}

fn gemm(c: &mut Criterion) {
    let rt = Runtime::builder().shards(2).build().expect("runtime");
    let device: Arc<dyn Device> = Arc::new(zbmd_gpu::CpuDevice::new());
    let pool = GpuPool::builder(vec![device]).actors(1).start(&rt).expect("GPU pool");
    let mut group = c.benchmark_group("gemm_cpu");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for size in [512usize, 1024, 2048] {
        let (a, b) = (inputs(size * size, 3.0), inputs(size * size, 4.0));
        let mut out = vec![0.0f32; size * size];
        group.measurement_time(Duration::from_secs(if size == 2048 { 20 } else { 5 }));
        group.bench_function(format!("{size}/gemm-crate"), |bench| {
            bench.iter(|| {
                // SAFETY: a and b hold size² floats each and out size², all
                // row-major with the strides given; out aliases neither.
                unsafe {
                    gemm::gemm(
                        size,
                        size,
                        size,
                        out.as_mut_ptr(),
                        1,
                        size as isize,
                        false,
                        a.as_ptr(),
                        1,
                        size as isize,
                        b.as_ptr(),
                        1,
                        size as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            })
        });
        let job =
            Job::new(Op::Gemm { m: size, n: size, k: size }, vec![a.clone(), b.clone()]).unwrap();
        let mut spare = Vec::new();
        group.bench_function(format!("{size}/zbmd-actor"), |bench| {
            bench.iter(|| spare = pool.run_into(job.clone(), std::mem::take(&mut spare)).unwrap())
        });
    }
    group.finish();
    pool.shutdown();
    rt.shutdown();
}

criterion_group!(benches, launch, gemm);
criterion_main!(benches);
