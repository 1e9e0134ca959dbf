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

mod common;

use common::{Trainer, batches};

fn train_step(c: &mut Criterion) {
    let batches = batches();
    let mut trainer = Trainer::new(None);
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
