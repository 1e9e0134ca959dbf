//! loom models of the reply oneshot (`zbmd_rt::sync::oneshot`): a sender
//! settles (sends, or is dropped unsent) while the receiver polls, replaces
//! its waker, or is dropped. In every interleaving within the preemption
//! bound the receiver sees the value exactly once, a task that returned
//! `Pending` is woken, and a value the receiver will never take is handed
//! back to the sender or freed with the channel, never both, never leaked.
#![cfg(zbmd_loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zbmd_rt::sync::oneshot::{self, Canceled, Receiver};

mod common;
use common::model;

/// A waker that counts its wakes (loom tracks the counter).
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::Release);
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

fn waker() -> (std::sync::Arc<Count>, Waker) {
    let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

fn poll<T>(rx: &mut Receiver<T>, waker: &Waker) -> Poll<Result<T, Canceled>> {
    Pin::new(rx).poll(&mut Context::from_waker(waker))
}

/// Polls until ready, yielding between `Pending`s only after checking that
/// a wake-up is owed or will come: a `Pending` with no wake after the
/// sender finished would be a lost wake-up (the model would spin forever,
/// which loom reports).
fn wait<T>(rx: &mut Receiver<T>, count: &Count, waker: &Waker) -> Result<T, Canceled> {
    loop {
        let seen = count.0.load(Ordering::Acquire);
        match poll(rx, waker) {
            Poll::Ready(outcome) => return outcome,
            Poll::Pending => {
                while count.0.load(Ordering::Acquire) == seen {
                    thread::yield_now();
                }
            }
        }
    }
}

#[test]
fn a_send_races_the_poll_and_is_received_once() {
    model(|| {
        let (tx, mut rx) = oneshot::channel::<u32>();
        let sender = thread::spawn(move || tx.send(7));
        let (count, waker) = waker();
        assert_eq!(wait(&mut rx, &count, &waker), Ok(7));
        assert_eq!(sender.join().unwrap(), Ok(()));
    });
}

#[test]
fn a_sender_dropped_unsent_resolves_to_canceled() {
    model(|| {
        let (tx, mut rx) = oneshot::channel::<u32>();
        let sender = thread::spawn(move || drop(tx));
        let (count, waker) = waker();
        assert_eq!(wait(&mut rx, &count, &waker), Err(Canceled));
        sender.join().unwrap();
    });
}

#[test]
fn a_waker_replaced_while_the_send_lands_is_still_woken() {
    model(|| {
        let (tx, mut rx) = oneshot::channel::<u32>();
        let sender = thread::spawn(move || tx.send(7));
        let (first_count, first) = waker();
        let (count, second) = waker();
        let _ = first_count;
        match poll(&mut rx, &first) {
            Poll::Ready(outcome) => assert_eq!(outcome, Ok(7)),
            // The task moved: the second waker must be the one woken.
            Poll::Pending => assert_eq!(wait(&mut rx, &count, &second), Ok(7)),
        }
        assert_eq!(sender.join().unwrap(), Ok(()));
    });
}

#[test]
fn a_receiver_dropped_while_the_send_lands_frees_the_value_once() {
    model(|| {
        let value = std::sync::Arc::new(());
        let (tx, rx) = oneshot::channel::<std::sync::Arc<()>>();
        let sender = {
            let value = value.clone();
            thread::spawn(move || tx.send(value).err())
        };
        drop(rx);
        let handed_back = sender.join().unwrap();
        // Either handed back to the sender, or freed with the channel.
        drop(handed_back);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    });
}
