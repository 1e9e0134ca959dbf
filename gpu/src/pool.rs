//! Kernel actors under the GPU supervisor: how work reaches a device and
//! survives the device failing.
//!
//! ```text
//!                       GPU supervisor (one_for_one)
//!                  ┌──────────┼───────────┬──────────┐
//!            health monitor  kernel-0   kernel-1   ...      one stream each, on the
//!            (probes, asks   │ device A │ device B          device placement chose
//!             actors on a    ▼          ▼
//!             critical device to move)
//! ```
//!
//! A [`Job`] carries its inputs in host memory, so any device can run it.
//! [`GpuPool::run`] sends it to a kernel actor, which uploads the inputs,
//! launches and reads the result back (an [`Executor`] does the device
//! work; the benchmarks call one directly as the baseline). Then:
//!
//! - a **transient** error (kernel timeout, busy device) is retried by the
//!   actor, at most [`MAX_TRANSIENT_RETRIES`] times, after 1, 2, 4, ... ms
//!   on its shard's timer (the shard never sleeps);
//! - **out of memory** is answered as [`JobError::OutOfMemory`] after the
//!   actor has freed its cached buffers and tried once more: the caller
//!   shrinks its work;
//! - a **device** error (lost device, ECC, a driver fault) makes the device
//!   critical in the [`HealthRegistry`], is answered as
//!   [`JobError::DeviceFailed`], and crashes the actor. Its supervisor
//!   restarts it, and placement puts the new incarnation on a healthy
//!   device. `GpuPool::run` sends the job again, so the caller gets the
//!   right answer from the other device, at most [`GpuPoolBuilder::max_migrations`]
//!   times;
//! - a bad request is answered as [`JobError::Gpu`] at once.
//!
//! Every device a job touched hears of the outcome, so health follows
//! what work actually met. The health monitor also probes each driver
//! every `probe_period` and tells actors on a device that went critical
//! to move.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbmd_rt::supervisor::{
    ChildRef, ChildSpec, Supervisor, SupervisorError, SupervisorRef, SupervisorSpec,
};
use zbmd_rt::{Actor, ActorError, AskError, Context, ExitReason, ReplyTo, Runtime};

use crate::device::{Buffer, Device, DeviceId, Gemm, Stream};
use crate::error::{ErrorClass, GpuError};
use crate::health::{Health, HealthPolicy, HealthRegistry, Placement};
use crate::kernel::Kernels;

/// Transient errors a kernel actor retries before answering with the error.
pub const MAX_TRANSIENT_RETRIES: u32 = 3;

/// One operation of a [`Job`], with its sizes. Inputs are in the order the
/// standard kernel takes them ([`crate::Kernel`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// The empty kernel over `n` threads; no inputs, no output.
    Empty {
        /// Threads.
        n: usize,
    },
    /// `a + b`.
    VectorAdd {
        /// Elements.
        n: usize,
    },
    /// `alpha * x`.
    Scale {
        /// The factor.
        alpha: f32,
        /// Elements.
        n: usize,
    },
    /// `max(x, 0)`.
    Relu {
        /// Elements.
        n: usize,
    },
    /// `grad * (x > 0)`, inputs `x` then `grad`.
    ReluGrad {
        /// Elements.
        n: usize,
    },
    /// `Σ x`, one output.
    Sum {
        /// Elements.
        n: usize,
    },
    /// `max x`, one output.
    Max {
        /// Elements.
        n: usize,
    },
    /// Row-wise softmax.
    Softmax {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// `a · b` with `a` m×k and `b` k×n, row-major.
    Gemm {
        /// Rows of the result.
        m: usize,
        /// Columns of the result.
        n: usize,
        /// The shared dimension.
        k: usize,
    },
}

impl Op {
    /// The lengths its inputs must have.
    pub fn input_lens(&self) -> Vec<usize> {
        match *self {
            Op::Empty { .. } => vec![],
            Op::VectorAdd { n } | Op::ReluGrad { n } => vec![n, n],
            Op::Scale { n, .. } | Op::Relu { n } | Op::Sum { n } | Op::Max { n } => vec![n],
            Op::Softmax { rows, cols } => vec![rows.saturating_mul(cols)],
            Op::Gemm { m, n, k } => vec![m.saturating_mul(k), k.saturating_mul(n)],
        }
    }

