//! The model actor: owns its layers, its tape, its micro-batch and (on the
//! host) its placement on a device; computes a step's gradients and the
//! held-out figures from the parameters each request carries. It holds no
//! run state, so a restarted incarnation needs no restore.

use std::sync::Arc;
use std::time::Duration;

use zbmd_gpu::faulty::{Fault, Operation, Rule, Trigger};
use zbmd_gpu::health::{DeviceHealth, HealthRegistry, Placement};
use zbmd_gpu::{Device, FaultyDevice, GpuPool};
use zbmd_rt::{Actor, ActorError, Context};

use super::compute::{ComputeError, Work};
use super::{Faults, Refusal, Reply, RunSettings, build_model, crash, injected};
use crate::data::Batch;
use crate::tensor::{Graph, MatmulBackend};
use crate::train::commit::Params;
use crate::train::config::FaultTarget;

/// Where the model's matrix products run.
#[derive(Clone)]
pub(crate) enum Products {
    /// In the model actor, on the host: the fastest way for the small models
    /// this trains on a CPU. `devices` are logical CPU devices (behind
    /// fault-injecting wrappers) on which the actor reserves each
    /// micro-batch's activation memory, so that a device fault or an
    /// out-of-memory meets the step where it would on an accelerator.
    Host { devices: Arc<HealthRegistry> },
    /// On the GPU layer's kernel actors (the training tree's first child),
    /// one job per product. A job's answer is waited for synchronously, so
    /// the model actor lends its work to one of the runtime's blocking
    /// threads for each request rather than block its shard.
    Kernels { pool: Arc<GpuPool>, matmul: Arc<dyn MatmulBackend> },
}

/// What every incarnation of the model actor starts from: the run's
/// settings, where the products run, and the fault-injecting wrappers of
/// the devices they may run on.
pub(crate) struct ModelSetup {
    pub run: Arc<RunSettings>,
    pub products: Products,
    pub faulty: Vec<Arc<FaultyDevice>>,
    pub faults: Faults,
}

/// A step's gradients and what it cost.
pub(crate) struct StepGrads {
    pub loss: f32,
    pub grads: Vec<Vec<f32>>,
    pub rng_state: u64,
    /// Repairs made during the step (a halved micro-batch, a kernel actor
    /// that moved to another device), and the time from each to the end of
    /// the step's computation.
    pub events: Vec<(FaultTarget, String, Duration)>,
    pub device: String,
}

pub(crate) enum ModelMsg {
    /// Step `step`'s gradients of `batch` at `params`.
    Compute {
        step: u64,
        params: Params,
        batch: Arc<Batch>,
        rng_state: u64,
        reply: Reply<StepGrads>,
    },
    /// Held-out loss and accuracy.
    Evaluate { params: Params, reply: Reply<(f32, f32)> },
    /// A request run on a blocking thread is done (sent by the actor to itself).
    Done(Box<(Work, Outcome)>),
}

/// A request's result, with the reply it is owed.
pub(crate) enum Outcome {
    Computed(Reply<StepGrads>, Result<StepGrads, ComputeError>),
    Evaluated(Reply<(f32, f32)>, Result<(f32, f32), ComputeError>),
}

/// Reductions a request's computation accounts for on its shard (host
/// mode): a step is one long, unpreemptible piece of work, and accounting
/// a whole turn's budget for it ends the actor's turn at once, so the
/// shard serves its other actors before this one runs again.
const REQUEST_REDUCTIONS: u32 = zbmd_rt::runtime::DEFAULT_REDUCTION_BUDGET;

/// Computes gradients, and evaluates, on its device.
pub(crate) struct ModelActor {
    setup: Arc<ModelSetup>,
    /// None while lent to a blocking thread.
    work: Option<Work>,
    /// The device reserving activations (host mode only).
    placement: Option<Placement>,
}

impl ModelActor {
    pub fn new(setup: Arc<ModelSetup>) -> Self {
        ModelActor { setup, work: None, placement: None }
    }

    /// Injects the device faults planned for `step` into the device the
    /// step will use.
    fn inject_device_faults(&self, step: u64) {
        let setup = &self.setup;
        let device = match (&setup.products, &self.placement) {
            (Products::Host { .. }, Some(placement)) => Some(placement.health().id()),
            (Products::Kernels { pool, .. }, _) => pool.placements().into_iter().flatten().next(),
            _ => None,
        };
        let Some(faulty) =
            device.and_then(|device| setup.faulty.iter().find(|faulty| faulty.id() == device))
        else {
            return;
        };
        let kernels = matches!(setup.products, Products::Kernels { .. });
        if setup.faults.fires(FaultTarget::DeviceLost, step) {
            let operation = if kernels { Operation::Launch } else { Operation::Alloc };
            faulty.fail_next(operation, Fault::DeviceLost);
        }
        if setup.faults.fires(FaultTarget::DeviceOom, step) {
            if kernels {
                // A kernel actor answers an out-of-memory only when a
                // second try, after freeing its cached buffers, fails too.
                faulty.fail_next(Operation::Launch, Fault::OutOfMemory);
                let next = faulty.calls(Operation::Launch) + 2;
                faulty.add_rule(Rule {
                    operation: Operation::Launch,
                    fault: Fault::OutOfMemory,
                    trigger: Trigger::OnCall(next),
                });
            } else {
                faulty.fail_next(Operation::Alloc, Fault::OutOfMemory);
            }
        }
    }

