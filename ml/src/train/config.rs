//! What a training run is told: model, data, optimization, checkpoints and
//! faults. Serde-readable, so a TOML file holds the same settings as the
//! command line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::optim::{LrSchedule, OptimizerConfig, SgdConfig};

/// Where the training data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// The embedded UCI digits (1,797 8×8 images, 10 classes), pixels
    /// scaled to [0, 1].
    Digits,
    /// A CSV file: one row per example, the label in the last column, pixels
    /// or features in the others (scaled by `scale`).
    Csv {
        /// The file (`.gz` or plain).
        path: PathBuf,
        /// Each feature is divided by this (1 leaves them).
        #[serde(default = "one")]
        scale: f32,
    },
    /// IDX files (the MNIST format), features divided by 255.
    Idx {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
    },
}

fn one() -> f32 {
    1.0
}

/// Where a fault is injected during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    /// The model actor crashes in the middle of a step.
    Model,
    /// The optimizer actor crashes before applying a step.
    Optimizer,
    /// The data loader actor crashes while producing a batch.
    Loader,
    /// The checkpointer crashes while writing.
    Checkpointer,
    /// The model's device is lost (the model actor moves to another device).
    DeviceLost,
    /// The model's device runs out of memory (the micro-batch is halved).
    DeviceOom,
    /// The metrics actor crashes while recording a step's loss (the curve
    /// it loses is restored from the driver's at the epoch's end).
    Metrics,
}

impl FaultTarget {
    /// Every target a fault can be injected into.
    pub const ALL: [FaultTarget; 7] = [
        FaultTarget::Model,
        FaultTarget::Optimizer,
        FaultTarget::Loader,
        FaultTarget::Checkpointer,
        FaultTarget::Metrics,
        FaultTarget::DeviceLost,
        FaultTarget::DeviceOom,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultTarget::Model => "model",
            FaultTarget::Optimizer => "optimizer",
            FaultTarget::Loader => "loader",
            FaultTarget::Checkpointer => "checkpointer",
            FaultTarget::DeviceLost => "device_lost",
            FaultTarget::DeviceOom => "device_oom",
            FaultTarget::Metrics => "metrics",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(name: &str) -> Option<FaultTarget> {
        FaultTarget::ALL.into_iter().find(|target| target.name() == name.trim())
    }
}

/// The most faults one schedule holds: each injected fault restarts up to
/// five actors, and the training supervisor's restart intensity grows with
/// the schedule; ten thousand is far more than any test or soak plans.
pub const FAULTS_MAX: usize = 10_000;

/// Faults to inject: each `(target, step)` fires once, when that step is
/// first attempted (a step retried after recovery runs clean). Steps count
/// from 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSchedule {
    /// The faults, in any order.
    pub at: Vec<(FaultTarget, u64)>,
}

impl FaultSchedule {
    /// Parses `model@10,optimizer@25,device_lost@40` (targets as
    /// [`FaultTarget::name`] spells them, `@` the step).
    pub fn parse(text: &str) -> Result<FaultSchedule, ConfigError> {
        let mut at = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            if at.len() == FAULTS_MAX {
                return Err(ConfigError::ScheduleTooLong);
            }
            let item_owned = || item.to_owned();
            let (target, step) = item
                .split_once('@')
                .ok_or_else(|| ConfigError::FaultSyntax { item: item_owned() })?;
            let target = FaultTarget::parse(target).ok_or_else(|| {
                let names: Vec<&str> = FaultTarget::ALL.iter().map(|t| t.name()).collect();
                ConfigError::UnknownTarget {
                    item: item_owned(),
                    target: target.to_owned(),
                    names: names.join(", "),
                }
            })?;
            let step = step
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&step| step > 0)
                .ok_or_else(|| ConfigError::FaultStep { item: item_owned() })?;
            at.push((target, step));
        }
        Ok(FaultSchedule { at })
    }
}

