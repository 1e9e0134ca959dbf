//! `zbmd-node train`: the command line of supervised training.
//!
//! The settings start from [`TrainConfig::default`] (an MLP on the embedded
//! digits), are replaced by a `--config` TOML file when one is given, and
//! then by each option given on the command line. Before training, the
//! result is checked as a whole ([`TrainConfig::validate`]), the data is
//! loaded once and the model built once, so that a bad option, a missing or
//! malformed data file or a model that does not fit the data is reported
//! (exit code 2) before any step runs, naming the option or the file.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::{Args, ValueEnum};
use zbmd_ml::data::Dataset;
use zbmd_ml::nn::{Layer, Sequential};
use zbmd_ml::optim::{AdamConfig, LrSchedule, OptimizerConfig, SgdConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::train::{
    CheckpointFailure, DataSource, FaultSchedule, TrainConfig, TrainError, TrainReport,
    save_parameters, train,
};

use crate::plot;
use crate::progress::{Event, Output, Reporter, Summary};

/// Exit code of a bad argument, option value or configuration (clap's own
/// usage errors use the same code).
pub const EXIT_USAGE: u8 = 2;
/// The largest `--config` file read: a settings file is a few hundred
/// bytes; anything near this is not one.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Exit code of a run that started and failed.
pub const EXIT_FAILURE: u8 = 1;

/// `zbmd-node train`'s options. Each one left out keeps the value of the
/// `--config` file, or else of the default configuration.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Settings from a TOML file (the keys of zbmd_ml's `TrainConfig`); the
    /// options below override it.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// The model: a size list such as "[64, 128, 10]" (Linear layers with
    /// ReLU between them), or a TOML file of layers.
    #[arg(long, value_name = "SPEC|FILE.toml")]
    pub model: Option<String>,
    /// The data: `digits` (embedded), a CSV file (label in the last column,
    /// optionally gzip'd), or IDX images and labels files joined by `:`.
    #[arg(long, value_name = "digits|PATH.csv[.gz]|IMAGES.idx[.gz]:LABELS.idx[.gz]")]
    pub data: Option<String>,
    /// Divides every CSV feature by this (for pixels 0-255, say: 255).
    /// The embedded digits are divided by 16 and IDX data by 255 already.
    #[arg(long, value_name = "DIVISOR", allow_negative_numbers = true)]
    pub data_scale: Option<f32>,
    /// Passes over the training set.
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<u64>,
    /// Examples per optimizer step.
    #[arg(long, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// The smallest unit gradients are computed over (0: the whole batch);
    /// the batch size must be a multiple of it.
    #[arg(long, allow_negative_numbers = true)]
    pub grad_chunk: Option<usize>,
    /// The optimizer; switching kind starts from the new kind's defaults
    /// (PyTorch's), then applies --lr, --momentum and --weight-decay.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate (the peak rate when a schedule is used).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Weight decay (L2 for sgd and adam, decoupled for adamw).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: `constant`, `step:SIZE:GAMMA` (times GAMMA
    /// every SIZE steps) or `cosine:WARMUP` (linear warmup over WARMUP
    /// steps, then a cosine decay to 0 at the run's last step).
    #[arg(long, value_name = "SCHEDULE", value_parser = parse_schedule)]
    pub schedule: Option<ScheduleArg>,
    /// Seeds initialisation, the train/test split, shuffling and dropout.
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// The backend whose devices run the model (default: the best found, a
    /// hardware accelerator before the CPU). On an accelerator the model's
    /// matrix products run on the GPU layer's kernel actors.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// On the CPU backend too, run the matrix products on kernel actors
    /// (over two logical CPU devices): the accelerator's path, slower here.
    #[arg(long)]
    pub kernel_actors: bool,
    /// Where checkpoints are written (none without it).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints on disk.
    #[arg(long, value_name = "STEPS", allow_negative_numbers = true)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept on disk (older ones are deleted).
    #[arg(long, value_name = "COUNT", allow_negative_numbers = true)]
    pub keep_checkpoints: Option<usize>,
    /// Steps between in-memory snapshots (a crash replays at most this many).
    #[arg(long, value_name = "STEPS", allow_negative_numbers = true)]
    pub snapshot_every: Option<u64>,
    /// Resume from the newest valid checkpoint of this run in
    /// --checkpoint-dir: one written with the same model, data and settings
    /// (--epochs may grow; other changes are refused, naming them).
    #[arg(long)]
    pub resume: bool,
    /// Let --checkpoint-dir hold other runs' checkpoints: this run writes
    /// beside them and never resumes from or deletes them (without it, such
    /// a directory is refused).
    #[arg(long)]
    pub allow_other_runs: bool,
    /// When a checkpoint cannot be written after 3 attempts: `continue`
    /// (warn, keep training, exit 1 at the end) or `stop` (exit 1 at once).
    #[arg(long, value_enum)]
    pub on_checkpoint_failure: Option<CheckpointFailureArg>,
    /// Faults to inject, e.g. `model@10,optimizer@25,device_lost@40`
    /// (targets: model, optimizer, loader, checkpointer, metrics,
    /// device_lost, device_oom; steps from 1).
    #[arg(long, value_name = "TARGET@STEP,...", value_parser = FaultSchedule::parse)]
    pub faults: Option<FaultSchedule>,
    /// Writes the final parameters here (safetensors, PyTorch names).
    #[arg(long, value_name = "FILE.safetensors")]
    pub save_params: Option<PathBuf>,
    /// `text`: a progress bar on a terminal, log lines otherwise; `json`:
    /// one JSON object per line and event on standard output.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Steps between two step lines in the log (the progress bar shows
    /// every step).
    #[arg(long, value_name = "STEPS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_every: u64,
    /// Writes a PNG of the per-epoch curves and of the per-step loss, each
    /// fault and recovery marked on it.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Prints only the summary (and errors).
    #[arg(long)]
    pub quiet: bool,
    /// Prints the settings the run would use, as TOML (a file for
    /// --config), and exits without training.
    #[arg(long)]
    pub print_config: bool,
}

