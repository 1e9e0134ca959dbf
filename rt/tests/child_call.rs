//! `ChildRef`'s promises through a restart window, one test each
//! (docs/supervision.md, "Reaching a child that was restarted"): a call or a
//! send that finds no incarnation waits for the next one within its
//! timeout; a request the dead incarnation never handled is resent to the
//! next one; a request the handler crashed with, or handed on to an actor
//! that died with it, is not; and a child that
//! will not be restarted ends every wait at once.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{
    ChildRef, ChildSpec, Restart, RestartWaitError, Supervisor, SupervisorRef, SupervisorSpec,
};
use zbmd_rt::{
    Actor, ActorError, ActorId, AskError, Context, ReplyTo, Runtime, SendError, SpawnOptions,
};

/// The restart backoff of the tests that wait through a window.
const BACKOFF: Duration = Duration::from_millis(300);

struct Worker {
    handled: Arc<AtomicU64>,
}

enum W {
    /// Crash (the handler fails with the request in hand).
    Crash,
    /// Crash, taking a `ReplyTo` with it.
    CrashWith(ReplyTo<()>),
    /// Stop normally.
    Stop,
    /// Spin until the flag is set, so that messages queue up behind.
    Hold(Arc<AtomicBool>),
    /// Meet the test at the barrier, then block until it meets it again.
    Block(Arc<Barrier>),
    /// Answer with this incarnation's id.
    Id(ReplyTo<ActorId>),
    /// Count one handled message.
    Count,
}

