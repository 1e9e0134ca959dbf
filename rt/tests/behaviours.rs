//! The behaviours on a real runtime: GenServer (call, cast, info, deferred
//! replies, timeouts, crashes, terminate), the state machine (transitions,
//! rejected events, state timeouts, postpone, next_event) and the circuit
//! breaker around real calls.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::Duration;

use common::*;
use zbmd_rt::behaviour::{
    BreakerError, BreakerState, CallError, CircuitBreaker, EventKind, GenServer, Machine,
    MachineContext, ManualClock, Permit, Server, ServerContext, ServerRef, StateMachine,
    StateMachineError, Transition,
};
use zbmd_rt::{
    Actor, ActorError, ActorId, AskError, Context, Down, ExitReason, Pid, ReplyTo, SpawnOptions,
};

/// A call's timeout where the answer must come long before it: a call that
/// waited for it instead of failing fast would fail the test.
const LONG: Duration = Duration::from_secs(60);

/// Waits for the next message on `rx` that `want` accepts; panics after
/// [`PATIENCE`].
fn wait_for<T: std::fmt::Debug>(rx: &Receiver<T>, what: &str, want: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(got) if want(&got) => return got,
            Ok(_) => continue,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

// ---------------------------------------------------------------------------
// GenServer.

/// Keeps a log of what it handled; defers `Wait` calls until `Release`.
struct Journal {
    log: Vec<String>,
    waiting: Vec<ReplyTo<Vec<String>>>,
    held: Vec<ReplyTo<Vec<String>>>,
    notes: Sender<Note>,
    trap_exit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    Deferred(usize),
    Terminated(ExitReason),
    Exit(ActorId, ExitReason),
    Down(ActorId, ExitReason),
}

enum JCall {
    /// The log so far.
    Log,
    /// Answered with the log when a `Release` cast comes.
    Wait,
    /// Never answered (the `ReplyTo` is kept).
    Hold,
    /// Panics in the handler.
    Panic,
    Monitor(Pid),
    Link(Pid),
}

enum JCast {
    Push(&'static str),
    Release,
    Fail,
    Stop,
}

impl Journal {
    fn new(notes: &Sender<Note>) -> Self {
        Journal {
            log: Vec::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            notes: notes.clone(),
            trap_exit: false,
        }
    }
}

impl GenServer for Journal {
    type Call = JCall;
    type Reply = Vec<String>;
    type Cast = JCast;
    type Info = &'static str;

    fn init(&mut self, ctx: &mut ServerContext<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(self.trap_exit);
        Ok(())
    }

    fn handle_call(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        request: JCall,
        from: ReplyTo<Vec<String>>,
    ) -> Result<(), ActorError> {
        match request {
            JCall::Log => {
                from.reply(self.log.clone());
            }
            JCall::Wait => {
                self.waiting.push(from);
                let _ = self.notes.send(Note::Deferred(self.waiting.len()));
            }
            JCall::Hold => self.held.push(from),
            JCall::Panic => panic!("told to panic"),
            JCall::Monitor(pid) => {
                ctx.monitor(&pid);
                from.reply(Vec::new());
            }
            JCall::Link(pid) => {
                ctx.link(&pid);
                from.reply(Vec::new());
            }
        }
        Ok(())
    }

    fn handle_cast(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        msg: JCast,
    ) -> Result<(), ActorError> {
        match msg {
            JCast::Push(what) => self.log.push(format!("cast {what}")),
            JCast::Release => {
                self.log.push("release".into());
                for from in self.waiting.drain(..) {
                    from.reply(self.log.clone());
                }
            }
            JCast::Fail => return Err(ActorError::msg("told to fail")),
            JCast::Stop => ctx.stop(ExitReason::Normal),
        }
        Ok(())
    }

    fn handle_info(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        msg: &'static str,
    ) -> Result<(), ActorError> {
        self.log.push(format!("info {msg}"));
        Ok(())
    }

    fn handle_exit(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = self.notes.send(Note::Exit(from, reason));
        Ok(())
    }

    fn handle_down(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        down: Down,
    ) -> Result<(), ActorError> {
        let _ = self.notes.send(Note::Down(down.actor, down.reason));
        Ok(())
    }

    fn terminate(&mut self, _ctx: &mut ServerContext<'_, Self>, reason: &ExitReason) {
        let _ = self.notes.send(Note::Terminated(reason.clone()));
    }
}

fn journal(rt: &zbmd_rt::Runtime) -> (ServerRef<Journal>, Receiver<Note>) {
    let (tx, rx) = channel();
    (Server::start(rt, Journal::new(&tx)).unwrap(), rx)
}

/// OTP: messages from one process to another arrive in the order sent,
/// whichever gen_server callback handles them.
#[test]
fn call_cast_and_info_from_one_sender_are_handled_in_order() {
    let rt = runtime(2);
    let (server, _notes) = journal(&rt);
    server.cast(JCast::Push("a")).unwrap();
    server.info("b").unwrap();
    server.cast(JCast::Push("c")).unwrap();
    server.actor_ref().try_send(zbmd_rt::behaviour::ServerMsg::Info("d")).unwrap();
    assert_eq!(server.call(JCall::Log, LONG).unwrap(), ["cast a", "info b", "cast c", "info d"]);
    rt.shutdown();
}

/// OTP: handle_call may return {noreply, State} and answer later with
/// gen_server:reply(From, Reply).
#[test]
fn a_deferred_reply_reaches_the_caller_when_the_server_answers_later() {
    let rt = runtime(2);
    let (server, notes) = journal(&rt);
    server.cast(JCast::Push("before")).unwrap();
    let caller = {
        let server = server.clone();
        thread::spawn(move || server.call(JCall::Wait, LONG))
    };
    wait_for(&notes, "the call to be deferred", |n| *n == Note::Deferred(1));
    // The server is free while the caller waits: it answers other calls.
    assert_eq!(server.call(JCall::Log, LONG).unwrap(), ["cast before"]);
    server.cast(JCast::Release).unwrap();
    let reply = caller.join().unwrap().unwrap();
    assert_eq!(reply, ["cast before", "release"], "answered after the release, not before");
    rt.shutdown();
}

/// OTP: gen_server:call exits with timeout when no reply comes in time;
/// the server is unaffected.
#[test]
fn a_call_times_out_when_the_server_keeps_the_request_unanswered() {
    let rt = runtime(2);
    let (server, _notes) = journal(&rt);
    assert_eq!(server.call(JCall::Hold, Duration::from_millis(20)), Err(AskError::Timeout));
    assert_eq!(server.call(JCall::Log, Duration::ZERO), Err(AskError::ZeroTimeout));
    server.cast(JCast::Push("after")).unwrap();
    assert_eq!(server.call(JCall::Log, LONG).unwrap(), ["cast after"]);
    rt.shutdown();
}

/// Monitors one actor, says so (`None`), and reports its Down.
struct Watcher {
    target: Pid,
    downs: Sender<Option<Down>>,
}

impl Actor for Watcher {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.monitor(&self.target);
        let _ = self.downs.send(None);
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<'_, Self>, _msg: ()) -> Result<(), ActorError> {
        Ok(())
    }
    fn handle_down(&mut self, _ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let _ = self.downs.send(Some(down));
        Ok(())
    }
}

/// A caller blocked on a server that crashes learns at once (Dropped), not
/// at its timeout: whether the crash is in its own call or in another
/// message while its request waits deferred. Monitors see the crash with
/// its reason, as with any actor (what a supervisor relies on).
#[test]
fn a_caller_of_a_crashing_server_gets_dropped_promptly_not_a_timeout() {
    let rt = runtime(2);
    // The call's own handler panics.
    let (server, notes) = journal(&rt);
    let (downs_tx, downs) = channel();
    rt.spawn(Watcher { target: server.pid(), downs: downs_tx }).unwrap();
    wait_for(&downs, "the monitor", Option::is_none);
    assert_eq!(server.call(JCall::Panic, LONG), Err(AskError::Dropped));
    let down = wait_for(&downs, "the crash's Down", Option::is_some).unwrap();
    assert_eq!(down.actor, server.id());
    assert!(
        matches!(&down.reason, ExitReason::Error(e) if e.contains("told to panic")),
        "{:?}",
        down.reason
    );
    let terminated = wait_for(&notes, "terminate", |n| matches!(n, Note::Terminated(_)));
    assert!(matches!(terminated, Note::Terminated(ExitReason::Error(_))));
    assert_eq!(server.call(JCall::Log, LONG), Err(AskError::NoProc));

    // A deferred request, held in the server's state, when another
    // message crashes the server.
    let (server, notes) = journal(&rt);
    let caller = {
        let server = server.clone();
        thread::spawn(move || server.call(JCall::Wait, LONG))
    };
    wait_for(&notes, "the call to be deferred", |n| *n == Note::Deferred(1));
    server.cast(JCast::Fail).unwrap();
    assert_eq!(caller.join().unwrap(), Err(AskError::Dropped));
    rt.shutdown();
}

/// OTP: terminate/2 runs with the reason the server stops for: normal
/// ({stop, normal, State}), shutdown (its supervisor's exit signal), or
/// the crash.
#[test]
fn terminate_sees_the_reason_normal_shutdown_or_crash() {
    let rt = runtime(2);
    let (normal, normal_notes) = journal(&rt);
    normal.cast(JCast::Stop).unwrap();
    let (shutdown, shutdown_notes) = journal(&rt);
    shutdown.call(JCall::Log, LONG).unwrap(); // started
    rt.exit(&shutdown.pid(), ExitReason::Shutdown);
    let (crash, crash_notes) = journal(&rt);
    crash.cast(JCast::Fail).unwrap();

    let reason =
        |rx: &Receiver<Note>| match wait_for(rx, "terminate", |n| matches!(n, Note::Terminated(_)))
        {
            Note::Terminated(reason) => reason,
            _ => unreachable!(),
        };
    assert_eq!(reason(&normal_notes), ExitReason::Normal);
    assert_eq!(reason(&shutdown_notes), ExitReason::Shutdown);
    assert_eq!(reason(&crash_notes), ExitReason::error("told to fail"));
    rt.shutdown();
}

/// OTP: a trapping gen_server gets {'EXIT', ..} and {'DOWN', ..} messages;
/// here through handle_exit and handle_down.
#[test]
fn a_server_receives_downs_and_trapped_exits() {
    let rt = runtime(2);
    let (tx, notes) = channel();
    let server = Server::start(&rt, Journal { trap_exit: true, ..Journal::new(&tx) }).unwrap();
    let (probe_events, _) = events();
    let probe = rt.spawn(Probe::new(&probe_events)).unwrap();
    server.call(JCall::Monitor(probe.pid()), LONG).unwrap();
    server.call(JCall::Link(probe.pid()), LONG).unwrap();
    rt.exit(&probe.pid(), ExitReason::Kill);
    // Either may come first: they are two signals from the dying probe.
    let mut got =
        [wait_for(&notes, "a Down or an exit", |_| true), wait_for(&notes, "the other", |_| true)];
    got.sort_by_key(|n| matches!(n, Note::Exit(..)));
    assert_eq!(
        got,
        [Note::Down(probe.id(), ExitReason::Killed), Note::Exit(probe.id(), ExitReason::Killed)]
    );
    assert!(server.is_alive(), "a trapping server survives its link's death");
    rt.shutdown();
}

/// Starts a Journal from inside itself and asks it twice without blocking
/// its shard: once answered, once crashing the server.
struct Client {
    results: Sender<Result<Vec<String>, AskError>>,
}

enum ClientMsg {
    Reply(Result<Vec<String>, AskError>),
}

impl Actor for Client {
    type Msg = ClientMsg;
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let (notes, _) = channel();
        let server = Server::start_from(ctx, Journal::new(&notes), SpawnOptions::default())?;
        server.cast(JCast::Push("x")).map_err(ActorError::msg)?;
        server.ask(ctx, JCall::Log, LONG, ClientMsg::Reply)?;
        server.ask(ctx, JCall::Panic, LONG, ClientMsg::Reply)?;
        Ok(())
    }
    fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: ClientMsg) -> Result<(), ActorError> {
        let ClientMsg::Reply(result) = msg;
        let _ = self.results.send(result);
        Ok(())
    }
}

