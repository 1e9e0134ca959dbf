//! What a failure does: the tree restored to the snapshot and the steps
//! since replayed, the failures of one step counted, and what was
//! recovered reported once its step is done again.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use super::{Driver, Progress};
use crate::train::TrainError;
use crate::train::actors::Failure;
use crate::train::actors::metrics::{MetricsCrash, MetricsMsg};
use crate::train::commit::StepCursor;
use crate::train::config::FaultTarget;
use crate::train::report::{Observer, RecoveryInfo};

/// How many times in a row one step may fail before the run gives up: a
/// failure that recovery does not cure (a batch the model cannot fit, a
/// device that keeps failing) is reported, not retried forever.
const MAX_FAILURES_PER_STEP: u32 = 3;

/// Attempts at restoring the tree after a failure before the run gives up:
/// each failed attempt means an actor failed again while being restored.
const RESTORE_ATTEMPTS: u32 = 4;

/// The driver's account of failures and recoveries.
pub(super) struct Recovery {
    /// Every recovery reported so far.
    pub reported: Vec<RecoveryInfo>,
    /// The failure being recovered from, until its step completes again.
    pending: Option<Pending>,
    /// The step that failed last, and how many times in a row.
    failures: (u64, u32),
    /// Notes of the metrics actor's crashes, as it sends them.
    metrics_notes: Receiver<MetricsCrash>,
    /// Crashes of the metrics actor not reported yet.
    pub metrics_crashes: Vec<MetricsCrash>,
}

/// A failure being recovered from.
struct Pending {
    target: FaultTarget,
    /// The step that failed.
    step: u64,
    /// The snapshot the tree was restored from.
    restored_from: u64,
    since: Instant,
    error: String,
}

impl Recovery {
    pub fn new(metrics_notes: Receiver<MetricsCrash>) -> Self {
        Recovery {
            reported: Vec::new(),
            pending: None,
            failures: (0, 0),
            metrics_notes,
            metrics_crashes: Vec::new(),
        }
    }

    /// Reports `recovery` to the observer and keeps it for the report.
    pub fn report(&mut self, observer: &mut dyn Observer, recovery: RecoveryInfo) {
        observer.on_recovery(&recovery);
        self.reported.push(recovery);
    }

    /// The metrics actor's crashes noted since the driver last looked.
    pub fn take_metrics_crashes(&mut self) -> Vec<MetricsCrash> {
        self.metrics_crashes.extend(self.metrics_notes.try_iter());
        std::mem::take(&mut self.metrics_crashes)
    }
}

impl Driver<'_> {
    /// Takes in the failure of step `failed`: counts it (ending the run
    /// after [`MAX_FAILURES_PER_STEP`] in a row) and remembers it for the
    /// report, unless it is the echo of one being recovered from already.
    pub(super) fn failed(&mut self, failed: u64, failure: Failure) -> Result<(), TrainError> {
        let Failure { target, reason: error } = failure;
        let recovery = &mut self.recovery;
        recovery.failures = match recovery.failures {
            (step, count) if step == failed => (failed, count + 1),
            _ => (failed, 1),
        };
        if recovery.failures.1 > MAX_FAILURES_PER_STEP {
            return Err(TrainError::Failed(format!(
                "step {failed} failed {} times in a row, the last in the {} actor: {error}",
                recovery.failures.1,
                target.name()
            )));
        }
        match &recovery.pending {
            // The echo of a failure recovered and reported already:
            // restored again, not a fault of its own.
            None if error.ends_with(StepCursor::RESTARTED_LATE) => {
                tracing::info!(step = failed, actor = target.name(), %error, "restoring again");
            }
            Some(pending) => tracing::info!(
                step = failed,
                actor = target.name(),
                %error,
                "failed again while recovering from the {} failure of step {}",
                pending.target.name(),
                pending.step
            ),
            None => {
                recovery.pending = Some(Pending {
                    target,
                    step: failed,
                    restored_from: self.committer.snapshot.step,
                    since: Instant::now(),
                    error,
                });
            }
        }
        Ok(())
    }

    /// After a failure: every actor back to the snapshot, the driver too.
    pub(super) fn restore(&mut self, progress: &mut Progress) -> Result<(), TrainError> {
        let mut attempt = 1;
        while let Err(failure) = self.restore_tree() {
            if attempt >= RESTORE_ATTEMPTS {
                return Err(TrainError::Failed(format!(
                    "recovery failed: {} actor: {}",
                    failure.target.name(),
                    failure.reason
                )));
            }
            attempt += 1;
        }
        self.committer.params = self.committer.snapshot.params.clone();
        *progress = Progress::at(&self.committer.snapshot);
        Ok(())
    }

    /// Sends the stateful actors the snapshot, and the metrics actor the
    /// committed curve.
    pub(super) fn restore_tree(&mut self) -> Result<(), Failure> {
        self.restore_one(FaultTarget::Optimizer, &self.tree.optimizer)?;
        self.restore_one(FaultTarget::Loader, &self.tree.loader)?;
        self.restore_metrics_to(self.committer.snapshot.step)
    }

    /// Gives the metrics actor the driver's loss curve up to step `step`.
    pub(super) fn restore_metrics_to(&self, step: u64) -> Result<(), Failure> {
        let losses = &self.committer.losses[..step as usize];
        self.tree.call(FaultTarget::Metrics, &self.tree.metrics, |reply| MetricsMsg::Restore {
            losses: losses.to_vec(),
            reply,
        })
    }

    /// Reports the failure being recovered from, once its step is done
    /// again.
    pub(super) fn report_recovered(&mut self, step: u64) {
        let Some(pending) = self.recovery.pending.take_if(|pending| pending.step <= step) else {
            return;
        };
        let replayed = match pending.restored_from + 1 {
            first if first == step => format!("step {step}"),
            first => format!("steps {first}-{step}"),
        };
        let recovery = RecoveryInfo {
            target: pending.target,
            step: pending.step,
            action: format!(
                "{}; restored from the snapshot of step {}, replayed {replayed}",
                pending.error, pending.restored_from
            ),
            recovery_time: pending.since.elapsed(),
        };
        self.recovery.report(self.observer, recovery);
    }
}
