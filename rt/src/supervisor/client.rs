//! Talking to a supervisor: OTP's `supervisor:which_children/1` and
//! friends, blocking from outside the runtime or as asks from actors.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::child::{ChildSpec, DynamicChild};
use super::child_ref::ChildRef;
use super::server::SupervisorMsg;
use super::{ChildKind, Restart, SupervisorError};
use crate::actor::{Actor, ActorId, ActorRef, Pid};
use crate::error::AskError;
use crate::{ExitReason, ReplyTo};

/// One child, as `which_children` reports it.
#[derive(Clone, Debug)]
pub struct ChildInfo {
    /// The child's id (a dynamic child carries its template's).
    pub id: String,
    /// The live incarnation, if any.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
}

/// `count_children`'s answer, as in OTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Child specs held (running or not).
    pub specs: usize,
    /// Children with a live incarnation.
    pub active: usize,
    /// Specs of kind supervisor.
    pub supervisors: usize,
    /// Specs of kind worker.
    pub workers: usize,
}

/// Which child an operation means: static children by id, dynamic ones
/// (which share their template's id) by actor id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildKey {
    /// A static child's id.
    Id(Arc<str>),
    /// A child's current incarnation.
    Actor(ActorId),
}

impl From<&str> for ChildKey {
    fn from(id: &str) -> Self {
        ChildKey::Id(id.into())
    }
}

impl From<ActorId> for ChildKey {
    fn from(id: ActorId) -> Self {
        ChildKey::Actor(id)
    }
}

impl fmt::Display for ChildKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildKey::Id(id) => write!(f, "{id:?}"),
            ChildKey::Actor(actor) => write!(f, "{actor}"),
        }
    }
}

/// The requests a supervisor answers. Actors ask them with
/// [`Context::ask`](crate::Context::ask) on [`SupervisorRef::actor`]
/// (`|reply| SupervisorRequest::WhichChildren(reply).into()`); threads
/// outside the runtime use [`SupervisorRef`]'s blocking methods.
pub enum SupervisorRequest {
    /// Every child, in start order.
    WhichChildren(ReplyTo<Vec<ChildInfo>>),
    /// The counts.
    CountChildren(ReplyTo<ChildCounts>),
    /// Stops a child by its shutdown spec and keeps its spec (a temporary
    /// or dynamic child's spec is removed).
    TerminateChild(ChildKey, ReplyTo<Result<(), SupervisorError>>),
    /// Starts a stopped static child again from its spec.
    RestartChild(Arc<str>, ReplyTo<Result<Pid, SupervisorError>>),
    /// Removes a stopped static child's spec.
    DeleteChild(Arc<str>, ReplyTo<Result<(), SupervisorError>>),
    /// Adds and starts a child: a spec for static supervisors, a factory
    /// for simple_one_for_one ones.
    StartChild(NewChild, ReplyTo<Result<Pid, SupervisorError>>),
}

/// A child on its way to [`SupervisorRequest::StartChild`]: build it with
/// [`NewChild::spec`] or [`NewChild::dynamic`].
pub struct NewChild(pub(crate) NewKind);

pub(crate) enum NewKind {
    Static(super::child::AnyChild),
    Dynamic(Box<dyn Any + Send>),
}

impl NewChild {
    /// A static child (not for simple_one_for_one), and the stable ref to it.
    pub fn spec<A: Actor>(spec: ChildSpec<A>) -> (Self, ChildRef<A::Msg>) {
        let child = spec.child_ref();
        (NewChild(NewKind::Static(spec.erase())), child)
    }

    /// A dynamic child of a simple_one_for_one template whose actor type is
    /// `A`, and the stable ref to it.
    pub fn dynamic<A: Actor>(
        factory: impl Fn() -> A + Send + Sync + 'static,
    ) -> (Self, ChildRef<A::Msg>) {
        let (dynamic, binding) = DynamicChild::new(factory);
        let child = ChildRef::from_binding(Arc::from(std::any::type_name::<A>()), binding);
        (NewChild(NewKind::Dynamic(Box::new(dynamic))), child)
    }
}

/// A handle on a supervisor that follows it across restarts (when it is a
/// nested one), with OTP's `supervisor` module functions.
///
/// The methods block and are for threads outside the runtime; they panic
/// on a shard thread. Actors ask [`actor`](Self::actor) instead.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    inner: ChildRef<SupervisorMsg>,
}

impl SupervisorRef {
    pub(crate) fn new(inner: ChildRef<SupervisorMsg>) -> Self {
        SupervisorRef { inner }
    }

    /// The current incarnation, to ask from an actor or to monitor.
    pub fn actor(&self) -> Option<ActorRef<SupervisorMsg>> {
        self.inner.current()
    }

    /// Whether the supervisor is alive.
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// Sends an exit signal to the supervisor from outside; `Shutdown`
    /// stops it in order (children newest first, then itself).
    pub fn exit(&self, reason: ExitReason) -> bool {
        self.inner.exit(reason)
    }

    fn request<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> SupervisorRequest,
        timeout: Duration,
    ) -> Result<R, AskError> {
        self.inner.call_once(|reply| SupervisorMsg::from(request(reply)), timeout)
    }

    /// Every child in start order.
    pub fn which_children(&self, timeout: Duration) -> Result<Vec<ChildInfo>, SupervisorError> {
        Ok(self.request(SupervisorRequest::WhichChildren, timeout)?)
    }

    /// How many specs, live children, supervisors and workers.
    pub fn count_children(&self, timeout: Duration) -> Result<ChildCounts, SupervisorError> {
        Ok(self.request(SupervisorRequest::CountChildren, timeout)?)
    }

    /// Stops a child by its shutdown spec (it is not restarted).
    pub fn terminate_child(
        &self,
        child: impl Into<ChildKey>,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let child = child.into();
        self.request(|reply| SupervisorRequest::TerminateChild(child, reply), timeout)?
    }

    /// Starts a stopped static child again.
    pub fn restart_child(&self, id: &str, timeout: Duration) -> Result<Pid, SupervisorError> {
        let id: Arc<str> = id.into();
        self.request(|reply| SupervisorRequest::RestartChild(id, reply), timeout)?
    }

    /// Removes a stopped static child's spec.
    pub fn delete_child(&self, id: &str, timeout: Duration) -> Result<(), SupervisorError> {
        let id: Arc<str> = id.into();
        self.request(|reply| SupervisorRequest::DeleteChild(id, reply), timeout)?
    }

    /// Adds a static child to a one_for_one, one_for_all or rest_for_one
    /// supervisor and starts it (after the existing children).
    pub fn add_child<A: Actor>(
        &self,
        spec: ChildSpec<A>,
        timeout: Duration,
    ) -> Result<ChildRef<A::Msg>, SupervisorError> {
        let (new, child) = NewChild::spec(spec);
        self.request(|reply| SupervisorRequest::StartChild(new, reply), timeout)??;
        Ok(child)
    }

    /// Starts a dynamic child of a simple_one_for_one supervisor: its
    /// template's settings with this factory.
    pub fn start_child<A: Actor>(
        &self,
        factory: impl Fn() -> A + Send + Sync + 'static,
        timeout: Duration,
    ) -> Result<ChildRef<A::Msg>, SupervisorError> {
        let (new, child) = NewChild::dynamic(factory);
        self.request(|reply| SupervisorRequest::StartChild(new, reply), timeout)??;
        Ok(child)
    }
}