#[test]
fn an_actor_asks_a_server_it_started_and_gets_replies_as_messages() {
    let rt = runtime(2);
    let (tx, results) = channel();
    rt.spawn(Client { results: tx }).unwrap();
    let first = wait_for(&results, "the first reply", |_| true);
    assert_eq!(first, Ok(vec!["cast x".to_string()]));
    let second = wait_for(&results, "the second reply", |_| true);
    assert_eq!(second, Err(AskError::Dropped), "a crash answers Dropped, not a timeout");
    rt.shutdown();
}

// ---------------------------------------------------------------------------
// State machine.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    Locked,
    Unlocked,
    Broken,
}

#[derive(Debug)]
enum GateEv {
    Coin,
    Push,
    /// The state timeout of `Unlocked`.
    Relock,
    /// Sets a named timeout that later delivers `Tick`.
    Mark(Duration),
    /// In `Unlocked`: sets the named timeout, then pushes (an inserted
    /// event, so the state changes before the timeout can fire).
    MarkThenPush(Duration),
    /// In `Locked`: a coin then, as an inserted event, a push.
    Pass,
    Tick,
    Repair,
    SelfTest,
    Explode,
}

/// A coin-operated turnstile that relocks itself after `unlock_for`; coins
/// that come while it is broken wait (postponed) until it is repaired.
struct Turnstile {
    unlock_for: Duration,
    trace: Sender<String>,
}

