//! The runtime: shards pinned to cores, running actors.
//!
//! ```
//! use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
//! use std::time::Duration;
//!
//! struct Counter(u64);
//! enum Msg { Add(u64), Get(ReplyTo<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Get(reply) => { reply.reply(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(2).pin(false).build().unwrap();
//! let counter = rt.spawn(Counter(0)).unwrap();
//! counter.try_send(Msg::Add(2)).unwrap();
//! counter.try_send(Msg::Add(3)).unwrap();
//! assert_eq!(rt.call(&counter, Msg::Get, Duration::from_secs(5)), Ok(5));
//! rt.shutdown();
//! ```

mod blocking;
mod handle;
mod local;
mod metrics;
mod panics;
mod registry;
mod scheduler;
mod shard;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use handle::RuntimeHandle;
pub use local::on_shard_thread;
pub use metrics::{Metric, MetricsSnapshot};
pub(crate) use panics::CaughtCall;
pub use panics::HandlerPanics;
pub(crate) use scheduler::Scheduler;
pub(crate) use shard::ShardCtx;
pub(crate) use timers::TimerAction;

use crate::actor::{Actor, ActorRef, ExitReason, Pid, ReplyTo};
use crate::error::{AskError, RuntimeError};
use crate::fault::{FaultInjector, FaultPlan, Injector};
use crate::io::{IoBackendKind, MAX_IO_IN_FLIGHT};
use crate::sync::mpmc::MpmcQueue;
use crate::sync::{deque, park, spsc};
use crate::topology::{self, CpuClaim, CpuSet, Placement, ShardPlacement, Topology};
use blocking::BlockingPool;
use local::LocalQueues;
use scheduler::ShardShared;
use shard::Shard;
use zbmd_alloc::{PoolStats, RegionInfo, ShardPools, ShardPoolsBuilder};

/// User mailbox capacity when none is given: a mailbox that holds more
/// than a few hundred messages means its actor is behind, and backpressure
/// should reach the senders early rather than hide a growing queue.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 256;
/// System lane capacity: links, monitors, exits, replies. Deep enough for
/// a burst of exits from a large link set or many outstanding asks.
pub const DEFAULT_SYSTEM_CAPACITY: usize = 128;
/// Actors per shard: 64 Ki slots cost about 4 MiB of slot table per shard.
pub const DEFAULT_MAX_ACTORS_PER_SHARD: usize = 1 << 16;
/// Reductions per turn: tokio's coop budget of 128 for the same reasons:
/// high enough to amortise a dequeue, low enough that one busy actor cannot
/// keep the others of its shard waiting long.
pub const DEFAULT_REDUCTION_BUDGET: u32 = 128;
/// Entries in each SPSC ring between two shards: 1 Ki wake-ups in flight per
/// pair before the overflow path takes over.
pub const DEFAULT_RING_CAPACITY: usize = 1024;
/// Room in each shard's injection queue: runnable actors woken from threads
/// outside the runtime, or past a full shard-to-shard ring. Past it, an
/// unpinned actor waits in the runtime-wide overflow queue (any shard runs
/// it); a pinned one has a queue of its own with room for every actor of
/// its shard. 4 Ki entries cost 96 KiB per shard, written at build: the
/// per-shard cost no longer grows with the number of shards.
pub const DEFAULT_INJECTION_CAPACITY: usize = 1 << 12;
/// Pending timers per shard.
pub const DEFAULT_TIMER_CAPACITY: usize = 1 << 16;
/// Timer resolution: 1 ms is the accuracy the runtime promises, and a
/// finer tick only adds cascades.
pub const DEFAULT_TIMER_TICK: Duration = Duration::from_millis(1);
/// Longest registered name, in bytes.
pub const DEFAULT_MAX_NAME_LEN: usize = 255;
/// Registered names in the whole runtime.
pub const DEFAULT_MAX_NAMES: usize = 1 << 16;
/// Blocking threads: enough to overlap a few synchronous device waits or
/// foreign calls without oversubscribing the shards' cores.
pub const DEFAULT_BLOCKING_THREADS: usize = 4;
/// Blocking jobs queued before `submit` answers `QueueFull`.
pub const DEFAULT_BLOCKING_QUEUE: usize = 1024;
/// A turn longer than this is logged as a stall, naming the actor.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_millis(10);
/// How long shutdown waits for an actor to stop before it logs it as stuck.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// I/O operations in flight per shard: deep enough to keep an NVMe
/// device's queue busy from one core (tens of requests) with room for
/// bursts, small enough that the ring (256 submission and 512 completion
/// entries, about 24 KiB) and the in-flight table cost little per shard.
pub const DEFAULT_MAX_IO_IN_FLIGHT: usize = 256;
/// The size classes of each shard's pools, as (block bytes, blocks): actor
/// cells (256 B and 1 KiB), mailbox lanes (4 KiB: 256 small messages;
/// 8 and 16 KiB: 128 system signals), message buffers and staging (64 KiB,
/// 1 MiB). About 340 MiB of address space per shard, reserved at startup and
/// backed by memory only as it is used (unless `prefault`): room for 16 Ki
/// live actors spawned by each shard with default mailboxes.
pub const DEFAULT_POOL_CLASSES: [(usize, usize); 7] = [
    (256, 1 << 14),
    (1 << 10, 1 << 14),
    (4 << 10, 1 << 14),
    (8 << 10, 1 << 14),
    (16 << 10, 1 << 12),
    (64 << 10, 1 << 8),
    (1 << 20, 1 << 5),
];

