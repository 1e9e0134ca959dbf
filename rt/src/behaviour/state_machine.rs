//! A state-machine behaviour: OTP's `gen_statem`, simplified but real.
//!
//! The user's type holds the machine's data and implements
//! [`StateMachine`]: a state type (usually an enum), an event type, and a
//! transition function, [`StateMachine::handle_event`], which takes the
//! current state and one event and answers a [`Transition`]: the next
//! state, keep the state, stop, or [`Transition::Undefined`] — "this state
//! has no transition for this event". Actions go through the
//! [`MachineContext`]: reply to the caller, set a state timeout or a named
//! (generic) timeout, postpone the event, insert an internal next event.
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::ActorError;
//! use zbmd_rt::behaviour::{Machine, MachineContext, StateMachine, Transition};
//!
//! #[derive(Debug, Clone, PartialEq)]
//! enum Door { Locked, Open }
//! #[derive(Debug)]
//! enum Ev { Code(u32), Relock }
//!
//! struct Lock { code: u32 }
//!
//! impl StateMachine for Lock {
//!     type State = Door;
//!     type Event = Ev;
//!     type Reply = bool;
//!
//!     fn handle_event(
//!         &mut self,
//!         ctx: &mut MachineContext<'_, '_, Self>,
//!         state: &Door,
//!         event: Ev,
//!     ) -> Result<Transition<Self>, ActorError> {
//!         Ok(match (state, event) {
//!             (Door::Locked, Ev::Code(code)) => {
//!                 let right = code == self.code;
//!                 ctx.reply(right);
//!                 if right {
//!                     // Relock after 10 s unless the state changes first.
//!                     ctx.state_timeout(Duration::from_secs(10), Ev::Relock)?;
//!                     Transition::Next(Door::Open)
//!                 } else {
//!                     Transition::Keep
//!                 }
//!             }
//!             (Door::Open, Ev::Relock) => Transition::Next(Door::Locked),
//!             (_, event) => Transition::Undefined(event),
//!         })
//!     }
//! }
//!
//! let rt = zbmd_rt::Runtime::builder().shards(1).pin(false).build().unwrap();
//! let door = Machine::start(&rt, Lock { code: 42 }, Door::Locked).unwrap();
//! let t = Duration::from_secs(5);
//! assert_eq!(door.call(Ev::Code(7), t), Ok(false));
//! assert_eq!(door.call(Ev::Code(42), t), Ok(true));
//! assert_eq!(door.state(t), Ok(Door::Open));
//! // Open has no transition for a code: rejected, and the door stays open.
//! let error = door.call(Ev::Code(42), t).unwrap_err();
//! assert_eq!(error.to_string(), "no transition from state Open on event Code(42); the machine stays in Open");
//! rt.shutdown();
//! ```
//!
//! # Timeouts
//!
//! A *state timeout* (OTP's `state_timeout`) delivers its event after a
//! delay unless the state changes first; setting another replaces it. One
//! set by the transition that changes the state (or by the new state's
//! `on_enter`) belongs to the new state. A *generic timeout* (OTP's
//! `{timeout, Name}`) survives state changes; setting one with the same
//! name replaces it. Each timeout carries a token (an epoch): one that was
//! already on its way when it was cancelled or replaced is recognised as
//! stale, ignored and counted ([`Status::stale_timeouts`]). Timeouts travel
//! in the machine's system lane, so a full mailbox cannot lose them.
//!
//! # Event order
//!
//! As in OTP: events inserted with [`MachineContext::next_event`] run
//! next, before anything else; after a state change, the postponed events
//! are retried, oldest first, before new messages.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::actor::{
    Actor, ActorError, ActorId, ActorRef, Context, Down, ExitReason, Pid, ReplyTo, TimerRef,
};
use crate::error::{AskError, RuntimeError, SendError};
use crate::runtime::{RuntimeHandle, SpawnOptions};
use crate::timer::TimerError;

/// Postponed events a machine holds: as deep as an actor's default
/// mailbox, since a machine that has postponed more than a mailbox's worth
/// of events is not keeping up, and holding more would hide that.
pub const MAX_POSTPONED: usize = crate::runtime::DEFAULT_MAILBOX_CAPACITY;

/// Internal events waiting to run ([`MachineContext::next_event`]): a chain
/// deeper than this is a loop, not a protocol.
pub const MAX_NEXT_EVENTS: usize = 64;