    /// The length of its result.
    pub fn output_len(&self) -> usize {
        match *self {
            Op::Empty { .. } => 0,
            Op::VectorAdd { n } | Op::ReluGrad { n } | Op::Scale { n, .. } | Op::Relu { n } => n,
            Op::Sum { .. } | Op::Max { .. } => 1,
            Op::Softmax { rows, cols } => rows.saturating_mul(cols),
            Op::Gemm { m, n, .. } => m.saturating_mul(n),
        }
    }
}

/// Work for a kernel actor: an operation and its inputs, in host memory so
/// that any device can run it (and run it again after a migration).
/// Cloning shares the inputs.
#[derive(Debug, Clone)]
pub struct Job {
    op: Op,
    inputs: Vec<Arc<[f32]>>,
}

impl Job {
    /// A job, checked: as many inputs as the op takes, each of its length.
    pub fn new(op: Op, inputs: Vec<Arc<[f32]>>) -> Result<Job, JobError> {
        let lens = op.input_lens();
        if inputs.len() != lens.len() {
            return Err(JobError::Invalid(format!(
                "{op:?} takes {} inputs, got {}",
                lens.len(),
                inputs.len()
            )));
        }
        for (index, (input, &len)) in inputs.iter().zip(&lens).enumerate() {
            if input.len() != len {
                return Err(JobError::Invalid(format!(
                    "{op:?}: input {index} has {} elements, {len} expected",
                    input.len()
                )));
            }
        }
        Ok(Job { op, inputs })
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The inputs.
    pub fn inputs(&self) -> &[Arc<[f32]>] {
        &self.inputs
    }
}

/// " (N bytes asked)" for an allocation's out-of-memory, nothing otherwise.
fn asked(requested: usize) -> String {
    if requested == 0 { String::new() } else { format!(" ({requested} bytes asked)") }
}

/// Why a job did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The job itself is malformed.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// The job did not fit in device memory, even with the actor's cached
    /// buffers freed. Recoverable: retry with less.
    #[error("{device}: out of memory for this job{}", asked(*.requested))]
    OutOfMemory {
        /// The device.
        device: DeviceId,
        /// The allocation that failed (0 when the device ran out during a
        /// launch or a wait rather than an allocation).
        requested: usize,
    },
    /// The device failed under the job; the actor is moving to another
    /// device. [`GpuPool::run`] retries these itself.
    #[error("{device} failed: {error}")]
    DeviceFailed {
        /// The device.
        device: DeviceId,
        /// What it said.
        error: GpuError,
    },
    /// A device error that retrying cannot fix (a bad request, or transient
    /// errors past the retry bound).
    #[error(transparent)]
    Gpu(GpuError),
    /// No device is left to run the job: every one is critical, or the job
    /// moved `max_migrations` times.
    #[error("no healthy device to run the job after {migrations} migrations (last error: {last})")]
    NoHealthyDevice {
        /// Migrations made.
        migrations: u32,
        /// The last device failure, in words.
        last: String,
    },
    /// The job did not complete within the pool's call timeout.
    #[error("the job did not complete in {0:?}")]
    Timeout(Duration),
    /// The runtime refused the request (shutting down, say).
    #[error("runtime: {0}")]
    Runtime(String),
}

/// Runs jobs on one device through one stream, keeping a device buffer per
/// input and one for the output, grown as jobs need and reused after.
///
/// This is the device work of a kernel actor, without the actor:
/// benchmarks call it directly as the baseline of the actor's overhead.
pub struct Executor {
    device: Arc<dyn Device>,
    stream: Stream,
    kernels: Kernels,
    /// Cached buffers: inputs first, the output last.
    scratch: Vec<Option<Buffer>>,
}

