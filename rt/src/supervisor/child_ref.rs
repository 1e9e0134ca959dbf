//! The stable reference to a supervised child: sends and calls that follow
//! it across restarts, and the blocking waits of a thread outside the
//! runtime for its next incarnation or for room in its mailbox.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::binding::{Binding, Incarnation, Next, RestartWaitError};
use crate::actor::{ActorId, ActorRef, ThreadSink};
use crate::error::{AskError, SendError};
use crate::{ExitReason, ReplyTo};

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
        self.deliver(msg, Instant::now().checked_add(timeout), true)
    }

    /// Sends `msg` to a live incarnation by `deadline` (`None`: no
    /// deadline): waits for the next incarnation when there is none, and
    /// for room in a full mailbox when `wait_for_room` (otherwise `Full` at
    /// once). Both waits sleep until woken: by the supervisor's bind or
    /// retire, by the incarnation's next turn or its death.
    fn deliver(
        &self,
        mut msg: M,
        deadline: Option<Instant>,
        wait_for_room: bool,
    ) -> Result<(), SendError<M>> {
        loop {
            let seen = self.binding.generation();
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(back)) if !wait_for_room => return Err(SendError::Full(back)),
                Err(SendError::Full(back)) => {
                    // The incarnation that was full, or its successor if one
                    // was bound since: wait for room there. Its death ends
                    // the wait with `NoProc`, and the loop waits for the
                    // next incarnation.
                    let Some(shared) = self.binding.current.load_full() else {
                        msg = back;
                        continue;
                    };
                    match shared.push_user_until(back, deadline) {
                        Err(SendError::NoProc(back)) => msg = back,
                        sent => return sent,
                    }
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
        match self.deliver(make(ReplyTo::new(sink.clone(), addressee)), Some(deadline), false) {
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
            match self.binding.wait_for_next(seen, Some(deadline)) {
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

    /// Which incarnation is bound now (a snapshot): take it *before* using
    /// the child, and hand it to [`wait_for_restart`](Self::wait_for_restart)
    /// when what you sent went to an incarnation that is failing.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation(self.binding.generation())
    }

    /// Blocks this thread until an incarnation after `seen` is bound (the
    /// child was restarted since `seen` was taken; `Ok` at once if it
    /// already was), the supervisor will start no other one
    /// ([`RestartWaitError::Retired`]), or `timeout` passes
    /// ([`RestartWaitError::Timeout`]). The supervisor's bind or retire
    /// wakes it; nothing polls. A `timeout` too large to represent as a
    /// deadline means no deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::supervisor::{ChildSpec, RestartWaitError, Supervisor, SupervisorSpec};
    /// use zbmd_rt::{Actor, ActorError, Context, ExitReason, Runtime};
    ///
    /// struct Worker;
    /// impl Actor for Worker {
    ///     type Msg = ();
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let spec = ChildSpec::worker("worker", || Worker);
    /// let worker = spec.child_ref();
    /// let _sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(spec)).unwrap();
    ///
    /// let seen = worker.incarnation(); // before the crash
    /// worker.exit(ExitReason::error("crash"));
    /// assert_eq!(worker.wait_for_restart(seen, Duration::from_secs(5)), Ok(()));
    /// assert!(worker.incarnation() > seen);
    /// // Nothing newer comes without another crash.
    /// let now = worker.incarnation();
    /// let waited = worker.wait_for_restart(now, Duration::from_millis(1));
    /// assert_eq!(waited, Err(RestartWaitError::Timeout));
    /// rt.shutdown();
    /// ```
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard.
    pub fn wait_for_restart(
        &self,
        seen: Incarnation,
        timeout: Duration,
    ) -> Result<(), RestartWaitError> {
        assert!(
            !crate::runtime::on_shard_thread(),
            "ChildRef::wait_for_restart blocks and must not run on a shard thread"
        );
        match self.binding.wait_for_next(seen.0, Instant::now().checked_add(timeout)) {
            Next::Bound => Ok(()),
            Next::Retired => Err(RestartWaitError::Retired),
            Next::TimedOut => Err(RestartWaitError::Timeout),
        }
    }

    /// Blocks this thread until the current incarnation's mailbox has room
    /// for a message (true; also when that incarnation is dead or there is
    /// none, so that the next send answers, or waits, for itself), or
    /// `timeout` passes with it still full (false). The incarnation's next
    /// turn that takes messages out, or its death, wakes it; nothing polls.
    /// What it sees is a snapshot: another sender may take the room first.
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        assert!(
            !crate::runtime::on_shard_thread(),
            "ChildRef::wait_for_room blocks and must not run on a shard thread"
        );
        let Some(shared) = self.binding.current.load_full() else {
            return true;
        };
        let header = &shared.header;
        let room = || {
            let (_, queued) = shared.mailbox.len();
            let (_, capacity) = shared.mailbox.capacity();
            (header.is_dead() || queued < capacity).then_some(())
        };
        header.progress.wait_until(Instant::now().checked_add(timeout), room).is_some()
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
