//! Behaviours: OTP's reusable process patterns on top of [`Actor`](crate::Actor).
//!
//! - [`gen_server`]: OTP's `gen_server`: synchronous calls with replies
//!   (deferred if the server wants), casts, other messages (`info`),
//!   `init` and `terminate`.
//! - [`state_machine`]: a simplified but real `gen_statem`: states, events,
//!   a transition function, actions (reply, state timeout, generic timeout,
//!   postpone, next event), entry and exit hooks, and undefined transitions
//!   rejected with an error naming the state and the event.
//! - [`breaker`]: a circuit breaker (closed / open / half-open) to put
//!   around any call, with an injectable clock.
//!
//! A GenServer and a state machine are ordinary actors once wrapped
//! ([`Server`], [`Machine`]): `rt.spawn`, `ctx.spawn` and supervisors take
//! them as they are, and they crash, link and monitor like any actor. See
//! `docs/behaviours.md` for a guide and the mapping to OTP's names.

pub mod breaker;
pub mod gen_server;
pub mod state_machine;

pub use breaker::{
    BreakerBuilder, BreakerError, BreakerState, BreakerStats, CallError, CircuitBreaker, Clock,
    ManualClock, Outcome, Permit, SystemClock,
};
pub use gen_server::{GenServer, Server, ServerContext, ServerMsg, ServerRef};
pub use state_machine::{
    EventKind, Machine, MachineAnswer, MachineContext, MachineMsg, MachineRef, MachineReplyTo,
    StateMachine, StateMachineError, Status, TimerEvent, Transition,
};
