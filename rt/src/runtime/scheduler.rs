//! The state all shards share: slot tables, injection queues, wake-ups,
//! the registry, the blocking pool and the counters.
//!
//! # Where a runnable actor goes
//!
//! [`Scheduler::enqueue`] is called by the one sender that moved an actor
//! from IDLE to SCHEDULED (see `actor::addr`):
//!
//! * on the actor's own shard, it goes on that shard's run queue: a
//!   work-stealing deque for ordinary actors, a private FIFO for pinned ones;
//! * from another shard, it goes into the sending shard's outbound batch for
//!   the actor's shard, flushed through the SPSC ring of that shard pair at
//!   the end of the turn (one ring per ordered pair, as in Seastar);
//! * from a thread outside the runtime, or when a ring is full, it goes into
//!   the target shard's injection queue (a bounded MPMC queue): a pinned
//!   actor into the shard's pinned injection queue, an unpinned one into
//!   its injection queue, or, when that is full, into the runtime-wide
//!   overflow queue, which every shard drains (any shard may run an
//!   unpinned actor).
//!
//! Each actor is on at most one queue at a time, so a queue sized for every
//! actor that can enter it can never be full: the overflow queue holds
//! every actor of the runtime, a pinned injection queue every actor of its
//! shard (a pinned actor never leaves the shard it was spawned on). The
//! injection queues of unpinned actors are small instead
//! (`injection_capacity`): sized for every actor of the runtime, each
//! shard's would be, and together they would grow with the square of the
//! shard count (384 MiB written at build for 16 shards).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use zbmd_alloc::{PoolBox, RawSlot, ShardPools};

use super::ShardCtx;
use super::blocking::BlockingPool;
use super::local;
use super::metrics::{Counters, Metric};
use super::registry::Registry;
use super::{Config, SpawnOptions};
use crate::actor::{
    Actor, ActorCell, ActorId, ActorRef, ExitReason, Header, MonitorRef, Pid, RunPtr, Runnable,
    Shared, Signal, SysSignal,
};
use crate::error::{RuntimeError, StartError};
use crate::sync::BlockError;
use crate::sync::deque::Stealer;
use crate::sync::mpmc::MpmcQueue;
use crate::sync::mpsc::{Mailbox, MpscQueue};
use crate::sync::park::Unparker;
use crate::sync::run_state::CurrentTurn;
use crate::sync::sleep::SleepFlag;

/// One shard's slot table: which actors live in it, by slot.
pub(crate) struct SlotTable {
    /// Slots nobody uses, popped by spawners on any thread.
    free: MpmcQueue<u32>,
    /// Each slot's generation: bumped when its actor dies.
    generations: Box<[AtomicU32]>,
    /// The live actor of each slot, with its spawn sequence number, for
    /// shutdown (which stops actors newest first).
    live: Box<[Mutex<Option<LiveEntry>>]>,
}

/// A new actor's shared part and the token to run it (see `create`).
type Created<M> = (Arc<Shared<M>>, RunPtr);

/// A live actor and its spawn sequence number.
type LiveEntry = (u64, Pid);

impl SlotTable {
    pub(crate) fn new(capacity: usize) -> Result<Self, RuntimeError> {
        let free = MpmcQueue::with_capacity(capacity)?;
        for slot in 0..capacity as u32 {
            free.push(slot).map_err(|_| RuntimeError::Config("slot table overfilled".into()))?;
        }
        Ok(SlotTable {
            free,
            generations: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            live: (0..capacity).map(|_| Mutex::new(None)).collect(),
        })
    }
}

