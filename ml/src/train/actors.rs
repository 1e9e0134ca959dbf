//! The actors of a training run, children of its `rest_for_one` supervisor
//! in this order: model, optimizer, data loader, checkpointer, metrics.
//!
//! None of them owns anything the run cannot rebuild: the driver holds the
//! committed state (parameters, optimizer state, loader position, RNG) in
//! its in-memory snapshot, every actor restores from that snapshot when it
//! starts, and the driver tells every actor to restore after any crash. A
//! restarted actor therefore resumes exactly where the last snapshot left
//! the run, and the steps since are replayed deterministically.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use zbmd_gpu::faulty::{Fault, Operation};
use zbmd_gpu::health::{HealthRegistry, Placement};
use zbmd_gpu::{Device, DeviceId, ErrorClass, FaultyDevice};
use zbmd_rt::{Actor, ActorError, Context, ReplyTo};

use crate::checkpoint::{Checkpoint, CheckpointStore, NamedArray};
use crate::data::{Batch, DataLoader, Dataset, LoaderPosition, Prefetcher};
use crate::nn::Sequential;
use crate::optim::{LrSchedule, Optimizer, OptimizerConfig, OptimizerState, ParamView};
use crate::rng::Rng;
use crate::tensor::{Graph, Tensor};
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
    /// Devices the model actor may run on, with their health.
    pub devices: Arc<HealthRegistry>,
    /// The fault-injecting wrappers of those devices, by id.
    pub faulty: Vec<Arc<FaultyDevice>>,
    pub checkpoint_dir: Option<PathBuf>,
    pub keep_checkpoints: usize,
    /// Why the last actor crashed, for the recovery report.
    pub crash: Mutex<Option<(FaultTarget, String)>>,
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

/// A step's gradients and what it cost.
pub(crate) struct StepGrads {
    pub loss: f32,
    pub grads: Vec<Vec<f32>>,
    pub rng_state: u64,
    /// Repairs made during the step (a halved micro-batch), and the time
    /// from each to the end of the step's computation.
    pub events: Vec<(String, std::time::Duration)>,
    pub device: DeviceId,
}

pub(crate) enum ModelMsg {
    Compute {
        step: u64,
        params: Params,
        batch: Arc<Batch>,
        rng_state: u64,
        reply: ReplyTo<Result<StepGrads, String>>,
    },
    Evaluate {
        params: Params,
        reply: ReplyTo<(f32, f32)>,
    },
}

/// Computes gradients on its device. Its device memory holds a
/// micro-batch's activations; out of memory halves the micro-batch.
pub(crate) struct ModelActor {
    pub shared: Arc<Shared>,
    pub model: Option<Sequential>,
    pub graph: Graph,
    pub placement: Option<Placement>,
    pub micro_batch: usize,
}

impl ModelActor {
    pub fn new(shared: Arc<Shared>) -> Self {
        let micro_batch = shared.batch_size;
        ModelActor { shared, model: None, graph: Graph::new(), placement: None, micro_batch }
    }

