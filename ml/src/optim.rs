//! Optimizers (SGD with momentum, Adam, AdamW), learning-rate schedules and
//! gradient accumulation, over plain `f32` slices so they work with any
//! tensor type and any device that can hand the host a parameter's values
//! and gradient.
//!
//! # Update rules
//!
//! Each optimizer follows PyTorch's single-tensor implementation
//! (`torch/optim/sgd.py`, `adam.py`, `adamw.py`, PyTorch 2.x) formula for
//! formula; `lr`, `wd`, the betas and `eps` are `f64` like Python floats,
//! and every scalar coefficient is computed in `f64` and rounded to `f32`
//! once, as PyTorch does when it passes a Python float to an `f32` kernel.
//! `g` is the gradient, `p` the parameter, `t` the step count (1 on the
//! first step).
//!
//! **SGD** ([`Sgd`]), with momentum `μ`, dampening `τ`:
//!
//! ```text
//! g ← g + wd·p                                   (if wd ≠ 0)
//! b ← g                                          (first step: the buffer is the gradient itself)
//! b ← μ·b + (1 − τ)·g                            (later steps)
//! g ← g + μ·b   if nesterov,   g ← b   otherwise (if μ ≠ 0)
//! p ← p − lr·g
//! ```
//!
//! **Adam** ([`Adam`]), with `β1`, `β2`, `ε`:
//!
//! ```text
//! g ← g + wd·p                                   (if wd ≠ 0: L2 penalty folded into the gradient)
//! m ← lerp(m, g, 1 − β1)                         (= β1·m + (1 − β1)·g)
//! v ← β2·v + (1 − β2)·g·g
//! p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! `ε` is added outside the square root, after `√v` is bias-corrected: the
//! paper's Algorithm 1 (`m̂ / (√v̂ + ε)`), not its "efficient" rewrite
//! `lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)`, whose `ε` is effectively scaled
//! by the bias correction, nor `ε` inside the square root.
//!
//! **AdamW** ([`AdamW`]): decoupled weight decay (Loshchilov and Hutter,
//! 2019): `p ← p·(1 − lr·wd)` first, then the Adam update above without the
//! L2 term.
//!
//! Not implemented: `amsgrad`, `maximize`, `foreach`/`fused` kernels (which
//! give the same values up to rounding). The results agree with PyTorch's to
//! `f32` rounding; bit-for-bit agreement with PyTorch's vectorised kernels is
//! not promised. Bit-for-bit agreement *with ourselves* is: the same inputs
//! and state always give the same bits, which is what checkpoint resume needs.
//!
//! # State
//!
//! An optimizer learns its parameters on its first [`Optimizer::step`]: their
//! names, order and lengths. Its per-parameter buffers are created then and
//! never again, so later steps do not allocate; every later step must pass the
//! same parameters in the same order (checked by name and length, an
//! [`OptimError`] naming the parameter otherwise). [`Optimizer::state`] exports
//! everything a resumed run needs as an [`OptimizerState`] (the step count,
//! the named buffers in parameter order such as `"0.weight.exp_avg"`, and the
//! hyperparameters, `lr` included, as scalars); [`Optimizer::load_state`]
//! restores it bit-exactly, as PyTorch's `load_state_dict` restores both the
//! buffers and the hyperparameters.
//!
//! One step count serves every parameter. PyTorch keeps one per parameter;
//! they are equal here because every step updates every parameter.

mod accum;
mod adam;
mod schedule;
mod sgd;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use accum::GradAccumulator;
pub use adam::{Adam, AdamConfig, AdamW};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

/// One parameter as an optimizer sees it: its name, its values (updated in
/// place) and its gradient.
#[derive(Debug)]
pub struct ParamView<'a> {
    /// The parameter's name, PyTorch style (`"0.weight"`); it keys the
    /// optimizer's state for this parameter.
    pub name: &'a str,
    /// The parameter's values, updated in place by [`Optimizer::step`].
    pub value: &'a mut [f32],
    /// The gradient of the loss with respect to `value`; same length.
    pub grad: &'a [f32],
}

