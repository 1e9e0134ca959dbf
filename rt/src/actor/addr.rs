//! Addresses: the part of an actor every sender can reach.
//!
//! Each actor has a `Shared<M>` (its header and its two-lane mailbox) behind
//! an `Arc`; [`ActorRef<M>`] and [`Pid`] hold that `Arc`, the shard that runs
//! the actor holds its private `ActorCell`. A sender pushes into the mailbox
//! and then *notifies*: the header's scheduling state decides whether this
//! send is the one that must put the actor on a run queue.
//!
//! The scheduling state itself, and why no wake-up is lost, is
//! [`RunState`](crate::sync::run_state) (checked with loom).
//!
//! A thread outside the runtime that must wait for the actor (room in its
//! full mailbox: [`ActorRef::send_timeout`]; its death: the runtime's
//! shutdown) sleeps on the header's `progress` [`Event`], which the shard
//! notifies after every turn that took messages out of the mailbox, and at
//! the actor's death. A turn, not a message: the notify's fence is paid once
//! per turn (up to the reduction budget of messages), and a waiting sender
//! finds the room the whole turn made.

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::sync::event::Event;

use super::cell::Runnable;
use super::{ActorId, Down, ExitReason, MonitorRef};
use crate::error::{AskError, SendError};
use crate::runtime::Scheduler;
use crate::sync::mpsc::Mailbox;
use crate::sync::run_state::{Notify, RunState};
use zbmd_alloc::RawSlot;

/// What travels in the system lane: signals that user traffic cannot block.
pub(crate) enum Signal<M> {
    /// A runtime signal (links, exits, monitors, start).
    Sys(SysSignal),
    /// A message for the actor that travels in the system lane so a full
    /// user lane cannot lose it: a blocking job's or an I/O operation's
    /// result, a redelivered or self-scheduled message.
    Reply(M),
    /// The answer to one of the actor's asks (or its timeout), already
    /// mapped to its message type, with the ask's timeout timer: the shard
    /// that set it frees its wheel entry when the answer is handled.
    Answer(M, TimerEntry),
}

/// Where a timer lives: the shard whose wheel holds it, and its key there.
pub(crate) type TimerEntry = (usize, crate::timer::TimerKey);

/// Signals between actors and from the runtime, as OTP defines them.
pub(crate) enum SysSignal {
    /// Run the `started` hook.
    Start,
    /// `from` linked itself to the receiver.
    Link(Pid),
    /// `from` removed its link.
    Unlink(ActorId),
    /// An exit signal. `direct` is true for [`Context::exit`](super::Context::exit)
    /// (where `kill` is untrappable) and false when it comes through a link.
    Exit { from: ActorId, reason: ExitReason, direct: bool },
    /// `watcher` monitors the receiver.
    Monitor { watcher: Pid, monitor: MonitorRef },
    /// The watcher removed this monitor.
    Demonitor(MonitorRef),
    /// A monitored actor went down.
    Down(Down),
    /// The runtime stops the actor (shutdown): not trappable, but its
    /// `stopping` hook runs.
    Stop(ExitReason),
}

/// A pointer to an actor's private cell, as it travels through run queues.
///
/// Whoever holds it may run the actor only while holding the SCHEDULED
/// token that put it on the queue; the cell is freed only after the actor is
/// DEAD, which no queue entry can outlive (see `ActorCell`).
#[derive(Clone, Copy)]
pub(crate) struct RunPtr(pub(crate) NonNull<dyn Runnable>);

// SAFETY: a `RunPtr` is a token moved between shards through the run queues;
// the cell behind it is `Send` (every actor is `Send`), and the scheduling
// state machine gives it to one shard at a time.
unsafe impl Send for RunPtr {}
// SAFETY: as above; sharing the pointer value itself grants nothing, only
// the SCHEDULED token does.
unsafe impl Sync for RunPtr {}