/// An optimizer kind, as `--optimizer` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// SGD with momentum.
    Sgd,
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// A backend, as `--backend` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The host CPU.
    Cpu,
    /// Vulkan compute.
    Vulkan,
    /// NVIDIA CUDA.
    Cuda,
    /// AMD ROCm.
    Rocm,
}

/// `--on-checkpoint-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckpointFailureArg {
    /// Warn, keep training, end with exit code 1.
    Continue,
    /// Stop the run at once, exit code 1.
    Stop,
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (or a progress bar on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// A `--schedule` value; the learning rate and the cosine's length come from
/// the rest of the settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleArg {
    /// The optimizer's rate throughout.
    Constant,
    /// Multiplied by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: u64,
        /// The factor of each decay.
        gamma: f64,
    },
    /// Linear warmup, then cosine decay to 0 at the last step.
    Cosine {
        /// Steps of warmup.
        warmup_steps: u64,
    },
}

fn parse_schedule(text: &str) -> Result<ScheduleArg, String> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    let number = |what: &str, value: &str| -> Result<f64, String> {
        value.parse::<f64>().map_err(|_| format!("{what} {value:?} is not a number"))
    };
    let whole = |what: &str, value: &str| -> Result<u64, String> {
        value.parse::<u64>().map_err(|_| format!("{what} {value:?} is not a whole number"))
    };
    match parts.as_slice() {
        ["constant"] => Ok(ScheduleArg::Constant),
        ["step", size, gamma] => Ok(ScheduleArg::Step {
            step_size: whole("SIZE", size)?,
            gamma: number("GAMMA", gamma)?,
        }),
        ["cosine", warmup] => Ok(ScheduleArg::Cosine { warmup_steps: whole("WARMUP", warmup)? }),
        _ => Err("expected constant, step:SIZE:GAMMA or cosine:WARMUP".to_string()),
    }
}

