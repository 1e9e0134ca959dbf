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
//! A sender's mailbox push claims its slot with a compare-and-swap of the
//! lane's `tail`, then `notify` reads the state; the shard's turn ends with a
//! compare-and-swap of the state (RUNNING → IDLE), then reads the lanes'
//! `tail`s (`Mailbox::has_claims`) and, if a claim is there, takes the actor
//! back (IDLE → SCHEDULED) and runs it again. All four accesses are
//! sequentially consistent, so they are totally ordered, and each side's
//! read comes after its own write: either the sender's read of the state
//! comes after the shard's idling, and the sender sees IDLE and schedules
//! the actor, or the shard's read of `tail` comes after the sender's claim,
//! and the shard takes the actor back. (Both may happen; one of them wins the
//! IDLE → SCHEDULED exchange.) This is Dekker's handshake; on x86 it costs
//! nothing beyond the exchanges both sides make anyway, since a SeqCst load
//! is a plain load there.
//!
//! Death is the same handshake with `mark_dead` in place of the idling: the
//! dying shard's drain reads `tail` after its swap to DEAD, and a sender
//! that reads DEAD drains the mailbox itself.
//!
//! Two plainer designs were measured and rejected: a `notify` whose first
//! access is a read-modify-write even when it changes nothing is correct
//! without the shard's re-check, but makes every send fight the running
//! shard for the state's cache line (a send cost 1.6-1.8x as much); a plain
//! acquire load with no re-check loses wake-ups, because a store buffer lets
//! the load pass the push. loom does not model sequentially consistent
//! accesses, so under `--cfg zbmd_loom` each side adds a SeqCst fence
//! between its write and its read (the same handshake, in fences), and
//! `loom_tests/tests/run_state.rs` checks it, and that the acquire-load
//! design loses a message.

use super::facade::{AtomicU32, Ordering};

/// The handshake's order point between a side's write and its read. The
/// shipped build needs none (both accesses are SeqCst); the loom build,
/// whose SeqCst accesses are only acquire/release, gets a SeqCst fence.
#[inline(always)]
fn handshake_fence() {
    #[cfg(zbmd_loom)]
    super::facade::fence(Ordering::SeqCst);
}

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
        handshake_fence();
        let mut state = self.0.load(Ordering::SeqCst);
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
    /// `more_work`, was notified while running, or `has_claims` — the
    /// mailbox's [`has_claims`](super::mpsc::Mailbox::has_claims) — finds a
    /// send that raced the idling): the caller keeps the token. False: it is
    /// IDLE, and the next `notify` schedules it.
    pub fn end_turn(&self, more_work: bool, has_claims: impl FnOnce() -> bool) -> bool {
        if more_work {
            self.0.swap(SCHEDULED, Ordering::AcqRel);
            return true;
        }
        match self.0.compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::Acquire) {
            Ok(_) => {
                handshake_fence();
                // A sender whose claim we see may have read RUNNING or
                // NOTIFIED before our exchange: take the actor back, unless
                // a sender got to IDLE first and holds the token now.
                has_claims()
                    && self
                        .0
                        .compare_exchange(IDLE, SCHEDULED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            }
            Err(state) => {
                debug_assert_eq!(state, NOTIFIED);
                self.0.swap(SCHEDULED, Ordering::AcqRel);
                true
            }
        }
    }

    /// The token holder ends the actor's life; no sender schedules it
    /// again. The caller then drains the mailbox, reading its `tail`s in the
    /// handshake's order (`Mailbox::has_claims`, or `is_empty` after a SeqCst
    /// fence).
    pub fn mark_dead(&self) {
        self.0.swap(DEAD, Ordering::SeqCst);
        handshake_fence();
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
