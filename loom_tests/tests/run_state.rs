//! loom models of an actor's scheduling state with its real mailbox: a
//! sender pushes and notifies while the shard runs, ends or kills the actor,
//! and every message is handled or drained — no interleaving within the
//! preemption bound leaves one stranded in a mailbox nobody will read.
#![cfg(zbmd_loom)]

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use zbmd_rt::sync::mpsc::{Envelope, MailboxReceiver, mailbox};
use zbmd_rt::sync::run_state::{Notify, RunState};

mod common;
use common::model;

/// What the model needs of a run state: the shipped one, or a broken one.
trait State: Send + Sync + 'static {
    fn new() -> Self;
    fn notify(&self) -> Notify;
    fn begin_turn(&self);
    fn end_turn(&self, more_work: bool) -> bool;
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
    fn end_turn(&self, more_work: bool) -> bool {
        RunState::end_turn(self, more_work)
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
            turn(&mut rx, &mut handled);
            token = state.end_turn(false);
        }
        if sender.join().unwrap() == Notify::Schedule {
            state.begin_turn();
            turn(&mut rx, &mut handled);
            assert!(!state.end_turn(false), "nobody else notified");
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
            turn(&mut rx, &mut handled);
            token = state.end_turn(false);
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
            assert!(!state.end_turn(false));
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
        sender.join().unwrap();
        let total = handled.len() as u32 + drained.load(Ordering::Relaxed);
        assert_eq!(total, 1, "the message was stranded (or seen twice)");
    });
}

/// The bug the read-modify-write prevents: a `notify` that first *loads*
/// the state. loom finds the interleaving where the load passes the push,
/// reads SCHEDULED, and the turn ends idle without the message.
struct LoadFirst(AtomicU32);

impl State for LoadFirst {
    fn new() -> Self {
        LoadFirst(AtomicU32::new(1)) // SCHEDULED
    }
    fn notify(&self) -> Notify {
        let mut state = self.0.load(Ordering::Acquire);
        loop {
            let next = match state {
                0 => 1,
                2 => 3,
                4 => return Notify::Dead,
                _ => return Notify::Nothing,
            };
            match self.0.compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == 1 => return Notify::Schedule,
                Ok(_) => return Notify::Nothing,
                Err(actual) => state = actual,
            }
        }
    }
    fn begin_turn(&self) {
        self.0.swap(2, Ordering::AcqRel);
    }
    fn end_turn(&self, _: bool) -> bool {
        match self.0.compare_exchange(2, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(_) => {
                self.0.swap(1, Ordering::AcqRel);
                true
            }
        }
    }
}

#[test]
#[should_panic(expected = "left in the mailbox of an idle actor")]
fn a_load_first_notify_loses_a_message() {
    sender_and_turns::<LoadFirst>();
}
