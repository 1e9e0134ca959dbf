//! The training tree (its supervisor and the actors' refs) and the
//! driver's calls into it.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use zbmd_rt::supervisor::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{AskError, ReplyTo, Runtime};

use crate::train::TrainError;
use crate::train::actors::checkpointer::{CheckpointerActor, CheckpointerMsg};
use crate::train::actors::loader::{LoaderActor, LoaderMsg};
use crate::train::actors::metrics::{MetricsCrash, MetricsFactory, MetricsMsg};
use crate::train::actors::model::{ModelActor, ModelMsg, ModelSetup};
use crate::train::actors::optimizer::{OptimizerActor, OptimizerMsg};
use crate::train::actors::{Failure, Faults, Refusal, RunSettings};
use crate::train::config::FaultTarget;

/// How long the driver waits for one actor's answer: far above any step.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The actors' refs, by role. The supervisor itself needs no ref: the
/// runtime's shutdown stops it, and a call learns it gave up from a child
/// it retired.
pub(crate) struct Tree {
    pub model: ChildRef<ModelMsg>,
    pub optimizer: ChildRef<OptimizerMsg>,
    pub loader: ChildRef<LoaderMsg>,
    pub checkpointer: ChildRef<CheckpointerMsg>,
    pub metrics: ChildRef<MetricsMsg>,
}

impl Tree {
    /// The training supervisor: `rest_for_one` over the GPU supervisor
    /// (when the products run on kernel actors), model, optimizer, data
    /// loader, checkpointer and metrics, each depending on those before it.
    /// Each actor's factory holds only immutable settings and the run's
    /// fault plan; the metrics actor's crash notes go to `crashes`.
    pub fn start(
        rt: &Runtime,
        model: Arc<ModelSetup>,
        gpu: Option<ChildSpec<Supervisor>>,
        planned_faults: usize,
        crashes: Sender<MetricsCrash>,
    ) -> Result<Tree, TrainError> {
        let (run, faults): (Arc<RunSettings>, Faults) = (model.run.clone(), model.faults.clone());
        let model = ChildSpec::worker("model", move || ModelActor::new(model.clone()));
        let optimizer = {
            let (run, faults) = (run.clone(), faults.clone());
            ChildSpec::worker("optimizer", move || OptimizerActor::new(run.clone(), faults.clone()))
        };
        let loader = {
            let (run, faults) = (run.clone(), faults.clone());
            ChildSpec::worker("loader", move || LoaderActor::new(run.clone(), faults.clone()))
        };
        let checkpointer = {
            let (run, faults) = (run.clone(), faults.clone());
            ChildSpec::worker("checkpointer", move || {
                CheckpointerActor::new(run.clone(), faults.clone())
            })
        };
        let factory = MetricsFactory::new(run, faults, crashes);
        let metrics = ChildSpec::worker("metrics", move || factory.make());
        let refs = (
            model.child_ref(),
            optimizer.child_ref(),
            loader.child_ref(),
            checkpointer.child_ref(),
            metrics.child_ref(),
        );
        // Every injected fault restarts up to five actors; leave room for
        // them all, and for a few real ones, before the tree gives up.
        let restarts = 5 * (planned_faults as u32 + 4);
        let mut spec = SupervisorSpec::rest_for_one().intensity(restarts, Duration::from_secs(60));
        if let Some(gpu) = gpu {
            spec = spec.child(gpu);
        }
        let spec =
            spec.child(model).child(optimizer).child(loader).child(checkpointer).child(metrics);
        Supervisor::start(rt, spec).map_err(|error| TrainError::Failed(error.to_string()))?;
        let (model, optimizer, loader, checkpointer, metrics) = refs;
        Ok(Tree { model, optimizer, loader, checkpointer, metrics })
    }

    /// Asks one actor, blocking until it answers. `ChildRef::call` itself
    /// waits through a restart window (woken when the supervisor binds the
    /// next incarnation) and resends a request an incarnation died with
    /// unread. A full mailbox (the driver has at most one request in flight
    /// per actor; only the metrics actor's unawaited records can fill one)
    /// is waited out with `ChildRef::wait_for_room`, woken by the actor's
    /// next turn, and the request sent again, all within [`CALL_TIMEOUT`].
    /// What fails is the call itself: the request was taken and dropped
    /// (its handler crashed without saying why), the supervisor gave up
    /// (`NoProc`: the child is retired), or the time ran out.
    pub fn call<M: Send + 'static, R: Send + 'static>(
        &self,
        target: FaultTarget,
        child: &ChildRef<M>,
        mut request: impl FnMut(ReplyTo<R>) -> M,
    ) -> Result<R, Failure> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match child.call(&mut request, left) {
                Ok(answer) => return Ok(answer),
                Err(AskError::Full) if child.wait_for_room(left) => {}
                Err(error) => {
                    let reason = match error {
                        // Retired: every child here is permanent, and the
                        // driver stops the tree only after its last call,
                        // so only a supervisor that gave up retires one (it
                        // may not have exited yet).
                        AskError::NoProc => {
                            "the training supervisor gave up (its restart intensity was reached)"
                                .into()
                        }
                        error => error.to_string(),
                    };
                    return Err(Failure { target, reason });
                }
            }
        }
    }
}

/// A refusal as the failure the driver recovers from.
pub(super) fn refused(target: FaultTarget, refusal: Refusal) -> Failure {
    match refusal {
        Refusal::Crashing(failure) => failure,
        Refusal::Declined(reason) => Failure { target, reason },
        Refusal::Unrestored => Failure {
            target,
            reason: format!(
                "the {} actor has not been restored since it started: {}",
                target.name(),
                crate::train::commit::StepCursor::RESTARTED_LATE
            ),
        },
    }
}
