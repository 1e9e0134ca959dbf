//! The actors of a training run, children of its `rest_for_one` supervisor
//! in this order: (the GPU supervisor, when the products run on kernel
//! actors), [`model`], [`optimizer`], [`loader`], [`checkpointer`],
//! [`metrics`]. Each lives in its own module and owns its state:
//!
//! | actor        | owns                                   | restored by                          |
//! |--------------|----------------------------------------|--------------------------------------|
//! | model        | its layers, tape, micro-batch, device  | nothing: each request carries params |
//! | optimizer    | parameters, optimizer state, cursor    | `Restore { snapshot }`               |
//! | loader       | the prefetching loader, cursor         | `Restore { snapshot }`               |
//! | checkpointer | nothing (writes through the run's store) | nothing                            |
//! | metrics      | its copy of the loss curve             | `Restore { losses }`                 |
//!
//! What they share is immutable: the run's settings ([`RunSettings`], an
//! `Arc` handed to each factory) and the run's fault plan ([`Faults`],
//! `zbmd_rt::fault`'s injector, whose counters are the runtime's
//! mechanism rather than state of any actor). Everything mutable that
//! crosses travels in messages: the snapshot in each `Restore`, the
//! parameters and batch in each request, and a crash's reason in the reply
//! the crashing actor sends before it exits ([`Refusal::Crashing`]), or,
//! for the metrics actor that no request waits on, in a note to the
//! driver's channel ([`metrics::MetricsCrash`]).
//!
//! A stateful actor (optimizer, loader) starts *unrestored*: a fresh
//! incarnation refuses every step with [`Refusal::Unrestored`] until the
//! driver sends it the snapshot, then serves only the step after the one
//! it last served ([`StepCursor`](super::commit::StepCursor)).

pub(crate) mod checkpointer;
pub(crate) mod compute;
pub(crate) mod devices;
pub(crate) mod loader;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod optimizer;

use std::sync::Arc;

use zbmd_rt::fault::{FaultInjector, FaultPlan, FaultPlanError, FaultSite};
use zbmd_rt::{ActorError, ReplyTo};

use crate::checkpoint::CheckpointStore;
use crate::data::Dataset;
use crate::nn::Sequential;
use crate::optim::{LrSchedule, OptimizerConfig};
use crate::rng::Rng;
use crate::train::ModelSpecError;
use crate::train::config::{FaultSchedule, FaultTarget};

/// The run's settings every actor reads and none changes: handed to each
/// actor's factory, so that every incarnation starts from them.
pub(crate) struct RunSettings {
    /// The model's spec and seed (to rebuild its layers).
    pub model_spec: String,
    pub seed: u64,
    /// The held-out set.
    pub test: Arc<Dataset>,
    /// The training set and how it is batched.
    pub train: Arc<Dataset>,
    pub batch_size: usize,
    pub batches_per_epoch: u64,
    /// The unit gradients are computed over (0: the micro-batch).
    pub grad_chunk: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Option<LrSchedule>,
    /// Where checkpoints are written (opened, and locked, by the driver).
    pub store: Option<Arc<CheckpointStore>>,
}

/// Why an actor failed a request: the target the failure is reported
/// against, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub target: FaultTarget,
    pub reason: String,
}

/// Why an actor did not answer a request with its result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// This incarnation started after the driver last restored the tree and
    /// holds no snapshot: the driver sends it one and asks again.
    Unrestored,
    /// Declined, and the actor lives on: a step it does not stand before,
    /// a request it cannot serve, an I/O error.
    Declined(String),
    /// The actor is crashing (an injected fault, a failed device): the
    /// reason, sent as the last thing it does; its supervisor restarts it.
    Crashing(Failure),
}

/// A request's reply: the answer, or why there is none.
pub(crate) type Reply<T> = ReplyTo<Result<T, Refusal>>;

/// Answers `reply` with the crash about to happen and makes the actor's
/// exit reason: the driver learns why from the reply, the supervisor from
/// the exit.
pub(crate) fn crash<T: Send + 'static>(
    reply: Reply<T>,
    target: FaultTarget,
    reason: String,
) -> ActorError {
    let error = ActorError::msg(&reason);
    reply.reply(Err(Refusal::Crashing(Failure { target, reason })));
    error
}

/// The reason of an injected crash.
pub(crate) fn injected(target: FaultTarget, step: u64) -> String {
    format!("injected fault: {} crash at step {step}", target.name())
}

