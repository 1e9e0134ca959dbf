//! `zbmd-node train` as a user runs it: the built binary, its exit codes, its
//! messages, its JSON log, and a run killed with SIGKILL and resumed.

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

const BIN: &str = env!("CARGO_BIN_EXE_zbmd-node");

/// A fresh folder for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("zbmd-train-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

/// Every tensor of a safetensors file: name → (dtype, shape, bytes).
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (name, format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
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
    assert_usage_error(
        &train(&["--data-scale", "16"]),
        &["--data-scale applies to CSV data only", "digits"],
    );
}
