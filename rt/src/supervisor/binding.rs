//! Where a supervised child's current incarnation is published, and how a
//! thread outside the runtime waits for the next one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::actor::Shared;

/// Where a child's current incarnation is published: written only by its
/// supervisor (at each start and death), read by every
/// [`ChildRef`](super::ChildRef).
///
/// `current` is the lock-free fast path every send reads. `life` is the slow
/// path of a caller that found no live incarnation: it sleeps on `changed`
/// until the supervisor binds the next incarnation (`generation` moves) or
/// decides there will be none (`retired`), or its own deadline passes. The
/// supervisor touches `life` only at a start, a final stop and its own
/// death, never per message.
pub(crate) struct Binding<M> {
    pub(super) current: ArcSwapOption<Shared<M>>,
    life: Mutex<Life>,
    changed: Condvar,
}

/// What waiters of a binding watch.
#[derive(Clone, Copy)]
struct Life {
    /// Incarnations bound so far.
    generation: u64,
    /// No incarnation will be bound after the current one (or after none):
    /// the supervisor gave up, stopped, or does not restart this child. A
    /// later bind (a `restart_child`, a restarted parent) clears it.
    retired: bool,
}

/// How a wait for the next incarnation ended.
pub(super) enum Next {
    /// Another incarnation was bound since the caller looked: try it.
    Bound,
    /// None will come.
    Retired,
    /// The caller's deadline passed first.
    TimedOut,
}

/// Which incarnation of a supervised child a caller has seen: the number
/// of incarnations bound so far, from
/// [`ChildRef::incarnation`](super::ChildRef::incarnation). Take it before
/// using the child, then hand it to
/// [`ChildRef::wait_for_restart`](super::ChildRef::wait_for_restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub(super) u64);

/// Why [`ChildRef::wait_for_restart`](super::ChildRef::wait_for_restart)
/// returned without a new incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RestartWaitError {
    /// The supervisor will start no other incarnation (it gave up, it is
    /// stopping, or it does not restart this child after this exit); a
    /// restart of the supervisor by its parent, or `restart_child`, would
    /// bind one again.
    #[error("the child is retired: its supervisor will start no other incarnation")]
    Retired,
    /// The timeout passed before the next incarnation was bound.
    #[error("no new incarnation of the child was bound within the timeout")]
    Timeout,
}

impl<M> Binding<M> {
    pub(super) fn new() -> Arc<Self> {
        let life = Life { generation: 0, retired: false };
        Arc::new(Binding {
            current: ArcSwapOption::empty(),
            life: Mutex::new(life),
            changed: Condvar::new(),
        })
    }

    fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Publishes a new incarnation and wakes every waiter. The pointer is
    /// stored before the generation moves under the lock, so a waiter that
    /// sees the new generation then loads the new pointer.
    pub(super) fn bind(&self, shared: Arc<Shared<M>>) {
        self.current.store(Some(shared));
        let mut life = self.life();
        life.generation += 1;
        life.retired = false;
        drop(life);
        self.changed.notify_all();
    }

    /// The incarnation died: refs answer `NoProc` until the next bind.
    pub(super) fn unbind(&self) {
        self.current.store(None);
    }

    /// No incarnation will follow the current one: wakes every waiter.
    pub(super) fn retire(&self) {
        self.life().retired = true;
        self.changed.notify_all();
    }

    /// The number of incarnations bound so far: take it *before* trying
    /// the current one, then wait with it.
    pub(super) fn generation(&self) -> u64 {
        self.life().generation
    }

    /// Sleeps until an incarnation after `seen` is bound, the child is
    /// retired, or `deadline` (`None`: no deadline).
    pub(super) fn wait_for_next(&self, seen: u64, deadline: Option<Instant>) -> Next {
        let mut life = self.life();
        loop {
            if life.generation != seen {
                return Next::Bound;
            }
            if life.retired {
                return Next::Retired;
            }
            let Some(deadline) = deadline else {
                life = self.changed.wait(life).unwrap_or_else(|poison| poison.into_inner());
                continue;
            };
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            life = self
                .changed
                .wait_timeout(life, deadline - now)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}
