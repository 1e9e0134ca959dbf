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
//! When an actor crashes, its supervisor restarts it and the actors after
//! it (OTP's `rest_for_one`); the driver then restores *every* actor to the
//! newest snapshot and replays the steps since. Each step is a pure
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
pub mod report;
mod resume;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbmd_gpu::GpuPool;
use zbmd_gpu::health::{HealthPolicy, HealthRegistry};
use zbmd_rt::supervisor::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{AskError, ReplyTo, Runtime, RuntimeError};

use crate::checkpoint::{Checkpoint, NamedArray};
use crate::data::{Dataset, LoaderPosition, Normalize};
use crate::optim::OptimizerState;
use crate::rng::Rng;
use crate::tensor::PoolMatmul;
use commit::{Committed, Layout, Params};
pub use config::{
    CheckpointFailure, DataSource, FAULTS_MAX, FaultSchedule, FaultTarget, TOTAL_STEPS_MAX,
    TrainConfig,
};
pub use report::{EpochInfo, Observer, RecoveryInfo, Silent, StepInfo, TrainReport};

use actors::{
    CheckpointerActor, CheckpointerMsg, LoaderActor, LoaderMsg, LossCurve, MetricsActor,
    MetricsGap, MetricsMsg, ModelActor, ModelMsg, OptimizerActor, OptimizerMsg, Products, Shared,
    StepCursor,
};

/// How long the driver waits for one actor's answer: far above any step.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Attempts at writing one checkpoint before it counts as failed: enough
/// to ride out a checkpointer crash or a brief I/O error, few enough that a
/// disk that stays full costs the run well under a second each time.
const SAVE_ATTEMPTS: u32 = 3;
/// The pause after a failed attempt, times the attempt's number.
const SAVE_BACKOFF: Duration = Duration::from_millis(100);
/// Sends of one checkpoint in all: a request queued to a checkpointer that
/// was already crashing is dropped unseen and sent again without counting
/// as an attempt, but not forever.
const SAVE_SENDS_MAX: u32 = 3 * SAVE_ATTEMPTS;

/// How many times in a row one step may fail before the run gives up: a
/// failure that recovery does not cure (a batch the model cannot fit, a
/// device that keeps failing) is reported, not retried forever.
const MAX_FAILURES_PER_STEP: u32 = 3;

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
        error: String,
    },
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

/// The actors' refs, by role.
struct Tree {
    supervisor: zbmd_rt::supervisor::SupervisorRef,
    model: ChildRef<ModelMsg>,
    optimizer: ChildRef<OptimizerMsg>,
    loader: ChildRef<LoaderMsg>,
    checkpointer: ChildRef<CheckpointerMsg>,
    metrics: ChildRef<MetricsMsg>,
}

/// A call to a supervised actor failed: it crashed (or is restarting).
struct Crashed(FaultTarget, String);

impl Tree {
    /// Asks one actor, waiting through its restart after a crash; a
    /// crash during the request (or a supervisor that gave up) is `Crashed`.
    fn call<M: Send + 'static, R: Send + 'static>(
        &self,
        target: FaultTarget,
        child: &ChildRef<M>,
        mut request: impl FnMut(ReplyTo<R>) -> M,
    ) -> Result<R, Crashed> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            match child.call(&mut request, deadline.saturating_duration_since(Instant::now())) {
                Ok(answer) => return Ok(answer),
                // Between a crash and the restart: wait for the new
                // incarnation, unless no supervisor is left to make one.
                Err(AskError::NoProc | AskError::Full) if Instant::now() < deadline => {
                    if !self.supervisor.is_alive() {
                        let reason =
                            "the training supervisor gave up (its restart intensity was reached)";
                        return Err(Crashed(target, reason.into()));
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(error) => return Err(Crashed(target, error.to_string())),
            }
        }
    }
}

