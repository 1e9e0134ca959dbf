//! The metrics actor: owns its copy of the loss curve, and answers each
//! epoch's mean loss. No step waits on it: the driver sends each step's
//! loss without waiting, keeps the committed curve itself, and restores
//! this actor's from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use zbmd_rt::{Actor, ActorError, Context, ReplyTo};

use super::{Faults, RunSettings, injected};
use crate::train::config::FaultTarget;

pub(crate) enum MetricsMsg {
    /// Step `step`'s loss (steps count from 1).
    Record { step: u64, loss: f32 },
    /// The mean loss of an epoch's steps, or, when the curve misses one of
    /// them (records lost to a restart of this actor, or dropped by a full
    /// mailbox), `Err` with what it holds: the driver then restores the
    /// curve and asks again.
    EpochMean { epoch: u64, reply: ReplyTo<Result<f32, MetricsGap>> },
    /// Replaces the curve with the committed one (after a crash, whose
    /// steps since the snapshot are being replayed, at the start of a
    /// resumed run, or to fill a gap).
    Restore { losses: Vec<f32>, reply: ReplyTo<()> },
}

/// What the metrics actor holds when its curve misses steps of an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MetricsGap {
    /// How many steps' losses it holds, from step 1 on.
    pub held: u64,
    /// Whether it is an incarnation that replaced an earlier one (after a
    /// crash of its own or of an actor before it) and that the driver has
    /// not restored: the supervisor restarts a `rest_for_one` tree's later
    /// children on its own time, so a restart can land after the driver
    /// restored the tree, and then this actor starts with an empty curve.
    pub replaced: bool,
}

/// Every step's loss, as the metrics actor holds it.
#[derive(Debug)]
pub(crate) struct LossCurve {
    /// Step `i + 1`'s loss at `i`, without gaps: a record past the end is
    /// dropped, and the missing steps are reported by `epoch_mean`.
    losses: Vec<f32>,
    /// Whether this incarnation replaced an earlier one and has not been
    /// restored since ([`MetricsGap::replaced`]).
    replaced: bool,
}

impl LossCurve {
    /// An empty curve; `replaced`: in an incarnation after the first.
    pub fn new(replaced: bool) -> LossCurve {
        LossCurve { losses: Vec::new(), replaced }
    }

    /// Step `step`'s loss (steps count from 1). A replayed step replaces
    /// the one it repeats and everything after it; a step past the end
    /// would leave a hole, and is dropped.
    fn record(&mut self, step: u64, loss: f32) {
        let index = step.saturating_sub(1) as usize;
        if index <= self.losses.len() {
            self.losses.truncate(index);
            self.losses.push(loss);
        }
    }

    /// The mean loss of epoch `epoch` (from 0), `per_epoch` steps each.
    fn epoch_mean(&self, epoch: u64, per_epoch: u64) -> Result<f32, MetricsGap> {
        let first = epoch.saturating_mul(per_epoch);
        let last = first.saturating_add(per_epoch);
        usize::try_from(first)
            .ok()
            .zip(usize::try_from(last).ok())
            .and_then(|(first, last)| self.losses.get(first..last))
            .filter(|losses| !losses.is_empty())
            .map(|losses| losses.iter().sum::<f32>() / losses.len() as f32)
            .ok_or(MetricsGap { held: self.losses.len() as u64, replaced: self.replaced })
    }

    /// Replaces the curve with the driver's.
    fn restore(&mut self, losses: Vec<f32>) {
        self.losses = losses;
        self.replaced = false;
    }
}

/// A crash of the metrics actor, noted to the driver as it happens: no
/// request waits on this actor, so the note is how the driver learns why
/// (at the epoch's end, when it next asks for the curve).
pub(crate) struct MetricsCrash {
    pub step: u64,
    pub at: Instant,
    pub why: String,
}

/// Keeps the run's training curve. The driver owns the committed curve and
/// restores this actor from it.
pub(crate) struct MetricsActor {
    run: Arc<RunSettings>,
    faults: Faults,
    curve: LossCurve,
    /// The driver's channel for crash notes. Unbounded, and bounded all the
    /// same: one note per crash of this actor, and the training supervisor
    /// allows only so many restarts before the run ends.
    crashes: Sender<MetricsCrash>,
}

/// Makes the metrics actor's incarnations: every one after the first
/// replaces one ([`MetricsGap::replaced`]).
pub(crate) struct MetricsFactory {
    run: Arc<RunSettings>,
    faults: Faults,
    crashes: Sender<MetricsCrash>,
    started: AtomicBool,
}

impl MetricsFactory {
    pub fn new(run: Arc<RunSettings>, faults: Faults, crashes: Sender<MetricsCrash>) -> Self {
        MetricsFactory { run, faults, crashes, started: AtomicBool::new(false) }
    }

    /// The next incarnation.
    pub fn make(&self) -> MetricsActor {
        MetricsActor {
            run: self.run.clone(),
            faults: self.faults.clone(),
            curve: LossCurve::new(self.started.swap(true, Ordering::Relaxed)),
            crashes: self.crashes.clone(),
        }
    }
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: MetricsMsg) -> Result<(), ActorError> {
        match msg {
            MetricsMsg::Record { step, loss } => {
                if self.faults.fires(FaultTarget::Metrics, step) {
                    let why = injected(FaultTarget::Metrics, step);
                    let error = ActorError::msg(&why);
                    // The driver may have ended the run and dropped its end.
                    let _ = self.crashes.send(MetricsCrash { step, at: Instant::now(), why });
                    return Err(error);
                }
                self.curve.record(step, loss);
            }
            MetricsMsg::EpochMean { epoch, reply } => {
                let per_epoch = self.run.batches_per_epoch.max(1);
                reply.reply(self.curve.epoch_mean(epoch, per_epoch));
            }
            MetricsMsg::Restore { losses, reply } => {
                self.curve.restore(losses);
                reply.reply(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_curve_tells_a_replaced_incarnation_from_a_lost_record() {
        // The first incarnation: a dropped record leaves a gap, no restart.
        let mut first = LossCurve::new(false);
        first.record(1, 1.0);
        first.record(3, 3.0);
        let gap = first.epoch_mean(0, 2).unwrap_err();
        assert_eq!((gap.held, gap.replaced), (1, false));
        first.record(2, 2.0);
        assert_eq!(first.epoch_mean(0, 2), Ok(1.5));
        // A replayed step replaces the one it repeats and those after it.
        first.record(2, 4.0);
        assert_eq!(first.epoch_mean(0, 2), Ok(2.5));
        assert!(first.epoch_mean(1, 2).is_err(), "epoch 2 has no step yet");

        // A later incarnation the driver has not restored says so, until
        // it is restored.
        let mut later = LossCurve::new(true);
        later.record(3, 3.0);
        let gap = later.epoch_mean(1, 2).unwrap_err();
        assert_eq!((gap.held, gap.replaced), (0, true));
        later.restore(vec![1.0, 2.0]);
        later.record(3, 3.0);
        later.record(4, 5.0);
        assert_eq!(later.epoch_mean(1, 2), Ok(4.0));
        later.record(6, 6.0);
        assert!(!later.epoch_mean(2, 2).unwrap_err().replaced, "restored since");
        assert!(later.epoch_mean(u64::MAX, u64::MAX).is_err(), "no overflow");
    }
}
