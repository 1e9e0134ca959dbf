//! What running a training step's matrix products on kernel actors costs,
//! against running them in place on the host.
//!
//! | group | case | what one iteration does |
//! |---|---|---|
//! | `train_offload` | `digits_mlp` | the step of `train_step.rs` (forward of the `[64, 128, 10]` MLP on 64 digits, cross-entropy, backward, one SGD step), its six matrix products run by: `host` the `gemm` crate in place (what the CPU backend does); `zbmd-kernel-actors-cpu` a `GpuPool` kernel actor on a CPU device, one job per product (`--kernel-actors`); `zbmd-kernel-actors-<backend>` the same on the first device of each accelerator backend built in (`--features vulkan,cuda`) and present (lavapipe for Vulkan on a machine without a GPU) |
//!
//! The kernel-actor cases pay, per product, a message round trip to the
//! actor, a copy of both operands into the job, the upload, the launch,
//! the read-back and, on Vulkan, a fence wait: this is the price of the
//! accelerator path on a model this small, measured rather than guessed.
//!
//! Run with `cargo bench -p zbmd-benches --bench train_offload --features vulkan`
//! (`make bench-train`; add `cuda` to the features on an NVIDIA machine).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use zbmd_gpu::{BackendKind, CpuDevice, Device, GpuPool};
use zbmd_ml::tensor::PoolMatmul;
use zbmd_rt::Runtime;

mod common;

use common::{Trainer, batches};

/// The devices to offload to, by case name: a CPU device, and the first
/// device of every accelerator backend compiled in and present.
fn devices() -> Vec<(String, Arc<dyn Device>)> {
    let mut devices: Vec<(String, Arc<dyn Device>)> =
        vec![("zbmd-kernel-actors-cpu".into(), Arc::new(CpuDevice::with_budget(256 << 20)))];
    for kind in [BackendKind::Cuda, BackendKind::Rocm, BackendKind::Vulkan] {
        let detection = zbmd_gpu::detect_backends(Some(kind));
        match detection.devices.into_iter().find(|device| device.id().backend == kind) {
            Some(device) => devices.push((format!("zbmd-kernel-actors-{}", kind.name()), device)),
            None => eprintln!("train_offload: no {} device, its case is skipped", kind.name()),
        }
    }
    devices
}

fn offload(c: &mut Criterion) {
    let batches = batches();
    let rt = Runtime::builder().build().expect("runtime");
    let mut group = c.benchmark_group("train_offload");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    // Each backend holds its pool (and so its kernel actor) alive.
    let mut cases: Vec<(String, Trainer)> = vec![("host".into(), Trainer::new(None))];
    for (name, device) in devices() {
        let pool = Arc::new(GpuPool::builder(vec![device]).start(&rt).expect("a GPU pool"));
        cases.push((name, Trainer::new(Some(Arc::new(PoolMatmul::new(pool))))));
    }
    for (name, trainer) in &mut cases {
        // A training run, not a benchmark artefact: the loss must fall.
        let first = trainer.step(&batches[0]);
        let mut next = 1;
        group.bench_function(format!("digits_mlp/{name}"), |b| {
            b.iter(|| {
                let loss = trainer.step(&batches[next % batches.len()]);
                next += 1;
                loss
            })
        });
        let last = trainer.step(&batches[0]);
        assert!(last < first, "{name}: loss on batch 0 went from {first} to {last}");
    }
    group.finish();
    drop(cases);
    rt.shutdown();
}

criterion_group!(benches, offload);
criterion_main!(benches);