    fn load(&mut self, params: &[NamedArray]) -> Result<(), String> {
        let model = self.model.as_mut().expect("built in started");
        for ((name, tensor), array) in model.parameters_mut().into_iter().zip(params) {
            if name != array.name || tensor.shape() != array.shape.as_slice() {
                return Err(format!("parameter {name} does not match {}", array.name));
            }
            *tensor = Tensor::from_vec(array.data.clone(), &array.shape)
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Bytes of activations one row costs: every layer's output, twice
    /// (values and gradients).
    fn bytes_per_row(&self) -> usize {
        let params: usize = self.model.as_ref().map_or(0, |model| model.num_parameters());
        // A bound, not an exact figure: proportional to the model's width.
        (params / 16).max(64) * 8
    }

    fn compute(
        &mut self,
        step: u64,
        params: &Params,
        batch: &Batch,
        rng_state: u64,
    ) -> Result<Result<StepGrads, String>, ActorError> {
        let health = self.placement.as_ref().expect("placed in started").health().clone();
        let device = health.device().clone();
        let device_id = device.id();
        if let Some(faulty) = self.shared.faulty(device_id) {
            for (target, fault) in [
                (FaultTarget::DeviceLost, Fault::DeviceLost),
                (FaultTarget::DeviceOom, Fault::OutOfMemory),
            ] {
                if self.shared.take_fault(target, step) {
                    faulty.fail_next(Operation::Alloc, fault);
                }
            }
        }
        if let Err(error) = self.load(params) {
            return Ok(Err(error));
        }
        let bytes_per_row = self.bytes_per_row();
        let model = self.model.as_mut().expect("built in started");
        model.set_training(true);
        model.set_dropout_rng_state(rng_state);
        let rows = batch.rows;
        let mut sums: Vec<Vec<f32>> = model
            .parameters()
            .iter()
            .map(|(_, tensor)| vec![0.0; tensor.shape().iter().product()])
            .collect();
        let mut loss = 0.0f32;
        let mut events: Vec<(String, std::time::Instant)> = Vec::new();
        let mut start = 0;
        while start < rows {
            let micro = self.micro_batch.min(rows - start);
            // Reserve the micro-batch's activations on the device.
            let bytes = micro * bytes_per_row;
            let reservation = match device.alloc(bytes) {
                Ok(buffer) => buffer,
                Err(error) if error.class() == ErrorClass::OutOfMemory => {
                    let chunk = self.shared.grad_chunk.max(1);
                    let halved = (self.micro_batch / 2) / chunk * chunk;
                    if halved == 0 {
                        return Ok(Err(format!(
                            "out of memory with a micro-batch of {}: {error}",
                            self.micro_batch
                        )));
                    }
                    events.push((
                        format!(
                            "out of memory on {device_id}: micro-batch {} → {halved}",
                            self.micro_batch
                        ),
                        std::time::Instant::now(),
                    ));
                    self.micro_batch = halved;
                    continue;
                }
                Err(error) => {
                    health.record_error(&error);
                    return Err(self.shared.crash(
                        FaultTarget::DeviceLost,
                        format!("device {device_id} failed: {error}"),
                    ));
                }
            };
            let chunk =
                if self.shared.grad_chunk == 0 { micro } else { self.shared.grad_chunk.min(micro) };
            let mut offset = start;
            while offset < start + micro {
                let take = chunk.min(start + micro - offset);
                let features =
                    batch.features[offset * batch.dim..(offset + take) * batch.dim].to_vec();
                let targets: Vec<usize> =
                    batch.labels[offset..offset + take].iter().map(|&l| l as usize).collect();
                let result = (|| -> Result<f32, String> {
                    let x = Tensor::from_vec(features, &[take, batch.dim])
                        .map_err(|e| e.to_string())?;
                    let graph = &mut self.graph;
                    graph.clear();
                    let input = graph.input(&x);
                    let logits = model.forward(graph, input).map_err(|e| e.to_string())?;
                    let mean = graph.cross_entropy(logits, &targets).map_err(|e| e.to_string())?;
                    let scaled = if take == rows {
                        mean
                    } else {
                        graph.scale(mean, take as f32 / rows as f32).map_err(|e| e.to_string())?
                    };
                    let value = graph.value(scaled)[0];
                    let grads = graph.backward(scaled).map_err(|e| e.to_string())?;
                    for (sum, &var) in sums.iter_mut().zip(model.param_vars()) {
                        let grad = grads.get(var).ok_or("a parameter has no gradient")?;
                        for (s, g) in sum.iter_mut().zip(grad) {
                            *s += g;
                        }
                    }
                    graph.recycle(grads);
                    Ok(value)
                })();
                match result {
                    Ok(value) => loss += value,
                    Err(error) => {
                        let _ = device.free(reservation);
                        return Ok(Err(error));
                    }
                }
                offset += take;
            }
            let _ = device.free(reservation);
            start += micro;
        }
        let events = events.into_iter().map(|(event, since)| (event, since.elapsed())).collect();
        Ok(Ok(StepGrads {
            loss,
            grads: sums,
            rng_state: model.dropout_rng_state(),
            events,
            device: device_id,
        }))
    }

    fn evaluate(&mut self, params: &Params) -> Result<(f32, f32), String> {
        self.load(params)?;
        let model = self.model.as_mut().expect("built in started");
        model.set_training(false);
        let test = self.shared.test.clone();
        let rows = test.len();
        let x = Tensor::from_vec(test.features.clone(), &[rows, test.dim])
            .map_err(|e| e.to_string())?;
        let targets: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
        let graph = &mut self.graph;
        graph.clear();
        let input = graph.input(&x);
        let logits = model.forward(graph, input).map_err(|e| e.to_string())?;
        let loss = graph.cross_entropy(logits, &targets).map_err(|e| e.to_string())?;
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
        model.set_training(true);
        Ok((loss_value, correct as f32 / rows.max(1) as f32))
    }
}

impl Actor for ModelActor {
    type Msg = ModelMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let model =
            build_model(&self.shared.model_spec, self.shared.seed).map_err(ActorError::msg)?;
        self.model = Some(model);
        self.placement = Some(
            self.shared
                .devices
                .place(&[])
                .ok_or_else(|| ActorError::msg("no healthy device for the model"))?,
        );
        Ok(())
    }

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: ModelMsg) -> Result<(), ActorError> {
        match msg {
            ModelMsg::Compute { step, params, batch, rng_state, reply } => {
                if self.shared.take_fault(FaultTarget::Model, step) {
                    return Err(injected(&self.shared, FaultTarget::Model, step));
                }
                let result = self.compute(step, &params, &batch, rng_state)?;
                reply.reply(result);
            }
            ModelMsg::Evaluate { params, reply } => {
                let result = self.evaluate(&params).map_err(ActorError::msg)?;
                reply.reply(result);
            }
        }
        Ok(())
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
        with_state: bool,
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
}

impl OptimizerActor {
    pub fn new(shared: Arc<Shared>) -> Self {
        OptimizerActor { shared, optimizer: None, params: Vec::new() }
    }

