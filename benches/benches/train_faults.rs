//! What fault tolerance costs a training run, and how fast it recovers.
//!
//! | group | case | baseline | `zbmd-…` |
//! |---|---|---|---|
//! | `train_snapshots` | `digits_mlp` | `no-snapshots`: a 20-epoch run ([64, 128, 10] MLP, batches of 64: 460 steps) whose only snapshot is the last step's | `zbmd-snapshots`: the same run with an in-memory snapshot after every step (the default) |
//! | `train_recovery` | `digits_mlp` | `clean`: the same 460-step run | `zbmd-one-crash`: the model actor crashes once, at step 230, and the run recovers from the snapshot |
//!
//! Figures are per step (the throughput is the run's steps). The difference
//! of the two `train_recovery` medians is what one crash costs the run
//! end to end; the trainer's own measure of it (from the failure to the
//! completion of the interrupted step, `RecoveryInfo::recovery_time`) is
//! printed, and written to `bench_results/train_faults.recovery.json`.
//!
//! Run with `cargo bench -p zbmd-benches --bench train_faults`.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use zbmd_ml::train::{FaultSchedule, Silent, TrainConfig, train};

fn config() -> TrainConfig {
    TrainConfig { epochs: 20, ..TrainConfig::default() }
}

const STEPS: u64 = 460;

fn snapshots(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_snapshots");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(STEPS));
    let without = TrainConfig { snapshot_every: 1_000_000, ..config() };
    group.bench_function("digits_mlp/no-snapshots", |b| {
        b.iter(|| train(&without, &mut Silent).unwrap())
    });
    let with = TrainConfig { snapshot_every: 1, ..config() };
    group.bench_function("digits_mlp/zbmd-snapshots", |b| {
        b.iter(|| train(&with, &mut Silent).unwrap())
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_recovery");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(STEPS));
    let clean = config();
    let crashing = TrainConfig { faults: FaultSchedule::parse("model@230").unwrap(), ..config() };
    group.bench_function("digits_mlp/clean", |b| b.iter(|| train(&clean, &mut Silent).unwrap()));
    group.bench_function("digits_mlp/zbmd-one-crash", |b| {
        b.iter(|| train(&crashing, &mut Silent).unwrap())
    });
    group.finish();

    // The trainer's own measure of each recovery, over many runs.
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let report = train(&crashing, &mut Silent).unwrap();
            assert_eq!(report.recoveries.len(), 1);
            report.recoveries[0].recovery_time
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    println!(
        "train_recovery: crash to the next completed step: median {median:?} (min {min:?}, max {max:?}, 50 runs)"
    );
    let record = serde_json::json!({
        "what": "from a model actor's crash to the completion of the step it interrupted (restart, restore of every actor from the in-memory snapshot, the step run again), RecoveryInfo::recovery_time",
        "runs": times.len(),
        "median_us": median.as_secs_f64() * 1e6,
        "min_us": min.as_secs_f64() * 1e6,
        "max_us": max.as_secs_f64() * 1e6,
        "target_us": 10_000,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench_results/train_faults.recovery.json");
    std::fs::write(path, serde_json::to_string_pretty(&record).unwrap()).unwrap();
}

criterion_group!(benches, snapshots, recovery);
criterion_main!(benches);