/// An optimizer: updates parameters from their gradients, and saves and
/// restores its state exactly.
pub trait Optimizer {
    /// Applies one update to every parameter.
    ///
    /// The first call fixes the parameter list (names, order, lengths) and
    /// creates the state buffers; later calls must pass the same list and do
    /// not allocate. On error nothing is updated: neither the parameters nor
    /// the state nor the step count.
    fn step(&mut self, params: &mut [ParamView<'_>]) -> Result<(), OptimError>;

    /// Everything a resumed run needs to continue bit-identically.
    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::default();
        self.state_into(&mut state);
        state
    }

    /// [`state`](Self::state), written over `state` and reusing its memory:
    /// refreshing the state of an earlier step of the same optimizer
    /// allocates nothing (what a per-step snapshot wants).
    fn state_into(&self, state: &mut OptimizerState);

    /// Replaces this optimizer's state, hyperparameters included, with a saved
    /// one. The parameter list it names is checked against the next
    /// [`step`](Self::step)'s parameters.
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError>;

    /// The learning rate the next step uses.
    fn lr(&self) -> f64;

    /// Sets the learning rate for the next steps (a schedule calls this before
    /// each step with [`LrSchedule::lr_at`]).
    fn set_lr(&mut self, lr: f64);

    /// How many steps have been applied (0 before the first).
    fn steps(&self) -> u64;
}

/// An optimizer's saved state: the step count, per-parameter buffers named
/// `"<param>.<buffer>"` in parameter order, and scalar hyperparameters.
///
/// It serializes with serde; `f32` and `f64` values survive a round trip
/// through a self-describing format such as JSON bit-exactly (finite values;
/// optimizer state is finite unless training has already diverged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// Steps applied so far.
    pub step: u64,
    /// Per-parameter buffers in parameter order, such as
    /// `("0.weight.exp_avg", [...])`.
    pub arrays: Vec<(String, Vec<f32>)>,
    /// Hyperparameters (`"lr"`, `"momentum"`, `"beta1"`...); booleans are
    /// stored as 0.0 or 1.0.
    pub scalars: BTreeMap<String, f64>,
}

