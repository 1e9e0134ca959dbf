//! The runtime's errors: one enum per boundary, each saying what happened
//! and what to do about it.

use std::fmt;

use crate::actor::ActorId;

/// Why a message could not be sent. The message is always handed back.
pub enum SendError<M> {
    /// The target's mailbox holds its full capacity: it is behind. Retry
    /// later, shed load, or raise the target's mailbox capacity.
    Full(M),
    /// The target is dead (or the reference outlived it); nothing was
    /// delivered to any other actor.
    NoProc(M),
}

impl<M> SendError<M> {
    /// Takes back the message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::NoProc(m) => m,
        }
    }

    /// Whether the target was full (rather than dead).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::NoProc(_) => f.write_str("NoProc(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str(
                "the target's mailbox is full; the message was handed back (retry later or shed load)",
            ),
            SendError::NoProc(_) => {
                f.write_str("no such actor: the target is dead; the message was handed back")
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

impl<M> PartialEq for SendError<M> {
    fn eq(&self, other: &Self) -> bool {
        self.is_full() == other.is_full()
    }
}

/// Why an ask or a call got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No reply came within the timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The target took the request and dropped it without replying: its
    /// handler discarded the `ReplyTo`, crashed while handling it (or while
    /// holding it for a later reply), or handed it on to another actor that
    /// dropped it or died with it. The request may have had effects; it is
    /// not sent again.
    #[error("the target dropped the request without replying")]
    Dropped,
    /// The target stopped before it handled the request: the request was
    /// still in its mailbox when it died, and was drained unread (counted in
    /// `dead_letters_total`). It had no effect, so sending it again is safe;
    /// [`ChildRef::call`](crate::supervisor::ChildRef::call) does so itself,
    /// to the child's next incarnation.
    #[error("the target stopped before it handled the request; it had no effect and may be resent")]
    Unhandled,
    /// The request could not be delivered: the target's mailbox was full.
    #[error("the target's mailbox is full; the request was not delivered")]
    Full,
    /// The request could not be delivered: the target is dead. From a
    /// [`ChildRef`](crate::supervisor::ChildRef): the child has no live
    /// incarnation and its supervisor will start none (it gave up, stopped,
    /// or does not restart this child after this exit).
    #[error("no such actor: the target is dead (a supervised child: and will not be restarted)")]
    NoProc,
    /// A zero timeout can never be met; give the call a real deadline.
    #[error("a call needs a non-zero timeout")]
    ZeroTimeout,
    /// The asker's shard could not hold one more timer.
    #[error("the shard's timer wheel is full; raise RuntimeBuilder::timer_capacity")]
    TimersFull,
}

