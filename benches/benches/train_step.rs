//! One training step of zbmd-ml, to set beside PyTorch's
//! (`benches/torch/step_time.py`, run by `benches/torch/run.sh`).
//!
//! | group | case | what one iteration does |
//! |---|---|---|
//! | `train_step` | `zbmd` | forward of the `[64, 128, 10]` MLP (Linear, ReLU, Linear) on a batch of 64 UCI digits scaled to [0, 1], mean cross-entropy, backward, one SGD step (lr 0.1, momentum 0.9) |
//!
//! The loop is the one a training loop writes: the graph is cleared and the
//! gradients recycled each step, so after the first step no element buffer
//! is allocated; the batches cycle through the 28 full batches of one
//! unshuffled epoch, prepared before timing (PyTorch's script does the same).
//! Single-threaded, as a shard runs it.
//!
//! Run with `cargo bench -p zbmd-benches --bench train_step`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use zbmd_ml::data::{DataLoader, Normalize, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::optim::{Optimizer, Sgd, SgdConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::Graph;

/// Rows per batch.
const BATCH: usize = 64;

/// One batch, ready to feed: features `[BATCH, 64]` and class indices.
struct Prepared {
    features: Vec<f32>,
    targets: Vec<usize>,
}

/// The full batches of one unshuffled epoch over the digits scaled to [0, 1].
fn batches() -> Vec<Prepared> {
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
            Prepared {
                features: batch.features,
                targets: batch.labels.iter().map(|&l| l as usize).collect(),
            }
        })
        .collect()
}

/// The model, optimizer and tape that persist across steps.
struct Trainer {
    model: Sequential,
    optimizer: Sgd,
    graph: Graph,
}

impl Trainer {
    fn new() -> Trainer {
        let model = Sequential::from_spec("[64, 128, 10]", &mut Rng::new(7)).expect("valid spec");
        let optimizer = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() })
            .expect("valid SGD settings");
        Trainer { model, optimizer, graph: Graph::new() }
    }

    /// Forward, loss, backward and update on one batch; returns the loss.
    fn step(&mut self, batch: &Prepared) -> f32 {
        self.graph.clear();
        let x =
            self.graph.leaf_from_slice(&batch.features, &[BATCH, 64], false).expect("batch shape");
        let logits = self.model.forward(&mut self.graph, x).expect("forward");
        let loss = self.graph.cross_entropy(logits, &batch.targets).expect("cross-entropy");
        let loss_value = self.graph.value(loss)[0];
        let grads = self.graph.backward(loss).expect("backward");
        let mut views = self.model.param_views(&grads).expect("gradients of this forward pass");
        self.optimizer.step(&mut views).expect("SGD step");
        drop(views);
        self.graph.recycle(grads);
        loss_value
    }
}

fn train_step(c: &mut Criterion) {
    let batches = batches();
    let mut trainer = Trainer::new();
    // A training run, not a benchmark artefact: the loss must fall.
    let first = trainer.step(&batches[0]);
    let mut next = 1;
    let mut group = c.benchmark_group("train_step");
    group.warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    group.bench_function("zbmd", |b| {
        b.iter(|| {
            let loss = trainer.step(&batches[next % batches.len()]);
            next += 1;
            loss
        })
    });
    group.finish();
    let last = trainer.step(&batches[0]);
    assert!(last < first, "training diverged: loss on batch 0 went from {first} to {last}");
}

criterion_group!(benches, train_step);
criterion_main!(benches);