/// The header every sender reaches: identity and scheduling state.
pub(crate) struct Header {
    pub(crate) id: ActorId,
    pub(crate) name: &'static str,
    pub(crate) pinned: bool,
    /// Never fault this actor's messages (`SpawnOptions::fault_exempt`).
    pub(crate) fault_exempt: bool,
    state: RunState,
    /// The shard that runs the actor now (the stealing shard after a steal).
    shard: AtomicU16,
    /// Held by whoever drains a dead actor's mailbox (`dead.rs`).
    pub(super) drain_lock: AtomicBool,
    /// Notified after each turn that took messages out of the mailbox and
    /// at death: senders waiting for room and threads waiting for the
    /// death sleep on it (see the module docs).
    pub(crate) progress: Event,
    /// Whether the actor registered a name (so its death must release it).
    registered: AtomicBool,
    /// Set once at spawn, before the header is shared; read-only afterwards.
    runnable: std::cell::Cell<Option<RunPtr>>,
    /// The pool slot of the cell, when it came from a shard's pool: set at
    /// spawn like `runnable`, taken once by whoever frees the dead cell.
    cell_slot: std::cell::Cell<Option<RawSlot>>,
    pub(crate) sched: Arc<Scheduler>,
}

// SAFETY: `runnable` and `cell_slot` are the only fields that are not
// `Sync`. Both are written once by the spawning thread before any other
// thread can reach the header (see `Header::set_cell`); afterwards
// `runnable` is only read, and `cell_slot` is taken once, by the holder of
// the dead actor's last token (`take_cell_slot`), when no other thread uses
// the cell.
unsafe impl Sync for Header {}

impl Header {
    pub(crate) fn new(
        id: ActorId,
        name: &'static str,
        pinned: bool,
        sched: Arc<Scheduler>,
    ) -> Self {
        Header {
            id,
            name,
            pinned,
            fault_exempt: false,
            state: RunState::new(),
            shard: AtomicU16::new(id.shard),
            drain_lock: AtomicBool::new(false),
            progress: Event::new(),
            registered: AtomicBool::new(false),
            runnable: std::cell::Cell::new(None),
            cell_slot: std::cell::Cell::new(None),
            sched,
        }
    }

    /// Exempts the actor from fault injection (or not); set before the
    /// header is shared.
    pub(crate) fn with_fault_exempt(mut self, exempt: bool) -> Self {
        self.fault_exempt = exempt;
        self
    }

    /// Records the cell to schedule, and its pool slot if it has one.
    ///
    /// # Safety
    ///
    /// Must be called once, by the spawning thread, before the header is
    /// reachable from any other thread.
    pub(crate) unsafe fn set_cell(&self, (ptr, slot): (RunPtr, Option<RawSlot>)) {
        debug_assert!(self.runnable.get().is_none(), "cell set twice");
        self.runnable.set(Some(ptr));
        self.cell_slot.set(slot);
    }

    /// Takes the cell's pool slot, to free the cell.
    ///
    /// # Safety
    ///
    /// Only the holder of the dead actor's last pointer to its cell may call
    /// it (see `runtime::free_cell`).
    pub(crate) unsafe fn take_cell_slot(&self) -> Option<RawSlot> {
        self.cell_slot.take()
    }

    pub(crate) fn set_registered(&self) {
        self.registered.store(true, Ordering::Release);
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state.is_dead()
    }

    pub(crate) fn shard(&self) -> usize {
        usize::from(self.shard.load(Ordering::Acquire))
    }

    /// Called by the shard that dequeued the actor: SCHEDULED → RUNNING.
    pub(crate) fn begin_turn(&self, shard: usize) {
        self.shard.store(shard as u16, Ordering::Relaxed);
        self.state.begin_turn();
    }

    /// Ends a turn. Returns true when the actor must go back on a run queue
    /// (it has more work, was notified while running, or a send raced the
    /// idling: `has_claims`); the caller keeps the SCHEDULED token then.
    pub(crate) fn end_turn(&self, more_work: bool, has_claims: impl FnOnce() -> bool) -> bool {
        self.state.end_turn(more_work, has_claims)
    }

    /// Marks the actor dead. After this no sender enqueues it, and a sender
    /// whose push the dying shard's drain may have missed drains it itself.
    pub(crate) fn mark_dead(&self) {
        self.state.mark_dead();
    }

