//! A single-value channel whose receiver is a `Future`: how an actor hands a
//! reply to a task of any executor (tokio, async-std, a hand-written
//! `block_on`) without either side blocking a thread.
//!
//! # Design
//!
//! The protocol of tokio's `oneshot` (and of `futures::channel::oneshot`
//! before it), reduced to one state word and two cells: the value, and the
//! receiver's [`Waker`]. The word holds four flags, each set once except
//! `WAKER`:
//!
//! * `VALUE`: the sender wrote the value cell;
//! * `SENDER_GONE`: the sender was dropped without sending;
//! * `WAKER`: the waker cell holds the receiver's waker;
//! * `CLOSED`: the receiver was dropped.
//!
//! Ownership of the cells moves with the flags:
//!
//! 1. The value cell belongs to the sender until it sets `VALUE` (Release),
//!    and to the receiver once it has seen `VALUE` (Acquire). A sender whose
//!    `fetch_or(VALUE)` finds `CLOSED` takes its value back: the receiver set
//!    `CLOSED` after its last look and never looks again.
//! 2. The waker cell belongs to the receiver while `WAKER` is clear. The
//!    receiver writes it, then sets `WAKER` (Release); a sender whose
//!    `fetch_or(VALUE | SENDER_GONE)` finds `WAKER` reads it (Acquire) and
//!    wakes it. To replace its waker the receiver first clears `WAKER`; if
//!    that finds `VALUE` or `SENDER_GONE` already set, the sender may be
//!    reading the cell, so the receiver leaves it alone and completes
//!    instead.
//!
//! No wake-up is lost: the sender's `fetch_or` and the receiver's
//! `fetch_or(WAKER)` are read-modify-writes of one word, so one comes first
//! in its modification order. If the sender's does, the receiver's returns
//! `VALUE` and the poll completes at once; if the receiver's does, the
//! sender's sees `WAKER` and wakes it. All transitions are read-modify-writes
//! (AcqRel) on one word: no store-load pattern, no SeqCst.
//!
//! `loom_tests/tests/oneshot.rs` checks every interleaving: send against
//! poll, a waker replaced while a send lands, a receiver dropped while a
//! send lands, and a sender dropped unsent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::facade::{Arc, AtomicUsize, Ordering, UnsafeCell};

const VALUE: usize = 1;
const SENDER_GONE: usize = 1 << 1;
const WAKER: usize = 1 << 2;
const CLOSED: usize = 1 << 3;

struct Inner<T> {
    state: AtomicUsize,
    value: UnsafeCell<Option<T>>,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the cells are reached only by the side that owns them under the
// protocol in the module docs (Release/Acquire on `state` hands them over),
// so sharing `Inner` between the two threads is sound when the value itself
// may move between threads (`T: Send`); `Waker` is `Send + Sync`.
unsafe impl<T: Send> Sync for Inner<T> {}
// SAFETY: as above; `Inner` owns a `T`, which may move to another thread.
unsafe impl<T: Send> Send for Inner<T> {}

/// Makes a connected pair: send one value with the [`Sender`], `await` it
/// on the [`Receiver`].
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context, Poll, Waker};
/// use zbmd_rt::sync::oneshot;
///
/// let (tx, rx) = oneshot::channel();
/// let mut rx = pin!(rx);
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(rx.as_mut().poll(&mut cx).is_pending()); // nothing sent yet
/// assert!(tx.send(7).is_ok());
/// assert_eq!(rx.poll(&mut cx), Poll::Ready(Ok(7)));
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: AtomicUsize::new(0),
        value: UnsafeCell::new(None),
        waker: UnsafeCell::new(None),
    });
    (Sender { inner: Some(inner.clone()) }, Receiver { inner, done: false })
}

/// The sending half: sends at most one value. Dropping it unsent resolves
/// the receiver to [`Canceled`].
pub struct Sender<T> {
    /// `None` once `send` ran (so that `Drop` does nothing).
    inner: Option<Arc<Inner<T>>>,
}

/// The receiver resolves to this when its sender was dropped without
/// sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled;

impl std::fmt::Display for Canceled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the sender was dropped without sending")
    }
}

impl std::error::Error for Canceled {}

impl<T> Sender<T> {
    /// Sends the value, waking the receiver's task. Hands the value back
    /// when the receiver was already dropped.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let Some(inner) = self.inner.take() else { return Err(value) };
        // SAFETY: 1. the value cell is the sender's until it sets `VALUE`,
        // which it has not (this is the only `send`, and it consumes the
        // sender); 2. the receiver reads the cell only after seeing `VALUE`.
        inner.value.with_mut(|cell| unsafe { *cell = Some(value) });
        let previous = inner.state.fetch_or(VALUE, Ordering::AcqRel);
        if previous & CLOSED != 0 {
            // SAFETY: the receiver set `CLOSED` after its last access (it
            // never polls again once dropped), and our AcqRel read of
            // `CLOSED` orders that access before this one: the cell is ours.
            let value = inner.value.with_mut(|cell| unsafe { (*cell).take() });
            return value.map_or(Ok(()), Err);
        }
        wake_if_waiting(&inner, previous);
        Ok(())
    }

    /// Whether the receiver was dropped (a snapshot): a value sent now
    /// would come back.
    pub fn is_closed(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.state.load(Ordering::Acquire) & CLOSED != 0)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let previous = inner.state.fetch_or(SENDER_GONE, Ordering::AcqRel);
            if previous & CLOSED == 0 {
                wake_if_waiting(&inner, previous);
            }
        }
    }
}

