//! zbmd-rt: the runtime layer of zbmd — Erlang/OTP's actors on pinned,
//! thread-per-core shards.
//!
//! - [`runtime`]: the [`Runtime`] and its builder; shards, scheduling, work
//!   stealing, timers, blocking threads, metrics (`docs/runtime.md`).
//! - [`actor`]: the [`Actor`] trait, [`ActorRef`], links, monitors, asks.
//! - [`behaviour`]: OTP's behaviours: [`GenServer`], a state machine
//!   ([`StateMachine`], gen_statem), and a [`CircuitBreaker`]
//!   (`docs/behaviours.md`).
//! - [`fault`]: seeded fault injection (crashes, drops, delays, named
//!   sites for later layers) the runtime applies for real (`docs/faults.md`).
//! - [`supervisor`]: supervision trees with OTP's strategies, restart
//!   types, intensity and shutdown rules (`docs/supervision.md`).
//! - [`io`]: per-shard file I/O on io_uring, or on threads where io_uring is
//!   unavailable (`docs/io.md`).
//! - [`sync`]: the bounded lock-free queues and the parker everything above
//!   runs on, each verified with loom (`docs/queues.md`).
//! - [`timer`]: the hierarchical timer wheel each shard owns.
//! - [`topology`]: machine topology, shard placement, pinning
//!   (`docs/topology.md`).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod actor;
pub mod behaviour;
pub mod error;
pub mod fault;
pub mod io;
pub mod runtime;
pub mod supervisor;
pub mod sync;
pub mod timer;
pub mod topology;

pub use actor::{
    Actor, ActorError, ActorId, ActorRef, Context, Down, ExitReason, MonitorRef, Pid, ReplyTo,
};
pub use behaviour::{
    CircuitBreaker, GenServer, MachineRef, ServerRef, StateMachine, StateMachineError, Transition,
};
pub use error::{AskError, RuntimeError, SendError, StartError};
pub use runtime::{Runtime, RuntimeBuilder, SpawnOptions};
