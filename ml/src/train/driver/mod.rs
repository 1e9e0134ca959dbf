//! The driver: the calling thread, which runs each step through the
//! actors, commits it, and recovers the tree after a failure. Its parts,
//! one job each:
//!
//! - [`tree`]: the supervisor and the actors' refs, and the calls into them;
//! - this module: the step loop (batch → gradients → update → commit);
//! - [`recovery`]: what a failure does (restore and replay, count the
//!   failures of a step, report what was recovered);
//! - [`checkpoints`]: writing the snapshot to disk, with its retries;
//! - [`metrics`]: the epoch's mean loss from the metrics actor, repaired
//!   from the driver's curve.
//!
//! The driver runs on the caller's thread, never on a shard: it is the one
//! place that blocks, on calls and on a checkpoint's retry backoff.

mod checkpoints;
mod metrics;
mod recovery;
pub(super) mod tree;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use zbmd_rt::supervisor::ChildRef;

use super::TrainError;
use super::actors::loader::LoaderMsg;
use super::actors::metrics::{MetricsCrash, MetricsMsg};
use super::actors::model::{ModelMsg, StepGrads};
use super::actors::optimizer::{OptimizerMsg, Stepped};
use super::actors::{Failure, Faults, Refusal, Reply, RunSettings};
use super::commit::{Committed, Params};
use super::config::{FaultTarget, TrainConfig};
use super::report::{EpochInfo, Observer, RecoveryInfo, StepInfo, TrainReport};
use crate::data::{Batch, LoaderPosition};
use crate::optim::OptimizerState;
use recovery::Recovery;
use tree::{Tree, refused};

/// How many times one request is sent to an incarnation that says it has
/// not been restored, restoring it each time: each needs a fresh
/// incarnation, so more than this means the tree keeps restarting.
const RESTORES_PER_REQUEST: u32 = 2;

/// What a run's driver is handed to start.
pub(super) struct Start<'a> {
    pub config: &'a TrainConfig,
    pub run: Arc<RunSettings>,
    pub faults: Faults,
    pub tree: Tree,
    pub snapshot: Arc<Committed>,
    pub losses: Vec<f32>,
    pub metrics_crashes: Receiver<MetricsCrash>,
    pub observer: &'a mut dyn Observer,
    pub total_steps: u64,
}

/// The committed state and what the steps since have made of it.
struct Committer {
    /// The newest committed state.
    snapshot: Arc<Committed>,
    /// The optimizer state of the snapshot before, for the next one to
    /// overwrite.
    spare_state: Option<OptimizerState>,
    /// The parameters after the last completed step.
    params: Params,
    /// Every completed step's loss (the first `snapshot.step` committed).
    losses: Vec<f32>,
}

/// The checkpoints a run wrote, and those it could not.
#[derive(Default)]
struct Saved {
    /// The newest checkpoint written: its step and file.
    last: Option<(u64, PathBuf)>,
    /// The checkpoints that could not be written, and why.
    failures: Vec<(u64, String)>,
}

pub(super) struct Driver<'a> {
    config: &'a TrainConfig,
    run: Arc<RunSettings>,
    faults: Faults,
    tree: Tree,
    committer: Committer,
    recovery: Recovery,
    saved: Saved,
    observer: &'a mut dyn Observer,
    total_steps: u64,
    history: Vec<EpochInfo>,
    device: String,
    /// Why the caller asked the run to stop, once it has.
    stopping: Option<String>,
    /// Examples trained on by this process, for the rate.
    examples: u64,
}

/// Why a step did not complete.
enum StepError {
    /// An actor failed: restore and replay.
    Failed(Failure),
    /// The run ends here.
    Stop(TrainError),
}

impl From<Failure> for StepError {
    fn from(failure: Failure) -> Self {
        StepError::Failed(failure)
    }
}

/// The state a step leaves, before it is committed.
struct Progress {
    step: u64,
    loader: LoaderPosition,
    rng_state: u64,
}

impl Progress {
    /// Where the snapshot left the run.
    fn at(snapshot: &Committed) -> Progress {
        Progress { step: snapshot.step, loader: snapshot.loader, rng_state: snapshot.rng_state }
    }
}

