//! A shard's timers: `send_after`, `send_interval` and ask timeouts, on the
//! shard's own [`TimerWheel`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::actor::Expire;
use crate::error::RuntimeError;
use crate::timer::{TimerKey, TimerWheel};

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// Times out an ask, unless its reply came first.
    AskTimeout(Arc<dyn Expire>),
    /// Sends one message, unless cancelled.
    Once { cancelled: Arc<AtomicBool>, fire: Box<dyn FnOnce() -> Result<(), ()> + Send> },
    /// Sends a message every `period` until cancelled or the target is gone
    /// (`fire` answers `Err`).
    Every {
        cancelled: Arc<AtomicBool>,
        period: Duration,
        fire: Box<dyn FnMut() -> Result<(), ()> + Send>,
    },
}

impl TimerAction {
    pub(crate) fn once(
        cancelled: Arc<AtomicBool>,
        fire: impl FnOnce() -> Result<(), ()> + Send + 'static,
    ) -> Self {
        TimerAction::Once { cancelled, fire: Box::new(fire) }
    }

    pub(crate) fn every(
        cancelled: Arc<AtomicBool>,
        period: Duration,
        fire: impl FnMut() -> Result<(), ()> + Send + 'static,
    ) -> Self {
        TimerAction::Every { cancelled, period, fire: Box::new(fire) }
    }
}

/// The timer wheel of one shard, plus the re-arming of intervals.
pub(crate) struct Timers {
    wheel: TimerWheel<(Instant, TimerAction)>,
    /// Intervals to re-arm after a poll (the wheel is borrowed during it).
    rearm: Vec<(Instant, TimerAction)>,
}

impl Timers {
    pub(crate) fn new(capacity: usize, tick: Duration) -> Result<Self, RuntimeError> {
        let wheel = TimerWheel::new(capacity, tick, Instant::now())?;
        Ok(Timers { wheel, rearm: Vec::with_capacity(capacity.min(1024)) })
    }

    pub(crate) fn add(
        &mut self,
        deadline: Instant,
        action: TimerAction,
    ) -> Result<TimerKey, RuntimeError> {
        self.wheel.insert(deadline, (deadline, action)).map_err(|e| e.reason.into())
    }

    /// Removes a pending timer, freeing its entry now rather than at its
    /// deadline; false if it already fired or was removed.
    pub(crate) fn remove(&mut self, key: TimerKey) -> bool {
        self.wheel.cancel(key).is_some()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Fires every due timer; returns how many fired.
    pub(crate) fn fire_due(&mut self, now: Instant) -> usize {
        let rearm = &mut self.rearm;
        let fired = self.wheel.poll(now, |_, (deadline, action)| match action {
            TimerAction::AskTimeout(ask) => ask.expire(),
            TimerAction::Once { cancelled, fire } => {
                if !cancelled.load(Ordering::Acquire) {
                    let _ = fire();
                }
            }
            TimerAction::Every { cancelled, period, mut fire } => {
                if cancelled.load(Ordering::Acquire) || fire().is_err() {
                    return;
                }
                // Keep the phase (no drift) unless the shard fell a whole
                // period behind; then restart from now rather than burst.
                let next = deadline + period;
                let next = if next <= now { now + period } else { next };
                rearm.push((next, TimerAction::Every { cancelled, period, fire }));
            }
        });
        while let Some((deadline, action)) = self.rearm.pop() {
            if self.add(deadline, action).is_err() {
                tracing::error!("timer wheel full: an interval timer was dropped");
            }
        }
        fired
    }
}