impl Executor {
    /// Opens a stream on `device` and loads the standard kernels.
    pub fn open(device: Arc<dyn Device>) -> Result<Executor, GpuError> {
        let stream = device.create_stream()?;
        match Kernels::load(&*device) {
            Ok(kernels) => Ok(Executor { device, stream, kernels, scratch: vec![None; 3] }),
            Err(error) => {
                let _ = device.destroy_stream(stream);
                Err(error)
            }
        }
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    /// Its stream.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The standard kernels, loaded on its device.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// A cached buffer of at least `len` floats in `slot`.
    fn buffer(&mut self, slot: usize, len: usize) -> Result<Buffer, GpuError> {
        let bytes = len.max(1) * 4;
        if let Some(buffer) = self.scratch[slot] {
            if buffer.bytes >= bytes {
                return Ok(buffer);
            }
            self.scratch[slot] = None;
            self.device.free(buffer)?;
        }
        let buffer = self.device.alloc(bytes)?;
        self.scratch[slot] = Some(buffer);
        Ok(buffer)
    }

    /// Frees the cached buffers (after an out-of-memory error, say).
    pub fn release_scratch(&mut self) {
        for buffer in self.scratch.iter_mut().filter_map(Option::take) {
            let _ = self.device.free(buffer);
        }
    }

    /// Runs `job`: uploads its inputs, launches, and leaves the result in
    /// `out` (resized to the op's output length).
    pub fn run(&mut self, job: &Job, out: &mut Vec<f32>) -> Result<(), GpuError> {
        let mut inputs = [None; 2];
        for (slot, input) in job.inputs.iter().enumerate() {
            let buffer = self.buffer(slot, input.len())?;
            self.device.write(self.stream, buffer, 0, bytemuck::cast_slice(input))?;
            inputs[slot] = Some(buffer);
        }
        let output_len = job.op.output_len();
        let output = self.buffer(2, output_len)?;
        let (device, stream, kernels) = (&*self.device, self.stream, &self.kernels);
        let input = |slot: usize| inputs[slot].expect("validated by Job::new");
        match job.op {
            Op::Empty { n } => kernels.empty(device, stream, n)?,
            Op::VectorAdd { n } => {
                kernels.vector_add(device, stream, [input(0), input(1), output], n)?
            }
            Op::Scale { alpha, n } => {
                kernels.scale(device, stream, [input(0), output], alpha, n)?
            }
            Op::Relu { n } => kernels.relu(device, stream, [input(0), output], n)?,
            Op::ReluGrad { n } => {
                kernels.relu_grad(device, stream, [input(0), input(1), output], n)?
            }
            Op::Sum { n } => kernels.sum(device, stream, [input(0), output], n)?,
            Op::Max { n } => kernels.max(device, stream, [input(0), output], n)?,
            Op::Softmax { rows, cols } => {
                kernels.softmax(device, stream, [input(0), output], rows, cols)?
            }
            Op::Gemm { m, n, k } => {
                let gemm =
                    Gemm { m, n, k, alpha: 1.0, beta: 0.0, a: input(0), b: input(1), c: output };
                device.gemm(stream, &gemm)?
            }
        }
        out.clear();
        out.resize(output_len, 0.0);
        if output_len == 0 {
            self.device.synchronize(self.stream)
        } else {
            self.device.read(self.stream, output, 0, bytemuck::cast_slice_mut(out))
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.release_scratch();
        let _ = self.device.destroy_stream(self.stream);
    }
}

/// What the pool's actors and its callers share.
struct Shared {
    registry: Arc<HealthRegistry>,
    /// The device each kernel actor runs on now (None between incarnations).
    current: Vec<Mutex<Option<DeviceId>>>,
    jobs: AtomicU64,
    retries: AtomicU64,
    migrations: AtomicU64,
}

impl Shared {
    fn set_current(&self, slot: usize, device: Option<DeviceId>) {
        *self.current[slot].lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = device;
    }

    fn current(&self, slot: usize) -> Option<DeviceId> {
        *self.current[slot].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A kernel actor's messages.
pub enum KernelMsg {
    /// Run a job and answer with its result.
    Run {
        /// The job.
        job: Job,
        /// Transient failures so far.
        attempt: u32,
        /// Where the result goes.
        reply: JobReply,
        /// A buffer for the result, reused when its capacity suffices (see
        /// [`GpuPool::run_into`]).
        out: Vec<f32>,
    },
    /// Leave the device if it has gone critical (from the health monitor).
    Migrate,
    /// A job run on a blocking thread is done (sent by the actor to itself).
    Done(Completed),
}

/// Where a job's result goes.
pub type JobReply = ReplyTo<Result<Vec<f32>, JobError>>;

/// A job that ran on a blocking thread, with the executor it borrowed.
pub struct Completed {
    executor: Executor,
    job: Job,
    attempt: u32,
    reply: JobReply,
    out: Vec<f32>,
    result: Result<(), GpuError>,
}

/// Jobs a kernel actor holds while its executor is busy on a blocking
/// thread; past this a job is answered `Busy`.
pub const MAX_WAITING_JOBS: usize = 1024;

/// Owns one device placement and one stream; runs jobs sent to it.
///
/// On the CPU backend a job runs on the actor's shard (CPU kernels are Rust
/// functions run by the shards). On a GPU the actor lends its executor to
/// one of the runtime's blocking threads for the upload, launch and the
/// wait for the result, so the shard keeps running other actors; jobs that
/// arrive meanwhile wait in the actor, in order.
struct KernelActor {
    slot: usize,
    shared: Arc<Shared>,
    placement: Option<Placement>,
    /// None while lent to a blocking thread.
    executor: Option<Executor>,
    /// Jobs (with their transient-failure counts) waiting for the executor.
    waiting: std::collections::VecDeque<(Job, u32, JobReply, Vec<f32>)>,
}

impl KernelActor {
    fn device_id(&self) -> Option<DeviceId> {
        self.placement.as_ref().map(|placement| placement.health().id())
    }

    /// Runs `job` inline (CPU) or on a blocking thread (GPU).
    fn start(
        &mut self,
        ctx: &mut Context<'_, Self>,
        job: Job,
        attempt: u32,
        reply: JobReply,
        mut out: Vec<f32>,
    ) -> Result<(), ActorError> {
        let health = self.placement.as_ref().expect("placed in started").health().clone();
        if health.health() == Health::Critical {
            // Another actor's failure (or a probe) condemned this device:
            // hand the job back and move.
            let error =
                GpuError::DeviceLost { device: health.id(), detail: "device is critical".into() };
            reply.reply(Err(JobError::DeviceFailed { device: health.id(), error }));
            return Err(ActorError::msg(format!("leaving critical device {}", health.id())));
        }
        let mut executor = self.executor.take().expect("start is called with the executor home");
        if health.id().backend == crate::device::BackendKind::Cpu {
            let result = run_job(&mut executor, &job, &mut out);
            self.executor = Some(executor);
            return self.finish(ctx, job, attempt, reply, out, result);
        }
        let work = move || {
            let mut out = out;
            let result = run_job(&mut executor, &job, &mut out);
            Completed { executor, job, attempt, reply, out, result }
        };
        ctx.spawn_blocking(work, KernelMsg::Done).map_err(|error| {
            ActorError::msg(format!("kernel actor {}: no blocking thread: {error}", self.slot))
        })
    }

    /// Answers a finished job, or retries it, or crashes on a device error.
    fn finish(
        &mut self,
        ctx: &mut Context<'_, Self>,
        job: Job,
        attempt: u32,
        reply: JobReply,
        out: Vec<f32>,
        result: Result<(), GpuError>,
    ) -> Result<(), ActorError> {
        let health = self.placement.as_ref().expect("placed in started").health().clone();
        let Err(error) = result else {
            health.record_success();
            self.shared.jobs.fetch_add(1, Ordering::Relaxed);
            reply.reply(Ok(out));
            return Ok(());
        };
        health.record_error(&error);
        let device = health.id();
        match error.class() {
            ErrorClass::Transient if attempt < MAX_TRANSIENT_RETRIES => {
                self.shared.retries.fetch_add(1, Ordering::Relaxed);
                let retry = KernelMsg::Run { job, attempt: attempt + 1, reply, out: Vec::new() };
                // If the timer cannot be set, the retry (and its reply)
                // is dropped and the caller hears `Dropped`.
                let _ = ctx.send_after(&ctx.myself(), retry, Duration::from_millis(1 << attempt));
                Ok(())
            }
            ErrorClass::Transient | ErrorClass::Request => {
                reply.reply(Err(JobError::Gpu(error)));
                Ok(())
            }
            ErrorClass::OutOfMemory => {
                let requested = match error {
                    GpuError::OutOfMemory { requested, .. } => requested,
                    _ => 0,
                };
                reply.reply(Err(JobError::OutOfMemory { device, requested }));
                Ok(())
            }
            ErrorClass::Device => {
                let message = format!("device {device} failed: {error}");
                reply.reply(Err(JobError::DeviceFailed { device, error }));
                Err(ActorError::msg(message))
            }
        }
    }
}

/// Runs a job, freeing the executor's cached buffers and trying once more
/// if the device is out of memory (they may be what fills it).
fn run_job(executor: &mut Executor, job: &Job, out: &mut Vec<f32>) -> Result<(), GpuError> {
    match executor.run(job, out) {
        Err(error) if error.class() == ErrorClass::OutOfMemory => {
            executor.release_scratch();
            executor.run(job, out)
        }
        result => result,
    }
}

impl Actor for KernelActor {
    type Msg = KernelMsg;

    fn started(&mut self, _: &mut Context<'_, Self>) -> Result<(), ActorError> {
        // Try devices in placement order until one opens; each failure makes
        // that device less preferred (or critical) for the next try.
        let mut last = String::from("every device is critical");
        let mut tried = Vec::new();
        for _ in 0..self.shared.registry.devices().len() {
            let Some(placement) = self.shared.registry.place(&tried) else { break };
            if tried.contains(&placement.health().id()) {
                break; // every device left has been tried
            }
            match Executor::open(placement.health().device().clone()) {
                Ok(executor) => {
                    let device = placement.health().id();
                    tracing::debug!(slot = self.slot, %device, "kernel actor placed");
                    self.shared.set_current(self.slot, Some(device));
                    self.placement = Some(placement);
                    self.executor = Some(executor);
                    return Ok(());
                }
                Err(error) => {
                    placement.health().record_error(&error);
                    tried.push(placement.health().id());
                    last = error.to_string();
                }
            }
        }
        Err(ActorError::msg(format!("kernel actor {}: no device to run on: {last}", self.slot)))
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: KernelMsg) -> Result<(), ActorError> {
        match msg {
            KernelMsg::Migrate => {
                let health = self.placement.as_ref().expect("placed in started").health().clone();
                if health.health() == Health::Critical {
                    return Err(ActorError::msg(format!(
                        "leaving critical device {}",
                        health.id()
                    )));
                }
                Ok(())
            }
            KernelMsg::Run { job, attempt, reply, out } if self.executor.is_some() => {
                self.start(ctx, job, attempt, reply, out)
            }
            KernelMsg::Run { job, attempt, reply, out } => {
                if self.waiting.len() >= MAX_WAITING_JOBS {
                    let device = self.device_id().expect("placed in started");
                    let detail =
                        format!("{MAX_WAITING_JOBS} jobs already wait for this kernel actor");
                    reply.reply(Err(JobError::Gpu(GpuError::Busy { device, detail })));
                } else {
                    self.waiting.push_back((job, attempt, reply, out));
                }
                Ok(())
            }
            KernelMsg::Done(done) => {
                let Completed { executor, job, attempt, reply, out, result } = done;
                self.executor = Some(executor);
                self.finish(ctx, job, attempt, reply, out, result)?;
                // The next waiting job, if the executor is still home (a
                // CPU job finishes inline; a GPU job lends it out again).
                while self.executor.is_some() {
                    let Some((job, attempt, reply, out)) = self.waiting.pop_front() else { break };
                    self.start(ctx, job, attempt, reply, out)?;
                }
                Ok(())
            }
        }
    }

    fn stopping(&mut self, _: &mut Context<'_, Self>, reason: &ExitReason) {
        if let Some(device) = self.device_id() {
            tracing::debug!(slot = self.slot, %device, %reason, "kernel actor leaving its device");
        }
        self.shared.set_current(self.slot, None);
        // Dropping the executor frees its buffers and stream (best effort on
        // a failed device), and dropping the placement releases its place.
        // Waiting jobs' callers hear `Dropped` and send them again.
        self.executor = None;
        self.placement = None;
        self.waiting.clear();
    }
}

/// The health monitor's messages.
#[derive(Clone)]
enum MonitorMsg {
    Tick,
}

/// Probes every device and tells actors on critical devices to move.
struct HealthMonitor {
    shared: Arc<Shared>,
    kernels: Vec<ChildRef<KernelMsg>>,
    period: Duration,
}

impl Actor for HealthMonitor {
    type Msg = MonitorMsg;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.send_interval(&ctx.myself(), || MonitorMsg::Tick, self.period)
            .map_err(|error| ActorError::msg(format!("health monitor timer: {error}")))?;
        Ok(())
    }

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        MonitorMsg::Tick: MonitorMsg,
    ) -> Result<(), ActorError> {
        self.shared.registry.probe_all();
        for (slot, kernel) in self.kernels.iter().enumerate() {
            let Some(device) = self.shared.current(slot) else { continue };
            let critical = self
                .shared
                .registry
                .devices()
                .iter()
                .any(|health| health.id() == device && health.health() == Health::Critical);
            if critical {
                // Full mailbox: it will find out at its next job anyway.
                let _ = kernel.try_send(KernelMsg::Migrate);
            }
        }
        Ok(())
    }
}

/// Configures a [`GpuPool`].
pub struct GpuPoolBuilder {
    devices: Vec<Arc<dyn Device>>,
    actors: Option<usize>,
    policy: HealthPolicy,
    probe_period: Duration,
    max_migrations: u32,
    call_timeout: Duration,
}

impl GpuPoolBuilder {
    /// Kernel actors to run (default: one per device).
    pub fn actors(mut self, actors: usize) -> Self {
        self.actors = Some(actors);
        self
    }

    /// When errors make a device degraded or critical.
    pub fn health_policy(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How often the monitor probes the drivers (default 500 ms).
    pub fn probe_period(mut self, period: Duration) -> Self {
        self.probe_period = period;
        self
    }

    /// How many times one job may move to another device (default 3).
    pub fn max_migrations(mut self, migrations: u32) -> Self {
        self.max_migrations = migrations;
        self
    }

    /// How long [`GpuPool::run`] waits for a job in all (default 60 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Starts the GPU supervisor and its actors on `rt`, at the top of
    /// their own tree.
    pub fn start(self, rt: &Runtime) -> Result<GpuPool, GpuPoolError> {
        let (spec, pool) = self.prepare()?;
        let supervisor = Supervisor::start(rt, spec).map_err(GpuPoolError::Start)?;
        Ok(pool(supervisor))
    }

    /// The GPU supervisor as a child of another tree (a training
    /// supervisor, say), named `id`, and the pool that reaches its kernel
    /// actors once that tree starts it. Until then, and while it restarts,
    /// [`GpuPool::run`] waits for it as it waits for any restarting actor.
    pub fn child_spec(
        self,
        id: impl Into<Arc<str>>,
    ) -> Result<(ChildSpec<Supervisor>, GpuPool), GpuPoolError> {
        let (spec, pool) = self.prepare()?;
        let child = ChildSpec::supervisor(id, spec);
        let supervisor = child.supervisor_ref();
        Ok((child, pool(supervisor)))
    }

    /// The GPU supervisor's spec, and how to make the pool once its
    /// supervisor has a ref.
    fn prepare(
        self,
    ) -> Result<(SupervisorSpec, impl FnOnce(SupervisorRef) -> GpuPool), GpuPoolError> {
        let actors = self.actors.unwrap_or(self.devices.len());
        if actors == 0 || self.probe_period.is_zero() || self.call_timeout.is_zero() {
            return Err(GpuPoolError::Config(
                "a GPU pool needs at least one actor and non-zero probe period and call timeout"
                    .into(),
            ));
        }
        let registry =
            HealthRegistry::new(self.devices, self.policy).map_err(GpuPoolError::Config)?;
        let shared = Arc::new(Shared {
            registry: Arc::new(registry),
            current: (0..actors).map(|_| Mutex::new(None)).collect(),
            jobs: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            migrations: AtomicU64::new(0),
        });
        let specs: Vec<ChildSpec<KernelActor>> = (0..actors)
            .map(|slot| {
                let shared = shared.clone();
                ChildSpec::worker(format!("kernel-{slot}"), move || KernelActor {
                    slot,
                    shared: shared.clone(),
                    placement: None,
                    executor: None,
                    waiting: Default::default(),
                })
            })
            .collect();
        let kernels: Vec<ChildRef<KernelMsg>> = specs.iter().map(ChildSpec::child_ref).collect();
        let monitor = {
            let (shared, kernels, period) = (shared.clone(), kernels.clone(), self.probe_period);
            ChildSpec::worker("health-monitor", move || HealthMonitor {
                shared: shared.clone(),
                kernels: kernels.clone(),
                period,
            })
        };
        // Room for every actor to move twice in quick succession (a device
        // dying takes all its actors with it) before the tree gives up.
        let intensity = (4 * actors as u32).max(10);
        let mut spec = SupervisorSpec::one_for_one()
            .intensity(intensity, Duration::from_secs(10))
            .child(monitor);
        for child in specs {
            spec = spec.child(child);
        }
        let (max_migrations, call_timeout) = (self.max_migrations, self.call_timeout);
        let pool = move |supervisor| GpuPool {
            supervisor,
            kernels,
            shared,
            next: AtomicUsize::new(0),
            max_migrations,
            call_timeout,
        };
        Ok((spec, pool))
    }
}

/// Why a pool did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuPoolError {
    /// The configuration is inconsistent.
    #[error("GPU pool: {0}")]
    Config(String),
    /// The supervisor or a kernel actor failed to start.
    #[error("GPU pool: {0}")]
    Start(SupervisorError),
}

/// Counts of what a pool did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Jobs completed.
    pub jobs: u64,
    /// Transient errors retried by actors.
    pub retries: u64,
    /// Jobs sent again after their actor's device failed.
    pub migrations: u64,
}

/// Kernel actors under a GPU supervisor, with device health: the way to
/// run work on devices that may fail.
pub struct GpuPool {
    supervisor: SupervisorRef,
    kernels: Vec<ChildRef<KernelMsg>>,
    shared: Arc<Shared>,
    next: AtomicUsize,
    max_migrations: u32,
    call_timeout: Duration,
}

impl GpuPool {
    /// A pool over `devices`, in order of preference (detection's order).
    pub fn builder(devices: Vec<Arc<dyn Device>>) -> GpuPoolBuilder {
        GpuPoolBuilder {
            devices,
            actors: None,
            policy: HealthPolicy::default(),
            probe_period: Duration::from_millis(500),
            max_migrations: 3,
            call_timeout: Duration::from_secs(60),
        }
    }