/// A request to a stateful actor that refuses until it is restored.
trait Restorable: Send + Sized + 'static {
    fn restore(snapshot: Arc<Committed>, reply: Reply<()>) -> Self;
}

impl Restorable for OptimizerMsg {
    fn restore(snapshot: Arc<Committed>, reply: Reply<()>) -> Self {
        OptimizerMsg::Restore { snapshot, reply }
    }
}

impl Restorable for LoaderMsg {
    fn restore(snapshot: Arc<Committed>, reply: Reply<()>) -> Self {
        LoaderMsg::Restore { snapshot, reply }
    }
}

impl<'a> Driver<'a> {
    pub fn new(start: Start<'a>) -> Self {
        let Start {
            config,
            run,
            faults,
            tree,
            snapshot,
            losses,
            metrics_crashes,
            observer,
            total_steps,
        } = start;
        Driver {
            config,
            run,
            faults,
            tree,
            committer: Committer {
                params: snapshot.params.clone(),
                snapshot,
                spare_state: None,
                losses,
            },
            recovery: Recovery::new(metrics_crashes),
            saved: Saved::default(),
            observer,
            total_steps,
            history: Vec::new(),
            device: String::new(),
            stopping: None,
            examples: 0,
        }
    }

    /// Trains from the snapshot to the last step.
    pub fn run(&mut self, started: Instant, resumed_from: u64) -> Result<TrainReport, TrainError> {
        let mut progress = Progress::at(&self.committer.snapshot);
        self.restore_tree().map_err(|failure| {
            TrainError::Failed(format!(
                "the {} actor could not restore: {}",
                failure.target.name(),
                failure.reason
            ))
        })?;
        while progress.step < self.total_steps {
            match self.step(&mut progress, started) {
                Ok(()) => {}
                Err(StepError::Stop(error)) => return Err(error),
                Err(StepError::Failed(failure)) => {
                    self.failed(progress.step + 1, failure)?;
                    self.restore(&mut progress)?;
                }
            }
        }
        self.warn_unfired(resumed_from);
        let (test_loss, test_accuracy) = self.evaluate()?;
        Ok(self.report(progress.step, resumed_from, started, test_loss, test_accuracy))
    }

    /// The run's report, once its last step is done.
    fn report(
        &mut self,
        steps: u64,
        resumed_from: u64,
        started: Instant,
        test_loss: f32,
        test_accuracy: f32,
    ) -> TrainReport {
        let wall_time = started.elapsed();
        let params = self
            .committer
            .params
            .iter()
            .map(|array| (array.name.clone(), array.shape.clone(), array.data.clone()));
        TrainReport {
            steps,
            resumed_from,
            epochs: steps / self.run.batches_per_epoch,
            history: std::mem::take(&mut self.history),
            losses: self.committer.losses[resumed_from as usize..].to_vec(),
            test_accuracy,
            test_loss,
            wall_time,
            steps_per_sec: (steps - resumed_from) as f64 / wall_time.as_secs_f64().max(1e-9),
            faults_injected: self.faults.injected(),
            recoveries: std::mem::take(&mut self.recovery.reported),
            device: self.device.clone(),
            parameters: params.collect(),
            last_checkpoint: self.saved.last.take(),
            checkpoint_failures: std::mem::take(&mut self.saved.failures),
        }
    }

    /// Says which planned faults never fired. A metrics fault rides on its
    /// step's loss record, which the driver sends without waiting: a record
    /// sent while the metrics actor restarts (after another fault) is lost,
    /// and its fault with it.
    fn warn_unfired(&mut self, resumed_from: u64) {
        for (target, step) in self.faults.unfired() {
            if step > resumed_from {
                self.observer.on_warning(&format!(
                    "fault {}@{step} did not fire: the request it rides on never reached the \
                     actor (it was restarting after another fault)",
                    target.name()
                ));
            }
        }
    }

