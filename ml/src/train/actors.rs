//! The actors of a training run, children of its `rest_for_one` supervisor
//! in this order: (the GPU supervisor, when the products run on kernel
//! actors), model, optimizer, data loader, checkpointer, metrics.
//!
//! None of them owns anything the run cannot rebuild: the driver holds the
//! committed state (parameters, optimizer state, loader position, RNG) in
//! its in-memory snapshot and the loss curve, every actor restores from
//! them when it starts or when the driver says so after any crash. A
//! restarted actor therefore resumes exactly where the last snapshot left
//! the run, and the steps since are replayed deterministically.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbmd_gpu::faulty::{Fault, Operation, Rule, Trigger};
use zbmd_gpu::health::{DeviceHealth, HealthRegistry, Placement};
use zbmd_gpu::{BackendKind, BackendStatus, Device, DeviceId, ErrorClass, FaultyDevice, GpuPool};
use zbmd_rt::{Actor, ActorError, Context, ReplyTo};

use crate::checkpoint::{Checkpoint, CheckpointStore, NamedArray};
use crate::data::{Batch, DataLoader, Dataset, LoaderPosition, Prefetcher};
use crate::nn::{ModelError, Sequential};
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig, OptimizerState, ParamView};
use crate::rng::Rng;
use crate::tensor::{Graph, MatmulBackend, Product, Tensor, TensorError};
use crate::train::commit::{Committed, Params};
use crate::train::config::FaultTarget;

/// What every actor of one run shares.
pub(crate) struct Shared {
    /// The newest committed state: what a (re)started actor restores.
    pub snapshot: Mutex<Arc<Committed>>,
    /// Faults still to inject: each fires once, the first time its step is
    /// attempted.
    pub faults: Mutex<Vec<(FaultTarget, u64)>>,
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
    /// Where the model's products run.
    pub products: Products,
    /// The fault-injecting wrappers of the devices they may run on.
    pub faulty: Vec<Arc<FaultyDevice>>,
    /// Where checkpoints are written (opened, and locked, by the driver).
    pub store: Option<Arc<CheckpointStore>>,
    /// Why the last actor crashed, for the recovery report.
    pub crash: Mutex<Option<(FaultTarget, String)>>,
    /// Why, when and at which step the metrics actor crashed, each time
    /// since the driver last looked: kept apart from `crash`, because no
    /// step waits on that actor and the driver only notices at the epoch's
    /// end.
    pub metrics_crash: Mutex<Vec<MetricsCrash>>,
}

/// A crash of the metrics actor, for the report of its repair.
pub(crate) struct MetricsCrash {
    pub step: u64,
    pub at: Instant,
    pub why: String,
}

