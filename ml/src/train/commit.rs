//! The commit/restore protocol of a run, in one place: what the driver
//! commits, what an actor restores from, and how a stale actor is caught.
//!
//! 1. **Commit.** A step is done once the optimizer answered its update.
//!    Every `snapshot_every` steps the driver then makes a [`Committed`]
//!    snapshot and keeps it; it is the only copy of the run's state that
//!    outlives a crash (with the driver's loss curve, of which the first
//!    `step` entries are committed). Every `checkpoint_every` steps the
//!    checkpointer writes it to disk.
//! 2. **Restore.** After any crash the driver sends every stateful actor
//!    the snapshot, `Restore { snapshot: Arc<Committed> }` (the metrics
//!    actor the committed curve), and replays the steps since. A fresh
//!    incarnation holds no snapshot until one arrives: it refuses every
//!    step (`Refusal::Unrestored`) and the driver restores it, then asks
//!    again.
//! 3. **Cursor.** Each stateful actor serves only the step after the one
//!    it last served ([`StepCursor`]): an incarnation that a late restart
//!    left behind the driver refuses, and the driver restores the whole
//!    tree once more, rather than repeat a batch or update stale
//!    parameters.
//!
//! Each step is a pure function of the snapshot it starts from, so the
//! replayed steps give the same bits.
//!
//! The in-memory form, [`Committed`], is taken as often as every step, so it
//! copies as little as it can: the parameters are the very `Arc` the
//! optimizer answered with (already immutable, shared, not copied again),
//! the optimizer state is the one copy the snapshot needs, and the loss
//! curve is not copied at all (the driver owns it and never loses it; a
//! snapshot only says how much of it is committed). The named-tensor
//! [`Checkpoint`] is built from it only when one is written to disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, NamedArray, RunIdentity};
use crate::data::LoaderPosition;
use crate::optim::OptimizerState;

/// Parameters by name, in model order.
pub(crate) type Params = Arc<Vec<NamedArray>>;

/// The model's parameters as a checkpoint must hold them: names and shapes,
/// in model order.
pub(crate) type Layout = Vec<(String, Vec<usize>)>;

/// Everything that determines the rest of a run from `step` on, except the
/// loss curve (the driver's, of which the first `step` entries are committed).
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub step: u64,
    pub params: Params,
    pub optimizer: Arc<OptimizerState>,
    pub loader: LoaderPosition,
    /// The dropout RNG's state.
    pub rng_state: u64,
}

