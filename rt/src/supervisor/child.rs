//! Child specs and the stable references that follow a child across
//! restarts.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::server::Supervisor;
use super::{ChildKind, DEFAULT_WORKER_SHUTDOWN, Restart, Shutdown, SupervisorSpec};
use crate::actor::{Actor, ActorRef, Context, Pid, Shared};
use crate::error::{AskError, SendError, StartError};
use crate::runtime::SpawnOptions;
use crate::{ExitReason, ReplyTo};

/// Where a child's current incarnation is published: written only by its
/// supervisor (at each start and death), read by every [`ChildRef`].
pub(crate) struct Binding<M> {
    current: ArcSwapOption<Shared<M>>,
}

impl<M> Binding<M> {
    fn new() -> Arc<Self> {
        Arc::new(Binding { current: ArcSwapOption::empty() })
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
    /// Starts an incarnation, linked to the supervisor, and publishes it.
    fn start(&self, ctx: &mut Context<'_, Supervisor>) -> Result<Pid, StartError>;
    /// The incarnation died: the child's refs answer `NoProc` until the
    /// next start.
    fn unbind(&self);
    /// A dynamic child of this template, from a [`DynamicChild`] of the
    /// same actor type; otherwise hands the request back.
    fn instance(&self, dynamic: Box<dyn Any + Send>) -> Result<AnyChild, &'static str>;
    /// The actor type's name, for errors.
    fn actor_type(&self) -> &'static str;
}

impl<A: Actor> StartChild for ChildSpec<A> {
    fn start(&self, ctx: &mut Context<'_, Supervisor>) -> Result<Pid, StartError> {
        // A factory that panics is a child that failed to start, not a
        // supervisor that crashes.
        let actor = crate::actor::catch(|| (self.factory)()).map_err(StartError::Init)?;
        let child = ctx.start_link(actor, self.options.clone(), self.name.as_deref())?;
        self.binding.current.store(Some(child.shared.clone()));
        Ok(child.pid())
    }

    fn unbind(&self) {
        self.binding.current.store(None);
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
/// Between a crash and the restart there is no incarnation, and sends
/// answer [`SendError::NoProc`] with the message handed back;
/// [`send_timeout`](Self::send_timeout) waits through that window.
pub struct ChildRef<M> {
    id: Arc<str>,
    binding: Arc<Binding<M>>,
}

impl<M: Send + 'static> ChildRef<M> {
    pub(crate) fn from_binding(id: Arc<str>, binding: Arc<Binding<M>>) -> Self {
        ChildRef { id, binding }
    }

    /// A ref bound to one actor for good (a root supervisor, which nothing
    /// restarts).
    pub(crate) fn bound(id: &str, actor: &ActorRef<M>) -> Self {
        let binding = Binding::new();
        binding.current.store(Some(actor.shared.clone()));
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
    /// room in a full mailbox or for a live incarnation. Answers `Full` or
    /// `NoProc` (whichever held last) when the time runs out.
    ///
    /// # Panics
    ///
    /// On a shard thread; actors use [`try_send`](Self::try_send).
    pub fn send_timeout(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        assert!(
            !crate::runtime::on_shard_thread(),
            "ChildRef::send_timeout blocks and must not run on a shard thread; use try_send"
        );
        let deadline = Instant::now() + timeout;
        let mut msg = msg;
        let mut backoff = Duration::from_micros(1);
        loop {
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(error) => msg = error.into_inner(),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(1));
        }
    }

    /// A blocking request to the current incarnation from a thread outside
    /// the runtime (see [`Runtime::call`](crate::Runtime::call)).
    pub fn call<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        crate::runtime::call_blocking(|msg| self.try_send(msg), request, timeout)
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
