//! loom models of an actor's scheduling state with its real mailbox: a
//! sender pushes and notifies while the shard runs, ends or kills the actor,
//! and every message is handled or drained — no interleaving within the
//! preemption bound leaves one stranded in a mailbox nobody will read. Two
//! broken designs show what each half of the handshake is for. Last, an
//! actor that dies while another shard's turn end still reads it is freed
//! only after that read (`CurrentTurn`), and without the wait it is not.
#![cfg(zbmd_loom)]

use loom::sync::atomic::{AtomicU32, Ordering, fence};
use loom::sync::{Arc, Mutex};
use loom::thread;
use zbmd_rt::sync::mpsc::{Envelope, Mailbox, MailboxReceiver, mailbox};
use zbmd_rt::sync::run_state::{CurrentTurn, Notify, RunState};

mod common;
use common::model;

/// What the model needs of a run state: the shipped one, or a broken one.
trait State: Send + Sync + 'static {
    fn new() -> Self;
    fn notify(&self) -> Notify;
    fn begin_turn(&self);
    fn end_turn(&self, more_work: bool, has_claims: &dyn Fn() -> bool) -> bool;
}

impl State for RunState {
    fn new() -> Self {
        RunState::new()
    }
    fn notify(&self) -> Notify {
        RunState::notify(self)
    }
    fn begin_turn(&self) {
        RunState::begin_turn(self)
    }
    fn end_turn(&self, more_work: bool, has_claims: &dyn Fn() -> bool) -> bool {
        RunState::end_turn(self, more_work, has_claims)
    }
}

/// Handles what is queued: one turn's worth of messages.
fn turn(rx: &mut MailboxReceiver<(), u32>, handled: &mut Vec<u32>) {
    while let Some(envelope) = rx.recv() {
        match envelope {
            Envelope::User(value) => handled.push(value),
            Envelope::System(()) => {}
        }
    }
}

/// The shard holds the new actor's token and runs turns while it keeps it;
/// a sender pushes one message and notifies. If the sender got the token,
/// the turn it queued runs last. The message must have been handled.
fn sender_and_turns<S: State>() {
    model(|| {
        let (tx, mut rx) = mailbox::<(), u32>(1, 2).unwrap();
        let state = Arc::new(S::new());
        let sender = {
            let state = state.clone();
            thread::spawn(move || {
                tx.send(7).unwrap();
                state.notify()
            })
        };
        let mut handled = Vec::new();
        let mut token = true;
        while token {
            state.begin_turn();
            let before = handled.len();
            turn(&mut rx, &mut handled);
            token = state.end_turn(false, &|| rx.has_claims());
            if token && handled.len() == before {
                // Taken back for a claim still being written: the runtime
                // requeues the actor behind other work; here, let the
                // sender run.
                thread::yield_now();
            }
        }
        if sender.join().unwrap() == Notify::Schedule {
            state.begin_turn();
            turn(&mut rx, &mut handled);
            assert!(!state.end_turn(false, &|| rx.has_claims()), "nobody else notified");
        }
        assert_eq!(handled, [7], "a message was left in the mailbox of an idle actor");
    });
}

#[test]
fn a_send_during_a_turn_is_never_left_behind() {
    sender_and_turns::<RunState>();
}

/// Two senders, two messages, the same guarantee; and the token is never
/// held twice (`begin_turn` asserts SCHEDULED in debug builds).
#[test]
fn two_senders_one_token() {
    model(|| {
        let (tx, mut rx) = mailbox::<(), u32>(1, 2).unwrap();
        let state = Arc::new(RunState::new());
        let senders: Vec<_> = [1, 2]
            .into_iter()
            .map(|value| {
                let (tx, state) = (tx.clone(), state.clone());
                thread::spawn(move || {
                    tx.send(value).unwrap();
                    state.notify()
                })
            })
            .collect();
        let mut handled = Vec::new();
        let mut token = true;
        while token {
            state.begin_turn();
            let before = handled.len();
            turn(&mut rx, &mut handled);
            token = state.end_turn(false, || rx.has_claims());
            if token && handled.len() == before {
                // Taken back for a claim still being written: the runtime
                // requeues the actor behind other work; here, let the
                // sender run.
                thread::yield_now();
            }
        }
        let scheduled: usize = senders
            .into_iter()
            .map(|s| s.join().unwrap())
            .filter(|n| *n == Notify::Schedule)
            .count();
        assert!(scheduled <= 1, "two senders both got the token");
        if scheduled == 1 {
            state.begin_turn();
            turn(&mut rx, &mut handled);
            assert!(!state.end_turn(false, || rx.has_claims()));
        }
        handled.sort_unstable();
        assert_eq!(handled, [1, 2]);
    });
}

