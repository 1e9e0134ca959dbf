//! Training under supervision: a run that survives crashes and device
//! faults without losing or repeating a step (`docs/training.md`).
//!
//! ```text
//!                       training supervisor (rest_for_one)
//!    ┌───────────┬──────────┬────────────┬────────────┬──────────────┬─────────┐
//!   gpu        model     optimizer   data loader  checkpointer    metrics
//!  (kernel    (gradients (parameters, (batches,    (atomic files  (the loss
//!   actors)    on a       its state)   position)    on disk)       curve)
//!              device)
//!          ▲  driver: one step = batch → gradients → update → commit
//! ```
//!
//! The driver ([`train`]) runs each step through the actors and, once the
//! optimizer has applied it, *commits* it: every `snapshot_every` steps it
//! keeps an in-memory snapshot of everything that determines the rest of
//! the run (parameters, optimizer state, loader position, dropout RNG; the
//! loss curve stays with the driver), and every `checkpoint_every` steps
//! the checkpointer writes one to disk (atomically, checksummed, the last
//! K kept).
//!
//! Each actor owns its state (`actors`: one module each); what crosses
//! between them and the driver travels in messages, the snapshot included
//! (the protocol is written down once, in `commit.rs`). When an actor
//! crashes, its supervisor restarts it and the actors after it (OTP's
//! `rest_for_one`); the driver (`driver`: the tree's calls, the step
//! loop, recovery, checkpoints) then sends every stateful actor the newest
//! snapshot and replays the steps since. Planned faults (`--faults`) are a
//! `zbmd_rt::fault` plan, one site per target, keyed by step. Each step is a pure
//! function of the snapshot it starts from, so the replayed steps give the
//! same bits and the run ends with parameters bit-identical to an
//! unfaulted run (tested). On an accelerator (or with `kernel_actors`) the
//! model's matrix products are jobs for the GPU supervisor's kernel
//! actors, the tree's first child: a lost device moves the kernel actor to
//! the next healthy device and the product is sent again. On the host, a
//! lost device makes the model actor crash and restart on the other logical
//! device. Either way an out-of-memory halves the micro-batch, gradients
//! being summed over `grad_chunk`-sized pieces so that the result stays
//! bit-identical. A run killed outright resumes from the newest valid
//! checkpoint on disk with `resume`.

pub(crate) mod actors;
mod commit;
pub mod config;
mod driver;
pub mod report;
mod resume;

use std::sync::Arc;
use std::time::Instant;

use zbmd_gpu::GpuPool;
use zbmd_gpu::health::{HealthPolicy, HealthRegistry};
use zbmd_rt::supervisor::{ChildSpec, Supervisor};
use zbmd_rt::{Runtime, RuntimeError};