/// A usage error: what the user asked for cannot run. Printed as
/// `error: <message>`, exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl<T: Into<String>> From<T> for UsageError {
    fn from(message: T) -> Self {
        UsageError(message.into())
    }
}

/// The data as the run will read it, and why that format was chosen.
#[derive(Debug, Clone)]
pub struct DataChoice {
    /// The source handed to the trainer.
    pub source: DataSource,
    /// "embedded digits", "CSV file x.csv (by its .csv extension)", ...
    pub description: String,
}

/// Runs `zbmd-node train`.
pub fn run(args: TrainArgs) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(UsageError(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Prepared { config, data } = prepared;
    if args.print_config {
        return match toml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot write the settings as TOML: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    let signal = match stop_on_signals() {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("error: cannot handle SIGTERM and SIGINT: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let output = if args.quiet {
        Output::Quiet(args.log_format)
    } else if args.log_format == LogFormat::Text && std::io::stderr().is_terminal() {
        Output::Bar
    } else {
        Output::Lines(args.log_format)
    };
    let mut reporter = Reporter::new(output, args.log_every).stop_on(signal.clone());
    reporter.event(&Event::Start { config: &config, data: &data.description });
    let result = train(&config, &mut reporter);
    reporter.finish();
    // What went wrong after the training itself, said after the summary.
    let mut errors = Vec::new();
    let (report, params_saved) = match result {
        Ok(report) => (report, true),
        Err(TrainError::SaveParams { report, path, error }) => {
            let rescue = rescue_parameters(&config, &report);
            errors.push(format!("--save-params {}: {error}; {rescue}", path.display()));
            (*report, false)
        }
        Err(error) => {
            let code = match &error {
                TrainError::Config(_) | TrainError::Data(_) => EXIT_USAGE,
                // The shell's convention for a process a signal ended.
                TrainError::Interrupted { .. } => {
                    u8::try_from(128 + signal.load(Ordering::Relaxed)).unwrap_or(EXIT_FAILURE)
                }
                _ => EXIT_FAILURE,
            };
            let prefix =
                if matches!(error, TrainError::Interrupted { .. }) { "" } else { "error: " };
            eprintln!("{prefix}{error}");
            return ExitCode::from(code);
        }
    };
    let mut plot_written = None;
    if let Some(path) = &args.plot {
        match plot::write_png(path, &report) {
            Ok(note) => plot_written = Some((path.clone(), note)),
            Err(error) => errors.push(format!("--plot {}: {error}", path.display())),
        }
    }
    if let Some((last, _)) = report.checkpoint_failures.last() {
        errors.push(format!(
            "{} checkpoint(s) could not be written, the last at step {last} (see the warnings \
             above); the run is not saved as it was asked to be",
            report.checkpoint_failures.len()
        ));
    }
    let mut summary = Summary::new(&report, &config, plot_written);
    if !params_saved {
        summary.save_params = None;
    }
    reporter.event(&Event::Summary(Box::new(summary)));
    if let Some(error) = reporter.output_error() {
        errors.push(format!("{error}: the log and summary there are incomplete"));
    }
    for error in &errors {
        eprintln!("error: {error}");
    }
    if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) }
}

/// Where the trained parameters are when `--save-params` could not be
/// written: in the run's final checkpoint, or in a file written in the
/// temp folder instead.
fn rescue_parameters(config: &TrainConfig, report: &TrainReport) -> String {
    if let Some((step, path)) = &report.last_checkpoint {
        if *step == report.steps {
            return format!(
                "the trained parameters are in the final checkpoint, {}",
                path.display()
            );
        }
    }
    let fallback =
        std::env::temp_dir().join(format!("zbmd-params-{}.safetensors", std::process::id()));
    match save_parameters(config, report, &fallback) {
        Ok(()) => format!("the trained parameters were written to {} instead", fallback.display()),
        Err(error) => {
            format!("writing them to {} failed too ({error}): they are lost", fallback.display())
        }
    }
}

/// SIGTERM (SLURM's warning before its time limit kills a job) and SIGINT
/// ask the run to stop after the step in flight, with a checkpoint of it;
/// the flag holds the signal's number. A second one ends the process at
/// once, by the signal's default action, as users expect of a second
/// Ctrl-C.
fn stop_on_signals() -> std::io::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let signal = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(AtomicBool::new(false));
    for number in [SIGTERM, SIGINT] {
        // The order matters: the default action must be armed by the first
        // signal, not fire on it.
        flag::register_conditional_default(number, asked.clone())?;
        flag::register(number, asked.clone())?;
        flag::register_usize(number, signal.clone(), number as usize)?;
    }
    Ok(signal)
}