/// What other threads may touch of one shard.
pub(crate) struct ShardShared {
    /// Runnable unpinned actors sent from outside the runtime or past a
    /// full ring; past its room they go to `Scheduler::overflow`.
    pub(crate) injection: MpmcQueue<RunPtr>,
    /// The same for the shard's pinned actors: room for all of them.
    pub(crate) injection_pinned: MpmcQueue<RunPtr>,
    pub(crate) stealer: Stealer<RunPtr>,
    pub(crate) unparker: Unparker,
    /// Up while the shard is parked or about to park (`sync::sleep`).
    pub(crate) sleeping: SleepFlag,
    pub(crate) slots: SlotTable,
    /// The shard's memory (zbmd-alloc): only its thread allocates from it;
    /// actor cells, mailboxes and message buffers made there come home to
    /// it from wherever they are freed.
    pub(crate) pools: ShardPools,
    /// Which actor the shard is in a turn of, for `free_cell`'s wait
    /// (`sync::run_state`, "After the token is given up"); written twice a
    /// turn by the shard alone, so on a line of its own.
    pub(crate) turn: CachePadded<CurrentTurn>,
}

/// The runtime's shared state.
pub(crate) struct Scheduler {
    pub(crate) config: Config,
    pub(crate) shards: Box<[ShardShared]>,
    /// Where a shard's run queue spills when its deque is full, and an
    /// injection queue when it is full: unpinned actors only, taken by any
    /// shard.
    pub(crate) overflow: MpmcQueue<RunPtr>,
    registry: Registry,
    blocking: BlockingPool,
    /// One set of counters per shard, plus one for threads outside.
    counters: Box<[CachePadded<Counters>]>,
    pub(crate) accepting: AtomicBool,
    pub(crate) stopping: AtomicBool,
    pub(crate) live_actors: AtomicUsize,
    next_spawn: AtomicU64,
    next_monitor: AtomicU64,
    next_shard: AtomicUsize,
}

