//! The epoch's mean training loss, from the metrics actor, repaired from
//! the driver's curve where the actor's misses steps.

use std::time::Instant;

use super::Driver;
use crate::train::actors::metrics::{MetricsGap, MetricsMsg};
use crate::train::config::FaultTarget;
use crate::train::report::RecoveryInfo;

impl Driver<'_> {
    /// The mean training loss of `epoch`, which step `step` ended, from the
    /// metrics actor. Where its curve misses steps (it restarted, or a
    /// record was dropped), the driver's curve fills it first. A crash of
    /// the metrics actor is reported here, the first time the driver
    /// waits on it. `None` only when the metrics actor cannot answer.
    pub(super) fn epoch_mean(&mut self, epoch: u64, step: u64) -> Option<f32> {
        let ask = || {
            self.tree.call(FaultTarget::Metrics, &self.tree.metrics, |reply| {
                MetricsMsg::EpochMean { epoch, reply }
            })
        };
        let noticed = Instant::now();
        let (mean, repair, replaced) = match ask().ok()? {
            Ok(mean) => (mean, None, false),
            Err(MetricsGap { held, replaced }) => {
                self.restore_metrics_to(step).ok()?;
                let held = match held {
                    0 => "no step's loss".to_string(),
                    held => format!("the losses of steps 1-{held} only"),
                };
                let repair = format!(
                    "at the end of epoch {} it held {held}; its curve was restored to step \
                     {step} from the driver's",
                    epoch + 1
                );
                (ask().ok()?.ok()?, Some(repair), replaced)
            }
        };
        let crashes = self.recovery.take_metrics_crashes();
        let recoveries: Vec<RecoveryInfo> = match (crashes.is_empty(), repair) {
            // Each crash is reported, the repair with each (one repair
            // covers them all: the curve is given back whole).
            (false, repair) => crashes
                .into_iter()
                .map(|crash| RecoveryInfo {
                    target: FaultTarget::Metrics,
                    step: crash.step,
                    action: format!(
                        "{}; {}",
                        crash.why,
                        // Lost nothing: a later crash's recovery gave every
                        // actor the committed curve back.
                        repair
                            .as_deref()
                            .unwrap_or("its curve was restored with the other actors'")
                    ),
                    recovery_time: crash.at.elapsed(),
                })
                .collect(),
            // Restarted with an actor before it after a failure that was
            // recovered (and reported) already, but after the driver had
            // restored it: the echo of that failure, now repaired too.
            (true, Some(repair)) if replaced && !self.recovery.reported.is_empty() => {
                tracing::info!(step, %repair, "the metrics actor was restarted after the driver restored it");
                return Some(mean);
            }
            (true, Some(repair)) => vec![RecoveryInfo {
                target: FaultTarget::Metrics,
                step,
                action: format!("a record was lost, no crash is known; {repair}"),
                recovery_time: noticed.elapsed(),
            }],
            (true, None) => return Some(mean),
        };
        for recovery in recoveries {
            self.recovery.report(self.observer, recovery);
        }
        Some(mean)
    }
}