/// The most shards a runtime may have (shard ids are 16-bit, and one id
/// is reserved for the runtime itself).
pub const MAX_SHARDS: usize = 1024;

/// Actors per shard in the embedding preset ([`RuntimeBuilder::embedded`]):
/// room for a few worker pools and their supervisors, at a slot table of
/// about 64 KiB.
pub const EMBEDDED_MAX_ACTORS_PER_SHARD: usize = 1 << 10;
/// The embedding preset's pool classes: [`DEFAULT_POOL_CLASSES`] cut down to
/// the preset's 1 Ki actors (a cell and both mailbox lanes for each, 256
/// large signal lanes, 16 message buffers of 64 KiB and 2 of 1 MiB), about
/// 20 MiB of address space, backed only as it is used.
pub const EMBEDDED_POOL_CLASSES: [(usize, usize); 7] = [
    (256, 1 << 10),
    (1 << 10, 1 << 10),
    (4 << 10, 1 << 10),
    (8 << 10, 1 << 10),
    (16 << 10, 1 << 8),
    (64 << 10, 1 << 4),
    (1 << 20, 1 << 1),
];
/// Pending timers in the embedding preset: four per actor.
pub const EMBEDDED_TIMER_CAPACITY: usize = 1 << 12;
/// Queued blocking jobs in the embedding preset, for its one blocking thread.
pub const EMBEDDED_BLOCKING_QUEUE: usize = 64;
/// I/O operations in flight in the embedding preset: enough for a few
/// files at a time, with a small ring.
pub const EMBEDDED_MAX_IO_IN_FLIGHT: usize = 32;
/// The longest runtime name ([`RuntimeBuilder::name`]), in bytes.
pub const MAX_RUNTIME_NAME_LEN: usize = 64;

/// The next runtime's id: ids are unique in the process, handed out from 1
/// in build order and never reused (see [`Runtime::id`]).
static NEXT_RUNTIME_ID: AtomicU32 = AtomicU32::new(1);

/// Takes the next runtime id, or fails once the ids are spent (after about
/// four billion runtimes in one process).
fn next_runtime_id() -> Result<u32, RuntimeError> {
    NEXT_RUNTIME_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .map_err(|_| RuntimeError::RuntimeIdsExhausted)
}

/// The runtime's settings, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) node: u16,
    /// This runtime's id in the process, taken by `build`.
    pub(crate) runtime: u32,
    /// The name the builder gave, for metrics and logs.
    pub(crate) name: Option<String>,
    /// How handler panics are reported.
    pub(crate) handler_panics: HandlerPanics,
    pub(crate) shards: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) system_capacity: usize,
    pub(crate) max_actors_per_shard: usize,
    pub(crate) reduction_budget: u32,
    pub(crate) ring_capacity: usize,
    pub(crate) injection_capacity: usize,
    pub(crate) timer_capacity: usize,
    pub(crate) timer_tick: Duration,
    pub(crate) max_name_len: usize,
    pub(crate) max_names: usize,
    pub(crate) blocking_threads: usize,
    pub(crate) blocking_queue: usize,
    pub(crate) stall_limit: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// The I/O backend: what the builder asked for, then what `build`
    /// chose (always `Some` once the shards exist).
    pub(crate) io_backend: Option<IoBackendKind>,
    pub(crate) max_io_in_flight: usize,
    /// Actors spawned on a shard take their cell and mailbox from its pools.
    pub(crate) pool_actors: bool,
    /// The fault plan being injected (`crate::fault`), chosen by `build`.
    pub(crate) faults: Option<Arc<Injector>>,
}

/// Options for one spawn; the defaults come from the runtime.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The shard to start on (default: round robin from outside, the
    /// spawner's shard from inside an actor).
    pub shard: Option<usize>,
    /// Never stolen by another shard.
    pub pinned: bool,
    /// User mailbox capacity (default: the runtime's).
    pub mailbox_capacity: Option<usize>,
    /// System lane capacity (default: the runtime's).
    pub system_capacity: Option<usize>,
    /// Link the new actor to the spawning actor (inside an actor only).
    pub link: bool,
    /// Never fault this actor's messages, whatever the fault plan
    /// ([`crate::fault`]); supervisors are spawned exempt.
    pub fault_exempt: bool,
}

