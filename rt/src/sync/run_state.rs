//! An actor's scheduling state: who may put it on a run queue, and when.
//!
//! Every sender pushes into the actor's mailbox and then calls
//! [`RunState::notify`]; the shard that runs the actor brackets each turn
//! with [`begin_turn`](RunState::begin_turn) and
//! [`end_turn`](RunState::end_turn), and ends its life with
//! [`mark_dead`](RunState::mark_dead).
//!
//! ```text
//!            notify                 shard picks it          turn ends, mailbox empty
//!   IDLE ────────────▶ SCHEDULED ────────────────▶ RUNNING ─────────────────────────▶ IDLE
//!                          ▲                          │ notify                    │
//!                          │      turn ends           ▼                           │ crash/stop
//!                          └──────────────────── NOTIFIED                         ▼
//!                                                                                DEAD
//! ```
//!
//! Whoever moves the state to SCHEDULED holds the actor's *token*: it puts
//! the actor on exactly one run queue, and only the shard that dequeues it
//! runs it. A send that lands during a turn moves RUNNING to NOTIFIED, and
//! the shard requeues the actor instead of idling it.
//!
//! # Why no wake-up is lost
//!
//! Every access to the state is a read-modify-write with acquire-release
//! ordering, `notify`'s first one included, even when it changes nothing.
//! RMWs of one atomic are totally ordered and each reads the previous one's
//! value, so if a sender's `notify` N (after its mailbox push P) comes before
//! one of the shard's transitions X in that order, N synchronizes with X and
//! every mailbox read the shard makes after X sees P. By what N reads:
//!
//! - IDLE: N schedules the actor; the next turn begins after N.
//! - SCHEDULED: a turn is about to begin, after N.
//! - RUNNING: N moves it to NOTIFIED, so the turn's end cannot idle it: it is
//!   requeued, and the next turn begins after N.
//! - NOTIFIED: the same requeue is already due.
//! - DEAD: the sender drains the mailbox itself; and a death that comes after
//!   N lets the dying shard's drain see P.
//!
//! A plain load in `notify` breaks this: a store buffer lets the load pass
//! the push, the turn ends idle without seeing the message, and nothing runs
//! the actor again. `loom_tests/tests/run_state.rs` checks both the protocol
//! and that a load-based `notify` loses messages.

use super::facade::{AtomicU32, Ordering};

const IDLE: u32 = 0;
const SCHEDULED: u32 = 1;
const RUNNING: u32 = 2;
const NOTIFIED: u32 = 3;
const DEAD: u32 = 4;

/// What a [`RunState::notify`] asks of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// The sender now holds the token: put the actor on a run queue.
    Schedule,
    /// The actor is queued or running and will see the push.
    Nothing,
    /// The actor is dead: drain what was pushed.
    Dead,
}

/// An actor's scheduling state (see the module's doc).
#[derive(Debug)]
pub struct RunState(AtomicU32);

impl RunState {
    /// A new actor's state: SCHEDULED, its token held by the spawner.
    pub fn new() -> Self {
        RunState(AtomicU32::new(SCHEDULED))
    }

    /// After a push into the mailbox: makes sure the actor will run.
    pub fn notify(&self) -> Notify {
        let mut state = self.0.fetch_add(0, Ordering::AcqRel);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                DEAD => return Notify::Dead,
                _ => return Notify::Nothing,
            };
            match self.0.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == SCHEDULED => return Notify::Schedule,
                Ok(_) => return Notify::Nothing,
                Err(actual) => state = actual,
            }
        }
    }

    /// The token holder starts a turn: SCHEDULED → RUNNING.
    pub fn begin_turn(&self) {
        let previous = self.0.swap(RUNNING, Ordering::AcqRel);
        debug_assert_eq!(previous, SCHEDULED, "ran an actor that was not scheduled");
    }

    /// Ends a turn. True when the actor must go back on a run queue (it has
    /// `more_work`, or was notified while running): the caller keeps the
    /// token. False: it is IDLE, and the next `notify` schedules it.
    pub fn end_turn(&self, more_work: bool) -> bool {
        if more_work {
            // A swap, not a store: a store would cut the release sequence.
            self.0.swap(SCHEDULED, Ordering::AcqRel);
            return true;
        }
        match self.0.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(state) => {
                debug_assert_eq!(state, NOTIFIED);
                self.0.swap(SCHEDULED, Ordering::AcqRel);
                true
            }
        }
    }

    /// The token holder ends the actor's life; no sender schedules it again.
    pub fn mark_dead(&self) {
        self.0.swap(DEAD, Ordering::AcqRel);
    }

    /// Whether it is dead (a snapshot).
    pub fn is_dead(&self) -> bool {
        self.0.load(Ordering::Acquire) == DEAD
    }
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}
