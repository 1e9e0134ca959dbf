//! The GPU pool: kernel actors under a GPU supervisor, and how a caller's
//! job reaches one and survives its device failing.
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
//! [`GpuPool::run`] sends a [`Job`] to a kernel actor
//! ([`crate::kernel_actor`], which retries transient errors and crashes on
//! a device error) and waits for its answer. When the answer is
//! [`JobError::DeviceFailed`], it waits until that incarnation has been
//! replaced and sends the job again, so the caller gets the right answer
//! from another device, at most [`GpuPoolBuilder::max_migrations`] times.
//! The health monitor (`health_monitor.rs`) moves idle actors off a
//! device that went critical.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zbmd_rt::supervisor::{
    ChildRef, ChildSpec, Incarnation, RestartWaitError, Supervisor, SupervisorError, SupervisorRef,
    SupervisorSpec,
};
use zbmd_rt::{AskError, ExitReason, Runtime};

use crate::device::Device;
use crate::health::{HealthConfigError, HealthPolicy, HealthRegistry};
use crate::health_monitor::HealthMonitor;
use crate::info::DeviceId;
use crate::job::{Job, JobError};
use crate::kernel_actor::{KernelActor, KernelMsg, Shared};

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
        let registry = HealthRegistry::new(self.devices, self.policy)?;
        let shared = Arc::new(Shared::new(registry, actors));
        let specs: Vec<ChildSpec<KernelActor>> = (0..actors)
            .map(|slot| {
                let shared = shared.clone();
                ChildSpec::worker(format!("kernel-{slot}"), move || {
                    KernelActor::new(slot, shared.clone())
                })
            })
            .collect();
        let kernels: Vec<ChildRef<KernelMsg>> = specs.iter().map(ChildSpec::child_ref).collect();
        let monitor = {
            let (shared, kernels, period) = (shared.clone(), kernels.clone(), self.probe_period);
            ChildSpec::worker("health-monitor", move || {
                HealthMonitor::new(shared.clone(), kernels.clone(), period)
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
    /// The devices or the health policy cannot make a registry.
    #[error("GPU pool: {0}")]
    Health(#[from] HealthConfigError),
    /// The supervisor or a kernel actor failed to start.
    #[error("GPU pool: {0}")]
    Start(SupervisorError),
}

/// Counts of what happened to a pool's jobs: completed, retried in place,
/// moved to another device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStats {
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
        let timeout = JobError::Timeout(self.call_timeout);
        let all_critical = || self.health().place_would_fail();
        let (mut migrations, mut last) = (0, String::from("none"));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout);
            }
            // Taken before the call: a device failure comes from this
            // incarnation (or a later one, if the call waited for a restart).
            let seen = kernel.incarnation();
            let run = |reply| KernelMsg::Run {
                job: job.clone(),
                attempt: 0,
                reply,
                out: out.take().unwrap_or_default(),
            };
            match kernel.call(run, left) {
                Ok(Ok(out)) => return Ok(out),
                Ok(Err(JobError::DeviceFailed { device, error })) => {
                    last = format!("{device}: {error}");
                    migrations += 1;
                    // The failed incarnation is about to crash: wait for its
                    // successor, so the job goes there rather than into the
                    // dying one's mailbox (where it would die with it). If
                    // none will come, the next call says so (`NoProc`).
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Err(RestartWaitError::Timeout) = kernel.wait_for_restart(seen, left) {
                        return Err(timeout);
                    }
                }
                Ok(Err(other)) => return Err(other),
                // The actor died with our job running.
                Err(AskError::Dropped) => migrations += 1,
                // A full mailbox; or no incarnation, and none will start
                // unless a parent tree restarts the GPU supervisor.
                Err(error @ (AskError::Full | AskError::NoProc)) => {
                    if all_critical() {
                        return Err(JobError::NoHealthyDevice { migrations, last });
                    }
                    let waited = match error {
                        AskError::Full => kernel.wait_for_room(left),
                        _ => wait_for_rebind(kernel, seen, deadline, all_critical),
                    };
                    if !waited {
                        return Err(timeout);
                    }
                    continue;
                }
                Err(AskError::Timeout) => return Err(timeout),
                Err(error) => return Err(JobError::Runtime(error.to_string())),
            }
            if all_critical() {
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
    pub fn stats(&self) -> JobStats {
        JobStats {
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

/// Waits until kernel actor `kernel` is bound again after incarnation
/// `seen`: true then, false once `deadline` passes. A retired kernel actor
/// (its GPU supervisor stopped) is bound again when a parent tree restarts
/// the GPU supervisor; a top-level pool's never is, and the caller then
/// hears `Timeout`, as it would from a call. Returns true early when
/// `all_critical` says every device is, so that the caller answers that.
// Why this one wait backs off (50 µs doubling to 5 ms) instead of sleeping
// on the binding: while the child is retired, `ChildRef::wait_for_restart`
// answers `Retired` at once, and what ends this wait is either a bind (a
// signal the binding has) or a change of device health (which has none:
// the registry is written by kernel actors and health monitors, and nobody
// waits on it). A binding-only wait would sit out the whole deadline when
// every device goes critical during a parent's restart; a wake-up on
// health changes is left for when the registry gets an event of its own.
fn wait_for_rebind(
    kernel: &ChildRef<KernelMsg>,
    seen: Incarnation,
    deadline: Instant,
    all_critical: impl Fn() -> bool,
) -> bool {
    let mut backoff = Duration::from_micros(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match kernel.wait_for_restart(seen, left) {
            Ok(()) => return true,
            Err(RestartWaitError::Timeout) => return false,
            Err(RestartWaitError::Retired) if all_critical() => return true,
            Err(RestartWaitError::Retired) => {
                std::thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(Duration::from_millis(5));
            }
        }
    }
}