/// Builds a [`Runtime`]: `Runtime::builder().shards(4).build()?`.
///
/// # What the defaults cost
///
/// `Runtime::builder().build()` is made for a machine the runtime owns: one
/// shard per CPU the process may run on, each pinned to its CPU and sized
/// for [`DEFAULT_MAX_ACTORS_PER_SHARD`] (64 Ki) actors. Measured in a fresh
/// process (`benches/benches/runtime_footprint.rs`; the figures, machine
/// and method are in `bench_results/runtime_footprint.md`):
///
/// | | default, 2 CPUs | default, 16 CPUs (modelled) | [`embedded`](Self::embedded) |
/// |---|---|---|---|
/// | shards | 2 | 16 | 1, unpinned |
/// | threads | 6 | 20 | 2 |
/// | address space | 1.0 GiB | 6.3 GiB | 153 MiB |
/// | resident | 25 MiB | 194 MiB | 1 MiB |
/// | `build` | 15-55 ms | 105 ms | 0.9 ms |
///
/// - **Threads**: one per shard, plus [`DEFAULT_BLOCKING_THREADS`] (4)
///   blocking threads, plus 2 I/O threads per shard where io_uring is
///   unavailable.
/// - **Address space**: each shard reserves 324 MiB of memory pools
///   ([`DEFAULT_POOL_CLASSES`]), backed only as it is used; each new thread
///   gets a glibc malloc arena of up to 64 MiB of address space (kept by the
///   process after shutdown, and reused by later threads).
/// - **Resident memory**: the queues and tables written at build, about
///   11 MiB per shard (slot table, timer wheel, injection queues; see
///   [`injection_capacity`](Self::injection_capacity)) plus a runtime-wide
///   overflow queue of 24 B per actor the runtime may hold.
/// - **Start**: `build` reads the topology, reserves the pools, writes the
///   queues and starts the threads: tens of milliseconds on a small
///   machine, about 105 ms for 16 shards.
///
/// A program that embeds the runtime (a library, a service with its own
/// threads) wants [`embedded`](Self::embedded) instead, or its own limits:
/// [`shards`](Self::shards), [`pin`](Self::pin),
/// [`max_actors_per_shard`](Self::max_actors_per_shard),
/// [`memory`](Self::memory), [`blocking_threads`](Self::blocking_threads).
///
/// ```
/// use zbmd_rt::{Actor, ActorError, Context, Runtime};
///
/// struct Log(Vec<String>);
/// impl Actor for Log {
///     type Msg = String;
///     fn handle(&mut self, _: &mut Context<'_, Self>, line: String) -> Result<(), ActorError> {
///         self.0.push(line);
///         Ok(())
///     }
/// }
///
/// // One unpinned shard, small pools, one blocking thread; then a name for
/// // the metrics, and a bigger mailbox than the preset's default.
/// let rt = Runtime::builder().embedded().name("logger").mailbox_capacity(1024).build().unwrap();
/// let log = rt.spawn(Log(Vec::new())).unwrap();
/// log.try_send("started".to_string()).unwrap();
/// assert!(rt.metrics().to_prometheus().contains("runtime_name=\"logger\""));
/// rt.shutdown();
/// ```
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    shards: Option<usize>,
    placement: Placement,
    topology: Option<Topology>,
    allowed: Option<CpuSet>,
    pin: bool,
    exclusive_cpus: bool,
    fault_plan: Option<FaultPlan>,
    memory: ShardPoolsBuilder,
    config: Config,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            shards: None,
            placement: Placement::Pack,
            topology: None,
            allowed: None,
            pin: true,
            exclusive_cpus: false,
            fault_plan: None,
            memory: ShardPools::builder().classes(DEFAULT_POOL_CLASSES),
            config: Config {
                node: 0,
                runtime: 0,
                name: None,
                handler_panics: HandlerPanics::Tracing,
                shards: 0,
                mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
                system_capacity: DEFAULT_SYSTEM_CAPACITY,
                max_actors_per_shard: DEFAULT_MAX_ACTORS_PER_SHARD,
                reduction_budget: DEFAULT_REDUCTION_BUDGET,
                ring_capacity: DEFAULT_RING_CAPACITY,
                injection_capacity: DEFAULT_INJECTION_CAPACITY,
                timer_capacity: DEFAULT_TIMER_CAPACITY,
                timer_tick: DEFAULT_TIMER_TICK,
                max_name_len: DEFAULT_MAX_NAME_LEN,
                max_names: DEFAULT_MAX_NAMES,
                blocking_threads: DEFAULT_BLOCKING_THREADS,
                blocking_queue: DEFAULT_BLOCKING_QUEUE,
                stall_limit: DEFAULT_STALL_LIMIT,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                io_backend: None,
                max_io_in_flight: DEFAULT_MAX_IO_IN_FLIGHT,
                pool_actors: true,
                faults: None,
            },
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl RuntimeBuilder {
    /// The number of shards (default: one per CPU the process may run on).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How shards are laid out on the machine (default: [`Placement::Pack`]).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Use this topology instead of detecting the machine's (for tests that
    /// model a machine they do not run on; combine with `pin(false)`).
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Use these CPUs instead of the process's affinity mask.
    pub fn allowed_cpus(mut self, cpus: CpuSet) -> Self {
        self.allowed = Some(cpus);
        self
    }

    /// Pin each shard's thread to its CPU (default: true).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Whether `build` refuses to pin a shard onto a CPU that another live
    /// runtime of this process has pinned a shard to (default false).
    ///
    /// Every pinned runtime records its CPUs in a process-wide table
    /// ([`topology::pinned_cpus`]) until it stops. By default a runtime
    /// whose CPUs overlap another's is built anyway, with a `tracing`
    /// warning naming the CPUs and the other runtime, and reports the
    /// overlap in [`Runtime::shared_cpus`] and the `zbmd_shared_cpus`
    /// gauge: the two runtimes' shards then take turns on those cores,
    /// which is slower but correct. With `exclusive_cpus(true)`, `build`
    /// fails with [`RuntimeError::CpusInUse`] instead. Unpinned runtimes
    /// (`pin(false)`, [`embedded`](Self::embedded)) claim no CPUs and are
    /// never refused.
    ///
    /// Warning is the default because refusing would turn runtimes that
    /// merely overlap in time into failures that depend on timing: `cargo
    /// test` runs a crate's tests on parallel threads of one process, and
    /// two tests that each build a default (pinned) runtime would fail or
    /// pass depending on which started first. A deployment that must own
    /// its cores turns the refusal on.
    ///
    /// ```
    /// use zbmd_rt::topology::CpuSet;
    /// use zbmd_rt::{Runtime, RuntimeError};
    ///
    /// let cpu = CpuSet::current_affinity().unwrap().first().unwrap();
    /// let one: CpuSet = CpuSet::from_cpus([cpu]).unwrap();
    /// let first = Runtime::builder().shards(1).allowed_cpus(one).build().unwrap();
    /// let second = Runtime::builder().shards(1).allowed_cpus(one).exclusive_cpus(true).build();
    /// assert!(matches!(second, Err(RuntimeError::CpusInUse { .. })));
    /// first.shutdown(); // releases the CPU
    /// let third = Runtime::builder().shards(1).allowed_cpus(one).exclusive_cpus(true).build();
    /// assert!(third.is_ok());
    /// ```
    pub fn exclusive_cpus(mut self, exclusive: bool) -> Self {
        self.exclusive_cpus = exclusive;
        self
    }

    /// A name for the runtime (default none): the `runtime_name` label of
    /// its Prometheus series ([`MetricsSnapshot::to_prometheus`]) and a
    /// field of its start and stop logs. 1 to [`MAX_RUNTIME_NAME_LEN`]
    /// bytes of ASCII letters, digits, `_`, `.` and `-`, so it needs no
    /// escaping; `build` fails with [`RuntimeError::Config`] otherwise.
    /// Names need not be unique: [`Runtime::id`] is.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// The embedding preset: a runtime that lives inside a larger program
    /// and costs it little. One shard, unpinned (so it claims no CPU and
    /// lets the OS schedule it among the program's threads), one blocking
    /// thread, [`EMBEDDED_MAX_ACTORS_PER_SHARD`] actors with pools cut to
    /// match ([`EMBEDDED_POOL_CLASSES`]), [`EMBEDDED_TIMER_CAPACITY`]
    /// timers, [`EMBEDDED_BLOCKING_QUEUE`] queued blocking jobs and
    /// [`EMBEDDED_MAX_IO_IN_FLIGHT`] I/O operations in flight. Every other
    /// setting keeps its default. The figures it costs, next to the
    /// defaults', are in the [`RuntimeBuilder`] docs.
    ///
    /// Settings called after `embedded()` override it; settings called
    /// before are overwritten where the preset sets them (the pool classes
    /// only, of the memory settings).
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
    ///
    /// struct Echo;
    /// impl Actor for Echo {
    ///     type Msg = (String, ReplyTo<String>);
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, (text, reply): Self::Msg) -> Result<(), ActorError> {
    ///         reply.reply(text);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().embedded().name("echo").build().unwrap();
    /// assert_eq!(rt.shards(), 1);
    /// assert!(rt.pinned_cpus().is_empty());
    /// let echo = rt.spawn(Echo).unwrap();
    /// let answer = rt.call(&echo, |reply| ("hi".to_string(), reply), Duration::from_secs(5));
    /// assert_eq!(answer.as_deref(), Ok("hi"));
    /// rt.shutdown();
    /// ```
    pub fn embedded(mut self) -> Self {
        self.memory = self.memory.classes(EMBEDDED_POOL_CLASSES);
        self.shards(1)
            .pin(false)
            .blocking_threads(1)
            .blocking_queue(EMBEDDED_BLOCKING_QUEUE)
            .max_actors_per_shard(EMBEDDED_MAX_ACTORS_PER_SHARD)
            .timer_capacity(EMBEDDED_TIMER_CAPACITY)
            .max_io_in_flight(EMBEDDED_MAX_IO_IN_FLIGHT)
    }

    setter!(
        /// This node's id in a cluster (default 0).
        node: u16
    );
    setter!(
        /// How a panic in an actor's handler is reported (default
        /// [`HandlerPanics::Tracing`]: one `tracing` warning instead of the
        /// process's panic hook). The actor crashes with `panicked:
        /// <message>` either way; see [`HandlerPanics`] and `docs/runtime.md`.
        handler_panics: HandlerPanics
    );
    setter!(
        /// Default user mailbox capacity ([`DEFAULT_MAILBOX_CAPACITY`]).
        mailbox_capacity: usize
    );
    setter!(
        /// Default system lane capacity ([`DEFAULT_SYSTEM_CAPACITY`]).
        system_capacity: usize
    );
    setter!(
        /// Actors per shard ([`DEFAULT_MAX_ACTORS_PER_SHARD`]).
        max_actors_per_shard: usize
    );
    setter!(
        /// Reductions per turn ([`DEFAULT_REDUCTION_BUDGET`]).
        reduction_budget: u32
    );
    setter!(
        /// Entries per shard-to-shard ring ([`DEFAULT_RING_CAPACITY`]).
        ring_capacity: usize
    );
    setter!(
        /// Room in each shard's injection queue before unpinned actors
        /// woken from outside spill into the runtime-wide overflow queue
        /// ([`DEFAULT_INJECTION_CAPACITY`]).
        injection_capacity: usize
    );
    setter!(
        /// Pending timers per shard ([`DEFAULT_TIMER_CAPACITY`]).
        timer_capacity: usize
    );
    setter!(
        /// Timer resolution ([`DEFAULT_TIMER_TICK`]).
        timer_tick: Duration
    );
    setter!(
        /// Longest registered name in bytes ([`DEFAULT_MAX_NAME_LEN`]).
        max_name_len: usize
    );
    setter!(
        /// Registered names ([`DEFAULT_MAX_NAMES`]).
        max_names: usize
    );
    setter!(
        /// Blocking threads ([`DEFAULT_BLOCKING_THREADS`]).
        blocking_threads: usize
    );
    setter!(
        /// Queued blocking jobs ([`DEFAULT_BLOCKING_QUEUE`]).
        blocking_queue: usize
    );
    setter!(
        /// Turn length logged as a stall ([`DEFAULT_STALL_LIMIT`]).
        stall_limit: Duration
    );
    setter!(
        /// Wait per actor at shutdown before logging it as stuck ([`DEFAULT_SHUTDOWN_TIMEOUT`]).
        shutdown_timeout: Duration
    );
    setter!(
        /// The I/O backend every shard uses (default `None`: the
        /// `ZBMD_IO_BACKEND` environment variable, else io_uring where it
        /// works, else blocking threads; see [`crate::io`]). Asking for
        /// io_uring where it cannot work makes `build` fail.
        io_backend: Option<IoBackendKind>
    );
    setter!(
        /// I/O operations in flight per shard ([`DEFAULT_MAX_IO_IN_FLIGHT`]);
        /// one more is refused with [`IoError::QueueFull`](crate::io::IoError::QueueFull).
        max_io_in_flight: usize
    );

    /// Injects the faults of `plan` ([`crate::fault`], `docs/faults.md`).
    /// Without this, `build` reads a plan from the `ZBMD_FAULT_INJECTION`
    /// environment variable if it is set; a plan given here wins over the
    /// variable, and an empty plan (`FaultPlan::new()`) turns injection off
    /// even when it is set. `build` fails with [`RuntimeError::Config`] on
    /// an invalid plan.
    pub fn fault_plan(mut self, plan: FaultPlan) -> Self {
        self.fault_plan = Some(plan);
        self
    }

    /// Each shard's memory ([`DEFAULT_POOL_CLASSES`], hugepages where the
    /// machine has them, no prefaulting, by default): size classes,
    /// hugepage policy, prefaulting, extra room for typed pools. `build`
    /// gives each shard its own set, bound to the NUMA node of its CPU when
    /// shards are pinned (the builder's `shard` and `numa_node` are set per
    /// shard), and fails
    /// with [`RuntimeError::Memory`] when one cannot be reserved.
    /// `docs/memory.md` describes what lives there.
    pub fn memory(mut self, pools: ShardPoolsBuilder) -> Self {
        self.memory = pools;
        self
    }

    /// Whether actors spawned on a shard take their cell and mailbox lanes
    /// from the shard's pools (default true). Off, every actor is made on
    /// the heap, as those spawned from outside the runtime are: for
    /// comparison (the spawn benchmark runs both), or to leave the pools to
    /// message buffers alone.
    pub fn pool_actors(mut self, on: bool) -> Self {
        self.config.pool_actors = on;
        self
    }

    /// Takes the runtime's id, places the shards, claims their CPUs when
    /// pinned ([`exclusive_cpus`](Self::exclusive_cpus)), starts one thread
    /// per shard (pinned unless `pin(false)`), and returns the running
    /// runtime.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let runtime = next_runtime_id()?;
        let topology = match self.topology {
            Some(topology) => topology,
            None => Topology::detect()?,
        };
        let allowed = match self.allowed {
            Some(cpus) => cpus,
            None if self.pin => CpuSet::current_affinity()?,
            None => topology.cpus(),
        };
        let count = match self.shards {
            Some(count) => count,
            None => self.placement.default_shards(&topology, &allowed),
        };
        let placement = topology::place(&topology, &allowed, count, &self.placement)?;
        let config = Config { shards: count, runtime, ..self.config };
        validate(&config)?;
        let pinned_cpus = match self.pin {
            true => CpuSet::from_cpus(placement.iter().map(|place| place.cpu))?,
            false => CpuSet::new(),
        };
        // Released when this function fails below, or when the runtime stops.
        let (claim, shared_cpus) = claim_cpus(runtime, &pinned_cpus, self.exclusive_cpus)?;
        let config = Config { faults: crate::fault::resolve(self.fault_plan)?, ..config };
        // Detected once (and logged with its reason); every shard uses it.
        let io_backend = crate::io::detect(config.io_backend)?.kind;
        let config = Config { io_backend: Some(io_backend), ..config };
        if config.handler_panics == HandlerPanics::Tracing {
            panics::install_hook();
        }
        let name = config.name.clone();
        let (sched, shards) = assemble(config, &self.memory, &placement, self.pin)?;
        let mut threads = Vec::with_capacity(count);
        for (shard, place) in shards.into_iter().zip(&placement) {
            match start_shard(shard, *place, self.pin) {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    stop_threads(&sched, threads);
                    return Err(error);
                }
            }
        }
        tracing::info!(runtime, name, shards = count, pinned = self.pin, io = %io_backend, placement = %PlacementList(&placement), "runtime started");
        let handle = RuntimeHandle::new(sched.clone());
        Ok(Runtime {
            sched,
            threads,
            placement,
            io_backend,
            handle,
            pinned_cpus,
            shared_cpus,
            claim,
        })
    }
}

