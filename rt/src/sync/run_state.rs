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
//!
//! What the models cannot check, argued here instead. A mutation check that
//! weakens one ordering at a time to Relaxed is caught for the loom-only
//! fence and for the RUNNING → IDLE exchange, whose release hands the turn's
//! writes to the next token holder
//! (`the_token_orders_turns_on_different_threads`); every other ordering of
//! this file passes every model weakened:
//!
//! * the SeqCst accesses carry the shipped handshake, which loom does not
//!   model (above);
//! * `notify`'s load and its exchange both acquire: in the models the
//!   exchange reads the very IDLE the load read, so either one suffices; the
//!   exchange's own Acquire is for when it reads a later IDLE (the actor ran
//!   again in between), which the bounded models do not reach;
//! * the other exchanges that give the token up (NOTIFIED → SCHEDULED,
//!   `more_work`, → DEAD) release, and those that take it or look at it
//!   (`begin_turn`, IDLE → SCHEDULED after the re-check, a `notify` that
//!   reads DEAD and drains the mailbox, `is_dead`) acquire, so that the
//!   state word alone orders consecutive holders and a death after the
//!   actor's last turn. The models reach these only with the next holder
//!   on the same thread or behind a mutex, and in the runtime the token also
//!   travels through a run queue whose own Release/Acquire pair orders the
//!   turns; they stand on the hand-off argument, not on a model.
//!
//! # After the token is given up
//!
//! The idle path of [`end_turn`](RunState::end_turn) reads the actor after
//! its exchange to IDLE has given the token up: `has_claims` reads the
//! mailbox, and the exchange back to SCHEDULED writes the state word. In
//! that window a sender can take the token, and another shard can run the
//! actor, see it die and free its cell, and with the cell the last `Arc`
//! of the mailbox and the state word. So each shard publishes which actor
//! it is in a turn of, in its [`CurrentTurn`], from before `begin_turn`
//! until after `end_turn` has returned, and the shard that frees a dead
//! actor first waits until no other shard is in a turn of it
//! ([`CurrentTurn::wait_out`]). The window is a few instructions with no
//! wait in them, so the wait is nothing unless that shard was preempted
//! inside it.
//!
//! Why the freeing shard cannot miss a turn end still in the window: the
//! ender's `enter` is sequenced before its exchange to IDLE, which
//! releases; the sender's exchange that takes the token acquires it, and
//! every later holder of the token got it through acquiring exchanges and
//! run queues, so `enter` happens before the freeing shard's look, which
//! therefore reads the ender's `enter` or a later store of that shard.
//! Every store to a `CurrentTurn` releases and each is sequenced after the
//! `leave` of the previous turn, so a look that reads anything but this
//! actor's key orders all of the ender's reads of the actor before the
//! free. A flag in the actor instead of one per shard would not do: two
//! turn ends of one actor can be in the window at once (the first shard
//! preempted while another runs and idles the actor), and the second's
//! clear would hide the first. One word per shard costs two plain stores
//! per turn to a line only that shard writes, and a look at every shard's
//! word per death. `loom_tests/tests/run_state.rs` checks the wait, and
//! that without it a turn end reads a freed actor; the model also fails
//! with `leave` or the wait's look weakened to Relaxed. `enter`'s Release
//! matters only when the ender's shard has moved on to another actor's
//! turn, which the model does not reach: it stands on the argument above.

use super::facade::{AtomicU32, AtomicUsize, Ordering, spin_hint};

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
        // Relaxed on failure: the value read is NOTIFIED, and the swap that
        // follows is the access that acquires.
        match self.0.compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::Relaxed) {
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

/// Which actor a shard is in a turn of, if any (see the module's doc, "After
/// the token is given up"): written only by its shard, read by the shard
/// that frees a dead actor.
#[derive(Debug)]
pub struct CurrentTurn(AtomicUsize);

/// No turn: the value of a [`CurrentTurn`] between turns.
const NO_TURN: usize = 0;

/// Spins of [`CurrentTurn::wait_out`] before it yields the CPU instead: the
/// window it waits out is a few dozen instructions, so a wait that outlasts
/// 64 spins (about a microsecond) is a preempted turn end, which needs a
/// CPU (on a small VM, maybe this one) to finish.
const SPINS_BEFORE_YIELD: u32 = 64;

impl CurrentTurn {
    /// A shard in no turn.
    pub fn new() -> Self {
        CurrentTurn(AtomicUsize::new(NO_TURN))
    }

    /// Before the shard first touches `actor` in a turn: from here until
    /// [`leave`](Self::leave), a free of `actor` waits. `actor` is a key
    /// unique among live actors and not zero (the runtime uses the cell's
    /// address).
    #[inline]
    pub fn enter(&self, actor: usize) {
        debug_assert_ne!(actor, NO_TURN, "an actor key of zero");
        // Release, like `leave`: a look that reads this store is ordered
        // after the previous turn (see the module's doc).
        self.0.store(actor, Ordering::Release);
    }

    /// After the shard's last access to the actor of the turn.
    #[inline]
    pub fn leave(&self) {
        self.0.store(NO_TURN, Ordering::Release);
    }

    /// Waits until none of `turns` is in a turn of `actor`; then every
    /// access a turn end made to it happens before the return. Called by
    /// the holder of a dead actor's last token, before it frees the actor,
    /// after its own shard has left the actor's turn. The wait has no bound
    /// of its own: it lasts as long as another shard needs to run the few
    /// instructions of a turn end, none of which waits.
    pub fn wait_out<'a>(turns: impl IntoIterator<Item = &'a CurrentTurn>, actor: usize) {
        for turn in turns {
            let mut spins = 0u32;
            while turn.0.load(Ordering::Acquire) == actor {
                if cfg!(zbmd_loom) || spins < SPINS_BEFORE_YIELD {
                    spins = spins.saturating_add(1);
                    spin_hint();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

impl Default for CurrentTurn {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_free_waits_only_for_turns_of_its_actor() {
        let turns = [CurrentTurn::new(), CurrentTurn::new(), CurrentTurn::new()];
        turns[1].enter(7);
        turns[2].enter(8);
        // Neither shard is in a turn of actor 9: returns (a bug would hang).
        CurrentTurn::wait_out(&turns, 9);
        turns[1].leave();
        turns[2].leave();
        CurrentTurn::wait_out(&turns, 7);
    }

    #[test]
    fn a_free_waits_until_the_turn_is_left() {
        let turn = CurrentTurn::new();
        let reading = AtomicBool::new(true);
        turn.enter(7);
        std::thread::scope(|scope| {
            let freer = scope.spawn(|| {
                CurrentTurn::wait_out([&turn], 7);
                // The turn's last access happened before `leave`.
                reading.load(Ordering::Relaxed)
            });
            reading.store(false, Ordering::Relaxed);
            turn.leave();
            assert!(!freer.join().unwrap(), "the wait returned while the turn was still reading");
        });
    }
}
