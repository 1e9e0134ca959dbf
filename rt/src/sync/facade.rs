//! The loom facade: every atomic, cell, `Arc` and thread primitive the
//! lock-free code uses comes from here, and from nowhere else.
//!
//! Built normally, these are the `std` types. Built with `--cfg zbmd_loom`
//! (`make loom`), they are loom's instrumented twins, so the models in
//! `loom_tests/` explore every interleaving the memory model allows. The
//! pattern is tokio's: one switch, and the queue code never names `std::sync`
//! or `loom` directly.

#[cfg(zbmd_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(zbmd_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(zbmd_loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(not(zbmd_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(zbmd_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// A cell whose contents are reached only through closures, so that loom can
/// track every read and write of it (loom's `UnsafeCell` API; under `std` the
/// closures compile down to raw pointer accesses).
#[cfg(zbmd_loom)]
pub(crate) use loom::cell::UnsafeCell;

#[cfg(not(zbmd_loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(zbmd_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with an exclusive pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// One step of a spin-wait. Under loom a spin must yield, or the model
/// would explore an unbounded busy loop.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(zbmd_loom)]
    loom::thread::yield_now();
    #[cfg(not(zbmd_loom))]
    std::hint::spin_loop();
}