/// Named (generic) timeouts pending at once per machine: a handful of
/// distinct deadlines is what protocols use; more suggests names built from
/// data, which would grow without bound.
pub const MAX_NAMED_TIMEOUTS: usize = 16;

/// What a state machine's operations can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateMachineError {
    /// The transition function has no transition for this event in this
    /// state. The machine stays in `state`. Both are `Debug`-formatted.
    #[error("no transition from state {state} on event {event}; the machine stays in {state}")]
    UndefinedTransition {
        /// The state the machine was (and still is) in.
        state: String,
        /// The event it rejected.
        event: String,
    },
    /// The machine already holds [`MAX_POSTPONED`] postponed events; this
    /// one was dropped (a call that postponed it gets this error).
    #[error("the machine holds its maximum of {limit} postponed events; the event was dropped")]
    PostponeFull {
        /// The limit.
        limit: usize,
    },
    /// [`MAX_NEXT_EVENTS`] internal events are already waiting.
    #[error("{limit} internal events are already waiting; a longer next_event chain is a loop")]
    NextEventsFull {
        /// The limit.
        limit: usize,
    },
    /// [`MAX_NAMED_TIMEOUTS`] named timeouts are already pending.
    #[error("the machine has its maximum of {limit} named timeouts pending; cancel or reuse one")]
    TooManyTimeouts {
        /// The limit.
        limit: usize,
    },
    /// The shard's timer wheel could not take the timeout.
    #[error("the timeout could not be set: {0}")]
    Timer(TimerError),
    /// The call got no answer: timeout, full mailbox, dead or crashed machine.
    #[error(transparent)]
    Ask(#[from] AskError),
}

impl StateMachineError {
    /// Flattens what an [`ask`](MachineRef::ask) of a machine delivers.
    pub fn flatten<R>(answer: Result<Result<R, StateMachineError>, AskError>) -> Result<R, Self> {
        answer?
    }
}

/// What kind of event the transition function is handling (OTP's
/// `EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Not an event: the machine's start (`on_enter` of the initial state).
    Start,
    /// A call: the caller waits for [`MachineContext::reply`].
    Call,
    /// A cast.
    Cast,
    /// Any other message ([`MachineMsg::Info`], monitors, exits).
    Info,
    /// The state timeout fired.
    StateTimeout,
    /// The named generic timeout fired.
    Timeout(&'static str),
    /// An event inserted with [`MachineContext::next_event`].
    Internal,
}

/// The transition function's answer.
pub enum Transition<M: StateMachine> {
    /// Go to this state. A state equal to the current one is no state
    /// change (no exit/entry hooks, timeouts and postponed events stay),
    /// as in OTP.
    Next(M::State),
    /// Stay in the current state (OTP's `keep_state`).
    Keep,
    /// This state has no transition for this event: it is rejected, and
    /// the machine stays in its state. A caller gets
    /// [`StateMachineError::UndefinedTransition`]; any other event is logged
    /// and counted ([`Status::rejected`]).
    Undefined(M::Event),
    /// Stop the machine with this reason (OTP's `{stop, Reason}`).
    Stop(ExitReason),
}

impl<M: StateMachine> fmt::Debug for Transition<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Next(state) => write!(f, "Next({state:?})"),
            Transition::Keep => f.write_str("Keep"),
            Transition::Undefined(event) => write!(f, "Undefined({event:?})"),
            Transition::Stop(reason) => write!(f, "Stop({reason})"),
        }
    }
}

/// Where the reply to a call to a machine goes: a rejected call is
/// answered with the error.
pub type MachineReplyTo<M> = ReplyTo<Result<<M as StateMachine>::Reply, StateMachineError>>;

/// What an actor's [`MachineRef::ask`] delivers: the machine's answer, or
/// why none came ([`StateMachineError::flatten`] makes it one `Result`).
pub type MachineAnswer<M> = Result<Result<<M as StateMachine>::Reply, StateMachineError>, AskError>;

