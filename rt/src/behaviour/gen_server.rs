//! OTP's `gen_server` behaviour: a server process with synchronous calls,
//! asynchronous casts and out-of-band messages, on a zbmd actor.
//!
//! Implement [`GenServer`] for the server's state, wrap it in a [`Server`]
//! (which implements [`Actor`]) and talk to it through a [`ServerRef`]:
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::behaviour::{GenServer, Server, ServerContext};
//! use zbmd_rt::{ActorError, ReplyTo, Runtime};
//!
//! struct Counter(u64);
//!
//! impl GenServer for Counter {
//!     type Call = ();          // "what is the count?"
//!     type Reply = u64;
//!     type Cast = u64;         // "add this"
//!     type Info = std::convert::Infallible;
//!
//!     fn handle_call(
//!         &mut self,
//!         _ctx: &mut ServerContext<'_, Self>,
//!         _request: (),
//!         from: ReplyTo<u64>,
//!     ) -> Result<(), ActorError> {
//!         from.reply(self.0); // {reply, Count, State}
//!         Ok(())
//!     }
//!
//!     fn handle_cast(&mut self, _ctx: &mut ServerContext<'_, Self>, n: u64) -> Result<(), ActorError> {
//!         self.0 += n; // {noreply, State}
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(2).pin(false).build().unwrap();
//! let counter = Server::start(&rt, Counter(0)).unwrap();
//! counter.cast(2).unwrap();
//! counter.cast(3).unwrap();
//! assert_eq!(counter.call((), Duration::from_secs(5)), Ok(5));
//! rt.shutdown();
//! ```
//!
//! # Replies
//!
//! `handle_call` receives the caller's [`ReplyTo`] (OTP's `From`).
//! Replying at once is OTP's `{reply, R, State}`; keeping the `ReplyTo` in
//! the server's state and replying later (from another message's handler)
//! is `{noreply, State}` followed by `gen_server:reply(From, R)`. A
//! `ReplyTo` dropped unanswered (the handler forgot it, returned an error,
//! panicked, or the server died holding it) tells the caller
//! [`AskError::Dropped`] at once, never a timeout.

use std::fmt;
use std::time::Duration;

use crate::actor::{Actor, ActorError, ActorId, ActorRef, Context, Down, ExitReason, Pid, ReplyTo};
use crate::error::{AskError, RuntimeError, SendError};
use crate::runtime::{RuntimeHandle, SpawnOptions};

/// The context a [`GenServer`]'s callbacks get: the wrapping actor's
/// [`Context`], with everything an actor can do (send, spawn, link,
/// monitor, timers, asks, `stop`).
pub type ServerContext<'a, G> = Context<'a, Server<G>>;

/// OTP's `gen_server` callbacks.
///
/// Every callback runs on the server's actor, one message at a time. A
/// callback that returns `Err` or panics crashes the server exactly as a
/// plain actor's handler does: links and monitors (and so supervisors) see
/// the reason, and callers waiting on it get [`AskError::Dropped`].
/// [`Context::stop`] stops it (OTP's `{stop, Reason, State}`).
pub trait GenServer: Sized + Send + 'static {
    /// The requests [`handle_call`](GenServer::handle_call) answers.
    type Call: Send + 'static;
    /// What a call answers.
    type Reply: Send + 'static;
    /// The messages [`handle_cast`](GenServer::handle_cast) takes
    /// (`Infallible` for none).
    type Cast: Send + 'static;
    /// Other messages: timers set with `ctx.send_after`, replies of asks the
    /// server makes, anything sent as [`ServerMsg::Info`] (`Infallible` for
    /// none).
    type Info: Send + 'static;

    /// OTP's `init/1`: runs in the actor's `started` hook, before the first
    /// message. An error crashes the server before it handles anything.
    fn init(&mut self, ctx: &mut ServerContext<'_, Self>) -> Result<(), ActorError> {
        let _ = ctx;
        Ok(())
    }

    /// OTP's `handle_call/3`: answer with `from.reply(..)` now, or keep
    /// `from` and reply later (a deferred reply). Dropping it unanswered
    /// tells the caller [`AskError::Dropped`].
    fn handle_call(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
    ) -> Result<(), ActorError>;

    /// OTP's `handle_cast/2`. The default logs the cast and ignores it.
    fn handle_cast(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        msg: Self::Cast,
    ) -> Result<(), ActorError> {
        let _ = msg;
        tracing::warn!(server = self.name(), id = %ctx.id(), "unhandled cast ignored");
        Ok(())
    }

    /// OTP's `handle_info/2`. The default logs the message and ignores it,
    /// as OTP's default does.
    fn handle_info(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        msg: Self::Info,
    ) -> Result<(), ActorError> {
        let _ = msg;
        tracing::warn!(server = self.name(), id = %ctx.id(), "unexpected info message ignored");
        Ok(())
    }

    /// An exit signal from a linked actor while the server traps exits
    /// (`ctx.trap_exit(true)`, usually in `init`); OTP delivers it to
    /// `handle_info` as `{'EXIT', From, Reason}`. See [`Actor::handle_exit`].
    fn handle_exit(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = (ctx, from, reason);
        Ok(())
    }

    /// A monitored actor went down (OTP: `{'DOWN', Ref, process, Pid,
    /// Reason}` in `handle_info`). See [`Actor::handle_down`].
    fn handle_down(
        &mut self,
        ctx: &mut ServerContext<'_, Self>,
        down: Down,
    ) -> Result<(), ActorError> {
        let _ = (ctx, down);
        Ok(())
    }

    /// OTP's `terminate/2`: runs once when the server stops, for whatever
    /// reason (normal, shutdown, killed, a crash), with that reason. Calls
    /// still queued are answered [`AskError::Unhandled`] after it returns.
    fn terminate(&mut self, ctx: &mut ServerContext<'_, Self>, reason: &ExitReason) {
        let _ = (ctx, reason);
    }

    /// The name used in logs and by the stall detector.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// What a [`Server`] receives: OTP's three kinds of message.