/// The checked settings and the data's description.
struct Prepared {
    config: TrainConfig,
    data: DataChoice,
}

/// Builds the configuration from the file and the options, and checks it
/// with the data and the model.
fn prepare(args: &TrainArgs) -> Result<Prepared, UsageError> {
    let mut config = match &args.config {
        Some(path) => {
            let size = fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
            if size > CONFIG_BYTES_MAX {
                return Err(UsageError(format!(
                    "--config {}: {size} bytes, more than a settings file holds ({CONFIG_BYTES_MAX})",
                    path.display()
                )));
            }
            let text = fs::read_to_string(path)
                .map_err(|error| format!("--config {}: cannot read: {error}", path.display()))?;
            TrainConfig::from_toml(&text)
                .map_err(|error| format!("--config {}: {error}", path.display()))?
        }
        None => TrainConfig::default(),
    };
    let mut data = match &args.data {
        Some(text) => parse_data(text)?,
        None => describe(&config.data),
    };
    if let Some(divisor) = args.data_scale {
        let DataSource::Csv { scale, .. } = &mut data.source else {
            return Err(UsageError(format!(
                "--data-scale applies to CSV data only ({} is scaled already)",
                data.description
            )));
        };
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(UsageError(format!("--data-scale {divisor}: must be a positive number")));
        }
        *scale = divisor;
    }
    config.data = data.source.clone();
    apply_options(args, &mut config)?;
    let dataset = load(&mut data)?;
    check_model(&config.model, &dataset)?;
    let total_steps = total_steps(&config, &dataset)?;
    config.check_faults(total_steps).map_err(|error| error.to_string())?;
    if let Some(schedule) = args.schedule {
        let lr = optimizer_lr(&config.optimizer);
        config.schedule = Some(match schedule {
            ScheduleArg::Constant => LrSchedule::Constant { lr },
            ScheduleArg::Step { step_size, gamma } => LrSchedule::Step { lr, step_size, gamma },
            ScheduleArg::Cosine { warmup_steps } => {
                if warmup_steps > total_steps {
                    return Err(UsageError(format!(
                        "--schedule cosine:{warmup_steps}: the warmup is longer than the run's \
                         {total_steps} steps"
                    )));
                }
                LrSchedule::WarmupCosine { lr, warmup_steps, total_steps, min_lr: 0.0 }
            }
        });
    }
    config.optimizer.build().map_err(|error| format!("optimizer: {error}"))?;
    config.validate().map_err(|error| {
        let source = args.config.as_ref().map_or(String::new(), |path| {
            format!(" (settings from --config {} and the options)", path.display())
        });
        format!("{error}{source}")
    })?;
    if let Some(path) = &args.plot {
        check_output_path("--plot", path, "png")?;
    }
    if let Some(path) = &config.save_params {
        check_output_path("--save-params", path, "safetensors")?;
    }
    Ok(Prepared { config, data })
}