/// A state machine's callbacks (OTP's `gen_statem` with
/// `handle_event_function`: one function sees every state and event).
///
/// A callback that returns `Err` or panics crashes the machine like any
/// actor; callers waiting on it get [`AskError::Dropped`].
pub trait StateMachine: Sized + Send + 'static {
    /// The states. Compared with `==` to tell a state change; formatted
    /// with `Debug` in a rejected transition's error.
    type State: Clone + PartialEq + fmt::Debug + Send + 'static;
    /// The events. Formatted with `Debug` in a rejected transition's error.
    type Event: fmt::Debug + Send + 'static;
    /// What a call is answered with.
    type Reply: Send + 'static;

    /// Runs once in the actor's `started` hook, before `on_enter` of the
    /// initial state: setup, monitors, `trap_exit`.
    fn init(&mut self, ctx: &mut Context<'_, Machine<Self>>) -> Result<(), ActorError> {
        let _ = ctx;
        Ok(())
    }

    /// The transition function: one event in one state.
    fn handle_event(
        &mut self,
        ctx: &mut MachineContext<'_, '_, Self>,
        state: &Self::State,
        event: Self::Event,
    ) -> Result<Transition<Self>, ActorError>;

    /// Runs when the machine enters `state` (after the old state's
    /// `on_exit`), and for the initial state at start. May set actions, a
    /// state timeout in particular.
    fn on_enter(
        &mut self,
        ctx: &mut MachineContext<'_, '_, Self>,
        state: &Self::State,
    ) -> Result<(), ActorError> {
        let _ = (ctx, state);
        Ok(())
    }

    /// Runs when the machine leaves `state` for another.
    fn on_exit(
        &mut self,
        ctx: &mut MachineContext<'_, '_, Self>,
        state: &Self::State,
    ) -> Result<(), ActorError> {
        let _ = (ctx, state);
        Ok(())
    }

    /// Turns a monitor's `Down` into an event (of kind
    /// [`EventKind::Info`]); `None` (the default) ignores it.
    fn down_event(&mut self, down: Down) -> Option<Self::Event> {
        let _ = down;
        None
    }

    /// Turns a trapped exit signal into an event (of kind
    /// [`EventKind::Info`]); `None` (the default) ignores it.
    fn exit_event(&mut self, from: ActorId, reason: ExitReason) -> Option<Self::Event> {
        let _ = (from, reason);
        None
    }

    /// OTP's `terminate/3`: runs once when the machine stops, with the
    /// state it was in and the reason.
    fn terminate(
        &mut self,
        ctx: &mut Context<'_, Machine<Self>>,
        state: &Self::State,
        reason: &ExitReason,
    ) {
        let _ = (ctx, state, reason);
    }

    /// The name used in logs and by the stall detector.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A fired timeout on its way to the machine. Only the machine makes them.
pub struct TimerEvent<E> {
    token: u64,
    kind: TimerKind,
    event: E,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    State,
    Named(&'static str),
}

/// What a [`Machine`] receives.
pub enum MachineMsg<M: StateMachine> {
    /// An event from a caller who waits for the reply (`gen_statem:call`).
    Call(M::Event, MachineReplyTo<M>),
    /// An event without a reply (`gen_statem:cast`).
    Cast(M::Event),
    /// Any other message (OTP's `info` events): timers set with
    /// `ctx.send_after`, replies of asks the machine makes.
    Info(M::Event),
    /// Asks for the current state and counters.
    Status(ReplyTo<Status<M::State>>),
    /// A timeout the machine set fires.
    Timer(TimerEvent<M::Event>),
}

impl<M: StateMachine> fmt::Debug for MachineMsg<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineMsg::Call(event, _) => write!(f, "Call({event:?})"),
            MachineMsg::Cast(event) => write!(f, "Cast({event:?})"),
            MachineMsg::Info(event) => write!(f, "Info({event:?})"),
            MachineMsg::Status(_) => f.write_str("Status"),
            MachineMsg::Timer(timer) => write!(f, "Timer({:?}, {:?})", timer.kind, timer.event),
        }
    }
}

/// A machine's state and counters, as [`MachineRef::status`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<S> {
    /// The current state.
    pub state: S,
    /// State changes since the start.
    pub transitions: u64,
    /// Events rejected as undefined transitions (calls and others).
    pub rejected: u64,
    /// Timeouts that arrived after they were cancelled or replaced, and
    /// were ignored.
    pub stale_timeouts: u64,
    /// Events postponed now, waiting for a state change.
    pub postponed: usize,
}

/// An event waiting inside the machine (postponed or internal).
struct Queued<M: StateMachine> {
    kind: EventKind,
    event: M::Event,
    caller: Option<MachineReplyTo<M>>,
}