    /// Answers a finished request, or crashes when its device failed (the
    /// reply says why first).
    fn finish(&mut self, outcome: Outcome) -> Result<(), ActorError> {
        match outcome {
            Outcome::Computed(reply, result) => answer(reply, result),
            Outcome::Evaluated(reply, result) => answer(reply, result),
        }
    }

    /// Runs `request` on the work, here (host mode, accounting for it) or
    /// on a blocking thread (kernel actors), and answers it when done.
    fn run(
        &mut self,
        ctx: &mut Context<'_, Self>,
        request: impl FnOnce(&mut Work, &ModelSetup, Option<&Arc<DeviceHealth>>) -> Outcome
        + Send
        + 'static,
    ) -> Result<(), ActorError> {
        let Some(mut work) = self.work.take() else {
            return Err(ActorError::msg("the model actor's work is lent out; checked by handle"));
        };
        match &self.setup.products {
            Products::Host { .. } => {
                let health = self.placement.as_ref().map(|placement| placement.health().clone());
                let outcome = request(&mut work, &self.setup, health.as_ref());
                ctx.consume(REQUEST_REDUCTIONS);
                self.work = Some(work);
                self.finish(outcome)
            }
            Products::Kernels { .. } => {
                let setup = self.setup.clone();
                let job = move || {
                    let outcome = request(&mut work, &setup, None);
                    Box::new((work, outcome))
                };
                ctx.spawn_blocking(job, ModelMsg::Done).map_err(|error| {
                    ActorError::msg(format!("model actor: no blocking thread: {error}"))
                })
            }
        }
    }
}

/// Answers `reply` with `result`: a request's failure is answered, a
/// device's crashes the actor (after the reply says why).
fn answer<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, ComputeError>,
) -> Result<(), ActorError> {
    match result {
        Ok(answer) => {
            reply.reply(Ok(answer));
        }
        Err(ComputeError::Request(error)) => {
            reply.reply(Err(Refusal::Declined(error)));
        }
        Err(ComputeError::Device(error)) => {
            return Err(crash(reply, FaultTarget::DeviceLost, error));
        }
    }
    Ok(())
}

impl Actor for ModelActor {
    type Msg = ModelMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let run = &self.setup.run;
        let model = build_model(&run.model_spec, run.seed).map_err(ActorError::msg)?;
        let mut graph = Graph::new();
        match &self.setup.products {
            Products::Host { devices } => {
                let placement = devices
                    .place(&[])
                    .ok_or_else(|| ActorError::msg("no healthy device for the model"))?;
                self.placement = Some(placement);
            }
            Products::Kernels { matmul, .. } => graph.set_matmul_backend(Some(matmul.clone())),
        }
        self.work = Some(Work::new(model, graph, run.batch_size));
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: ModelMsg) -> Result<(), ActorError> {
        const BUSY: &str = "the model actor is busy with another request";
        match msg {
            ModelMsg::Compute { step, params, batch, rng_state, reply } => {
                if self.setup.faults.fires(FaultTarget::Model, step) {
                    let reason = injected(FaultTarget::Model, step);
                    return Err(crash(reply, FaultTarget::Model, reason));
                }
                if self.work.is_none() {
                    reply.reply(Err(Refusal::Declined(BUSY.into())));
                    return Ok(());
                }
                self.inject_device_faults(step);
                self.run(ctx, move |work, setup, health| {
                    let grad_chunk = setup.run.grad_chunk;
                    let result = work.compute(
                        grad_chunk,
                        &setup.products,
                        health,
                        &params,
                        &batch,
                        rng_state,
                    );
                    Outcome::Computed(reply, result)
                })
            }
            ModelMsg::Evaluate { params, reply } => {
                if self.work.is_none() {
                    reply.reply(Err(Refusal::Declined(BUSY.into())));
                    return Ok(());
                }
                self.run(ctx, move |work, setup, _| {
                    Outcome::Evaluated(reply, work.evaluate(&setup.run.test, &params))
                })
            }
            ModelMsg::Done(done) => {
                let (work, outcome) = *done;
                self.work = Some(work);
                self.finish(outcome)
            }
        }
    }
}