/// Applies every option given on the command line over `config`.
fn apply_options(args: &TrainArgs, config: &mut TrainConfig) -> Result<(), UsageError> {
    if let Some(model) = &args.model {
        config.model = model.clone();
    }
    set(&mut config.epochs, args.epochs);
    set(&mut config.batch_size, args.batch_size);
    set(&mut config.grad_chunk, args.grad_chunk);
    set(&mut config.seed, args.seed);
    set(&mut config.checkpoint_every, args.checkpoint_every);
    set(&mut config.keep_checkpoints, args.keep_checkpoints);
    set(&mut config.snapshot_every, args.snapshot_every);
    if let Some(backend) = args.backend {
        config.backend = Some(backend.to_possible_value().map_or_else(
            || format!("{backend:?}").to_lowercase(),
            |value| value.get_name().to_string(),
        ));
    }
    if let Some(dir) = &args.checkpoint_dir {
        config.checkpoint_dir = Some(dir.clone());
    }
    config.resume |= args.resume;
    config.allow_other_runs |= args.allow_other_runs;
    if let Some(policy) = args.on_checkpoint_failure {
        config.on_checkpoint_failure = match policy {
            CheckpointFailureArg::Continue => CheckpointFailure::Continue,
            CheckpointFailureArg::Stop => CheckpointFailure::Stop,
        };
    }
    config.kernel_actors |= args.kernel_actors;
    if let Some(faults) = &args.faults {
        config.faults = faults.clone();
    }
    if let Some(path) = &args.save_params {
        config.save_params = Some(path.clone());
    }
    apply_optimizer(args, config)
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// `--optimizer`, `--lr`, `--momentum`, `--weight-decay`.
fn apply_optimizer(args: &TrainArgs, config: &mut TrainConfig) -> Result<(), UsageError> {
    if let Some(kind) = args.optimizer {
        let current = match config.optimizer {
            OptimizerConfig::Sgd(_) => OptimizerKind::Sgd,
            OptimizerConfig::Adam(_) => OptimizerKind::Adam,
            OptimizerConfig::AdamW(_) => OptimizerKind::Adamw,
        };
        if kind != current {
            config.optimizer = match kind {
                OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig::default()),
                OptimizerKind::Adam => OptimizerConfig::Adam(AdamConfig::default()),
                OptimizerKind::Adamw => OptimizerConfig::AdamW(AdamConfig::adamw()),
            };
        }
    }
    match &mut config.optimizer {
        OptimizerConfig::Sgd(sgd) => {
            set(&mut sgd.lr, args.lr);
            set(&mut sgd.momentum, args.momentum);
            set(&mut sgd.weight_decay, args.weight_decay);
        }
        OptimizerConfig::Adam(adam) | OptimizerConfig::AdamW(adam) => {
            if args.momentum.is_some() {
                return Err(UsageError(
                    "--momentum applies to --optimizer sgd only (Adam's betas are set in a \
                     --config file)"
                        .to_string(),
                ));
            }
            set(&mut adam.lr, args.lr);
            set(&mut adam.weight_decay, args.weight_decay);
        }
    }
    // A schedule from the config file follows a new --lr: it owns the rate.
    if let (Some(lr), Some(schedule)) = (args.lr, config.schedule.as_mut()) {
        match schedule {
            LrSchedule::Constant { lr: rate }
            | LrSchedule::Step { lr: rate, .. }
            | LrSchedule::WarmupCosine { lr: rate, .. } => *rate = lr,
        }
    }
    Ok(())
}

fn optimizer_lr(optimizer: &OptimizerConfig) -> f64 {
    match optimizer {
        OptimizerConfig::Sgd(sgd) => sgd.lr,
        OptimizerConfig::Adam(adam) | OptimizerConfig::AdamW(adam) => adam.lr,
    }
}

/// The run's optimizer steps: epochs × batches per epoch of the training
/// split (the last, short batch of an epoch counts: the loader keeps it).
/// The split is stratified, each class giving `round(count × fraction)` rows
/// to the test set, so the training set's size follows from the class counts.
fn total_steps(config: &TrainConfig, dataset: &Dataset) -> Result<u64, String> {
    let test: usize = dataset
        .class_counts()
        .iter()
        .map(|&count| (count as f64 * config.test_fraction).round() as usize)
        .sum();
    let train = dataset.len().saturating_sub(test).max(1);
    let batch_size = config.batch_size.max(1);
    config.total_steps(train.div_ceil(batch_size) as u64).map_err(|error| error.to_string())
}

