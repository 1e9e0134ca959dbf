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
mod local;
mod metrics;
mod registry;
mod scheduler;
mod shard;
mod timers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

pub use local::on_shard_thread;
pub use metrics::{Counter, MetricsSnapshot};
pub(crate) use scheduler::Scheduler;
pub(crate) use shard::ShardCtx;
pub(crate) use timers::TimerAction;

use crate::actor::{Actor, ActorRef, ExitReason, Pid, ReplyTo};
use crate::error::{AskError, RuntimeError};
use crate::fault::{FaultInjector, FaultPlan, Injector};
use crate::io::{IoBackendKind, MAX_IO_IN_FLIGHT};
use crate::sync::{deque, park, spsc};
use crate::topology::{self, CpuSet, Placement, ShardPlacement, Topology};
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

/// The runtime's settings, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) node: u16,
    pub(crate) shards: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) system_capacity: usize,
    pub(crate) max_actors_per_shard: usize,
    pub(crate) reduction_budget: u32,
    pub(crate) ring_capacity: usize,
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
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    shards: Option<usize>,
    placement: Placement,
    topology: Option<Topology>,
    allowed: Option<CpuSet>,
    pin: bool,
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
            fault_plan: None,
            memory: ShardPools::builder().classes(DEFAULT_POOL_CLASSES),
            config: Config {
                node: 0,
                shards: 0,
                mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
                system_capacity: DEFAULT_SYSTEM_CAPACITY,
                max_actors_per_shard: DEFAULT_MAX_ACTORS_PER_SHARD,
                reduction_budget: DEFAULT_REDUCTION_BUDGET,
                ring_capacity: DEFAULT_RING_CAPACITY,
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

    setter!(
        /// This node's id in a cluster (default 0).
        node: u16
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

    /// Places the shards, starts one thread per shard (pinned unless
    /// `pin(false)`), and returns the running runtime.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
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
        let config = Config { shards: count, ..self.config };
        validate(&config)?;
        let config = Config { faults: crate::fault::resolve(self.fault_plan)?, ..config };
        // Detected once (and logged with its reason); every shard uses it.
        let io_backend = crate::io::detect(config.io_backend)?.kind;
        let config = Config { io_backend: Some(io_backend), ..config };
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
        tracing::info!(shards = count, pinned = self.pin, io = %io_backend, placement = %PlacementList(&placement), "runtime started");
        Ok(Runtime { sched, threads, placement, io_backend })
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
    if config.blocking_threads == 0 {
        return bad("blocking_threads must be at least 1".into());
    }
    if config.max_name_len == 0 {
        return bad("max_name_len must be at least 1".into());
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
            injection: crate::sync::mpmc::MpmcQueue::with_capacity(total_actors)?,
            stealer,
            unparker,
            sleeping: Default::default(),
            slots: scheduler::SlotTable::new(config.max_actors_per_shard)?,
            pools,
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
/// request around a fresh [`ReplyTo`], sends it with `send`, and waits for
/// the reply or `timeout`. Every blocking `call` of the crate goes through
/// here.
///
/// # Panics
///
/// On a shard thread, where blocking would stall the shard.
pub(crate) fn call_blocking<M, R>(
    send: impl FnOnce(M) -> Result<(), crate::error::SendError<M>>,
    request: impl FnOnce(ReplyTo<R>) -> M,
    timeout: Duration,
) -> Result<R, AskError>
where
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
    match send(request(ReplyTo::new(sink.clone()))) {
        Ok(()) => sink.wait(timeout),
        Err(e) if e.is_full() => Err(AskError::Full),
        Err(_) => Err(AskError::NoProc),
    }
}

/// A running runtime. Dropping it shuts it down.
pub struct Runtime {
    sched: Arc<Scheduler>,
    threads: Vec<JoinHandle<()>>,
    placement: Vec<ShardPlacement>,
    io_backend: IoBackendKind,
}

impl Runtime {
    /// A builder with the documented defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Where each shard runs, as chosen at build time.
    pub fn placement(&self) -> &[ShardPlacement] {
        &self.placement
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
        self.sched.spawn(actor, SpawnOptions::default())
    }

    /// Spawns an actor with options.
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, RuntimeError> {
        if options.link {
            return Err(RuntimeError::Config(
                "only an actor can spawn_link; there is no actor here".into(),
            ));
        }
        self.sched.spawn(actor, options)
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
        call_blocking(|msg| target.try_send(msg), request, timeout)
    }

    /// Registers `name` for `pid` (see [`Context::register`](crate::actor::Context::register)).
    pub fn register(&self, name: &str, pid: &Pid) -> Result<(), RuntimeError> {
        self.sched.registry().register(name, pid.clone())
    }

    /// Removes the name `pid` holds, if any.
    pub fn unregister(&self, pid: &Pid) -> bool {
        self.sched.registry().release(pid.id()).is_some()
    }

    /// Looks up a registered name.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.sched.registry().whereis(name)
    }

    /// Sends an exit signal to `target` from the runtime itself, as
    /// `erlang:exit/2` does (`Kill` cannot be trapped).
    pub fn exit(&self, target: &Pid, reason: ExitReason) {
        self.sched.exit_from_runtime(target, reason);
    }

    /// The counters of every shard, and of the fault plan's sites.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = MetricsSnapshot::read(
            self.sched.all_counters(),
            self.sched.live_actors.load(Ordering::Acquire),
        );
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
        self.sched.live_actors.load(Ordering::Acquire)
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
        tracing::info!("runtime stopped");
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
            .field("shards", &self.shards())
            .field("live_actors", &self.live_actors())
            .finish()
    }
}