impl Turnstile {
    fn note(&self, what: String) {
        let _ = self.trace.send(what);
    }
}

impl StateMachine for Turnstile {
    type State = Gate;
    type Event = GateEv;
    type Reply = &'static str;

    fn handle_event(
        &mut self,
        ctx: &mut MachineContext<'_, '_, Self>,
        state: &Gate,
        event: GateEv,
    ) -> Result<Transition<Self>, ActorError> {
        Ok(match (state, event) {
            (Gate::Locked, GateEv::Coin) => {
                ctx.reply("unlocked");
                ctx.state_timeout(self.unlock_for, GateEv::Relock)?;
                Transition::Next(Gate::Unlocked)
            }
            (Gate::Unlocked, GateEv::Coin) => {
                ctx.reply("already unlocked");
                Transition::Keep
            }
            (Gate::Unlocked, GateEv::Push) => Transition::Next(Gate::Locked),
            (Gate::Unlocked, GateEv::Relock) => {
                assert_eq!(ctx.kind(), EventKind::StateTimeout);
                self.note("relocked by timeout".into());
                Transition::Next(Gate::Locked)
            }
            (_, GateEv::Mark(delay)) => {
                ctx.timeout("mark", delay, GateEv::Tick)?;
                Transition::Keep
            }
            (Gate::Unlocked, GateEv::MarkThenPush(delay)) => {
                ctx.timeout("mark", delay, GateEv::Tick)?;
                ctx.next_event(GateEv::Push)?;
                Transition::Keep
            }
            (Gate::Locked, GateEv::Pass) => {
                ctx.state_timeout(self.unlock_for, GateEv::Relock)?;
                ctx.next_event(GateEv::Push)?;
                Transition::Next(Gate::Unlocked)
            }
            (state, GateEv::Tick) => {
                assert_eq!(ctx.kind(), EventKind::Timeout("mark"));
                self.note(format!("tick in {state:?}"));
                Transition::Keep
            }
            (Gate::Broken, GateEv::Coin) => {
                self.note("postponed Coin".into());
                ctx.postpone(GateEv::Coin)?;
                Transition::Keep
            }
            (Gate::Broken, GateEv::Repair) => {
                ctx.next_event(GateEv::SelfTest)?;
                Transition::Next(Gate::Locked)
            }
            (state, GateEv::SelfTest) => {
                assert_eq!(ctx.kind(), EventKind::Internal);
                self.note(format!("self-test in {state:?}"));
                Transition::Keep
            }
            (_, GateEv::Explode) => panic!("exploded"),
            (_, event) => Transition::Undefined(event),
        })
    }

