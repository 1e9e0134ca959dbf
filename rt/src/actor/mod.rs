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

use std::fmt;
use std::sync::Arc;

pub use addr::{ActorRef, Pid};
pub(crate) use addr::{Header, RunPtr, Shared, Signal, SysSignal};
pub use ask::ReplyTo;
pub(crate) use ask::{Expire, ThreadSink};
pub(crate) use cell::{ActorCell, Runnable, TurnOutcome, catch};
pub use context::{Context, TimerRef};

/// A process's behaviour: its state and how it handles messages.
///
/// Every hook receives the actor's [`Context`], through which it sends,
/// spawns, links, monitors, asks and sets timers. Returning `Err` from
/// [`started`](Actor::started) or [`handle`](Actor::handle) crashes the
/// actor with that error as its exit reason; so does a panic.
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

/// Where an actor lives: node, shard, slot and the slot's generation.
///
/// Two incarnations that reuse a slot differ in generation, so an id names
/// one actor for all time. Displayed as `<node.shard.slot.generation>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId {
    /// The node (process) in the cluster; 0 for a single node.
    pub node: u16,
    /// The shard whose slot table holds the actor.
    pub shard: u16,
    /// The slot in that table.
    pub slot: u32,
    /// The slot's generation when the actor was spawned.
    pub generation: u32,
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}.{}>", self.node, self.shard, self.slot, self.generation)
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
