//! Content checks: what a checkpoint must hold beyond what its checksum
//! proves. A [`CheckpointStore`](super::CheckpointStore) opened for a run
//! runs its [`ContentCheck`] on every checkpoint it decodes, and skips one
//! the check refuses ([`CheckpointError::BadContents`](super::CheckpointError::BadContents),
//! whose source is the [`ContentError`]): a file can be intact and still
//! not be this run's state, or hold values training never writes.

use crate::data::LoaderPosition;
use crate::optim::OptimError;

use super::Checkpoint;

/// A check of a decoded checkpoint's contents, beyond what the format can
/// check: that its tensors fit the model and hold values training could
/// have produced. `Err` says what is wrong.
pub type ContentCheck = Box<dyn Fn(&Checkpoint) -> Result<(), ContentError> + Send + Sync>;

/// Why a [`ContentCheck`] refused a checkpoint: which part of its contents
/// cannot be the state of the run that reads it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    /// A tensor holds a NaN or an infinity: training stops at the first
    /// non-finite loss or parameter, so it never writes one.
    #[error(
        "tensor {tensor} holds {value} at index {index}: training never writes a non-finite value"
    )]
    NonFinite {
        /// The tensor's name.
        tensor: String,
        /// The position of the first non-finite value in its data.
        index: usize,
        /// That value.
        value: f32,
    },
    /// The tensors are not the model's parameters and optimizer state: one
    /// is missing, or has another shape or length than the model's.
    #[error("{reason}")]
    Tensors {
        /// Which tensor, and what does not fit.
        reason: String,
    },
    /// The run's optimizer settings do not build an optimizer.
    #[error("optimizer: {source}")]
    Optimizer {
        /// What the optimizer's configuration check said.
        source: OptimError,
    },
    /// The optimizer refuses the checkpoint's optimizer state.
    #[error("optimizer state: {source}")]
    OptimizerState {
        /// What the optimizer said when loading the state.
        source: OptimError,
    },
    /// The data loader's position is not the checkpoint's step of this
    /// run's data: another row count or batch size, a batch index past the
    /// epoch, or a position that is another step.
    #[error(
        "the data loader stands at epoch {} batch {} of {} rows in batches of {}, not at step \
         {step} of this run's {rows} rows in batches of {batch_size}",
        found.epoch, found.batch_index, found.rows, found.batch_size
    )]
    LoaderPosition {
        /// The position the checkpoint holds.
        found: LoaderPosition,
        /// The checkpoint's step.
        step: u64,
        /// The rows of this run's training data.
        rows: u64,
        /// This run's batch size.
        batch_size: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_does_not_fit() {
        let found = LoaderPosition {
            epoch: 1,
            batch_index: 2,
            rows: 30,
            batch_size: 4,
            ..Default::default()
        };
        let error = ContentError::LoaderPosition { found, step: 9, rows: 32, batch_size: 4 };
        assert_eq!(
            error.to_string(),
            "the data loader stands at epoch 1 batch 2 of 30 rows in batches of 4, not at step 9 \
             of this run's 32 rows in batches of 4"
        );
        let error =
            ContentError::NonFinite { tensor: "0.weight".into(), index: 3, value: f32::NAN };
        assert_eq!(
            error.to_string(),
            "tensor 0.weight holds NaN at index 3: training never writes a non-finite value"
        );
    }
}