/// Trains as `config` says, reporting to `observer`.
pub fn train(config: &TrainConfig, observer: &mut dyn Observer) -> Result<TrainReport, TrainError> {
    config.validate().map_err(TrainError::Config)?;
    let devices = actors::Devices::choose(config.backend.as_deref(), config.kernel_actors)
        .map_err(TrainError::Config)?;
    let started = Instant::now();
    let dataset = load_data(&config.data)?;
    let run = resume::run_identity(config, &dataset)?;
    let (train_set, test_set) = if config.test_fraction > 0.0 {
        dataset.split(config.test_fraction, config.seed)?
    } else {
        (dataset.clone(), dataset)
    };
    let model = actors::build_model(&config.model, config.seed).map_err(TrainError::Config)?;
    let layout: Layout = model
        .parameters()
        .iter()
        .map(|(name, tensor)| ((*name).to_owned(), tensor.shape().to_vec()))
        .collect();
    let batches_per_epoch = (train_set.len() as u64).div_ceil(config.batch_size as u64);
    let total_steps = config.total_steps(batches_per_epoch).map_err(TrainError::Config)?;
    config.check_faults(total_steps).map_err(TrainError::Config)?;

    // Where the checkpoints go (the directory locked and found writable
    // before any step) and where the run starts: a checkpoint, or step 0.
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
    drop(checkpoint);
    let resumed_from = snapshot.step;
    let snapshot = Arc::new(snapshot);

    let (gpu, products) = if devices.kernels {
        // One kernel actor: the model sends one product at a time, and all
        // of a step's products then run on the same device.
        let (spec, pool) = GpuPool::builder(devices.devices())
            .actors(1)
            .child_spec("gpu")
            .map_err(|error| TrainError::Config(error.to_string()))?;
        let pool = Arc::new(pool);
        let matmul = Arc::new(PoolMatmul::new(pool.clone()));
        (Some(spec), Products::Kernels { pool, matmul })
    } else {
        let registry = HealthRegistry::new(devices.devices(), HealthPolicy::default())
            .map_err(TrainError::Config)?;
        (None, Products::Host { devices: Arc::new(registry) })
    };
    let shared = Arc::new(Shared {
        snapshot: Mutex::new(snapshot.clone()),
        faults: Mutex::new(config.faults.at.clone()),
        model_spec: config.model.clone(),
        seed: config.seed,
        test: Arc::new(test_set),
        train: Arc::new(train_set),
        batch_size: config.batch_size,
        batches_per_epoch,
        grad_chunk: config.grad_chunk,
        optimizer: config.optimizer.clone(),
        schedule: config.schedule.clone(),
        products,
        faulty: devices.faulty,
        store,
        crash: Mutex::new(None),
        metrics_crash: Mutex::new(Vec::new()),
    });
    let rt = Runtime::builder().build().map_err(|error| match error {
        // A bad ZBMD_FAULT_INJECTION or ZBMD_IO_BACKEND: the user's to fix.
        RuntimeError::Config(_) | RuntimeError::Io(_) => TrainError::Config(error.to_string()),
        error => TrainError::Failed(error.to_string()),
    })?;
    let tree = start_tree(&rt, &shared, gpu, config.faults.at.len())?;
    if let Products::Kernels { matmul, .. } = &shared.products {
        if let Err(error) = actors::check_products(matmul.as_ref()) {
            rt.shutdown();
            return Err(TrainError::Failed(error));
        }
    }

    let mut driver = Driver {
        config,
        shared: shared.clone(),
        tree,
        params: snapshot.params.clone(),
        snapshot,
        spare_state: None,
        losses,
        recoveries: Vec::new(),
        pending: None,
        observer,
        total_steps,
        batches_per_epoch,
        history: Vec::new(),
        device: String::new(),
        stopping: None,
        last_checkpoint: None,
        checkpoint_failures: Vec::new(),
    };
    let result = driver.run(started, resumed_from);
    drop(driver);
    rt.shutdown();
    let report = result?;
    match &config.save_params {
        Some(path) => match save_parameters(config, &report, path) {
            Ok(()) => Ok(report),
            Err(error) => {
                Err(TrainError::SaveParams { report: Box::new(report), path: path.clone(), error })
            }
        },
        None => Ok(report),
    }
}

