//! A circuit breaker (Michael Nygard, *Release It!*, 2007; the state
//! machine Hystrix and resilience4j use): closed, open, half-open.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   CLOSED ──────────────────────────────────────────▶ OPEN ◀──────────┐
//!     ▲                                                 │ open_timeout │ a probe
//!     │ success_threshold consecutive probe successes   ▼ elapsed      │ fails
//!     └─────────────────────────────────────────── HALF-OPEN ──────────┘
//! ```
//!
//! - **Closed**: every call goes through; consecutive failures are counted
//!   and a success resets the count. `failure_threshold` in a row open it.
//! - **Open**: calls fail fast with [`BreakerError::Open`], which says how
//!   long until the next probe. After `open_timeout` the next call is let
//!   through as a probe: the breaker is half-open.
//! - **Half-open**: at most `half_open_probes` calls at once go through
//!   (others get [`BreakerError::ProbesBusy`]); `success_threshold`
//!   consecutive successes close it, one failure opens it again.
//!
//! A result belongs to the state its call was let through in: a call
//! admitted while closed that fails after the breaker opened changes
//! nothing (each state change starts an epoch, and a permit carries its
//! epoch). The breaker is `Send + Sync` and clones share it, so one breaker
//! guards a dependency for every shard and thread. Time comes from a
//! [`Clock`]: [`SystemClock`] in production, [`ManualClock`] in tests and
//! simulations.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use zbmd_rt::behaviour::{BreakerError, BreakerState, CallError, CircuitBreaker, ManualClock};
//!
//! let clock = Arc::new(ManualClock::new());
//! let breaker = CircuitBreaker::builder()
//!     .failure_threshold(2)
//!     .open_timeout(Duration::from_secs(10))
//!     .clock(clock.clone())
//!     .build()
//!     .unwrap();
//! for _ in 0..2 {
//!     assert!(breaker.call(|| Err::<(), _>("device lost")).is_err());
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! let rejected = breaker.call(|| Ok::<_, &str>(1)).unwrap_err();
//! let retry_in = Duration::from_secs(10);
//! assert_eq!(rejected, CallError::Rejected(BreakerError::Open { name: "breaker", retry_in }));
//! clock.advance(Duration::from_secs(10));
//! assert_eq!(breaker.call(|| Ok::<_, &str>(1)), Ok(1)); // the probe
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a breaker reads the time. Implement it to drive a breaker from a
/// simulated clock.
pub trait Clock: Send + Sync + 'static {
    /// The current instant; must never go backwards.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told: [`advance`](ManualClock::advance).
/// Share it with an `Arc` between the breaker and the test.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed_ns: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the moment it is made.
    pub fn new() -> Self {
        ManualClock { start: Instant::now(), elapsed_ns: AtomicU64::new(0) }
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .elapsed_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ns| Some(ns.saturating_add(by_ns)));
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.elapsed_ns.load(Ordering::Acquire))
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast until the open timeout passes.
    Open,
    /// A limited number of probe calls go through to test the dependency.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// Why the breaker refused a call, or a breaker could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError {
    /// The breaker is open: the call was not made. Retry after `retry_in`,
    /// when the next call becomes a half-open probe.
    #[error(
        "circuit breaker {name} is open: call not made; the next probe is allowed in {retry_in:?}"
    )]
    Open {
        /// The breaker's name.
        name: &'static str,
        /// Time until the next call is let through as a probe.
        retry_in: Duration,
    },
    /// The breaker is half-open and all its probes are in flight: the call
    /// was not made. Retry when they finish.
    #[error(
        "circuit breaker {name} is half-open with its {limit} probe(s) in flight: call not made"
    )]
    ProbesBusy {
        /// The breaker's name.
        name: &'static str,
        /// How many probes may be in flight at once.
        limit: u32,
    },
    /// The builder's settings are invalid (only from
    /// [`BreakerBuilder::build`]).
    #[error("invalid circuit breaker configuration: {0}")]
    Config(String),
}

/// A guarded call's error: refused by the breaker, or the call's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker did not let the call through.
    #[error(transparent)]
    Rejected(#[from] BreakerError),
    /// The call ran and failed (counted as a failure).
    #[error("the guarded call failed: {0}")]
    Failed(E),
}