/// Why a run's settings are refused. Each message names the setting (and,
/// for a fault, the entry) and what it must be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A settings file that is not TOML of these settings.
    #[error("{0}")]
    Toml(String),
    /// A `--faults` text with more than [`FAULTS_MAX`] entries.
    #[error("more than {FAULTS_MAX} faults: a schedule holds at most that")]
    ScheduleTooLong,
    /// A schedule built in code with more than [`FAULTS_MAX`] entries.
    #[error("faults: more than {FAULTS_MAX} (a schedule holds at most that)")]
    TooManyFaults,
    /// A fault entry that is not `TARGET@STEP`.
    #[error("fault {item:?}: expected TARGET@STEP, e.g. model@10")]
    FaultSyntax {
        /// The entry as written.
        item: String,
    },
    /// A fault entry whose target is not one of [`FaultTarget::ALL`].
    #[error("fault {item:?}: unknown target {target:?} (one of {names})")]
    UnknownTarget {
        /// The entry as written.
        item: String,
        /// The target as written.
        target: String,
        /// The targets there are, comma-separated.
        names: String,
    },
    /// A fault entry whose step is not a positive integer.
    #[error("fault {item:?}: the step must be a positive integer")]
    FaultStep {
        /// The entry as written.
        item: String,
    },
    /// `epochs` or `batch_size` of 0.
    #[error("epochs and batch_size must be at least 1")]
    Empty,
    /// More epochs than a run may have steps.
    #[error("epochs ({epochs}) is above the {TOTAL_STEPS_MAX} steps a run may have")]
    TooManyEpochs {
        /// The epochs asked for.
        epochs: u64,
    },
    /// A test fraction outside `[0, 1)`.
    #[error("test_fraction must be in [0, 1), is {0}")]
    TestFraction(f64),
    /// A batch that is not a whole number of gradient chunks.
    #[error("batch_size ({batch_size}) must be a multiple of grad_chunk ({grad_chunk})")]
    GradChunk {
        /// The batch size.
        batch_size: usize,
        /// The gradient chunk.
        grad_chunk: usize,
    },
    /// An interval or count of 0.
    #[error("snapshot_every, checkpoint_every and keep_checkpoints must be at least 1")]
    ZeroInterval,
    /// `resume` without a checkpoint directory.
    #[error("resume needs a checkpoint_dir")]
    ResumeWithoutDir,
    /// A learning-rate schedule that does not make sense.
    #[error("{0}")]
    Schedule(String),
    /// More steps than [`TOTAL_STEPS_MAX`].
    #[error(
        "epochs: {epochs} epochs of {batches_per_epoch} steps is more than the \
         {TOTAL_STEPS_MAX} steps a run may have (the loss curve is kept whole, in \
         memory and in every checkpoint)"
    )]
    TooManySteps {
        /// The epochs asked for.
        epochs: u64,
        /// Steps an epoch.
        batches_per_epoch: u64,
    },
    /// A fault planned past the run's last step.
    #[error("fault {target}@{step}: the run has only {total_steps} steps")]
    FaultPastEnd {
        /// The fault's target, by name.
        target: &'static str,
        /// Its step.
        step: u64,
        /// The run's steps.
        total_steps: u64,
    },
    /// A checkpointer fault in a run that writes no checkpoint.
    #[error("fault {target}@{step}: no checkpoint is written without a checkpoint_dir")]
    FaultWithoutCheckpoints {
        /// The fault's target, by name.
        target: &'static str,
        /// Its step.
        step: u64,
    },
    /// A checkpointer fault at a step where no checkpoint is written.
    #[error(
        "fault {target}@{step}: no checkpoint is written at step {step} (one every {every} \
         steps, and at the last step, {total_steps})"
    )]
    FaultOffCheckpoint {
        /// The fault's target, by name.
        target: &'static str,
        /// Its step.
        step: u64,
        /// Steps between checkpoints.
        every: u64,
        /// The run's steps.
        total_steps: u64,
    },
}

impl FaultSchedule {}

/// What a run does when a checkpoint cannot be written, even after its
/// retries (a full disk, a directory that became read-only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointFailure {
    /// Warn, keep training (a later checkpoint may succeed once space is
    /// freed), and end the run with an error listing the checkpoints that
    /// are missing: never a success with checkpoints missing.
    #[default]
    Continue,
    /// Stop the run at the step whose checkpoint failed.
    Stop,
}

/// The most steps a run may have: the driver keeps the whole loss curve, in
/// memory and in every checkpoint (8 bytes a step with its epoch), so 10^8
/// steps is 800 MB a checkpoint, already more than any run here needs.
pub const TOTAL_STEPS_MAX: u64 = 100_000_000;

