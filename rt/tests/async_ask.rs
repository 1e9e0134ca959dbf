//! Async callers: a task of any executor (tokio here) awaits an actor's
//! reply through `ActorRef::ask_async` without blocking a thread, bounds it
//! with the executor's timeout, and every way a request can end reaches the
//! future: a reply (before or after the first poll), a dropped `ReplyTo`, a
//! target that is gone, and a future dropped before the reply (the actor's
//! `reply` then returns false and the reply is freed).
#![cfg(not(zbmd_loom))]

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use common::*;
use zbmd_rt::{Actor, ActorError, AskError, Context, ExitReason, ReplyTo};

/// Answers, drops, or holds requests, as told.
struct Keeper {
    held: Option<ReplyTo<Arc<u64>>>,
    events: Sender<Event>,
}

#[derive(Debug, PartialEq)]
enum Event {
    /// A `Hold` request is held.
    Holding,
    /// What `reply` returned.
    Replied(bool),
}

enum K {
    Get(ReplyTo<u64>),
    /// Replies, then reports what `reply` returned.
    GetAndTell(ReplyTo<u64>),
    Drop(ReplyTo<u64>),
    Hold(ReplyTo<Arc<u64>>),
    /// Answers the held request with this value and reports the outcome.
    Release(Arc<u64>),
}

impl Actor for Keeper {
    type Msg = K;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: K) -> Result<(), ActorError> {
        match msg {
            K::Get(reply) => {
                reply.reply(7);
            }
            K::GetAndTell(reply) => {
                let _ = self.events.send(Event::Replied(reply.reply(7)));
            }
            K::Drop(reply) => drop(reply),
            K::Hold(reply) => {
                self.held = Some(reply);
                let _ = self.events.send(Event::Holding);
            }
            K::Release(value) => {
                let delivered = self.held.take().is_some_and(|reply| reply.reply(value));
                let _ = self.events.send(Event::Replied(delivered));
            }
        }
        Ok(())
    }
}

fn keeper(rt: &zbmd_rt::Runtime) -> (zbmd_rt::ActorRef<K>, std::sync::mpsc::Receiver<Event>) {
    let (events, rx) = channel();
    (rt.spawn(Keeper { held: None, events }).unwrap(), rx)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

#[test]
fn a_tokio_task_awaits_an_actors_reply() {
    let rt = runtime(1);
    let (actor, _) = keeper(&rt);
    let tokio = current_thread();
    // Two requests in flight at once on the one executor thread: neither
    // blocks it.
    let (a, b) =
        tokio.block_on(async { tokio::join!(actor.ask_async(K::Get), actor.ask_async(K::Get)) });
    assert_eq!((a, b), (Ok(7), Ok(7)));
    rt.shutdown();
}

#[test]
fn a_dropped_reply_to_resolves_to_dropped() {
    let rt = runtime(1);
    let (actor, _) = keeper(&rt);
    let outcome = current_thread().block_on(actor.ask_async(K::Drop));
    assert_eq!(outcome, Err(AskError::Dropped));
    rt.shutdown();
}

#[test]
fn a_request_to_a_dead_actor_resolves_to_noproc_at_once() {
    let rt = runtime(1);
    let (actor, _) = keeper(&rt);
    rt.exit(&actor.pid(), ExitReason::Kill);
    eventually("the actor to die", || !actor.is_alive());
    let mut future = pin!(actor.ask_async(K::Get));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(Err(AskError::NoProc)));
    rt.shutdown();
}

#[test]
fn a_reply_that_arrives_before_the_first_poll_is_ready_at_the_first_poll() {
    let rt = runtime(1);
    let (actor, events) = keeper(&rt);
    let mut future = pin!(actor.ask_async(K::GetAndTell));
    assert_eq!(events.recv_timeout(PATIENCE), Ok(Event::Replied(true)));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    rt.shutdown();
}

#[test]
fn a_future_dropped_before_the_reply_makes_reply_return_false_and_frees_it() {
    let rt = runtime(1);
    let (actor, events) = keeper(&rt);
    let future = actor.ask_async(K::Hold);
    assert_eq!(events.recv_timeout(PATIENCE), Ok(Event::Holding));
    drop(future);
    let value = Arc::new(42);
    actor.try_send(K::Release(value.clone())).unwrap();
    assert_eq!(events.recv_timeout(PATIENCE), Ok(Event::Replied(false)));
    assert_eq!(Arc::strong_count(&value), 1, "the undelivered reply was freed");
    rt.shutdown();
}

#[test]
fn the_executors_timeout_bounds_the_wait_and_the_late_reply_is_refused() {
    let rt = runtime(1);
    let (actor, events) = keeper(&rt);
    let tokio = current_thread();
    let outcome = tokio.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), actor.ask_async(K::Hold)).await
    });
    assert!(outcome.is_err(), "the timeout elapsed: {outcome:?}");
    assert_eq!(events.recv_timeout(PATIENCE), Ok(Event::Holding));
    actor.try_send(K::Release(Arc::new(1))).unwrap();
    assert_eq!(events.recv_timeout(PATIENCE), Ok(Event::Replied(false)));
    rt.shutdown();
}

#[test]
fn a_multi_thread_runtime_awaits_many_replies_concurrently() {
    let rt = runtime(2);
    let (actor, _) = keeper(&rt);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let actor = actor.clone();
            tokio.spawn(async move { actor.ask_async(K::Get).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(tokio.block_on(task).unwrap(), Ok(7));
    }
    rt.shutdown();
}

/// A future that is `Send` can move between an executor's worker threads.
#[test]
fn reply_futures_are_send_and_unpin() {
    fn send_unpin<T: Send + Unpin>(_: &T) {}
    let rt = runtime(1);
    let (actor, _) = keeper(&rt);
    let future = actor.ask_async(K::Get);
    send_unpin(&future);
    assert_eq!(current_thread().block_on(future), Ok(7));
    rt.shutdown();
}
