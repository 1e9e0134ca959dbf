//! Requests with replies: [`ReplyTo`] and the sinks that receive the answer.
//!
//! An ask creates one sink, shared by the [`ReplyTo`] inside the request and
//! by the timeout timer. Whichever settles it first (reply, drop of the
//! `ReplyTo`, or timeout) delivers; the others find it settled and count
//! their reply as dropped. An actor's sink delivers into the asker's system
//! lane, so a reply is never blocked by a full user lane; a thread's sink
//! wakes the thread blocked in `Runtime::call`. An async caller's
//! [`ReplyTo`] holds the sending half of a [`oneshot`] whose receiver is
//! the caller's [`ReplyFuture`]: no timer shares it (the caller's executor
//! times it out by dropping the future).
//!
//! A `ReplyTo` dropped unanswered tells *why*: `Unhandled` when it was
//! drained unread from the mailbox of the actor it was addressed to, once
//! that actor died (`Shared::drain_dead` marks the thread with the actor it
//! drains), `Dropped` otherwise: a handler dropped it, or it was forwarded
//! to another actor that died with it (the addressee handled the request,
//! which may have had effects). That is what lets `ChildRef::call` resend
//! exactly the requests that had no effect.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::addr::{Signal, TimerEntry};
use super::{ActorId, ActorRef};
use crate::error::AskError;
use crate::runtime::Scheduler;
use crate::sync::oneshot;

/// Where a reply goes.
pub(crate) trait ReplySink<R>: Send + Sync {
    /// Delivers the outcome unless the ask is already settled. Returns
    /// whether this call delivered it.
    fn complete(&self, result: Result<R, AskError>) -> bool;
}

/// A timer's view of an ask: it can only time it out.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self);
}

/// The right to answer one request. Reply with [`ReplyTo::reply`];
/// dropping it unanswered tells the asker at once: [`AskError::Dropped`]
/// when a handler (or whatever held it) dropped it, [`AskError::Unhandled`]
/// when it was still in a mailbox that died unread.
pub struct ReplyTo<R> {
    sink: Option<Sink<R>>,
    /// The actor the request is sent to, when known: only its death with
    /// the request unread makes it `Unhandled`.
    addressee: Option<ActorId>,
}

/// Where one `ReplyTo` delivers.
enum Sink<R> {
    /// An actor's ask or a blocking call: shared with its timeout.
    Shared(Arc<dyn ReplySink<R>>),
    /// An async caller's [`ReplyFuture`]; the scheduler counts a reply that
    /// finds the future gone.
    Future(oneshot::Sender<Result<R, AskError>>, Arc<Scheduler>),
}

impl<R> ReplyTo<R> {
    /// A `ReplyTo` for a request sent to `addressee` (`None`: not an
    /// actor's request, never `Unhandled`).
    pub(crate) fn new(sink: Arc<dyn ReplySink<R>>, addressee: Option<ActorId>) -> Self {
        ReplyTo { sink: Some(Sink::Shared(sink)), addressee }
    }

    /// A `ReplyTo` for a request sent to `addressee` that completes a
    /// [`ReplyFuture`].
    pub(crate) fn future(sched: Arc<Scheduler>, addressee: ActorId) -> (Self, ReplyFuture<R>) {
        let (tx, rx) = oneshot::channel();
        let reply = ReplyTo { sink: Some(Sink::Future(tx, sched)), addressee: Some(addressee) };
        (reply, ReplyFuture { state: FutureState::Waiting(rx) })
    }

    /// Sends the reply. Returns false when it could not be delivered: the
    /// asker timed out, died, dropped its [`ReplyFuture`], or its system lane
    /// was full (each counted as a dropped reply in the runtime's metrics,
    /// except a blocking caller's timeout).
    pub fn reply(mut self, reply: R) -> bool {
        match self.sink.take() {
            Some(Sink::Shared(sink)) => sink.complete(Ok(reply)),
            Some(Sink::Future(tx, sched)) => {
                let delivered = tx.send(Ok(reply)).is_ok();
                if !delivered {
                    sched.count_reply_dropped(); // the future was dropped
                }
                delivered
            }
            None => false,
        }
    }
}

impl<R> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        let drained = DRAINING.with(Cell::get);
        let error = match (drained, self.addressee) {
            (Some(drained), Some(addressee)) if drained == addressee => AskError::Unhandled,
            _ => AskError::Dropped,
        };
        match self.sink.take() {
            Some(Sink::Shared(sink)) => {
                sink.complete(Err(error));
            }
            Some(Sink::Future(tx, _)) => {
                let _ = tx.send(Err(error));
            }
            None => {}
        }
    }
}

thread_local! {
    /// The dead actor whose mailbox this thread drains, if any: a
    /// `ReplyTo` addressed to it and dropped then was never handled.
    static DRAINING: Cell<Option<ActorId>> = const { Cell::new(None) };
}

/// Marks this thread as draining dead actor `id`'s mailbox until dropped
/// (nesting and unwinding restore the previous mark).
pub(crate) struct Draining {
    previous: Option<ActorId>,
}

impl Draining {
    pub(crate) fn begin(id: ActorId) -> Self {
        Draining { previous: DRAINING.with(|drained| drained.replace(Some(id))) }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        DRAINING.with(|flag| flag.set(self.previous));
    }
}

