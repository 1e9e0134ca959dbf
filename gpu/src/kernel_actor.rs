//! The kernel actor: one placement on one device, one [`Executor`], and
//! what it does with each job's outcome.
//!
//! A kernel actor uploads a job's inputs, launches and reads the result
//! back (its executor does the device work), then acts on the error class:
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
//!   restarts it, and placement (in [`started`](Actor::started)) puts the
//!   new incarnation on a healthy device;
//! - a bad request is answered as [`JobError::Gpu`] at once.
//!
//! Every device a job touched hears of the outcome, so health follows
//! what work actually met. The pool that starts these actors and resends a
//! failed job is [`crate::pool`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbmd_rt::{Actor, ActorError, Context, ExitReason, ReplyTo};

use crate::error::{ErrorClass, GpuError};
use crate::executor::Executor;
use crate::health::{Health, HealthRegistry, Placement};
use crate::info::{BackendKind, DeviceId};
use crate::job::{Job, JobError};

/// Transient errors a kernel actor retries before answering with the error.
pub const MAX_TRANSIENT_RETRIES: u32 = 3;

/// What a pool's kernel actors, its health monitor and its callers share:
/// the devices' health, where each actor is placed now, and the counters
/// behind [`JobStats`](crate::pool::JobStats).
pub(crate) struct Shared {
    pub(crate) registry: Arc<HealthRegistry>,
    /// The device each kernel actor runs on now (None between incarnations).
    current: Vec<Mutex<Option<DeviceId>>>,
    pub(crate) jobs: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) migrations: AtomicU64,
}

impl Shared {
    /// Shared state for `actors` kernel actors over `registry`'s devices.
    pub(crate) fn new(registry: HealthRegistry, actors: usize) -> Self {
        Shared {
            registry: Arc::new(registry),
            current: (0..actors).map(|_| Mutex::new(None)).collect(),
            jobs: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            migrations: AtomicU64::new(0),
        }
    }

    fn set_current(&self, slot: usize, device: Option<DeviceId>) {
        *self.current[slot].lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = device;
    }

    /// The device kernel actor `slot` runs on now.
    pub(crate) fn current(&self, slot: usize) -> Option<DeviceId> {
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
        /// [`GpuPool::run_into`](crate::pool::GpuPool::run_into)).
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
pub(crate) struct KernelActor {
    slot: usize,
    shared: Arc<Shared>,
    placement: Option<Placement>,
    /// None while lent to a blocking thread.
    executor: Option<Executor>,
    /// Jobs (with their transient-failure counts) waiting for the executor.
    waiting: VecDeque<(Job, u32, JobReply, Vec<f32>)>,
}

impl KernelActor {
    /// Kernel actor `slot`, not yet placed (it places itself when started).
    pub(crate) fn new(slot: usize, shared: Arc<Shared>) -> Self {
        KernelActor { slot, shared, placement: None, executor: None, waiting: VecDeque::new() }
    }

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
        if health.id().backend == BackendKind::Cpu {
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
                let requested_bytes = match error {
                    GpuError::OutOfMemory { requested_bytes, .. } => requested_bytes,
                    _ => 0,
                };
                reply.reply(Err(JobError::OutOfMemory { device, requested_bytes }));
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
