//! Child specs and the stable references that follow a child across
//! restarts.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::server::Supervisor;
use super::{ChildKind, DEFAULT_WORKER_SHUTDOWN, Restart, Shutdown, SupervisorSpec};
use crate::actor::{Actor, ActorId, ActorRef, Context, Pid, Shared, ThreadSink};
use crate::error::{AskError, SendError, StartError};
use crate::runtime::SpawnOptions;
use crate::{ExitReason, ReplyTo};

/// Where a child's current incarnation is published: written only by its
/// supervisor (at each start and death), read by every [`ChildRef`].
///
/// `current` is the lock-free fast path every send reads. `life` is the slow
/// path of a caller that found no live incarnation: it sleeps on `changed`
/// until the supervisor binds the next incarnation (`generation` moves) or
/// decides there will be none (`retired`), or its own deadline passes. The
/// supervisor touches `life` only at a start, a final stop and its own
/// death, never per message.
pub(crate) struct Binding<M> {
    current: ArcSwapOption<Shared<M>>,
    life: Mutex<Life>,
    changed: Condvar,
}

/// What waiters of a binding watch.
#[derive(Clone, Copy)]
struct Life {
    /// Incarnations bound so far.
    generation: u64,
    /// No incarnation will be bound after the current one (or after none):
    /// the supervisor gave up, stopped, or does not restart this child. A
    /// later bind (a `restart_child`, a restarted parent) clears it.
    retired: bool,
}

/// How a wait for the next incarnation ended.
enum Next {
    /// Another incarnation was bound since the caller looked: try it.
    Bound,
    /// None will come.
    Retired,
    /// The caller's deadline passed first.
    TimedOut,
}

impl<M> Binding<M> {
    fn new() -> Arc<Self> {
        let life = Life { generation: 0, retired: false };
        Arc::new(Binding {
            current: ArcSwapOption::empty(),
            life: Mutex::new(life),
            changed: Condvar::new(),
        })
    }

    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Publishes a new incarnation and wakes every waiter. The pointer is
    /// stored before the generation moves under the lock, so a waiter that
    /// sees the new generation then loads the new pointer.
    fn bind(&self, shared: Arc<Shared<M>>) {
        self.current.store(Some(shared));
        let mut life = self.life();
        life.generation += 1;
        life.retired = false;
        drop(life);
        self.changed.notify_all();
    }

    /// No incarnation will follow the current one: wakes every waiter.
    fn retire(&self) {
        self.life().retired = true;
        self.changed.notify_all();
    }

    /// The number of incarnations bound so far: take it *before* trying
    /// the current one, then wait with it.
    fn generation(&self) -> u64 {
        self.life().generation
    }