/// Records the CPUs a pinned runtime's shards take in the process-wide
/// table (`topology::claims`): warns when another live runtime holds some
/// of them, or refuses with `exclusive`. Returns the claim, which releases
/// the CPUs when dropped, and the CPUs shared with other runtimes.
fn claim_cpus(
    runtime: u32,
    cpus: &CpuSet,
    exclusive: bool,
) -> Result<(Option<CpuClaim>, CpuSet), RuntimeError> {
    if cpus.is_empty() {
        return Ok((None, CpuSet::new()));
    }
    match topology::claim(runtime, cpus, exclusive) {
        Ok((claim, overlap)) => {
            if !overlap.cpus.is_empty() {
                tracing::warn!(
                    runtime,
                    cpus = %overlap.cpus,
                    held_by = ?overlap.runtimes,
                    "pinning shards onto CPUs another runtime of this process has pinned: the runtimes' shards will take turns on those cores; give this runtime other CPUs (RuntimeBuilder::allowed_cpus), build it with pin(false), or refuse with exclusive_cpus(true)"
                );
            }
            Ok((Some(claim), overlap.cpus))
        }
        Err(overlap) => Err(RuntimeError::CpusInUse {
            cpus: Box::new(overlap.cpus),
            runtimes: overlap.runtimes,
        }),
    }
}