/// The machine's pending timeouts.
struct Timeouts {
    /// The next token; every timeout set gets a fresh one.
    next_token: u64,
    state: Option<(u64, TimerRef)>,
    named: Vec<(&'static str, u64, TimerRef)>,
}

impl Timeouts {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Cancels the state timeout; `ctx.cancel_timer` also frees its wheel
    /// entry at once when it is on this turn's shard.
    fn cancel_state<A: Actor>(&mut self, ctx: &mut Context<'_, A>) -> bool {
        match self.state.take() {
            Some((_, timer)) => ctx.cancel_timer(&timer),
            None => false,
        }
    }

    fn cancel_named<A: Actor>(&mut self, ctx: &mut Context<'_, A>, name: &str) -> bool {
        match self.named.iter().position(|(n, _, _)| *n == name) {
            Some(index) => ctx.cancel_timer(&self.named.swap_remove(index).2),
            None => false,
        }
    }

    /// Takes the pending timeout a fired timer belongs to; `None` for a
    /// stale one (cancelled, replaced, or cut short by a state change).
    fn claim(&mut self, kind: TimerKind, token: u64) -> Option<EventKind> {
        match kind {
            TimerKind::State => match self.state {
                Some((current, _)) if current == token => {
                    self.state = None;
                    Some(EventKind::StateTimeout)
                }
                _ => None,
            },
            TimerKind::Named(name) => {
                let index = self.named.iter().position(|(n, t, _)| *n == name && *t == token)?;
                self.named.swap_remove(index);
                Some(EventKind::Timeout(name))
            }
        }
    }
}

/// The per-event part of a machine that actions change.
struct Core<M: StateMachine> {
    kind: EventKind,
    caller: Option<MachineReplyTo<M>>,
    /// Whether the current event set a state timeout (it then belongs to
    /// the next state and survives the state change).
    state_timeout_set: bool,
    timeouts: Timeouts,
    postponed: VecDeque<Queued<M>>,
    /// Events inserted by the current event, in order.
    inserted: Vec<Queued<M>>,
    /// Events to run before the next message.
    pending: VecDeque<Queued<M>>,
}

/// What the state machine's callbacks get: the actions of a transition,
/// and (through `Deref`) the actor's whole [`Context`].
pub struct MachineContext<'c, 'a, M: StateMachine> {
    ctx: &'c mut Context<'a, Machine<M>>,
    core: &'c mut Core<M>,
}

impl<'a, M: StateMachine> Deref for MachineContext<'_, 'a, M> {
    type Target = Context<'a, Machine<M>>;
    fn deref(&self) -> &Self::Target {
        self.ctx
    }
}

impl<M: StateMachine> DerefMut for MachineContext<'_, '_, M> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.ctx
    }
}

impl<M: StateMachine> MachineContext<'_, '_, M> {
    /// The kind of the event being handled.
    pub fn kind(&self) -> EventKind {
        self.core.kind
    }

    /// Replies to the caller of the current event (OTP's `{reply, From,
    /// Reply}` action). Returns false if there is none (not a call, already
    /// answered or taken) or the caller has gone.
    pub fn reply(&mut self, reply: M::Reply) -> bool {
        match self.core.caller.take() {
            Some(caller) => caller.reply(Ok(reply)),
            None => false,
        }
    }

    /// Takes the current caller's reply handle to answer later (OTP's
    /// deferred reply): `caller.reply(Ok(value))`. A call that is neither
    /// answered, taken nor postponed is answered [`AskError::Dropped`] when
    /// its event is done.
    pub fn take_caller(&mut self) -> Option<MachineReplyTo<M>> {
        self.core.caller.take()
    }

    /// Delivers `event` (as [`EventKind::StateTimeout`]) after `delay`
    /// unless the state changes first (OTP's `state_timeout`). Replaces a
    /// pending state timeout. Set in a transition that changes the state,
    /// it belongs to the new state.
    pub fn state_timeout(
        &mut self,
        delay: Duration,
        event: M::Event,
    ) -> Result<(), StateMachineError> {
        self.core.timeouts.cancel_state(self.ctx);
        let token = self.core.timeouts.token();
        let timer = self.arm(TimerKind::State, token, delay, event)?;
        self.core.timeouts.state = Some((token, timer));
        self.core.state_timeout_set = true;
        Ok(())
    }

