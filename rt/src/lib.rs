//! zbmd-rt: the runtime layer of zbmd.
//!
//! For now this crate holds the lock-free building blocks every later layer
//! passes through: see [`sync`].
#![deny(unsafe_op_in_unsafe_fn)]

pub mod sync;