/// Errors from building, spawning into and running the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The builder's settings cannot work together.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// Topology detection or shard placement failed.
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    /// A queue could not be created at the requested capacity.
    #[error("queue capacity: {0}")]
    Capacity(#[from] crate::sync::CapacityError),
    /// A timer could not be set (the shard's wheel is full, or the delay is
    /// beyond its range), or the wheel could not be built.
    #[error(transparent)]
    Timer(#[from] crate::timer::TimerError),
    /// The shards' I/O could not be set up (io_uring asked for but
    /// unavailable, a bad `ZBMD_IO_BACKEND`, an in-flight limit out of range).
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// A shard's memory could not be reserved at startup (bad sizes, a NUMA
    /// node that does not exist, hugepages required but not reserved), or a
    /// pool is exhausted when an actor is spawned (`PoolExhausted` names the
    /// pool and its limit; raise it with `RuntimeBuilder::memory`).
    #[error(transparent)]
    Memory(#[from] zbmd_alloc::AllocError),
    /// A shard already holds its maximum number of actors.
    #[error(
        "shard {shard} holds its maximum of {limit} actors; raise RuntimeBuilder::max_actors_per_shard or stop some"
    )]
    ActorLimit {
        /// The shard that is full.
        shard: usize,
        /// Its actor limit.
        limit: usize,
    },
    /// The runtime is shutting down and accepts no new actors or work.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The name is already registered to another live actor.
    #[error("the name {name:?} is already registered to {holder}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The actor that holds it.
        holder: ActorId,
    },
    /// The actor already holds a name (one per actor, as in OTP).
    #[error("{actor} is already registered as {name:?}")]
    AlreadyNamed {
        /// The actor.
        actor: ActorId,
        /// The name it holds.
        name: String,
    },
    /// The name is empty or longer than the registry allows.
    #[error("the name is {len} bytes; names must be 1 to {limit} bytes")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The registry holds its maximum number of names.
    #[error("the registry holds its maximum of {limit} names")]
    RegistryFull {
        /// The limit.
        limit: usize,
    },
    /// The actor is not alive, so it cannot be registered or linked.
    #[error("no such actor: {0} is dead")]
    NoProc(ActorId),
    /// No shard has this index.
    #[error("there is no shard {shard}; the runtime has {shards}")]
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// How many shards exist.
        shards: usize,
    },
    /// A bounded queue of the runtime (blocking jobs, I/O requests) is full.
    #[error("the {what} queue is full ({capacity} entries); retry later or raise its limit")]
    QueueFull {
        /// Which queue.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// An OS thread could not be started.
    #[error("could not start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The runtime would pin shards onto CPUs that other live runtimes of
    /// this process have pinned, and the builder asked for its CPUs alone
    /// ([`RuntimeBuilder::exclusive_cpus`](crate::RuntimeBuilder::exclusive_cpus)).
    #[error(
        "CPUs {cpus} are pinned by runtime(s) {runtimes:?} of this process; give this runtime other CPUs (RuntimeBuilder::allowed_cpus), build it with pin(false), or stop the other runtime first"
    )]
    CpusInUse {
        /// The CPUs already held (boxed: a set is 128 bytes, and this
        /// error travels in every `Result` of the runtime).
        cpus: Box<crate::topology::CpuSet>,
        /// The ids of the runtimes holding them.
        runtimes: Vec<u32>,
    },
    /// Every runtime id has been handed out (ids are 32-bit and never
    /// reused, so this takes about four billion runtimes in one process).
    #[error("no runtime ids are left in this process (each of the 2^32 - 2 was handed out once)")]
    RuntimeIdsExhausted,
}

/// Why a synchronous start ([`Context::start_link`](crate::Context::start_link),
/// a supervisor starting a child) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The actor could not be spawned at all.
    #[error(transparent)]
    Spawn(#[from] RuntimeError),
    /// The actor's `started` hook failed or panicked (or its name could not
    /// be registered); the actor is gone, with this exit reason.
    #[error("the actor failed to start: {0}")]
    Init(crate::actor::ExitReason),
}

impl StartError {
    /// The failure as an exit reason (what OTP's `start_link` returns in
    /// `{error, Reason}`).
    pub fn reason(&self) -> crate::actor::ExitReason {
        match self {
            StartError::Spawn(error) => crate::actor::ExitReason::error(error),
            StartError::Init(reason) => reason.clone(),
        }
    }
}

/// An actor's exit reason as a `std::error::Error`: what
/// [`ActorError::into_error`](crate::ActorError::into_error) gives, and what
/// `?` boxes when an [`ActorError`](crate::ActorError) meets a function
/// returning `Box<dyn Error>`.
///
/// Displayed as the crash's own message for [`ExitReason::Error`] (so that
/// `?` back into a handler keeps the message as it was), and as "the actor
/// exited with reason ..." for the others.
///
/// [`ExitReason::Error`]: crate::actor::ExitReason::Error
#[derive(Clone, PartialEq, Eq)]
pub struct ExitError {
    reason: crate::actor::ExitReason,
}

impl ExitError {
    pub(crate) fn new(reason: crate::actor::ExitReason) -> Self {
        ExitError { reason }
    }

    /// The exit reason.
    pub fn reason(&self) -> &crate::actor::ExitReason {
        &self.reason
    }

    /// Takes the exit reason.
    pub fn into_reason(self) -> crate::actor::ExitReason {
        self.reason
    }
}

impl From<crate::actor::ActorError> for ExitError {
    fn from(error: crate::actor::ActorError) -> Self {
        error.into_error()
    }
}

/// How an exit reason reads as an error message (`ExitError`, `ActorError`).
pub(crate) fn display_exit(
    reason: &crate::actor::ExitReason,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match reason {
        crate::actor::ExitReason::Error(message) => f.write_str(message),
        other => write!(f, "the actor exited with reason {other}"),
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        display_exit(&self.reason, f)
    }
}

impl fmt::Debug for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExitError({})", self.reason)
    }
}

impl std::error::Error for ExitError {}
