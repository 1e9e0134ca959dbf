//! `zbmd-node train` as a user runs it: the built binary, its exit codes, its
//! messages, its JSON log, and a run killed with SIGKILL and resumed.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use zbmd_ml::optim::LrSchedule;
use zbmd_ml::train::{DataSource, TrainConfig};

use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_zbmd-node");

fn train(args: &[&str]) -> Output {
    Command::new(BIN).arg("train").args(args).output().expect("run zbmd-node")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts exit code 2 and that standard error names every one of `needles`.
fn assert_usage_error(output: &Output, needles: &[&str]) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "expected exit 2; stderr: {message}");
    for needle in needles {
        assert!(message.contains(needle), "stderr should name {needle:?}: {message}");
    }
}

/// The settings a command line resolves to (`--print-config`), read back.
fn resolved(args: &[&str]) -> TrainConfig {
    let mut all = args.to_vec();
    all.push("--print-config");
    let output = train(&all);
    assert!(output.status.success(), "--print-config failed: {}", stderr(&output));
    TrainConfig::from_toml(&stdout(&output)).expect("--print-config prints a valid config")
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}")))
        .collect()
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["event"] == kind).collect()
}

// ---- Bad arguments: exit 2, naming the thing at fault. ----

#[test]
fn bad_faults_text_names_the_option_and_the_fault() {
    let output = train(&["--faults", "model@10,disk@3"]);
    assert_usage_error(&output, &["--faults", "disk"]);
    let output = train(&["--faults", "model@zero"]);
    assert_usage_error(&output, &["--faults", "positive integer"]);
}

#[test]
fn unknown_optimizer_names_the_option_and_the_choices() {
    let output = train(&["--optimizer", "rmsprop"]);
    assert_usage_error(&output, &["--optimizer", "rmsprop", "adamw"]);
}

#[test]
fn missing_data_file_names_the_path() {
    let dir = TempDir::new("missing-data");
    let path = dir.join("no-such-file.csv");
    let output = train(&["--data", path.to_str().unwrap()]);
    assert_usage_error(&output, &[path.to_str().unwrap()]);
    let labels = dir.join("no-labels.idx");
    let pair = format!("{}:{}", dir.join("no-images.idx").display(), labels.display());
    assert_usage_error(&train(&["--data", &pair]), &["no-images.idx"]);
}

#[test]
fn malformed_csv_names_the_file_and_the_line() {
    let dir = TempDir::new("bad-csv");
    let path = dir.join("short-row.csv");
    std::fs::write(&path, "0.1,0.2,0.3,1\n0.4,0.5,0\n0.7,0.8,0.9,1\n").unwrap();
    let output = train(&["--data", path.to_str().unwrap(), "--model", "[3, 4, 2]"]);
    assert_usage_error(&output, &[path.to_str().unwrap(), "line 2"]);
}

#[test]
fn an_idx_file_alone_asks_for_its_labels() {
    let output = train(&["--data", "train-images-idx3-ubyte.gz"]);
    assert_usage_error(&output, &["--data", "labels"]);
}

#[test]
fn a_model_that_does_not_fit_the_data_is_refused_before_training() {
    let output = train(&["--model", "[10, 32, 10]"]);
    assert_usage_error(&output, &["10 inputs", "64 features"]);
    let output = train(&["--model", "[64, 32, oops]"]);
    assert_usage_error(&output, &["model", "oops"]);
}

#[test]
fn inconsistent_settings_are_refused() {
    assert_usage_error(&train(&["--resume"]), &["checkpoint_dir"]);
    assert_usage_error(&train(&["--batch-size", "64", "--grad-chunk", "10"]), &["grad_chunk"]);
    assert_usage_error(&train(&["--optimizer", "adam", "--momentum", "0.9"]), &["--momentum"]);
    assert_usage_error(&train(&["--lr=-1"]), &["lr"]);
    assert_usage_error(&train(&["--schedule", "cosine"]), &["--schedule"]);
    assert_usage_error(
        &train(&["--plot", "/no/such/folder/x.png"]),
        &["--plot", "/no/such/folder"],
    );
}

// ---- The config file and the options over it. ----