    /// Cancels the pending state timeout; false if there was none.
    pub fn cancel_state_timeout(&mut self) -> bool {
        self.core.timeouts.cancel_state(self.ctx)
    }

    /// Delivers `event` (as [`EventKind::Timeout`]`(name)`) after `delay`,
    /// whatever the state then (OTP's `{timeout, Name}`). Replaces a
    /// pending timeout of the same name.
    pub fn timeout(
        &mut self,
        name: &'static str,
        delay: Duration,
        event: M::Event,
    ) -> Result<(), StateMachineError> {
        let replaced = self.core.timeouts.cancel_named(self.ctx, name);
        if !replaced && self.core.timeouts.named.len() >= MAX_NAMED_TIMEOUTS {
            return Err(StateMachineError::TooManyTimeouts { limit: MAX_NAMED_TIMEOUTS });
        }
        let token = self.core.timeouts.token();
        let timer = self.arm(TimerKind::Named(name), token, delay, event)?;
        self.core.timeouts.named.push((name, token, timer));
        Ok(())
    }

    /// Cancels the named timeout; false if none was pending.
    pub fn cancel_timeout(&mut self, name: &str) -> bool {
        self.core.timeouts.cancel_named(self.ctx, name)
    }

    /// Postpones `event` (normally the one being handled) until the state
    /// changes; then it is handled again, with its caller (OTP's
    /// `postpone`). Return [`Transition::Keep`] or [`Transition::Next`]
    /// with it. When [`MAX_POSTPONED`] are already held, the event is
    /// dropped and a waiting caller gets the error too.
    pub fn postpone(&mut self, event: M::Event) -> Result<(), StateMachineError> {
        let caller = self.core.caller.take();
        if self.core.postponed.len() >= MAX_POSTPONED {
            let error = StateMachineError::PostponeFull { limit: MAX_POSTPONED };
            if let Some(caller) = caller {
                caller.reply(Err(error.clone()));
            }
            return Err(error);
        }
        self.core.postponed.push_back(Queued { kind: self.core.kind, event, caller });
        Ok(())
    }

    /// Inserts `event` (as [`EventKind::Internal`]) to run right after the
    /// current one, before any message (OTP's `next_event`). Several run in
    /// the order they were inserted.
    pub fn next_event(&mut self, event: M::Event) -> Result<(), StateMachineError> {
        if self.core.inserted.len() + self.core.pending.len() >= MAX_NEXT_EVENTS {
            return Err(StateMachineError::NextEventsFull { limit: MAX_NEXT_EVENTS });
        }
        self.core.inserted.push(Queued { kind: EventKind::Internal, event, caller: None });
        Ok(())
    }

    fn arm(
        &mut self,
        kind: TimerKind,
        token: u64,
        delay: Duration,
        event: M::Event,
    ) -> Result<TimerRef, StateMachineError> {
        let msg = MachineMsg::Timer(TimerEvent { token, kind, event });
        self.ctx.signal_after(msg, delay).map_err(|error| match error {
            RuntimeError::Timer(error) => StateMachineError::Timer(error),
            // The shard's timers fail with timer errors only.
            other => unreachable!("a timer failed with {other}"),
        })
    }
}

/// A [`StateMachine`] as an [`Actor`]: spawn it like any actor and wrap the
/// [`ActorRef`] in a [`MachineRef`].
pub struct Machine<M: StateMachine> {
    machine: M,
    state: M::State,
    core: Core<M>,
    transitions: u64,
    rejected: u64,
    stale_timeouts: u64,
    /// Set by [`Transition::Stop`]: no further internal event runs.
    stopped: bool,
}

impl<M: StateMachine> Machine<M> {
    /// The machine with its data and initial state.
    pub fn new(machine: M, initial: M::State) -> Self {
        Machine {
            machine,
            state: initial,
            core: Core {
                kind: EventKind::Start,
                caller: None,
                state_timeout_set: false,
                timeouts: Timeouts { next_token: 0, state: None, named: Vec::new() },
                postponed: VecDeque::new(),
                inserted: Vec::new(),
                pending: VecDeque::new(),
            },
            transitions: 0,
            rejected: 0,
            stale_timeouts: 0,
            stopped: false,
        }
    }

