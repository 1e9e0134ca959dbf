//! One shard: a pinned OS thread running its actors, its timers, its
//! incoming rings, and stealing when it runs dry.
//!
//! The loop, once per round:
//! 1. move runnable actors that other shards sent (SPSC rings, one per
//!    sender) and that outside threads injected onto the local run queues;
//! 2. fire due timers;
//! 3. run the I/O completions that are ready (`crate::io`);
//! 4. run up to [`ROUND_TURNS`] actor turns, FIFO, alternating between the
//!    stealable deque and the pinned queue;
//! 5. with nothing to run, steal a batch from another shard; with nothing to
//!    steal, park until woken or until the next timer or I/O deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::local::{self, LocalQueues};
use super::metrics::Metric;
use super::scheduler::Scheduler;
use super::timers::{TimerAction, Timers};
use crate::actor::{ActorId, RunPtr, TurnOutcome};
use crate::error::RuntimeError;
use crate::fault::ShardFaults;
use crate::io::Io;
use crate::sync::deque::Steal;
use crate::sync::park::Parker;
use crate::sync::spsc::Consumer;
use crate::timer::TimerKey;

/// Turns per round before the shard looks at its rings and timers again:
/// small enough that a timer or a cross-shard wake-up waits at most a few
/// dozen turns, large enough that polling costs little per turn.
const ROUND_TURNS: usize = 64;

/// The most actors one steal takes: half the victim's queue, capped so a
/// thief does not strip a busy shard in one go.
const STEAL_BATCH_MAX: usize = 32;

/// How long an idle shard keeps polling before it parks: BEAM's schedulers
/// spin likewise before sleeping. 50 us covers a cross-shard round trip
/// many times over and costs an idle core little.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// How long a shard must have been idle before it steals a victim's only
/// runnable actor: long enough that a busy owner would have run it already,
/// short next to the stall limit.
const STEAL_LONE_AFTER: Duration = Duration::from_micros(20);

/// The longest a parked shard sleeps without a timer due: a backstop, not a
/// mechanism (every wake-up unparks it).
const PARK_MAX: Duration = Duration::from_millis(100);

/// How long a shard with io_uring operations in flight sleeps before it
/// looks at the ring again. This bounded polling is the v1 design: the ring
/// does not wake the parker, so a completion waits at most this long for a
/// parked shard (about one NVMe read), at the cost of up to 10 000 wake-ups a
/// second while operations are in flight and the shard has nothing else to
/// do. Planned: register an eventfd with the ring (IORING_REGISTER_EVENTFD)
/// that wakes the same parker, so completions wake the shard and this bound
/// goes away. The threads backend already wakes the shard itself.
const IO_POLL_PARK: Duration = Duration::from_micros(100);

/// What an actor's turn sees of its shard.
pub(crate) struct ShardCtx {
    index: usize,
    sched: Arc<Scheduler>,
    budget: u32,
    timers: Timers,
    io: Io,
    /// The message faults to inject (`crate::fault`); `None` without a plan
    /// that faults messages, which is what keeps injection free then.
    faults: Option<ShardFaults>,
}

impl ShardCtx {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn sched(&self) -> &Arc<Scheduler> {
        &self.sched
    }

    pub(crate) fn reduction_budget(&self) -> u32 {
        self.budget
    }

    pub(crate) fn count_turn(&mut self, messages: u32, reductions: u32) {
        let counters = &self.sched.all_counters()[self.index];
        counters.add(Metric::Messages, u64::from(messages));
        counters.add(Metric::Reductions, u64::from(reductions));
    }

    pub(crate) fn actor_died(&mut self, id: ActorId, crashed: bool) {
        let counters = &self.sched.all_counters()[self.index];
        counters.add(if crashed { Metric::Crashes } else { Metric::Stops }, 1);
        self.sched.release_slot(id);
    }

    pub(crate) fn io(&mut self) -> &mut Io {
        &mut self.io
    }