    fn on_enter(
        &mut self,
        _ctx: &mut MachineContext<'_, '_, Self>,
        state: &Gate,
    ) -> Result<(), ActorError> {
        self.note(format!("enter {state:?}"));
        Ok(())
    }

    fn on_exit(
        &mut self,
        _ctx: &mut MachineContext<'_, '_, Self>,
        state: &Gate,
    ) -> Result<(), ActorError> {
        self.note(format!("exit {state:?}"));
        Ok(())
    }

    fn terminate(
        &mut self,
        _ctx: &mut Context<'_, Machine<Self>>,
        state: &Gate,
        reason: &ExitReason,
    ) {
        self.note(format!("terminate in {state:?}: {reason}"));
    }
}

fn turnstile(
    rt: &zbmd_rt::Runtime,
    initial: Gate,
    unlock_for: Duration,
) -> (zbmd_rt::MachineRef<Turnstile>, Receiver<String>) {
    let (trace, rx) = channel();
    (Machine::start(rt, Turnstile { unlock_for, trace }, initial).unwrap(), rx)
}

/// Everything traced up to and including the first line `last` accepts.
fn trace_until(rx: &Receiver<String>, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = wait_for(rx, last, |_| true);
        let done = line == last;
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// gen_statem: the callback decides the next state; exit and entry run on
/// a state change only; the state is observable.
#[test]
fn transitions_follow_the_transition_function_with_exit_and_entry_hooks() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Locked, LONG);
    assert_eq!(gate.call(GateEv::Coin, LONG), Ok("unlocked"));
    assert_eq!(gate.state(LONG), Ok(Gate::Unlocked));
    assert_eq!(gate.call(GateEv::Coin, LONG), Ok("already unlocked"), "keep_state");
    gate.cast(GateEv::Push).unwrap();
    let status = gate.status(LONG).unwrap();
    assert_eq!(status.state, Gate::Locked);
    assert_eq!(status.transitions, 2);
    assert_eq!(
        trace_until(&trace, "enter Locked"),
        ["enter Locked"],
        "the initial state is entered at start"
    );
    assert_eq!(
        trace_until(&trace, "enter Locked"),
        ["exit Locked", "enter Unlocked", "exit Unlocked", "enter Locked"]
    );
    rt.shutdown();
}