impl OptimizerState {
    /// Makes this state `step`, `arrays` (`(parameter, buffer, values)`,
    /// named `"<parameter>.<buffer>"`) and `scalars`, in place: an array
    /// whose name already stands at its position keeps its allocation, and
    /// so does every scalar key already present.
    pub fn refresh<'a>(
        &mut self,
        step: u64,
        arrays: impl IntoIterator<Item = (&'a str, &'static str, &'a [f32])>,
        scalars: &[(&'static str, f64)],
    ) {
        self.step = step;
        let mut count = 0;
        for (index, (param, buffer, values)) in arrays.into_iter().enumerate() {
            let named = |name: &str| {
                name.len() == param.len() + 1 + buffer.len()
                    && name.starts_with(param)
                    && name[param.len()..].starts_with('.')
                    && name.ends_with(buffer)
            };
            match self.arrays.get_mut(index) {
                Some((name, data)) if named(name) => {
                    data.clear();
                    data.extend_from_slice(values);
                }
                Some(slot) => *slot = (format!("{param}.{buffer}"), values.to_vec()),
                None => self.arrays.push((format!("{param}.{buffer}"), values.to_vec())),
            }
            count = index + 1;
        }
        self.arrays.truncate(count);
        self.scalars.retain(|key, _| scalars.iter().any(|(name, _)| name == key));
        for &(key, value) in scalars {
            match self.scalars.get_mut(key) {
                Some(slot) => *slot = value,
                None => {
                    self.scalars.insert(key.to_owned(), value);
                }
            }
        }
    }
}

/// Which optimizer to build, with its settings: what a training config file
/// or command line names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// [`Sgd`].
    Sgd(SgdConfig),
    /// [`Adam`].
    Adam(AdamConfig),
    /// [`AdamW`].
    AdamW(AdamConfig),
}

impl OptimizerConfig {
    /// Builds the optimizer, checking its hyperparameters.
    pub fn build(&self) -> Result<Box<dyn Optimizer + Send>, OptimError> {
        Ok(match self {
            OptimizerConfig::Sgd(config) => Box::new(Sgd::new(config.clone())?),
            OptimizerConfig::Adam(config) => Box::new(Adam::new(config.clone())?),
            OptimizerConfig::AdamW(config) => Box::new(AdamW::new(config.clone())?),
        })
    }
}

/// What went wrong in an optimizer, a schedule or a gradient accumulator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// A parameter's gradient is not the same length as its values.
    #[error(
        "parameter `{name}`: its gradient has {grad_len} elements but its value has {value_len}; \
         pass the gradient of this very parameter"
    )]
    GradLengthMismatch {
        /// The parameter.
        name: String,
        /// Elements in its value.
        value_len: usize,
        /// Elements in its gradient.
        grad_len: usize,
    },
    /// A step (or a micro-batch) passed a different number of parameters
    /// than the first one did, or than the loaded state holds.
    #[error(
        "expected {expected} parameters, as on the first step (or in the loaded state), but got \
         {found}; pass the same parameters on every step and micro-batch"
    )]
    ParamCountMismatch {
        /// Parameters in the state.
        expected: usize,
        /// Parameters passed.
        found: usize,
    },
    /// The parameter at some position is not the one the state holds there.
    #[error(
        "parameter {index} is `{found}` but the optimizer state holds `{expected}` there; \
         pass the same parameters in the same order on every step"
    )]
    ParamNameMismatch {
        /// Position in the parameter list.
        index: usize,
        /// Name in the state.
        expected: String,
        /// Name passed.
        found: String,
    },
    /// A parameter's length differs from its state buffers' length.
    #[error(
        "parameter `{name}` has {value_len} elements but its optimizer state has {state_len}; \
         the state belongs to a model of another shape"
    )]
    StateLengthMismatch {
        /// The parameter.
        name: String,
        /// Elements in its value.
        value_len: usize,
        /// Elements in its state buffers.
        state_len: usize,
    },
    /// Two parameters passed to the first step share a name.
    #[error("two parameters are named `{name}`; optimizer state is keyed by name")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A saved state does not fit this optimizer (another optimizer's state,
    /// a missing or unknown entry).
    #[error("optimizer state does not fit {optimizer}: {problem}")]
    IncompatibleState {
        /// The optimizer loading it.
        optimizer: &'static str,
        /// What does not fit.
        problem: String,
    },
    /// A hyperparameter is out of its range.
    #[error("{owner}: `{name}` = {value} is invalid: {reason}")]
    InvalidHyperparameter {
        /// The optimizer, schedule or accumulator it configures.
        owner: &'static str,
        /// The hyperparameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        reason: &'static str,
    },
    /// A micro-batch's gradients do not line up with the first micro-batch's.
    #[error(
        "micro-batch gradient {index} is `{found}` with {found_len} elements but the accumulator \
         holds `{expected}` with {expected_len} there; pass every micro-batch's gradients for the \
         same parameters in the same order"
    )]
    AccumulatorMismatch {
        /// Position in the gradient list.
        index: usize,
        /// The parameter the accumulator holds there.
        expected: String,
        /// Its length.
        expected_len: usize,
        /// The parameter passed.
        found: String,
        /// Its length.
        found_len: usize,
    },
    /// A gradient accumulator was given more micro-batches than it was sized
    /// for.
    #[error(
        "gradient accumulator is full: it already holds all {micro_batches} micro-batches of \
         this step; call `average` and `reset` before adding the next step's"
    )]
    AccumulatorFull {
        /// Micro-batches per step.
        micro_batches: u32,
    },
    /// A gradient accumulator was averaged before all its micro-batches came.
    #[error(
        "gradient accumulator holds {added} of {micro_batches} micro-batches; \
         averaging now would change the effective batch"
    )]
    AccumulatorIncomplete {
        /// Micro-batches added so far.
        added: u32,
        /// Micro-batches per step.
        micro_batches: u32,
    },
}