    /// Sleeps until an incarnation after `seen` is bound, the child is
    /// retired, or `deadline`.
    fn wait_for_next(&self, seen: u64, deadline: Instant) -> Next {
        let mut life = self.life();
        loop {
            if life.generation != seen {
                return Next::Bound;
            }
            if life.retired {
                return Next::Retired;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            life = self
                .changed
                .wait_timeout(life, deadline - now)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}

/// How to start one child, and how the supervisor treats it.
///
/// `A` is the child's actor type; the factory makes a fresh actor for every
/// incarnation. Build it with [`worker`](Self::worker) or
/// [`supervisor`](Self::supervisor), adjust it, and take its
/// [`child_ref`](Self::child_ref) before handing it to a
/// [`SupervisorSpec`].
pub struct ChildSpec<A: Actor> {
    id: Arc<str>,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    restart: Restart,
    shutdown: Shutdown,
    kind: ChildKind,
    name: Option<Arc<str>>,
    options: SpawnOptions,
    binding: Arc<Binding<A::Msg>>,
}

impl<A: Actor> ChildSpec<A> {
    /// A permanent worker with the default shutdown (5 s, then kill).
    pub fn worker(
        id: impl Into<Arc<str>>,
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> Self {
        ChildSpec {
            id: id.into(),
            factory: Arc::new(factory),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            kind: ChildKind::Worker,
            name: None,
            options: SpawnOptions::default(),
            binding: Binding::new(),
        }
    }

    /// The restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How the supervisor stops it (default: 5 s for workers, infinity for
    /// supervisors).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Registers `name` for every incarnation, before its `started` hook.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Spawn options for every incarnation (shard, pinning, mailbox size;
    /// `link` is ignored: a child is always linked to its supervisor; a
    /// supervisor child stays pinned and exempt from fault injection).
    pub fn spawn_options(mut self, options: SpawnOptions) -> Self {
        self.options = match self.kind {
            ChildKind::Supervisor => super::server::supervisor_options(&options),
            ChildKind::Worker => SpawnOptions { link: false, ..options },
        };
        self
    }

    /// The child's id within its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A stable reference to whichever incarnation of this child is alive.
    pub fn child_ref(&self) -> ChildRef<A::Msg> {
        ChildRef { id: self.id.clone(), binding: self.binding.clone() }
    }

    /// A copy with a new factory and a binding of its own: one dynamic child
    /// of a simple_one_for_one template.
    fn instance(
        &self,
        factory: Arc<dyn Fn() -> A + Send + Sync>,
        binding: Arc<Binding<A::Msg>>,
    ) -> Self {
        ChildSpec {
            factory,
            binding,
            name: None,
            options: self.options.clone(),
            id: self.id.clone(),
            ..*self
        }
    }

    pub(crate) fn erase(self) -> AnyChild {
        AnyChild {
            id: self.id.clone(),
            restart: self.restart,
            shutdown: self.shutdown,
            kind: self.kind,
            start: Arc::new(self),
        }
    }
}

impl ChildSpec<Supervisor> {
    /// A permanent nested supervisor with shutdown infinity: its parent
    /// waits for it to stop its own children.
    pub fn supervisor(id: impl Into<Arc<str>>, spec: SupervisorSpec) -> Self {
        let options = super::server::supervisor_options(&spec.options);
        let mut child = ChildSpec::worker(id, move || Supervisor::new(spec.clone()));
        child.kind = ChildKind::Supervisor;
        child.shutdown = Shutdown::Infinity;
        child.options = options;
        child
    }

    /// A stable handle on this nested supervisor, across its restarts.
    pub fn supervisor_ref(&self) -> super::SupervisorRef {
        super::SupervisorRef::new(self.child_ref())
    }
}

impl<A: Actor> Clone for ChildSpec<A> {
    fn clone(&self) -> Self {
        ChildSpec {
            id: self.id.clone(),
            factory: self.factory.clone(),
            name: self.name.clone(),
            options: self.options.clone(),
            binding: self.binding.clone(),
            ..*self
        }
    }
}

impl<A: Actor> fmt::Debug for ChildSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("actor", &std::any::type_name::<A>())
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish()
    }
}

/// A child spec with its actor type erased, as a supervisor holds it.
#[derive(Clone)]
pub(crate) struct AnyChild {
    pub(crate) id: Arc<str>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) kind: ChildKind,
    pub(crate) start: Arc<dyn StartChild>,
}

/// A dynamic child's factory and binding, on its way to a simple_one_for_one
/// supervisor (made by [`SupervisorRef::start_child`](super::SupervisorRef::start_child)).
pub(crate) struct DynamicChild<A: Actor> {
    pub(crate) factory: Arc<dyn Fn() -> A + Send + Sync>,
    pub(crate) binding: Arc<Binding<A::Msg>>,
}

impl<A: Actor> DynamicChild<A> {
    pub(crate) fn new(
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> (Self, Arc<Binding<A::Msg>>) {
        let binding = Binding::new();
        (DynamicChild { factory: Arc::new(factory), binding: binding.clone() }, binding)
    }
}

/// What a supervisor needs of a child spec without knowing its type.
pub(crate) trait StartChild: Send + Sync {
    /// Starts an incarnation, linked to the supervisor, and publishes it;
    /// on `shard` when the spec's options name none.
    fn start(
        &self,
        ctx: &mut Context<'_, Supervisor>,
        shard: Option<usize>,
    ) -> Result<Pid, StartError>;
    /// The incarnation died: the child's refs answer `NoProc` until the
    /// next start.
    fn unbind(&self);
    /// No incarnation will follow the current one (the supervisor gave up,
    /// stops, or does not restart the child): callers waiting in
    /// [`ChildRef::call`] or [`ChildRef::send_timeout`] stop waiting.
    fn retire(&self);
    /// A dynamic child of this template, from a [`DynamicChild`] of the
    /// same actor type; otherwise hands the request back.
    fn instance(&self, dynamic: Box<dyn Any + Send>) -> Result<AnyChild, &'static str>;
    /// The actor type's name, for errors.
    fn actor_type(&self) -> &'static str;
}

impl<A: Actor> StartChild for ChildSpec<A> {
    fn start(
        &self,
        ctx: &mut Context<'_, Supervisor>,
        shard: Option<usize>,
    ) -> Result<Pid, StartError> {
        // A factory that panics is a child that failed to start, not a
        // supervisor that crashes.
        let actor = crate::actor::catch(|| (self.factory)()).map_err(StartError::Init)?;
        let options = SpawnOptions { shard: self.options.shard.or(shard), ..self.options.clone() };
        let child = ctx.start_link(actor, options, self.name.as_deref())?;
        self.binding.bind(child.shared.clone());
        Ok(child.pid())
    }