impl Scheduler {
    pub(crate) fn new(
        config: Config,
        shards: Box<[ShardShared]>,
        blocking: BlockingPool,
    ) -> Result<Self, RuntimeError> {
        let total_actors = config.shards * config.max_actors_per_shard;
        Ok(Scheduler {
            overflow: MpmcQueue::with_capacity(total_actors)?,
            registry: Registry::new(config.max_names, config.max_name_len),
            counters: (0..=config.shards).map(|_| CachePadded::new(Counters::default())).collect(),
            config,
            shards,
            blocking,
            accepting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            live_actors: AtomicUsize::new(0),
            next_spawn: AtomicU64::new(0),
            next_monitor: AtomicU64::new(0),
            next_shard: AtomicUsize::new(0),
        })
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn blocking(&self) -> &BlockingPool {
        &self.blocking
    }

    pub(crate) fn next_monitor_ref(&self) -> MonitorRef {
        MonitorRef(self.next_monitor.fetch_add(1, Ordering::Relaxed))
    }

    /// The counters of the calling thread's shard (or of the outside).
    pub(crate) fn counters(&self) -> &Counters {
        let index = local::current_shard(self).unwrap_or(self.config.shards);
        &self.counters[index]
    }

    pub(crate) fn all_counters(&self) -> &[CachePadded<Counters>] {
        &self.counters
    }

    pub(crate) fn count_mailbox_full(&self) {
        self.counters().add(Metric::MailboxFull, 1);
    }

    pub(crate) fn count_signal_dropped(&self) {
        self.counters().add(Metric::SignalsDropped, 1);
    }

    pub(crate) fn count_reply_dropped(&self) {
        self.counters().add(Metric::RepliesDropped, 1);
    }

    pub(crate) fn count_dead_letter(&self) {
        self.counters().add(Metric::DeadLetters, 1);
    }

    /// Spawns `actor` on the shard `options` name (or the next one, round
    /// robin) and schedules its `started` hook.
    pub(crate) fn spawn<A: Actor>(
        self: &Arc<Self>,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, RuntimeError> {
        let (shared, ptr) = self.create(actor, &options)?;
        if shared.mailbox.send_system(crate::actor::Signal::Sys(SysSignal::Start)).is_err() {
            unreachable!("a new mailbox has room for its first signal");
        }
        self.enqueue(ptr, shared.header.shard(), options.pinned);
        Ok(ActorRef { shared })
    }

    /// Spawns `actor` linked to `parent` and runs its `started` hook here,
    /// on the calling shard, before returning: OTP's `proc_lib:start_link`.
    /// A hook that fails (or panics) leaves no actor behind, no link, and
    /// no exit signal: the parent gets the reason as the answer instead.
    pub(crate) fn start_link<A: Actor>(
        self: &Arc<Self>,
        actor: A,
        options: &SpawnOptions,
        name: Option<&str>,
        parent: Option<&Pid>,
        shard: &mut ShardCtx,
    ) -> Result<ActorRef<A::Msg>, StartError> {
        let (shared, ptr) = self.create(actor, options)?;
        // SAFETY: `create` leaked the cell and nothing else holds `ptr` yet:
        // this thread holds the SCHEDULED token until `enqueue` below.
        let runnable = unsafe { ptr.0.as_ref() };
        let registered = match name {
            Some(name) => self.registry.register(name, Pid { target: shared.clone() }),
            None => Ok(()),
        };
        let outcome = match registered {
            Ok(()) => runnable.init(shard, parent),
            Err(error) => Err(runnable.abort(shard, ExitReason::error(&error))),
        };
        match outcome {
            Ok(()) => {
                self.enqueue(ptr, shared.header.shard(), options.pinned);
                Ok(ActorRef { shared })
            }
            Err(reason) => {
                // SAFETY: the cell is dead and was never queued; we hold the
                // only pointer to it (as the shard does for a dead cell).
                unsafe { free_cell(ptr) };
                Err(StartError::Init(reason))
            }
        }
    }

    /// Makes an actor's slot, mailbox and cell, and records it as live. The
    /// caller holds the new actor's SCHEDULED token and must either enqueue
    /// `RunPtr` or let the actor die.
    fn create<A: Actor>(
        self: &Arc<Self>,
        actor: A,
        options: &SpawnOptions,
    ) -> Result<Created<A::Msg>, RuntimeError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let count = self.config.shards;
        let shard = match options.shard {
            Some(shard) if shard >= count => {
                return Err(RuntimeError::NoSuchShard { shard, shards: count });
            }
            Some(shard) => shard,
            None => self.next_shard.fetch_add(1, Ordering::Relaxed) % count,
        };
        let table = &self.shards[shard].slots;
        let limit = self.config.max_actors_per_shard;
        let slot = table.free.pop().ok_or(RuntimeError::ActorLimit { shard, limit })?;
        // On a shard thread the actor's memory comes from that shard's pools
        // (whichever shard it will run on); from outside the runtime, from
        // the heap: see `docs/memory.md`.
        let pools = local::current_shard(self)
            .filter(|_| self.config.pool_actors)
            .map(|index| &self.shards[index].pools);
        let capacities = (
            options.system_capacity.unwrap_or(self.config.system_capacity),
            options.mailbox_capacity.unwrap_or(self.config.mailbox_capacity),
        );
        let mailbox = match new_mailbox(pools, capacities) {
            Ok(mailbox) => mailbox,
            Err(error) => {
                let _ = table.free.push(slot);
                return Err(error);
            }
        };
        let generation = table.generations[slot as usize].load(Ordering::Acquire);
        let id = ActorId {
            node: self.config.node,
            runtime: self.config.runtime,
            shard: shard as u16,
            slot,
            generation,
        };
        let header = Header::new(id, actor.name(), options.pinned, self.clone())
            .with_fault_exempt(options.fault_exempt);
        let shared = Arc::new(Shared { header, mailbox });
        let cell = match new_cell(pools, ActorCell::new(shared.clone(), actor)) {
            Ok(cell) => cell,
            Err(error) => {
                let _ = table.free.push(slot);
                return Err(error);
            }
        };
        let ptr = cell.0;
        // SAFETY: `shared` has not been handed to any other thread yet: the
        // only other reference is inside the cell we just made, which no
        // queue holds until the caller enqueues it.
        unsafe { shared.header.set_cell(cell) };
        let seq = self.next_spawn.fetch_add(1, Ordering::Relaxed);
        let pid = Pid { target: shared.clone() };
        *lock(&table.live[slot as usize]) = Some((seq, pid));
        self.live_actors.fetch_add(1, Ordering::AcqRel);
        self.counters().add(Metric::Spawns, 1);
        tracing::debug_span!("spawn", actor = shared.header.name, %id)
            .in_scope(|| tracing::trace!("spawned"));
        Ok((shared, ptr))
    }

    /// Frees a dead actor's slot: stale refs now fail, the slot can be reused.
    pub(crate) fn release_slot(&self, id: ActorId) {
        let table = &self.shards[usize::from(id.shard)].slots;
        let slot = id.slot as usize;
        let pid = lock(&table.live[slot]).take();
        debug_assert!(
            pid.is_some_and(|(_, p)| p.id() == id),
            "{id}: released a slot it did not hold"
        );
        table.generations[slot].fetch_add(1, Ordering::AcqRel);
        if table.free.push(id.slot).is_err() {
            unreachable!("the free list has room for every slot");
        }
        self.live_actors.fetch_sub(1, Ordering::AcqRel);
    }

    /// Every live actor, newest first.
    pub(crate) fn live_newest_first(&self) -> Vec<Pid> {
        let mut live: Vec<LiveEntry> = Vec::new();
        for shard in self.shards.iter() {
            live.extend(shard.slots.live.iter().filter_map(|entry| lock(entry).clone()));
        }
        live.sort_by_key(|&(seq, _)| std::cmp::Reverse(seq));
        live.into_iter().map(|(_, pid)| pid).collect()
    }

    /// Puts a runnable actor on a run queue: see the module's doc.
    pub(crate) fn enqueue(&self, ptr: RunPtr, shard: usize, pinned: bool) {
        if local::with_local(self, |queues| queues.push(ptr, shard, pinned)).is_some() {
            return;
        }
        self.inject(ptr, shard, pinned);
    }

    /// Hands a runnable actor to `shard` through its injection queues, and
    /// wakes it.
    pub(crate) fn inject(&self, ptr: RunPtr, shard: usize, pinned: bool) {
        self.push_injected(ptr, shard, pinned);
        self.wake(shard);
    }

    /// Queues a runnable actor for `shard` without waking it: a pinned one
    /// in its pinned injection queue, an unpinned one in its injection
    /// queue or, that one full, in the overflow queue.
    pub(crate) fn push_injected(&self, ptr: RunPtr, shard: usize, pinned: bool) {
        let target = &self.shards[shard];
        if pinned {
            if target.injection_pinned.push(ptr).is_err() {
                unreachable!("a pinned injection queue holds every actor of its shard");
            }
        } else if let Err(full) = target.injection.push(ptr) {
            if self.overflow.push(full.into_inner()).is_err() {
                unreachable!("the overflow queue holds every actor of the runtime");
            }
        }
    }

    /// Wakes `shard` if it is parked or about to park; call it after
    /// pushing work for the shard. The waker's half of the sleep/wake
    /// handshake (`sync::sleep`): either the shard sees our push before it
    /// sleeps, or we see its flag and unpark it.
    pub(crate) fn wake(&self, shard: usize) {
        let target = &self.shards[shard];
        if target.sleeping.needs_wake() {
            target.unparker.unpark();
        }
    }

    /// Sends an exit signal from the runtime itself (shutdown, `Runtime::exit`).
    pub(crate) fn exit_from_runtime(&self, target: &Pid, reason: crate::actor::ExitReason) {
        let from = ActorId {
            node: self.config.node,
            runtime: self.config.runtime,
            shard: u16::MAX,
            slot: 0,
            generation: 0,
        };
        let _ = target.target.send_sys(SysSignal::Exit { from, reason, direct: true });
    }

    /// Stops an actor for the runtime's shutdown: untrappable, but the
    /// actor's `stopping` hook runs.
    pub(crate) fn stop_actor(&self, target: &Pid, reason: crate::actor::ExitReason) {
        let _ = target.target.send_sys(SysSignal::Stop(reason));
    }

    /// Waits until `pid` is dead or `timeout` passes; true if it died.
    /// Sleeps on the actor's `progress` event, which its death notifies.
    pub(crate) fn wait_dead(pid: &Pid, timeout: Duration) -> bool {
        let header = pid.target.header();
        let deadline = Instant::now().checked_add(timeout);
        header.progress.wait_until(deadline, || header.is_dead().then_some(())).is_some()
    }
}

/// An actor's mailbox: both lanes in blocks of the spawning shard's pools,
/// or on the heap from outside the runtime (or for a message type aligned
/// beyond the pools' blocks).
fn new_mailbox<M: Send + 'static>(
    pools: Option<&ShardPools>,
    (system, user): (usize, usize),
) -> Result<Mailbox<Signal<M>, M>, RuntimeError> {
    let Some(pools) = pools else {
        return Ok(Mailbox::with_capacity(system, user)?);
    };
    let system_block = pools.alloc_buf(MpscQueue::<Signal<M>>::block_bytes(system))?;
    let user_block = pools.alloc_buf(MpscQueue::<M>::block_bytes(user))?;
    match Mailbox::in_blocks((system, system_block), (user, user_block)) {
        Ok(mailbox) => Ok(mailbox),
        Err(BlockError::Capacity(error)) => Err(error.into()),
        Err(BlockError::Unfit) => Ok(Mailbox::with_capacity(system, user)?),
    }
}