fn validate(config: &Config) -> Result<(), RuntimeError> {
    let bad = |what: String| Err(RuntimeError::Config(what));
    if config.shards == 0 || config.shards > MAX_SHARDS {
        return bad(format!("shards must be in 1..={MAX_SHARDS}, not {}", config.shards));
    }
    if config.max_actors_per_shard == 0 || config.max_actors_per_shard > u32::MAX as usize / 2 {
        return bad(format!(
            "max_actors_per_shard must be in 1..=2^31, not {}",
            config.max_actors_per_shard
        ));
    }
    if config.reduction_budget == 0 {
        return bad("reduction_budget must be at least 1".into());
    }
    if config.injection_capacity == 0 || config.injection_capacity > u32::MAX as usize / 2 {
        return bad(format!(
            "injection_capacity must be in 1..=2^31, not {}",
            config.injection_capacity
        ));
    }
    if config.blocking_threads == 0 {
        return bad("blocking_threads must be at least 1".into());
    }
    if config.max_name_len == 0 {
        return bad("max_name_len must be at least 1".into());
    }
    if let Some(name) = &config.name {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > MAX_RUNTIME_NAME_LEN || !name.chars().all(allowed) {
            return bad(format!(
                "the runtime's name must be 1 to {MAX_RUNTIME_NAME_LEN} bytes of [A-Za-z0-9_.-], not {name:?}"
            ));
        }
    }
    if config.max_io_in_flight == 0 || config.max_io_in_flight > MAX_IO_IN_FLIGHT {
        return bad(format!(
            "max_io_in_flight must be in 1..={MAX_IO_IN_FLIGHT}, not {}",
            config.max_io_in_flight
        ));
    }
    Ok(())
}