    /// Makes sure the actor will run after a push into its mailbox. Returns
    /// false if the actor is dead, in which case the caller drains the
    /// mailbox (the push may have landed after the dying shard's last look).
    pub(crate) fn notify(&self) -> bool {
        match self.state.notify() {
            Notify::Schedule => {
                self.enqueue();
                true
            }
            Notify::Nothing => true,
            Notify::Dead => false,
        }
    }

    fn enqueue(&self) {
        let ptr = self.runnable.get().expect("runnable is set before the header is shared");
        self.sched.enqueue(ptr, self.shard(), self.pinned);
    }
}

/// The shared part of an actor: header and mailbox.
pub(crate) struct Shared<M> {
    pub(crate) header: Header,
    pub(crate) mailbox: Mailbox<Signal<M>, M>,
}

impl<M: Send + 'static> Shared<M> {
    pub(crate) fn push_user(&self, msg: M) -> Result<(), SendError<M>> {
        if self.header.is_dead() {
            return Err(SendError::NoProc(msg));
        }
        if let Err(full) = self.mailbox.send(msg) {
            self.header.sched.count_mailbox_full();
            return Err(SendError::Full(full.into_inner()));
        }
        if !self.header.notify() {
            // It died after our check: the message is a dead letter, counted
            // by the drain (it was accepted, as a send to a live actor that
            // then crashes would be).
            self.drain_dead();
        }
        Ok(())
    }

    /// Pushes a user message, waiting until `deadline` (`None`: for good)
    /// for room in a full mailbox: asleep on `progress`, woken by the turn
    /// that makes room or by the actor's death. Answers `Full` when the
    /// deadline passes with the mailbox still full, `NoProc` when the actor
    /// is dead. Blocks: never call it on a shard thread.
    pub(crate) fn push_user_until(
        &self,
        msg: M,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<M>> {
        let mut msg = match self.push_user(msg) {
            Err(SendError::Full(back)) => back,
            sent => return sent,
        };
        loop {
            // Register before the retry, so that room made after the retry
            // failed wakes the wait below (`sync::event`).
            let ticket = self.header.progress.prepare();
            msg = match self.push_user(msg) {
                Err(SendError::Full(back)) => back,
                sent => return sent,
            };
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(SendError::Full(msg));
            }
            // Woken or timed out, the loop tries again: the last try comes
            // after the deadline.
            ticket.wait(deadline);
        }
    }

    /// Pushes into the system lane; see `Header::mark_dead` for the race
    /// with a dying actor.
    pub(crate) fn push_signal(&self, signal: Signal<M>) -> Result<(), SendError<Signal<M>>> {
        if self.header.is_dead() {
            return Err(SendError::NoProc(signal));
        }
        if let Err(full) = self.mailbox.send_system(signal) {
            self.header.sched.count_signal_dropped();
            return Err(SendError::Full(full.into_inner()));
        }
        if !self.header.notify() {
            self.drain_dead();
        }
        Ok(())
    }
}