/// Parses `--data`, choosing the format.
pub fn parse_data(text: &str) -> Result<DataChoice, UsageError> {
    if text == "digits" {
        return Ok(describe(&DataSource::Digits));
    }
    let whole = Path::new(text);
    // IMAGES:LABELS, unless the whole text names a file (a path with a colon).
    if let (false, Some((images, labels))) = (whole.is_file(), text.split_once(':')) {
        if images.is_empty() || labels.is_empty() {
            return Err(UsageError(format!(
                "--data {text:?}: IDX data is IMAGES:LABELS, two non-empty paths"
            )));
        }
        let source = DataSource::Idx { images: images.into(), labels: labels.into() };
        let description = format!(
            "IDX images {images} with labels {labels} (two paths joined by ':' are an IDX pair)"
        );
        return Ok(DataChoice { source, description });
    }
    let name = text.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let reason = if name.ends_with(".csv") {
        "by its .csv extension".to_string()
    } else if name.ends_with(".idx") || name.contains("-ubyte") || name.contains(".idx") {
        return Err(UsageError(format!(
            "--data {text}: an IDX file needs its labels file too: --data IMAGES.idx:LABELS.idx"
        )));
    } else {
        match sniff(whole) {
            Sniffed::Idx => {
                return Err(UsageError(format!(
                    "--data {text}: the file starts with an IDX magic number; IDX data needs \
                     its images and labels files: --data IMAGES:LABELS"
                )));
            }
            Sniffed::Other => "the default for one file that does not start like IDX".to_string(),
        }
    };
    let source = DataSource::Csv { path: whole.to_path_buf(), scale: 1.0 };
    Ok(DataChoice { source, description: format!("CSV file {text} ({reason})") })
}

enum Sniffed {
    Idx,
    Other,
}

/// Whether a file without a telling name starts like an (uncompressed) IDX
/// file: two zero bytes, the type 0x08 (unsigned bytes) and a rank of 1 to 3.
fn sniff(path: &Path) -> Sniffed {
    use std::io::Read;
    let mut head = [0u8; 4];
    let read = fs::File::open(path).and_then(|mut file| file.read_exact(&mut head));
    match (read, head) {
        (Ok(()), [0, 0, 0x08, 1..=3]) => Sniffed::Idx,
        _ => Sniffed::Other,
    }
}

/// How a config file's data source is described.
fn describe(source: &DataSource) -> DataChoice {
    let description = match source {
        DataSource::Digits => "the embedded UCI digits (1,797 8x8 images, 10 classes)".to_string(),
        DataSource::Csv { path, .. } => format!("CSV file {}", path.display()),
        DataSource::Idx { images, labels } => {
            format!("IDX images {} with labels {}", images.display(), labels.display())
        }
    };
    DataChoice { source: source.clone(), description }
}

/// Loads (and scales) the data once to check it, and to size a cosine
/// schedule.
/// A CSV file's first row taken as a header is said in the description.
fn load(data: &mut DataChoice) -> Result<Dataset, UsageError> {
    let loaded = zbmd_ml::train::load_data_with_header(&data.source);
    let (dataset, header) = loaded.map_err(|error| match error {
        TrainError::Data(error) => {
            UsageError(format!("data: {error} [read as {}]", data.description))
        }
        other => UsageError(other.to_string()),
    })?;
    if let Some(header) = header {
        data.description
            .push_str(&format!("; its first row is a header, not data: {}", header.join(", ")));
    }
    Ok(dataset)
}