/// Builds the shared scheduler and each shard's private state.
fn assemble(
    config: Config,
    memory: &ShardPoolsBuilder,
    placement: &[ShardPlacement],
    pinned: bool,
) -> Result<(Arc<Scheduler>, Vec<Shard>), RuntimeError> {
    let count = config.shards;
    let total_actors = count * config.max_actors_per_shard;
    let deque_capacity = config.max_actors_per_shard.min(1 << 14);
    let mut shared = Vec::with_capacity(count);
    let mut private = Vec::with_capacity(count);
    for place in placement {
        // Memory follows the shard's CPU when the shard stays on it; an
        // unpinned shard (or a modelled machine) binds none.
        let node = pinned.then_some(place.numa_node);
        let pools = memory.clone().shard(place.shard).numa_node(node).build()?;
        let (worker, stealer) = deque::bounded(deque_capacity)?;
        let (parker, unparker) = park::pair();
        shared.push(ShardShared {
            injection: MpmcQueue::with_capacity(config.injection_capacity.min(total_actors))?,
            injection_pinned: MpmcQueue::with_capacity(config.max_actors_per_shard)?,
            stealer,
            unparker,
            sleeping: Default::default(),
            slots: scheduler::SlotTable::new(config.max_actors_per_shard)?,
            pools,
            turn: Default::default(),
        });
        private.push((worker, parker));
    }
    // One ring per ordered pair: producers[from][to], consumers[to][from].
    let mut producers: Vec<Vec<Option<spsc::Producer<_>>>> =
        (0..count).map(|_| Vec::new()).collect();
    let mut consumers: Vec<Vec<spsc::Consumer<_>>> = (0..count).map(|_| Vec::new()).collect();
    for (from, out) in producers.iter_mut().enumerate() {
        for (to, incoming) in consumers.iter_mut().enumerate() {
            if from == to {
                out.push(None);
                continue;
            }
            let (tx, rx) = spsc::channel(config.ring_capacity)?;
            out.push(Some(tx));
            incoming.push(rx);
        }
    }
    let blocking = BlockingPool::start(config.blocking_threads, config.blocking_queue)?;
    let sched = Arc::new(Scheduler::new(config, shared.into_boxed_slice(), blocking)?);
    let mut shards = Vec::with_capacity(count);
    for (index, ((worker, parker), (out, incoming))) in
        private.into_iter().zip(producers.into_iter().zip(consumers)).enumerate()
    {
        let queues = Box::new(LocalQueues::new(index, &sched, worker, out));
        shards.push(Shard::new(index, sched.clone(), queues, incoming, parker)?);
    }
    Ok((sched, shards))
}

