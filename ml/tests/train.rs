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
    let error = FaultSchedule::parse("gpu@3").unwrap_err();
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