/// Builds the model once: its spec or file must parse, its input width must
/// be the data's and its output must have a unit per class.
fn check_model(spec: &str, dataset: &Dataset) -> Result<(), UsageError> {
    let mut rng = Rng::new(0);
    let model = if spec.trim_end().ends_with(".toml") {
        let text = fs::read_to_string(spec)
            .map_err(|error| format!("model file {spec}: cannot read: {error}"))?;
        Sequential::from_toml(&text, &mut rng)
            .map_err(|error| format!("model file {spec}: {error}"))?
    } else {
        Sequential::from_spec(spec, &mut rng).map_err(|error| format!("model: {error}"))?
    };
    let linears: Vec<_> = model
        .layers()
        .iter()
        .filter_map(|layer| match layer {
            Layer::Linear(linear) => Some(linear),
            _ => None,
        })
        .collect();
    let first_is_linear = matches!(model.layers().first(), Some(Layer::Linear(_)));
    if let (true, Some(first)) = (first_is_linear, linears.first()) {
        if first.in_features() != dataset.dim {
            return Err(UsageError(format!(
                "model {spec}: takes {} inputs but the data ({}) has {} features per example",
                first.in_features(),
                dataset.name,
                dataset.dim
            )));
        }
    }
    if let Some(last) = linears.last() {
        if last.out_features() < dataset.classes as usize {
            return Err(UsageError(format!(
                "model {spec}: has {} outputs but the data ({}) has {} classes",
                last.out_features(),
                dataset.name,
                dataset.classes
            )));
        }
    }
    Ok(())
}

/// An output file's folder must exist and its name end in `.extension`.
fn check_output_path(option: &str, path: &Path, extension: &str) -> Result<(), UsageError> {
    let named = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case(extension));
    if !named {
        return Err(UsageError(format!(
            "{option} {}: the file name should end in .{extension}",
            path.display()
        )));
    }
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.is_dir() {
            return Err(UsageError(format!(
                "{option} {}: the folder {} does not exist",
                path.display(),
                parent.display()
            )));
        }
    }
    // Opened for appending (and removed again if it was created), so that
    // a read-only folder, a permission or a path that is a folder is found
    // now rather than after the training it would lose.
    let existed = path.exists();
    match fs::OpenOptions::new().append(true).create(true).open(path) {
        Ok(_) => {
            if !existed {
                let _ = fs::remove_file(path);
            }
            Ok(())
        }
        Err(error) => {
            Err(UsageError(format!("{option} {}: cannot be written: {error}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(parse_schedule("constant"), Ok(ScheduleArg::Constant));
        assert_eq!(
            parse_schedule("step:30:0.5"),
            Ok(ScheduleArg::Step { step_size: 30, gamma: 0.5 })
        );
        assert_eq!(parse_schedule("cosine:10"), Ok(ScheduleArg::Cosine { warmup_steps: 10 }));
        assert!(parse_schedule("step:x:0.5").unwrap_err().contains("SIZE"));
        assert!(parse_schedule("linear").unwrap_err().contains("cosine:WARMUP"));
    }

    #[test]
    fn data_format_is_chosen_by_name_and_colon() {
        assert_eq!(parse_data("digits").unwrap().source, DataSource::Digits);
        let csv = parse_data("a/b.csv.gz").unwrap();
        assert_eq!(csv.source, DataSource::Csv { path: "a/b.csv.gz".into(), scale: 1.0 });
        assert!(csv.description.contains(".csv extension"));
        let idx = parse_data("i.idx.gz:l.idx.gz").unwrap();
        assert_eq!(
            idx.source,
            DataSource::Idx { images: "i.idx.gz".into(), labels: "l.idx.gz".into() }
        );
        assert!(parse_data("train-images-idx3-ubyte").unwrap_err().0.contains("labels"));
        assert!(parse_data(":l.idx").is_err());
    }

    #[test]
    fn total_steps_counts_the_short_last_batch() {
        let config = TrainConfig { epochs: 3, batch_size: 64, ..TrainConfig::default() };
        let digits = zbmd_ml::data::digits();
        // 1,797 rows, 20% held out per class (rounded): 1,437 or so train rows.
        let test: usize =
            digits.class_counts().iter().map(|&c| (c as f64 * 0.2).round() as usize).sum();
        let train = digits.len() - test;
        assert_eq!(total_steps(&config, &digits), Ok(3 * train.div_ceil(64) as u64));
        let endless = TrainConfig { epochs: 802_032_351_030_850_071, ..config };
        assert!(total_steps(&endless, &digits).unwrap_err().contains("more than the"));
        let (split_train, _) = digits.split(0.2, 42).unwrap();
        assert_eq!(split_train.len(), train, "the count must match Dataset::split's");
    }
}