fn start_shard(
    shard: Shard,
    place: ShardPlacement,
    pin: bool,
) -> Result<JoinHandle<()>, RuntimeError> {
    let name = format!("zbmd-shard-{}", place.shard);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if pin {
                if let Err(error) = topology::pin_current_thread(place.cpu) {
                    tracing::error!(shard = place.shard, cpu = place.cpu, %error, "could not pin shard; running unpinned");
                }
            }
            shard.run();
        })
        .map_err(|source| RuntimeError::Thread { name, source })
}

fn stop_threads(sched: &Scheduler, threads: Vec<JoinHandle<()>>) {
    sched.accepting.store(false, Ordering::Release);
    sched.stopping.store(true, Ordering::Release);
    for index in 0..sched.shards.len() {
        sched.shards[index].unparker.unpark();
    }
    for handle in threads {
        let _ = handle.join();
    }
    sched.blocking().stop();
}

struct PlacementList<'a>(&'a [ShardPlacement]);

impl std::fmt::Display for PlacementList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, place) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}shard {}→cpu {} (numa {})", place.shard, place.cpu, place.numa_node)?;
        }
        Ok(())
    }
}

/// A blocking request from a thread outside the runtime: builds the
/// request around a fresh [`ReplyTo`] addressed to `target`, sends it, and waits for
/// the reply or `timeout`. Every blocking `call` of the crate goes through
/// here.
///
/// # Panics
///
/// On a shard thread, where blocking would stall the shard.
pub(crate) fn call_blocking<M, R>(
    target: &ActorRef<M>,
    request: impl FnOnce(ReplyTo<R>) -> M,
    timeout: Duration,
) -> Result<R, AskError>
where
    M: Send + 'static,
    R: Send + 'static,
{
    assert!(
        !on_shard_thread(),
        "a blocking call must not run on a shard thread; actors use Context::ask"
    );
    if timeout.is_zero() {
        return Err(AskError::ZeroTimeout);
    }
    let sink = Arc::new(crate::actor::ThreadSink::new());
    match target.try_send(request(ReplyTo::new(sink.clone(), Some(target.id())))) {
        Ok(()) => sink.wait(timeout),
        Err(e) if e.is_full() => Err(AskError::Full),
        Err(_) => Err(AskError::NoProc),
    }
}

/// A running runtime: shards running actors. Dropping it shuts it down.
///
/// Build one with [`Runtime::builder`] (the defaults take every CPU; see
/// [`RuntimeBuilder`] for what a runtime costs and the
/// [`embedded`](RuntimeBuilder::embedded) preset), spawn actors into it,
/// talk to them from outside with [`ActorRef::try_send`] and
/// [`call`](Self::call), and stop it with [`shutdown`](Self::shutdown).
///
/// Several runtimes may live in one process: each has its own
/// [`id`](Self::id), carried by every [`ActorId`](crate::ActorId) it hands
/// out, so their actors never share an id or compare equal; pinned
/// runtimes that overlap on CPUs are reported (or refused: see
/// [`RuntimeBuilder::exclusive_cpus`]).
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
///
/// struct Greeter;
/// impl Actor for Greeter {
///     type Msg = (String, ReplyTo<String>);
///     fn handle(&mut self, _: &mut Context<'_, Self>, (name, reply): Self::Msg) -> Result<(), ActorError> {
///         reply.reply(format!("hello, {name}"));
///         Ok(())
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
/// let greeter = rt.spawn(Greeter).unwrap();
/// assert_eq!(greeter.id().runtime, rt.id());
/// let answer = rt.call(&greeter, |reply| ("zbmd".to_string(), reply), Duration::from_secs(5));
/// assert_eq!(answer.as_deref(), Ok("hello, zbmd"));
/// rt.shutdown(); // stops the actor, then the shards
/// assert!(!greeter.is_alive());
/// ```
pub struct Runtime {
    sched: Arc<Scheduler>,
    threads: Vec<JoinHandle<()>>,
    placement: Vec<ShardPlacement>,
    io_backend: IoBackendKind,
    /// What [`Runtime::handle`] clones (`handle.rs`).
    handle: RuntimeHandle,
    /// The CPUs the shards are pinned to (empty when unpinned).
    pinned_cpus: CpuSet,
    /// Those of them another live runtime had pinned first.
    shared_cpus: CpuSet,
    /// The record of `pinned_cpus` in the process-wide table, released when
    /// the runtime stops.
    claim: Option<CpuClaim>,
}

impl Runtime {
    /// A builder with the documented defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// This runtime's id: unique among the runtimes of the process (handed
    /// out from 1 in build order, never reused), and part of every
    /// [`ActorId`](crate::ActorId) it gives out, so actors of two runtimes
    /// never share an id. The `runtime` label of its Prometheus series.
    pub fn id(&self) -> u32 {
        self.sched.config.runtime
    }

