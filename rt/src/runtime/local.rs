//! A shard thread's own run queues, reachable from code running on it (a
//! send inside a handler) through a thread-local pointer.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr;

use super::scheduler::Scheduler;
use crate::actor::RunPtr;
use crate::sync::deque::Worker;
use crate::sync::spsc::Producer;

/// How many wake-ups for one destination shard a turn collects before it
/// pushes them through the ring; the rest go at the end of the turn. 32
/// amortises the ring's one Release store per batch while keeping the
/// batch inside one or two cache lines of the ring (16-byte entries).
pub(crate) const OUTBOUND_BATCH: usize = 32;

/// The run queues and outbound batches of the shard running on this thread.
pub(crate) struct LocalQueues {
    pub(crate) index: usize,
    sched: *const Scheduler,
    /// Ordinary actors: others may steal from it.
    pub(crate) worker: Worker<RunPtr>,
    /// Pinned actors: never stolen. Holds at most the shard's actor limit.
    pub(crate) pinned: RefCell<VecDeque<RunPtr>>,
    outbound: RefCell<Outbound>,
}

// SAFETY: the queues are built on the thread that builds the runtime and
// moved, before any use, into their shard's thread, which is the only thread
// that touches them afterwards (through `install`). `sched` points to a
// `Scheduler`, which is `Sync`, and the `RefCell`s are never shared.
unsafe impl Send for LocalQueues {}

struct Outbound {
    /// The producing end of the ring to each other shard (`None` for our own).
    producers: Vec<Option<Producer<RunPtr>>>,
    batches: Vec<Vec<RunPtr>>,
    /// Destinations with a non-empty batch.
    dirty: Vec<usize>,
}

thread_local! {
    static LOCAL: Cell<*const LocalQueues> = const { Cell::new(ptr::null()) };
}

impl LocalQueues {
    pub(crate) fn new(
        index: usize,
        sched: &Scheduler,
        worker: Worker<RunPtr>,
        producers: Vec<Option<Producer<RunPtr>>>,
    ) -> Self {
        let shards = producers.len();
        LocalQueues {
            index,
            sched,
            worker,
            pinned: RefCell::new(VecDeque::with_capacity(sched.config.max_actors_per_shard)),
            outbound: RefCell::new(Outbound {
                producers,
                batches: (0..shards).map(|_| Vec::with_capacity(OUTBOUND_BATCH)).collect(),
                dirty: Vec::with_capacity(shards),
            }),
        }
    }

    fn sched(&self) -> &Scheduler {
        // SAFETY: the scheduler outlives every shard thread (the runtime
        // joins them before dropping its `Arc<Scheduler>`).
        unsafe { &*self.sched }
    }

    /// Queues a runnable actor for `shard`.
    pub(crate) fn push(&self, ptr: RunPtr, shard: usize, pinned: bool) {
        if shard == self.index {
            self.push_here(ptr, pinned);
            return;
        }
        let mut guard = self.outbound.borrow_mut();
        let out = &mut *guard;
        let batch = &mut out.batches[shard];
        batch.push(ptr);
        if batch.len() == 1 {
            out.dirty.push(shard);
        }
        if batch.len() == OUTBOUND_BATCH {
            self.flush_one(out, shard);
        }
    }

    /// Queues a runnable actor on this shard, at the back.
    pub(crate) fn push_here(&self, ptr: RunPtr, pinned: bool) {
        if pinned {
            let mut queue = self.pinned.borrow_mut();
            debug_assert!(queue.len() < queue.capacity(), "pinned queue over the actor limit");
            queue.push_back(ptr);
        } else if let Err(full) = self.worker.push(ptr) {
            if self.sched().overflow.push(full.into_inner()).is_err() {
                unreachable!("the overflow queue holds every actor of the runtime");
            }
        }
    }

    /// Pushes every pending batch through its ring and wakes its shard.
    pub(crate) fn flush(&self) {
        let mut guard = self.outbound.borrow_mut();
        let out = &mut *guard;
        while let Some(&shard) = out.dirty.last() {
            self.flush_one(out, shard);
        }
    }

    fn flush_one(&self, out: &mut Outbound, shard: usize) {
        let Outbound { producers, batches, dirty } = out;
        dirty.retain(|&d| d != shard);
        let batch = &mut batches[shard];
        if batch.is_empty() {
            return;
        }
        let producer = producers[shard].as_mut().expect("no ring to our own shard");
        let sent = producer.push_slice(batch);
        // A full ring is backpressure on the ring, not on the actor: the
        // rest go through the target's injection queues, which never refuse
        // one (see `Scheduler::push_injected`).
        for &ptr in &batch[sent..] {
            // SAFETY: we hold the actor's SCHEDULED token (it is on our
            // outbound batch), so the cell is alive.
            let pinned = unsafe { ptr.0.as_ref() }.header().pinned;
            self.sched().push_injected(ptr, shard, pinned);
        }
        batch.clear();
        self.sched().wake(shard);
    }
}

/// Makes `queues` this thread's shard queues until the guard drops.
pub(crate) fn install(queues: &LocalQueues) -> InstallGuard {
    LOCAL.with(|cell| {
        assert!(cell.get().is_null(), "a thread can run only one shard");
        cell.set(queues);
    });
    InstallGuard
}

/// Uninstalls the thread's shard queues on drop.
pub(crate) struct InstallGuard;

impl Drop for InstallGuard {
    fn drop(&mut self) {
        LOCAL.with(|cell| cell.set(ptr::null()));
    }
}

/// Runs `f` with this thread's shard queues if it is a shard of `sched`.
pub(crate) fn with_local<R>(sched: &Scheduler, f: impl FnOnce(&LocalQueues) -> R) -> Option<R> {
    LOCAL.with(|cell| {
        let queues = cell.get();
        if queues.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer was installed by this thread's shard
        // loop, which owns the queues and uninstalls them before they drop.
        let queues = unsafe { &*queues };
        std::ptr::eq(queues.sched, sched).then(|| f(queues))
    })
}

/// The index of this thread's shard, if it is a shard of `sched`.
pub(crate) fn current_shard(sched: &Scheduler) -> Option<usize> {
    with_local(sched, |queues| queues.index)
}

/// Whether this thread is a shard thread of any runtime.
pub fn on_shard_thread() -> bool {
    LOCAL.with(|cell| !cell.get().is_null())
}