    /// Spawns the machine on the runtime (round robin over its shards),
    /// from the [`Runtime`](crate::Runtime) or any of its
    /// [`RuntimeHandle`]s.
    pub fn start(
        rt: &impl AsRef<RuntimeHandle>,
        machine: M,
        initial: M::State,
    ) -> Result<MachineRef<M>, RuntimeError> {
        rt.as_ref().spawn(Machine::new(machine, initial)).map(MachineRef::from)
    }

    /// Spawns the machine from inside an actor, on that actor's shard,
    /// linked to it when `options.link` is set.
    pub fn start_from<A: Actor>(
        ctx: &mut Context<'_, A>,
        machine: M,
        initial: M::State,
        options: SpawnOptions,
    ) -> Result<MachineRef<M>, RuntimeError> {
        ctx.spawn_with(Machine::new(machine, initial), options).map(MachineRef::from)
    }

    fn status(&self) -> Status<M::State> {
        Status {
            state: self.state.clone(),
            transitions: self.transitions,
            rejected: self.rejected,
            stale_timeouts: self.stale_timeouts,
            postponed: self.core.postponed.len(),
        }
    }

    /// Handles one event: the transition function, then the transition.
    fn step(&mut self, ctx: &mut Context<'_, Self>, queued: Queued<M>) -> Result<(), ActorError> {
        let Queued { kind, event, caller } = queued;
        self.core.kind = kind;
        self.core.caller = caller;
        self.core.state_timeout_set = false;
        let transition = {
            let mut mctx = MachineContext { ctx: &mut *ctx, core: &mut self.core };
            self.machine.handle_event(&mut mctx, &self.state, event)?
        };
        match transition {
            Transition::Keep => {}
            Transition::Next(next) if next == self.state => {}
            Transition::Next(next) => self.change(ctx, next)?,
            Transition::Undefined(event) => self.reject(ctx, kind, &event),
            Transition::Stop(reason) => {
                self.stopped = true;
                ctx.stop(reason);
            }
        }
        // An unanswered call that was neither taken nor postponed: its
        // caller learns at once (Dropped) rather than at its timeout.
        self.core.caller = None;
        for queued in self.core.inserted.drain(..).rev() {
            self.core.pending.push_front(queued);
        }
        Ok(())
    }

    /// A state change: exit hook, state timeout cancelled (unless this
    /// event set one for the new state), entry hook, postponed events
    /// retried.
    fn change(&mut self, ctx: &mut Context<'_, Self>, next: M::State) -> Result<(), ActorError> {
        let old = std::mem::replace(&mut self.state, next);
        let mut mctx = MachineContext { ctx, core: &mut self.core };
        self.machine.on_exit(&mut mctx, &old)?;
        if !mctx.core.state_timeout_set {
            mctx.core.timeouts.cancel_state(mctx.ctx);
        }
        self.machine.on_enter(&mut mctx, &self.state)?;
        self.transitions += 1;
        tracing::trace!(machine = self.machine.name(), from = ?old, to = ?self.state, "state change");
        while let Some(queued) = self.core.postponed.pop_back() {
            self.core.pending.push_front(queued);
        }
        Ok(())
    }

    /// An undefined transition: the caller gets the error, anything else
    /// is logged and counted. The state does not change.
    fn reject(&mut self, ctx: &mut Context<'_, Self>, kind: EventKind, event: &M::Event) {
        self.rejected += 1;
        let error = StateMachineError::UndefinedTransition {
            state: format!("{:?}", self.state),
            event: format!("{event:?}"),
        };
        match self.core.caller.take() {
            Some(caller) => {
                caller.reply(Err(error));
            }
            None => tracing::warn!(
                machine = self.machine.name(),
                id = %ctx.id(),
                ?kind,
                %error,
                "event rejected"
            ),
        }
    }

    /// Handles `first`, then every event it inserted or un-postponed.
    fn run(&mut self, ctx: &mut Context<'_, Self>, first: Queued<M>) -> Result<(), ActorError> {
        self.step(ctx, first)?;
        while !self.stopped {
            let Some(queued) = self.core.pending.pop_front() else { break };
            ctx.consume(1); // each event costs a reduction, as a message does
            self.step(ctx, queued)?;
        }
        Ok(())
    }

    fn info(
        &mut self,
        ctx: &mut Context<'_, Self>,
        event: Option<M::Event>,
    ) -> Result<(), ActorError> {
        match event {
            Some(event) => self.run(ctx, Queued { kind: EventKind::Info, event, caller: None }),
            None => Ok(()),
        }
    }
}