/// The run's planned faults, as sites of a `zbmd_rt::fault` plan: one site
/// per target (`train.model`, `train.device_lost`, ...), each planned
/// firing keyed by its step. A site fires once for each planned step, the
/// first time that step is attempted (a step replayed after recovery runs
/// clean), and the rolls and fires are counted where every site's are.
#[derive(Clone)]
pub(crate) struct Faults {
    injector: FaultInjector,
    sites: Vec<(FaultTarget, FaultSite)>,
}

impl Faults {
    /// The site of `target` in the plan.
    pub fn site_name(target: FaultTarget) -> String {
        format!("train.{}", target.name())
    }

    /// The plan of `schedule`'s faults.
    pub fn plan(schedule: &FaultSchedule, seed: u64) -> Result<Faults, FaultPlanError> {
        let plan = schedule.at.iter().fold(FaultPlan::new().seed(seed), |plan, &(target, step)| {
            plan.at(Self::site_name(target), step)
        });
        let injector = FaultInjector::new(plan)?;
        let sites = FaultTarget::ALL
            .into_iter()
            .map(|target| (target, injector.site(&Self::site_name(target))))
            .collect();
        Ok(Faults { injector, sites })
    }

    fn site(&self, target: FaultTarget) -> Option<&FaultSite> {
        self.sites.iter().find(|(t, _)| *t == target).map(|(_, site)| site)
    }

    /// Whether a fault planned for `target` at `step` fires now (once).
    pub fn fires(&self, target: FaultTarget, step: u64) -> bool {
        self.site(target).is_some_and(|site| site.inject_at(step))
    }

    /// How many planned faults have fired.
    pub fn injected(&self) -> u64 {
        self.injector.site_counts().iter().map(|count| count.fires).sum()
    }

    /// The planned faults that have not fired, by target then step.
    pub fn unfired(&self) -> Vec<(FaultTarget, u64)> {
        self.sites
            .iter()
            .flat_map(|(target, site)| site.planned_left().into_iter().map(|step| (*target, step)))
            .collect()
    }
}

/// Builds the model its spec names (`[64, 128, 10]`, or a TOML file's path),
/// initialized from the seed.
pub(crate) fn build_model(spec: &str, seed: u64) -> Result<Sequential, ModelSpecError> {
    let mut rng = Rng::new(seed).fork("init");
    if spec.trim_start().starts_with('[') {
        return Sequential::from_spec(spec, &mut rng).map_err(ModelSpecError::Spec);
    }
    let path = spec.to_owned();
    let text = std::fs::read_to_string(spec)
        .map_err(|source| ModelSpecError::Read { path: path.clone(), source })?;
    Sequential::from_toml(&text, &mut rng).map_err(|source| ModelSpecError::File { path, source })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::train::TrainConfig;

    /// A run's settings as `config` makes them, on the digits.
    pub(crate) fn settings(config: &TrainConfig) -> Arc<RunSettings> {
        let digits = Arc::new(crate::data::digits());
        Arc::new(RunSettings {
            model_spec: config.model.clone(),
            seed: config.seed,
            test: digits.clone(),
            train: digits,
            batch_size: config.batch_size,
            batches_per_epoch: 1,
            grad_chunk: config.grad_chunk,
            optimizer: config.optimizer.clone(),
            schedule: config.schedule.clone(),
            store: None,
        })
    }

    #[test]
    fn each_planned_fault_fires_once_at_its_step_and_is_counted() {
        let schedule = FaultSchedule::parse("model@3,loader@3,model@7,model@7").unwrap();
        let faults = Faults::plan(&schedule, 1).unwrap();
        assert!(!faults.fires(FaultTarget::Model, 2));
        assert!(faults.fires(FaultTarget::Model, 3));
        assert!(!faults.fires(FaultTarget::Model, 3), "a replayed step runs clean");
        assert!(!faults.fires(FaultTarget::Optimizer, 3), "each target has its own site");
        assert_eq!(faults.injected(), 1);
        assert_eq!(
            faults.unfired(),
            vec![(FaultTarget::Model, 7), (FaultTarget::Model, 7), (FaultTarget::Loader, 3)]
        );
        // A clone is the same plan: a restarted actor does not fire again.
        let clone = faults.clone();
        assert!(clone.fires(FaultTarget::Loader, 3));
        assert!(!faults.fires(FaultTarget::Loader, 3));
        assert_eq!(faults.injected(), 2);
    }
}
