//! Bounded lock-free queues and parking: the paths every message and every
//! scheduling decision in zbmd passes through.
//!
//! | module | shape | algorithm | used for |
//! |---|---|---|---|
//! | [`spsc`] | one producer, one consumer | Lamport ring with cached indices (Seastar, rigtorp) | shard-to-shard traffic |
//! | [`mpsc`] | many producers, one consumer, two lanes | Vyukov per-slot sequences, single-consumer pop | actor mailboxes |
//! | [`mpmc`] | many producers, many consumers | Vyukov's bounded MPMC queue | global overflow, blocking hand-off |
//! | [`deque`] | one owner, many thieves | Chase–Lev, bounded, with a steal claim | runnable actors, work stealing |
//! | [`park`] | one sleeper, many wakers | futex (Linux) state machine | idle shards |
//! | [`event`] | many sleepers, many notifiers | Vyukov's eventcount on a futex | every blocking wait for a condition: room in a mailbox, an actor's death |
//! | [`oneshot`] | one value, sender to a `Future` | tokio's oneshot state word: value, waker, closed flags | replies awaited by async callers |
//! | [`run_state`] | many notifiers, one runner | state machine with a SeqCst (Dekker) wake-up handshake against the mailbox; `CurrentTurn`, which holds a dead actor's free until every turn end that gave its token up is done | scheduling an actor, freeing it |
//! | [`sleep`] | one sleeper, many wakers | flag and SeqCst fences (Dekker) against the sleeper's queues | parking an idle shard |
//!
//! `park` and `event` sleep on the one futex wrapper of the crate
//! (`futex.rs`). Three waits spin instead, each with its reason next to
//! it: a free waiting out another shard's turn end (`run_state`), a dead
//! actor's drain waiting for a claimed slot to be written (`actor/dead.rs`),
//! both a few instructions of another thread; and zbmd-gpu's pool, whose
//! wait for a restarted GPU supervisor also ends on a change of device
//! health, which has no event to sleep on.
//!
//! Every queue is bounded, with its capacity fixed at construction
//! ([`CapacityError`] for a bad one), allocates nothing after construction,
//! and answers a push into a full queue with [`Full`], which hands the value
//! back. All primitives come from one loom facade, so `loom_tests/` checks
//! the exact code that ships.

mod facade;

pub mod deque;
mod error;
pub mod event;
mod futex;
pub mod mpmc;
pub mod mpsc;
pub mod oneshot;
pub mod park;
pub mod run_state;
pub mod sleep;
pub mod spsc;

pub use error::{BlockError, CAPACITY_MAX, CapacityError, Full};