pub enum ServerMsg<G: GenServer> {
    /// A request and where its reply goes (`gen_server:call`).
    Call(G::Call, ReplyTo<G::Reply>),
    /// A one-way request (`gen_server:cast`).
    Cast(G::Cast),
    /// Any other message (`Pid ! Msg`, timers, ask replies).
    Info(G::Info),
}

impl<G: GenServer> fmt::Debug for ServerMsg<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerMsg::Call(..) => "Call(..)",
            ServerMsg::Cast(_) => "Cast(..)",
            ServerMsg::Info(_) => "Info(..)",
        })
    }
}

/// A [`GenServer`] as an [`Actor`]: spawn it like any actor (`rt.spawn`,
/// `ctx.spawn`, a supervisor's start function) and wrap the [`ActorRef`]
/// it returns in a [`ServerRef`].
pub struct Server<G>(G);

impl<G: GenServer> Server<G> {
    /// Wraps the server's initial state.
    pub fn new(server: G) -> Self {
        Server(server)
    }

    /// Spawns `server` on the runtime (round robin over its shards), from
    /// the [`Runtime`](crate::Runtime) or any of its [`RuntimeHandle`]s.
    pub fn start(rt: &impl AsRef<RuntimeHandle>, server: G) -> Result<ServerRef<G>, RuntimeError> {
        rt.as_ref().spawn(Server(server)).map(ServerRef::from)
    }

    /// Spawns `server` from inside an actor, on that actor's shard,
    /// linked to it when `options.link` is set.
    pub fn start_from<A: Actor>(
        ctx: &mut Context<'_, A>,
        server: G,
        options: SpawnOptions,
    ) -> Result<ServerRef<G>, RuntimeError> {
        ctx.spawn_with(Server(server), options).map(ServerRef::from)
    }
}