use crate::checkpoint::{Checkpoint, NamedArray};
use crate::data::{Dataset, LoaderPosition, Normalize};
use crate::rng::Rng;
use crate::tensor::PoolMatmul;
use actors::Faults;
use actors::devices::{Devices, check_products};
use actors::model::{ModelSetup, Products};
use commit::{Committed, Layout};
pub use config::{
    CheckpointFailure, ConfigError, DataSource, FAULTS_MAX, FaultSchedule, FaultTarget,
    TOTAL_STEPS_MAX, TrainConfig,
};
use driver::tree::Tree;
use driver::{Driver, Start};
pub use report::{EpochInfo, Observer, RecoveryInfo, Silent, StepInfo, TrainReport};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is wrong.
    #[error("config: {0}")]
    Config(String),
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The model could not be built or saved.
    #[error(transparent)]
    Model(#[from] crate::nn::ModelError),
    /// The run could not recover from a failure.
    #[error("training failed: {0}")]
    Failed(String),
    /// The loss or the parameters stopped being finite: a step that is
    /// replayed gives the same bits, so no recovery can help.
    #[error(
        "training diverged at step {step}: {what}; lower the learning rate (or add a schedule \
         with warmup); the last committed state is that of step {committed}"
    )]
    Diverged {
        /// The step whose loss or update was not finite.
        step: u64,
        /// What was found ("the loss is NaN (2.31 at step 11)").
        what: String,
        /// The newest step whose state is whole (in memory, and on disk up
        /// to the last checkpoint).
        committed: u64,
    },
    /// A checkpoint could not be written after its retries, and the run
    /// was told to stop (`CheckpointFailure::Stop`).
    #[error("the checkpoint of step {step} could not be written: {error}; {newest}")]
    CheckpointFailed {
        /// The step.
        step: u64,
        /// Each attempt's failure.
        error: String,
        /// Where the newest checkpoint on disk is, said as a sentence.
        newest: String,
    },
    /// The caller asked the run to stop ([`Observer::stop_requested`]): it
    /// finished its step in flight and wrote a checkpoint of it.
    #[error("stopped by {reason} after step {step}: {}", match (checkpoint, save_error) {
        (Some(path), _) => format!("checkpoint written to {}; resume continues from it", path.display()),
        (None, Some(error)) => format!("its checkpoint could not be written: {error}"),
        (None, None) => "no checkpoint written (the run has no checkpoint_dir)".to_string(),
    })]
    Interrupted {
        /// Why (`"SIGTERM"`).
        reason: String,
        /// The last step completed.
        step: u64,
        /// The checkpoint of that step.
        checkpoint: Option<std::path::PathBuf>,
        /// Why there is none, when the save failed.
        save_error: Option<String>,
    },
    /// The run finished but its parameters could not be written to
    /// `save_params`; the report holds them.
    #[error("the run finished, but its parameters could not be written to {}: {error}", path.display())]
    SaveParams {
        /// The finished run.
        report: Box<TrainReport>,
        /// Where they were to go.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        error: Box<SaveParametersError>,
    },
}

/// A settings error as the run's.
fn config_error(error: ConfigError) -> TrainError {
    TrainError::Config(error.to_string())
}

/// Loads the configured data, scaled.
pub fn load_data(source: &DataSource) -> Result<Dataset, TrainError> {
    load_data_with_header(source).map(|(dataset, _)| dataset)
}

/// Loads the configured data, scaled, with the header a CSV file's first
/// row was taken for (so that a caller can say which row was not data).
pub fn load_data_with_header(
    source: &DataSource,
) -> Result<(Dataset, Option<Vec<String>>), TrainError> {
    let (mut dataset, header) = match source {
        DataSource::Digits => {
            let mut digits = crate::data::digits();
            digits.normalize(Normalize::Divide(16.0));
            return Ok((digits, None));
        }
        DataSource::Csv { path, .. } => {
            let data =
                crate::data::load_csv_with_header(path, &crate::data::CsvOptions::default())?;
            (data.dataset, data.header)
        }
        DataSource::Idx { images, labels } => (crate::data::load_idx(images, labels)?, None),
    };
    match source {
        DataSource::Csv { scale, .. } if *scale != 1.0 => {
            dataset.normalize(Normalize::Divide(*scale));
            // A tiny divisor can send finite features to infinity, which
            // would only show up as a diverged run.
            if let Some(at) = dataset.features.iter().position(|x| !x.is_finite()) {
                return Err(TrainError::Config(format!(
                    "data: divided by {scale:e} (the scale), feature {} of row {} becomes {}: \
                     use a larger divisor",
                    at % dataset.dim + 1,
                    at / dataset.dim + 1,
                    dataset.features[at]
                )));
            }
        }
        DataSource::Idx { .. } => {
            dataset.normalize(Normalize::Divide(255.0));
        }
        _ => {}
    }
    Ok((dataset, header))
}

