//! Gradient accumulation: the gradients of several micro-batches summed into
//! one buffer per parameter and averaged, so that a step over `n`
//! micro-batches of `b` examples uses the gradient of one batch of `n·b`.
//!
//! # What "the same gradient" means
//!
//! Each micro-batch's gradient is the gradient of its *mean* loss. For
//! micro-batches of equal size the mean of those means is the mean over the
//! whole batch, so `(g₁ + … + gₙ) / n` equals the full batch's gradient in
//! exact arithmetic. In `f32` it equals it only to rounding: floating-point
//! addition is not associative, and the full batch sums its examples in one
//! order and grouping (a matrix product's reduction) while accumulation sums
//! `n` partial sums. Expect agreement to a few ULPs of the gradient's
//! magnitude, not bit-identity.
//!
//! # How a trainer gets bit-identical results
//!
//! Bit-identity needs the same additions in the same order whatever the
//! micro-batch size. So a trainer that may halve its micro-batch (after a
//! device out-of-memory) should always compute gradients in fixed *chunks*
//! of the smallest size it can fall back to, each chunk's gradient from its
//! own backward pass, and add the chunks here in batch order with
//! `micro_batches` set to the number of chunks per step. Then a device that
//! fits the whole batch and one that fits a quarter of it run the same
//! chunks and the same sums: only how many chunks share a device call
//! changes. This accumulator adds in the order it is given and divides once
//! at the end, so it never reorders anything itself. (With `n` a power of
//! two the division is an exact scaling too.)
//!
//! The accumulator is not saved in checkpoints: a trainer snapshots between
//! steps, when it is empty.

use super::OptimError;

/// One parameter's running sum.
#[derive(Debug, Clone)]
struct Sum {
    name: String,
    values: Vec<f32>,
}

/// Sums the gradients of a fixed number of micro-batches and averages them.
///
/// Its buffers are created by the first [`add`](Self::add) and reused after
/// every [`reset`](Self::reset), so accumulation does not allocate after the
/// first micro-batch.
#[derive(Debug, Clone)]
pub struct GradAccumulator {
    micro_batches: u32,
    added: u32,
    averaged: bool,
    /// Sums in parameter order; empty until the first micro-batch.
    sums: Vec<Sum>,
}

impl GradAccumulator {
    /// An accumulator for `micro_batches` micro-batches per step (> 0).
    pub fn new(micro_batches: u32) -> Result<Self, OptimError> {
        if micro_batches == 0 {
            return Err(OptimError::InvalidHyperparameter {
                owner: "gradient accumulator",
                name: "micro_batches",
                value: 0.0,
                reason: "must be > 0",
            });
        }
        Ok(GradAccumulator { micro_batches, added: 0, averaged: false, sums: Vec::new() })
    }

    /// Micro-batches per step.
    pub fn micro_batches(&self) -> u32 {
        self.micro_batches
    }

    /// Micro-batches added since the last [`reset`](Self::reset).
    pub fn added(&self) -> u32 {
        self.added
    }

    /// Whether all the step's micro-batches have been added.
    pub fn is_complete(&self) -> bool {
        self.added == self.micro_batches
    }

    /// Adds one micro-batch's gradients, `(parameter name, gradient)` in
    /// parameter order. Every micro-batch must pass the same parameters in
    /// the same order with the same lengths as the first one ever added. On
    /// error nothing is added.
    pub fn add(&mut self, grads: &[(&str, &[f32])]) -> Result<(), OptimError> {
        if self.added == self.micro_batches {
            return Err(OptimError::AccumulatorFull { micro_batches: self.micro_batches });
        }
        if self.sums.is_empty() && !grads.is_empty() {
            self.sums = grads
                .iter()
                .map(|(name, grad)| Sum { name: (*name).to_owned(), values: vec![0.0; grad.len()] })
                .collect();
        }
        self.check(grads)?;
        for (sum, (_, grad)) in self.sums.iter_mut().zip(grads) {
            for (s, &g) in sum.values.iter_mut().zip(grad.iter()) {
                *s += g;
            }
        }
        self.added += 1;
        Ok(())
    }

    fn check(&self, grads: &[(&str, &[f32])]) -> Result<(), OptimError> {
        if grads.len() != self.sums.len() {
            return Err(OptimError::ParamCountMismatch {
                expected: self.sums.len(),
                found: grads.len(),
            });
        }
        for (index, (sum, (name, grad))) in self.sums.iter().zip(grads).enumerate() {
            if sum.name != *name || sum.values.len() != grad.len() {
                return Err(OptimError::AccumulatorMismatch {
                    index,
                    expected: sum.name.clone(),
                    expected_len: sum.values.len(),
                    found: (*name).to_owned(),
                    found_len: grad.len(),
                });
            }
        }
        Ok(())
    }

    /// Divides the sums by the number of micro-batches, once all have been
    /// added; afterwards [`grad`](Self::grad) gives the averaged gradients.
    /// Calling it again before [`reset`](Self::reset) changes nothing.
    pub fn average(&mut self) -> Result<(), OptimError> {
        if !self.is_complete() {
            return Err(OptimError::AccumulatorIncomplete {
                added: self.added,
                micro_batches: self.micro_batches,
            });
        }
        if !self.averaged {
            let n = self.micro_batches as f32;
            for sum in &mut self.sums {
                sum.values.iter_mut().for_each(|s| *s /= n);
            }
            self.averaged = true;
        }
        Ok(())
    }

    /// Whether [`average`](Self::average) has run since the last reset.
    pub fn is_averaged(&self) -> bool {
        self.averaged
    }

    /// Parameter `index`'s name and gradient: the running sum before
    /// [`average`](Self::average), the average after. `None` past the end.
    pub fn grad(&self, index: usize) -> Option<(&str, &[f32])> {
        self.sums.get(index).map(|s| (s.name.as_str(), s.values.as_slice()))
    }

    /// How many parameters the accumulator holds (0 before the first
    /// micro-batch).
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether the accumulator holds no parameters yet.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Zeroes the sums for the next step, keeping the buffers and the
    /// parameter list.
    pub fn reset(&mut self) {
        for sum in &mut self.sums {
            sum.values.fill(0.0);
        }
        self.added = 0;
        self.averaged = false;
    }
}
