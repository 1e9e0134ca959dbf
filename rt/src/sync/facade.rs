//! The loom facade: every atomic, cell, `Arc` and thread primitive the
//! lock-free code uses comes from here, and from nowhere else.
//!
//! It is zbmd-alloc's facade (`zbmd_alloc::facade`), re-exported: one switch
//! between `std` and loom for both crates, so a model of a queue and a model
//! of a pool run on the same instrumented primitives. Built with
//! `--cfg zbmd_loom` (`make loom`), these are loom's twins and the models in
//! `loom_tests/` explore every interleaving the memory model allows.

pub(crate) use zbmd_alloc::facade::{
    Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, UnsafeCell, fence, spin_hint,
};
#[cfg(zbmd_loom)]
pub(crate) use zbmd_alloc::facade::{Condvar, Mutex};