    /// The name given with [`RuntimeBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.sched.config.name.as_deref()
    }

    /// Where each shard runs, as chosen at build time.
    pub fn placement(&self) -> &[ShardPlacement] {
        &self.placement
    }

    /// The CPUs the shards are pinned to (empty for an unpinned runtime).
    pub fn pinned_cpus(&self) -> CpuSet {
        self.pinned_cpus
    }

    /// The CPUs this runtime pinned shards to that another live runtime of
    /// the process had pinned shards to when this one was built (empty
    /// unless [`RuntimeBuilder::exclusive_cpus`] was off and they overlap;
    /// `build` logged a warning then). Also the `zbmd_shared_cpus` gauge.
    pub fn shared_cpus(&self) -> CpuSet {
        self.shared_cpus
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.sched.config.shards
    }

    /// The I/O backend the shards use, as chosen at build time.
    pub fn io_backend(&self) -> IoBackendKind {
        self.io_backend
    }

    /// Spawns an actor on the next shard, round robin.
    pub fn spawn<A: Actor>(&self, actor: A) -> Result<ActorRef<A::Msg>, RuntimeError> {
        self.handle.spawn(actor)
    }

    /// Spawns an actor with options (`link` is refused: there is no actor
    /// here to link to).
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, RuntimeError> {
        self.handle.spawn_with(actor, options)
    }

    /// Sends a request and blocks this thread until the reply or `timeout`.
    /// For threads outside the runtime; actors use [`Context::ask`](crate::actor::Context::ask).
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard.
    pub fn call<M, R>(
        &self,
        target: &ActorRef<M>,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        self.handle.call(target, request, timeout)
    }

    /// Registers `name` for `pid` (see [`Context::register`](crate::actor::Context::register)).
    pub fn register(&self, name: &str, pid: &Pid) -> Result<(), RuntimeError> {
        self.handle.register(name, pid)
    }

    /// Removes the name `pid` holds, if any.
    pub fn unregister(&self, pid: &Pid) -> bool {
        self.handle.unregister(pid)
    }

    /// Looks up a registered name.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.handle.whereis(name)
    }

    /// Sends an exit signal to `target` from the runtime itself, as
    /// `erlang:exit/2` does (`Kill` cannot be trapped).
    pub fn exit(&self, target: &Pid, reason: ExitReason) {
        self.handle.exit(target, reason);
    }

    /// The counters of every shard, and of the fault plan's sites.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = MetricsSnapshot::read(
            self.sched.all_counters(),
            self.sched.live_actors.load(Ordering::Acquire),
        );
        snapshot.runtime = self.id();
        snapshot.runtime_name = self.sched.config.name.clone();
        snapshot.shared_cpus = self.shared_cpus.len();
        snapshot.fault_sites = self.faults().site_counts();
        snapshot.pools = self.memory();
        snapshot
    }

    /// Every shard's memory pools, shard by shard: capacity, in use,
    /// high-water mark, remote frees.
    pub fn memory(&self) -> Vec<PoolStats> {
        self.sched.shards.iter().flat_map(|shard| shard.pools.stats()).collect()
    }

    /// Each shard's memory region (base address, length, page kind, NUMA
    /// node), for registering it once with io_uring, CUDA or an RDMA NIC.
    pub fn memory_regions(&self) -> Vec<RegionInfo> {
        self.sched.shards.iter().map(|shard| shard.pools.region().info().clone()).collect()
    }

    /// The handle on the runtime's fault plan, for layers that inject their
    /// own faults at named sites ([`crate::fault`]); it never fires when no
    /// plan is active.
    pub fn faults(&self) -> FaultInjector {
        FaultInjector::attached(self.sched.config.faults.as_ref(), &self.sched)
    }

    /// Actors alive now.
    pub fn live_actors(&self) -> usize {
        self.handle.live_actors()
    }

    /// Stops the runtime: refuses new actors, stops the live ones newest
    /// first (each with reason `shutdown`, which they cannot trap; their
    /// `stopping` hooks run, and their links and monitors are told), then
    /// stops and joins the shards and the blocking threads.
    ///
    /// An actor whose handler never returns cannot be stopped: shutdown logs
    /// it after the shutdown timeout and then waits for that shard's thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        assert!(!on_shard_thread(), "Runtime::shutdown must not run on a shard thread");
        self.sched.accepting.store(false, Ordering::Release);
        let timeout = self.sched.config.shutdown_timeout;
        for pid in self.sched.live_newest_first() {
            self.sched.stop_actor(&pid, ExitReason::Shutdown);
            if !Scheduler::wait_dead(&pid, timeout) {
                // Its handler is stuck: the shard cannot run the stop. The
                // join below waits for the handler to return.
                tracing::error!(id = %pid.id(), ?timeout, "actor did not stop within the shutdown timeout: a handler is stuck");
            }
        }
        stop_threads(&self.sched, std::mem::take(&mut self.threads));
        // The shards are gone: another runtime may pin onto their CPUs.
        self.claim = None;
        tracing::info!(runtime = self.id(), name = self.name(), "runtime stopped");
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("shards", &self.shards())
            .field("live_actors", &self.live_actors())
            .finish()
    }
}
