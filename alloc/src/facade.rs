//! The loom facade of zbmd's lock-free code: every atomic, cell, `Arc`,
//! lock and spin primitive that zbmd-alloc's pools and zbmd-rt's queues use
//! comes from here, and from nowhere else.
//!
//! Built normally, these are the `std` types. Built with `--cfg zbmd_loom`
//! (`make loom`), they are loom's instrumented twins, so the models in
//! `loom_tests/` explore every interleaving the memory model allows. The
//! pattern is tokio's: one switch, and the protocol code never names
//! `std::sync` or `loom` directly.
//!
//! There is one facade for both crates, and it lives here because zbmd-rt
//! already depends on zbmd-alloc (`zbmd_rt::sync`'s facade re-exports this
//! one): a separate crate would have added a package to publish and check
//! for 100 lines. The module is public only for zbmd-rt; it is hidden from
//! the docs and is not part of zbmd-alloc's API.

#[cfg(zbmd_loom)]
pub use loom::sync::Arc;
#[cfg(zbmd_loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(zbmd_loom)]
pub use loom::sync::{Condvar, Mutex};

#[cfg(not(zbmd_loom))]
pub use std::sync::Arc;
#[cfg(not(zbmd_loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(zbmd_loom))]
pub use std::sync::{Condvar, Mutex};

/// A cell whose contents are reached only through closures, so that loom can
/// track every read and write of it (loom's `UnsafeCell` API; under `std` the
/// closures compile down to raw pointer accesses).
#[cfg(zbmd_loom)]
pub use loom::cell::UnsafeCell;

/// A cell whose contents are reached only through closures, so that loom can
/// track every read and write of it (loom's `UnsafeCell` API; under `std` the
/// closures compile down to raw pointer accesses).
#[cfg(not(zbmd_loom))]
#[derive(Debug)]
#[repr(transparent)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(zbmd_loom))]
impl<T> UnsafeCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the contents.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with an exclusive pointer to the contents.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// One step of a spin-wait. Under loom a spin must yield, or the model
/// would explore an unbounded busy loop.
#[inline(always)]
pub fn spin_hint() {
    #[cfg(zbmd_loom)]
    loom::thread::yield_now();
    #[cfg(not(zbmd_loom))]
    std::hint::spin_loop();
}

/// Hands out thread tokens: 1, 2, 3, ... (0 means "no thread"). A plain
/// `std` atomic even under loom: a token only has to be unique, it is not
/// part of any protocol the models check.
static NEXT_TOKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

#[cfg(not(zbmd_loom))]
std::thread_local! {
    static TOKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(zbmd_loom)]
loom::thread_local! {
    static TOKEN: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// A number that names the calling thread and no other thread, ever: tokens
/// are never reused, so a pool bound to a thread that has exited is bound to
/// nobody (its frees take the remote path), never to a newcomer.
///
/// The cost is one thread-local load and a compare after the first call; the
/// `std` variable is `const`-initialised and has no destructor, so it stays
/// readable while the thread's other thread-locals are being destroyed.
#[inline(always)]
pub(crate) fn thread_token() -> usize {
    TOKEN.with(|token| match token.get() {
        0 => {
            let fresh = NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            token.set(fresh);
            fresh
        }
        known => known,
    })
}
