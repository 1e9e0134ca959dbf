//! The message faults, as a shard applies them to the user messages it
//! takes from mailboxes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{DelayDistribution, FaultPlan, GOLDEN_GAMMA, INJECTED_CRASH, mix64, unit};
use crate::actor::{ExitReason, Shared, Signal};
use crate::error::SendError;
use crate::runtime::{Metric, ShardCtx, TimerAction};

/// One shard's message faults: its generator and the plan's thresholds.
pub(crate) struct ShardFaults {
    rng: Xoshiro256PlusPlus,
    /// One roll `u` in `[0, 1)` per message: crash below `crash_below`,
    /// else drop below `drop_below`, else delay below `delay_below`.
    crash_below: f64,
    drop_below: f64,
    delay_below: f64,
    delay: DelayDistribution,
    /// The exit reason of an injected crash, allocated once.
    crash_reason: Arc<str>,
}

/// What a roll decided for one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Fault {
    None,
    Crash,
    Drop,
    Delay(Duration),
}

impl ShardFaults {
    /// Shard `index`'s faults under `plan` (whose seed is chosen); `None`
    /// when the plan faults no messages.
    pub(crate) fn new(plan: &FaultPlan, index: usize) -> Option<Self> {
        if !plan.faults_messages() {
            return None;
        }
        let seed =
            plan.chosen_seed().expect("the runtime chooses the seed before the shards start");
        // Shard i's stream: SplitMix64's i-th output after the seed, which
        // xoshiro's own seeding expands through SplitMix64 again.
        let shard_seed = mix64(seed.wrapping_add((index as u64 + 1).wrapping_mul(GOLDEN_GAMMA)));
        let crash_below = plan.crash_probability();
        let drop_below = crash_below + plan.drop_probability();
        Some(ShardFaults {
            rng: Xoshiro256PlusPlus::seed_from_u64(shard_seed),
            crash_below,
            drop_below,
            delay_below: drop_below + plan.delay_probability(),
            delay: plan.delay_distribution(),
            crash_reason: INJECTED_CRASH.into(),
        })
    }

    pub(super) fn roll(&mut self) -> Fault {
        let u = unit(self.rng.next_u64());
        if u < self.crash_below {
            Fault::Crash
        } else if u < self.drop_below {
            Fault::Drop
        } else if u < self.delay_below {
            Fault::Delay(self.delay.sample(unit(self.rng.next_u64())))
        } else {
            Fault::None
        }
    }
}

/// What becomes of a user message.
pub(crate) enum Verdict<M> {
    /// Handle it as usual.
    Deliver(M),
    /// Crash the actor with this reason instead (the message is lost with it).
    Crash(ExitReason),
    /// The fault took the message (dropped, or delayed for later).
    Consumed,
}

/// Rolls the fault of one user message of the actor `shared`, counts it,
/// and carries it out. Called by the actor's turn only while a plan faults
/// messages.
pub(crate) fn apply<M: Send + 'static>(
    shard: &mut ShardCtx,
    shared: &Arc<Shared<M>>,
    msg: M,
) -> Verdict<M> {
    if shared.header.fault_exempt {
        return Verdict::Deliver(msg);
    }
    let Some(faults) = shard.faults() else {
        return Verdict::Deliver(msg);
    };
    match faults.roll() {
        Fault::None => Verdict::Deliver(msg),
        Fault::Crash => {
            let reason = ExitReason::Error(faults.crash_reason.clone());
            shard.count(Metric::FaultsCrash);
            drop(msg);
            Verdict::Crash(reason)
        }
        Fault::Drop => {
            shard.count(Metric::FaultsDrop);
            drop(msg);
            Verdict::Consumed
        }
        Fault::Delay(delay) => {
            let target = shared.clone();
            let redeliver = move || {
                redeliver(&target, msg);
                Ok(())
            };
            let action = TimerAction::once(Arc::new(AtomicBool::new(false)), redeliver);
            // A full timer wheel drops the action, and the message with it.
            let counter = match shard.add_timer(delay, action) {
                Ok(_) => Metric::FaultsDelay,
                Err(_) => Metric::FaultsDrop,
            };
            shard.count(counter);
            Verdict::Consumed
        }
    }
}

/// Hands a delayed message back to its actor through the system lane, where
/// it is not faulted again. A full lane loses it (counted as an injected
/// drop, and by the lane as a dropped signal); a dead actor, as a dead
/// letter.
fn redeliver<M: Send + 'static>(target: &Shared<M>, msg: M) {
    match target.push_signal(Signal::Reply(msg)) {
        Ok(()) => {}
        Err(SendError::Full(_)) => target.header.sched.counters().add(Metric::FaultsDrop, 1),
        Err(SendError::NoProc(_)) => target.header.sched.count_dead_letter(),
    }
}