    fn restore(&mut self) -> Result<(), String> {
        let snapshot = self.shared.snapshot();
        let mut optimizer = self.shared.optimizer.build().map_err(|error| error.to_string())?;
        if snapshot.optimizer.step > 0 {
            optimizer.load_state(&snapshot.optimizer).map_err(|error| error.to_string())?;
        }
        self.params = snapshot.params.to_vec();
        self.optimizer = Some(optimizer);
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
                let state = with_state.then(|| Arc::new(optimizer.state()));
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
    /// The next batch, and the position after it.
    Next {
        step: u64,
        reply: ReplyTo<(Arc<Batch>, LoaderPosition)>,
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
}

impl LoaderActor {
    fn restore(&mut self) -> Result<(), String> {
        let mut loader = DataLoader::builder(self.shared.train.clone())
            .batch_size(self.shared.batch_size)
            .seed(self.shared.seed)
            .build()
            .map_err(|error| error.to_string())?;
        let position = self.shared.snapshot().loader;
        if position != LoaderPosition::default() {
            loader.seek(&position).map_err(|error| error.to_string())?;
        }
        self.loader = Some(Prefetcher::new(loader, PREFETCH).map_err(|error| error.to_string())?);
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
                let loader = self.loader.as_mut().expect("restored in started");
                let batch = loader.next_batch();
                reply.reply((Arc::new(batch), loader.position()));
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

pub(crate) struct CheckpointerActor {
    pub shared: Arc<Shared>,
    pub store: Option<CheckpointStore>,
}

impl Actor for CheckpointerActor {
    type Msg = CheckpointerMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        if let Some(dir) = &self.shared.checkpoint_dir {
            let store = CheckpointStore::open(dir.clone(), self.shared.keep_checkpoints)
                .map_err(|error| ActorError::msg(error.to_string()))?;
            self.store = Some(store);
        }
        Ok(())
    }

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        msg: CheckpointerMsg,
    ) -> Result<(), ActorError> {
        let CheckpointerMsg::Save { checkpoint, reply } = msg;
        let Some(store) = &self.store else {
            reply.reply(Err("no checkpoint directory".into()));
            return Ok(());
        };
        if self.shared.take_fault(FaultTarget::Checkpointer, checkpoint.step) {
            // Die halfway through a write, as a crash would: half a temp
            // file, never renamed. The store ignores and cleans it up.
            let bytes = checkpoint.encode().map_err(|error| ActorError::msg(error.to_string()))?;
            let partial = store.path_for(checkpoint.step).with_extension("zbmd.tmp");
            let _ = std::fs::write(&partial, &bytes[..bytes.len() / 2]);
            return Err(injected(&self.shared, FaultTarget::Checkpointer, checkpoint.step));
        }
        reply.reply(store.save(&checkpoint).map_err(|error| error.to_string()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Metrics

pub(crate) enum MetricsMsg {
    /// A step's loss.
    Record { epoch: u64, loss: f32 },
    /// The mean loss of an epoch's steps so far.
    EpochMean { epoch: u64, reply: ReplyTo<f32> },
    /// Replaces the curve with the committed one (after a crash, whose
    /// steps since the snapshot are being replayed, or at the start of a
    /// resumed run).
    Restore { losses: Vec<f32>, reply: ReplyTo<()> },
}

/// Keeps every step's loss (the run's training curve). The driver owns the
/// committed curve and restores this actor from it.
pub(crate) struct MetricsActor {
    pub shared: Arc<Shared>,
    pub losses: Vec<(u64, f32)>,
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: MetricsMsg) -> Result<(), ActorError> {
        match msg {
            MetricsMsg::Record { epoch, loss } => self.losses.push((epoch, loss)),
            MetricsMsg::EpochMean { epoch, reply } => {
                let losses: Vec<f32> = self
                    .losses
                    .iter()
                    .filter(|(e, _)| *e == epoch)
                    .map(|(_, loss)| *loss)
                    .collect();
                reply.reply(losses.iter().sum::<f32>() / losses.len().max(1) as f32);
            }
            MetricsMsg::Restore { losses, reply } => {
                let per_epoch = self.shared.batches_per_epoch.max(1);
                self.losses = (0..).map(|i: u64| i / per_epoch).zip(losses).collect();
                reply.reply(());
            }
        }
        Ok(())
    }
}

/// Devices for the model: two logical CPU devices, each behind a
/// fault-injecting wrapper (so device faults can be injected, and a lost
/// device has somewhere to go).
pub(crate) fn cpu_devices() -> (Vec<Arc<FaultyDevice>>, Vec<Arc<dyn Device>>) {
    let budget = zbmd_gpu::cpu::default_budget();
    let faulty: Vec<Arc<FaultyDevice>> = (0..2)
        .map(|ordinal| {
            let cpu: Arc<dyn Device> = Arc::new(zbmd_gpu::CpuDevice::with_ordinal(ordinal, budget));
            Arc::new(FaultyDevice::with_rules(cpu, []))
        })
        .collect();
    let devices = faulty.iter().map(|faulty| faulty.clone() as Arc<dyn Device>).collect();
    (faulty, devices)
}
