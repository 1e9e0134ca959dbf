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
use zbmd_ml::data::{DataLoader, Normalize, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::optim::{Optimizer, Sgd, SgdConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, MatmulBackend, PoolMatmul};
use zbmd_rt::Runtime;

/// Rows per batch.
const BATCH: usize = 64;

/// The full batches of one unshuffled epoch over the digits scaled to [0, 1]:
/// features and class indices.
fn batches() -> Vec<(Vec<f32>, Vec<usize>)> {
    let mut data = digits();
    data.normalize(Normalize::Divide(16.0));
    let mut loader = DataLoader::builder(data)
        .batch_size(BATCH)
        .shuffle(false)
        .drop_last(true)
        .build()
        .expect("the digits form batches of 64");
    (0..loader.batches_per_epoch())
        .map(|_| {
            let batch = loader.next_batch();
            (batch.features, batch.labels.iter().map(|&l| l as usize).collect())
        })
        .collect()
}

/// A model, optimizer and tape whose products run where `backend` says.
struct Trainer {
    model: Sequential,
    optimizer: Sgd,
    graph: Graph,
}

impl Trainer {
    fn new(backend: Option<Arc<dyn MatmulBackend>>) -> Trainer {
        let model = Sequential::from_spec("[64, 128, 10]", &mut Rng::new(7)).expect("valid spec");
        let optimizer = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() })
            .expect("valid SGD settings");
        let mut graph = Graph::new();
        graph.set_matmul_backend(backend);
        Trainer { model, optimizer, graph }
    }

    /// Forward, loss, backward and update on one batch; returns the loss.
    fn step(&mut self, (features, targets): &(Vec<f32>, Vec<usize>)) -> f32 {
        self.graph.clear();
        let x = self.graph.leaf_from_slice(features, &[BATCH, 64], false).expect("batch shape");
        let logits = self.model.forward(&mut self.graph, x).expect("forward");
        let loss = self.graph.cross_entropy(logits, targets).expect("cross-entropy");
        let loss_value = self.graph.value(loss)[0];
        let grads = self.graph.backward(loss).expect("backward");
        let mut views = self.model.param_views(&grads).expect("gradients of this forward pass");
        self.optimizer.step(&mut views).expect("SGD step");
        drop(views);
        self.graph.recycle(grads);
        loss_value
    }
}

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
