//! zbmd-rt: Erlang/OTP's actors, links, monitors and supervision trees on
//! pinned, thread-per-core shards, for programs that must not die.
//!
//! A [`Runtime`] is a set of shards, one OS thread each, pinned to a CPU of
//! the process's affinity mask. An [`Actor`] is a value with a message type
//! and a handler; the runtime runs the handler one message at a time, so
//! the actor's state needs no lock. Actors talk through [`ActorRef`]s with
//! bounded lock-free mailboxes: a full mailbox is an error, never an
//! unbounded queue. A handler that returns an error or panics crashes its
//! actor, and the actor's supervisor restarts it, as in OTP.
//!
//! # The first actor
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
//!
//! /// Adds what it is sent; answers the total when asked.
//! struct Counter(u64);
//!
//! enum Msg {
//!     Add(u64),
//!     Total(ReplyTo<u64>),
//! }
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Total(reply) => {
//!                 reply.reply(self.0);
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // One unpinned shard and small pools: the preset for a library or a
//! // test. `Runtime::builder().build()` takes one pinned shard per CPU.
//! let rt = Runtime::builder().embedded().build()?;
//! let counter = rt.spawn(Counter(0))?;
//! counter.try_send(Msg::Add(5))?;
//! counter.try_send(Msg::Add(37))?;
//! assert_eq!(counter.call(Msg::Total, Duration::from_secs(5)), Ok(42));
//! rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `call` blocks the calling thread (outside the runtime) until the reply
//! or the timeout; an async task awaits [`ActorRef::ask_async`] instead,
//! blocking no thread (`examples/tokio_ask.rs` in the repository). Inside
//! a handler, [`Context::ask`] turns the reply into a message to the asker.
//!
//! # Let it crash
//!
//! A [`supervisor`] restarts its children by OTP's rules (strategies,
//! restart types, intensity, shutdown). A [`ChildRef`](supervisor::ChildRef)
//! follows every incarnation of a child, and its `call` waits through a
//! restart, bounded by the caller's timeout:
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::supervisor::{ChildSpec, Supervisor, SupervisorSpec};
//! use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
//!
//! /// Answers its input doubled; crashes on zero.
//! struct Doubler;
//!
//! impl Actor for Doubler {
//!     type Msg = (u64, ReplyTo<u64>);
//!     fn handle(&mut self, _: &mut Context<'_, Self>, (n, reply): Self::Msg) -> Result<(), ActorError> {
//!         if n == 0 {
//!             return Err(ActorError::msg("zero"));
//!         }
//!         reply.reply(2 * n);
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().embedded().build()?;
//! let worker = ChildSpec::worker("doubler", || Doubler);
//! let doubler = worker.child_ref();
//! let tree = SupervisorSpec::one_for_one().intensity(3, Duration::from_secs(5)).child(worker);
//! let _supervisor = Supervisor::start(&rt, tree)?;
//! let timeout = Duration::from_secs(5);
//! assert!(doubler.call(|reply| (0, reply), timeout).is_err()); // it crashed on this one
//! assert_eq!(doubler.call(|reply| (21, reply), timeout), Ok(42)); // its next incarnation
//! rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where to go next
//!
//! - [`runtime`]: the [`Runtime`], its [`RuntimeBuilder`] (shards, pinning,
//!   pools, and what the default costs: every CPU, about 340 MB of address
//!   space per shard, against [`RuntimeBuilder::embedded`]), the cloneable
//!   [`RuntimeHandle`], timers, blocking threads, metrics.
//! - [`actor`]: the [`Actor`] trait and its hooks, [`ActorRef`], links,
//!   monitors, asks.
//! - [`supervisor`]: supervision trees.
//! - [`behaviour`]: OTP's behaviours: [`GenServer`], a state machine
//!   ([`StateMachine`], gen_statem), and a [`CircuitBreaker`].
//! - [`fault`]: seeded fault injection (crashes, drops, delays) the
//!   runtime applies for real.
//! - [`io`]: per-shard file I/O on io_uring, or on threads where io_uring
//!   is unavailable.
//! - [`sync`]: the bounded lock-free queues and the parker everything above
//!   runs on, each verified with loom.
//! - [`timer`]: the hierarchical timer wheel each shard owns.
//! - [`topology`]: machine topology, shard placement, pinning.
//!
//! The repository's `docs/` folder explains the model in prose
//! (`runtime.md`, `supervision.md`, `behaviours.md`, `faults.md`, `io.md`,
//! `topology.md`).
//!
//! # Platform
//!
//! Linux only: shards pin themselves with `sched_setaffinity`, memory is
//! bound to NUMA nodes with `mbind` and backed by huge pages where the
//! kernel has them, the topology comes from sysfs (or hwloc), and I/O runs
//! on io_uring. On another OS the crate does not build, and says so.
//! Rust 1.86 or later (`rust-version`; CI checks it).
//!
//! # Features
//!
//! - `hwloc`: the topology from hwloc instead of sysfs, and hwloc's
//!   synthetic topologies ([`topology::Topology::from_hwloc_synthetic`]).
//!   Needs `libhwloc-dev`, `libudev-dev` and `pkg-config`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "zbmd-rt runs on Linux only: it pins shards with sched_setaffinity, binds memory with \
     mbind, reads the topology from sysfs and does I/O on io_uring"
);

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
    Actor, ActorError, ActorId, ActorRef, Context, Down, ExitReason, MonitorRef, Pid, ReplyFuture,
    ReplyTo,
};
pub use behaviour::{
    CircuitBreaker, GenServer, MachineRef, ServerRef, StateMachine, StateMachineError, Transition,
};
pub use error::{AskError, ExitError, RuntimeError, SendError, StartError};
pub use runtime::{Runtime, RuntimeBuilder, RuntimeHandle, SpawnOptions};