    /// Whether user messages may be faulted on this shard: the one branch
    /// an actor's turn pays without a fault plan.
    #[inline]
    pub(crate) fn faults_active(&self) -> bool {
        self.faults.is_some()
    }

    pub(crate) fn faults(&mut self) -> Option<&mut ShardFaults> {
        self.faults.as_mut()
    }

    /// Adds one to a counter of this shard.
    pub(crate) fn count(&self, counter: Metric) {
        self.sched.all_counters()[self.index].add(counter, 1);
    }

    pub(crate) fn add_timer(
        &mut self,
        delay: Duration,
        action: TimerAction,
    ) -> Result<TimerKey, RuntimeError> {
        self.timers.add(Instant::now() + delay, action)
    }

    /// This shard's memory pools.
    pub(crate) fn pools(&self) -> &zbmd_alloc::ShardPools {
        &self.sched.shards[self.index].pools
    }

    /// Removes a timer this shard set (see `Timers::remove`).
    pub(crate) fn remove_timer(&mut self, key: TimerKey) -> bool {
        self.timers.remove(key)
    }
}

/// A shard's thread-owned state.
pub(crate) struct Shard {
    ctx: ShardCtx,
    queues: Box<LocalQueues>,
    incoming: Vec<Consumer<RunPtr>>,
    parker: Parker,
    /// Alternates the run queues' turns so neither starves the other.
    pinned_turn: bool,
    next_victim: usize,
    /// The time at the start of this round or the end of the last turn:
    /// the shard reads the clock once per turn and once per round.
    clock: Instant,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        sched: Arc<Scheduler>,
        queues: Box<LocalQueues>,
        incoming: Vec<Consumer<RunPtr>>,
        parker: Parker,
    ) -> Result<Self, RuntimeError> {
        let config = &sched.config;
        let timers = Timers::new(config.timer_capacity, config.timer_tick)?;
        let budget = config.reduction_budget;
        // The runtime detected the backend once; a blocking-thread
        // completion wakes this shard as a cross-shard send would.
        let waker = {
            let sched = sched.clone();
            Arc::new(move || sched.wake(index))
        };
        let (io, _) = Io::new(config.io_backend, config.max_io_in_flight, index, waker)?;
        let faults =
            config.faults.as_ref().and_then(|faults| ShardFaults::new(faults.plan(), index));
        Ok(Shard {
            ctx: ShardCtx { index, sched, budget, timers, io, faults },
            queues,
            incoming,
            parker,
            pinned_turn: false,
            next_victim: index + 1,
            clock: Instant::now(),
        })
    }

    /// The shard's loop; returns when the runtime stops.
    pub(crate) fn run(mut self) {
        let _guard = local::install(&self.queues);
        let sched = self.ctx.sched.clone();
        let runtime = sched.config.runtime;
        let _span = tracing::debug_span!("shard", runtime, index = self.ctx.index).entered();
        super::panics::route_this_thread(sched.config.handler_panics);
        let pools = &sched.shards[self.ctx.index].pools;
        // This thread is the one that allocates from the shard's pools.
        if let Err(error) = pools.bind_current_thread() {
            tracing::error!(shard = self.ctx.index, %error, "could not bind the shard's memory pools");
        }
        self.run_rounds();
        // Hand the pools back so they can be dropped from any thread; what
        // is still out comes home as remote frees.
        if let Err(error) = pools.unbind_current_thread() {
            tracing::error!(shard = self.ctx.index, %error, "could not unbind the shard's memory pools");
        }
    }

    fn run_rounds(&mut self) {
        let mut idle_since: Option<Instant> = None;
        loop {
            self.clock = Instant::now();
            self.take_incoming();
            self.fire_timers();
            self.poll_io();
            let mut turns = 0;
            while turns < ROUND_TURNS {
                let Some(ptr) = self.next_runnable() else {
                    break;
                };
                self.run_turn(ptr);
                turns += 1;
            }
            if turns > 0 {
                idle_since = None;
                continue;
            }
            let now = self.clock;
            let idle = now.duration_since(*idle_since.get_or_insert(now));
            if let Some(ptr) = self.steal(idle >= STEAL_LONE_AFTER) {
                idle_since = None;
                self.run_turn(ptr);
                continue;
            }
            if self.ctx.sched.stopping.load(Ordering::Acquire) {
                break;
            }
            // Poll a little before sleeping: a futex sleep and wake-up costs
            // tens of microseconds on a VM, far more than a cross-shard
            // message, so a shard that will hear back soon should not sleep.
            if idle < SPIN_BEFORE_PARK {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            // Take back what other shards freed into our pools while we
            // have nothing else to do (one swap per pool), so blocks are
            // reused here and the pools' in-use figures are current.
            let _ = self.ctx.pools().drain_remote();
            self.park();
        }
    }

    fn run_turn(&mut self, ptr: RunPtr) {
        // SAFETY: we dequeued `ptr`, so we hold its SCHEDULED token: the cell
        // is alive (only its own turn can kill it, and that frees it below)
        // and no other thread runs it.
        let runnable = unsafe { ptr.0.as_ref() };
        let header = runnable.header();
        let (name, id, pinned) = (header.name, header.id, header.pinned);
        // One clock read per turn: this turn starts when the last one (or
        // the round) ended.
        let started = self.clock;
        // Published from before the turn touches the actor until after its
        // last access: a shard that frees the actor waits for `leave`
        // (`sync::run_state`, "After the token is given up"). Left before
        // `free_cell` below, which waits for every shard.
        self.ctx.sched.shards[self.ctx.index].turn.enter(super::scheduler::turn_key(ptr));
        let outcome = runnable.run(&mut self.ctx);
        self.ctx.sched.shards[self.ctx.index].turn.leave();
        self.clock = Instant::now();
        let held = self.clock.duration_since(started);
        if held > self.ctx.sched.config.stall_limit {
            self.report_stall(name, id, held);
        }
        match outcome {
            TurnOutcome::Idle => {}
            TurnOutcome::Requeue => self.queues.push_here(ptr, pinned),
            TurnOutcome::Dead => {
                // SAFETY: it is dead, so no queue holds it and no sender will
                // enqueue it again (senders enqueue only from IDLE); we held
                // the last pointer to it, and left its turn above.
                unsafe { super::scheduler::free_cell(ptr) };
            }
        }
        self.queues.flush();
    }

    fn report_stall(&self, name: &'static str, id: ActorId, held: Duration) {
        self.ctx.sched.all_counters()[self.ctx.index].add(Metric::Stalls, 1);
        tracing::warn!(
            shard = self.ctx.index,
            actor = name,
            %id,
            held_us = held.as_micros() as u64,
            limit_us = self.ctx.sched.config.stall_limit.as_micros() as u64,
            "stall: an actor held its shard past the limit"
        );
    }

    fn next_runnable(&mut self) -> Option<RunPtr> {
        self.pinned_turn = !self.pinned_turn;
        if self.pinned_turn {
            if let Some(ptr) = self.queues.pinned.borrow_mut().pop_front() {
                return Some(ptr);
            }
        }
        // The owner takes from the deque's stealing end: FIFO, so a yielding
        // actor goes behind the others (the deque's owner end is LIFO).
        let own = &self.ctx.sched.shards[self.ctx.index].stealer;
        loop {
            match own.steal() {
                Steal::Success(ptr) => return Some(ptr),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if let Some(ptr) = self.queues.pinned.borrow_mut().pop_front() {
            return Some(ptr);
        }
        self.ctx.sched.overflow.pop()
    }

    /// Moves actors other threads made runnable onto the local queues.
    fn take_incoming(&mut self) -> bool {
        let mut any = false;
        for ring in &mut self.incoming {
            while let Some(ptr) = ring.pop() {
                place(&self.queues, ptr);
                any = true;
            }
        }
        let me = &self.ctx.sched.shards[self.ctx.index];
        for injection in [&me.injection_pinned, &me.injection] {
            while let Some(ptr) = injection.pop() {
                place(&self.queues, ptr);
                any = true;
            }
        }
        any
    }

    fn fire_timers(&mut self) {
        let fired = self.ctx.timers.fire_due(self.clock);
        if fired > 0 {
            self.ctx.sched.all_counters()[self.ctx.index].add(Metric::TimersFired, fired as u64);
            self.queues.flush();
        }
    }

    /// Runs the I/O completions that are ready; true if any ran (their
    /// replies may have made actors runnable).
    fn poll_io(&mut self) -> bool {
        let ran = self.ctx.io.poll();
        if ran > 0 {
            self.queues.flush();
        }
        ran > 0
    }

    /// Steals a batch of runnable actors from another shard. A victim's
    /// only runnable actor is taken only when `take_lone` (this shard has
    /// been idle a while): its owner will run it in a moment, and stealing
    /// it bounces a chain of messages (a token ring) between two cores.
    fn steal(&mut self, take_lone: bool) -> Option<RunPtr> {
        let shards = &self.ctx.sched.shards;
        let count = shards.len();
        for attempt in 0..count {
            let victim = (self.next_victim + attempt) % count;
            if victim == self.ctx.index || (!take_lone && shards[victim].stealer.len() < 2) {
                continue;
            }
            let before = self.queues.worker.len();
            if let Steal::Success(ptr) =
                shards[victim].stealer.steal_batch_and_pop(&self.queues.worker, STEAL_BATCH_MAX)
            {
                self.next_victim = victim;
                let stolen = (self.queues.worker.len() - before + 1) as u64;
                let counters = &self.ctx.sched.all_counters()[self.ctx.index];
                counters.add(Metric::Steals, 1);
                counters.add(Metric::StolenActors, stolen);
                return Some(ptr);
            }
        }
        self.next_victim = self.next_victim.wrapping_add(1);
        None
    }

    /// Sleeps until woken or the next timer is due, without losing a
    /// wake-up: announce, look at every source once more, and only then
    /// park (the sleeper's half of `sync::sleep`; `Scheduler::wake` is the
    /// waker's).
    fn park(&mut self) {
        let sched = self.ctx.sched.clone();
        let announced = sched.shards[self.ctx.index].sleeping.announce();
        let pending = self.take_incoming()
            || self.poll_io()
            || !sched.overflow.is_empty()
            || sched.stopping.load(Ordering::Acquire);
        if !pending {
            let timeout = self.park_timeout();
            sched.all_counters()[self.ctx.index].add(Metric::Parks, 1);
            if !timeout.is_zero() {
                self.parker.park_timeout(timeout);
            }
        }
        drop(announced);
    }

    /// How long a park may last: until the next timer or I/O deadline,
    /// [`IO_POLL_PARK`] while io_uring operations are in flight, and never
    /// more than [`PARK_MAX`].
    fn park_timeout(&self) -> Duration {
        let now = Instant::now();
        let deadlines = [self.ctx.timers.next_deadline(), self.ctx.io.next_deadline()];
        let mut timeout = deadlines
            .into_iter()
            .flatten()
            .fold(PARK_MAX, |t, due| t.min(due.saturating_duration_since(now)));
        if self.ctx.io.needs_polling() {
            timeout = timeout.min(IO_POLL_PARK);
        }
        timeout
    }
}

/// Puts an actor that arrived from elsewhere on this shard's queues.
fn place(queues: &LocalQueues, ptr: RunPtr) {
    // SAFETY: we hold the actor's SCHEDULED token (it came through a run
    // queue), so the cell is alive.
    let pinned = unsafe { ptr.0.as_ref() }.header().pinned;
    queues.push_here(ptr, pinned);
}
