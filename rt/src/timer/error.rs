//! What the timer wheel answers when it cannot do what it was asked.

use std::fmt;
use std::time::Duration;

/// Why a timer wheel could not be built, or a timer could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// A wheel must be able to hold at least one timer.
    #[error("timer wheel capacity must be at least 1")]
    ZeroCapacity,
    /// The capacity is beyond what the wheel's 32-bit entry indices support.
    #[error("timer wheel capacity {requested} exceeds the maximum of {max}")]
    CapacityTooLarge {
        /// What was asked for.
        requested: usize,
        /// The largest capacity a wheel accepts ([`super::CAPACITY_MAX`]).
        max: usize,
    },
    /// The memory for the wheel's entries could not be reserved.
    #[error(
        "could not reserve memory for {capacity} timer entries: build the wheel with a smaller capacity"
    )]
    OutOfMemory {
        /// The capacity that was asked for.
        capacity: usize,
    },
    /// The tick is finer or coarser than the wheel supports.
    #[error("timer tick {tick:?} is outside the supported range {min:?} to {max:?}")]
    TickOutOfRange {
        /// What was asked for.
        tick: Duration,
        /// The finest tick ([`super::TICK_MIN`]).
        min: Duration,
        /// The coarsest tick ([`super::TICK_MAX`]).
        max: Duration,
    },
    /// Every entry holds a pending timer.
    #[error(
        "timer wheel is full ({capacity} timers pending): wait for timers to fire, cancel some, \
         or build the wheel with a larger capacity"
    )]
    Full {
        /// The wheel's capacity, all of it in use.
        capacity: usize,
    },
    /// The deadline is further from the wheel's start than the wheel can count.
    #[error(
        "timer deadline {after_start:?} after the wheel's start is beyond the wheel's limit of \
         {max:?}: use a shorter delay, or no timer for \"never\""
    )]
    DeadlineTooFar {
        /// How far after the wheel's start the deadline was (saturated).
        after_start: Duration,
        /// The furthest deadline the wheel accepts, after its start.
        max: Duration,
    },
}

/// A timer that was not set: why, and the payload, handed back unharmed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use zbmd_rt::timer::{TimerError, TimerWheel};
///
/// let start = Instant::now();
/// let mut wheel = TimerWheel::new(1, Duration::from_millis(1), start).unwrap();
/// wheel.insert(start + Duration::from_millis(5), "first").unwrap();
/// let rejected = wheel.insert(start + Duration::from_millis(5), "second").unwrap_err();
/// assert_eq!(rejected.reason, TimerError::Full { capacity: 1 });
/// assert_eq!(rejected.into_payload(), "second");
/// ```
#[derive(PartialEq, Eq)]
pub struct InsertError<T> {
    /// Why the timer was not set.
    pub reason: TimerError,
    /// The payload the caller passed in.
    pub payload: T,
}

impl<T> InsertError<T> {
    /// Takes back the payload that was not scheduled.
    pub fn into_payload(self) -> T {
        self.payload
    }
}

impl<T> fmt::Debug for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError").field("reason", &self.reason).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (the payload was handed back)", self.reason)
    }
}

impl<T> std::error::Error for InsertError<T> {}