impl<G: GenServer> Actor for Server<G> {
    type Msg = ServerMsg<G>;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.0.init(ctx)
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: ServerMsg<G>) -> Result<(), ActorError> {
        match msg {
            ServerMsg::Call(request, from) => self.0.handle_call(ctx, request, from),
            ServerMsg::Cast(msg) => self.0.handle_cast(ctx, msg),
            ServerMsg::Info(msg) => self.0.handle_info(ctx, msg),
        }
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        self.0.handle_exit(ctx, from, reason)
    }

    fn handle_down(&mut self, ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        self.0.handle_down(ctx, down)
    }

    fn stopping(&mut self, ctx: &mut Context<'_, Self>, reason: &ExitReason) {
        self.0.terminate(ctx, reason);
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// A typed handle on a running [`GenServer`]: cast, call (blocking, from a
/// thread outside the runtime) and ask (from an actor). Cheap to clone.
///
/// It names one incarnation, like the [`ActorRef`] it wraps. To get one
/// from a registered name: `rt.whereis(name)?.typed::<ServerMsg<G>>()`,
/// then `ServerRef::from`.
pub struct ServerRef<G: GenServer> {
    actor: ActorRef<ServerMsg<G>>,
}

impl<G: GenServer> ServerRef<G> {
    /// Sends a cast (`gen_server:cast`); the message is handed back if the
    /// server's mailbox is full or the server is dead.
    pub fn cast(&self, msg: G::Cast) -> Result<(), SendError<G::Cast>> {
        self.actor.try_send(ServerMsg::Cast(msg)).map_err(|e| unwrap_send(e, cast_of))
    }

    /// Sends an info message (`Pid ! Msg`); handed back like a cast.
    pub fn info(&self, msg: G::Info) -> Result<(), SendError<G::Info>> {
        self.actor.try_send(ServerMsg::Info(msg)).map_err(|e| unwrap_send(e, info_of))
    }

    /// Calls the server from a thread outside the runtime and blocks until
    /// it replies (`gen_server:call(Server, Request, Timeout)`).
    ///
    /// Errors: [`AskError::Timeout`] when no reply came in time (a late
    /// reply is dropped and counted), [`AskError::Dropped`] when the server
    /// crashed or dropped the request unanswered, [`AskError::Unhandled`]
    /// when it stopped with the request still queued, [`AskError::NoProc`] when
    /// it is dead, [`AskError::Full`] when its mailbox is full,
    /// [`AskError::ZeroTimeout`] for a zero timeout.
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall every actor of the
    /// shard: actors use [`ask`](Self::ask).
    pub fn call(&self, request: G::Call, timeout: Duration) -> Result<G::Reply, AskError> {
        crate::runtime::call_blocking(&self.actor, |from| ServerMsg::Call(request, from), timeout)
    }

    /// Calls the server from an actor without blocking its shard: the
    /// reply (or the error, as for [`call`](Self::call)) comes back later
    /// as the message `on_reply` makes of it, like [`Context::ask`]
    /// (`on_reply` may be a closure that carries a request id).
    pub fn ask<A: Actor>(
        &self,
        ctx: &mut Context<'_, A>,
        request: G::Call,
        timeout: Duration,
        on_reply: impl FnOnce(Result<G::Reply, AskError>) -> A::Msg + Send + 'static,
    ) -> Result<(), AskError> {
        ctx.ask(&self.actor, |from| ServerMsg::Call(request, from), timeout, on_reply)
    }

    /// The underlying actor reference.
    pub fn actor_ref(&self) -> &ActorRef<ServerMsg<G>> {
        &self.actor
    }

    /// The server's untyped handle, for links, monitors and exits.
    pub fn pid(&self) -> Pid {
        self.actor.pid()
    }

    /// The server's id.
    pub fn id(&self) -> ActorId {
        self.actor.id()
    }

    /// Whether the server is still alive (a snapshot).
    pub fn is_alive(&self) -> bool {
        self.actor.is_alive()
    }
}

impl<G: GenServer> From<ActorRef<ServerMsg<G>>> for ServerRef<G> {
    fn from(actor: ActorRef<ServerMsg<G>>) -> Self {
        ServerRef { actor }
    }
}

impl<G: GenServer> Clone for ServerRef<G> {
    fn clone(&self) -> Self {
        ServerRef { actor: self.actor.clone() }
    }
}

impl<G: GenServer> PartialEq for ServerRef<G> {
    fn eq(&self, other: &Self) -> bool {
        self.actor == other.actor
    }
}

impl<G: GenServer> Eq for ServerRef<G> {}

impl<G: GenServer> fmt::Debug for ServerRef<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerRef({:?})", self.actor)
    }
}

/// Hands back the payload of a refused send in the caller's own type.
fn unwrap_send<G: GenServer, T>(
    error: SendError<ServerMsg<G>>,
    payload: fn(ServerMsg<G>) -> T,
) -> SendError<T> {
    match error {
        SendError::Full(msg) => SendError::Full(payload(msg)),
        SendError::NoProc(msg) => SendError::NoProc(payload(msg)),
    }
}

fn cast_of<G: GenServer>(msg: ServerMsg<G>) -> G::Cast {
    match msg {
        ServerMsg::Cast(msg) => msg,
        _ => unreachable!("a cast went in"),
    }
}

fn info_of<G: GenServer>(msg: ServerMsg<G>) -> G::Info {
    match msg {
        ServerMsg::Info(msg) => msg,
        _ => unreachable!("an info message went in"),
    }
}