/// An event the current state has no transition for is rejected: a caller
/// gets an error naming the state and the event, a cast is counted; the
/// machine stays where it was and goes on working.
#[test]
fn an_undefined_transition_is_rejected_with_an_error_naming_state_and_event() {
    let rt = runtime(2);
    let (gate, _trace) = turnstile(&rt, Gate::Locked, LONG);
    let error = gate.call(GateEv::Push, LONG).unwrap_err();
    assert_eq!(
        error,
        StateMachineError::UndefinedTransition { state: "Locked".into(), event: "Push".into() }
    );
    let text = error.to_string();
    assert!(text.contains("state Locked") && text.contains("event Push"), "{text}");
    gate.cast(GateEv::Push).unwrap();
    gate.cast(GateEv::Relock).unwrap();
    let status = gate.status(LONG).unwrap();
    assert_eq!((status.state, status.rejected, status.transitions), (Gate::Locked, 3, 0));
    assert_eq!(gate.call(GateEv::Coin, LONG), Ok("unlocked"), "still working");
    rt.shutdown();
}

/// gen_statem's state_timeout: set by the transition into a state, it
/// fires in that state.
#[test]
fn a_state_timeout_fires_in_the_state_it_was_set_for() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Locked, Duration::from_millis(10));
    assert_eq!(trace_until(&trace, "enter Locked"), ["enter Locked"]);
    assert_eq!(gate.call(GateEv::Coin, LONG), Ok("unlocked"));
    assert_eq!(
        trace_until(&trace, "enter Locked"),
        ["exit Locked", "enter Unlocked", "relocked by timeout", "exit Unlocked", "enter Locked"]
    );
    assert_eq!(gate.state(LONG), Ok(Gate::Locked));
    rt.shutdown();
}

/// gen_statem: a state change cancels the state timeout. The pass sets a
/// relock timeout and is followed at once (an inserted event) by the push
/// that relocks; a named timeout set afterwards with a longer delay fires
/// after the cancelled one would have (timers never fire early), and by
/// then no relock by timeout has happened.
#[test]
fn a_state_change_cancels_the_state_timeout() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Locked, Duration::from_millis(20));
    gate.cast(GateEv::Pass).unwrap();
    gate.cast(GateEv::Mark(Duration::from_millis(100))).unwrap();
    let seen = trace_until(&trace, "tick in Locked");
    assert_eq!(
        seen,
        [
            "enter Locked",
            "exit Locked",
            "enter Unlocked",
            "exit Unlocked",
            "enter Locked",
            "tick in Locked"
        ]
    );
    // A relock delivered in Locked would have been rejected, not traced.
    let status = gate.status(LONG).unwrap();
    assert_eq!((status.state, status.transitions, status.rejected), (Gate::Locked, 2, 0));
    rt.shutdown();
}