#[test]
fn config_file_is_honoured_and_options_override_it() {
    let dir = TempDir::new("config");
    let path = dir.join("run.toml");
    let text =
        "epochs = 3\nbatch_size = 32\nseed = 9\n\n[optimizer]\nkind = \"adam\"\nlr = 0.002\n";
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();

    let from_file = resolved(&["--config", path]);
    assert_eq!((from_file.epochs, from_file.batch_size, from_file.seed), (3, 32, 9));
    let expected = zbmd_ml::optim::AdamConfig { lr: 0.002, ..Default::default() };
    assert_eq!(from_file.optimizer, zbmd_ml::optim::OptimizerConfig::Adam(expected));

    let overridden = resolved(&["--config", path, "--epochs", "5", "--lr", "0.01"]);
    assert_eq!((overridden.epochs, overridden.batch_size, overridden.seed), (5, 32, 9));
    let expected = zbmd_ml::optim::AdamConfig { lr: 0.01, ..Default::default() };
    assert_eq!(overridden.optimizer, zbmd_ml::optim::OptimizerConfig::Adam(expected));

    // Without a file, the defaults.
    assert_eq!(resolved(&[]), TrainConfig::default());
}

#[test]
fn a_bad_config_file_names_the_file_and_the_key() {
    let dir = TempDir::new("bad-config");
    let path = dir.join("typo.toml");
    std::fs::write(&path, "epocs = 3\n").unwrap();
    let output = train(&["--config", path.to_str().unwrap()]);
    assert_usage_error(&output, &["typo.toml", "epocs"]);
}

#[test]
fn cosine_schedule_spans_the_whole_run() {
    let config = resolved(&[
        "--epochs",
        "2",
        "--batch-size",
        "100",
        "--lr",
        "0.05",
        "--schedule",
        "cosine:5",
    ]);
    // The split holds out round(20%) of each class; the rest train.
    let digits = zbmd_ml::data::digits();
    let (train_set, _) = digits.split(0.2, 42).unwrap();
    let total_steps = 2 * train_set.len().div_ceil(100) as u64;
    assert_eq!(
        config.schedule,
        Some(LrSchedule::WarmupCosine { lr: 0.05, warmup_steps: 5, total_steps, min_lr: 0.0 })
    );
    let step = resolved(&["--schedule", "step:30:0.5"]);
    assert_eq!(step.schedule, Some(LrSchedule::Step { lr: 0.1, step_size: 30, gamma: 0.5 }));
}

#[test]
fn options_reach_the_config() {
    let config = resolved(&[
        "--backend",
        "cpu",
        "--faults",
        "model@3,device_oom@7",
        "--checkpoint-dir",
        "ckpt",
        "--checkpoint-every",
        "5",
        "--keep-checkpoints",
        "2",
        "--snapshot-every",
        "4",
        "--grad-chunk",
        "16",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.1",
    ]);
    assert_eq!(config.backend.as_deref(), Some("cpu"));
    assert_eq!(
        config.faults,
        zbmd_ml::train::FaultSchedule::parse("model@3,device_oom@7").unwrap()
    );
    assert_eq!(config.checkpoint_dir, Some(PathBuf::from("ckpt")));
    assert_eq!(
        (config.checkpoint_every, config.keep_checkpoints, config.snapshot_every),
        (5, 2, 4)
    );
    assert_eq!(config.grad_chunk, 16);
    let expected =
        zbmd_ml::optim::AdamConfig { weight_decay: 0.1, ..zbmd_ml::optim::AdamConfig::adamw() };
    assert_eq!(config.optimizer, zbmd_ml::optim::OptimizerConfig::AdamW(expected));
}

// ---- Runs that train (these need zbmd_ml::train::train). ----