    /// Runs a job on the next kernel actor (round robin) and waits for its
    /// result, moving it to another device if its device fails. From a
    /// thread outside the runtime.
    pub fn run(&self, job: Job) -> Result<Vec<f32>, JobError> {
        self.run_into(job, Vec::new())
    }

    /// [`run`](Self::run), writing the result into `out`'s memory when its
    /// capacity suffices: give the previous result back to avoid
    /// allocating (and faulting in) a fresh buffer per job.
    pub fn run_into(&self, job: Job, out: Vec<f32>) -> Result<Vec<f32>, JobError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.kernels.len();
        self.run_on(slot, job, out)
    }

    /// Runs a job on kernel actor `slot` (see [`run_into`](Self::run_into)).
    pub fn run_on(&self, slot: usize, job: Job, out: Vec<f32>) -> Result<Vec<f32>, JobError> {
        let mut out = Some(out);
        let kernel = &self.kernels[slot % self.kernels.len()];
        let deadline = Instant::now() + self.call_timeout;
        let mut migrations = 0;
        let mut last = String::from("none");
        let mut backoff = Duration::from_micros(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(JobError::Timeout(self.call_timeout));
            }
            let sent_to = kernel.current().map(|actor| actor.pid());
            let answer = kernel.call(
                |reply| KernelMsg::Run {
                    job: job.clone(),
                    attempt: 0,
                    reply,
                    out: out.take().unwrap_or_default(),
                },
                left,
            );
            match answer {
                Ok(Ok(out)) => return Ok(out),
                Ok(Err(JobError::DeviceFailed { device, error })) => {
                    last = format!("{device}: {error}");
                    migrations += 1;
                    // The failed incarnation is about to crash: wait until it
                    // has, so the job goes to its successor rather than into
                    // its mailbox (where it would die with it).
                    while sent_to.is_some() && kernel.current().map(|actor| actor.pid()) == sent_to
                    {
                        if Instant::now() >= deadline {
                            return Err(JobError::Timeout(self.call_timeout));
                        }
                        std::thread::yield_now();
                    }
                }
                Ok(Err(other)) => return Err(other),
                // The actor died with our job queued or running.
                Err(AskError::Dropped) => migrations += 1,
                // Between an actor's death and its restart, or a full mailbox.
                Err(AskError::NoProc | AskError::Full) => {
                    if self.health().place_would_fail() {
                        return Err(JobError::NoHealthyDevice { migrations, last });
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                    continue;
                }
                Err(AskError::Timeout) => return Err(JobError::Timeout(self.call_timeout)),
                Err(error) => return Err(JobError::Runtime(error.to_string())),
            }
            if self.health().place_would_fail() {
                return Err(JobError::NoHealthyDevice { migrations, last });
            }
            self.shared.migrations.fetch_add(1, Ordering::Relaxed);
            if migrations > self.max_migrations {
                return Err(JobError::NoHealthyDevice { migrations, last });
            }
        }
    }