/// The actor dies after one turn while a sender pushes: the message is
/// handled, drained by the dying shard, or drained by the sender that saw
/// DEAD — never stranded. (The drain's mutual exclusion, a flag in the
/// runtime, is a mutex here.)
#[test]
fn a_send_racing_a_death_is_handled_or_drained() {
    model(|| {
        let (tx, rx) = mailbox::<(), u32>(1, 2).unwrap();
        let rx = Arc::new(Mutex::new(rx));
        let state = Arc::new(RunState::new());
        let drained = Arc::new(AtomicU32::new(0));
        let drain = |rx: &Mutex<MailboxReceiver<(), u32>>, drained: &AtomicU32| {
            let mut rx = rx.lock().unwrap();
            while rx.recv().is_some() {
                drained.fetch_add(1, Ordering::Relaxed);
            }
        };
        let sender = {
            let (state, rx, drained) = (state.clone(), rx.clone(), drained.clone());
            thread::spawn(move || {
                tx.send(7).unwrap();
                if state.notify() == Notify::Dead {
                    drain(&rx, &drained);
                }
            })
        };
        let mut handled = Vec::new();
        state.begin_turn();
        turn(&mut rx.lock().unwrap(), &mut handled);
        state.mark_dead();
        drain(&rx, &drained);
        // As `Shared::drain_dead` does: a claim not yet written means a
        // sender is still writing; wait for it and drain again.
        while rx.lock().unwrap().has_claims() {
            thread::yield_now();
            drain(&rx, &drained);
        }
        sender.join().unwrap();
        let total = handled.len() as u32 + drained.load(Ordering::Relaxed);
        assert_eq!(total, 1, "the message was stranded (or seen twice)");
    });
}

/// The first broken design: `notify` reads the state with a plain acquire
/// load and the turn's end does not look for claims. loom finds the
/// interleaving where the load passes the push, reads SCHEDULED, and the
/// turn ends idle without the message.
struct AcquireLoad(AtomicU32);

/// The states, as `RunState` numbers them.
const IDLE: u32 = 0;
const SCHEDULED: u32 = 1;
const RUNNING: u32 = 2;
const NOTIFIED: u32 = 3;

impl AcquireLoad {
    fn notify_from(&self, mut state: u32) -> Notify {
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return Notify::Nothing,
            };
            match self.0.compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == SCHEDULED => return Notify::Schedule,
                Ok(_) => return Notify::Nothing,
                Err(actual) => state = actual,
            }
        }
    }

    fn end_turn_plain(&self) -> bool {
        match self.0.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(_) => {
                self.0.swap(SCHEDULED, Ordering::AcqRel);
                true
            }
        }
    }
}

impl State for AcquireLoad {
    fn new() -> Self {
        AcquireLoad(AtomicU32::new(SCHEDULED))
    }
    fn notify(&self) -> Notify {
        self.notify_from(self.0.load(Ordering::Acquire))
    }
    fn begin_turn(&self) {
        self.0.swap(RUNNING, Ordering::AcqRel);
    }
    fn end_turn(&self, _: bool, _: &dyn Fn() -> bool) -> bool {
        self.end_turn_plain()
    }
}

#[test]
#[should_panic(expected = "left in the mailbox of an idle actor")]
fn an_acquire_load_notify_loses_a_message() {
    sender_and_turns::<AcquireLoad>();
}

/// The second: the sender's half of the handshake alone (its ordered read
/// of the state) without the turn's re-check for claims. The sender can
/// still read SCHEDULED from before the turn began while the turn misses
/// its message.
struct SenderHalfOnly(AcquireLoad);

impl State for SenderHalfOnly {
    fn new() -> Self {
        SenderHalfOnly(AcquireLoad::new())
    }
    fn notify(&self) -> Notify {
        fence(Ordering::SeqCst);
        self.0.notify_from(self.0.0.load(Ordering::SeqCst))
    }
    fn begin_turn(&self) {
        self.0.begin_turn();
    }
    fn end_turn(&self, _: bool, _: &dyn Fn() -> bool) -> bool {
        self.0.end_turn_plain()
    }
}

#[test]
#[should_panic(expected = "left in the mailbox of an idle actor")]
fn without_the_turns_recheck_a_message_is_lost() {
    sender_and_turns::<SenderHalfOnly>();
}

/// An actor as the runtime keeps it: a shared mailbox (the runtime's
/// `Shared`), and state that only the token holder touches, in a loom cell
/// so that a turn not ordered after the previous holder's fails the model.
struct Actor {
    mailbox: Mailbox<(), u32>,
    handled: loom::cell::UnsafeCell<Vec<u32>>,
}

// SAFETY: `handled` is reached only by the token holder (the model's point);
// loom checks that each holder's accesses happen after the last one's.
unsafe impl Sync for Actor {}

impl Actor {
    /// Runs one turn as the token holder: begin, handle what is queued,
    /// end. True if the caller keeps the token.
    fn turn(&self, state: &RunState) -> bool {
        state.begin_turn();
        self.handled.with_mut(|handled| {
            // SAFETY: we hold the token, so no other thread is in a turn:
            // `handled` is ours.
            let handled = unsafe { &mut *handled };
            // SAFETY: for the same reason we are the mailbox's only
            // consumer, after the previous holder.
            while let Some(envelope) = unsafe { self.mailbox.recv() } {
                if let Envelope::User(value) = envelope {
                    handled.push(value);
                }
            }
        });
        state.end_turn(false, || self.mailbox.has_claims())
    }
}