    fn unbind(&self) {
        self.binding.current.store(None);
    }

    fn retire(&self) {
        self.binding.retire();
    }

    fn instance(&self, dynamic: Box<dyn Any + Send>) -> Result<AnyChild, &'static str> {
        match dynamic.downcast::<DynamicChild<A>>() {
            Ok(dynamic) => Ok(self.instance(dynamic.factory, dynamic.binding).erase()),
            Err(_) => Err(std::any::type_name::<A>()),
        }
    }

    fn actor_type(&self) -> &'static str {
        std::any::type_name::<A>()
    }
}

/// A stable reference to a supervised child: sends go to whichever
/// incarnation is alive.
///
/// Between a crash and the restart (including a supervisor's backoff) there
/// is no incarnation: [`try_send`](Self::try_send) answers
/// [`SendError::NoProc`] with the message handed back, while
/// [`send_timeout`](Self::send_timeout) and [`call`](Self::call) wait,
/// within their timeout, for the supervisor to bind the next incarnation
/// (the supervisor wakes them; nothing polls). When the supervisor will not
/// start another (it gave up, it is stopping, or this child is not restarted
/// after this exit), they stop waiting at once and answer `NoProc`.
///
/// [`call`](Self::call) also resends a request the dead incarnation never
/// handled ([`AskError::Unhandled`]: it was still queued when it died) to
/// the next incarnation; a request the handler had taken when it crashed
/// ([`AskError::Dropped`]) is not resent. `docs/supervision.md` has the
/// whole table.
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::supervisor::{ChildSpec, Supervisor, SupervisorSpec};
/// use zbmd_rt::{Actor, ActorError, AskError, Context, ReplyTo, Runtime};
///
/// struct Worker;
/// enum Msg {
///     Crash(ReplyTo<()>),
///     Double(u32, ReplyTo<u32>),
/// }
/// impl Actor for Worker {
///     type Msg = Msg;
///     fn handle(&mut self, _: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
///         match msg {
///             Msg::Crash(_) => Err(ActorError::msg("told to crash")),
///             Msg::Double(n, reply) => {
///                 reply.reply(2 * n);
///                 Ok(())
///             }
///         }
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
/// let spec = ChildSpec::worker("worker", || Worker);
/// let worker = spec.child_ref(); // follows every incarnation
/// let tree = SupervisorSpec::one_for_one()
///     .intensity(5, Duration::from_secs(5))
///     .backoff(Duration::from_millis(50), Duration::from_millis(50)) // a restart window
///     .child(spec);
/// let _sup = Supervisor::start(&rt, tree).unwrap();
///
/// let timeout = Duration::from_secs(5);
/// // The handler crashes with the request: it is not resent.
/// assert_eq!(worker.call(Msg::Crash, timeout), Err(AskError::Dropped));
/// // This call finds no incarnation during the 50 ms backoff and waits for
/// // the next one, which answers.
/// assert_eq!(worker.call(|reply| Msg::Double(21, reply), timeout), Ok(42));
/// rt.shutdown();
/// ```
pub struct ChildRef<M> {
    id: Arc<str>,
    binding: Arc<Binding<M>>,
}