/// How a call's result counts ([`CircuitBreaker::call_classified`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed.
    Failure,
    /// The result says nothing about the dependency's health (a caller's
    /// bad argument, a cancelled request): counted apart, changes nothing.
    Ignored,
}

/// Counters of a breaker since it was built, and its state now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Calls let through (probes included).
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (a permit dropped unsettled counts as failed).
    pub failures: u64,
    /// Calls whose result was ignored.
    pub ignored: u64,
    /// Calls refused (open, or half-open with every probe in flight).
    pub rejections: u64,
    /// Transitions to open.
    pub opened: u64,
    /// Transitions to half-open.
    pub half_opened: u64,
    /// Transitions to closed.
    pub closed: u64,
}

impl BreakerStats {
    /// State transitions of every kind.
    pub fn transitions(&self) -> u64 {
        self.opened + self.half_opened + self.closed
    }
}

/// Consecutive failures that open a closed breaker, by default: one
/// failure is noise, five in a row is an outage.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Consecutive probe successes that close a half-open breaker, by default:
/// one good answer after the open timeout is evidence enough for a
/// dependency that failed outright (raise it for flaky ones).
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// How long a breaker stays open, by default: long enough for a device
/// reset or a remote node to come back (seconds), short enough that a
/// supervised actor's restart (microseconds) is not held up for long.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Probes in flight at once in half-open, by default: one, so a dependency
/// that is still down gets one request, not a burst.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;

/// Builds a [`CircuitBreaker`]: `CircuitBreaker::builder().failure_threshold(3).build()?`.
#[derive(Clone)]
pub struct BreakerBuilder {
    name: &'static str,
    failure_threshold: u32,
    success_threshold: u32,
    open_timeout: Duration,
    half_open_probes: u32,
    clock: Arc<dyn Clock>,
}

impl BreakerBuilder {
    /// The name in errors and logs (default `"breaker"`).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Consecutive failures that open the breaker ([`DEFAULT_FAILURE_THRESHOLD`]).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Consecutive half-open successes that close it ([`DEFAULT_SUCCESS_THRESHOLD`]).
    pub fn success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = successes;
        self
    }

    /// How long it stays open before a probe ([`DEFAULT_OPEN_TIMEOUT`]).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Probes in flight at once when half-open ([`DEFAULT_HALF_OPEN_PROBES`]).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the settings and builds the breaker, closed.
    pub fn build(self) -> Result<CircuitBreaker, BreakerError> {
        let bad = |what: &str| Err(BreakerError::Config(what.to_string()));
        if self.failure_threshold == 0 {
            return bad("failure_threshold must be at least 1");
        }
        if self.success_threshold == 0 {
            return bad("success_threshold must be at least 1");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes must be at least 1");
        }
        if self.open_timeout.is_zero() {
            return bad("open_timeout must be non-zero (a zero timeout never sheds load)");
        }
        let now = self.clock.now();
        let inner = Inner {
            name: self.name,
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
            open_timeout: self.open_timeout,
            half_open_probes: self.half_open_probes,
            clock: self.clock,
            core: Mutex::new(Core {
                state: BreakerState::Closed,
                epoch: 0,
                failures: 0,
                successes: 0,
                probes: 0,
                open_until: now,
            }),
            counters: Default::default(),
        };
        Ok(CircuitBreaker { inner: Arc::new(inner) })
    }
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("name", &self.name)
            .field("failure_threshold", &self.failure_threshold)
            .field("success_threshold", &self.success_threshold)
            .field("open_timeout", &self.open_timeout)
            .field("half_open_probes", &self.half_open_probes)
            .finish_non_exhaustive()
    }
}

/// The state that moves, under the breaker's lock.
struct Core {
    state: BreakerState,
    /// Bumped by every state change: results of calls admitted in an
    /// earlier state are not counted against this one.
    epoch: u64,
    /// Consecutive failures while closed.
    failures: u32,
    /// Consecutive successes while half-open.
    successes: u32,
    /// Probes in flight while half-open.
    probes: u32,
    /// When an open breaker lets the next probe through.
    open_until: Instant,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    ignored: AtomicU64,
    rejections: AtomicU64,
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
}

