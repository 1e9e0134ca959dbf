//! Training under supervision: it learns, and faults change nothing.

use std::path::PathBuf;

use zbmd_ml::train::{FaultSchedule, FaultTarget, Silent, TrainConfig, TrainReport, train};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zbmd-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A short run on the CPU backend (pinned: on a machine with a GPU the
/// default would be the GPU, and these tests name the CPU devices).
fn small(epochs: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        grad_chunk: 16,
        snapshot_every: 4,
        backend: Some("cpu".into()),
        ..TrainConfig::default()
    }
}

fn run(config: &TrainConfig) -> TrainReport {
    train(config, &mut Silent).expect("training")
}

#[test]
fn the_default_run_learns_the_digits() {
    let report = run(&TrainConfig::default());
    assert!(report.test_accuracy >= 0.95, "held-out accuracy {}", report.test_accuracy);
    assert_eq!(report.steps, 23 * 20, "1,438 training rows in batches of 64, 20 epochs");
    assert_eq!(report.history.len(), 20);
    assert!(report.losses.last().unwrap() < &report.losses[0]);
    assert!(report.recoveries.is_empty());
}

#[test]
fn crashes_and_device_faults_leave_the_parameters_bit_identical() {
    let dir = temp_dir("faults");
    let mut config = small(3);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 10;
    let clean = run(&config);

    let _ = std::fs::remove_dir_all(&dir);
    config.faults = FaultSchedule::parse(
        "model@7,optimizer@13,loader@21,device_lost@26,checkpointer@30,device_oom@33,model@34,\
         metrics@40",
    )
    .unwrap();
    let faulted = run(&config);
    assert!(
        faulted.same_parameters(&clean),
        "a faulted run must end with the clean run's parameters"
    );
    assert_eq!(faulted.losses, clean.losses, "and the same loss at every step");
    assert_eq!(faulted.history, clean.history, "and the same epoch figures");
    assert_eq!(faulted.faults_injected, 8);
    let recovered: Vec<FaultTarget> = faulted.recoveries.iter().map(|r| r.target).collect();
    for target in FaultTarget::ALL {
        assert!(recovered.contains(&target), "no recovery from {target:?}: {recovered:?}");
    }
    assert_eq!(faulted.device, "cpu:1", "the lost device was left");
    assert_eq!(clean.device, "cpu:0");
    // No step waits on the metrics actor: its lost curve is found at the
    // epoch's end (step 46) and restored from the driver's. (Unless a late
    // restart elsewhere sent the driver through a full restore first: the
    // curve then came back with the other actors'.)
    let metrics = faulted.recoveries.iter().find(|r| r.target == FaultTarget::Metrics).unwrap();
    assert_eq!(metrics.step, 40);
    assert!(
        metrics.action.contains("injected fault: metrics crash at step 40"),
        "{}",
        metrics.action
    );
    assert!(
        metrics.action.contains("restored to step 46 from the driver's")
            || metrics.action.contains("restored with the other actors'"),
        "{}",
        metrics.action
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_kernel_actors_crashes_and_device_faults_leave_the_parameters_bit_identical() {
    // The path an accelerator takes, on two logical CPU devices: every
    // product is a job for the GPU layer's kernel actor, a child of the
    // training tree. A lost device moves the kernel actor (the model actor
    // never notices); an out-of-memory reaches the model as a failed job.
    let config = TrainConfig { kernel_actors: true, ..small(2) };
    let clean = run(&config);
    assert!(clean.test_accuracy > 0.8, "it learns: {}", clean.test_accuracy);
    assert_eq!(clean.device, "cpu:0");
    let faulted = run(&TrainConfig {
        faults: FaultSchedule::parse(
            "metrics@2,model@5,device_lost@9,optimizer@12,device_oom@17,loader@20",
        )
        .unwrap(),
        ..config
    });
    assert!(
        faulted.same_parameters(&clean),
        "the faulted run ends with the clean run's parameters"
    );
    assert_eq!(faulted.losses, clean.losses);
    assert_eq!(faulted.history, clean.history);
    assert_eq!(faulted.faults_injected, 6);
    // The model's crash at step 5 restored every actor, the metrics actor's
    // lost curve with them, before an epoch's end looked at it.
    let metrics = faulted.recoveries.iter().find(|r| r.target == FaultTarget::Metrics).unwrap();
    assert_eq!(metrics.step, 2);
    assert!(metrics.action.contains("with the other actors'"), "{}", metrics.action);
    assert_eq!(faulted.device, "cpu:1", "the kernel actor left the lost device");
    let lost = faulted.recoveries.iter().find(|r| r.target == FaultTarget::DeviceLost).unwrap();
    assert!(lost.action.contains("kernel actors moved: cpu:0 → cpu:1"), "{}", lost.action);
    let oom = faulted.recoveries.iter().find(|r| r.target == FaultTarget::DeviceOom).unwrap();
    assert!(oom.action.contains("micro-batch 64 → 32"), "{}", oom.action);
}

#[test]
fn products_on_kernel_actors_train_as_products_on_the_host_do() {
    // Same model, data and seed; only where the products run differs. (That
    // they do run on the kernel actors is shown by the faulted test above,
    // whose report names the kernel actor's move.)
    let host = run(&small(1));
    let kernels = run(&TrainConfig { kernel_actors: true, ..small(1) });
    for (a, b) in host.losses.iter().zip(&kernels.losses) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "losses {a} and {b} differ");
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn a_run_on_vulkan_learns_the_digits() {
    let config =
        TrainConfig { backend: Some("vulkan".into()), epochs: 5, ..TrainConfig::default() };
    match train(&config, &mut Silent) {
        Ok(report) => {
            assert!(report.device.starts_with("vulkan:"), "ran on {}", report.device);
            assert!(report.test_accuracy >= 0.9, "held-out accuracy {}", report.test_accuracy);
        }
        Err(error) if error.to_string().contains("backend vulkan:") => {
            eprintln!("skipped: no Vulkan device here ({error})");
        }
        Err(error) => panic!("training on Vulkan: {error}"),
    }
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_run_on_cuda_learns_the_digits_and_survives_its_faults() {
    let config = TrainConfig {
        backend: Some("cuda".into()),
        epochs: 5,
        grad_chunk: 16,
        ..TrainConfig::default()
    };
    let clean = run(&config);
    assert!(clean.device.starts_with("cuda:"), "ran on {}", clean.device);
    assert!(clean.test_accuracy >= 0.9, "held-out accuracy {}", clean.test_accuracy);
    // Crashes replay on the same GPU: bit-identical. (A lost device would
    // move the run to the host, whose rounding differs.)
    let faulted = run(&TrainConfig {
        faults: FaultSchedule::parse("model@20,optimizer@40,device_oom@60").unwrap(),
        ..config
    });
    assert!(faulted.same_parameters(&clean), "the faulted CUDA run ends where the clean one does");
}

#[test]
fn a_run_resumed_from_its_checkpoint_ends_where_a_straight_run_does() {
    let dir = temp_dir("resume");
    let mut config = small(3);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 7;
    let straight = run(&config);

    let _ = std::fs::remove_dir_all(&dir);
    let first = run(&TrainConfig { epochs: 1, ..config.clone() });
    assert_eq!(first.steps, 23);
    let resumed = run(&TrainConfig { resume: true, ..config.clone() });
    assert_eq!(resumed.resumed_from, 23, "the newest checkpoint is the run's last step");
    assert!(resumed.same_parameters(&straight));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_halved_micro_batch_keeps_the_result_bit_identical() {
    let config = small(1);
    let clean = run(&config);
    let faulted =
        run(&TrainConfig { faults: FaultSchedule::parse("device_oom@2").unwrap(), ..config });
    assert!(faulted.same_parameters(&clean));
    assert_eq!(faulted.losses, clean.losses, "the loss is summed piece by piece too");
    let oom = &faulted.recoveries[0];
    assert_eq!(oom.target, FaultTarget::DeviceOom);
    assert!(oom.action.contains("micro-batch 64 → 32"), "{}", oom.action);
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let error = train(
        &TrainConfig { batch_size: 60, grad_chunk: 16, ..TrainConfig::default() },
        &mut Silent,
    )
    .unwrap_err();
    assert!(error.to_string().contains("multiple of grad_chunk"), "{error}");
    let error =
        train(&TrainConfig { resume: true, ..TrainConfig::default() }, &mut Silent).unwrap_err();
    assert!(error.to_string().contains("resume needs a checkpoint_dir"), "{error}");
    let error =
        train(&TrainConfig { backend: Some("tpu".into()), ..TrainConfig::default() }, &mut Silent)
            .unwrap_err();
    assert!(error.to_string().contains("backend \"tpu\": expected one of"), "{error}");
    let error = FaultSchedule::parse("gpu@3").unwrap_err().to_string();
    assert!(error.contains("unknown target \"gpu\""), "{error}");
}

#[test]
fn a_failure_recovery_cannot_cure_stops_the_run_with_the_reason() {
    // Both devices are lost: nothing is left to run the model on.
    let config = TrainConfig {
        faults: FaultSchedule::parse("device_lost@5,device_lost@6").unwrap(),
        ..small(1)
    };
    let error = train(&config, &mut Silent).unwrap_err().to_string();
    assert!(error.contains("training failed"), "{error}");
    // It stops as soon as no supervisor is left, rather than waiting out
    // the driver's call timeout: the reason says so.
    assert!(error.contains("the training supervisor gave up"), "{error}");
}

#[test]
fn on_kernel_actors_a_run_with_no_device_left_stops_with_the_reason() {
    let config = TrainConfig {
        kernel_actors: true,
        faults: FaultSchedule::parse("device_lost@5,device_lost@6").unwrap(),
        ..small(1)
    };
    let error = train(&config, &mut Silent).unwrap_err().to_string();
    assert!(error.contains("training failed"), "{error}");
    assert!(error.contains("lost") || error.contains("gave up"), "the reason is given: {error}");
}

// ---------------------------------------------------------------------------
// Checkpoints that fail, runs that stop, checkpoints that lie (issue 13).

use std::path::Path;

use zbmd_ml::checkpoint::Checkpoint;
use zbmd_ml::train::{CheckpointFailure, Observer, TrainError};

/// This run's checkpoint files in `dir`, by step.
fn checkpoint_steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("ckpt-")?.get(..12)?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

#[test]
fn a_checkpointer_crash_is_retried_and_the_checkpoint_written() {
    // The step used to be committed before its checkpoint was written, so
    // after the checkpointer's restart that checkpoint was skipped for good.
    let dir = temp_dir("checkpointer-retry");
    let mut config = small(1);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 10;
    config.faults = FaultSchedule::parse("checkpointer@10,checkpointer@23").unwrap();
    let report = run(&config);
    assert_eq!(checkpoint_steps(&dir), [10, 20, 23]);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|name| !name.ends_with(".tmp")), "no temp file is left: {names:?}");
    let retried: Vec<u64> = report
        .recoveries
        .iter()
        .filter(|r| {
            r.target == FaultTarget::Checkpointer && r.action.contains("written on attempt 2")
        })
        .map(|r| r.step)
        .collect();
    assert_eq!(
        retried,
        [10, 23],
        "the last step's failure is reported too: {:?}",
        report.recoveries
    );
    assert!(report.checkpoint_failures.is_empty());
    assert_eq!(report.last_checkpoint.as_ref().map(|(step, _)| *step), Some(23));
}

/// Breaks the checkpoint directory after the first checkpoint: a regular
/// file takes its place, so every later save fails (even for root).
struct BreakAfterFirstCheckpoint {
    dir: PathBuf,
    warnings: Vec<String>,
}

impl Observer for BreakAfterFirstCheckpoint {
    fn on_checkpoint(&mut self, _: u64, _: &Path) {
        if self.dir.is_dir() {
            std::fs::rename(&self.dir, self.dir.with_extension("moved")).unwrap();
            std::fs::write(&self.dir, b"not a folder any more").unwrap();
        }
    }
    fn on_warning(&mut self, message: &str) {
        self.warnings.push(message.to_owned());
    }
}

#[test]
fn checkpoints_that_cannot_be_written_are_reported_and_can_stop_the_run() {
    let dir = temp_dir("checkpoint-failure");
    let mut config = small(1);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 10;
    let mut observer = BreakAfterFirstCheckpoint { dir: dir.clone(), warnings: Vec::new() };
    let report = train(&config, &mut observer).expect("training goes on by default");
    let failed: Vec<u64> = report.checkpoint_failures.iter().map(|(step, _)| *step).collect();
    assert_eq!(failed, [20, 23], "{:?}", report.checkpoint_failures);
    assert!(report.checkpoint_failures[0].1.contains("attempt 3"), "retried");
    assert_eq!(report.last_checkpoint.as_ref().map(|(step, _)| *step), Some(10));
    assert_eq!(observer.warnings.len(), 2, "{:?}", observer.warnings);
    assert!(
        observer.warnings[0].contains("step 10's"),
        "names the newest: {:?}",
        observer.warnings
    );

    let _ = std::fs::remove_file(&dir);
    let _ = std::fs::remove_dir_all(dir.with_extension("moved"));
    config.on_checkpoint_failure = CheckpointFailure::Stop;
    let mut observer = BreakAfterFirstCheckpoint { dir: dir.clone(), warnings: Vec::new() };
    match train(&config, &mut observer) {
        Err(TrainError::CheckpointFailed { step: 20, error, newest }) => {
            assert!(error.contains("attempt 3"), "{error}");
            assert!(newest.contains("step 10's"), "{newest}");
        }
        other => panic!("expected the run to stop at step 20: {other:?}"),
    }
    let _ = std::fs::remove_file(&dir);
    let _ = std::fs::remove_dir_all(dir.with_extension("moved"));
}

/// Asks the run to stop once it has seen `after` steps.
struct StopAfter {
    after: u64,
    seen: u64,
}

impl Observer for StopAfter {
    fn on_step(&mut self, step: &zbmd_ml::train::StepInfo) {
        self.seen = step.step;
    }
    fn stop_requested(&mut self) -> Option<String> {
        (self.seen >= self.after).then(|| "SIGTERM".to_string())
    }
}

#[test]
fn a_stop_request_checkpoints_the_step_in_flight_and_resume_ends_where_a_straight_run_does() {
    let dir = temp_dir("stop");
    let mut config = small(2);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 10;
    config.snapshot_every = 4;
    let straight = {
        let mut straight = config.clone();
        straight.checkpoint_dir = None;
        run(&straight)
    };
    // Asked after step 13 (neither a snapshot nor a checkpoint step): step
    // 14 completes and is checkpointed.
    match train(&config, &mut StopAfter { after: 13, seen: 0 }) {
        Err(TrainError::Interrupted {
            reason,
            step: 14,
            checkpoint: Some(path),
            save_error: None,
        }) => {
            assert_eq!(reason, "SIGTERM");
            assert!(path.exists(), "{}", path.display());
        }
        other => panic!("expected a stop after step 14: {other:?}"),
    }
    config.resume = true;
    let resumed = run(&config);
    assert_eq!(resumed.resumed_from, 14);
    assert!(resumed.same_parameters(&straight), "the resumed run ends where a straight one does");
}

#[test]
fn a_checkpoint_that_passes_its_checksum_but_holds_nan_is_skipped() {
    let dir = temp_dir("nan-checkpoint");
    let mut config = small(1);
    config.checkpoint_dir = Some(dir.clone());
    config.checkpoint_every = 10;
    run(&config);
    // Rewrite the newest checkpoint with one NaN, its checksum made anew.
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_str().unwrap().contains("000000000023-"))
        .unwrap();
    let mut checkpoint = Checkpoint::decode(&std::fs::read(&newest).unwrap(), &newest).unwrap();
    checkpoint.tensors[0].data[3] = f32::NAN;
    std::fs::write(&newest, checkpoint.encode().unwrap()).unwrap();

    struct Warnings(Vec<String>);
    impl Observer for Warnings {
        fn on_warning(&mut self, message: &str) {
            self.0.push(message.to_owned());
        }
    }
    let mut warnings = Warnings(Vec::new());
    config.resume = true;
    config.epochs = 2;
    let resumed = train(&config, &mut warnings).unwrap();
    assert_eq!(resumed.resumed_from, 20, "the NaN checkpoint is skipped for the one before");
    assert!(warnings.0[0].contains("holds NaN at index 3"), "{:?}", warnings.0);
}

#[test]
fn two_metrics_crashes_in_one_epoch_are_two_recoveries() {
    // One slot held the metrics actor's last crash: the second overwrote
    // the first, and one injected fault went unreported (found by the soak).
    let mut config = small(1);
    config.faults = FaultSchedule::parse("metrics@5,metrics@7").unwrap();
    let report = run(&config);
    assert_eq!(report.faults_injected, 2);
    let steps: Vec<u64> = report
        .recoveries
        .iter()
        .filter(|r| r.target == FaultTarget::Metrics)
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [5, 7], "{:?}", report.recoveries);
}