/// Trains as `config` says, reporting to `observer`: checks and loads
/// everything a run needs, starts the tree, drives it, and writes the
/// parameters if asked.
pub fn train(config: &TrainConfig, observer: &mut dyn Observer) -> Result<TrainReport, TrainError> {
    config.validate().map_err(config_error)?;
    let devices = Devices::choose(config.backend.as_deref(), config.kernel_actors)
        .map_err(TrainError::Config)?;
    let started = Instant::now();
    let prepared = prepare(config, observer)?;
    let resumed_from = prepared.snapshot.step;
    let (gpu, products) = products(&devices)?;
    let faults = Faults::plan(&config.faults, config.seed)
        .map_err(|error| TrainError::Config(format!("faults: {error}")))?;
    let setup = Arc::new(ModelSetup {
        run: prepared.run.clone(),
        products: products.clone(),
        faulty: devices.faulty,
        faults: faults.clone(),
    });
    let rt = Runtime::builder().build().map_err(|error| match error {
        // A bad ZBMD_FAULT_INJECTION or ZBMD_IO_BACKEND: the user's to fix.
        RuntimeError::Config(_) | RuntimeError::Io(_) => TrainError::Config(error.to_string()),
        error => TrainError::Failed(error.to_string()),
    })?;
    let (notes, metrics_crashes) = std::sync::mpsc::channel();
    let tree = Tree::start(&rt, setup, gpu, config.faults.at.len(), notes)?;
    if let Products::Kernels { matmul, .. } = &products {
        if let Err(error) = check_products(matmul.as_ref()) {
            rt.shutdown();
            return Err(TrainError::Failed(error));
        }
    }
    let mut driver = Driver::new(Start {
        config,
        run: prepared.run,
        faults,
        tree,
        snapshot: prepared.snapshot,
        losses: prepared.losses,
        metrics_crashes,
        observer,
        total_steps: prepared.total_steps,
    });
    let result = driver.run(started, resumed_from);
    drop(driver);
    rt.shutdown();
    let report = result?;
    match &config.save_params {
        Some(path) => match save_parameters(config, &report, path) {
            Ok(()) => Ok(report),
            Err(error) => Err(TrainError::SaveParams {
                report: Box::new(report),
                path: path.clone(),
                error: Box::new(error),
            }),
        },
        None => Ok(report),
    }
}

/// What a run starts from: its settings, its snapshot and loss curve (a
/// checkpoint's, or step 0's), and its length.
struct Prepared {
    run: Arc<actors::RunSettings>,
    snapshot: Arc<Committed>,
    losses: Vec<f32>,
    total_steps: u64,
}

/// Loads the data and the model, checks the run's length and faults, opens
/// the checkpoint directory (locked and found writable before any step),
/// and finds where the run starts.
fn prepare(config: &TrainConfig, observer: &mut dyn Observer) -> Result<Prepared, TrainError> {
    let dataset = load_data(&config.data)?;
    let run = resume::run_identity(config, &dataset)?;
    let (train_set, test_set) = if config.test_fraction > 0.0 {
        dataset.split(config.test_fraction, config.seed)?
    } else {
        (dataset.clone(), dataset)
    };
    let model = actors::build_model(&config.model, config.seed)
        .map_err(|error| TrainError::Config(error.to_string()))?;
    let layout: Layout = model
        .parameters()
        .iter()
        .map(|(name, tensor)| ((*name).to_owned(), tensor.shape().to_vec()))
        .collect();
    let batches_per_epoch = (train_set.len() as u64).div_ceil(config.batch_size as u64);
    let total_steps = config.total_steps(batches_per_epoch).map_err(config_error)?;
    config.check_faults(total_steps).map_err(config_error)?;

    let check =
        resume::content_check(layout.clone(), config, train_set.len() as u64, batches_per_epoch);
    let store = resume::open_store(config, run, check)?;
    let checkpoint =
        resume::resume_point(store.as_deref(), config, total_steps, batches_per_epoch, observer)?
            .unwrap_or_else(|| initial_checkpoint(&model, config.seed));
    for &(target, step) in &config.faults.at {
        if step <= checkpoint.step {
            observer.on_warning(&format!(
                "fault {}@{step} will not fire: the run resumes after step {}",
                target.name(),
                checkpoint.step
            ));
        }
    }
    let (snapshot, losses) = Committed::from_checkpoint(&checkpoint, &layout)
        .map_err(|error| TrainError::Failed(format!("step {}: {error}", checkpoint.step)))?;
    let run = Arc::new(actors::RunSettings {
        model_spec: config.model.clone(),
        seed: config.seed,
        test: Arc::new(test_set),
        train: Arc::new(train_set),
        batch_size: config.batch_size,
        batches_per_epoch,
        grad_chunk: config.grad_chunk,
        optimizer: config.optimizer.clone(),
        schedule: config.schedule.clone(),
        store,
    });
    Ok(Prepared { run, snapshot: Arc::new(snapshot), losses, total_steps })
}

