//! The one futex wrapper of `sync`: sleep on a 32-bit word while it holds
//! an expected value, and wake one or every sleeper on it; with the
//! deadline arithmetic of timed sleeps. [`park`](super::park) and
//! [`event`](super::event) build their protocols on it.
//!
//! # Under loom
//!
//! Built with `--cfg zbmd_loom`, the futex is emulated with the facade's
//! loom `Mutex` and `Condvar`: the wait locks the mutex, compares the word
//! with the expected value, and if equal sleeps on the condvar, which
//! releases the mutex atomically; the wake locks the mutex and notifies. A
//! waker changes the word before it locks the mutex to wake, so either the
//! waiter's check (under the mutex) sees the new word, or the waiter is
//! already on the condvar when the notification comes: the same
//! check-and-sleep atomicity the kernel gives with its hash-bucket lock, so
//! the models check the exact protocols built on it. Time is not modelled:
//! a timed wait returns at once after a yield, i.e. its timeout "elapses"
//! immediately, a spurious return every protocol must (and does) tolerate;
//! and a [`Deadline`] allows one timed wait, then has passed.

use std::time::{Duration, Instant};

use super::facade::AtomicU32;
#[cfg(zbmd_loom)]
use super::facade::Ordering;

/// When a timed wait gives up.
#[cfg(not(zbmd_loom))]
pub(crate) struct Deadline(Option<Instant>);

#[cfg(not(zbmd_loom))]
impl Deadline {
    /// `timeout` from now; a timeout beyond what `Instant` can represent
    /// means "no deadline".
    pub(crate) fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// At `deadline`, or never.
    pub(crate) fn at(deadline: Option<Instant>) -> Self {
        Self(deadline)
    }

    /// `None` once the deadline has passed; otherwise what is left to wait
    /// (itself `None` for a wait without a deadline).
    pub(crate) fn remaining(&self) -> Option<Option<Duration>> {
        match self.0 {
            None => Some(None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(Some(left))
            }
        }
    }
}

/// Under loom time does not pass: a bounded deadline allows the first wait
/// (which returns at once, see the module docs) and then has passed; an
/// unbounded one never passes.
#[cfg(zbmd_loom)]
pub(crate) struct Deadline(Option<std::cell::Cell<bool>>);

#[cfg(zbmd_loom)]
impl Deadline {
    pub(crate) fn after(_timeout: Duration) -> Self {
        Self(Some(std::cell::Cell::new(true)))
    }

    pub(crate) fn at(deadline: Option<Instant>) -> Self {
        Self(deadline.map(|_| std::cell::Cell::new(true)))
    }

    pub(crate) fn remaining(&self) -> Option<Option<Duration>> {
        match &self.0 {
            None => Some(None),
            Some(first) => first.replace(false).then_some(Some(Duration::ZERO)),
        }
    }
}

#[cfg(all(not(zbmd_loom), not(any(target_os = "linux", target_os = "android"))))]
compile_error!("zbmd_rt::sync sleeps on the Linux futex system call");

/// The futex system call on a word the caller owns.
#[cfg(not(zbmd_loom))]
pub(crate) struct Futex;

#[cfg(not(zbmd_loom))]
impl Futex {
    pub(crate) fn new() -> Self {
        Self
    }

    /// Sleeps while `*word == expected`, for at most `timeout`. Returns on a
    /// wake, a changed word, a signal, the timeout, or spuriously; callers
    /// re-check the word.
    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let timespec = timeout.map(|timeout| libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9, so it fits every platform's `c_long`.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        });
        let timespec_ptr = timespec.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: 1. `word.as_ptr()` points to a live, aligned `u32` for the
        // whole call (we hold a reference to it); the kernel only reads it.
        // 2. `timespec_ptr` is null or points to `timespec`, which outlives
        // the call; FUTEX_WAIT reads it as a relative timeout. 3. The last
        // two arguments are unused by FUTEX_WAIT and passed as null and 0.
        let result = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                timespec_ptr,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if result != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error();
            debug_assert!(
                matches!(errno, Some(libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT)),
                "futex wait failed: {errno:?}"
            );
        }
    }

    /// Wakes one thread that may sleep on `word`.
    pub(crate) fn wake_one(&self, word: &AtomicU32) {
        Self::wake(word, 1);
    }

    /// Wakes every thread that may sleep on `word`.
    pub(crate) fn wake_all(&self, word: &AtomicU32) {
        Self::wake(word, i32::MAX);
    }

    fn wake(word: &AtomicU32, count: i32) {
        // SAFETY: `word.as_ptr()` points to a live, aligned `u32`; FUTEX_WAKE
        // only uses the address to find sleepers and never dereferences
        // anything else.
        let result = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                count,
            )
        };
        debug_assert!(result >= 0, "futex wake failed: {}", std::io::Error::last_os_error());
    }
}

/// The futex emulated with loom's mutex and condvar (see the module docs).
#[cfg(zbmd_loom)]
pub(crate) struct Futex {
    lock: super::facade::Mutex<()>,
    sleepers: super::facade::Condvar,
}

#[cfg(zbmd_loom)]
impl Futex {
    pub(crate) fn new() -> Self {
        Self { lock: super::facade::Mutex::new(()), sleepers: super::facade::Condvar::new() }
    }

    pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let guard = match self.lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if word.load(Ordering::Relaxed) != expected {
            return;
        }
        if timeout.is_some() {
            drop(guard);
            super::facade::spin_hint();
            return;
        }
        drop(self.sleepers.wait(guard));
    }

    pub(crate) fn wake_one(&self, _word: &AtomicU32) {
        let _guard = match self.lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.sleepers.notify_one();
    }

    pub(crate) fn wake_all(&self, _word: &AtomicU32) {
        let _guard = match self.lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.sleepers.notify_all();
    }
}
