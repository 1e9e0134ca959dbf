//! Learning-rate schedules: a pure function of the step number, so a resumed
//! run recomputes the same learning rate from the step it restores and the
//! schedule itself needs no saved state.

use serde::{Deserialize, Serialize};

use super::{OptimError, check_range};

const NAME: &str = "learning-rate schedule";

/// A learning rate as a function of the step number (0 for the first step).
///
/// Before each step the trainer calls
/// `optimizer.set_lr(schedule.lr_at(optimizer.steps()))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The same learning rate on every step.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// `lr · gamma^⌊step / step_size⌋`: multiplied by `gamma` every
    /// `step_size` steps (PyTorch's `StepLR`, counted in optimizer steps).
    Step {
        /// The learning rate of steps `0..step_size`.
        lr: f64,
        /// Steps between two decays (> 0).
        step_size: u64,
        /// The factor applied at each decay (≥ 0).
        gamma: f64,
    },
    /// Linear warmup, then a cosine decay to `min_lr`:
    ///
    /// ```text
    /// step < warmup_steps:                 lr · (step + 1) / (warmup_steps + 1)
    /// warmup_steps ≤ step < total_steps:   min_lr + (lr − min_lr) · ½(1 + cos(π · progress)),
    ///                                      progress = (step − warmup_steps) / (total_steps − warmup_steps)
    /// step ≥ total_steps:                  min_lr
    /// ```
    ///
    /// The warmup starts above zero (the first step trains) and rises
    /// strictly to `lr`, which the cosine starts from at `warmup_steps`; the
    /// cosine reaches `min_lr` at `total_steps` and stays there.
    WarmupCosine {
        /// The peak learning rate, at the end of warmup.
        lr: f64,
        /// Steps of linear warmup (may be 0).
        warmup_steps: u64,
        /// Step at which the decay reaches `min_lr` (≥ `warmup_steps`).
        total_steps: u64,
        /// The floor of the decay (in `0..=lr`).
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Checks the schedule's settings.
    pub fn validate(&self) -> Result<(), OptimError> {
        let lr_range = "must be finite and ≥ 0";
        match *self {
            LrSchedule::Constant { lr } => check_range(NAME, "lr", lr, 0.0, f64::MAX, lr_range),
            LrSchedule::Step { lr, step_size, gamma } => {
                check_range(NAME, "lr", lr, 0.0, f64::MAX, lr_range)?;
                check_range(NAME, "gamma", gamma, 0.0, f64::MAX, "must be finite and ≥ 0")?;
                check_range(NAME, "step_size", step_size as f64, 1.0, f64::MAX, "must be > 0")
            }
            LrSchedule::WarmupCosine { lr, warmup_steps, total_steps, min_lr } => {
                check_range(NAME, "lr", lr, 0.0, f64::MAX, lr_range)?;
                check_range(NAME, "min_lr", min_lr, 0.0, lr, "must be in 0..=lr")?;
                let warmup = warmup_steps as f64;
                let reason = "must be ≥ warmup_steps";
                check_range(NAME, "total_steps", total_steps as f64, warmup, f64::MAX, reason)
            }
        }
    }

    /// The learning rate of step `step` (0 for the first step).
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Step { lr, step_size, gamma } => {
                debug_assert!(step_size > 0, "Step schedule with step_size 0; call validate");
                // The exponent saturates rather than wraps for absurd step counts.
                let decays = i32::try_from(step / step_size.max(1)).unwrap_or(i32::MAX);
                lr * gamma.powi(decays)
            }
            LrSchedule::WarmupCosine { lr, warmup_steps, total_steps, min_lr } => {
                if step < warmup_steps {
                    lr * (step as f64 + 1.0) / (warmup_steps as f64 + 1.0)
                } else if step >= total_steps {
                    min_lr
                } else {
                    let progress =
                        (step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64;
                    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                    min_lr + (lr - min_lr) * cosine
                }
            }
        }
    }
}