/// An actor's cell in a block of the spawning shard's pools (on the heap
/// from outside the runtime, or for an actor larger than the largest
/// class), with what frees it.
fn new_cell<A: Actor>(
    pools: Option<&ShardPools>,
    cell: ActorCell<A>,
) -> Result<(RunPtr, Option<RawSlot>), RuntimeError> {
    let heap = |cell: ActorCell<A>| {
        let cell: Box<dyn Runnable> = Box::new(cell);
        (RunPtr(NonNull::from(Box::leak(cell))), None)
    };
    let Some(pools) = pools else {
        return Ok(heap(cell));
    };
    if pools.class_for(std::mem::size_of::<ActorCell<A>>()).is_none() {
        return Ok(heap(cell));
    }
    let pooled = pools.alloc_box(cell)?;
    let pooled = PoolBox::unsize(pooled, |cell| cell as &mut dyn Runnable);
    let (ptr, slot) = PoolBox::into_raw(pooled);
    Ok((RunPtr(ptr), Some(slot)))
}

/// The key of an actor in the shards' `CurrentTurn`s: its cell's address,
/// unique among live actors and never zero.
pub(crate) fn turn_key(ptr: RunPtr) -> usize {
    ptr.0.cast::<()>().as_ptr() as usize
}

/// Frees a dead actor's cell: back to its pool, or to the heap. First waits
/// until no shard is still in a turn of it: a turn end that gave the token
/// up may still be reading the actor (`sync::run_state`, "After the token
/// is given up").
///
/// # Safety
///
/// The actor is dead and `ptr` is the last pointer to its cell: no queue
/// holds it and no sender will enqueue it again (senders enqueue only from
/// IDLE); the calling thread is in no turn of it.
pub(crate) unsafe fn free_cell(ptr: RunPtr) {
    // SAFETY: the cell is alive until freed below, and we hold its last
    // pointer (function contract).
    let header = unsafe { ptr.0.as_ref().header() };
    let turns = header.sched.shards.iter().map(|shard| &*shard.turn);
    CurrentTurn::wait_out(turns, turn_key(ptr));
    // SAFETY: as above; no other thread reaches the cell any more.
    let slot = unsafe { header.take_cell_slot() };
    match slot {
        // SAFETY: `ptr` and `slot` came from one `into_raw` in `new_cell`,
        // and `take_cell_slot` hands the slot out once.
        Some(slot) => drop(unsafe { PoolBox::from_raw(ptr.0, slot) }),
        // SAFETY: without a slot, `new_cell` leaked a `Box`.
        None => drop(unsafe { Box::from_raw(ptr.0.as_ptr()) }),
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (every
/// critical section here is a single assignment).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
