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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbmd_gpu::GpuPool;
use zbmd_gpu::health::{HealthPolicy, HealthRegistry};
use zbmd_rt::supervisor::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{AskError, ReplyTo, Runtime};

use crate::checkpoint::{Checkpoint, CheckpointStore, NamedArray};
use crate::data::{Dataset, LoaderPosition, Normalize};
use crate::optim::OptimizerState;
use crate::rng::Rng;
use crate::tensor::PoolMatmul;
use commit::{Committed, Params};
pub use config::{DataSource, FaultSchedule, FaultTarget, TrainConfig};
pub use report::{EpochInfo, Observer, RecoveryInfo, Silent, StepInfo, TrainReport};

use actors::{
    CheckpointerActor, CheckpointerMsg, LoaderActor, LoaderMsg, MetricsActor, MetricsMsg,
    ModelActor, ModelMsg, OptimizerActor, OptimizerMsg, Products, Shared, StepCursor,
};

/// How long the driver waits for one actor's answer: far above any step.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

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
}

/// Loads the configured data, scaled.
pub fn load_data(source: &DataSource) -> Result<Dataset, TrainError> {
    let mut dataset = match source {
        DataSource::Digits => {
            let mut digits = crate::data::digits();
            digits.normalize(Normalize::Divide(16.0));
            return Ok(digits);
        }
        DataSource::Csv { path, .. } => {
            crate::data::load_csv(path, &crate::data::CsvOptions::default())?
        }
        DataSource::Idx { images, labels } => crate::data::load_idx(images, labels)?,
    };
    match source {
        DataSource::Csv { scale, .. } if *scale != 1.0 => {
            dataset.normalize(Normalize::Divide(*scale));
        }
        DataSource::Idx { .. } => {
            dataset.normalize(Normalize::Divide(255.0));
        }
        _ => {}
    }
    Ok(dataset)
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
    let (train_set, test_set) = if config.test_fraction > 0.0 {
        dataset.split(config.test_fraction, config.seed)?
    } else {
        (dataset.clone(), dataset)
    };
    let model = actors::build_model(&config.model, config.seed).map_err(TrainError::Config)?;
    let names: Vec<String> =
        model.parameters().iter().map(|(name, _)| (*name).to_owned()).collect();
    let batches_per_epoch = (train_set.len() as u64).div_ceil(config.batch_size as u64);
    let total_steps = batches_per_epoch * config.epochs;

    // Where the run starts: a checkpoint, or step 0.
    let store = match &config.checkpoint_dir {
        Some(dir) => Some(CheckpointStore::open(dir.clone(), config.keep_checkpoints)?),
        None => None,
    };
    let mut checkpoint = initial_checkpoint(&model, config.seed);
    if config.resume {
        let recovery =
            store.as_ref().expect("validated: resume needs a directory").latest_valid()?;
        for (path, error) in &recovery.skipped {
            observer.on_resume(&format!("skipped {}: {error}", path.display()));
        }
        match recovery.found {
            Some((found, path)) => {
                observer.on_resume(&format!(
                    "resuming from step {} ({})",
                    found.step,
                    path.display()
                ));
                checkpoint = found;
            }
            None => observer.on_resume("no valid checkpoint: starting from step 0"),
        }
    }
    let (snapshot, losses) = Committed::from_checkpoint(&checkpoint, &names)
        .map_err(|error| TrainError::Failed(format!("step {}: {error}", checkpoint.step)))?;
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
        checkpoint_dir: config.checkpoint_dir.clone(),
        keep_checkpoints: config.keep_checkpoints,
        crash: Mutex::new(None),
        metrics_crash: Mutex::new(None),
    });
    let rt = Runtime::builder().build().map_err(|error| TrainError::Failed(error.to_string()))?;
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
    };
    let result = driver.run(started, resumed_from);
    drop(driver);
    rt.shutdown();
    result
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
        ChildSpec::worker("checkpointer", move || CheckpointerActor {
            shared: shared.clone(),
            store: None,
        })
    };
    let metrics = {
        let shared = shared.clone();
        ChildSpec::worker("metrics", move || MetricsActor {
            shared: shared.clone(),
            losses: Vec::new(),
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
                Err(Crashed(target, error)) => {
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
                    if let Some(pending) = &self.pending {
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
        let (test_loss, test_accuracy) = self.evaluate()?;
        let wall_time = started.elapsed();
        let steps = progress.step;
        let params = self
            .params
            .iter()
            .map(|array| (array.name.clone(), array.shape.clone(), array.data.clone()));
        let report = TrainReport {
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
        };
        if let Some(path) = &self.config.save_params {
            let mut model = actors::build_model(&self.config.model, self.config.seed)
                .map_err(TrainError::Config)?;
            for ((_, tensor), array) in model.parameters_mut().into_iter().zip(self.params.iter()) {
                *tensor = crate::tensor::Tensor::from_vec(array.data.clone(), &array.shape)
                    .map_err(|error| TrainError::Failed(error.to_string()))?;
            }
            model.export_safetensors(path)?;
        }
        Ok(report)
    }

    /// Runs one step and commits it.
    fn step(
        &mut self,
        progress: &mut Progress,
        examples: &mut u64,
        started: Instant,
    ) -> Result<(), Crashed> {
        let step = progress.step + 1;
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
        let all_grads = grads.grads;
        let checkpoint_due = self.config.checkpoint_dir.is_some()
            && (step % self.config.checkpoint_every == 0 || step == self.total_steps);
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
            let checkpoint = self
                .snapshot
                .to_checkpoint(&self.losses, self.batches_per_epoch, &self.config.model)
                .map(Arc::new)
                .map_err(|error| Crashed(FaultTarget::Checkpointer, error))?;
            let path = self
                .tree
                .call(FaultTarget::Checkpointer, &self.tree.checkpointer, |reply| {
                    CheckpointerMsg::Save { checkpoint: checkpoint.clone(), reply }
                })?
                .map_err(|error| Crashed(FaultTarget::Checkpointer, error))?;
            self.observer.on_checkpoint(step, &path);
        }
        // Recovered once the failed step is done again.
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
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        self.observer.on_step(&StepInfo {
            step,
            total_steps: self.total_steps,
            epoch,
            loss,
            lr,
            examples_per_sec: *examples as f64 / elapsed,
        });
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
        let (mean, repair) = match ask().ok()? {
            Ok(mean) => (mean, None),
            Err(held) => {
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
                (ask().ok()?.ok()?, Some(repair))
            }
        };
        let crash = self.shared.metrics_crash.lock().unwrap_or_else(|p| p.into_inner()).take();
        let recovery = match (crash, repair) {
            (Some(crash), repair) => RecoveryInfo {
                target: FaultTarget::Metrics,
                step: crash.step,
                action: format!(
                    "{}; {}",
                    crash.why,
                    // Lost nothing: a later crash's recovery gave every
                    // actor the committed curve back.
                    repair.as_deref().unwrap_or("its curve was restored with the other actors'")
                ),
                recovery_time: crash.at.elapsed(),
            },
            (None, Some(repair)) => RecoveryInfo {
                target: FaultTarget::Metrics,
                step,
                action: format!("a record was lost, no crash is known; {repair}"),
                recovery_time: noticed.elapsed(),
            },
            (None, None) => return Some(mean),
        };
        self.observer.on_recovery(&recovery);
        self.recoveries.push(recovery);
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