/// gen_statem: a generic ({timeout, Name}) timeout survives state changes:
/// set in Unlocked, it fires in Locked.
#[test]
fn a_named_timeout_survives_a_state_change() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Locked, LONG);
    assert_eq!(gate.call(GateEv::Coin, LONG), Ok("unlocked"));
    gate.cast(GateEv::MarkThenPush(Duration::from_millis(5))).unwrap();
    assert_eq!(
        trace_until(&trace, "tick in Locked"),
        [
            "enter Locked",
            "exit Locked",
            "enter Unlocked",
            "exit Unlocked",
            "enter Locked",
            "tick in Locked"
        ]
    );
    rt.shutdown();
}

/// gen_statem: postponed events are retried after the next state change,
/// with their callers; events inserted with next_event run before them.
#[test]
fn postponed_events_are_retried_after_a_state_change_behind_inserted_ones() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Broken, LONG);
    let caller = {
        let gate = gate.clone();
        thread::spawn(move || gate.call(GateEv::Coin, LONG))
    };
    wait_for(&trace, "the coin to be postponed", |l| l == "postponed Coin");
    assert_eq!(gate.status(LONG).unwrap().postponed, 1);
    assert_eq!(gate.state(LONG), Ok(Gate::Broken));
    gate.cast(GateEv::Repair).unwrap();
    assert_eq!(caller.join().unwrap(), Ok("unlocked"), "the postponed call is answered");
    assert_eq!(
        trace_until(&trace, "enter Unlocked"),
        ["exit Broken", "enter Locked", "self-test in Locked", "exit Locked", "enter Unlocked"]
    );
    assert_eq!(gate.status(LONG).unwrap().postponed, 0);
    rt.shutdown();
}

/// A transition function that panics crashes the machine like any actor:
/// its caller gets Dropped at once, terminate sees the state and reason.
#[test]
fn a_crashing_machine_answers_its_caller_dropped_and_terminates() {
    let rt = runtime(2);
    let (gate, trace) = turnstile(&rt, Gate::Locked, LONG);
    assert_eq!(gate.call(GateEv::Explode, LONG), Err(StateMachineError::Ask(AskError::Dropped)));
    let line = wait_for(&trace, "terminate", |l| l.starts_with("terminate"));
    assert_eq!(line, "terminate in Locked: error: panicked: exploded");
    assert_eq!(gate.state(LONG), Err(StateMachineError::Ask(AskError::NoProc)));
    rt.shutdown();
}

// ---------------------------------------------------------------------------
// Circuit breaker.

/// A dependency: answers `Work` with `Ok(n)` (the number of calls it
/// handled) or an error, as `SetHealthy` says; defers `Wait` until
/// `Release`.
struct Dependency {
    healthy: bool,
    handled: u64,
    waiting: Vec<ReplyTo<Result<u64, String>>>,
    notes: Sender<usize>,
}

enum DepCall {
    Work,
    Wait,
    Handled,
    /// Panics (crashes the dependency).
    Crash,
}

enum DepCast {
    SetHealthy(bool),
    Release,
}

impl GenServer for Dependency {
    type Call = DepCall;
    type Reply = Result<u64, String>;
    type Cast = DepCast;
    type Info = std::convert::Infallible;

    fn handle_call(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        request: DepCall,
        from: ReplyTo<Result<u64, String>>,
    ) -> Result<(), ActorError> {
        match request {
            DepCall::Work => {
                self.handled += 1;
                from.reply(if self.healthy { Ok(self.handled) } else { Err("down".into()) });
            }
            DepCall::Wait => {
                self.handled += 1;
                self.waiting.push(from);
                let _ = self.notes.send(self.waiting.len());
            }
            DepCall::Handled => {
                from.reply(Ok(self.handled));
            }
            DepCall::Crash => panic!("dependency crashed"),
        }
        Ok(())
    }

    fn handle_cast(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        msg: DepCast,
    ) -> Result<(), ActorError> {
        match msg {
            DepCast::SetHealthy(healthy) => self.healthy = healthy,
            DepCast::Release => {
                for from in self.waiting.drain(..) {
                    from.reply(Ok(0));
                }
            }
        }
        Ok(())
    }
}

fn dependency(rt: &zbmd_rt::Runtime) -> (ServerRef<Dependency>, Receiver<usize>) {
    let (notes, rx) = channel();
    let dep = Dependency { healthy: true, handled: 0, waiting: Vec::new(), notes };
    (Server::start(rt, dep).unwrap(), rx)
}