/// Where the model's products run: on kernel actors under a GPU supervisor
/// (the tree's first child), or on the host with a registry of the logical
/// devices that hold its activations.
fn products(devices: &Devices) -> Result<(Option<ChildSpec<Supervisor>>, Products), TrainError> {
    if devices.kernels {
        // One kernel actor: the model sends one product at a time, and all
        // of a step's products then run on the same device.
        let (spec, pool) = GpuPool::builder(devices.devices())
            .actors(1)
            .child_spec("gpu")
            .map_err(|error| TrainError::Config(error.to_string()))?;
        let pool = Arc::new(pool);
        let matmul = Arc::new(PoolMatmul::new(pool.clone()));
        Ok((Some(spec), Products::Kernels { pool, matmul }))
    } else {
        let registry = HealthRegistry::new(devices.devices(), HealthPolicy::default())
            .map_err(|error| TrainError::Config(error.to_string()))?;
        Ok((None, Products::Host { devices: Arc::new(registry) }))
    }
}

/// Writes a report's final parameters to `path` as safetensors, with
/// PyTorch's names (the model `config` describes, with the report's values).
pub fn save_parameters(
    config: &TrainConfig,
    report: &TrainReport,
    path: &std::path::Path,
) -> Result<(), SaveParametersError> {
    let mut model = actors::build_model(&config.model, config.seed)?;
    for ((_, tensor), (_, shape, data)) in
        model.parameters_mut().into_iter().zip(&report.parameters)
    {
        *tensor = crate::tensor::Tensor::from_vec(data.clone(), shape)?;
    }
    Ok(model.export_safetensors(path)?)
}

/// Why the model a run names could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelSpecError {
    /// An inline spec (`[64, 128, 10]`) is wrong.
    #[error(transparent)]
    Spec(crate::nn::ModelError),
    /// The model file could not be read.
    #[error("model file {path}: {source}")]
    Read {
        /// The file named.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The model file does not describe a model.
    #[error("model file {path}: {source}")]
    File {
        /// The file named.
        path: String,
        /// Why.
        source: crate::nn::ModelError,
    },
}

/// Why [`save_parameters`] could not write the parameters.
#[derive(Debug, thiserror::Error)]
pub enum SaveParametersError {
    /// The run's model could not be built again.
    #[error(transparent)]
    Model(#[from] ModelSpecError),
    /// A parameter of the report does not fit its layer.
    #[error(transparent)]
    Shape(#[from] crate::tensor::TensorError),
    /// The file could not be written.
    #[error(transparent)]
    Export(#[from] crate::nn::ModelError),
}

fn initial_checkpoint(model: &crate::nn::Sequential, seed: u64) -> Checkpoint {
    let tensors = model
        .parameters()
        .into_iter()
        .map(|(name, tensor)| {
            NamedArray::new(format!("param.{name}"), tensor.shape().to_vec(), tensor.to_vec_f32())
        })
        .collect();
    Checkpoint {
        step: 0,
        tensors,
        loader: LoaderPosition::default(),
        rng_state: Rng::new(seed).fork("dropout").state(),
        ..Checkpoint::default()
    }
}
