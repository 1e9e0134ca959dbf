//! Supervision trees, to Erlang/OTP's rules.
//!
//! A supervisor is an actor that starts children in order, links to them,
//! traps their exits, and restarts them by its [`Strategy`] and each
//! child's [`Restart`] type. More than `intensity` restarts within `period`
//! and it gives up: it stops all its children (newest first) and then
//! itself with reason `shutdown`, and its own supervisor decides what
//! happens next. `docs/supervision.md` has the tree diagram and the whole
//! semantics table.
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::supervisor::{ChildSpec, Supervisor, SupervisorSpec};
//! use zbmd_rt::{Actor, ActorError, Context, Runtime};
//!
//! struct Worker;
//! impl Actor for Worker {
//!     type Msg = u32;
//!     fn handle(&mut self, _: &mut Context<'_, Self>, n: u32) -> Result<(), ActorError> {
//!         if n == 0 { return Err(ActorError::msg("zero")); } // crashes; restarted
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
//! let worker = ChildSpec::worker("worker", || Worker);
//! let handle = worker.child_ref(); // follows every incarnation
//! let spec = SupervisorSpec::one_for_one().intensity(3, Duration::from_secs(5)).child(worker);
//! let sup = Supervisor::start(&rt, spec).unwrap();
//! handle.try_send(0).unwrap(); // crash it
//! # let deadline = std::time::Instant::now() + Duration::from_secs(10);
//! # while sup.count_children(Duration::from_secs(5)).unwrap().active < 1
//! #     || handle.current().is_none_or(|c| !c.is_alive()) {
//! #     assert!(std::time::Instant::now() < deadline);
//! #     std::thread::yield_now();
//! # }
//! handle.send_timeout(1, Duration::from_secs(5)).unwrap(); // the new incarnation gets it
//! rt.shutdown();
//! ```
//!
//! # Reaching a child across restarts
//!
//! A restarted child is a new actor with a new [`ActorId`](crate::ActorId),
//! as in OTP. Two handles follow it from one incarnation to the next:
//!
//! - a [`ChildRef`], taken from the [`ChildSpec`] before the supervisor
//!   starts (or returned by [`SupervisorRef::start_child`]): its sends go to
//!   the current incarnation;
//! - a registered name ([`ChildSpec::name`]), registered for each
//!   incarnation before its `started` hook runs.
//!
//! An [`ActorRef`](crate::ActorRef) keeps naming one incarnation: once that
//! one is dead it answers `NoProc`.
//!
//! # Messages of a crashed child
//!
//! A restarted child starts with an empty mailbox, as a restarted Erlang
//! process does. Nothing is dropped silently: messages still queued for the
//! crashed incarnation are counted in the runtime's `dead_letters_total`,
//! and a send that finds no live incarnation (between the crash and the
//! restart) hands the message back in [`SendError::NoProc`](crate::SendError::NoProc),
//! where [`ChildRef::send_timeout`] waits for the next incarnation.

mod binding;
mod child;
mod child_ref;
mod client;
mod server;

use std::time::Duration;

pub use binding::{Incarnation, RestartWaitError};
pub use child::ChildSpec;
pub use child_ref::ChildRef;
pub use client::{ChildCounts, ChildInfo, ChildKey, SupervisorRef, SupervisorRequest};
pub use server::{MAX_DEFERRED_REQUESTS, Supervisor, SupervisorMsg};

use crate::actor::ExitReason;
use crate::error::AskError;

/// OTP's default restart intensity: one restart...
pub const DEFAULT_INTENSITY: u32 = 1;
/// ...within five seconds.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);
/// How long a worker gets to stop after `shutdown` before it is killed
/// (OTP's default for workers).
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_millis(5000);
/// Children one supervisor may hold: a bound on its child table, which a
/// `simple_one_for_one` supervisor grows at run time.
pub const DEFAULT_MAX_CHILDREN: usize = 1 << 16;
/// How long [`Supervisor::start`] waits for the tree to start.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which children a supervisor restarts when one of them must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// All children: the others are stopped (newest first), then all are
    /// started again in order.
    OneForAll,
    /// The child that exited and those started after it.
    RestForOne,
    /// A dynamic supervisor: every child comes from one template spec and
    /// is added at run time ([`SupervisorRef::start_child`]); restarts are
    /// one_for_one.
    SimpleOneForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit: not after `normal` or `shutdown`.
    Transient,
    /// Never, not even when a sibling's restart took it down; its spec is
    /// removed when it stops.
    Temporary,
}

impl Restart {
    /// Whether a child of this type that exited with `reason` is restarted
    /// (its own exit; a sibling's restart is decided by the strategy).
    pub fn restarts_after(self, reason: &ExitReason) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !matches!(reason, ExitReason::Normal | ExitReason::Shutdown),
            Restart::Temporary => false,
        }
    }
}