/// One guarded GenServer call: the server's error and an ask error both
/// count as failures.
fn work(
    breaker: &CircuitBreaker,
    dep: &ServerRef<Dependency>,
    request: DepCall,
) -> Result<u64, CallError<String>> {
    breaker.call(|| dep.call(request, LONG).map_err(|e| e.to_string())?)
}

fn handled(dep: &ServerRef<Dependency>) -> u64 {
    dep.call(DepCall::Handled, LONG).unwrap().unwrap()
}

/// Closed → open after `failure_threshold` consecutive failures; open fails
/// fast (the call is not made) and says when the next probe may go;
/// half-open after the open timeout; closed after `success_threshold`
/// consecutive probe successes.
#[test]
fn a_breaker_around_server_calls_goes_closed_open_half_open_closed() {
    let rt = runtime(2);
    let (dep, _) = dependency(&rt);
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::builder()
        .name("dep")
        .failure_threshold(3)
        .success_threshold(2)
        .open_timeout(Duration::from_secs(30))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(work(&breaker, &dep, DepCall::Work), Ok(1));
    dep.cast(DepCast::SetHealthy(false)).unwrap();
    for _ in 0..2 {
        assert_eq!(work(&breaker, &dep, DepCall::Work), Err(CallError::Failed("down".into())));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
    assert!(work(&breaker, &dep, DepCall::Work).is_err());
    assert_eq!(breaker.state(), BreakerState::Open);

    let made = handled(&dep);
    let open = |retry_in| Err(CallError::Rejected(BreakerError::Open { name: "dep", retry_in }));
    assert_eq!(work(&breaker, &dep, DepCall::Work), open(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(10));
    assert_eq!(work(&breaker, &dep, DepCall::Work), open(Duration::from_secs(20)));
    assert_eq!(handled(&dep), made, "an open breaker does not make the call");
    assert!(breaker.stats().rejections == 2);

    clock.advance(Duration::from_secs(20));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    dep.cast(DepCast::SetHealthy(true)).unwrap();
    assert!(work(&breaker, &dep, DepCall::Work).is_ok());
    assert_eq!(breaker.state(), BreakerState::HalfOpen, "one success of two");
    assert!(work(&breaker, &dep, DepCall::Work).is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);

    let stats = breaker.stats();
    assert_eq!((stats.opened, stats.half_opened, stats.closed), (1, 1, 1));
    assert_eq!(stats.transitions(), 3);
    assert_eq!((stats.calls, stats.successes, stats.failures), (6, 3, 3));
    rt.shutdown();
}

/// A failed probe opens the breaker again, for a whole new open timeout.
/// The calls here are `Runtime::call`s, failing by timeout.
#[test]
fn a_failed_probe_reopens_the_breaker_for_a_new_open_timeout() {
    let rt = runtime(2);
    let (dep, _) = dependency(&rt);
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .open_timeout(Duration::from_secs(5))
        .clock(clock.clone())
        .build()
        .unwrap();
    // `Wait` is never released here: each call times out.
    let call = || {
        breaker.call(|| {
            let reply = rt.call(
                dep.actor_ref(),
                |from| zbmd_rt::behaviour::ServerMsg::Call(DepCall::Wait, from),
                Duration::from_millis(5),
            );
            reply.map_err(|e| e.to_string())?
        })
    };
    assert_eq!(call(), Err(CallError::Failed(AskError::Timeout.to_string())));
    assert_eq!(breaker.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(4));
    assert!(matches!(call(), Err(CallError::Rejected(BreakerError::Open { .. }))));
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(matches!(call(), Err(CallError::Failed(_))), "the probe is made, and fails");
    assert_eq!(breaker.state(), BreakerState::Open);
    let retry_in = Duration::from_secs(5);
    assert_eq!(
        call(),
        Err(CallError::Rejected(BreakerError::Open { name: "breaker", retry_in })),
        "a full open timeout again"
    );
    let stats = breaker.stats();
    assert_eq!((stats.opened, stats.half_opened, stats.closed), (2, 1, 0));
    rt.shutdown();
}

/// `trip` opens a closed breaker at once, whatever its failure count, and
/// gives an open one a fresh timeout.
#[test]
fn tripping_opens_the_breaker_now_and_restarts_its_timeout() {
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::builder()
        .failure_threshold(100)
        .open_timeout(Duration::from_secs(5))
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.trip();
    assert_eq!(breaker.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(4));
    breaker.trip();
    clock.advance(Duration::from_secs(4));
    assert_eq!(breaker.state(), BreakerState::Open, "the second trip restarted the timeout");
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.stats().opened, 1, "tripping an open breaker is no new opening");
}

/// Half-open lets at most `half_open_probes` calls through at once; the
/// others fail fast until a probe finishes.
#[test]
fn half_open_admits_at_most_the_configured_number_of_probes() {
    let rt = runtime(2);
    let (dep, waiting) = dependency(&rt);
    let clock = Arc::new(ManualClock::new());
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .success_threshold(2)
        .half_open_probes(2)
        .open_timeout(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // Two probes in flight: blocked in deferred calls.
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let (breaker, dep) = (breaker.clone(), dep.clone());
            thread::spawn(move || work(&breaker, &dep, DepCall::Wait))
        })
        .collect();
    wait_for(&waiting, "two probes in flight", |n| *n == 2);
    let busy = Err(CallError::Rejected(BreakerError::ProbesBusy { name: "breaker", limit: 2 }));
    assert_eq!(work(&breaker, &dep, DepCall::Work), busy);
    assert_eq!(handled(&dep), 2, "the third call was not made");
    dep.cast(DepCast::Release).unwrap();
    for probe in probes {
        assert_eq!(probe.join().unwrap(), Ok(0));
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "two probe successes close it");
    assert_eq!(breaker.stats().rejections, 1);
    rt.shutdown();
}