#[test]
fn json_log_is_one_object_per_line_with_the_expected_keys() {
    let output = train(&["--epochs", "2", "--log-format", "json", "--log-every", "5"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["event"], "start");
    assert_eq!(lines[0]["config"]["epochs"], 2);
    let steps = events(&lines, "step");
    assert!(!steps.is_empty());
    for step in &steps {
        for key in ["step", "total_steps", "epoch", "loss", "lr", "examples_per_sec"] {
            assert!(step.get(key).is_some(), "step event without {key}: {step}");
        }
    }
    let total = steps[0]["total_steps"].as_u64().unwrap();
    // Every 5th step, and the last one.
    assert_eq!(steps.last().unwrap()["step"].as_u64(), Some(total));
    assert!(steps[..steps.len() - 1].iter().all(|s| s["step"].as_u64().unwrap() % 5 == 0));
    let epochs = events(&lines, "epoch");
    assert_eq!(epochs.len(), 2);
    for key in ["epoch", "train_loss", "test_loss", "test_accuracy"] {
        assert!(epochs[1].get(key).is_some(), "epoch event without {key}");
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    for key in [
        "test_accuracy",
        "test_loss",
        "steps",
        "epochs",
        "wall_time_s",
        "steps_per_sec",
        "faults_injected",
        "faults_recovered",
        "recoveries",
        "device",
        "resumed_from",
    ] {
        assert!(summary.get(key).is_some(), "summary without {key}: {summary}");
    }
    assert_eq!(summary["steps"].as_u64(), Some(total));
    assert_eq!(summary["epochs"], 2);
    assert_eq!(summary["resumed_from"], 0);
}

#[test]
fn text_run_prints_the_summary_and_plots_the_curves() {
    let dir = TempDir::new("text");
    let plot = dir.join("curves.png");
    let output = train(&["--epochs", "2", "--plot", plot.to_str().unwrap()]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("held-out accuracy:"), "{text}");
    assert!(text.contains("epoch 2/2:"), "{text}");
    assert!(text.contains("faults: 0 injected, 0 recovered"), "{text}");
    let png = std::fs::read(&plot).expect("--plot writes the file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn quiet_json_prints_only_the_summary() {
    let output = train(&["--epochs", "1", "--log-format", "json", "--quiet"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "summary");
    assert_eq!(lines[0]["epochs"], 1);
}

#[test]
fn config_epochs_are_trained_unless_overridden() {
    let dir = TempDir::new("config-run");
    let path = dir.join("run.toml");
    std::fs::write(&path, "epochs = 1\n").unwrap();
    let path = path.to_str().unwrap();
    let summary = |extra: &[&str]| {
        let mut args = vec!["--config", path, "--log-format", "json", "--quiet"];
        args.extend_from_slice(extra);
        let output = train(&args);
        assert!(output.status.success(), "stderr: {}", stderr(&output));
        json_lines(&output).pop().unwrap()
    };
    assert_eq!(summary(&[])["epochs"], 1);
    assert_eq!(summary(&["--epochs", "2"])["epochs"], 2);
}

#[test]
fn injected_faults_are_reported_as_recovered() {
    let output =
        train(&["--epochs", "2", "--log-format", "json", "--faults", "model@3,optimizer@7"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    let recoveries = events(&lines, "recovery");
    let targets: Vec<&str> = recoveries.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["model", "optimizer"]);
    assert_eq!(recoveries[0]["step"], 3);
    let summary = lines.last().unwrap();
    assert_eq!(summary["faults_injected"], 2);
    assert_eq!(summary["faults_recovered"], 2);
    assert!(
        summary["recovery_max_ms"].as_f64().unwrap()
            >= summary["recovery_mean_ms"].as_f64().unwrap()
    );
}

#[test]
fn csv_and_idx_files_train_and_the_chosen_format_is_said() {
    let dir = TempDir::new("formats");
    // 60 examples of 4 features, 2 classes told apart by the first feature.
    let mut csv = String::from("a,b,c,d,label\n");
    for row in 0..60u32 {
        let label = row % 2;
        csv.push_str(&format!("{},{},0.5,{},{label}\n", label * 2, row % 7, row % 3));
    }
    let csv_path = dir.join("pairs.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let output = train(&[
        "--data",
        csv_path.to_str().unwrap(),
        "--model",
        "[4, 8, 2]",
        "--epochs",
        "2",
        "--log-format",
        "json",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    let data = lines[0]["data"].as_str().unwrap();
    assert!(data.contains("CSV") && data.contains(".csv extension"), "{data}");
    assert!(data.contains("its first row is a header, not data: a, b, c, d, label"), "{data}");
    assert_eq!(events(&lines, "summary")[0]["epochs"], 2);

    // IDX: 50 images of 8×8 bytes and their labels (0..10), big-endian headers.
    let count = 50u32;
    let mut images = vec![0, 0, 8, 3];
    for dim in [count, 8, 8] {
        images.extend_from_slice(&dim.to_be_bytes());
    }
    images.extend((0..count * 64).map(|i| (i * 37 % 256) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&count.to_be_bytes());
    labels.extend((0..count).map(|i| (i % 10) as u8));
    let (images_path, labels_path) = (dir.join("images.idx"), dir.join("labels.idx"));
    std::fs::write(&images_path, images).unwrap();
    std::fs::write(&labels_path, labels).unwrap();
    let pair = format!("{}:{}", images_path.display(), labels_path.display());
    let output =
        train(&["--data", &pair, "--epochs", "1", "--batch-size", "8", "--log-format", "json"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    assert!(lines[0]["data"].as_str().unwrap().starts_with("IDX images"), "{}", lines[0]);
    assert_eq!(events(&lines, "summary")[0]["epochs"], 1);
}

/// Every tensor of a safetensors file, sorted by name.
fn tensors(path: &Path) -> common::Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    common::tensors(&bytes).unwrap_or_else(|| panic!("{}: not a safetensors file", path.display()))
}

/// The zero-loss property across a SIGKILL: a run killed mid-epoch and
/// resumed from its checkpoints ends with the same parameters, bit for bit,
/// as a run that was never interrupted.
#[test]
fn a_run_killed_with_sigkill_resumes_to_identical_parameters() {
    let dir = TempDir::new("sigkill");
    let common = [
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--seed",
        "7",
        "--checkpoint-every",
        "5",
        "--snapshot-every",
        "1",
        "--log-format",
        "json",
        "--log-every",
        "1",
    ];
    let (dir_a, dir_b) = (dir.join("ckpt-a"), dir.join("ckpt-b"));
    let (params_a, params_b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));

    // The uninterrupted run.
    let mut args = common.to_vec();
    args.extend([
        "--checkpoint-dir",
        dir_a.to_str().unwrap(),
        "--save-params",
        params_a.to_str().unwrap(),
    ]);
    let output = train(&args);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let total_steps = events(&json_lines(&output), "summary")[0]["steps"].as_u64().unwrap();

    // The same run, killed a few steps after its first checkpoint.
    let mut args = common.to_vec();
    args.extend(["--checkpoint-dir", dir_b.to_str().unwrap()]);
    let mut child = Command::new(BIN)
        .arg("train")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Shrink the pipe to one page so the run cannot get more than a few
    // dozen steps ahead of this reader: it is still mid-run when killed.
    // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe descriptor this process owns (held
    // open by `stdout` for the whole call) only resizes the pipe's buffer; it
    // touches no memory of ours. A failure (returned, not raised) leaves the
    // default size, which the run's length also covers.
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    // A rendezvous channel: the reader thread hands over one line at a time
    // and reads no further until the line is taken.
    let (lines_tx, lines_rx) = mpsc::sync_channel::<String>(0);
    let reader = std::thread::spawn(move || {
        for line in BufReader::with_capacity(512, stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut checkpoint_step = None;
    let killed_at = loop {
        // Generous: a step takes milliseconds; this only stops a hung run
        // from hanging the test.
        let line = match lines_rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => line,
            Err(error) => {
                let _ = child.kill();
                panic!("the run stopped talking before a checkpoint and 3 more steps: {error}");
            }
        };
        let event: Value = serde_json::from_str(&line).unwrap();
        match (event["event"].as_str(), checkpoint_step) {
            (Some("checkpoint"), None) => checkpoint_step = event["step"].as_u64(),
            (Some("step"), Some(checkpoint))
                if event["step"].as_u64().unwrap() >= checkpoint + 3 =>
            {
                break event["step"].as_u64().unwrap();
            }
            _ => {}
        }
    };
    let written = std::fs::read_dir(&dir_b).unwrap().count();
    assert!(written > 0, "a checkpoint event came but {} is empty", dir_b.display());
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    drop(lines_rx);
    reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the run ended before it was killed: {status}"
    );
    assert!(killed_at < total_steps);

    // Resumed from the killed run's checkpoints.
    let mut args = common.to_vec();
    args.extend([
        "--checkpoint-dir",
        dir_b.to_str().unwrap(),
        "--resume",
        "--save-params",
        params_b.to_str().unwrap(),
    ]);
    let output = train(&args);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    let summary = events(&lines, "summary")[0];
    let resumed_from = summary["resumed_from"].as_u64().unwrap();
    assert!(
        resumed_from >= checkpoint_step.unwrap() && resumed_from <= total_steps,
        "resumed from step {resumed_from}, the first checkpoint was at {checkpoint_step:?}"
    );
    assert!(resumed_from < total_steps, "the killed run had finished: nothing was resumed");
    assert_eq!(summary["steps"].as_u64(), Some(total_steps));

    let (a, b) = (tensors(&params_a), tensors(&params_b));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (ta, tb) in a.iter().zip(&b) {
        assert_eq!((&ta.0, &ta.1, &ta.2), (&tb.0, &tb.1, &tb.2), "tensor names, dtypes and shapes");
        assert!(ta.3 == tb.3, "tensor {} differs after SIGKILL and --resume", ta.0);
    }
}

#[test]
fn data_scale_divides_csv_features_and_is_refused_elsewhere() {
    let dir = TempDir::new("data-scale");
    let mut csv = String::from("a,b,label\n");
    for row in 0..40 {
        csv.push_str(&format!("{},{},{}\n", row * 6, 255 - row, row % 2));
    }
    let path = dir.join("pixels.csv");
    std::fs::write(&path, csv).unwrap();
    let data = path.to_str().unwrap();

    let config =
        resolved(&["--data", data, "--model", "[2, 2]", "--data-scale", "255", "--kernel-actors"]);
    assert_eq!(config.data, DataSource::Csv { path: path.clone(), scale: 255.0 });
    assert!(config.kernel_actors);

    assert_usage_error(&train(&["--data", data, "--data-scale", "0"]), &["--data-scale 0"]);
    // Found before training, not as a diverged run.
    assert_usage_error(
        &train(&["--data", data, "--model", "[2, 2]", "--data-scale", "1e-45"]),
        &["divided by 1e-45", "use a larger divisor"],
    );
    assert_usage_error(
        &train(&["--data-scale", "16"]),
        &["--data-scale applies to CSV data only", "digits"],
    );
}

// ---------------------------------------------------------------------------
// What can go wrong (issue 13): each test below failed before its fix.

/// Runs `zbmd-node train` with extra environment variables.
fn train_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("train").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run zbmd-node")
}

#[test]
fn sizes_beyond_a_run_are_refused_before_it_starts() {
    // Used to wrap around and train 17 steps.
    assert_usage_error(
        &train(&["--epochs", "802032351030850071"]),
        &["epochs", "more than the 100000000 steps"],
    );
    // Used to be reported as an unknown argument.
    assert_usage_error(&train(&["--lr", "-1"]), &["lr", "-1"]);
    // Used never to fire, without a word.
    assert_usage_error(
        &train(&["--epochs", "2", "--faults", "model@5000"]),
        &["model@5000", "46 steps"],
    );
    let dir = TempDir::new("faults-no-checkpoint");
    let checkpoints = dir.join("c");
    assert_usage_error(
        &train(&[
            "--epochs",
            "2",
            "--faults",
            "checkpointer@7",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
        ]),
        &["checkpointer@7", "no checkpoint is written at step 7"],
    );
    assert_usage_error(&train(&["--faults", "checkpointer@10"]), &["without a checkpoint_dir"]);
}

#[test]
fn bad_environment_variables_are_configuration_errors() {
    for (name, value, needle) in [
        ("ZBMD_FAULT_INJECTION", "garbage", "ZBMD_FAULT_INJECTION"),
        ("ZBMD_IO_BACKEND", "garbage", "ZBMD_IO_BACKEND"),
        ("ZBMD_GPU_BACKEND", "garbage", "ZBMD_GPU_BACKEND \"garbage\""),
        // Absent here: never a silent fall back to the CPU.
        ("ZBMD_GPU_BACKEND", "rocm", "ZBMD_GPU_BACKEND rocm"),
    ] {
        let output = train_env(&["--epochs", "1", "--quiet"], &[(name, value)]);
        assert_usage_error(&output, &[needle]);
    }
    let output = train_env(&["--epochs", "1", "--quiet"], &[("ZBMD_GPU_BACKEND", "cpu")]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
}

#[test]
fn output_paths_that_cannot_be_written_are_refused_before_training() {
    // /proc takes no new files, not even from root.
    assert_usage_error(
        &train(&["--plot", "/proc/zbmd-curves.png"]),
        &["--plot", "cannot be written"],
    );
    assert_usage_error(
        &train(&["--save-params", "/proc/zbmd.safetensors"]),
        &["--save-params", "cannot be written"],
    );
    let dir = TempDir::new("unwritable-checkpoints");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let under_a_file = file.join("checkpoints");
    assert_usage_error(
        &train(&["--checkpoint-dir", under_a_file.to_str().unwrap()]),
        &["checkpoint_dir", "a-file"],
    );
}

#[test]
fn parameters_that_cannot_be_saved_after_training_are_not_lost() {
    let dir = TempDir::new("save-params-full");
    // A name that passes every check before training, on a device that is
    // always full: the write fails only at the end.
    let full = dir.join("params.safetensors");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let output = train(&["--epochs", "1", "--save-params", full.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("held-out accuracy"), "the summary is printed: {out}");
    assert!(!out.contains("parameters saved to"), "{out}");
    let message = stderr(&output);
    assert!(message.contains("--save-params") && message.contains("written to"), "{message}");
    let rescued = message.split("written to ").nth(1).unwrap().split(" instead").next().unwrap();
    assert_eq!(tensors(Path::new(rescued)).len(), 4, "the rescued file holds the parameters");
    std::fs::remove_file(rescued).unwrap();
}

#[test]
fn a_closed_or_full_standard_output_does_not_pass_for_success() {
    let output = Command::new(BIN)
        .args(["train", "--epochs", "1"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("standard output"), "{}", stderr(&output));

    let mut child = Command::new(BIN)
        .args(["train", "--epochs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("Broken pipe"), "{}", stderr(&output));
}

#[test]
fn a_learning_rate_that_diverges_stops_the_run_with_an_error() {
    let output = train(&["--epochs", "2", "--lr", "1e10", "--quiet"]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("training diverged at step"), "{message}");
    assert!(message.contains("lower the learning rate"), "{message}");
}

/// Writes a run's checkpoints into `dir` and returns the files.
fn checkpoints_of(args: &[&str], dir: &Path) -> Vec<PathBuf> {
    let mut all = args.to_vec();
    all.extend(["--checkpoint-dir", dir.to_str().unwrap(), "--quiet"]);
    let output = train(&all);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "zbmd"))
        .collect();
    files.sort();
    files
}

#[test]
fn garbage_with_high_step_numbers_neither_deletes_checkpoints_nor_hijacks_resume() {
    let dir = TempDir::new("garbage-high-steps");
    let checkpoints = dir.join("c");
    std::fs::create_dir_all(&checkpoints).unwrap();
    for step in [999_999u64, 888_888] {
        std::fs::write(checkpoints.join(format!("ckpt-{step:012}.zbmd")), b"garbage").unwrap();
    }
    let run = ["--epochs", "2", "--checkpoint-every", "10"];
    let path = checkpoints.to_str().unwrap();
    // Refused, with what is there and what to do.
    let mut args = run.to_vec();
    args.extend(["--checkpoint-dir", path]);
    assert_usage_error(
        &train(&args),
        &["another run", "ckpt-000000999999.zbmd", "--allow-other-runs"],
    );
    // Allowed: this run's newest three survive, and resume continues them.
    let allowed = ["--epochs", "2", "--checkpoint-every", "10", "--allow-other-runs"];
    let files = checkpoints_of(&allowed, &checkpoints);
    let ours: Vec<&PathBuf> =
        files.iter().filter(|path| path.to_str().unwrap().contains("000000000046-")).collect();
    assert_eq!(ours.len(), 1, "the final checkpoint is kept: {files:?}");
    assert_eq!(files.len(), 5, "three of ours and the two garbage files: {files:?}");
    let resume = [
        "--epochs",
        "3",
        "--checkpoint-every",
        "10",
        "--checkpoint-dir",
        path,
        "--allow-other-runs",
        "--resume",
        "--log-format",
        "json",
    ];
    let output = train(&resume);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(events(&json_lines(&output), "summary")[0]["resumed_from"], 46);
}

#[test]
fn resuming_with_other_settings_or_a_shorter_run_is_refused_naming_why() {
    let dir = TempDir::new("resume-changed");
    let checkpoints = dir.join("c");
    checkpoints_of(&["--epochs", "2"], &checkpoints);
    let path = checkpoints.to_str().unwrap();
    assert_usage_error(
        &train(&["--epochs", "3", "--checkpoint-dir", path, "--resume", "--lr", "0.01"]),
        &["optimizer.lr: 0.1 there, 0.01 here", "keeps the settings it was started with"],
    );
    assert_usage_error(
        &train(&["--model", "[64, 32, 10]", "--checkpoint-dir", path, "--resume"]),
        &["model: [64, 128, 10] there, [64, 32, 10] here"],
    );
    assert_usage_error(
        &train(&["--epochs", "1", "--checkpoint-dir", path, "--resume"]),
        &["step 46", "past this run's 23 steps", "at least 2 epochs"],
    );
}

#[test]
fn a_corrupt_checkpoint_is_a_warning_even_when_quiet() {
    let dir = TempDir::new("corrupt-quiet");
    let checkpoints = dir.join("c");
    let files = checkpoints_of(&["--epochs", "2", "--checkpoint-every", "10"], &checkpoints);
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(newest, bytes).unwrap();
    let path = checkpoints.to_str().unwrap();
    let output = train(&["--epochs", "2", "--checkpoint-dir", path, "--resume", "--quiet"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("warning: skipped checkpoint"), "{message}");
    assert!(message.contains("checksum mismatch"), "{message}");
}

#[test]
fn two_runs_cannot_write_one_directory() {
    let dir = TempDir::new("two-writers");
    let checkpoints = dir.join("c");
    let path = checkpoints.to_str().unwrap();
    let mut first = Command::new(BIN)
        .args(["train", "--epochs", "1000", "--checkpoint-dir", path, "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first line is printed once the directory is locked... or not yet:
    // wait for its first step, after which it surely holds the lock.
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let stepped =
        lines.by_ref().take(100).map_while(Result::ok).any(|line| line.contains("\"step\""));
    let second = train(&["--epochs", "1", "--checkpoint-dir", path]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(stepped, "the first run never stepped");
    assert_usage_error(
        &second,
        &["another process is writing checkpoints here", &format!("pid {}", first.id())],
    );
}

#[test]
fn sigterm_finishes_the_step_writes_a_checkpoint_and_resume_continues_it() {
    let dir = TempDir::new("sigterm");
    let (clean_params, resumed_params) =
        (dir.join("clean.safetensors"), dir.join("resumed.safetensors"));
    let checkpoints = dir.join("c");
    let path = checkpoints.to_str().unwrap();
    let common = ["--batch-size", "16", "--seed", "3"];
    let mut args = common.to_vec();
    args.extend(["--epochs", "3", "--save-params", clean_params.to_str().unwrap(), "--quiet"]);
    assert!(train(&args).status.success());

    // A long run (epochs are not part of the run's identity: its first steps
    // are those of the 3-epoch run) stopped by SIGTERM a few steps in.
    let mut args = common.to_vec();
    args.extend([
        "--epochs",
        "500",
        "--checkpoint-dir",
        path,
        "--log-format",
        "json",
        "--log-every",
        "1",
    ]);
    let mut child = Command::new(BIN)
        .arg("train")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let stepped =
        lines.by_ref().take(200).map_while(Result::ok).any(|line| line.contains("\"step\":5,"));
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // yet waited for (so the pid is not reused); no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = child.wait_with_output().unwrap();
    assert!(stepped, "the run never reached step 5");
    assert_eq!(output.status.code(), Some(128 + libc::SIGTERM), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("stopped by SIGTERM after step"), "{message}");
    let checkpoint =
        rest.iter().rev().find(|line| line.contains("\"checkpoint\"")).expect("a checkpoint event");
    let stopped_at: Value = serde_json::from_str(checkpoint).unwrap();
    assert!(message.contains(stopped_at["path"].as_str().unwrap()), "says where: {message}");
    assert!(stopped_at["step"].as_u64().unwrap() >= 5);

    let mut args = common.to_vec();
    args.extend([
        "--epochs",
        "3",
        "--checkpoint-dir",
        path,
        "--resume",
        "--save-params",
        resumed_params.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let output = train(&args);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(events(&json_lines(&output), "summary")[0]["resumed_from"], stopped_at["step"]);
    assert!(
        tensors(&clean_params) == tensors(&resumed_params),
        "parameters differ after SIGTERM and --resume"
    );
}

/// A small tmpfs mounted for one test (root only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (said on standard error) where this process may not mount.
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", dir.to_str().unwrap()])
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root); CI runs as root");
        }
        mounted.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn checkpoints_that_cannot_be_written_are_retried_reported_and_never_exit_0() {
    let dir = TempDir::new("full-disk");
    // A read-only directory is found before the first step.
    let Some(read_only) = Tmpfs::mount(&dir.join("ro"), "ro,size=64k") else { return };
    assert_usage_error(
        &train(&["--checkpoint-dir", read_only.0.to_str().unwrap()]),
        &["checkpoint_dir", "Read-only file system"],
    );
    // A disk that fills up during the run: a checkpoint of this model takes
    // about 80 KB, so the third of them no longer fits.
    let Some(full) = Tmpfs::mount(&dir.join("full"), "size=200k") else { return };
    let path = full.0.to_str().unwrap();
    let run = ["--epochs", "2", "--checkpoint-every", "10", "--checkpoint-dir", path, "--quiet"];
    let output = train(&run);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("warning: the checkpoint of step 30 could not be written"),
        "{message}"
    );
    assert!(message.contains("attempt 3"), "retried: {message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(stdout(&output).contains("checkpoints NOT written"), "{}", stdout(&output));
    let temps = std::fs::read_dir(path)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert_eq!(temps.count(), 0, "no temp file is left behind");

    let Some(stopping) = Tmpfs::mount(&dir.join("stop"), "size=200k") else { return };
    let mut stop = run.to_vec();
    stop[5] = stopping.0.to_str().unwrap();
    stop.extend(["--on-checkpoint-failure", "stop"]);
    let output = train(&stop);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("the checkpoint of step 30 could not be written"),
        "{}",
        stderr(&output)
    );
    assert!(!stdout(&output).contains("held-out accuracy"), "it stopped at step 30");
}

#[test]
fn widths_and_cells_that_cannot_be_trained_are_refused_with_the_reason() {
    // Used to abort on a 256 GB allocation, or panic on capacity overflow.
    assert_usage_error(&train(&["--model", "[64, 1000000000, 10]"]), &["300.0 GB", "limit"]);
    assert_usage_error(&train(&["--model", "[64, 18446744073709551615, 10]"]), &["limit"]);
    let dir = TempDir::new("csv-cells");
    let cases = [
        // Used to become +inf after the cast to f32.
        ("big.csv", "1,2,0\n3,1e39,1\n", "beyond the range of f32"),
        // A typo in the first row used to drop it as a header, silently.
        ("typo.csv", "1,2x,0\n3,4,1\n", "\"2x\" is not a number"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        assert_usage_error(
            &train(&["--data", path.to_str().unwrap(), "--model", "[2, 2]"]),
            &[needle],
        );
    }
    // A byte-order mark is not a header: all ten rows are data (eight to
    // train on, one step each), where the first used to be dropped.
    let path = dir.join("bom.csv");
    let rows: String = (0..10).map(|row| format!("{row},{},{}\n", row * 2, row % 2)).collect();
    std::fs::write(&path, format!("\u{feff}{rows}")).unwrap();
    let output = train(&[
        "--data",
        path.to_str().unwrap(),
        "--model",
        "[2, 2]",
        "--batch-size",
        "1",
        "--epochs",
        "1",
        "--log-format",
        "json",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let lines = json_lines(&output);
    assert!(!lines[0]["data"].as_str().unwrap().contains("header"), "{}", lines[0]);
    assert_eq!(events(&lines, "summary")[0]["steps"], 8);
}