/// Wakes the receiver if the state before our `fetch_or` held its waker.
fn wake_if_waiting<T>(inner: &Inner<T>, previous: usize) {
    if previous & WAKER != 0 {
        // SAFETY: `WAKER` was set when our `fetch_or` (AcqRel) ran, so the
        // receiver's write of the cell happened before this read, and the
        // receiver writes it again only after clearing `WAKER` and finding
        // neither `VALUE` nor `SENDER_GONE`, which we have just set.
        inner.waker.with(|cell| unsafe {
            if let Some(waker) = &*cell {
                waker.wake_by_ref();
            }
        });
    }
}

/// The receiving half: a future of the one value, or [`Canceled`] when
/// the sender was dropped unsent. Dropping it tells the sender (whose
/// `send` then hands the value back).
///
/// Polling it again after it returned `Ready` returns `Pending` (the value
/// was taken); it never panics.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
    /// The value (or `Canceled`) was returned.
    done: bool,
}

impl<T> Receiver<T> {
    /// The outcome, if the sender has settled, after an Acquire read of the
    /// state that showed `VALUE` or `SENDER_GONE`.
    fn take(&mut self, state: usize) -> Poll<Result<T, Canceled>> {
        self.done = true;
        if state & VALUE == 0 {
            return Poll::Ready(Err(Canceled));
        }
        // SAFETY: `state` came from an Acquire (or AcqRel) read that showed
        // `VALUE`: the sender wrote the cell before setting it, and gave up
        // the cell when it did; `done` makes this the only take.
        let value = self.inner.value.with_mut(|cell| unsafe { (*cell).take() });
        Poll::Ready(value.ok_or(Canceled))
    }

    /// Whether the sender has settled (a snapshot): a poll would be ready.
    pub fn is_settled(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & (VALUE | SENDER_GONE) != 0
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Pending;
        }
        let inner = &*this.inner;
        let state = inner.state.load(Ordering::Acquire);
        if state & (VALUE | SENDER_GONE) != 0 {
            return this.take(state);
        }
        if state & WAKER != 0 {
            // SAFETY: only the receiver writes the waker cell, and the
            // sender only reads it; reading it here races with nothing.
            let same = inner.waker.with(|cell| unsafe {
                (*cell).as_ref().is_some_and(|waker| waker.will_wake(cx.waker()))
            });
            if same {
                return Poll::Pending;
            }
            // Take the cell back before replacing the waker in it.
            let previous = inner.state.fetch_and(!WAKER, Ordering::AcqRel);
            if previous & (VALUE | SENDER_GONE) != 0 {
                // The sender saw `WAKER` and may be reading the cell: leave
                // it, and complete now.
                return this.take(previous);
            }
        }
        // SAFETY: `WAKER` is clear and the sender had not settled when we
        // last looked, so the sender will not read the cell (it reads it only
        // if `WAKER` is set when it settles), and no other receiver exists.
        inner.waker.with_mut(|cell| unsafe { *cell = Some(cx.waker().clone()) });
        let previous = inner.state.fetch_or(WAKER, Ordering::AcqRel);
        if previous & (VALUE | SENDER_GONE) != 0 {
            // The sender settled before our waker was published: it did not
            // wake us, so complete now.
            return this.take(previous);
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.inner.state.fetch_or(CLOSED, Ordering::AcqRel);
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

#[cfg(all(test, not(zbmd_loom)))]
mod tests {
    use std::sync::atomic::AtomicUsize as Count;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes.
    struct Counter(Count);

    impl Wake for Counter {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (std::sync::Arc<Counter>, Waker) {
        let counter = std::sync::Arc::new(Counter(Count::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn a_send_after_the_first_poll_wakes_the_task_once() {
        let (tx, mut rx) = channel();
        let (wakes, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending(), "same waker: still pending");
        assert_eq!(tx.send(5), Ok(()));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut rx).poll(&mut cx), Poll::Ready(Ok(5)));
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending(), "done: pending, no panic");
    }

    #[test]
    fn a_replaced_waker_is_the_one_woken() {
        let (tx, mut rx) = channel::<u8>();
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        assert!(Pin::new(&mut rx).poll(&mut Context::from_waker(&first_waker)).is_pending());
        assert!(Pin::new(&mut rx).poll(&mut Context::from_waker(&second_waker)).is_pending());
        drop(tx);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        let mut cx = Context::from_waker(&second_waker);
        assert_eq!(Pin::new(&mut rx).poll(&mut cx), Poll::Ready(Err(Canceled)));
    }

    #[test]
    fn a_send_to_a_dropped_receiver_hands_the_value_back() {
        let (tx, rx) = channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        let value = std::sync::Arc::new(1);
        let back = tx.send(value.clone()).unwrap_err();
        assert_eq!(std::sync::Arc::strong_count(&value), 2, "handed back, not leaked");
        drop(back);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_value_sent_and_never_received_is_dropped_with_the_channel() {
        let (tx, rx) = channel();
        let value = std::sync::Arc::new(1);
        tx.send(value.clone()).unwrap();
        assert!(rx.is_settled());
        drop(rx);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }
}