/// Everything a training run needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The model: a `[in, hidden..., out]` spec, or a TOML file's path
    /// (`model = "model.toml"`, see [`crate::nn::Sequential::from_toml`]).
    pub model: String,
    /// The data.
    pub data: DataSource,
    /// Fraction of the data held out for the accuracy figure.
    pub test_fraction: f64,
    /// Passes over the training set.
    pub epochs: u64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// The smallest unit gradients are computed over: a micro-batch is a
    /// whole number of these, so halving the micro-batch (after an
    /// out-of-memory) leaves every step's result bit-identical as long as
    /// the micro-batch stays a multiple of it. `0` means the whole batch
    /// (fastest; a halved micro-batch then changes rounding).
    pub grad_chunk: usize,
    /// The optimizer and its settings.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule; `None` keeps the optimizer's own rate.
    pub schedule: Option<LrSchedule>,
    /// Seeds initialisation, shuffling, the split and dropout.
    pub seed: u64,
    /// `cpu`, `vulkan`, `cuda` or `rocm`: the backend whose devices run the
    /// model (`None`: the best found, a hardware accelerator before the
    /// CPU). On an accelerator the model's matrix products run on the GPU
    /// layer's kernel actors; on the CPU, in the model actor.
    pub backend: Option<String>,
    /// Runs the model's matrix products on kernel actors on the CPU backend
    /// too (over two logical CPU devices): the path an accelerator takes,
    /// with a message round trip per product.
    pub kernel_actors: bool,
    /// Where checkpoints go (`None`: no checkpoints on disk).
    pub checkpoint_dir: Option<PathBuf>,
    /// Steps between checkpoints on disk.
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Steps between in-memory snapshots (recovery from a crash replays at
    /// most this many steps, without reading the disk).
    pub snapshot_every: u64,
    /// Resume from the newest valid checkpoint of this run in
    /// `checkpoint_dir` (one written with the same model, data and
    /// settings; `epochs` may differ).
    pub resume: bool,
    /// Lets the run write into a `checkpoint_dir` that holds other runs'
    /// checkpoints (which it never resumes from nor deletes); without it
    /// such a directory is refused.
    pub allow_other_runs: bool,
    /// What to do when a checkpoint cannot be written after its retries.
    pub on_checkpoint_failure: CheckpointFailure,
    /// Faults to inject.
    pub faults: FaultSchedule,
    /// Writes the final parameters here (safetensors, PyTorch names).
    pub save_params: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "[64, 128, 10]".into(),
            data: DataSource::Digits,
            test_fraction: 0.2,
            epochs: 20,
            batch_size: 64,
            grad_chunk: 0,
            optimizer: OptimizerConfig::Sgd(SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..SgdConfig::default()
            }),
            schedule: None,
            seed: 42,
            backend: None,
            kernel_actors: false,
            checkpoint_dir: None,
            checkpoint_every: 100,
            keep_checkpoints: 3,
            snapshot_every: 1,
            resume: false,
            allow_other_runs: false,
            on_checkpoint_failure: CheckpointFailure::Continue,
            faults: FaultSchedule::default(),
            save_params: None,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file of these settings (any left out keep their default).
    pub fn from_toml(text: &str) -> Result<TrainConfig, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Toml(error.to_string()))
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.faults.at.len() > FAULTS_MAX {
            return Err(ConfigError::TooManyFaults);
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(ConfigError::Empty);
        }
        if self.epochs > TOTAL_STEPS_MAX {
            return Err(ConfigError::TooManyEpochs { epochs: self.epochs });
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(ConfigError::TestFraction(self.test_fraction));
        }
        if self.grad_chunk > 0 && self.batch_size % self.grad_chunk != 0 {
            let (batch_size, grad_chunk) = (self.batch_size, self.grad_chunk);
            return Err(ConfigError::GradChunk { batch_size, grad_chunk });
        }
        if self.snapshot_every == 0 || self.checkpoint_every == 0 || self.keep_checkpoints == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(ConfigError::ResumeWithoutDir);
        }
        if let Some(schedule) = &self.schedule {
            schedule.validate().map_err(|error| ConfigError::Schedule(error.to_string()))?;
        }
        Ok(())
    }

    /// The run's optimizer steps with `batches_per_epoch` batches an epoch,
    /// or why there would be too many ([`TOTAL_STEPS_MAX`]).
    pub fn total_steps(&self, batches_per_epoch: u64) -> Result<u64, ConfigError> {
        batches_per_epoch
            .checked_mul(self.epochs)
            .filter(|&steps| steps <= TOTAL_STEPS_MAX)
            .ok_or(ConfigError::TooManySteps { epochs: self.epochs, batches_per_epoch })
    }

    /// Checks that every planned fault can fire in a run of `total_steps`
    /// steps: one past the run's end, or aimed at a checkpoint that is never
    /// written, would silently not happen.
    pub fn check_faults(&self, total_steps: u64) -> Result<(), ConfigError> {
        for &(target, step) in &self.faults.at {
            let name = target.name();
            if step > total_steps {
                return Err(ConfigError::FaultPastEnd { target: name, step, total_steps });
            }
            if target != FaultTarget::Checkpointer {
                continue;
            }
            if self.checkpoint_dir.is_none() {
                return Err(ConfigError::FaultWithoutCheckpoints { target: name, step });
            }
            if step % self.checkpoint_every != 0 && step != total_steps {
                let every = self.checkpoint_every;
                return Err(ConfigError::FaultOffCheckpoint {
                    target: name,
                    step,
                    every,
                    total_steps,
                });
            }
        }
        Ok(())
    }
}