/// The token moves between threads through the state word alone: the shard
/// runs a turn while a sender pushes and notifies, and a sender that gets
/// the token runs the next turn on its own thread (as another shard would).
/// Each turn must see the previous holder's writes to the actor: the
/// exchange that gives the token up releases them, the one that takes it
/// acquires them. The message is handled exactly once.
#[test]
fn the_token_orders_turns_on_different_threads() {
    model(|| {
        let actor = Arc::new(Actor {
            mailbox: Mailbox::with_capacity(1, 2).unwrap(),
            handled: loom::cell::UnsafeCell::new(Vec::new()),
        });
        let state = Arc::new(RunState::new());
        let sender = {
            let (state, actor) = (state.clone(), actor.clone());
            thread::spawn(move || {
                actor.mailbox.send(7).unwrap();
                if state.notify() == Notify::Schedule {
                    while actor.turn(&state) {
                        thread::yield_now();
                    }
                }
            })
        };
        while actor.turn(&state) {
            thread::yield_now();
        }
        sender.join().unwrap();
        // SAFETY: both threads are done (joined).
        let handled = actor.handled.with(|handled| unsafe { (*handled).clone() });
        assert_eq!(handled, [7], "a message was lost or handled twice");
    });
}

/// The key a model actor is known by in the shards' `CurrentTurn`s (the
/// runtime uses the cell's address).
const ACTOR: usize = 1;

/// An actor that dies on its first message, as the runtime runs it: each
/// "shard" publishes the turn it is in (`CurrentTurn`), and the turn that
/// kills the actor frees it. `freed` stands for the cell and its `Shared`:
/// a turn end reads it wherever the runtime's reads the actor after giving
/// the token up, and the free writes it, so loom fails the model when a
/// read is not ordered before the free.
struct Mortal {
    mailbox: Mailbox<(), u32>,
    state: RunState,
    turns: [CurrentTurn; 2],
    freed: loom::cell::UnsafeCell<bool>,
}

// SAFETY: `freed` is the model's point: loom checks every access to it.
unsafe impl Sync for Mortal {}

impl Mortal {
    /// A read of the actor's memory.
    fn touch(&self) {
        // SAFETY: a read; loom reports it if it races the free.
        self.freed.with(|freed| assert!(!unsafe { *freed }, "a turn end read a freed actor"));
    }

    /// Runs turns on shard `me` while it holds the token, as
    /// `Shard::run_turn` does. The turn that receives the message kills the
    /// actor and frees it, after waiting out the other shard's turn end
    /// unless `wait` is false (the broken design).
    fn run(&self, me: usize, wait: bool) {
        loop {
            self.turns[me].enter(ACTOR);
            self.state.begin_turn();
            // SAFETY: we hold the token: the mailbox's only consumer.
            if unsafe { self.mailbox.recv() }.is_some() {
                self.state.mark_dead();
                self.turns[me].leave();
                if wait {
                    CurrentTurn::wait_out(&self.turns, ACTOR);
                }
                // SAFETY: the free; loom reports it if a read races it.
                self.freed.with_mut(|freed| unsafe { *freed = true });
                return;
            }
            let token = self.state.end_turn(false, || {
                self.touch();
                self.mailbox.has_claims()
            });
            self.touch();
            self.turns[me].leave();
            if !token {
                return;
            }
            thread::yield_now();
        }
    }
}

/// The shard ends an empty turn while a sender pushes the message that
/// kills the actor: the sender can take the token the moment the turn end
/// gives it up, run the fatal turn on its own thread (as another shard
/// would) and free the actor, while the first turn end still reads the
/// mailbox and the state word. With `wait`, the free waits until the first
/// shard has left the turn.
fn a_turn_end_racing_a_death(wait: bool) {
    model(move || {
        let actor = Arc::new(Mortal {
            mailbox: Mailbox::with_capacity(1, 2).unwrap(),
            state: RunState::new(),
            turns: [CurrentTurn::new(), CurrentTurn::new()],
            freed: loom::cell::UnsafeCell::new(false),
        });
        let sender = {
            let actor = actor.clone();
            thread::spawn(move || {
                actor.mailbox.send(7).unwrap();
                // Nothing or Dead: the shard's turn took the message (and
                // died of it), as the end's check shows.
                if actor.state.notify() == Notify::Schedule {
                    actor.run(1, wait);
                }
            })
        };
        actor.run(0, wait);
        sender.join().unwrap();
        // SAFETY: both threads are done (joined).
        let freed = actor.freed.with(|freed| unsafe { *freed });
        assert!(freed, "the message was not handled");
    });
}

#[test]
fn a_dead_actor_is_freed_after_every_turn_end() {
    a_turn_end_racing_a_death(true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn without_the_wait_a_turn_end_reads_a_freed_actor() {
    a_turn_end_racing_a_death(false);
}