/// Writes a report's final parameters to `path` as safetensors, with
/// PyTorch's names (the model `config` describes, with the report's values).
pub fn save_parameters(
    config: &TrainConfig,
    report: &TrainReport,
    path: &std::path::Path,
) -> Result<(), String> {
    let mut model = actors::build_model(&config.model, config.seed)?;
    for ((_, tensor), (_, shape, data)) in
        model.parameters_mut().into_iter().zip(&report.parameters)
    {
        *tensor = crate::tensor::Tensor::from_vec(data.clone(), shape)
            .map_err(|error| error.to_string())?;
    }
    model.export_safetensors(path).map_err(|error| error.to_string())
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

/// The training supervisor: `rest_for_one` over the GPU supervisor (when
/// the products run on kernel actors), model, optimizer, data loader,
/// checkpointer and metrics, each depending on those before it.
fn start_tree(
    rt: &Runtime,
    shared: &Arc<Shared>,
    gpu: Option<ChildSpec<Supervisor>>,
    faults: usize,
) -> Result<Tree, TrainError> {
    let model = {
        let shared = shared.clone();
        ChildSpec::worker("model", move || ModelActor::new(shared.clone()))
    };
    let optimizer = {
        let shared = shared.clone();
        ChildSpec::worker("optimizer", move || OptimizerActor::new(shared.clone()))
    };
    let loader = {
        let shared = shared.clone();
        ChildSpec::worker("loader", move || LoaderActor {
            shared: shared.clone(),
            loader: None,
            at: StepCursor::restored(0),
        })
    };
    let checkpointer = {
        let shared = shared.clone();
        ChildSpec::worker("checkpointer", move || CheckpointerActor { shared: shared.clone() })
    };
    let metrics = {
        let shared = shared.clone();
        // Every incarnation after the first replaces one.
        let started = AtomicBool::new(false);
        ChildSpec::worker("metrics", move || MetricsActor {
            shared: shared.clone(),
            curve: LossCurve::new(started.swap(true, Ordering::Relaxed)),
        })
    };
    let refs = (
        model.child_ref(),
        optimizer.child_ref(),
        loader.child_ref(),
        checkpointer.child_ref(),
        metrics.child_ref(),
    );
    // Every injected fault restarts up to five actors; leave room for them
    // all, and for a few real ones, before the tree gives up.
    let restarts = 5 * (faults as u32 + 4);
    let mut spec = SupervisorSpec::rest_for_one().intensity(restarts, Duration::from_secs(60));
    if let Some(gpu) = gpu {
        spec = spec.child(gpu);
    }
    let spec = spec.child(model).child(optimizer).child(loader).child(checkpointer).child(metrics);
    let supervisor =
        Supervisor::start(rt, spec).map_err(|error| TrainError::Failed(error.to_string()))?;
    let (model, optimizer, loader, checkpointer, metrics) = refs;
    Ok(Tree { supervisor, model, optimizer, loader, checkpointer, metrics })
}

struct Driver<'a> {
    config: &'a TrainConfig,
    shared: Arc<Shared>,
    tree: Tree,
    /// The newest committed state.
    snapshot: Arc<Committed>,
    /// The optimizer state of the snapshot before, for the next one to
    /// overwrite.
    spare_state: Option<OptimizerState>,
    /// The parameters after the last completed step.
    params: Params,
    /// Every completed step's loss (the first `snapshot.step` committed).
    losses: Vec<f32>,
    recoveries: Vec<RecoveryInfo>,
    /// The failure being recovered from, until its step completes again.
    pending: Option<Pending>,
    observer: &'a mut dyn Observer,
    total_steps: u64,
    batches_per_epoch: u64,
    history: Vec<EpochInfo>,
    device: String,
    /// Why the caller asked the run to stop, once it has.
    stopping: Option<String>,
    /// The newest checkpoint written: its step and file.
    last_checkpoint: Option<(u64, PathBuf)>,
    /// The checkpoints that could not be written, and why.
    checkpoint_failures: Vec<(u64, String)>,
}

/// Why a step did not complete.
enum StepError {
    /// An actor crashed: restore and replay.
    Crashed(Crashed),
    /// The run ends here.
    Stop(TrainError),
}