/// What a [`Pid`] can do without knowing the actor's message type.
pub(crate) trait SignalTarget: Send + Sync {
    fn header(&self) -> &Header;
    /// Sends a system signal; hands it back if the actor is dead or its
    /// system lane is full.
    fn send_sys(&self, signal: SysSignal) -> Result<(), SysSignal>;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<M: Send + 'static> SignalTarget for Shared<M> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn send_sys(&self, signal: SysSignal) -> Result<(), SysSignal> {
        self.push_signal(Signal::Sys(signal)).map_err(|e| match e.into_inner() {
            Signal::Sys(signal) => signal,
            Signal::Reply(_) | Signal::Answer(..) => unreachable!("a system signal went in"),
        })
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A typed reference to an actor: send it messages of type `M`.
///
/// Cheap to clone. It names one incarnation ([`ActorId`]): once that actor
/// is dead, every send answers [`SendError::NoProc`], and nothing is ever
/// delivered to another actor that reuses the slot. (To follow a supervised
/// child across restarts, use its [`ChildRef`](crate::supervisor::ChildRef).)
///
/// From a thread outside the runtime: [`try_send`](Self::try_send),
/// [`send_timeout`](Self::send_timeout), a blocking [`call`](Self::call);
/// from an async task: [`ask_async`](Self::ask_async). Actors use
/// [`Context::ask`](super::Context::ask).
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
///
/// struct Counter(u64);
/// enum Msg {
///     Add(u64),
///     Get(ReplyTo<u64>),
/// }
/// impl Actor for Counter {
///     type Msg = Msg;
///     fn handle(&mut self, _: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
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
/// counter.try_send(Msg::Add(2)).unwrap();
/// counter.send_timeout(Msg::Add(3), Duration::from_secs(1)).unwrap();
/// // Messages from one sender arrive in order, so the Get sees both adds.
/// assert_eq!(counter.call(Msg::Get, Duration::from_secs(5)), Ok(5));
/// rt.shutdown();
/// ```
pub struct ActorRef<M> {
    pub(crate) shared: Arc<Shared<M>>,
}

impl<M: Send + 'static> ActorRef<M> {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.shared.header.id
    }

    /// An untyped handle, for links, monitors and exits.
    pub fn pid(&self) -> Pid {
        Pid { target: self.shared.clone() }
    }

    /// Whether the actor is still alive (a snapshot).
    pub fn is_alive(&self) -> bool {
        !self.shared.header.is_dead()
    }

    /// Sends without waiting: the message is queued, or handed back in
    /// [`SendError::Full`] or [`SendError::NoProc`]. Messages from one sender
    /// to one receiver arrive in the order they were sent.
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        self.shared.push_user(msg)
    }

    /// Sends a request and blocks this thread until the reply or `timeout`:
    /// `make` builds the message around the [`ReplyTo`](crate::ReplyTo) the
    /// actor answers with (an enum variant such as `Msg::Get` is such a
    /// function). The same as [`Runtime::call`](crate::Runtime::call).
    ///
    /// Answers the reply, or [`AskError::Timeout`], [`AskError::Full`] /
    /// [`AskError::NoProc`] (not delivered), [`AskError::Dropped`] (the actor
    /// took the request and dropped it unanswered, or crashed handling it),
    /// [`AskError::Unhandled`] (it died before handling it), or
    /// [`AskError::ZeroTimeout`]. It is sent once, to this incarnation only;
    /// [`ChildRef::call`](crate::supervisor::ChildRef::call) follows a
    /// supervised child through restarts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::{Actor, ActorError, AskError, Context, ReplyTo, Runtime};
    ///
    /// struct Doubler;
    /// impl Actor for Doubler {
    ///     type Msg = (u32, ReplyTo<u32>);
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, (n, reply): Self::Msg)
    ///         -> Result<(), ActorError> {
    ///         if n > 0 {
    ///             reply.reply(2 * n);
    ///         } // else: `reply` is dropped unanswered
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let doubler = rt.spawn(Doubler).unwrap();
    /// let timeout = Duration::from_secs(5);
    /// assert_eq!(doubler.call(|reply| (21, reply), timeout), Ok(42));
    /// assert_eq!(doubler.call(|reply| (0, reply), timeout), Err(AskError::Dropped));
    /// rt.shutdown();
    /// ```
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard.
    pub fn call<R: Send + 'static>(
        &self,
        make: impl FnOnce(crate::ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        crate::runtime::call_blocking(self, make, timeout)
    }

    /// Sends a request and returns a future of the reply, for an async task
    /// of any executor: awaiting it blocks no thread. `make` builds the
    /// message around the [`ReplyTo`](crate::ReplyTo) as for
    /// [`call`](Self::call).
    ///
    /// The [`ReplyFuture`](crate::ReplyFuture) has no timeout of its own
    /// (the runtime's timers live on its shards, out of an outside task's
    /// reach): bound it with the executor's timer, e.g.
    /// `tokio::time::timeout(d, actor.ask_async(Msg::Get)).await`. A future
    /// dropped before the reply (as a timeout drops it) makes the actor's
    /// `reply` return false; the reply is counted as dropped. A request
    /// that cannot be delivered resolves at once to `Full` or `NoProc`.
    ///
    /// ```
    /// use std::future::Future;
    /// use std::pin::pin;
    /// use std::task::{Context as TaskContext, Poll, Waker};
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
    ///
    /// struct Echo;
    /// impl Actor for Echo {
    ///     type Msg = (String, ReplyTo<String>);
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, (s, reply): Self::Msg)
    ///         -> Result<(), ActorError> {
    ///         reply.reply(s);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let echo = rt.spawn(Echo).unwrap();
    /// let mut reply = pin!(echo.ask_async(|reply| ("hi".to_string(), reply)));
    /// // Any executor drives it; here, a bare poll loop (tokio: `.await`).
    /// let mut cx = TaskContext::from_waker(Waker::noop());
    /// let answer = loop {
    ///     match reply.as_mut().poll(&mut cx) {
    ///         Poll::Ready(answer) => break answer,
    ///         Poll::Pending => std::thread::yield_now(),
    ///     }
    /// };
    /// assert_eq!(answer.as_deref(), Ok("hi"));
    /// rt.shutdown();
    /// ```
    pub fn ask_async<R: Send + 'static>(
        &self,
        make: impl FnOnce(crate::ReplyTo<R>) -> M,
    ) -> crate::ReplyFuture<R> {
        let (reply, future) = crate::ReplyTo::future(self.shared.header.sched.clone(), self.id());
        match self.try_send(make(reply)) {
            Ok(()) => future,
            Err(SendError::Full(_)) => crate::ReplyFuture::failed(AskError::Full),
            Err(SendError::NoProc(_)) => crate::ReplyFuture::failed(AskError::NoProc),
        }
    }

    /// Sends from a thread outside the runtime, waiting up to `timeout` for
    /// room in a full mailbox. Answers `Full` when the time runs out and
    /// `NoProc` when the actor is dead.
    ///
    /// # Panics
    ///
    /// On a shard thread: blocking there would stall every actor of the
    /// shard. Actors use [`try_send`](Self::try_send).
    ///
    /// The wait sleeps until the actor's next turn that takes messages out
    /// of the mailbox (or its death) wakes it; nothing polls. A `timeout`
    /// too large to represent as a deadline means no deadline.
    pub fn send_timeout(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        assert!(
            !crate::runtime::on_shard_thread(),
            "ActorRef::send_timeout blocks and must not run on a shard thread; use try_send"
        );
        self.shared.push_user_until(msg, Instant::now().checked_add(timeout))
    }
}