struct Inner {
    name: &'static str,
    failure_threshold: u32,
    success_threshold: u32,
    open_timeout: Duration,
    half_open_probes: u32,
    clock: Arc<dyn Clock>,
    /// A lock, not a lock-free word: a breaker guards calls that cost
    /// microseconds or more (a message round trip, a device call), next to
    /// which an uncontended lock is noise, and the transitions stay
    /// obviously right.
    core: Mutex<Core>,
    counters: Counters,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every critical section leaves `Core` consistent before anything
        // that could panic, so a poisoned lock's data is still good.
        self.core.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn enter(&self, core: &mut Core, state: BreakerState, now: Instant) {
        debug_assert_ne!(core.state, state, "a transition changes the state");
        core.state = state;
        core.epoch += 1;
        core.failures = 0;
        core.successes = 0;
        core.probes = 0;
        let counter = match state {
            BreakerState::Open => {
                core.open_until = now + self.open_timeout;
                tracing::warn!(breaker = self.name, open_for = ?self.open_timeout, "circuit breaker opened");
                &self.counters.opened
            }
            BreakerState::HalfOpen => {
                tracing::info!(breaker = self.name, "circuit breaker half-open: probing");
                &self.counters.half_opened
            }
            BreakerState::Closed => {
                tracing::info!(breaker = self.name, "circuit breaker closed");
                &self.counters.closed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves an open breaker whose timeout has passed to half-open.
    fn refresh(&self, core: &mut Core, now: Instant) {
        if core.state == BreakerState::Open && now >= core.open_until {
            self.enter(core, BreakerState::HalfOpen, now);
        }
    }

    fn record(&self, epoch: u64, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Success => &self.counters.successes,
            Outcome::Failure => &self.counters.failures,
            Outcome::Ignored => &self.counters.ignored,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let mut core = self.lock();
        if core.epoch != epoch {
            return; // admitted in an earlier state: says nothing about this one
        }
        match core.state {
            BreakerState::Closed => match outcome {
                Outcome::Success => core.failures = 0,
                Outcome::Failure => {
                    core.failures += 1;
                    if core.failures >= self.failure_threshold {
                        self.enter(&mut core, BreakerState::Open, now);
                    }
                }
                Outcome::Ignored => {}
            },
            BreakerState::HalfOpen => {
                debug_assert!(core.probes > 0, "a half-open result without a probe");
                core.probes -= 1;
                match outcome {
                    Outcome::Success => {
                        core.successes += 1;
                        if core.successes >= self.success_threshold {
                            self.enter(&mut core, BreakerState::Closed, now);
                        }
                    }
                    Outcome::Failure => self.enter(&mut core, BreakerState::Open, now),
                    Outcome::Ignored => {}
                }
            }
            BreakerState::Open => {
                debug_assert!(false, "no permit is issued while open");
            }
        }
    }
}

/// A circuit breaker. Clones share one breaker (it is an `Arc` inside).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl CircuitBreaker {
    /// A builder with the documented defaults.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder {
            name: "breaker",
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            clock: Arc::new(SystemClock),
        }
    }