impl From<Crashed> for StepError {
    fn from(crashed: Crashed) -> Self {
        StepError::Crashed(crashed)
    }
}

/// A failure being recovered from.
struct Pending {
    target: FaultTarget,
    /// The step that failed.
    step: u64,
    /// The snapshot the tree was restored from.
    restored_from: u64,
    since: Instant,
    error: String,
}

/// The state a step leaves, before it is committed.
struct Progress {
    step: u64,
    loader: LoaderPosition,
    rng_state: u64,
}

impl Driver<'_> {
    fn run(&mut self, started: Instant, resumed_from: u64) -> Result<TrainReport, TrainError> {
        let mut progress = Progress {
            step: self.snapshot.step,
            loader: self.snapshot.loader,
            rng_state: self.snapshot.rng_state,
        };
        if !self.losses.is_empty() {
            self.restore_metrics().map_err(|Crashed(_, error)| {
                TrainError::Failed(format!("the metrics actor could not restore: {error}"))
            })?;
        }
        let mut examples = 0u64;
        // The step that failed last, and how many times in a row.
        let mut failures = (0u64, 0u32);
        while progress.step < self.total_steps {
            match self.step(&mut progress, &mut examples, started) {
                Ok(()) => {}
                Err(StepError::Stop(error)) => return Err(error),
                Err(StepError::Crashed(Crashed(target, error))) => {
                    // The actor says why it crashed, if it could.
                    let (target, error) = self.shared.take_crash().unwrap_or((target, error));
                    let failed = progress.step + 1;
                    failures =
                        if failures.0 == failed { (failed, failures.1 + 1) } else { (failed, 1) };
                    if failures.1 > MAX_FAILURES_PER_STEP {
                        return Err(TrainError::Failed(format!(
                            "step {failed} failed {} times in a row, the last in the {} actor: {error}",
                            failures.1,
                            target.name()
                        )));
                    }
                    if self.pending.is_none() && error.ends_with(StepCursor::RESTARTED_LATE) {
                        // The echo of a failure recovered and reported
                        // already: restored again, not a fault of its own.
                        tracing::info!(step = failed, actor = target.name(), %error, "restoring again");
                    } else if let Some(pending) = &self.pending {
                        tracing::info!(
                            step = failed,
                            actor = target.name(),
                            %error,
                            "failed again while recovering from the {} failure of step {}",
                            pending.target.name(),
                            pending.step
                        );
                    } else {
                        self.pending = Some(Pending {
                            target,
                            step: failed,
                            restored_from: self.snapshot.step,
                            since: Instant::now(),
                            error,
                        });
                    }
                    self.restore(&mut progress)?;
                }
            }
        }
        self.warn_unfired(resumed_from);
        let (test_loss, test_accuracy) = self.evaluate()?;
        let wall_time = started.elapsed();
        let steps = progress.step;
        let params = self
            .params
            .iter()
            .map(|array| (array.name.clone(), array.shape.clone(), array.data.clone()));
        Ok(TrainReport {
            steps,
            resumed_from,
            epochs: steps / self.batches_per_epoch,
            history: std::mem::take(&mut self.history),
            losses: self.losses[resumed_from as usize..].to_vec(),
            test_accuracy,
            test_loss,
            wall_time,
            steps_per_sec: (steps - resumed_from) as f64 / wall_time.as_secs_f64().max(1e-9),
            faults_injected: self.config.faults.at.len() as u64
                - self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
            recoveries: std::mem::take(&mut self.recoveries),
            device: self.device.clone(),
            parameters: params.collect(),
            last_checkpoint: self.last_checkpoint.take(),
            checkpoint_failures: std::mem::take(&mut self.checkpoint_failures),
        })
    }

    /// Says which planned faults never fired. A metrics fault rides on its
    /// step's loss record, which the driver sends without waiting: a record
    /// sent while the metrics actor restarts (after another fault) is lost,
    /// and its fault with it.
    fn warn_unfired(&mut self, resumed_from: u64) {
        let unfired: Vec<(FaultTarget, u64)> =
            self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (target, step) in unfired {
            if step > resumed_from {
                self.observer.on_warning(&format!(
                    "fault {}@{step} did not fire: the request it rides on never reached the \
                     actor (it was restarting after another fault)",
                    target.name()
                ));
            }
        }
    }

    /// Runs one step and commits it.
    fn step(
        &mut self,
        progress: &mut Progress,
        examples: &mut u64,
        started: Instant,
    ) -> Result<(), StepError> {
        let step = progress.step + 1;
        if self.stopping.is_none() {
            self.stopping = self.observer.stop_requested();
        }
        let (batch, loader_after) = self
            .tree
            .call(FaultTarget::Loader, &self.tree.loader, |reply| LoaderMsg::Next { step, reply })?
            .map_err(|error| Crashed(FaultTarget::Loader, error))?;
        let epoch = batch.epoch;
        let grads = self
            .tree
            .call(FaultTarget::Model, &self.tree.model, |reply| ModelMsg::Compute {
                step,
                params: self.params.clone(),
                batch: batch.clone(),
                rng_state: progress.rng_state,
                reply,
            })?
            .map_err(|error| Crashed(FaultTarget::Model, error))?;
        for (target, action, recovery_time) in &grads.events {
            let recovery = RecoveryInfo {
                target: *target,
                step,
                action: action.clone(),
                recovery_time: *recovery_time,
            };
            self.observer.on_recovery(&recovery);
            self.recoveries.push(recovery);
        }
        self.device = grads.device.clone();
        let loss = grads.loss;
        if !loss.is_finite() {
            let before = match self.losses.get(step as usize - 2) {
                Some(before) => format!(" ({before} at step {})", step - 1),
                None => String::new(),
            };
            return Err(self.diverged(step, format!("the loss is {loss}{before}")));
        }
        let all_grads = grads.grads;
        // A stop asked for checkpoints the step in flight, whatever the
        // interval says.
        let checkpoint_due = self.config.checkpoint_dir.is_some()
            && (step % self.config.checkpoint_every == 0
                || step == self.total_steps
                || self.stopping.is_some());
        let snapshot_due =
            step % self.config.snapshot_every == 0 || step == self.total_steps || checkpoint_due;
        let mut spare = if snapshot_due { self.spare_state.take() } else { None };
        let stepped = self
            .tree
            .call(FaultTarget::Optimizer, &self.tree.optimizer, |reply| OptimizerMsg::Step {
                step,
                grads: all_grads.clone(),
                // Retried after a restart, the request gets a fresh state.
                with_state: snapshot_due.then(|| spare.take().unwrap_or_default()),
                reply,
            })?
            .map_err(|error| Crashed(FaultTarget::Optimizer, error))?;
        let lr = stepped.lr;
        let broken = stepped.params.iter().find(|array| !array.data.iter().all(|x| x.is_finite()));
        if let Some(array) = broken {
            let what = format!("its update made parameter {} non-finite", array.name);
            return Err(self.diverged(step, what));
        }

        // The step is done: commit it.
        self.params = stepped.params;
        *progress = Progress { step, loader: loader_after, rng_state: grads.rng_state };
        self.losses.truncate(step as usize - 1);
        self.losses.push(loss);
        // Fire and forget: a record lost on the way is noticed at the
        // epoch's end, and the curve restored from the driver's.
        let _ = self.tree.metrics.try_send(MetricsMsg::Record { step, loss });
        *examples += batch.rows as u64;
        if let Some(state) = stepped.state {
            self.commit(progress, state);
        }
        if checkpoint_due {
            self.save_checkpoint(step).map_err(StepError::Stop)?;
        }
        self.report_recovered(step);
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        self.observer.on_step(&StepInfo {
            step,
            total_steps: self.total_steps,
            epoch,
            loss,
            lr,
            examples_per_sec: *examples as f64 / elapsed,
        });
        if let Some(reason) = self.stopping.clone() {
            return Err(StepError::Stop(self.interrupted(step, reason)));
        }
        if step % self.batches_per_epoch == 0 {
            let train_loss = self.epoch_mean(epoch, step).unwrap_or(f32::NAN);
            let (test_loss, test_accuracy) =
                self.evaluate().map_err(|error| Crashed(FaultTarget::Model, error.to_string()))?;
            let info = EpochInfo { epoch, train_loss, test_loss, test_accuracy };
            self.observer.on_epoch(&info);
            self.history.retain(|earlier| earlier.epoch != epoch);
            self.history.push(info);
        }
        Ok(())
    }

    /// The run's end at `step`, which left the loss or the parameters
    /// non-finite.
    fn diverged(&self, step: u64, what: String) -> StepError {
        StepError::Stop(TrainError::Diverged { step, what, committed: self.snapshot.step })
    }

    /// The run's end after `step`, which the caller asked for.
    fn interrupted(&self, step: u64, reason: String) -> TrainError {
        let checkpoint = self
            .last_checkpoint
            .as_ref()
            .filter(|(saved, _)| *saved == step)
            .map(|(_, path)| path.clone());
        let save_error = match (&checkpoint, self.checkpoint_failures.last()) {
            (None, Some((failed, error))) if *failed == step => Some(error.clone()),
            _ => None,
        };
        TrainError::Interrupted { reason, step, checkpoint, save_error }
    }

    /// Writes the snapshot of `step` to disk, in up to [`SAVE_ATTEMPTS`]
    /// attempts: an injected or real crash of the checkpointer is retried
    /// at once (the call waits for its restart), an I/O error after a pause.
    /// A save that fails them all stops the run or is recorded and warned
    /// of, as `on_checkpoint_failure` says.
    fn save_checkpoint(&mut self, step: u64) -> Result<(), TrainError> {
        debug_assert_eq!(self.snapshot.step, step, "a checkpoint is due only on a snapshot");
        let run = self.shared.store.as_ref().and_then(|store| store.run());
        let checkpoint = self
            .snapshot
            .to_checkpoint(&self.losses, self.batches_per_epoch, &self.config.model, run)
            .map(Arc::new)
            .map_err(|error| {
                TrainError::Failed(format!("the checkpoint of step {step}: {error}"))
            })?;
        let since = Instant::now();
        let mut failures = Vec::new();
        let (mut attempt, mut sends) = (1, 0);
        while attempt <= SAVE_ATTEMPTS && sends < SAVE_SENDS_MAX {
            sends += 1;
            let saved =
                self.tree.call(FaultTarget::Checkpointer, &self.tree.checkpointer, |reply| {
                    CheckpointerMsg::Save { checkpoint: checkpoint.clone(), reply }
                });
            match saved {
                Ok(Ok(path)) => {
                    if !failures.is_empty() {
                        self.checkpointer_recovered(step, &failures, attempt, since);
                    }
                    self.observer.on_checkpoint(step, &path);
                    self.last_checkpoint = Some((step, path));
                    return Ok(());
                }
                Ok(Err(error)) => {
                    failures.push(format!("attempt {attempt}: {error}"));
                    if attempt < SAVE_ATTEMPTS {
                        std::thread::sleep(SAVE_BACKOFF * attempt);
                    }
                    attempt += 1;
                }
                Err(Crashed(_, error)) => match self.shared.take_crash() {
                    Some((_, why)) => {
                        failures
                            .push(format!("attempt {attempt}: the checkpointer crashed: {why}"));
                        attempt += 1;
                    }
                    // Queued to an incarnation that was already going: it
                    // never saw the request, so it is sent again as the same
                    // attempt (within SAVE_SENDS_MAX).
                    None if sends < SAVE_SENDS_MAX => {}
                    None => failures.push(format!("attempt {attempt}: {error}")),
                },
            }
        }
        let error = failures.join("; ");
        let newest = match &self.last_checkpoint {
            Some((saved, path)) => {
                format!(
                    "the newest checkpoint this run wrote is step {saved}'s, {}",
                    path.display()
                )
            }
            None => "this run has written no checkpoint yet".to_string(),
        };
        if self.config.on_checkpoint_failure == CheckpointFailure::Stop {
            return Err(TrainError::CheckpointFailed { step, error, newest });
        }
        self.observer.on_warning(&format!(
            "the checkpoint of step {step} could not be written ({error}); {newest}. Training \
             goes on and retries at the next checkpoint; the run will end with an error"
        ));
        self.checkpoint_failures.push((step, error));
        Ok(())
    }

    /// Reports a save that succeeded after failures. A crash of the
    /// checkpointer restarted the metrics actor after it (`rest_for_one`):
    /// its curve is given back now rather than found short at the epoch's
    /// end.
    fn checkpointer_recovered(
        &mut self,
        step: u64,
        failures: &[String],
        attempt: u32,
        since: Instant,
    ) {
        if failures.iter().any(|failure| failure.contains("the checkpointer crashed")) {
            if let Err(Crashed(_, error)) = self.restore_metrics_to(step) {
                self.shared.metrics_crash.lock().unwrap_or_else(|p| p.into_inner()).push(
                    actors::MetricsCrash {
                        step,
                        at: since,
                        why: format!("restarted with the checkpointer, then unreachable: {error}"),
                    },
                );
            }
        }
        let recovery = RecoveryInfo {
            target: FaultTarget::Checkpointer,
            step,
            action: format!("{}; written on attempt {attempt}", failures.join("; ")),
            recovery_time: since.elapsed(),
        };
        self.observer.on_recovery(&recovery);
        self.recoveries.push(recovery);
    }

    /// Reports the failure being recovered from, once its step is done
    /// again.
    fn report_recovered(&mut self, step: u64) {
        if let Some(pending) = self.pending.take_if(|pending| pending.step <= step) {
            let replayed = match pending.restored_from + 1 {
                first if first == step => format!("step {step}"),
                first => format!("steps {first}-{step}"),
            };
            let recovery = RecoveryInfo {
                target: pending.target,
                step: pending.step,
                action: format!(
                    "{}; restored from the snapshot of step {}, replayed {replayed}",
                    pending.error, pending.restored_from
                ),
                recovery_time: pending.since.elapsed(),
            };
            self.observer.on_recovery(&recovery);
            self.recoveries.push(recovery);
        }
    }

    /// Makes the step `progress` reached the one a crash returns to.
    fn commit(&mut self, progress: &Progress, optimizer: Arc<OptimizerState>) {
        let committed = Arc::new(Committed {
            step: progress.step,
            params: self.params.clone(),
            optimizer,
            loader: progress.loader,
            rng_state: progress.rng_state,
        });
        *self.shared.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = committed.clone();
        let old = std::mem::replace(&mut self.snapshot, committed);
        // The old state's memory holds the next snapshot's state, unless an
        // actor still reads it (one restoring from it).
        self.spare_state = Arc::into_inner(old).and_then(|old| Arc::into_inner(old.optimizer));
    }

    /// Gives the metrics actor the committed loss curve.
    fn restore_metrics(&self) -> Result<(), Crashed> {
        self.restore_metrics_to(self.snapshot.step)
    }

    /// Gives the metrics actor the driver's loss curve up to step `step`.
    fn restore_metrics_to(&self, step: u64) -> Result<(), Crashed> {
        let losses = &self.losses[..step as usize];
        self.tree.call(FaultTarget::Metrics, &self.tree.metrics, |reply| MetricsMsg::Restore {
            losses: losses.to_vec(),
            reply,
        })
    }

    /// The mean training loss of `epoch`, which step `step` ended, from the
    /// metrics actor. Where its curve misses steps (it restarted, or a
    /// record was dropped), the driver's curve fills it first. A crash of
    /// the metrics actor is reported here, the first time the driver
    /// waits on it. `None` only when the metrics actor cannot answer.
    fn epoch_mean(&mut self, epoch: u64, step: u64) -> Option<f32> {
        let ask = || {
            self.tree.call(FaultTarget::Metrics, &self.tree.metrics, |reply| {
                MetricsMsg::EpochMean { epoch, reply }
            })
        };
        let noticed = Instant::now();
        let (mean, repair, replaced) = match ask().ok()? {
            Ok(mean) => (mean, None, false),
            Err(MetricsGap { held, replaced }) => {
                self.restore_metrics_to(step).ok()?;
                let held = match held {
                    0 => "no step's loss".to_string(),
                    held => format!("the losses of steps 1-{held} only"),
                };
                let repair = format!(
                    "at the end of epoch {} it held {held}; its curve was restored to step \
                     {step} from the driver's",
                    epoch + 1
                );
                (ask().ok()?.ok()?, Some(repair), replaced)
            }
        };
        let crashes = std::mem::take(
            &mut *self.shared.metrics_crash.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let recoveries: Vec<RecoveryInfo> = match (crashes.is_empty(), repair) {
            // Each crash is reported, the repair with each (one repair
            // covers them all: the curve is given back whole).
            (false, repair) => crashes
                .into_iter()
                .map(|crash| RecoveryInfo {
                    target: FaultTarget::Metrics,
                    step: crash.step,
                    action: format!(
                        "{}; {}",
                        crash.why,
                        // Lost nothing: a later crash's recovery gave every
                        // actor the committed curve back.
                        repair
                            .as_deref()
                            .unwrap_or("its curve was restored with the other actors'")
                    ),
                    recovery_time: crash.at.elapsed(),
                })
                .collect(),
            // Restarted with an actor before it after a failure that was
            // recovered (and reported) already, but after the driver had
            // restored it: the echo of that failure, now repaired too.
            (true, Some(repair)) if replaced && !self.recoveries.is_empty() => {
                tracing::info!(step, %repair, "the metrics actor was restarted after the driver restored it");
                return Some(mean);
            }
            (true, Some(repair)) => vec![RecoveryInfo {
                target: FaultTarget::Metrics,
                step,
                action: format!("a record was lost, no crash is known; {repair}"),
                recovery_time: noticed.elapsed(),
            }],
            (true, None) => return Some(mean),
        };
        for recovery in recoveries {
            self.observer.on_recovery(&recovery);
            self.recoveries.push(recovery);
        }
        Some(mean)
    }

    /// After a crash: every actor back to the snapshot, the driver too.
    fn restore(&mut self, progress: &mut Progress) -> Result<(), TrainError> {
        let failed = |error: Crashed| {
            TrainError::Failed(format!("recovery failed: {} actor: {}", error.0.name(), error.1))
        };
        for attempt in 0.. {
            let restored = (|| -> Result<(), Crashed> {
                self.tree
                    .call(FaultTarget::Optimizer, &self.tree.optimizer, |reply| {
                        OptimizerMsg::Restore { reply }
                    })?
                    .map_err(|error| Crashed(FaultTarget::Optimizer, error))?;
                self.tree
                    .call(FaultTarget::Loader, &self.tree.loader, |reply| LoaderMsg::Restore {
                        reply,
                    })?
                    .map_err(|error| Crashed(FaultTarget::Loader, error))?;
                self.restore_metrics()
            })();
            match restored {
                Ok(()) => break,
                Err(error) if attempt >= 3 => return Err(failed(error)),
                Err(_) => continue,
            }
        }
        self.params = self.snapshot.params.clone();
        *progress = Progress {
            step: self.snapshot.step,
            loader: self.snapshot.loader,
            rng_state: self.snapshot.rng_state,
        };
        Ok(())
    }

    fn evaluate(&mut self) -> Result<(f32, f32), TrainError> {
        let params = self.params.clone();
        let mut last = String::new();
        for _ in 0..3 {
            match self.tree.call(FaultTarget::Model, &self.tree.model, |reply| ModelMsg::Evaluate {
                params: params.clone(),
                reply,
            }) {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(error)) => return Err(TrainError::Failed(format!("evaluation: {error}"))),
                Err(Crashed(_, error)) => {
                    last = self.shared.take_crash().map_or(error, |(_, why)| why);
                }
            }
        }
        Err(TrainError::Failed(format!(
            "the model actor could not evaluate the held-out set: {last}"
        )))
    }
}