impl Committed {
    /// The state a checkpoint holds, and its loss curve, checked against
    /// the model's `layout`: every parameter present with the model's
    /// shape, every optimizer array as long as its parameter.
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        layout: &Layout,
    ) -> Result<(Committed, Vec<f32>), String> {
        let params = layout
            .iter()
            .map(|(name, shape)| {
                let array = checkpoint
                    .tensor(&format!("param.{name}"))
                    .ok_or_else(|| format!("the checkpoint holds no parameter {name:?}"))?;
                if array.shape != *shape {
                    return Err(format!(
                        "parameter {name} has shape {:?} in the checkpoint, {shape:?} in the model",
                        array.shape
                    ));
                }
                Ok(NamedArray::new(name.clone(), array.shape.clone(), array.data.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let losses = checkpoint
            .tensor("metrics.losses")
            .map(|losses| losses.data.clone())
            .unwrap_or_default();
        if losses.len() as u64 != checkpoint.step {
            return Err(format!(
                "the checkpoint of step {} holds {} losses",
                checkpoint.step,
                losses.len()
            ));
        }
        let optimizer = optimizer_state_of(checkpoint)?;
        for (name, values) in &optimizer.arrays {
            let param = params.iter().find(|param| {
                name.strip_prefix(param.name.as_str()).is_some_and(|rest| rest.starts_with('.'))
            });
            match param {
                Some(param) if param.data.len() == values.len() => {}
                Some(param) => {
                    return Err(format!(
                        "optimizer array {name} holds {} values, parameter {} {}",
                        values.len(),
                        param.name,
                        param.data.len()
                    ));
                }
                None => return Err(format!("optimizer array {name} belongs to no parameter")),
            }
        }
        let committed = Committed {
            step: checkpoint.step,
            params: Arc::new(params),
            optimizer: Arc::new(optimizer),
            loader: checkpoint.loader,
            rng_state: checkpoint.rng_state,
        };
        Ok((committed, losses))
    }

    /// The checkpoint to write to disk: parameters as `param.<name>`, the
    /// optimizer's arrays as `optim.<name>` (its step and scalars in `extra`),
    /// and the loss curve (with each loss's epoch) as `metrics.*`.
    pub fn to_checkpoint(
        &self,
        losses: &[f32],
        batches_per_epoch: u64,
        model: &str,
        run: Option<&RunIdentity>,
    ) -> Result<Checkpoint, String> {
        let losses = &losses[..self.step as usize];
        let mut tensors: Vec<NamedArray> = self
            .params
            .iter()
            .map(|array| {
                NamedArray::new(
                    format!("param.{}", array.name),
                    array.shape.clone(),
                    array.data.clone(),
                )
            })
            .collect();
        tensors.extend(self.optimizer.arrays.iter().map(|(name, data)| {
            NamedArray::new(format!("optim.{name}"), vec![data.len()], data.clone())
        }));
        let epochs: Vec<f32> =
            (0..losses.len() as u64).map(|i| (i / batches_per_epoch) as f32).collect();
        tensors.push(NamedArray::new("metrics.losses", vec![losses.len()], losses.to_vec()));
        tensors.push(NamedArray::new("metrics.epochs", vec![epochs.len()], epochs));
        let mut extra = BTreeMap::new();
        extra.insert("optim.step".to_owned(), self.optimizer.step.to_string());
        extra.insert(
            "optim.scalars".to_owned(),
            serde_json::to_string(&self.optimizer.scalars)
                .map_err(|error| format!("optimizer scalars: {error}"))?,
        );
        extra.insert("model".to_owned(), model.to_owned());
        if let Some(run) = run {
            run.stamp(&mut extra);
        }
        let mut metrics = BTreeMap::new();
        metrics.insert("loss".to_owned(), f64::from(*losses.last().unwrap_or(&f32::NAN)));
        Ok(Checkpoint {
            step: self.step,
            tensors,
            loader: self.loader,
            rng_state: self.rng_state,
            metrics,
            extra,
        })
    }
}

/// The optimizer state kept in a checkpoint: arrays as `optim.<name>`
/// tensors, step and scalars in `extra`.
fn optimizer_state_of(checkpoint: &Checkpoint) -> Result<OptimizerState, String> {
    let step = checkpoint
        .extra
        .get("optim.step")
        .map_or(Ok(0), |text| text.parse::<u64>())
        .map_err(|error| format!("optimizer step: {error}"))?;
    let scalars = match checkpoint.extra.get("optim.scalars") {
        Some(text) => {
            serde_json::from_str(text).map_err(|error| format!("optimizer scalars: {error}"))?
        }
        None => Default::default(),
    };
    let arrays = checkpoint
        .tensors
        .iter()
        .filter_map(|array| {
            array.name.strip_prefix("optim.").map(|name| (name.to_owned(), array.data.clone()))
        })
        .collect();
    Ok(OptimizerState { step, arrays, scalars })
}

/// Where a stateful actor (optimizer, loader) stands in the run, so that it
/// serves only the step after the one it last served.
///
/// After a crash the driver restores every actor from the snapshot, but the
/// supervisor restarts a `rest_for_one` tree's later children on its own
/// time: an incarnation the driver already restored (and that served a step
/// since) can be replaced afterwards by a fresh one, restored from the
/// snapshot again and so a step or more behind the driver. Served, it would
/// repeat a batch or apply gradients to the wrong parameters, silently. It
/// refuses instead, and the driver restores the whole tree once more.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepCursor {
    at: u64,
}

impl StepCursor {
    /// How a refusal ends: the driver tells a refusal (a late restart's
    /// echo of a failure already recovered) from a failure of its own.
    pub const RESTARTED_LATE: &'static str = "it was restarted after the driver restored it";

    /// At the snapshot of step `step`.
    pub fn restored(step: u64) -> StepCursor {
        StepCursor { at: step }
    }

    /// Moves to `step` if it is the next one; otherwise says why not.
    pub fn advance(&mut self, actor: &str, step: u64) -> Result<(), String> {
        if step != self.at + 1 {
            return Err(format!(
                "the {actor} actor was asked for step {step} but stands at step {}: {}",
                self.at,
                Self::RESTARTED_LATE
            ));
        }
        self.at = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stateful_actor_serves_only_the_step_after_its_last() {
        let mut at = StepCursor::restored(4);
        assert!(at.advance("loader", 5).is_ok());
        // A fresh incarnation, restored from the same snapshot again, is a
        // step behind the driver: it refuses step 6 rather than serving 5.
        let mut fresh = StepCursor::restored(4);
        let error = fresh.advance("loader", 6).unwrap_err();
        assert!(error.contains("asked for step 6 but stands at step 4"), "{error}");
        assert!(at.advance("loader", 6).is_ok());
        assert!(at.advance("loader", 6).is_err(), "nor twice the same step");
        assert!(fresh.advance("loader", 5).is_ok(), "a refusal moves nothing");
    }

    fn committed() -> (Committed, Vec<f32>) {
        let params = vec![
            NamedArray::new("0.weight", vec![2, 3], vec![1.0, -2.0, 3.5, f32::MIN, 0.0, -0.0]),
            NamedArray::new("0.bias", vec![2], vec![0.25, 7.0]),
        ];
        let mut scalars = BTreeMap::new();
        scalars.insert("lr".to_owned(), 0.1);
        let optimizer = OptimizerState {
            step: 3,
            arrays: vec![("0.weight.momentum".to_owned(), vec![0.5; 6])],
            scalars,
        };
        let committed = Committed {
            step: 3,
            params: Arc::new(params),
            optimizer: Arc::new(optimizer),
            loader: LoaderPosition::default(),
            rng_state: 99,
        };
        (committed, vec![2.0, 1.5, 1.25, 9.0])
    }

    fn layout() -> Layout {
        vec![("0.weight".to_owned(), vec![2, 3]), ("0.bias".to_owned(), vec![2])]
    }

    #[test]
    fn a_checkpoint_round_trips_the_committed_state_and_its_losses() {
        let (committed, losses) = committed();
        let checkpoint = committed.to_checkpoint(&losses, 2, "[3, 2]", None).unwrap();
        // Only the committed losses travel: the fourth is past the step.
        assert_eq!(checkpoint.tensor("metrics.losses").unwrap().data, vec![2.0, 1.5, 1.25]);
        assert_eq!(checkpoint.tensor("metrics.epochs").unwrap().data, vec![0.0, 0.0, 1.0]);
        let (back, back_losses) = Committed::from_checkpoint(&checkpoint, &layout()).unwrap();
        assert_eq!(back_losses, vec![2.0, 1.5, 1.25]);
        assert_eq!(back.step, 3);
        assert_eq!(back.rng_state, 99);
        assert_eq!(back.params, committed.params);
        assert_eq!(*back.optimizer, *committed.optimizer);
    }

    #[test]
    fn a_checkpoint_missing_a_parameter_or_losses_is_refused() {
        let (committed, losses) = committed();
        let checkpoint = committed.to_checkpoint(&losses, 2, "[3, 2]", None).unwrap();
        let mut other = layout();
        other[1] = ("1.weight".to_owned(), vec![2]);
        let error = Committed::from_checkpoint(&checkpoint, &other).unwrap_err();
        assert!(error.contains("1.weight"), "{error}");

        let mut short = checkpoint.clone();
        short.tensors.retain(|array| array.name != "metrics.losses");
        let error = Committed::from_checkpoint(&short, &layout()).unwrap_err();
        assert!(error.contains("0 losses"), "{error}");
    }

    #[test]
    fn a_checkpoint_of_another_shape_names_both_shapes() {
        let (committed, losses) = committed();
        let checkpoint = committed.to_checkpoint(&losses, 2, "[3, 2]", None).unwrap();
        let mut wider = layout();
        wider[0].1 = vec![4, 3];
        let error = Committed::from_checkpoint(&checkpoint, &wider).unwrap_err();
        assert_eq!(
            error,
            "parameter 0.weight has shape [2, 3] in the checkpoint, [4, 3] in the model"
        );
    }

    #[test]
    fn an_optimizer_array_that_does_not_fit_its_parameter_is_refused() {
        let (mut committed, losses) = committed();
        Arc::make_mut(&mut committed.optimizer).arrays[0].1.push(1.0);
        let checkpoint = committed.to_checkpoint(&losses, 2, "[3, 2]", None).unwrap();
        let error = Committed::from_checkpoint(&checkpoint, &layout()).unwrap_err();
        assert!(
            error.contains("0.weight.momentum holds 7 values, parameter 0.weight 6"),
            "{error}"
        );
        Arc::make_mut(&mut committed.optimizer).arrays[0].0 = "9.weight.momentum".into();
        let checkpoint = committed.to_checkpoint(&losses, 2, "[3, 2]", None).unwrap();
        let error = Committed::from_checkpoint(&checkpoint, &layout()).unwrap_err();
        assert!(error.contains("belongs to no parameter"), "{error}");
    }
}