impl<M: StateMachine> Actor for Machine<M> {
    type Msg = MachineMsg<M>;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.machine.init(ctx)?;
        self.core.kind = EventKind::Start;
        let mut mctx = MachineContext { ctx: &mut *ctx, core: &mut self.core };
        self.machine.on_enter(&mut mctx, &self.state)?;
        for queued in self.core.inserted.drain(..).rev() {
            self.core.pending.push_front(queued);
        }
        while let Some(queued) = self.core.pending.pop_front() {
            self.step(ctx, queued)?;
        }
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Self>,
        msg: MachineMsg<M>,
    ) -> Result<(), ActorError> {
        let queued = match msg {
            MachineMsg::Call(event, caller) => {
                Queued { kind: EventKind::Call, event, caller: Some(caller) }
            }
            MachineMsg::Cast(event) => Queued { kind: EventKind::Cast, event, caller: None },
            MachineMsg::Info(event) => Queued { kind: EventKind::Info, event, caller: None },
            MachineMsg::Status(reply) => {
                reply.reply(self.status());
                return Ok(());
            }
            MachineMsg::Timer(TimerEvent { token, kind, event }) => {
                match self.core.timeouts.claim(kind, token) {
                    Some(kind) => Queued { kind, event, caller: None },
                    None => {
                        self.stale_timeouts += 1;
                        tracing::trace!(
                            machine = self.machine.name(),
                            ?kind,
                            "stale timeout ignored"
                        );
                        return Ok(());
                    }
                }
            }
        };
        self.run(ctx, queued)
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let event = self.machine.exit_event(from, reason);
        self.info(ctx, event)
    }

    fn handle_down(&mut self, ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let event = self.machine.down_event(down);
        self.info(ctx, event)
    }

    fn stopping(&mut self, ctx: &mut Context<'_, Self>, reason: &ExitReason) {
        self.core.timeouts.cancel_state(ctx);
        for (_, _, timer) in self.core.timeouts.named.drain(..) {
            ctx.cancel_timer(&timer);
        }
        self.machine.terminate(ctx, &self.state, reason);
    }

    fn name(&self) -> &'static str {
        self.machine.name()
    }
}

/// A typed handle on a running [`StateMachine`]. Cheap to clone.
pub struct MachineRef<M: StateMachine> {
    actor: ActorRef<MachineMsg<M>>,
}

impl<M: StateMachine> MachineRef<M> {
    /// Sends an event without waiting for a reply (`gen_statem:cast`); it
    /// is handed back if the mailbox is full or the machine is dead.
    pub fn cast(&self, event: M::Event) -> Result<(), SendError<M::Event>> {
        self.actor.try_send(MachineMsg::Cast(event)).map_err(|e| match e {
            SendError::Full(msg) => SendError::Full(event_of(msg)),
            SendError::NoProc(msg) => SendError::NoProc(event_of(msg)),
        })
    }

    /// Sends an event from a thread outside the runtime and blocks for the
    /// reply (`gen_statem:call`). A rejected event answers
    /// [`StateMachineError::UndefinedTransition`]; no answer answers
    /// [`StateMachineError::Ask`] (as for
    /// [`ServerRef::call`](super::ServerRef::call)).
    ///
    /// # Panics
    ///
    /// On a shard thread; actors use [`ask`](Self::ask).
    pub fn call(&self, event: M::Event, timeout: Duration) -> Result<M::Reply, StateMachineError> {
        crate::runtime::call_blocking(&self.actor, |from| MachineMsg::Call(event, from), timeout)?
    }

    /// Sends an event from an actor; the answer comes back as the message
    /// `on_reply` makes of it ([`StateMachineError::flatten`] turns it into
    /// one `Result`). `on_reply` may be a closure, as for [`Context::ask`].
    pub fn ask<A: Actor>(
        &self,
        ctx: &mut Context<'_, A>,
        event: M::Event,
        timeout: Duration,
        on_reply: impl FnOnce(MachineAnswer<M>) -> A::Msg + Send + 'static,
    ) -> Result<(), AskError> {
        ctx.ask(&self.actor, |from| MachineMsg::Call(event, from), timeout, on_reply)
    }