/// How a supervisor stops a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// An untrappable `kill` at once.
    BrutalKill,
    /// An exit signal `shutdown`, then `kill` if the child has not stopped
    /// within the time.
    Timeout(Duration),
    /// An exit signal `shutdown`, and as long as the child needs (the
    /// default for supervisors, which stop their own children first).
    Infinity,
}

/// Whether a child is a worker or a supervisor (for `count_children` and
/// the default shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A worker: default shutdown [`DEFAULT_WORKER_SHUTDOWN`].
    Worker,
    /// A supervisor: default shutdown [`Shutdown::Infinity`].
    Supervisor,
}

/// Where a supervisor starts the children whose [`ChildSpec`] names no
/// shard in its [`spawn_options`](ChildSpec::spawn_options) (a spec that
/// names one always starts there, at every restart).
///
/// Either way a child's placement holds across its restarts, and the
/// child's `started` hook runs on the supervisor's shard (a synchronous
/// start, as OTP's `proc_lib:start_link`) before it runs on its own. A
/// child that is not pinned may later be stolen by an idle shard, as any
/// actor; pin it (`SpawnOptions::pinned`) to keep it where it was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChildPlacement {
    /// On the supervisor's own shard (the default): a tree that talks
    /// mostly to itself stays on one core's caches.
    #[default]
    SameShard,
    /// Round robin over the runtime's shards, starting with the
    /// supervisor's: the n-th child the supervisor starts for the first
    /// time (static children in order, then dynamic ones as they are
    /// added; every child counts, those whose spec names a shard too) is
    /// offered shard `(supervisor's shard + n) % shards`, and
    /// keeps it for all its restarts. For worker pools, typically under
    /// `simple_one_for_one`.
    RoundRobin,
}

/// Exponential backoff between restarts: the n-th restart within the
/// intensity period waits `initial * 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before restart number `n` (1-based) within the period.
    pub fn delay(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// A supervisor's flags and children: what [`Supervisor::start`] and
/// [`ChildSpec::supervisor`] take. Cheap to clone (children share their
/// factories), so a parent can restart a nested supervisor from it.
#[derive(Clone)]
pub struct SupervisorSpec {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: u32,
    pub(crate) period: Duration,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) max_children: usize,
    pub(crate) placement: ChildPlacement,
    pub(crate) options: crate::SpawnOptions,
    pub(crate) children: Vec<child::AnyChild>,
    pub(crate) template: Option<child::AnyChild>,
}