impl<M: Send + 'static> ChildRef<M> {
    pub(crate) fn from_binding(id: Arc<str>, binding: Arc<Binding<M>>) -> Self {
        ChildRef { id, binding }
    }

    /// A ref bound to one actor for good (a root supervisor, which nothing
    /// restarts): retired from the start, so a wait for a next incarnation
    /// ends at once.
    pub(crate) fn bound(id: &str, actor: &ActorRef<M>) -> Self {
        let binding = Binding::new();
        binding.bind(actor.shared.clone());
        binding.retire();
        ChildRef { id: id.into(), binding }
    }

    /// The child's id within its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current incarnation, if one is alive (a snapshot: it names that
    /// incarnation for good).
    pub fn current(&self) -> Option<ActorRef<M>> {
        let current = self.binding.current.load_full()?;
        (!current.header.is_dead()).then_some(ActorRef { shared: current })
    }

    /// Sends to the current incarnation without waiting: queued, or handed
    /// back in `Full` or `NoProc` (no live incarnation).
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        let current = self.binding.current.load();
        let Some(shared) = current.as_ref() else {
            return Err(SendError::NoProc(msg));
        };
        match shared.push_user(msg) {
            // It died after we loaded it; if its successor is already
            // published, the message goes there.
            Err(SendError::NoProc(msg)) => match self.binding.current.load().as_ref() {
                Some(next) if !Arc::ptr_eq(next, shared) => next.push_user(msg),
                _ => Err(SendError::NoProc(msg)),
            },
            sent => sent,
        }
    }

    /// Sends from a thread outside the runtime, waiting up to `timeout` for
    /// a live incarnation (through a restart window, woken when the
    /// supervisor binds the next one) or for room in a full mailbox.
    ///
    /// Answers `Ok` once a live incarnation's mailbox took the message (if
    /// that incarnation then dies before handling it, the message is a dead
    /// letter: use [`call`](Self::call) for a request that must be handled);
    /// `NoProc` at once when the supervisor will start no other incarnation,
    /// or at the deadline if none came; `Full` at the deadline if the mailbox
    /// stayed full. The message is handed back in both.
    ///
    /// # Panics
    ///
    /// On a shard thread; actors use [`try_send`](Self::try_send).
    pub fn send_timeout(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        assert!(
            !crate::runtime::on_shard_thread(),
            "ChildRef::send_timeout blocks and must not run on a shard thread; use try_send"
        );
        self.deliver(msg, Instant::now() + timeout, true)
    }

    /// Sends `msg` to a live incarnation by `deadline`: waits for the next
    /// incarnation when there is none, and for room in a full mailbox when
    /// `wait_for_room` (otherwise `Full` at once).
    fn deliver(
        &self,
        mut msg: M,
        deadline: Instant,
        wait_for_room: bool,
    ) -> Result<(), SendError<M>> {
        // A full mailbox has no wake-up to wait on: back off, doubling up to
        // 1 ms (fast when the receiver catches up quickly, cheap when not).
        let mut backoff = Duration::from_micros(1);
        loop {
            let seen = self.binding.generation();
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(back)) => {
                    if !wait_for_room || Instant::now() >= deadline {
                        return Err(SendError::Full(back));
                    }
                    msg = back;
                    std::thread::sleep(backoff.min(deadline - Instant::now()));
                    backoff = (backoff * 2).min(Duration::from_millis(1));
                }
                Err(SendError::NoProc(back)) => match self.binding.wait_for_next(seen, deadline) {
                    Next::Bound => msg = back,
                    Next::Retired | Next::TimedOut => return Err(SendError::NoProc(back)),
                },
            }
        }
    }

    /// A blocking request from a thread outside the runtime, answered by
    /// whichever incarnation handles it, within `timeout` in all.
    ///
    /// `make` builds the request around its [`ReplyTo`]; it runs once per
    /// delivery, so it is `FnMut` (an enum variant such as `Msg::Get`, or a
    /// closure that clones what it sends). What happens:
    ///
    /// - no live incarnation (between a crash and the restart): waits for the
    ///   supervisor to bind the next one, then sends;
    /// - the incarnation dies before handling the request (it was queued
    ///   behind the message that crashed it, or the supervisor stopped it):
    ///   the request had no effect, and is sent again, built afresh by
    ///   `make`, to the next incarnation;
    /// - the handler crashes while handling the request (or drops its
    ///   `ReplyTo`): [`AskError::Dropped`] at once, not resent (it may have
    ///   had effects, and a poison request must not crash every incarnation);
    /// - the supervisor will start no other incarnation: [`AskError::NoProc`]
    ///   at once;
    /// - a full mailbox: [`AskError::Full`] at once, as
    ///   [`Runtime::call`](crate::Runtime::call);
    /// - the time runs out: [`AskError::Timeout`], whether it was spent
    ///   waiting for an incarnation or for the reply.
    ///
    /// A resent request goes to a fresh incarnation, which starts from its
    /// factory; when a child must be prepared (say, restored from a
    /// checkpoint) before it may take requests, send through
    /// [`current`](Self::current) and [`ActorRef::call`], which never
    /// resends.
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard.
    pub fn call<R: Send + 'static>(
        &self,
        mut make: impl FnMut(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.call_until(&mut make, timeout, deadline) {
                // The incarnation died with the request unread: the loop
                // sends it to the next one (each pass needs a new
                // incarnation, so the supervisor's intensity bounds it).
                Err(AskError::Unhandled) => {}
                answer => return answer,
            }
        }
    }

    /// [`call`](Self::call) without the resend: one request, delivered once
    /// (waiting through a restart window), whose [`AskError::Unhandled`] is
    /// the caller's to handle. For requests `make` can build only once.
    pub(crate) fn call_once<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        self.call_until(make, timeout, Instant::now() + timeout)
    }

    /// One delivery of a call, by `deadline` (`timeout` is what the caller
    /// asked for, to tell a zero timeout from a spent one).
    fn call_until<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<R, AskError> {
        let on_shard = crate::runtime::on_shard_thread();
        assert!(
            !on_shard,
            "a blocking call must not run on a shard thread; actors use Context::ask"
        );
        if timeout.is_zero() {
            return Err(AskError::ZeroTimeout);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(AskError::Timeout);
        }
        // The request is addressed to the incarnation it goes to (only that
        // one's death with it unread makes it `Unhandled`): in a restart
        // window, the next one. Should that one die before the push, the
        // request goes on to its successor still addressed to it, and is
        // `Dropped` rather than resent if that one dies with it too.
        let addressee = self.next_live(deadline);
        let sink = Arc::new(ThreadSink::new());
        match self.deliver(make(ReplyTo::new(sink.clone(), addressee)), deadline, false) {
            Ok(()) => sink.wait(deadline.saturating_duration_since(Instant::now())),
            Err(SendError::Full(_)) => Err(AskError::Full),
            Err(SendError::NoProc(_)) if Instant::now() >= deadline => Err(AskError::Timeout),
            Err(SendError::NoProc(_)) => Err(AskError::NoProc),
        }
    }

    /// The id of the live incarnation, waiting by `deadline` for the next
    /// one when there is none; `None` when none will come in time.
    fn next_live(&self, deadline: Instant) -> Option<ActorId> {
        loop {
            let seen = self.binding.generation();
            if let Some(current) = self.current() {
                return Some(current.id());
            }
            match self.binding.wait_for_next(seen, deadline) {
                Next::Bound => {}
                Next::Retired | Next::TimedOut => return None,
            }
        }
    }

    /// Sends a request to the current incarnation and returns a future of
    /// the reply, for an async task: see
    /// [`ActorRef::ask_async`]. It does not wait through a restart window
    /// nor resend: with no live incarnation it resolves at once to
    /// [`AskError::NoProc`], and a request the incarnation died with
    /// resolves to [`AskError::Unhandled`] (safe to ask again).
    pub fn ask_async<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
    ) -> crate::ReplyFuture<R> {
        let current = self.binding.current.load();
        let Some(shared) = current.as_ref() else {
            return crate::ReplyFuture::failed(AskError::NoProc);
        };
        let (reply, future) = ReplyTo::future(shared.header.sched.clone(), shared.header.id);
        match self.try_send(make(reply)) {
            Ok(()) => future,
            Err(SendError::Full(_)) => crate::ReplyFuture::failed(AskError::Full),
            Err(SendError::NoProc(_)) => crate::ReplyFuture::failed(AskError::NoProc),
        }
    }

    /// Whether the child has a live incarnation now (a snapshot).
    pub fn is_alive(&self) -> bool {
        self.current().is_some()
    }

    /// Stops the current incarnation with `reason` as `erlang:exit/2`
    /// would, from outside (its supervisor then applies its rules).
    pub fn exit(&self, reason: ExitReason) -> bool {
        match self.current() {
            Some(actor) => {
                actor.shared.header.sched.exit_from_runtime(&actor.pid(), reason);
                true
            }
            None => false,
        }
    }
}

impl<M> Clone for ChildRef<M> {
    fn clone(&self) -> Self {
        ChildRef { id: self.id.clone(), binding: self.binding.clone() }
    }
}

impl<M> fmt::Debug for ChildRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.binding.current.load();
        match current.as_ref() {
            Some(shared) => write!(f, "ChildRef({} → {})", self.id, shared.header.id),
            None => write!(f, "ChildRef({} → none)", self.id),
        }
    }
}