impl Shared {
    /// Takes the fault planned for `target` at `step`, if there is one.
    pub fn take_fault(&self, target: FaultTarget, step: u64) -> bool {
        let mut faults = self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match faults.iter().position(|&(t, s)| t == target && s == step) {
            Some(index) => {
                faults.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// Records why an actor is about to crash, and makes its exit reason.
    pub fn crash(&self, target: FaultTarget, message: String) -> ActorError {
        let error = ActorError::msg(&message);
        *self.crash.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((target, message));
        error
    }

    /// Takes the reason of the last crash.
    pub fn take_crash(&self) -> Option<(FaultTarget, String)> {
        self.crash.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    pub fn snapshot(&self) -> Arc<Committed> {
        self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn faulty(&self, device: DeviceId) -> Option<&Arc<FaultyDevice>> {
        self.faulty.iter().find(|faulty| faulty.id() == device)
    }
}

fn injected(shared: &Shared, target: FaultTarget, step: u64) -> ActorError {
    shared.crash(target, format!("injected fault: {} crash at step {step}", target.name()))
}

/// Where a stateful actor (optimizer, loader) stands in the run, so that it
/// serves only the step after the one it last served.
///
/// After a crash the driver restores every actor from the snapshot, but the
/// supervisor restarts a `rest_for_one` tree's later children on its own
/// time: an incarnation the driver already restored (and that served a step
/// since) can be replaced afterwards by a fresh one, restored from the
/// snapshot again and so a step or more behind the driver. Served, it would
/// repeat a batch or apply gradients to the wrong parameters, silently. It
/// refuses instead, and the driver restores the whole tree once more.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepCursor {
    at: u64,
}

impl StepCursor {
    /// How a refusal ends: the driver tells a refusal (a late restart's
    /// echo of a failure already recovered) from a failure of its own.
    pub const RESTARTED_LATE: &'static str = "it was restarted after the driver restored it";

    /// At the snapshot of step `step`.
    pub fn restored(step: u64) -> StepCursor {
        StepCursor { at: step }
    }

    /// Moves to `step` if it is the next one; otherwise says why not.
    pub fn advance(&mut self, actor: &str, step: u64) -> Result<(), String> {
        if step != self.at + 1 {
            return Err(format!(
                "the {actor} actor was asked for step {step} but stands at step {}: {}",
                self.at,
                Self::RESTARTED_LATE
            ));
        }
        self.at = step;
        Ok(())
    }
}

/// Builds the model its spec names (`[64, 128, 10]`, or a TOML file's path),
/// initialized from the seed.
pub(crate) fn build_model(spec: &str, seed: u64) -> Result<Sequential, String> {
    let mut rng = Rng::new(seed).fork("init");
    let text = if spec.trim_start().starts_with('[') {
        return Sequential::from_spec(spec, &mut rng).map_err(|error| error.to_string());
    } else {
        std::fs::read_to_string(spec).map_err(|error| format!("model file {spec}: {error}"))?
    };
    Sequential::from_toml(&text, &mut rng).map_err(|error| format!("model file {spec}: {error}"))
}

// ---------------------------------------------------------------------------
// Model

/// Where the model's matrix products run.
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
    Compute {
        step: u64,
        params: Params,
        batch: Arc<Batch>,
        rng_state: u64,
        reply: ReplyTo<Result<StepGrads, String>>,
    },
    /// Held-out loss and accuracy.
    Evaluate { params: Params, reply: ReplyTo<Result<(f32, f32), String>> },
    /// A request run on a blocking thread is done (sent by the actor to itself).
    Done(Box<(Work, Outcome)>),
}

/// A request's result, with the reply it is owed.
pub(crate) enum Outcome {
    Computed(ReplyTo<Result<StepGrads, String>>, Result<StepGrads, Failure>),
    Evaluated(ReplyTo<Result<(f32, f32), String>>, Result<(f32, f32), Failure>),
}

/// Why a request failed.
pub(crate) enum Failure {
    /// Something about the request (a parameter that does not fit, a batch
    /// that cannot fit in memory at any micro-batch): answered.
    Request(String),
    /// The device (or every device): the actor crashes and is placed anew.
    Device(String),
}

/// What the model actor computes with. It stays in the actor between
/// requests, and travels to a blocking thread for one whose products run on
/// kernel actors.
pub(crate) struct Work {
    model: Sequential,
    graph: Graph,
    /// Rows computed at once; halved after an out-of-memory.
    micro_batch: usize,
}

impl Work {
    fn load(&mut self, params: &[NamedArray]) -> Result<(), Failure> {
        for ((name, tensor), array) in self.model.parameters_mut().into_iter().zip(params) {
            if name != array.name || tensor.shape() != array.shape.as_slice() {
                return Err(Failure::Request(format!(
                    "parameter {name} does not match {}",
                    array.name
                )));
            }
            *tensor = Tensor::from_vec(array.data.clone(), &array.shape)
                .map_err(|error| Failure::Request(error.to_string()))?;
        }
        Ok(())
    }

    /// Bytes of activations one row costs: every layer's output, twice
    /// (values and gradients). A bound, not an exact figure: proportional
    /// to the model's width.
    fn bytes_per_row(&self) -> usize {
        (self.model.num_parameters() / 16).max(64) * 8
    }

    /// Halves the micro-batch after an out-of-memory, keeping it a whole
    /// number of gradient chunks; fails when it cannot shrink further.
    fn halve(&mut self, grad_chunk: usize, why: &str) -> Result<String, Failure> {
        let chunk = grad_chunk.max(1);
        let halved = (self.micro_batch / 2) / chunk * chunk;
        if halved == 0 {
            return Err(Failure::Request(format!(
                "out of memory with a micro-batch of {}: {why}",
                self.micro_batch
            )));
        }
        let event = format!("{why}: micro-batch {} → {halved}", self.micro_batch);
        self.micro_batch = halved;
        Ok(event)
    }

    /// One step's gradients over `batch`, summed over micro-batches (and
    /// within them over `grad_chunk`-row pieces, so that the sum is the
    /// same whatever the micro-batch). In host mode each micro-batch first
    /// reserves its activations on the placed device (`health`'s).
    fn compute(
        &mut self,
        shared: &Shared,
        health: Option<&Arc<DeviceHealth>>,
        params: &Params,
        batch: &Batch,
        rng_state: u64,
    ) -> Result<StepGrads, Failure> {
        self.load(params)?;
        let started = Instant::now();
        let before = kernel_placements(shared);
        let bytes_per_row = self.bytes_per_row();
        let rows = batch.rows;
        let mut events: Vec<(FaultTarget, String, Instant)> = Vec::new();
        // After an out-of-memory the step starts over with half the
        // micro-batch: the pieces, and so the sums, stay the same.
        'step: loop {
            self.model.set_training(true);
            self.model.set_dropout_rng_state(rng_state);
            let mut sums: Vec<Vec<f32>> = self
                .model
                .parameters()
                .iter()
                .map(|(_, tensor)| vec![0.0; tensor.shape().iter().product()])
                .collect();
            let mut loss = 0.0f32;
            let mut start = 0;
            while start < rows {
                let micro = self.micro_batch.min(rows - start);
                let reservation = match health {
                    None => None,
                    Some(health) => match health.device().alloc(micro * bytes_per_row) {
                        Ok(buffer) => Some(buffer),
                        Err(error) if error.class() == ErrorClass::OutOfMemory => {
                            let event = self.halve(shared.grad_chunk, &error.to_string())?;
                            events.push((FaultTarget::DeviceOom, event, Instant::now()));
                            continue 'step;
                        }
                        Err(error) => {
                            health.record_error(&error);
                            return Err(Failure::Device(format!(
                                "device {} failed: {error}",
                                health.id()
                            )));
                        }
                    },
                };
                let result =
                    self.micro_batch_grads(shared, batch, start, micro, &mut sums, &mut loss);
                if let (Some(health), Some(buffer)) = (health, reservation) {
                    let _ = health.device().free(buffer);
                }
                match result {
                    Ok(()) => {}
                    Err(TensorError::Device {
                        class: ErrorClass::OutOfMemory, message, ..
                    }) => {
                        let event = self.halve(shared.grad_chunk, &message)?;
                        events.push((FaultTarget::DeviceOom, event, Instant::now()));
                        continue 'step;
                    }
                    Err(TensorError::Device { message, .. }) => {
                        return Err(Failure::Device(message));
                    }
                    Err(error) => return Err(Failure::Request(error.to_string())),
                }
                start += micro;
            }
            let after = kernel_placements(shared);
            if after != before {
                let event = format!("kernel actors moved: {before} → {after}");
                events.push((FaultTarget::DeviceLost, event, started));
            }
            let device = match health {
                Some(health) => health.id().to_string(),
                None => after,
            };
            return Ok(StepGrads {
                loss,
                grads: sums,
                rng_state: self.model.dropout_rng_state(),
                events: events
                    .into_iter()
                    .map(|(target, event, since)| (target, event, since.elapsed()))
                    .collect(),
                device,
            });
        }
    }

    /// Adds the gradients of rows `start..start + micro` to `sums`, and
    /// their share of the batch's mean loss to `loss`, piece by piece (so
    /// that both sums are the same whatever the micro-batch).
    fn micro_batch_grads(
        &mut self,
        shared: &Shared,
        batch: &Batch,
        start: usize,
        micro: usize,
        sums: &mut [Vec<f32>],
        loss: &mut f32,
    ) -> Result<(), TensorError> {
        let rows = batch.rows;
        let chunk = if shared.grad_chunk == 0 { micro } else { shared.grad_chunk.min(micro) };
        let mut offset = start;
        while offset < start + micro {
            let take = chunk.min(start + micro - offset);
            let features = batch.features[offset * batch.dim..(offset + take) * batch.dim].to_vec();
            let targets: Vec<usize> =
                batch.labels[offset..offset + take].iter().map(|&l| l as usize).collect();
            let x = Tensor::from_vec(features, &[take, batch.dim])?;
            let graph = &mut self.graph;
            graph.clear();
            let input = graph.input(&x);
            let logits = self.model.forward(graph, input).map_err(tensor_error)?;
            let mean = graph.cross_entropy(logits, &targets)?;
            let scaled =
                if take == rows { mean } else { graph.scale(mean, take as f32 / rows as f32)? };
            *loss += graph.value(scaled)[0];
            let grads = graph.backward(scaled)?;
            for (sum, &var) in sums.iter_mut().zip(self.model.param_vars()) {
                let grad = grads.get(var).ok_or_else(|| TensorError::InvalidArgument {
                    op: "backward",
                    what: "a parameter has no gradient".into(),
                })?;
                for (s, g) in sum.iter_mut().zip(grad) {
                    *s += g;
                }
            }
            graph.recycle(grads);
            offset += take;
        }
        Ok(())
    }

    fn evaluate(&mut self, shared: &Shared, params: &Params) -> Result<(f32, f32), Failure> {
        self.load(params)?;
        let failure = |error: TensorError| match error {
            TensorError::Device { message, .. } => Failure::Device(message),
            other => Failure::Request(other.to_string()),
        };
        self.model.set_training(false);
        let test = &shared.test;
        let rows = test.len();
        let x = Tensor::from_vec(test.features.clone(), &[rows, test.dim]).map_err(failure)?;
        let targets: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
        let graph = &mut self.graph;
        graph.clear();
        let input = graph.input(&x);
        let logits = self.model.forward(graph, input).map_err(tensor_error).map_err(failure)?;
        let loss = graph.cross_entropy(logits, &targets).map_err(failure)?;
        let loss_value = graph.value(loss)[0];
        let values = graph.value(logits);
        let classes = values.len() / rows.max(1);
        let correct = values
            .chunks_exact(classes.max(1))
            .zip(&targets)
            .filter(|(row, target)| {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
                best == **target
            })
            .count();
        self.model.set_training(true);
        Ok((loss_value, correct as f32 / rows.max(1) as f32))
    }
}

/// A model's error as the tensor error under it (a device failure stays one).
fn tensor_error(error: ModelError) -> TensorError {
    match error {
        ModelError::Tensor(error) => error,
        other => TensorError::InvalidArgument { op: "forward", what: other.to_string() },
    }
}

/// Where the kernel actors run now ("vulkan:0"), or "" without them.
fn kernel_placements(shared: &Shared) -> String {
    let Products::Kernels { pool, .. } = &shared.products else {
        return String::new();
    };
    let places: Vec<String> = pool
        .placements()
        .iter()
        .map(|place| place.map_or_else(|| "(restarting)".to_owned(), |id| id.to_string()))
        .collect();
    places.join(", ")
}

/// Computes gradients, and evaluates, on its device.
pub(crate) struct ModelActor {
    shared: Arc<Shared>,
    /// None while lent to a blocking thread.
    work: Option<Work>,
    /// The device reserving activations (host mode only).
    placement: Option<Placement>,
}

impl ModelActor {
    pub fn new(shared: Arc<Shared>) -> Self {
        ModelActor { shared, work: None, placement: None }
    }

    /// Injects the device faults planned for `step` into the device the
    /// step will use.
    fn inject_device_faults(&self, step: u64) {
        let device = match (&self.shared.products, &self.placement) {
            (Products::Host { .. }, Some(placement)) => Some(placement.health().id()),
            (Products::Kernels { pool, .. }, _) => pool.placements().into_iter().flatten().next(),
            _ => None,
        };
        let Some(faulty) = device.and_then(|device| self.shared.faulty(device)) else {
            return;
        };
        let kernels = matches!(self.shared.products, Products::Kernels { .. });
        if self.shared.take_fault(FaultTarget::DeviceLost, step) {
            let operation = if kernels { Operation::Launch } else { Operation::Alloc };
            faulty.fail_next(operation, Fault::DeviceLost);
        }
        if self.shared.take_fault(FaultTarget::DeviceOom, step) {
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

    /// Answers a finished request, or crashes when its device failed.
    fn finish(&mut self, outcome: Outcome) -> Result<(), ActorError> {
        let device_failed = |message: String| self.shared.crash(FaultTarget::DeviceLost, message);
        match outcome {
            Outcome::Computed(reply, result) => match result {
                Ok(grads) => reply.reply(Ok(grads)),
                Err(Failure::Request(error)) => reply.reply(Err(error)),
                Err(Failure::Device(error)) => return Err(device_failed(error)),
            },
            Outcome::Evaluated(reply, result) => match result {
                Ok(answer) => reply.reply(Ok(answer)),
                Err(Failure::Request(error)) => reply.reply(Err(error)),
                Err(Failure::Device(error)) => return Err(device_failed(error)),
            },
        };
        Ok(())
    }

    /// Runs `request` on the work, here (host mode) or on a blocking
    /// thread (kernel actors), and answers it when done.
    fn run(
        &mut self,
        ctx: &mut Context<'_, Self>,
        request: impl FnOnce(&mut Work, &Shared, Option<&Arc<DeviceHealth>>) -> Outcome + Send + 'static,
    ) -> Result<(), ActorError> {
        let mut work = self.work.take().expect("checked by the caller");
        match &self.shared.products {
            Products::Host { .. } => {
                let health = self.placement.as_ref().map(|placement| placement.health().clone());
                let outcome = request(&mut work, &self.shared, health.as_ref());
                self.work = Some(work);
                self.finish(outcome)
            }
            Products::Kernels { .. } => {
                let shared = self.shared.clone();
                let job = move || {
                    let outcome = request(&mut work, &shared, None);
                    Box::new((work, outcome))
                };
                ctx.spawn_blocking(job, ModelMsg::Done).map_err(|error| {
                    ActorError::msg(format!("model actor: no blocking thread: {error}"))
                })
            }
        }
    }
}

impl Actor for ModelActor {
    type Msg = ModelMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let model =
            build_model(&self.shared.model_spec, self.shared.seed).map_err(ActorError::msg)?;
        let mut graph = Graph::new();
        match &self.shared.products {
            Products::Host { devices } => {
                let placement = devices
                    .place(&[])
                    .ok_or_else(|| ActorError::msg("no healthy device for the model"))?;
                self.placement = Some(placement);
            }
            Products::Kernels { matmul, .. } => graph.set_matmul_backend(Some(matmul.clone())),
        }
        self.work = Some(Work { model, graph, micro_batch: self.shared.batch_size });
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: ModelMsg) -> Result<(), ActorError> {
        const BUSY: &str = "the model actor is busy with another request";
        match msg {
            ModelMsg::Compute { step, params, batch, rng_state, reply } => {
                if self.shared.take_fault(FaultTarget::Model, step) {
                    return Err(injected(&self.shared, FaultTarget::Model, step));
                }
                if self.work.is_none() {
                    reply.reply(Err(BUSY.into()));
                    return Ok(());
                }
                self.inject_device_faults(step);
                self.run(ctx, move |work, shared, health| {
                    let result = work.compute(shared, health, &params, &batch, rng_state);
                    Outcome::Computed(reply, result)
                })
            }
            ModelMsg::Evaluate { params, reply } => {
                if self.work.is_none() {
                    reply.reply(Err(BUSY.into()));
                    return Ok(());
                }
                self.run(ctx, move |work, shared, _| {
                    Outcome::Evaluated(reply, work.evaluate(shared, &params))
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

// ---------------------------------------------------------------------------
// Optimizer

pub(crate) enum OptimizerMsg {
    /// Applies one step's gradients; answers the new parameters, the
    /// learning rate used and, if asked (a snapshot is due), its state.
    Step {
        step: u64,
        grads: Vec<Vec<f32>>,
        /// Whether to answer the state, written over this old one when
        /// given (so that a snapshot each step allocates no state).
        with_state: Option<OptimizerState>,
        reply: ReplyTo<Result<Stepped, String>>,
    },
    /// Resets to the snapshot.
    Restore { reply: ReplyTo<Result<(), String>> },
}

/// What an optimizer step answers.
pub(crate) struct Stepped {
    pub params: Params,
    pub lr: f64,
    pub state: Option<Arc<OptimizerState>>,
}

pub(crate) struct OptimizerActor {
    pub shared: Arc<Shared>,
    pub optimizer: Option<Box<dyn Optimizer + Send>>,
    pub params: Vec<NamedArray>,
    /// The last step it applied.
    pub at: StepCursor,
}

impl OptimizerActor {
    pub fn new(shared: Arc<Shared>) -> Self {
        OptimizerActor { shared, optimizer: None, params: Vec::new(), at: StepCursor::restored(0) }
    }

    fn restore(&mut self) -> Result<(), String> {
        let snapshot = self.shared.snapshot();
        let mut optimizer = self.shared.optimizer.build().map_err(|error| error.to_string())?;
        if snapshot.optimizer.step > 0 {
            optimizer.load_state(&snapshot.optimizer).map_err(|error| error.to_string())?;
        }
        self.params = snapshot.params.to_vec();
        self.optimizer = Some(optimizer);
        self.at = StepCursor::restored(snapshot.step);
        Ok(())
    }
}

impl Actor for OptimizerActor {
    type Msg = OptimizerMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.restore().map_err(ActorError::msg)
    }

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: OptimizerMsg) -> Result<(), ActorError> {
        match msg {
            OptimizerMsg::Step { step, grads, with_state, reply } => {
                if self.shared.take_fault(FaultTarget::Optimizer, step) {
                    return Err(injected(&self.shared, FaultTarget::Optimizer, step));
                }
                if let Err(stale) = self.at.advance("optimizer", step) {
                    reply.reply(Err(stale));
                    return Ok(());
                }
                let optimizer = self.optimizer.as_mut().expect("restored in started");
                if let Some(schedule) = &self.shared.schedule {
                    optimizer.set_lr(schedule.lr_at(step - 1));
                }
                let lr = optimizer.lr();
                let mut views: Vec<ParamView<'_>> = self
                    .params
                    .iter_mut()
                    .zip(&grads)
                    .map(|(param, grad)| ParamView {
                        name: &param.name,
                        value: &mut param.data,
                        grad,
                    })
                    .collect();
                let result = optimizer.step(&mut views).map_err(|error| error.to_string());
                let state = with_state.map(|mut state| {
                    optimizer.state_into(&mut state);
                    Arc::new(state)
                });
                reply.reply(result.map(|()| Stepped {
                    params: Arc::new(self.params.clone()),
                    lr,
                    state,
                }));
            }
            OptimizerMsg::Restore { reply } => {
                reply.reply(self.restore());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Data loader

pub(crate) enum LoaderMsg {
    /// Step `step`'s batch, and the position after it; refused when this
    /// incarnation is not at the step before (see [`StepCursor`]).
    Next {
        step: u64,
        reply: ReplyTo<Result<(Arc<Batch>, LoaderPosition), String>>,
    },
    Restore {
        reply: ReplyTo<Result<(), String>>,
    },
}

/// Batches ahead the loader prepares while the model computes.
const PREFETCH: usize = 2;

/// Serves batches in order, preparing the next [`PREFETCH`] after each one
/// it hands out (on its own shard, while the model works on this one).
pub(crate) struct LoaderActor {
    pub shared: Arc<Shared>,
    pub loader: Option<Prefetcher>,
    /// The last step it served a batch for.
    pub at: StepCursor,
}

impl LoaderActor {
    fn restore(&mut self) -> Result<(), String> {
        let mut loader = DataLoader::builder(self.shared.train.clone())
            .batch_size(self.shared.batch_size)
            .seed(self.shared.seed)
            .build()
            .map_err(|error| error.to_string())?;
        let snapshot = self.shared.snapshot();
        if snapshot.loader != LoaderPosition::default() {
            loader.seek(&snapshot.loader).map_err(|error| error.to_string())?;
        }
        self.loader = Some(Prefetcher::new(loader, PREFETCH).map_err(|error| error.to_string())?);
        self.at = StepCursor::restored(snapshot.step);
        Ok(())
    }
}

impl Actor for LoaderActor {
    type Msg = LoaderMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.restore().map_err(ActorError::msg)
    }

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: LoaderMsg) -> Result<(), ActorError> {
        match msg {
            LoaderMsg::Next { step, reply } => {
                if self.shared.take_fault(FaultTarget::Loader, step) {
                    return Err(injected(&self.shared, FaultTarget::Loader, step));
                }
                if let Err(stale) = self.at.advance("loader", step) {
                    reply.reply(Err(stale));
                    return Ok(());
                }
                let loader = self.loader.as_mut().expect("restored in started");
                let batch = loader.next_batch();
                reply.reply(Ok((Arc::new(batch), loader.position())));
                loader.fill();
            }
            LoaderMsg::Restore { reply } => {
                reply.reply(self.restore());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Checkpointer

pub(crate) enum CheckpointerMsg {
    Save { checkpoint: Arc<Checkpoint>, reply: ReplyTo<Result<PathBuf, String>> },
}

/// Writes checkpoints into the run's store. The driver opened the store
/// (and holds its directory's lock) before the first step; every
/// incarnation of this actor writes through it.
pub(crate) struct CheckpointerActor {
    pub shared: Arc<Shared>,
}

impl Actor for CheckpointerActor {
    type Msg = CheckpointerMsg;

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        msg: CheckpointerMsg,
    ) -> Result<(), ActorError> {
        let CheckpointerMsg::Save { checkpoint, reply } = msg;
        let Some(store) = &self.shared.store else {
            reply.reply(Err("no checkpoint directory".into()));
            return Ok(());
        };
        if self.shared.take_fault(FaultTarget::Checkpointer, checkpoint.step) {
            // Die halfway through a write, as a crash would: half the temp
            // file this save writes, never renamed. The retried save
            // replaces it; a store opened later removes it.
            let bytes = checkpoint.encode().map_err(|error| ActorError::msg(error.to_string()))?;
            let _ = std::fs::write(store.temp_path_for(checkpoint.step), &bytes[..bytes.len() / 2]);
            return Err(injected(&self.shared, FaultTarget::Checkpointer, checkpoint.step));
        }
        reply.reply(store.save(&checkpoint).map_err(|error| error.to_string()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Metrics

pub(crate) enum MetricsMsg {
    /// Step `step`'s loss (steps count from 1).
    Record { step: u64, loss: f32 },
    /// The mean loss of an epoch's steps, or, when the curve misses one of
    /// them (records lost to a restart of this actor, or dropped by a full
    /// mailbox), `Err` with what it holds: the driver then restores the
    /// curve and asks again.
    EpochMean { epoch: u64, reply: ReplyTo<Result<f32, MetricsGap>> },
    /// Replaces the curve with the committed one (after a crash, whose
    /// steps since the snapshot are being replayed, at the start of a
    /// resumed run, or to fill a gap).
    Restore { losses: Vec<f32>, reply: ReplyTo<()> },
}

/// What the metrics actor holds when its curve misses steps of an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MetricsGap {
    /// How many steps' losses it holds, from step 1 on.
    pub held: u64,
    /// Whether it is an incarnation that replaced an earlier one (after a
    /// crash of its own or of an actor before it) and that the driver has
    /// not restored: the supervisor restarts a `rest_for_one` tree's later
    /// children on its own time, so a restart can land after the driver
    /// restored the tree, and then this actor starts with an empty curve.
    pub replaced: bool,
}

/// Every step's loss, as the metrics actor holds it.
#[derive(Debug)]
pub(crate) struct LossCurve {
    /// Step `i + 1`'s loss at `i`, without gaps: a record past the end is
    /// dropped, and the missing steps are reported by `epoch_mean`.
    losses: Vec<f32>,
    /// Whether this incarnation replaced an earlier one and has not been
    /// restored since ([`MetricsGap::replaced`]).
    replaced: bool,
}

impl LossCurve {
    /// An empty curve; `replaced`: in an incarnation after the first.
    pub fn new(replaced: bool) -> LossCurve {
        LossCurve { losses: Vec::new(), replaced }
    }

    /// Step `step`'s loss (steps count from 1). A replayed step replaces
    /// the one it repeats and everything after it; a step past the end
    /// would leave a hole, and is dropped.
    fn record(&mut self, step: u64, loss: f32) {
        let index = step.saturating_sub(1) as usize;
        if index <= self.losses.len() {
            self.losses.truncate(index);
            self.losses.push(loss);
        }
    }

    /// The mean loss of epoch `epoch` (from 0), `per_epoch` steps each.
    fn epoch_mean(&self, epoch: u64, per_epoch: u64) -> Result<f32, MetricsGap> {
        let first = epoch.saturating_mul(per_epoch);
        let last = first.saturating_add(per_epoch);
        usize::try_from(first)
            .ok()
            .zip(usize::try_from(last).ok())
            .and_then(|(first, last)| self.losses.get(first..last))
            .filter(|losses| !losses.is_empty())
            .map(|losses| losses.iter().sum::<f32>() / losses.len() as f32)
            .ok_or(MetricsGap { held: self.losses.len() as u64, replaced: self.replaced })
    }

    /// Replaces the curve with the driver's.
    fn restore(&mut self, losses: Vec<f32>) {
        self.losses = losses;
        self.replaced = false;
    }
}

/// Keeps the run's training curve. The driver owns the committed curve and
/// restores this actor from it.
pub(crate) struct MetricsActor {
    pub shared: Arc<Shared>,
    pub curve: LossCurve,
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: MetricsMsg) -> Result<(), ActorError> {
        match msg {
            MetricsMsg::Record { step, loss } => {
                if self.shared.take_fault(FaultTarget::Metrics, step) {
                    let why = format!("injected fault: metrics crash at step {step}");
                    let error = ActorError::msg(&why);
                    let crash = MetricsCrash { step, at: Instant::now(), why };
                    self.shared.metrics_crash.lock().unwrap_or_else(|p| p.into_inner()).push(crash);
                    return Err(error);
                }
                self.curve.record(step, loss);
            }
            MetricsMsg::EpochMean { epoch, reply } => {
                let per_epoch = self.shared.batches_per_epoch.max(1);
                reply.reply(self.curve.epoch_mean(epoch, per_epoch));
            }
            MetricsMsg::Restore { losses, reply } => {
                self.curve.restore(losses);
                reply.reply(());
            }
        }
        Ok(())
    }
}

/// The devices a run uses, each behind a fault-injecting wrapper (so
/// device faults can be injected), best first.
pub(crate) struct Devices {
    pub faulty: Vec<Arc<FaultyDevice>>,
    /// Whether the model's products run on kernel actors over them (or on
    /// the host, the devices then holding only activation reservations).
    pub kernels: bool,
}

impl Devices {
    /// The devices for `backend` (`None`: the best found):
    ///
    /// - an accelerator backend (`cuda`, `rocm`, `vulkan`, or the first
    ///   hardware accelerator found when none is named) runs the products on
    ///   kernel actors over its devices, with the host CPU last so that a
    ///   lost device has somewhere to go;
    /// - the CPU (named, or when no hardware accelerator is found; a
    ///   software Vulkan device is no better than the host) computes on the
    ///   host, with two logical CPU devices for placement and faults, unless
    ///   `kernel_actors` asks for the kernel actors anyway.
    pub fn choose(backend: Option<&str>, kernel_actors: bool) -> Result<Devices, String> {
        let wrap = |device: Arc<dyn Device>| Arc::new(FaultyDevice::with_rules(device, []));
        let budget = zbmd_gpu::cpu::default_budget();
        let cpu = |ordinal| -> Arc<dyn Device> {
            Arc::new(zbmd_gpu::CpuDevice::with_ordinal(ordinal, budget))
        };
        // Named in the settings, else in ZBMD_GPU_BACKEND: either way a
        // name that is wrong, or a backend that is absent, is an error,
        // never a silent fall back to another backend.
        let from_env = std::env::var(zbmd_gpu::detect::BACKEND_ENV)
            .ok()
            .filter(|name| backend.is_none() && !name.trim().is_empty());
        let (backend, origin) = match (backend, &from_env) {
            (Some(name), _) => (Some(name), "backend".to_string()),
            (None, Some(name)) => (Some(name.as_str()), zbmd_gpu::detect::BACKEND_ENV.to_string()),
            (None, None) => (None, String::new()),
        };
        let wanted = match backend {
            None => None,
            Some(name) => Some(BackendKind::parse(name).ok_or_else(|| {
                format!("{origin} {name:?}: expected one of cpu, cuda, rocm, vulkan")
            })?),
        };
        let accelerators: Vec<Arc<dyn Device>> = match wanted {
            Some(BackendKind::Cpu) => Vec::new(),
            Some(kind) => {
                let detection = zbmd_gpu::detect_backends(Some(kind));
                let devices: Vec<_> = detection
                    .devices
                    .iter()
                    .filter(|device| device.id().backend == kind)
                    .cloned()
                    .collect();
                if devices.is_empty() {
                    let why = match &detection.backend(kind).status {
                        BackendStatus::Absent(reason) => reason.clone(),
                        BackendStatus::Available(_) => "no device".into(),
                    };
                    return Err(format!("{origin} {}: {why}", kind.name()));
                }
                devices
            }
            None => {
                let detection = zbmd_gpu::detect_devices();
                let best = detection.devices.iter().find(|device| {
                    !device.info().is_software && device.id().backend != BackendKind::Cpu
                });
                let kind = best.map(|device| device.id().backend);
                detection
                    .devices
                    .into_iter()
                    .filter(|device| {
                        Some(device.id().backend) == kind && !device.info().is_software
                    })
                    .collect()
            }
        };
        if accelerators.is_empty() {
            return Ok(Devices {
                faulty: (0..2).map(|n| wrap(cpu(n))).collect(),
                kernels: kernel_actors,
            });
        }
        let mut faulty: Vec<Arc<FaultyDevice>> = accelerators.into_iter().map(wrap).collect();
        faulty.push(wrap(cpu(0)));
        Ok(Devices { faulty, kernels: true })
    }

    /// The wrapped devices, as `Device`s.
    pub fn devices(&self) -> Vec<Arc<dyn Device>> {
        self.faulty.iter().map(|faulty| faulty.clone() as Arc<dyn Device>).collect()
    }
}

/// Checks that `backend` multiplies correctly before a run trusts it with
/// its products: a driver or kernel that computes wrong numbers would
/// otherwise train garbage without a single error. One small product whose
/// exact answer is known (eighths times quarters: every partial sum is
/// exact in `f32`).
pub(crate) fn check_products(backend: &dyn MatmulBackend) -> Result<(), String> {
    let (m, n, k) = (17, 9, 33);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
    let product = Product::new(&a, &b, (m, n, k)).map_err(|error| error.to_string())?;
    let mut got = vec![f32::NAN; m * n];
    backend.matmul(product, &mut got, false).map_err(|error| {
        format!("{}: the check before training failed: {error}", backend.describe())
    })?;
    let mut worst = 0.0f32;
    for row in 0..m {
        for col in 0..n {
            let error = (got[row * n + col] - product.reference(row, col)).abs();
            // NaN compares false: make it the worst.
            worst = if error.is_nan() { f32::INFINITY } else { worst.max(error) };
        }
    }
    if worst > 1e-3 {
        return Err(format!(
            "{} computes matrix products wrongly (an entry is off by {worst}): \
             train with --backend cpu, and report the device",
            backend.describe()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stateful_actor_serves_only_the_step_after_its_last() {
        let mut at = StepCursor::restored(4);
        assert!(at.advance("loader", 5).is_ok());
        // A fresh incarnation, restored from the same snapshot again, is a
        // step behind the driver: it refuses step 6 rather than serving 5.
        let mut fresh = StepCursor::restored(4);
        let error = fresh.advance("loader", 6).unwrap_err();
        assert!(error.contains("asked for step 6 but stands at step 4"), "{error}");
        assert!(at.advance("loader", 6).is_ok());
        assert!(at.advance("loader", 6).is_err(), "nor twice the same step");
        assert!(fresh.advance("loader", 5).is_ok(), "a refusal moves nothing");
    }

    #[test]
    fn a_loss_curve_tells_a_replaced_incarnation_from_a_lost_record() {
        // The first incarnation: a dropped record leaves a gap, no restart.
        let mut first = LossCurve::new(false);
        first.record(1, 1.0);
        first.record(3, 3.0);
        let gap = first.epoch_mean(0, 2).unwrap_err();
        assert_eq!((gap.held, gap.replaced), (1, false));
        first.record(2, 2.0);
        assert_eq!(first.epoch_mean(0, 2), Ok(1.5));
        // A replayed step replaces the one it repeats and those after it.
        first.record(2, 4.0);
        assert_eq!(first.epoch_mean(0, 2), Ok(2.5));
        assert!(first.epoch_mean(1, 2).is_err(), "epoch 2 has no step yet");

        // A later incarnation the driver has not restored says so, until
        // it is restored.
        let mut later = LossCurve::new(true);
        later.record(3, 3.0);
        let gap = later.epoch_mean(1, 2).unwrap_err();
        assert_eq!((gap.held, gap.replaced), (0, true));
        later.restore(vec![1.0, 2.0]);
        later.record(3, 3.0);
        later.record(4, 5.0);
        assert_eq!(later.epoch_mean(1, 2), Ok(4.0));
        later.record(6, 6.0);
        assert!(!later.epoch_mean(2, 2).unwrap_err().replaced, "restored since");
        assert!(later.epoch_mean(u64::MAX, u64::MAX).is_err(), "no overflow");
    }

    /// Products through the host's arithmetic, off by `bias` everywhere.
    struct Naive {
        bias: f32,
    }

    impl MatmulBackend for Naive {
        fn matmul(
            &self,
            product: Product<'_>,
            dst: &mut [f32],
            accumulate: bool,
        ) -> Result<(), TensorError> {
            let (m, n, _) = product.dims();
            for row in 0..m {
                for col in 0..n {
                    let old = if accumulate { dst[row * n + col] } else { 0.0 };
                    dst[row * n + col] = old + product.reference(row, col) + self.bias;
                }
            }
            Ok(())
        }

        fn describe(&self) -> String {
            format!("naive (bias {})", self.bias)
        }
    }

    #[test]
    fn a_backend_that_multiplies_wrongly_is_refused_by_name() {
        assert_eq!(check_products(&Naive { bias: 0.0 }), Ok(()));
        let error = check_products(&Naive { bias: 0.01 }).unwrap_err();
        assert!(error.contains("naive (bias 0.01) computes matrix products wrongly"), "{error}");
        let error = check_products(&Naive { bias: f32::NAN }).unwrap_err();
        assert!(error.contains("off by inf"), "{error}");
    }
}
