//! Actors: user state plus a typed message handler, run by the shards.
//!
//! An actor is a value implementing [`Actor`]. Spawning it returns an
//! [`ActorRef`] through which anyone (another actor, or a thread outside the
//! runtime) sends it messages. The runtime calls [`Actor::handle`] once per
//! message, on one shard at a time, never concurrently, so the actor's state
//! needs no locks.
//!
//! Failure follows Erlang/OTP: a handler that returns an error or panics
//! crashes its actor only; its links receive an exit signal and its monitors
//! a [`Down`], after its registered name is released. See `docs/runtime.md`
//! for the whole model.

mod addr;
mod ask;
mod cell;
mod context;
mod dead;

use std::fmt;
use std::sync::Arc;

pub use addr::{ActorRef, Pid};
pub(crate) use addr::{Header, RunPtr, Shared, Signal, SysSignal};
pub(crate) use ask::{Draining, Expire, ThreadSink};
pub use ask::{ReplyFuture, ReplyTo};
pub(crate) use cell::{ActorCell, Runnable, TurnOutcome, catch};
pub use context::{Context, TimerRef};

/// A process's behaviour: its state and how it handles messages.
///
/// Every hook receives the actor's [`Context`], through which it sends,
/// spawns, links, monitors, asks and sets timers. Returning `Err` from
/// [`started`](Actor::started) or [`handle`](Actor::handle) crashes the
/// actor with that error as its exit reason; so does a panic.
///
/// A minimal actor: a counter that answers a query through a [`ReplyTo`].
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
///
/// struct Counter(u64);
///
/// enum Msg {
///     Add(u64),
///     Get(ReplyTo<u64>),
/// }
///
/// impl Actor for Counter {
///     type Msg = Msg;
///     fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
///         match msg {
///             Msg::Add(n) => self.0 += n,
///             Msg::Get(reply) => {
///                 reply.reply(self.0);
///             }
///         }
///         Ok(())
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
/// let counter = rt.spawn(Counter(0)).unwrap();
/// counter.try_send(Msg::Add(40)).unwrap();
/// counter.try_send(Msg::Add(2)).unwrap();
/// assert_eq!(rt.call(&counter, Msg::Get, Duration::from_secs(5)), Ok(42));
/// rt.shutdown();
/// ```
pub trait Actor: Sized + Send + 'static {
    /// The messages this actor handles.
    type Msg: Send + 'static;

    /// Runs once, on the actor's shard, before its first message.
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one message. Costs one reduction; call
    /// [`Context::consume`] for work that costs more.
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Self::Msg) -> Result<(), ActorError>;

    /// Receives an exit signal from a linked actor (or one sent with
    /// [`Context::exit`]) while the actor traps exits
    /// ([`Context::trap_exit`]). Without trapping, the runtime applies OTP's
    /// rules instead and this is never called.
    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = (ctx, from, reason);
        Ok(())
    }

    /// Receives the notice that a monitored actor went down.
    fn handle_down(&mut self, ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let _ = (ctx, down);
        Ok(())
    }

    /// Runs once when the actor stops, for whatever reason, before its links
    /// and monitors are told. A panic here is caught and logged.
    fn stopping(&mut self, ctx: &mut Context<'_, Self>, reason: &ExitReason) {
        let _ = (ctx, reason);
    }

    /// The name the runtime uses for this actor in logs, spans and the stall
    /// detector. Defaults to the type's name.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// Where an actor lives: node, runtime, shard, slot and the slot's generation.
///
/// Two incarnations that reuse a slot differ in generation, so an id names
/// one actor for all time; two runtimes of one process differ in `runtime`
/// (each [`Runtime`](crate::Runtime) takes a number of its own when it is
/// built), so actors of two runtimes never share an id, and
/// [`ActorRef`]s and [`Pid`]s of different runtimes never compare equal.
/// Displayed as `<node.runtime.shard.slot.generation>`, e.g. `<0.1.0.42.0>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId {
    /// The node (process) in the cluster; 0 for a single node.
    pub node: u16,
    /// The runtime within the process ([`Runtime::id`](crate::Runtime::id)):
    /// numbered from 1 in the order runtimes are built, never reused.
    pub runtime: u32,
    /// The shard whose slot table holds the actor.
    pub shard: u16,
    /// The slot in that table.
    pub slot: u32,
    /// The slot's generation when the actor was spawned.
    pub generation: u32,
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ActorId { node, runtime, shard, slot, generation } = self;
        write!(f, "<{node}.{runtime}.{shard}.{slot}.{generation}>")
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an actor stopped: OTP's exit reasons.
#[derive(Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// A normal stop. Does not kill linked actors.
    Normal,
    /// An orderly stop requested by a supervisor or the runtime's shutdown.
    Shutdown,
    /// The untrappable kill, when sent directly with [`Context::exit`].
    Kill,
    /// How an actor that was killed dies; what its links receive.
    Killed,
    /// The actor did not exist (the reason a monitor of a dead actor gets).
    NoProc,
    /// A crash: the handler's error or the panic message.
    Error(Arc<str>),
}

