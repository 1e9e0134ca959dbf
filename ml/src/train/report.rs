//! What a training run tells its caller as it goes ([`Observer`]) and at the
//! end ([`TrainReport`]).

use std::time::Duration;

use crate::train::config::FaultTarget;

/// One completed optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Steps completed so far (this one included), from 1.
    pub step: u64,
    /// Steps the run will make in all.
    pub total_steps: u64,
    /// The epoch this step belongs to, from 0.
    pub epoch: u64,
    /// The step's mean training loss.
    pub loss: f32,
    /// The learning rate it used.
    pub lr: f64,
    /// Examples per second over the run so far.
    pub examples_per_sec: f64,
}

/// One completed epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochInfo {
    /// The epoch, from 0.
    pub epoch: u64,
    /// Mean training loss over its steps.
    pub train_loss: f32,
    /// Loss on the held-out set.
    pub test_loss: f32,
    /// Accuracy on the held-out set, in [0, 1].
    pub test_accuracy: f32,
}

/// One fault and its repair.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryInfo {
    /// What failed.
    pub target: FaultTarget,
    /// The step that was in flight (from 1). For a record the metrics
    /// actor lost with no crash known, the step whose epoch end found its
    /// curve short.
    pub step: u64,
    /// What was done: "restored from the snapshot of step 41", "micro-batch
    /// 64 → 32", "moved from cpu:0 to cpu:1".
    pub action: String,
    /// From the failure to the completion of the step it interrupted. For
    /// the metrics actor, which no step waits on: from its crash to the
    /// epoch's end, where its curve is checked whole.
    pub recovery_time: Duration,
}

/// Hears of a run's progress. Every method has a no-op default.
pub trait Observer {
    /// After each optimizer step.
    fn on_step(&mut self, step: &StepInfo) {
        let _ = step;
    }
    /// After each epoch, with its held-out figures.
    fn on_epoch(&mut self, epoch: &EpochInfo) {
        let _ = epoch;
    }
    /// After each recovered fault.
    fn on_recovery(&mut self, recovery: &RecoveryInfo) {
        let _ = recovery;
    }
    /// After each checkpoint written to disk.
    fn on_checkpoint(&mut self, step: u64, path: &std::path::Path) {
        let _ = (step, path);
    }
    /// Once, when resuming from a checkpoint (or starting afresh in a
    /// directory that has none of this run's).
    fn on_resume(&mut self, message: &str) {
        let _ = message;
    }
    /// Something the user must hear even when progress is not shown: a
    /// checkpoint skipped as corrupt, one that could not be written, a
    /// planned fault that will not fire.
    fn on_warning(&mut self, message: &str) {
        let _ = message;
    }
    /// Asked before each step: `Some(reason)` (`"SIGTERM"`, say) asks the
    /// run to stop after that step, with a checkpoint of it where the run
    /// writes checkpoints. Keeps answering `Some` once it has.
    fn stop_requested(&mut self) -> Option<String> {
        None
    }
}

/// An observer that hears nothing.
pub struct Silent;

impl Observer for Silent {}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Optimizer steps completed (including those before a resume).
    pub steps: u64,
    /// The step the run resumed from (0 for a fresh run).
    pub resumed_from: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// Per-epoch figures, in order.
    pub history: Vec<EpochInfo>,
    /// Every step's loss, in order (from the resume point on).
    pub losses: Vec<f32>,
    /// Held-out accuracy at the end, in [0, 1].
    pub test_accuracy: f32,
    /// Held-out loss at the end.
    pub test_loss: f32,
    /// Wall time of this run (not counting an earlier run resumed from).
    pub wall_time: Duration,
    /// Steps per second in this run.
    pub steps_per_sec: f64,
    /// Faults injected in this run.
    pub faults_injected: u64,
    /// Each fault's repair, in order.
    pub recoveries: Vec<RecoveryInfo>,
    /// The device the model ran on at the end.
    pub device: String,
    /// The final parameters, by PyTorch name, in model order.
    pub parameters: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// The newest checkpoint this run wrote: its step and file.
    pub last_checkpoint: Option<(u64, std::path::PathBuf)>,
    /// The checkpoints that could not be written, even after retries (with
    /// `CheckpointFailure::Continue`): each step and why. A run with any is
    /// not a success.
    pub checkpoint_failures: Vec<(u64, String)>,
}

impl TrainReport {
    /// Whether two runs ended with bit-identical parameters.
    pub fn same_parameters(&self, other: &TrainReport) -> bool {
        self.parameters.len() == other.parameters.len()
            && self.parameters.iter().zip(&other.parameters).all(|(a, b)| {
                a.0 == b.0
                    && a.1 == b.1
                    && a.2.len() == b.2.len()
                    && a.2.iter().zip(&b.2).all(|(x, y)| x.to_bits() == y.to_bits())
            })
    }
}
