//! Requests with replies: [`ReplyTo`] and the sinks that receive the answer.
//!
//! An ask creates one sink, shared by the [`ReplyTo`] inside the request and
//! by the timeout timer. Whichever settles it first (reply, drop of the
//! `ReplyTo`, or timeout) delivers; the others find it settled and count
//! their reply as dropped. An actor's sink delivers into the asker's system
//! lane, so a reply is never blocked by a full user lane; a thread's sink
//! wakes the thread blocked in `Runtime::call`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::ActorRef;
use super::addr::{Signal, TimerEntry};
use crate::error::AskError;

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
/// dropping it unanswered tells the asker [`AskError::Dropped`] at once.
pub struct ReplyTo<R> {
    sink: Option<Arc<dyn ReplySink<R>>>,
}

impl<R> ReplyTo<R> {
    pub(crate) fn new(sink: Arc<dyn ReplySink<R>>) -> Self {
        ReplyTo { sink: Some(sink) }
    }

    /// Sends the reply. Returns false when it could not be delivered: the
    /// asker timed out, died, or its system lane was full (each counted as a
    /// dropped reply in the runtime's metrics).
    pub fn reply(mut self, reply: R) -> bool {
        match self.sink.take() {
            Some(sink) => sink.complete(Ok(reply)),
            None => false,
        }
    }
}

impl<R> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.complete(Err(AskError::Dropped));
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// The sink of an actor's ask: maps the reply into the asker's messages.
pub(crate) struct ActorSink<R, M> {
    asker: ActorRef<M>,
    on_reply: fn(Result<R, AskError>) -> M,
    settled: AtomicBool,
    /// The timeout timer, set before the request leaves.
    timer: OnceLock<TimerEntry>,
}

impl<R, M: Send + 'static> ActorSink<R, M> {
    pub(crate) fn new(asker: ActorRef<M>, on_reply: fn(Result<R, AskError>) -> M) -> Self {
        ActorSink { asker, on_reply, settled: AtomicBool::new(false), timer: OnceLock::new() }
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

impl<R: Send + 'static, M: Send + 'static> ReplySink<R> for ActorSink<R, M> {
    fn complete(&self, result: Result<R, AskError>) -> bool {
        let sched = &self.asker.shared.header.sched;
        if self.settled.swap(true, Ordering::AcqRel) {
            if result.is_ok() {
                sched.count_reply_dropped(); // a late reply, after the timeout
            }
            return false;
        }
        let msg = (self.on_reply)(result);
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

impl<R: Send + 'static, M: Send + 'static> Expire for ActorSink<R, M> {
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