    /// Asks a stateful actor, restoring an incarnation that started since
    /// the driver last restored the tree (and asking again) rather than
    /// counting it as a failure: a fresh incarnation restored from the
    /// snapshot then serves the step or refuses it by its cursor.
    fn ask<M: Restorable, T: Send + 'static>(
        &self,
        target: FaultTarget,
        child: &ChildRef<M>,
        mut request: impl FnMut(Reply<T>) -> M,
    ) -> Result<T, Failure> {
        for _ in 0..RESTORES_PER_REQUEST {
            match self.tree.call(target, child, &mut request)? {
                Ok(answer) => return Ok(answer),
                Err(Refusal::Unrestored) => self.restore_one(target, child)?,
                Err(refusal) => return Err(refused(target, refusal)),
            }
        }
        self.tree.call(target, child, request)?.map_err(|refusal| refused(target, refusal))
    }

    /// Sends one stateful actor the snapshot.
    fn restore_one<M: Restorable>(
        &self,
        target: FaultTarget,
        child: &ChildRef<M>,
    ) -> Result<(), Failure> {
        let snapshot = &self.committer.snapshot;
        self.tree
            .call(target, child, |reply| M::restore(snapshot.clone(), reply))?
            .map_err(|refusal| refused(target, refusal))
    }

    /// Runs one step and commits it.
    fn step(&mut self, progress: &mut Progress, started: Instant) -> Result<(), StepError> {
        let step = progress.step + 1;
        if self.stopping.is_none() {
            self.stopping = self.observer.stop_requested();
        }
        let (batch, loader_after) = self
            .ask(FaultTarget::Loader, &self.tree.loader, |reply| LoaderMsg::Next { step, reply })?;
        let grads = self.gradients(step, &batch, progress.rng_state)?;
        let loss = grads.loss;
        if !loss.is_finite() {
            let before = match self.committer.losses.get(step as usize - 2) {
                Some(before) => format!(" ({before} at step {})", step - 1),
                None => String::new(),
            };
            return Err(self.diverged(step, format!("the loss is {loss}{before}")));
        }
        // A stop asked for checkpoints the step in flight, whatever the
        // interval says.
        let checkpoint_due = self.config.checkpoint_dir.is_some()
            && (step % self.config.checkpoint_every == 0
                || step == self.total_steps
                || self.stopping.is_some());
        let snapshot_due =
            step % self.config.snapshot_every == 0 || step == self.total_steps || checkpoint_due;
        let stepped = self.update(step, &grads.grads, snapshot_due)?;
        let lr = stepped.lr;

        // The step is done: commit it.
        *progress = Progress { step, loader: loader_after, rng_state: grads.rng_state };
        self.complete(progress, &batch, loss, stepped)?;
        if checkpoint_due {
            self.save_checkpoint(step).map_err(StepError::Stop)?;
        }
        self.report_recovered(step);
        self.report_step(step, batch.epoch, loss, lr, started);
        if let Some(reason) = self.stopping.clone() {
            return Err(StepError::Stop(self.interrupted(step, reason)));
        }
        if step % self.run.batches_per_epoch == 0 {
            self.end_epoch(batch.epoch, step)?;
        }
        Ok(())
    }

    /// Step `step`'s gradients from the model actor, with the repairs it
    /// made on the way reported.
    fn gradients(
        &mut self,
        step: u64,
        batch: &Arc<Batch>,
        rng_state: u64,
    ) -> Result<StepGrads, Failure> {
        let params = &self.committer.params;
        let grads = self
            .tree
            .call(FaultTarget::Model, &self.tree.model, |reply| ModelMsg::Compute {
                step,
                params: params.clone(),
                batch: batch.clone(),
                rng_state,
                reply,
            })?
            .map_err(|refusal| refused(FaultTarget::Model, refusal))?;
        for (target, action, recovery_time) in &grads.events {
            let recovery = RecoveryInfo {
                target: *target,
                step,
                action: action.clone(),
                recovery_time: *recovery_time,
            };
            self.recovery.report(self.observer, recovery);
        }
        self.device = grads.device.clone();
        Ok(grads)
    }

    /// Step `step`'s update from the optimizer, with its state when a
    /// snapshot is due; a non-finite parameter ends the run.
    fn update(
        &mut self,
        step: u64,
        grads: &[Vec<f32>],
        snapshot_due: bool,
    ) -> Result<Stepped, StepError> {
        let mut spare = if snapshot_due { self.committer.spare_state.take() } else { None };
        let stepped =
            self.ask(FaultTarget::Optimizer, &self.tree.optimizer, |reply| OptimizerMsg::Step {
                step,
                grads: grads.to_vec(),
                // Retried after a restart, the request gets a fresh state.
                with_state: snapshot_due.then(|| spare.take().unwrap_or_default()),
                reply,
            })?;
        let broken = stepped.params.iter().find(|array| !array.data.iter().all(|x| x.is_finite()));
        if let Some(array) = broken {
            let what = format!("its update made parameter {} non-finite", array.name);
            return Err(self.diverged(step, what));
        }
        Ok(stepped)
    }

    /// Takes in a done step: its parameters, its loss, and the snapshot
    /// when one is due.
    fn complete(
        &mut self,
        progress: &Progress,
        batch: &Batch,
        loss: f32,
        stepped: Stepped,
    ) -> Result<(), StepError> {
        let step = progress.step;
        self.committer.params = stepped.params;
        self.committer.losses.truncate(step as usize - 1);
        self.committer.losses.push(loss);
        // Fire and forget: a record lost on the way is noticed at the
        // epoch's end, and the curve restored from the driver's.
        let _ = self.tree.metrics.try_send(MetricsMsg::Record { step, loss });
        self.examples += batch.rows as u64;
        if let Some(state) = stepped.state {
            self.commit(progress, state);
        }
        Ok(())
    }

    /// Tells the observer about step `step`.
    fn report_step(&mut self, step: u64, epoch: u64, loss: f32, lr: f64, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        self.observer.on_step(&StepInfo {
            step,
            total_steps: self.total_steps,
            epoch,
            loss,
            lr,
            examples_per_sec: self.examples as f64 / elapsed,
        });
    }

    /// The end of epoch `epoch`, at step `step`: its mean training loss and
    /// the held-out figures.
    fn end_epoch(&mut self, epoch: u64, step: u64) -> Result<(), StepError> {
        let train_loss = self.epoch_mean(epoch, step).unwrap_or(f32::NAN);
        let (test_loss, test_accuracy) = self
            .evaluate()
            .map_err(|error| Failure { target: FaultTarget::Model, reason: error.to_string() })?;
        let info = EpochInfo { epoch, train_loss, test_loss, test_accuracy };
        self.observer.on_epoch(&info);
        self.history.retain(|earlier| earlier.epoch != epoch);
        self.history.push(info);
        Ok(())
    }

    /// The run's end at `step`, which left the loss or the parameters
    /// non-finite.
    fn diverged(&self, step: u64, what: String) -> StepError {
        let committed = self.committer.snapshot.step;
        StepError::Stop(TrainError::Diverged { step, what, committed })
    }

    /// Makes the step `progress` reached the one a crash returns to.
    fn commit(&mut self, progress: &Progress, optimizer: Arc<OptimizerState>) {
        let committed = Arc::new(Committed {
            step: progress.step,
            params: self.committer.params.clone(),
            optimizer,
            loader: progress.loader,
            rng_state: progress.rng_state,
        });
        let old = std::mem::replace(&mut self.committer.snapshot, committed);
        // The old state's memory holds the next snapshot's state, unless an
        // actor still reads it (one restoring from it).
        self.committer.spare_state =
            Arc::into_inner(old).and_then(|old| Arc::into_inner(old.optimizer));
    }

    /// The held-out loss and accuracy at the current parameters; a crash
    /// of the model actor is retried.
    fn evaluate(&mut self) -> Result<(f32, f32), TrainError> {
        let params = self.committer.params.clone();
        let mut last = String::new();
        for _ in 0..3 {
            let asked = self.tree.call(FaultTarget::Model, &self.tree.model, |reply| {
                ModelMsg::Evaluate { params: params.clone(), reply }
            });
            match asked {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(Refusal::Crashing(failure))) => last = failure.reason,
                Ok(Err(refusal)) => {
                    let error = refused(FaultTarget::Model, refusal).reason;
                    return Err(TrainError::Failed(format!("evaluation: {error}")));
                }
                Err(failure) => last = failure.reason,
            }
        }
        Err(TrainError::Failed(format!(
            "the model actor could not evaluate the held-out set: {last}"
        )))
    }
}