/// The name and length of a parameter an optimizer holds state for.
trait Slot {
    fn name(&self) -> &str;
    fn len(&self) -> usize;
}

/// Checks the parameters of a step before anything is updated: gradient
/// lengths always; unique names on the `first` step; and, when the optimizer
/// already holds state (`slots` is `Some`), that the parameters match it by
/// count, order, name and length.
fn check_params<S: Slot>(
    params: &[ParamView<'_>],
    first: bool,
    slots: Option<&[S]>,
) -> Result<(), OptimError> {
    for param in params.iter() {
        if param.grad.len() != param.value.len() {
            return Err(OptimError::GradLengthMismatch {
                name: param.name.to_owned(),
                value_len: param.value.len(),
                grad_len: param.grad.len(),
            });
        }
    }
    if first {
        // The names become keys, so they must be unique. This allocates, but
        // only on the first step.
        let mut seen = std::collections::BTreeSet::new();
        for param in params.iter() {
            if !seen.insert(param.name) {
                return Err(OptimError::DuplicateParam { name: param.name.to_owned() });
            }
        }
    }
    let Some(slots) = slots else {
        return Ok(());
    };
    if slots.len() != params.len() {
        return Err(OptimError::ParamCountMismatch { expected: slots.len(), found: params.len() });
    }
    for (index, (slot, param)) in slots.iter().zip(params.iter()).enumerate() {
        if slot.name() != param.name {
            return Err(OptimError::ParamNameMismatch {
                index,
                expected: slot.name().to_owned(),
                found: param.name.to_owned(),
            });
        }
        if slot.len() != param.value.len() {
            return Err(OptimError::StateLengthMismatch {
                name: param.name.to_owned(),
                value_len: param.value.len(),
                state_len: slot.len(),
            });
        }
    }
    Ok(())
}

/// Reads the scalars a state must hold, exactly those and no others.
fn read_scalars<const N: usize>(
    optimizer: &'static str,
    state: &OptimizerState,
    names: [&'static str; N],
) -> Result<[f64; N], OptimError> {
    if let Some(unknown) = state.scalars.keys().find(|key| !names.contains(&key.as_str())) {
        return Err(OptimError::IncompatibleState {
            optimizer,
            problem: format!("unknown scalar `{unknown}` (is it another optimizer's state?)"),
        });
    }
    let mut values = [0.0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = *state.scalars.get(name).ok_or_else(|| OptimError::IncompatibleState {
            optimizer,
            problem: format!("scalar `{name}` is missing"),
        })?;
    }
    Ok(values)
}

/// Splits a state array's name `"<param>.<suffix>"` into the parameter's name,
/// checking the suffix.
fn param_name<'s>(
    optimizer: &'static str,
    array_name: &'s str,
    suffix: &str,
) -> Result<&'s str, OptimError> {
    array_name
        .strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|name| !name.is_empty())
        .ok_or_else(|| OptimError::IncompatibleState {
            optimizer,
            problem: format!("array `{array_name}` should be named `<parameter>.{suffix}`"),
        })
}

/// Checks a hyperparameter is finite and within `min..=max`.
fn check_range(
    owner: &'static str,
    name: &'static str,
    value: f64,
    min: f64,
    max: f64,
    reason: &'static str,
) -> Result<(), OptimError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(OptimError::InvalidHyperparameter { owner, name, value, reason })
    }
}

/// A boolean as a state scalar.
fn bool_scalar(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// A state scalar as a boolean: exactly 0.0 or 1.0.
fn scalar_bool(optimizer: &'static str, name: &str, value: f64) -> Result<bool, OptimError> {
    if value == 0.0 {
        Ok(false)
    } else if value == 1.0 {
        Ok(true)
    } else {
        Err(OptimError::IncompatibleState {
            optimizer,
            problem: format!("scalar `{name}` is {value}, should be 0 or 1"),
        })
    }
}