impl Actor for Worker {
    type Msg = W;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: W) -> Result<(), ActorError> {
        match msg {
            W::Crash => return Err(ActorError::msg("told to crash")),
            W::CrashWith(reply) => {
                let _in_hand = reply; // dropped by the crash, unanswered
                return Err(ActorError::msg("told to crash"));
            }
            W::Stop => ctx.stop(zbmd_rt::ExitReason::Normal),
            W::Hold(gate) => {
                while !gate.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
            W::Block(barrier) => {
                barrier.wait(); // tell the test we are busy
                barrier.wait(); // until it lets us go
            }
            W::Id(reply) => {
                reply.reply(ctx.id());
            }
            W::Count => {
                self.handled.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

/// One worker under a one_for_one supervisor waiting `backoff` before each
/// restart.
fn tree(
    rt: &Runtime,
    backoff: Duration,
    restart: Restart,
) -> (SupervisorRef, ChildRef<W>, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let spec = {
        let handled = handled.clone();
        ChildSpec::worker("w", move || Worker { handled: handled.clone() }).restart(restart)
    };
    let child = spec.child_ref();
    let spec = SupervisorSpec::one_for_one()
        .intensity(10, Duration::from_secs(60))
        .backoff(backoff, backoff)
        .child(spec);
    (Supervisor::start(rt, spec).expect("the tree starts"), child, handled)
}

/// Crashes the current incarnation and returns once it is dead: the
/// restart window is open (for the backoff).
fn crash(child: &ChildRef<W>) -> ActorId {
    let current = child.current().expect("a live incarnation");
    child.try_send(W::Crash).unwrap();
    eventually("the incarnation to die", || !current.is_alive());
    current.id()
}

#[test]
fn call_in_the_restart_window_gets_the_next_incarnations_answer() {
    let rt = runtime(2);
    let (_sup, child, _) = tree(&rt, BACKOFF, Restart::Permanent);
    let dead = crash(&child);
    assert!(child.current().is_none(), "no incarnation during the backoff");
    let answer = child.call(W::Id, Duration::from_secs(2) + PATIENCE).expect("an answer");
    assert_ne!(answer, dead, "the answer comes from the next incarnation");
    assert_eq!(child.current().map(|c| c.id()), Some(answer));
    rt.shutdown();
}

#[test]
fn call_whose_timeout_ends_in_the_window_times_out_rather_than_noproc() {
    let rt = runtime(1);
    // A backoff far longer than the call's timeout: the window outlasts it.
    let (_sup, child, _) = tree(&rt, PATIENCE, Restart::Permanent);
    crash(&child);
    assert_eq!(child.call(W::Id, Duration::from_millis(50)), Err(AskError::Timeout));
    rt.shutdown();
}

#[test]
fn send_timeout_in_the_window_delivers_to_the_next_incarnation() {
    let rt = runtime(2);
    let (_sup, child, handled) = tree(&rt, BACKOFF, Restart::Permanent);
    crash(&child);
    child.send_timeout(W::Count, PATIENCE).expect("delivered after the restart");
    eventually("the new incarnation to handle it", || handled.load(Ordering::SeqCst) == 1);
    rt.shutdown();
}

#[test]
fn send_timeout_whose_timeout_ends_in_the_window_hands_the_message_back() {
    let rt = runtime(1);
    let (_sup, child, _) = tree(&rt, PATIENCE, Restart::Permanent);
    crash(&child);
    let refused = child.send_timeout(W::Count, Duration::from_millis(50)).unwrap_err();
    assert!(matches!(refused, SendError::NoProc(W::Count)), "handed back as NoProc");
    rt.shutdown();
}

#[test]
fn a_request_queued_behind_the_crash_resolves_unhandled_not_dropped() {
    let rt = runtime(1);
    let (_sup, child, _) = tree(&rt, BACKOFF, Restart::Permanent);
    let held = child.current().expect("a live incarnation");
    let gate = Arc::new(AtomicBool::new(false));
    child.try_send(W::Hold(gate.clone())).unwrap();
    child.try_send(W::Crash).unwrap();
    // Queued behind the crash, and sent once (no resend): the async ask
    // pushes before it returns.
    let queued = child.ask_async(W::Id);
    gate.store(true, Ordering::Release);
    let outcome = block_on(queued);
    assert_eq!(outcome, Err(AskError::Unhandled), "it died before handling the request");
    assert!(!held.is_alive());
    rt.shutdown();
}

#[test]
fn call_queued_behind_the_crashing_message_is_answered_by_the_next_incarnation() {
    let rt = runtime(2);
    let (_sup, child, _) = tree(&rt, BACKOFF, Restart::Permanent);
    let first = child.current().expect("a live incarnation");
    let gate = Arc::new(AtomicBool::new(false));
    child.try_send(W::Hold(gate.clone())).unwrap();
    let built = Arc::new(AtomicU64::new(0));
    let caller = {
        let (child, built) = (child.clone(), built.clone());
        std::thread::spawn(move || {
            child.call(
                |reply| {
                    // The first request goes behind a crash this thread
                    // sends first (one sender's messages stay in order),
                    // while the incarnation is held.
                    if built.fetch_add(1, Ordering::SeqCst) == 0 {
                        child.try_send(W::Crash).unwrap();
                    }
                    W::Id(reply)
                },
                PATIENCE,
            )
        })
    };
    eventually("the request to be built", || built.load(Ordering::SeqCst) > 0);
    gate.store(true, Ordering::Release);
    let answer = caller.join().unwrap().expect("answered");
    assert_ne!(answer, first.id(), "answered by the next incarnation");
    assert!(!first.is_alive());
    rt.shutdown();
}

#[test]
fn call_whose_handler_crashes_with_the_request_is_dropped_and_not_resent() {
    let rt = runtime(1);
    let (_sup, child, _) = tree(&rt, Duration::from_millis(1), Restart::Permanent);
    let built = AtomicU64::new(0);
    let answer = child.call(
        |reply| {
            built.fetch_add(1, Ordering::SeqCst);
            W::CrashWith(reply)
        },
        PATIENCE,
    );
    assert_eq!(answer, Err(AskError::Dropped));
    assert_eq!(built.load(Ordering::SeqCst), 1, "a poison request is sent once");
    rt.shutdown();
}

/// Opens a `W::Hold` gate when dropped, panicking included.
struct OpenOnDrop(Arc<AtomicBool>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Hands each request's `ReplyTo` on to `downstream`, counting the
/// requests it handles.
struct Relay {
    downstream: zbmd_rt::ActorRef<W>,
    handled: Arc<AtomicU64>,
}

impl Actor for Relay {
    type Msg = ReplyTo<ActorId>;

    fn handle(&mut self, _: &mut Context<'_, Self>, reply: Self::Msg) -> Result<(), ActorError> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        let _ = self.downstream.try_send(W::Id(reply));
        Ok(())
    }
}

#[test]
fn a_request_handed_on_to_an_actor_that_dies_with_it_is_dropped_and_not_resent() {
    let rt = runtime(2);
    // Each on its own shard, never stolen: the relay runs while downstream
    // is held.
    let on =
        |shard| zbmd_rt::SpawnOptions { shard: Some(shard), pinned: true, ..Default::default() };
    let downstream =
        rt.spawn_with(Worker { handled: Arc::default() }, on(1)).expect("downstream spawns");
    let handled = Arc::new(AtomicU64::new(0));
    let spec = {
        let (downstream, handled) = (downstream.clone(), handled.clone());
        ChildSpec::worker("relay", move || Relay {
            downstream: downstream.clone(),
            handled: handled.clone(),
        })
        .spawn_options(on(0))
    };
    let relay = spec.child_ref();
    let tree = SupervisorSpec::one_for_one().intensity(10, Duration::from_secs(60)).child(spec);
    let _sup = Supervisor::start(&rt, tree).expect("the tree starts");
    // Downstream is held, a crash queued behind the hold: the relayed
    // request lands behind the crash, and dies unread with downstream.
    let gate = Arc::new(AtomicBool::new(false));
    let _open = OpenOnDrop(gate.clone()); // a failed assertion must not hang the shutdown
    downstream.try_send(W::Hold(gate.clone())).unwrap();
    downstream.try_send(W::Crash).unwrap();
    let caller = {
        let relay = relay.clone();
        std::thread::spawn(move || relay.call(|reply| reply, PATIENCE))
    };
    eventually("the relay to hand the request on", || handled.load(Ordering::SeqCst) == 1);
    gate.store(true, Ordering::Release);
    // The relay handled the request (it may have had effects): its loss
    // downstream is `Dropped`, and the request is not sent again.
    assert_eq!(caller.join().unwrap(), Err(AskError::Dropped));
    assert_eq!(handled.load(Ordering::SeqCst), 1, "handled once, not resent");
    assert!(!downstream.is_alive());
    rt.shutdown();
}

#[test]
fn a_supervisor_that_gives_up_ends_the_wait_at_once_with_noproc() {
    let rt = runtime(2);
    let spec = ChildSpec::worker("w", || Worker { handled: Arc::default() });
    let child = spec.child_ref();
    // No restart allowed: the first crash makes the supervisor give up.
    let tree = SupervisorSpec::one_for_one().intensity(0, Duration::from_secs(60)).child(spec);
    let sup = Supervisor::start(&rt, tree).unwrap();
    crash(&child);
    // Were the wait not ended, this would answer Timeout, a minute later.
    let long = Duration::from_secs(60);
    assert_eq!(child.call(W::Id, long), Err(AskError::NoProc));
    assert!(matches!(child.send_timeout(W::Count, long), Err(SendError::NoProc(_))));
    eventually("the supervisor to stop", || !sup.is_alive());
    rt.shutdown();
}

#[test]
fn a_child_that_is_not_restarted_ends_the_wait_at_once_with_noproc() {
    let rt = runtime(1);
    let (_sup, child, _) = tree(&rt, BACKOFF, Restart::Transient);
    let current = child.current().unwrap();
    child.try_send(W::Stop).unwrap(); // a normal exit: a transient child stays down
    eventually("the child to stop", || !current.is_alive());
    assert_eq!(child.call(W::Id, Duration::from_secs(60)), Err(AskError::NoProc));
    rt.shutdown();
}

#[test]
fn a_terminated_child_ends_the_wait_and_restart_child_brings_calls_back() {
    let rt = runtime(1);
    let (sup, child, _) = tree(&rt, BACKOFF, Restart::Permanent);
    sup.terminate_child("w", PATIENCE).unwrap();
    assert_eq!(child.call(W::Id, Duration::from_secs(60)), Err(AskError::NoProc));
    sup.restart_child("w", PATIENCE).unwrap();
    assert!(child.call(W::Id, PATIENCE).is_ok());
    rt.shutdown();
}

#[test]
fn wait_for_restart_returns_once_the_next_incarnation_is_bound() {
    let rt = runtime(2);
    let (_sup, child, _) = tree(&rt, BACKOFF, Restart::Permanent);
    let seen = child.incarnation();
    let dead = crash(&child);
    // A minute of patience: only the supervisor's bind ends it in time.
    assert_eq!(child.wait_for_restart(seen, Duration::from_secs(60)), Ok(()));
    assert!(child.incarnation() > seen);
    let next = child.current().expect("the bound incarnation is alive");
    assert_ne!(next.id(), dead);
    // Already restarted since `seen`: answers at once.
    assert_eq!(child.wait_for_restart(seen, Duration::ZERO), Ok(()));
    rt.shutdown();
}

#[test]
fn wait_for_restart_whose_timeout_ends_in_the_window_times_out() {
    let rt = runtime(1);
    let (_sup, child, _) = tree(&rt, PATIENCE, Restart::Permanent);
    let seen = child.incarnation();
    crash(&child);
    let waited = child.wait_for_restart(seen, Duration::from_millis(50));
    assert_eq!(waited, Err(RestartWaitError::Timeout));
    rt.shutdown();
}

#[test]
fn wait_for_restart_answers_retired_when_the_supervisor_gives_up() {
    let rt = runtime(2);
    let spec = ChildSpec::worker("w", || Worker { handled: Arc::default() });
    let child = spec.child_ref();
    let tree = SupervisorSpec::one_for_one().intensity(0, Duration::from_secs(60)).child(spec);
    let sup = Supervisor::start(&rt, tree).unwrap();
    let seen = child.incarnation();
    crash(&child);
    // Were the wait not ended by the retire, this would time out a minute later.
    let waited = child.wait_for_restart(seen, Duration::from_secs(60));
    assert_eq!(waited, Err(RestartWaitError::Retired));
    eventually("the supervisor to stop", || !sup.is_alive());
    rt.shutdown();
}

/// One worker whose mailbox holds two messages, blocked in a handler until
/// the test meets it at the barrier again, with its mailbox full.
fn full_child(rt: &Runtime) -> (SupervisorRef, ChildRef<W>, Arc<AtomicU64>, Arc<Barrier>) {
    let handled = Arc::new(AtomicU64::new(0));
    let options = SpawnOptions { mailbox_capacity: Some(2), ..SpawnOptions::default() };
    let spec = {
        let handled = handled.clone();
        ChildSpec::worker("w", move || Worker { handled: handled.clone() }).spawn_options(options)
    };
    let child = spec.child_ref();
    let sup = Supervisor::start(rt, SupervisorSpec::one_for_one().child(spec)).unwrap();
    let gate = Arc::new(Barrier::new(2));
    child.try_send(W::Block(gate.clone())).unwrap();
    gate.wait(); // the handler is busy and the mailbox empty
    child.try_send(W::Count).unwrap();
    child.try_send(W::Count).unwrap();
    assert!(matches!(child.try_send(W::Count), Err(SendError::Full(W::Count))));
    (sup, child, handled, gate)
}

#[test]
fn send_timeout_to_a_full_child_is_woken_by_the_drain_and_delivers() {
    let rt = runtime(1);
    let (_sup, child, handled, gate) = full_child(&rt);
    let (done, finished) = std::sync::mpsc::channel();
    let sender = {
        let child = child.clone();
        // A deadline far beyond the test's patience: only the drain's
        // wake-up can end this send in time.
        std::thread::spawn(move || {
            let _ = done.send(child.send_timeout(W::Count, Duration::from_secs(3600)));
        })
    };
    // Asleep: after the setup's refusal, the sender's try, and its two
    // tries around taking its ticket, each counted as a full mailbox.
    eventually("the sender to find the mailbox full", || {
        rt.metrics().total(Metric::MailboxFull) >= 4
    });
    gate.wait(); // release the handler: its turn drains the mailbox
    let sent = finished.recv_timeout(PATIENCE).expect("the drain did not wake the sender");
    assert!(sent.is_ok(), "the send was refused");
    sender.join().unwrap();
    eventually("all three counted", || handled.load(Ordering::SeqCst) == 3);
    rt.shutdown();
}

#[test]
fn wait_for_room_returns_once_the_child_drains() {
    let rt = runtime(1);
    let (_sup, child, handled, gate) = full_child(&rt);
    assert!(!child.wait_for_room(Duration::from_millis(20)), "room while the worker is held");
    let waiter = {
        let child = child.clone();
        std::thread::spawn(move || child.wait_for_room(Duration::from_secs(3600)))
    };
    gate.wait();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(waiter.join().unwrap());
    });
    let room = finished.recv_timeout(PATIENCE).expect("the drain did not end the wait");
    assert!(room, "the wait timed out");
    eventually("both counted", || handled.load(Ordering::SeqCst) == 2);
    rt.shutdown();
}

/// Drives a future to completion on this thread (a minimal executor: the
/// tests of the async path itself use tokio).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