    /// Per-device health.
    pub fn health(&self) -> &HealthRegistry {
        &self.shared.registry
    }

    /// The device each kernel actor runs on now (None while one restarts).
    pub fn placements(&self) -> Vec<Option<DeviceId>> {
        (0..self.kernels.len()).map(|slot| self.shared.current(slot)).collect()
    }

    /// The kernel actors, by slot.
    pub fn kernels(&self) -> &[ChildRef<KernelMsg>] {
        &self.kernels
    }

    /// The GPU supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.supervisor
    }

    /// What the pool did so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            jobs: self.shared.jobs.load(Ordering::Relaxed),
            retries: self.shared.retries.load(Ordering::Relaxed),
            migrations: self.shared.migrations.load(Ordering::Relaxed),
        }
    }

    /// Device health and the pool's counters in Prometheus' text format.
    pub fn prometheus(&self) -> String {
        let stats = self.stats();
        let mut text = self.health().prometheus();
        for (name, help, value) in [
            ("zbmd_gpu_jobs_total", "jobs completed by kernel actors", stats.jobs),
            ("zbmd_gpu_retries_total", "transient device errors retried", stats.retries),
            (
                "zbmd_gpu_migrations_total",
                "jobs moved to another device after a device failure",
                stats.migrations,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        text
    }

    /// Stops the GPU supervisor and its actors (a nested one is then
    /// restarted by its parent, as any child that exits would be: stop the
    /// parent's tree instead).
    pub fn shutdown(self) {
        self.supervisor.exit(ExitReason::Shutdown);
    }
}

impl fmt::Debug for GpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuPool")
            .field("placements", &self.placements())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
