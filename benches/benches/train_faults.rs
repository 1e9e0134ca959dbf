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
use zbmd_ml::train::{FaultSchedule, FaultTarget, Silent, TrainConfig, train};

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

    // The two medians above come from minutes apart, and this VM's speed
    // drifts by tens of percent over minutes. Paired runs, back to back in
    // alternating order, cancel the drift: the median of the per-pair
    // ratios is the overhead.
    const PAIRS: usize = 40;
    let timed = |config: &TrainConfig| {
        let started = std::time::Instant::now();
        train(config, &mut Silent).unwrap();
        started.elapsed().as_secs_f64()
    };
    let mut ratios = Vec::with_capacity(PAIRS);
    let (mut off, mut on) = (Vec::with_capacity(PAIRS), Vec::with_capacity(PAIRS));
    for pair in 0..PAIRS {
        let (a, b) = if pair % 2 == 0 {
            let a = timed(&without);
            (a, timed(&with))
        } else {
            let b = timed(&with);
            (timed(&without), b)
        };
        ratios.push(b / a);
        off.push(a);
        on.push(b);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ratio = median(&mut ratios);
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "train_snapshots: paired runs: snapshots every step cost {:+.1}% (median of {PAIRS} per-pair ratios; medians {:.0} vs {:.0} us/step)",
        (ratio - 1.0) * 100.0,
        on * 1e6 / STEPS as f64,
        off * 1e6 / STEPS as f64,
    );
    let record = serde_json::json!({
        "what": "a 460-step run with an in-memory snapshot after every step against one with none but the last, in back-to-back pairs of alternating order; the overhead is the median of the per-pair time ratios",
        "pairs": PAIRS,
        "median_ratio": ratio,
        "overhead_percent": (ratio - 1.0) * 100.0,
        "median_us_per_step_snapshots": on * 1e6 / STEPS as f64,
        "median_us_per_step_no_snapshots": off * 1e6 / STEPS as f64,
        "target_percent": 3.0,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench_results/train_faults.snapshots.json");
    std::fs::write(path, serde_json::to_string_pretty(&record).unwrap()).unwrap();
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
            // The model's crash; a loader or optimizer that the supervisor
            // replaced late may add a recovery of its own after it.
            let crash = report.recoveries.iter().find(|r| r.target == FaultTarget::Model);
            crash.expect("the model crash was recovered").recovery_time
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
