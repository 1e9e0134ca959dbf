//! Child specs: how a supervisor starts each child, and what it needs of
//! one without knowing its type. The stable reference that follows a child
//! across restarts is [`ChildRef`] (`child_ref.rs`).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::ChildRef;
use super::binding::Binding;
use super::server::Supervisor;
use super::{ChildKind, DEFAULT_WORKER_SHUTDOWN, Restart, Shutdown, SupervisorSpec};
use crate::actor::{Actor, Context, Pid};
use crate::error::StartError;
use crate::runtime::SpawnOptions;

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
        ChildRef::from_binding(self.id.clone(), self.binding.clone())
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
        self.binding.unbind();
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