/// An actor keeps a permit across a non-blocking ask and settles it when
/// the reply (here: the dependency crashed, Dropped) arrives.
struct Guarded {
    breaker: CircuitBreaker,
    dep: ServerRef<Dependency>,
    permit: Option<Permit>,
    report: Sender<Result<(), String>>,
}

enum GuardedMsg {
    Go,
    Reply(Result<Result<u64, String>, AskError>),
}

impl Actor for Guarded {
    type Msg = GuardedMsg;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: GuardedMsg) -> Result<(), ActorError> {
        match msg {
            GuardedMsg::Go => match self.breaker.try_acquire() {
                Ok(permit) => {
                    self.permit = Some(permit);
                    self.dep.ask(ctx, DepCall::Crash, LONG, GuardedMsg::Reply)?;
                }
                Err(rejected) => {
                    let _ = self.report.send(Err(rejected.to_string()));
                }
            },
            GuardedMsg::Reply(reply) => {
                let permit = self.permit.take().expect("a permit per ask");
                match reply {
                    Ok(Ok(_)) => permit.success(),
                    _ => permit.failure(),
                }
                let _ = self.report.send(Ok(()));
            }
        }
        Ok(())
    }
}

#[test]
fn an_actor_holds_a_permit_across_an_ask_and_the_breaker_opens_on_the_crash() {
    let rt = runtime(2);
    let (dep, _) = dependency(&rt);
    let breaker = CircuitBreaker::builder()
        .failure_threshold(1)
        .open_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (report, reports) = channel();
    let actor = rt.spawn(Guarded { breaker: breaker.clone(), dep, permit: None, report }).unwrap();
    actor.try_send(GuardedMsg::Go).unwrap();
    assert_eq!(wait_for(&reports, "the reply", |_| true), Ok(()));
    assert_eq!(breaker.state(), BreakerState::Open);
    actor.try_send(GuardedMsg::Go).unwrap();
    let rejected = wait_for(&reports, "the rejection", |_| true).unwrap_err();
    assert!(rejected.contains("is open"), "{rejected}");
    rt.shutdown();
}

/// Zero thresholds, zero probes and a zero open timeout are refused with
/// a configuration error; a panicking guarded call counts as a failure.
#[test]
fn a_breaker_refuses_a_zero_configuration_and_counts_panics_as_failures() {
    let zero = [
        CircuitBreaker::builder().failure_threshold(0).build(),
        CircuitBreaker::builder().success_threshold(0).build(),
        CircuitBreaker::builder().half_open_probes(0).build(),
        CircuitBreaker::builder().open_timeout(Duration::ZERO).build(),
    ];
    for result in zero {
        assert!(matches!(result, Err(BreakerError::Config(_))), "{result:?}");
    }
    let breaker = CircuitBreaker::builder().failure_threshold(1).build().unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        breaker.call(|| -> Result<(), ()> { panic!("inside the guarded call") })
    }));
    assert!(panicked.is_err());
    assert_eq!(breaker.stats().failures, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
}
