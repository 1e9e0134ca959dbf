//! What the model actor computes with ([`Work`]), and how: one step's
//! gradients, summed over micro-batches and `grad_chunk`-row pieces, with
//! the micro-batch halved after an out-of-memory; and the held-out set's
//! loss and accuracy.

use std::sync::Arc;
use std::time::Instant;

use zbmd_gpu::health::DeviceHealth;
use zbmd_gpu::{Buffer, ErrorClass};

use super::model::{Products, StepGrads};
use crate::checkpoint::NamedArray;
use crate::data::{Batch, Dataset};
use crate::nn::{ModelError, Sequential};
use crate::tensor::{Graph, Tensor, TensorError};
use crate::train::commit::Params;
use crate::train::config::FaultTarget;

/// Why a request failed.
pub(crate) enum ComputeError {
    /// Something about the request (a parameter that does not fit, a batch
    /// that cannot fit in memory at any micro-batch): answered.
    Request(String),
    /// The device (or every device): the actor crashes and is placed anew.
    Device(String),
}

/// How one attempt at a step's gradients ended short of them.
enum Attempt {
    /// An out-of-memory: the micro-batch was halved (the event says how),
    /// and the step starts over.
    Halved(String),
    /// The request fails.
    Failed(ComputeError),
}

impl From<ComputeError> for Attempt {
    fn from(error: ComputeError) -> Self {
        Attempt::Failed(error)
    }
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
    /// The model and its tape, computing `micro_batch` rows at once.
    pub fn new(model: Sequential, graph: Graph, micro_batch: usize) -> Self {
        Work { model, graph, micro_batch }
    }

    fn load(&mut self, params: &[NamedArray]) -> Result<(), ComputeError> {
        for ((name, tensor), array) in self.model.parameters_mut().into_iter().zip(params) {
            if name != array.name || tensor.shape() != array.shape.as_slice() {
                return Err(ComputeError::Request(format!(
                    "parameter {name} does not match {}",
                    array.name
                )));
            }
            *tensor = Tensor::from_vec(array.data.clone(), &array.shape)
                .map_err(|error| ComputeError::Request(error.to_string()))?;
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
    fn halve(&mut self, grad_chunk: usize, why: &str) -> Result<String, ComputeError> {
        let chunk = grad_chunk.max(1);
        let halved = (self.micro_batch / 2) / chunk * chunk;
        if halved == 0 {
            return Err(ComputeError::Request(format!(
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
    /// reserves its activations on the placed device (`health`'s). After an
    /// out-of-memory the step starts over with half the micro-batch: the
    /// pieces, and so the sums, stay the same.
    pub fn compute(
        &mut self,
        grad_chunk: usize,
        products: &Products,
        health: Option<&Arc<DeviceHealth>>,
        params: &Params,
        batch: &Batch,
        rng_state: u64,
    ) -> Result<StepGrads, ComputeError> {
        self.load(params)?;
        let started = Instant::now();
        let before = kernel_placements(products);
        let mut events: Vec<(FaultTarget, String, Instant)> = Vec::new();
        let (loss, grads) = loop {
            match self.attempt(grad_chunk, health, batch, rng_state) {
                Ok(done) => break done,
                Err(Attempt::Halved(event)) => {
                    events.push((FaultTarget::DeviceOom, event, Instant::now()));
                }
                Err(Attempt::Failed(error)) => return Err(error),
            }
        };
        let after = kernel_placements(products);
        if after != before {
            let event = format!("kernel actors moved: {before} → {after}");
            events.push((FaultTarget::DeviceLost, event, started));
        }
        let device = match health {
            Some(health) => health.id().to_string(),
            None => after,
        };
        Ok(StepGrads {
            loss,
            grads,
            rng_state: self.model.dropout_rng_state(),
            events: events
                .into_iter()
                .map(|(target, event, since)| (target, event, since.elapsed()))
                .collect(),
            device,
        })
    }

    /// One pass over `batch` at the current micro-batch: the loss and the
    /// summed gradients, or why the step starts over or fails.
    fn attempt(
        &mut self,
        grad_chunk: usize,
        health: Option<&Arc<DeviceHealth>>,
        batch: &Batch,
        rng_state: u64,
    ) -> Result<(f32, Vec<Vec<f32>>), Attempt> {
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
        while start < batch.rows {
            let micro = self.micro_batch.min(batch.rows - start);
            let reservation = self.reserve(grad_chunk, health, micro)?;
            let result =
                self.micro_batch_grads(grad_chunk, batch, start, micro, &mut sums, &mut loss);
            if let (Some(health), Some(buffer)) = (health, reservation) {
                let _ = health.device().free(buffer);
            }
            match result {
                Ok(()) => {}
                Err(TensorError::Device { class: ErrorClass::OutOfMemory, message, .. }) => {
                    return Err(Attempt::Halved(self.halve(grad_chunk, &message)?));
                }
                Err(TensorError::Device { message, .. }) => {
                    return Err(ComputeError::Device(message).into());
                }
                Err(error) => return Err(ComputeError::Request(error.to_string()).into()),
            }
            start += micro;
        }
        Ok((loss, sums))
    }

    /// Reserves a micro-batch of `micro` rows' activations on the placed
    /// device (host mode; `None` without one).
    fn reserve(
        &mut self,
        grad_chunk: usize,
        health: Option<&Arc<DeviceHealth>>,
        micro: usize,
    ) -> Result<Option<Buffer>, Attempt> {
        let Some(health) = health else {
            return Ok(None);
        };
        match health.device().alloc(micro * self.bytes_per_row()) {
            Ok(buffer) => Ok(Some(buffer)),
            Err(error) if error.class() == ErrorClass::OutOfMemory => {
                Err(Attempt::Halved(self.halve(grad_chunk, &error.to_string())?))
            }
            Err(error) => {
                health.record_error(&error);
                let why = format!("device {} failed: {error}", health.id());
                Err(ComputeError::Device(why).into())
            }
        }
    }

    /// Adds the gradients of rows `start..start + micro` to `sums`, and
    /// their share of the batch's mean loss to `loss`, piece by piece (so
    /// that both sums are the same whatever the micro-batch).
    fn micro_batch_grads(
        &mut self,
        grad_chunk: usize,
        batch: &Batch,
        start: usize,
        micro: usize,
        sums: &mut [Vec<f32>],
        loss: &mut f32,
    ) -> Result<(), TensorError> {
        let rows = batch.rows;
        let chunk = if grad_chunk == 0 { micro } else { grad_chunk.min(micro) };
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

    /// The held-out set's mean loss and accuracy under `params`.
    pub fn evaluate(
        &mut self,
        test: &Dataset,
        params: &Params,
    ) -> Result<(f32, f32), ComputeError> {
        self.load(params)?;
        let failure = |error: TensorError| match error {
            TensorError::Device { message, .. } => ComputeError::Device(message),
            other => ComputeError::Request(other.to_string()),
        };
        self.model.set_training(false);
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
fn kernel_placements(products: &Products) -> String {
    let Products::Kernels { pool, .. } = products else {
        return String::new();
    };
    let places: Vec<String> = pool
        .placements()
        .iter()
        .map(|place| place.map_or_else(|| "(restarting)".to_owned(), |id| id.to_string()))
        .collect();
    places.join(", ")
}