    /// Asks to make one call. The [`Permit`] it returns must be settled
    /// with the call's outcome ([`Permit::success`], [`Permit::failure`],
    /// [`Permit::ignore`]); dropping it unsettled counts as a failure. Use
    /// this where the result comes later, e.g. an actor that asks and
    /// keeps the permit until the reply arrives.
    pub fn try_acquire(&self) -> Result<Permit, BreakerError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut core = inner.lock();
        inner.refresh(&mut core, now);
        match core.state {
            BreakerState::Closed => {}
            BreakerState::Open => {
                let retry_in = core.open_until.saturating_duration_since(now);
                drop(core);
                inner.counters.rejections.fetch_add(1, Ordering::Relaxed);
                return Err(BreakerError::Open { name: inner.name, retry_in });
            }
            BreakerState::HalfOpen => {
                if core.probes >= inner.half_open_probes {
                    drop(core);
                    inner.counters.rejections.fetch_add(1, Ordering::Relaxed);
                    let limit = inner.half_open_probes;
                    return Err(BreakerError::ProbesBusy { name: inner.name, limit });
                }
                core.probes += 1;
            }
        }
        let epoch = core.epoch;
        drop(core);
        inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Permit { inner: Some(self.inner.clone()), epoch })
    }

    /// Runs `call` if the breaker lets it through, and counts its result:
    /// `Ok` a success, `Err` a failure, a panic a failure (the panic goes
    /// on).
    pub fn call<T, E>(&self, call: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        self.call_classified(call, |result| match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
    }

    /// As [`call`](Self::call), with `classify` deciding how the result
    /// counts (say, a rejected request as [`Outcome::Ignored`], a reply
    /// that reports a device error as [`Outcome::Failure`]).
    pub fn call_classified<T, E>(
        &self,
        call: impl FnOnce() -> Result<T, E>,
        classify: impl FnOnce(&Result<T, E>) -> Outcome,
    ) -> Result<T, CallError<E>> {
        let permit = self.try_acquire()?;
        let result = call();
        permit.settle(classify(&result));
        result.map_err(CallError::Failed)
    }

    /// Opens the breaker now, whatever its state: for a failure that
    /// needs no second opinion (a lost device). An already open breaker
    /// stays open for a fresh `open_timeout`.
    pub fn trip(&self) {
        let now = self.inner.clock.now();
        let mut core = self.inner.lock();
        self.inner.refresh(&mut core, now);
        if core.state == BreakerState::Open {
            core.open_until = now + self.inner.open_timeout;
        } else {
            self.inner.enter(&mut core, BreakerState::Open, now);
        }
    }

    /// The state now (an open breaker whose timeout has passed reports,
    /// and becomes, half-open).
    pub fn state(&self) -> BreakerState {
        let now = self.inner.clock.now();
        let mut core = self.inner.lock();
        self.inner.refresh(&mut core, now);
        core.state
    }

    /// The state and the counters.
    pub fn stats(&self) -> BreakerStats {
        let c = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BreakerStats {
            state: self.state(),
            calls: read(&c.calls),
            successes: read(&c.successes),
            failures: read(&c.failures),
            ignored: read(&c.ignored),
            rejections: read(&c.rejections),
            opened: read(&c.opened),
            half_opened: read(&c.half_opened),
            closed: read(&c.closed),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.inner.lock().state)
            .finish_non_exhaustive()
    }
}

/// The right to make one call through a breaker; settle it with the call's
/// outcome. Dropped unsettled (the caller panicked or forgot), it counts as
/// a failure. `Send`, so an actor can keep it until its reply arrives.
#[must_use = "settle the permit with the call's outcome; dropping it counts as a failure"]
pub struct Permit {
    inner: Option<Arc<Inner>>,
    epoch: u64,
}

impl Permit {
    /// The call succeeded.
    pub fn success(self) {
        self.settle(Outcome::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.settle(Outcome::Failure);
    }

    /// The call's result says nothing about the dependency: release the
    /// permit (and its probe slot) without counting it either way.
    pub fn ignore(self) {
        self.settle(Outcome::Ignored);
    }

    /// Settles with `outcome`.
    pub fn settle(mut self, outcome: Outcome) {
        if let Some(inner) = self.inner.take() {
            inner.record(self.epoch, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.record(self.epoch, Outcome::Failure);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(clock: &Arc<ManualClock>) -> CircuitBreaker {
        CircuitBreaker::builder()
            .failure_threshold(2)
            .success_threshold(1)
            .open_timeout(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    /// A call admitted while closed that fails after the breaker opened
    /// (and went half-open) is not taken as the probe's result.
    #[test]
    fn a_result_from_an_earlier_state_changes_nothing() {
        let clock = Arc::new(ManualClock::new());
        let breaker = breaker(&clock);
        let slow = breaker.try_acquire().unwrap();
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(1));
        let probe = breaker.try_acquire().unwrap();
        slow.failure(); // from the closed epoch: ignored by the state machine
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        probe.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        let stats = breaker.stats();
        assert_eq!((stats.failures, stats.successes), (3, 1), "every result is still counted");
    }

    /// A success while closed resets the run of consecutive failures.
    #[test]
    fn failures_must_be_consecutive_to_open() {
        let clock = Arc::new(ManualClock::new());
        let breaker = breaker(&clock);
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    /// An unsettled permit counts as a failure; an ignored one as nothing.
    #[test]
    fn dropped_permits_fail_and_ignored_ones_do_not_count() {
        let clock = Arc::new(ManualClock::new());
        let breaker = breaker(&clock);
        breaker.try_acquire().unwrap().ignore();
        breaker.try_acquire().unwrap().ignore();
        assert_eq!(breaker.state(), BreakerState::Closed);
        drop(breaker.try_acquire().unwrap());
        drop(breaker.try_acquire().unwrap());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.stats().ignored, 2);
    }
}
