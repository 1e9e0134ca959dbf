//! Writing the snapshot to disk through the checkpointer, with retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Driver;
use crate::train::TrainError;
use crate::train::actors::Refusal;
use crate::train::actors::checkpointer::CheckpointerMsg;
use crate::train::actors::metrics::MetricsCrash;
use crate::train::config::{CheckpointFailure, FaultTarget};
use crate::train::report::RecoveryInfo;

/// Attempts at writing one checkpoint before it counts as failed: enough
/// to ride out a checkpointer crash or a brief I/O error, few enough that a
/// disk that stays full costs the run well under a second each time.
const SAVE_ATTEMPTS: u32 = 3;
/// The pause after a failed attempt, times the attempt's number.
const SAVE_BACKOFF: Duration = Duration::from_millis(100);
/// Sends of one checkpoint in all: a request whose call failed without an
/// answer (dropped by an incarnation that crashed without saying why) is
/// sent again without counting as an attempt, but not forever.
const SAVE_SENDS_MAX: u32 = 3 * SAVE_ATTEMPTS;

/// How one send of a save ended short of a file.
enum SaveOutcome {
    /// The attempt failed, and counts.
    Failed(String),
    /// The call failed without an answer: send again as the same attempt.
    Unanswered(String),
}

impl Driver<'_> {
    /// Writes the snapshot of `step` to disk, in up to [`SAVE_ATTEMPTS`]
    /// attempts: a crash of the checkpointer is retried at once (the call
    /// waits for its restart), an I/O error after a pause. The pause is a
    /// real sleep, the honest way to wait for a failing disk, and it blocks
    /// only the driver: the caller's thread, never a shard. A save that
    /// fails every attempt stops the run or is recorded and warned of, as
    /// `on_checkpoint_failure` says.
    pub(super) fn save_checkpoint(&mut self, step: u64) -> Result<(), TrainError> {
        let snapshot = &self.committer.snapshot;
        debug_assert_eq!(snapshot.step, step, "a checkpoint is due only on a snapshot");
        let run = self.run.store.as_ref().and_then(|store| store.run());
        let checkpoint = snapshot
            .to_checkpoint(
                &self.committer.losses,
                self.run.batches_per_epoch,
                &self.config.model,
                run,
            )
            .map(Arc::new)
            .map_err(|error| {
                TrainError::Failed(format!("the checkpoint of step {step}: {error}"))
            })?;
        let since = Instant::now();
        let mut failures = Vec::new();
        let (mut attempt, mut sends) = (1, 0);
        while attempt <= SAVE_ATTEMPTS && sends < SAVE_SENDS_MAX {
            sends += 1;
            let saved =
                self.tree.call(FaultTarget::Checkpointer, &self.tree.checkpointer, |reply| {
                    CheckpointerMsg::Save { checkpoint: checkpoint.clone(), reply }
                });
            let outcome = match saved {
                Ok(Ok(path)) => {
                    if !failures.is_empty() {
                        self.checkpointer_recovered(step, &failures, attempt, since);
                    }
                    self.observer.on_checkpoint(step, &path);
                    self.saved.last = Some((step, path));
                    return Ok(());
                }
                Ok(Err(Refusal::Crashing(crash))) => {
                    SaveOutcome::Failed(format!("the checkpointer crashed: {}", crash.reason))
                }
                Ok(Err(Refusal::Declined(error))) => {
                    if attempt < SAVE_ATTEMPTS {
                        std::thread::sleep(SAVE_BACKOFF * attempt);
                    }
                    SaveOutcome::Failed(error)
                }
                Ok(Err(Refusal::Unrestored)) => {
                    SaveOutcome::Failed("the checkpointer refused: unrestored".into())
                }
                Err(failure) => SaveOutcome::Unanswered(failure.reason),
            };
            match outcome {
                SaveOutcome::Failed(error) => {
                    failures.push(format!("attempt {attempt}: {error}"));
                    attempt += 1;
                }
                SaveOutcome::Unanswered(_) if sends < SAVE_SENDS_MAX => {}
                SaveOutcome::Unanswered(error) => {
                    failures.push(format!("attempt {attempt}: {error}"))
                }
            }
        }
        self.save_failed(step, failures.join("; "))
    }

    /// A save that failed every attempt: stops the run, or is warned of and
    /// recorded for the summary.
    fn save_failed(&mut self, step: u64, error: String) -> Result<(), TrainError> {
        let newest = match &self.saved.last {
            Some((saved, path)) => {
                format!(
                    "the newest checkpoint this run wrote is step {saved}'s, {}",
                    path.display()
                )
            }
            None => "this run has written no checkpoint yet".to_string(),
        };
        if self.config.on_checkpoint_failure == CheckpointFailure::Stop {
            return Err(TrainError::CheckpointFailed { step, error, newest });
        }
        self.observer.on_warning(&format!(
            "the checkpoint of step {step} could not be written ({error}); {newest}. Training \
             goes on and retries at the next checkpoint; the run will end with an error"
        ));
        self.saved.failures.push((step, error));
        Ok(())
    }

    /// Reports a save that succeeded after failures. A crash of the
    /// checkpointer restarted the metrics actor after it (`rest_for_one`):
    /// its curve is given back now rather than found short at the epoch's
    /// end.
    fn checkpointer_recovered(
        &mut self,
        step: u64,
        failures: &[String],
        attempt: u32,
        since: Instant,
    ) {
        if failures.iter().any(|failure| failure.contains("the checkpointer crashed")) {
            if let Err(failure) = self.restore_metrics_to(step) {
                self.recovery.metrics_crashes.push(MetricsCrash {
                    step,
                    at: since,
                    why: format!(
                        "restarted with the checkpointer, then unreachable: {}",
                        failure.reason
                    ),
                });
            }
        }
        let recovery = RecoveryInfo {
            target: FaultTarget::Checkpointer,
            step,
            action: format!("{}; written on attempt {attempt}", failures.join("; ")),
            recovery_time: since.elapsed(),
        };
        self.recovery.report(self.observer, recovery);
    }

    /// The run's end after `step`, which the caller asked for.
    pub(super) fn interrupted(&self, step: u64, reason: String) -> TrainError {
        let checkpoint = self
            .saved
            .last
            .as_ref()
            .filter(|(saved, _)| *saved == step)
            .map(|(_, path)| path.clone());
        let save_error = match (&checkpoint, self.saved.failures.last()) {
            (None, Some((failed, error))) if *failed == step => Some(error.clone()),
            _ => None,
        };
        TrainError::Interrupted { reason, step, checkpoint, save_error }
    }
}