impl<M> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        ActorRef { shared: self.shared.clone() }
    }
}

/// Two refs are equal when they name the same incarnation: the same
/// [`ActorId`], which includes the runtime, so refs from two runtimes of one
/// process never compare equal.
impl<M> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.shared.header.id == other.shared.header.id
    }
}

impl<M> Eq for ActorRef<M> {}

/// Hashes the [`ActorId`], as equality compares it.
impl<M> std::hash::Hash for ActorRef<M> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.shared.header.id.hash(state);
    }
}

impl<M> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({} {})", self.shared.header.name, self.shared.header.id)
    }
}

/// An untyped reference to an actor: the target of links, monitors and
/// exit signals, and what the registry stores.
#[derive(Clone)]
pub struct Pid {
    pub(crate) target: Arc<dyn SignalTarget>,
}

impl Pid {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.target.header().id
    }

    /// Whether the actor is still alive (a snapshot).
    pub fn is_alive(&self) -> bool {
        !self.target.header().is_dead()
    }

    /// The typed reference, if the actor handles messages of type `M`.
    pub fn typed<M: Send + 'static>(&self) -> Option<ActorRef<M>> {
        let any = self.target.clone().into_any();
        any.downcast::<Shared<M>>().ok().map(|shared| ActorRef { shared })
    }
}

/// Two pids are equal when they name the same incarnation (the same
/// [`ActorId`], runtime included).
impl PartialEq for Pid {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Pid {}

/// Hashes the [`ActorId`], as equality compares it.
impl std::hash::Hash for Pid {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({} {})", self.target.header().name, self.id())
    }
}