    /// The current state and counters (blocking, from outside the runtime;
    /// actors ask with [`MachineMsg::Status`]).
    pub fn status(&self, timeout: Duration) -> Result<Status<M::State>, StateMachineError> {
        Ok(crate::runtime::call_blocking(&self.actor, MachineMsg::Status, timeout)?)
    }

    /// The current state (blocking, as [`status`](Self::status)).
    pub fn state(&self, timeout: Duration) -> Result<M::State, StateMachineError> {
        self.status(timeout).map(|status| status.state)
    }

    /// The underlying actor reference.
    pub fn actor_ref(&self) -> &ActorRef<MachineMsg<M>> {
        &self.actor
    }

    /// The machine's untyped handle, for links, monitors and exits.
    pub fn pid(&self) -> Pid {
        self.actor.pid()
    }

    /// The machine's id.
    pub fn id(&self) -> ActorId {
        self.actor.id()
    }

    /// Whether the machine is still alive (a snapshot).
    pub fn is_alive(&self) -> bool {
        self.actor.is_alive()
    }
}

fn event_of<M: StateMachine>(msg: MachineMsg<M>) -> M::Event {
    match msg {
        MachineMsg::Cast(event) => event,
        _ => unreachable!("a cast went in"),
    }
}

impl<M: StateMachine> From<ActorRef<MachineMsg<M>>> for MachineRef<M> {
    fn from(actor: ActorRef<MachineMsg<M>>) -> Self {
        MachineRef { actor }
    }
}

impl<M: StateMachine> Clone for MachineRef<M> {
    fn clone(&self) -> Self {
        MachineRef { actor: self.actor.clone() }
    }
}

impl<M: StateMachine> fmt::Debug for MachineRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineRef({:?})", self.actor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;

    #[derive(Debug, Clone, PartialEq)]
    enum S {
        A,
        B,
    }

    #[derive(Debug)]
    enum E {
        Go,
        Fire,
    }

    /// Sets a long state timeout in A; `Go` moves to B.
    struct Timed;

    impl StateMachine for Timed {
        type State = S;
        type Event = E;
        type Reply = ();

        fn handle_event(
            &mut self,
            ctx: &mut MachineContext<'_, '_, Self>,
            state: &S,
            event: E,
        ) -> Result<Transition<Self>, ActorError> {
            Ok(match (state, event) {
                (S::A, E::Go) => Transition::Next(S::B),
                (S::A, E::Fire) => {
                    ctx.state_timeout(Duration::from_secs(3600), E::Fire)?;
                    Transition::Keep
                }
                (_, event) => Transition::Undefined(event),
            })
        }
    }

    /// A timeout whose token is not the pending one (it was cancelled,
    /// replaced, or cut short by a state change while already on its way)
    /// is ignored and counted, and never reaches the transition function.
    #[test]
    fn a_stale_timeout_is_ignored_and_counted() {
        let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
        let machine = Machine::start(&rt, Timed, S::A).unwrap();
        let t = Duration::from_secs(10);
        // Arms a state timeout with token 1.
        machine.actor_ref().try_send(MachineMsg::Cast(E::Fire)).unwrap();
        // A stale state timeout (token 0) and a stale named one.
        let stale = TimerEvent { token: 0, kind: TimerKind::State, event: E::Go };
        machine.actor_ref().try_send(MachineMsg::Timer(stale)).unwrap();
        let named = TimerEvent { token: 1, kind: TimerKind::Named("x"), event: E::Go };
        machine.actor_ref().try_send(MachineMsg::Timer(named)).unwrap();
        let status = machine.status(t).unwrap();
        assert_eq!(status.state, S::A, "a stale timeout's event must not run");
        assert_eq!(status.stale_timeouts, 2);
        assert_eq!(status.rejected, 0);
        // The pending one (token 1) is live: delivered as a state timeout.
        // E::Go in A moves to B, which proves it ran.
        let live = TimerEvent { token: 1, kind: TimerKind::State, event: E::Go };
        machine.actor_ref().try_send(MachineMsg::Timer(live)).unwrap();
        assert_eq!(machine.state(t).unwrap(), S::B);
        // ...and only once: the same token again is stale.
        let again = TimerEvent { token: 1, kind: TimerKind::State, event: E::Go };
        machine.actor_ref().try_send(MachineMsg::Timer(again)).unwrap();
        assert_eq!(machine.status(t).unwrap().stale_timeouts, 3);
        rt.shutdown();
    }
}