impl SupervisorSpec {
    /// A supervisor with `strategy` and OTP's default intensity (1 restart
    /// in 5 s). For `SimpleOneForOne`, use [`simple_one_for_one`](Self::simple_one_for_one).
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
            backoff: None,
            max_children: DEFAULT_MAX_CHILDREN,
            placement: ChildPlacement::SameShard,
            options: crate::SpawnOptions::default(),
            children: Vec::new(),
            template: None,
        }
    }

    /// `one_for_one`.
    pub fn one_for_one() -> Self {
        Self::new(Strategy::OneForOne)
    }

    /// `one_for_all`.
    pub fn one_for_all() -> Self {
        Self::new(Strategy::OneForAll)
    }

    /// `rest_for_one`.
    pub fn rest_for_one() -> Self {
        Self::new(Strategy::RestForOne)
    }

    /// `simple_one_for_one`: children are started at run time from
    /// `template` ([`SupervisorRef::start_child`]), each with its own factory.
    pub fn simple_one_for_one<A: crate::Actor>(template: ChildSpec<A>) -> Self {
        let mut spec = Self::new(Strategy::SimpleOneForOne);
        spec.template = Some(template.erase());
        spec
    }

    /// Restart intensity: more than `restarts` restarts within `period`
    /// makes the supervisor stop its children and itself.
    pub fn intensity(mut self, restarts: u32, period: Duration) -> Self {
        self.intensity = restarts;
        self.period = period;
        self
    }

    /// Waits between restarts (off by default).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some(Backoff { initial, max });
        self
    }

    /// The most children this supervisor holds ([`DEFAULT_MAX_CHILDREN`]).
    pub fn max_children(mut self, limit: usize) -> Self {
        self.max_children = limit;
        self
    }

    /// Where the children whose spec names no shard start
    /// ([`ChildPlacement::SameShard`] by default).
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::supervisor::{ChildPlacement, ChildSpec, SupervisorSpec, Supervisor};
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime, SpawnOptions};
    ///
    /// struct Worker;
    /// impl Actor for Worker {
    ///     type Msg = ReplyTo<usize>;
    ///     fn handle(&mut self, ctx: &mut Context<'_, Self>, reply: ReplyTo<usize>) -> Result<(), ActorError> {
    ///         reply.reply(ctx.shard());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(2).pin(false).build().unwrap();
    /// let pinned = SpawnOptions { pinned: true, ..SpawnOptions::default() };
    /// let pool = SupervisorSpec::simple_one_for_one(ChildSpec::worker("worker", || Worker).spawn_options(pinned))
    ///     .child_placement(ChildPlacement::RoundRobin)
    ///     .spawn_options(SpawnOptions { shard: Some(0), ..SpawnOptions::default() });
    /// let pool = Supervisor::start(&rt, pool).unwrap();
    /// let t = Duration::from_secs(5);
    /// let first = pool.start_child(|| Worker, t).unwrap();
    /// let second = pool.start_child(|| Worker, t).unwrap();
    /// assert_eq!(first.call(|reply| reply, t), Ok(0));
    /// assert_eq!(second.call(|reply| reply, t), Ok(1));
    /// rt.shutdown();
    /// ```
    pub fn child_placement(mut self, placement: ChildPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// Where the supervisor itself runs: its shard (default: round robin
    /// for a root, the parent's shard for a nested one) and mailbox sizes.
    /// A supervisor is always pinned to its shard and exempt from fault
    /// injection, whatever these say.
    pub fn spawn_options(mut self, options: crate::SpawnOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a child, started after those added before it.
    pub fn child<A: crate::Actor>(mut self, spec: ChildSpec<A>) -> Self {
        self.children.push(spec.erase());
        self
    }

    /// Checks what can be checked before starting.
    pub(crate) fn validate(&self) -> Result<(), SupervisorError> {
        let invalid = |why: String| Err(SupervisorError::InvalidSpec(why));
        if self.period.is_zero() {
            return invalid("the intensity period must be longer than zero".into());
        }
        if let Some(backoff) = self.backoff {
            if backoff.initial.is_zero() || backoff.max < backoff.initial {
                return invalid(format!(
                    "backoff needs 0 < initial <= max, got {:?}..{:?}",
                    backoff.initial, backoff.max
                ));
            }
        }
        if self.max_children == 0 {
            return invalid("max_children must be at least 1".into());
        }
        match (self.strategy, &self.template) {
            (Strategy::SimpleOneForOne, None) => {
                return invalid("simple_one_for_one needs a template child spec".into());
            }
            (Strategy::SimpleOneForOne, Some(_)) if !self.children.is_empty() => {
                return invalid("a simple_one_for_one supervisor has no static children".into());
            }
            _ => {}
        }
        if self.children.len() > self.max_children {
            return Err(SupervisorError::TooManyChildren { limit: self.max_children });
        }
        for (i, child) in self.children.iter().enumerate() {
            if self.children[..i].iter().any(|c| c.id == child.id) {
                return Err(SupervisorError::DuplicateChild(child.id.to_string()));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.children.iter().map(|c| &*c.id).collect();
        f.debug_struct("SupervisorSpec")
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("period", &self.period)
            .field("backoff", &self.backoff)
            .field("placement", &self.placement)
            .field("children", &ids)
            .finish()
    }
}

/// What a supervisor operation can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The spec is inconsistent (checked before anything starts).
    #[error("invalid supervisor spec: {0}")]
    InvalidSpec(String),
    /// Two children share an id.
    #[error("two children have the id {0:?}; child ids are unique within a supervisor")]
    DuplicateChild(String),
    /// A child failed to start; the supervisor (at start) or the operation
    /// failed with it.
    #[error("child {id:?} failed to start: {reason}")]
    StartFailed {
        /// The child.
        id: String,
        /// Its exit reason.
        reason: ExitReason,
    },
    /// No child has this id (or pid).
    #[error("no child {0}")]
    NotFound(String),
    /// The child is running: terminate it first.
    #[error("child {0:?} is running; terminate it first")]
    Running(String),
    /// The operation does not apply to a simple_one_for_one supervisor
    /// (restart_child, delete_child, start_child with a spec).
    #[error("not supported by a simple_one_for_one supervisor: {0}")]
    SimpleOneForOne(&'static str),
    /// start_child with a factory needs a simple_one_for_one supervisor.
    #[error("only a simple_one_for_one supervisor starts children from its template")]
    NotSimple,
    /// The factory makes a different actor type than the template.
    #[error("the template's children are {expected}, not {given}")]
    WrongChildType {
        /// The template's actor type.
        expected: &'static str,
        /// The factory's.
        given: &'static str,
    },
    /// The supervisor holds its maximum number of children.
    #[error("the supervisor holds its maximum of {limit} children")]
    TooManyChildren {
        /// The limit.
        limit: usize,
    },
    /// The supervisor is in the middle of stopping or restarting children
    /// and already holds its maximum of requests waiting for that; retry.
    #[error(
        "the supervisor is busy restarting or stopping children, with {waiting} requests waiting; retry later"
    )]
    Busy {
        /// Requests already waiting.
        waiting: usize,
    },
    /// The request did not reach the supervisor or got no answer.
    #[error("supervisor request failed: {0}")]
    Request(#[from] AskError),
}