/// The reply to an [`ActorRef::ask_async`](super::ActorRef::ask_async) (or
/// [`ChildRef::ask_async`](crate::supervisor::ChildRef::ask_async)): a
/// `Future` any executor can await, which blocks no thread.
///
/// It resolves to the reply, or to the error that settled the request:
/// [`AskError::Full`] or [`AskError::NoProc`] when the request was not
/// delivered, [`AskError::Dropped`] or [`AskError::Unhandled`] when the
/// `ReplyTo` was dropped unanswered. It has no timeout of its own: wrap it in
/// the executor's (`tokio::time::timeout(d, fut)`). Dropping it (a timeout
/// does) tells the replier: its [`ReplyTo::reply`] returns false, and the
/// reply is dropped and counted, nothing leaks. Polling it again after it
/// returned `Ready` returns `Pending`.
#[must_use = "a ReplyFuture does nothing unless awaited; dropping it discards the reply"]
pub struct ReplyFuture<R> {
    state: FutureState<R>,
}

enum FutureState<R> {
    /// The request was delivered (or at least sent): wait for the reply.
    Waiting(oneshot::Receiver<Result<R, AskError>>),
    /// Settled before it was awaited (not delivered); taken by the poll.
    Ready(Option<AskError>),
}

impl<R> ReplyFuture<R> {
    /// A future already settled with `error` (a send that failed).
    pub(crate) fn failed(error: AskError) -> Self {
        ReplyFuture { state: FutureState::Ready(Some(error)) }
    }
}

impl<R> Future for ReplyFuture<R> {
    type Output = Result<R, AskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // `ReplyFuture` is `Unpin`: both states are.
        match &mut self.get_mut().state {
            FutureState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
                // The sender is inside a `ReplyTo`, whose drop always sends;
                // a sender dropped unsent is still a dropped request.
                Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(AskError::Dropped)),
                Poll::Pending => Poll::Pending,
            },
            FutureState::Ready(error) => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl<R> fmt::Debug for ReplyFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyFuture")
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// The sink of an actor's ask: maps the reply into the asker's messages
/// with the asker's closure, run once by whichever outcome settles the ask.
pub(crate) struct ActorSink<R, M, F> {
    asker: ActorRef<M>,
    /// Taken by the one `complete` that wins `settled`; the lock is never
    /// contended (the flag admits one taker) and exists so that a closure,
    /// not only a `fn`, can be called once through `&self`.
    on_reply: Mutex<Option<F>>,
    settled: AtomicBool,
    /// The timeout timer, set before the request leaves.
    timer: OnceLock<TimerEntry>,
    reply: PhantomData<fn(R)>,
}

impl<R, M: Send + 'static, F> ActorSink<R, M, F>
where
    F: FnOnce(Result<R, AskError>) -> M + Send + 'static,
{
    pub(crate) fn new(asker: ActorRef<M>, on_reply: F) -> Self {
        ActorSink {
            asker,
            on_reply: Mutex::new(Some(on_reply)),
            settled: AtomicBool::new(false),
            timer: OnceLock::new(),
            reply: PhantomData,
        }
    }

    /// Records the ask's timeout timer, so the answer can free it.
    pub(crate) fn set_timer(&self, timer: TimerEntry) {
        let _ = self.timer.set(timer);
    }

    /// Marks the ask settled without delivering anything.
    pub(crate) fn settle(&self) {
        self.settled.store(true, Ordering::Release);
    }
}

impl<R, M, F> ReplySink<R> for ActorSink<R, M, F>
where
    R: Send + 'static,
    M: Send + 'static,
    F: FnOnce(Result<R, AskError>) -> M + Send + 'static,
{
    fn complete(&self, result: Result<R, AskError>) -> bool {
        let sched = &self.asker.shared.header.sched;
        if self.settled.swap(true, Ordering::AcqRel) {
            if result.is_ok() {
                sched.count_reply_dropped(); // a late reply, after the timeout
            }
            return false;
        }
        // Winning `settled` makes this the only taker, so the closure is here.
        let on_reply = self.on_reply.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        let Some(on_reply) = on_reply else { return false };
        let msg = on_reply(result);
        let signal = match self.timer.get() {
            Some(&timer) => Signal::Answer(msg, timer),
            None => Signal::Reply(msg),
        };
        if self.asker.shared.push_signal(signal).is_err() {
            sched.count_reply_dropped(); // the asker is dead or its lane full
            return false;
        }
        true
    }
}

impl<R, M, F> Expire for ActorSink<R, M, F>
where
    R: Send + 'static,
    M: Send + 'static,
    F: FnOnce(Result<R, AskError>) -> M + Send + 'static,
{
    fn expire(&self) {
        self.complete(Err(AskError::Timeout));
    }
}

/// The sink of a blocking call from a thread outside the runtime.
pub(crate) struct ThreadSink<R> {
    result: Mutex<Option<Result<R, AskError>>>,
    ready: Condvar,
    settled: AtomicBool,
}

impl<R> ThreadSink<R> {
    pub(crate) fn new() -> Self {
        ThreadSink {
            result: Mutex::new(None),
            ready: Condvar::new(),
            settled: AtomicBool::new(false),
        }
    }

    /// Blocks until the reply arrives or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> Result<R, AskError> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.result.lock().unwrap_or_else(|poison| poison.into_inner());
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            let now = Instant::now();
            if now >= deadline {
                if self.settled.swap(true, Ordering::AcqRel) {
                    // The reply won the race just now and is being stored:
                    // wait for it (the replier needs the lock we release).
                    slot = self
                        .ready
                        .wait_while(slot, |slot| slot.is_none())
                        .unwrap_or_else(|poison| poison.into_inner());
                    continue;
                }
                return Err(AskError::Timeout);
            }
            slot = self
                .ready
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }
}

impl<R: Send> ReplySink<R> for ThreadSink<R> {
    fn complete(&self, result: Result<R, AskError>) -> bool {
        if self.settled.swap(true, Ordering::AcqRel) {
            return false;
        }
        *self.result.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(result);
        self.ready.notify_one();
        true
    }
}