impl ExitReason {
    /// A crash reason from any displayable error.
    pub fn error(message: impl fmt::Display) -> Self {
        ExitReason::Error(message.to_string().into())
    }

    /// Whether this reason counts as normal for links: `Normal` only.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

impl fmt::Debug for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A handler's failure: crashes the actor with the given reason.
///
/// Any `std::error::Error` converts into it with `?`; [`ActorError::exit`]
/// stops the actor with a chosen reason (`ExitReason::Normal` for a clean
/// stop).
///
/// # Into other error types
///
/// `ActorError` is not itself a `std::error::Error`, for the reason
/// `anyhow::Error` is not: that impl would collide with the `?` conversion
/// from every error above (Rust's blanket `From<T> for T`). It goes the
/// other way instead:
///
/// - `?` in a function returning `Box<dyn Error>` (or
///   `Box<dyn Error + Send + Sync>`) converts it;
/// - [`into_error`](Self::into_error) (or `ExitError::from`) gives an
///   [`ExitError`](crate::error::ExitError), which is a
///   `std::error::Error + Send + Sync + 'static` for `anyhow`, `thiserror`
///   sources and the like: `.map_err(ActorError::into_error)?`.
///
/// ```
/// use std::error::Error;
/// use zbmd_rt::{ActorError, ExitReason};
///
/// fn check(n: u32) -> Result<u32, ActorError> {
///     if n == 0 { Err(ActorError::msg("zero")) } else { Ok(n) }
/// }
///
/// fn caller() -> Result<u32, Box<dyn Error + Send + Sync>> {
///     Ok(check(0)?)
/// }
///
/// assert_eq!(caller().unwrap_err().to_string(), "zero");
/// let error = check(0).map_err(ActorError::into_error).unwrap_err();
/// assert_eq!(error.reason(), &ExitReason::error("zero"));
/// ```
pub struct ActorError(pub(crate) ExitReason);

impl ActorError {
    /// Stops the actor with `reason`.
    pub fn exit(reason: ExitReason) -> Self {
        ActorError(reason)
    }

    /// Crashes the actor with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        ActorError(ExitReason::error(message))
    }

    /// The exit reason this error stops the actor with.
    pub fn reason(&self) -> &ExitReason {
        &self.0
    }

    /// This failure as a `std::error::Error`, for code outside a handler
    /// (`anyhow`, an error enum's source).
    pub fn into_error(self) -> crate::error::ExitError {
        crate::error::ExitError::new(self.0)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActorError {
    fn from(error: E) -> Self {
        ActorError(ExitReason::error(error))
    }
}

impl fmt::Debug for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorError({})", self.0)
    }
}

/// As [`ExitError`](crate::error::ExitError) displays it: a crash's own
/// message, or the exit reason.
impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::error::display_exit(&self.0, f)
    }
}

impl From<ActorError> for Box<dyn std::error::Error + Send + Sync + 'static> {
    fn from(error: ActorError) -> Self {
        Box::new(error.into_error())
    }
}

impl From<ActorError> for Box<dyn std::error::Error + 'static> {
    fn from(error: ActorError) -> Self {
        Box::new(error.into_error())
    }
}

/// Identifies one monitor: the answer of [`Context::monitor`], repeated in
/// the [`Down`] it delivers. Monitors stack: each has its own ref.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MonitorRef(pub(crate) u64);

/// The notice that a monitored actor went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// Which monitor fired.
    pub monitor: MonitorRef,
    /// The actor that went down.
    pub actor: ActorId,
    /// Why; `NoProc` when it was already dead when the monitor was set.
    pub reason: ExitReason,
}
