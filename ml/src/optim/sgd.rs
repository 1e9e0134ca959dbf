//! Stochastic gradient descent with momentum, dampening, Nesterov momentum
//! and L2 weight decay, as `torch.optim.SGD` (formulas in the parent module).

use serde::{Deserialize, Serialize};

use super::{
    OptimError, Optimizer, OptimizerState, ParamView, Slot, bool_scalar, check_params, check_range,
    param_name, read_scalars, scalar_bool,
};

const NAME: &str = "SGD";
const BUFFER: &str = "momentum_buffer";
const SCALARS: [&str; 5] = ["lr", "momentum", "dampening", "weight_decay", "nesterov"];

/// SGD's hyperparameters. The defaults are PyTorch's: `lr` 1e-3, no
/// momentum, no dampening, no weight decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (≥ 0).
    pub lr: f64,
    /// Momentum factor `μ` (≥ 0); 0 turns momentum off and keeps no state.
    pub momentum: f64,
    /// Dampening `τ` of the gradient's share in the momentum buffer (≥ 0).
    pub dampening: f64,
    /// L2 penalty folded into the gradient (≥ 0).
    pub weight_decay: f64,
    /// Nesterov momentum; needs `momentum > 0` and `dampening == 0`.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl SgdConfig {
    fn check(&self) -> Result<(), OptimError> {
        check_range(NAME, "lr", self.lr, 0.0, f64::MAX, "must be finite and ≥ 0")?;
        check_range(NAME, "momentum", self.momentum, 0.0, f64::MAX, "must be finite and ≥ 0")?;
        check_range(NAME, "dampening", self.dampening, 0.0, f64::MAX, "must be finite and ≥ 0")?;
        check_range(NAME, "weight_decay", self.weight_decay, 0.0, f64::MAX, "must be ≥ 0")?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(OptimError::InvalidHyperparameter {
                owner: NAME,
                name: "nesterov",
                value: 1.0,
                reason: "Nesterov momentum needs momentum > 0 and dampening = 0",
            });
        }
        Ok(())
    }
}

/// One parameter's momentum buffer.
#[derive(Debug, Clone)]
struct Buffer {
    name: String,
    values: Vec<f32>,
}

impl Slot for Buffer {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.values.len()
    }
}

/// The step's coefficients, in `f32`.
struct Coefficients {
    weight_decay: f32,
    momentum: f32,
    grad_share: f32,
    neg_lr: f32,
    nesterov: bool,
}

impl Coefficients {
    /// `p ← p − lr·(g + wd·p)`.
    fn plain_update(&self, param: &mut ParamView<'_>) {
        for (p, &grad) in param.value.iter_mut().zip(param.grad) {
            let g = if self.weight_decay != 0.0 { grad + self.weight_decay * *p } else { grad };
            *p += self.neg_lr * g;
        }
    }

    /// The momentum update; on the `first` step the buffer becomes the
    /// (weight-decayed) gradient itself.
    fn momentum_update(&self, param: &mut ParamView<'_>, buffer: &mut [f32], first: bool) {
        debug_assert_eq!(buffer.len(), param.value.len());
        let values = param.value.iter_mut().zip(param.grad);
        for ((p, &grad), b) in values.zip(buffer.iter_mut()) {
            let mut g = if self.weight_decay != 0.0 { grad + self.weight_decay * *p } else { grad };
            *b = if first { g } else { *b * self.momentum + self.grad_share * g };
            g = if self.nesterov { g + self.momentum * *b } else { *b };
            *p += self.neg_lr * g;
        }
    }
}

/// SGD with optional momentum, as `torch.optim.SGD`.
///
/// Without momentum it keeps no per-parameter state, so it has nothing to
/// check later steps' parameter lists against and accepts any list.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    step: u64,
    /// Momentum buffers in parameter order; empty before the first step and
    /// always empty without momentum.
    buffers: Vec<Buffer>,
}

impl Sgd {
    /// SGD with these hyperparameters, checked.
    pub fn new(config: SgdConfig) -> Result<Self, OptimError> {
        config.check()?;
        Ok(Sgd { config, step: 0, buffers: Vec::new() })
    }

    /// The hyperparameters in use.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    fn uses_momentum(&self) -> bool {
        self.config.momentum != 0.0
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [ParamView<'_>]) -> Result<(), OptimError> {
        let first = self.step == 0;
        let known = (self.uses_momentum() && !first).then_some(self.buffers.as_slice());
        check_params(params, first, known)?;
        if self.uses_momentum() && first {
            self.buffers = params
                .iter()
                .map(|p| Buffer { name: p.name.to_owned(), values: vec![0.0; p.value.len()] })
                .collect();
        }
        let c = &self.config;
        // Coefficients rounded to f32 once, as PyTorch passes Python floats.
        let k = Coefficients {
            weight_decay: c.weight_decay as f32,
            momentum: c.momentum as f32,
            grad_share: (1.0 - c.dampening) as f32,
            neg_lr: (-c.lr) as f32,
            nesterov: c.nesterov,
        };
        for (index, param) in params.iter_mut().enumerate() {
            match self.buffers.get_mut(index) {
                Some(buffer) => k.momentum_update(param, &mut buffer.values, first),
                None => k.plain_update(param),
            }
        }
        self.step += 1;
        Ok(())
    }

    fn state_into(&self, state: &mut OptimizerState) {
        let c = &self.config;
        let [lr, momentum, dampening, weight_decay, nesterov] = SCALARS;
        state.refresh(
            self.step,
            self.buffers.iter().map(|b| (b.name.as_str(), BUFFER, b.values.as_slice())),
            &[
                (lr, c.lr),
                (momentum, c.momentum),
                (dampening, c.dampening),
                (weight_decay, c.weight_decay),
                (nesterov, bool_scalar(c.nesterov)),
            ],
        );
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let [lr, momentum, dampening, weight_decay, nesterov] = read_scalars(NAME, state, SCALARS)?;
        let nesterov = scalar_bool(NAME, "nesterov", nesterov)?;
        let config = SgdConfig { lr, momentum, dampening, weight_decay, nesterov };
        config.check()?;
        let has_buffers = momentum != 0.0 && state.step > 0;
        if !has_buffers && !state.arrays.is_empty() {
            return Err(OptimError::IncompatibleState {
                optimizer: NAME,
                problem: format!(
                    "{} arrays at step {} with momentum {momentum}, expected none",
                    state.arrays.len(),
                    state.step
                ),
            });
        }
        let mut buffers = Vec::with_capacity(state.arrays.len());
        for (array_name, values) in &state.arrays {
            let name = param_name(NAME, array_name, BUFFER)?;
            if buffers.iter().any(|b: &Buffer| b.name == name) {
                return Err(OptimError::DuplicateParam { name: name.to_owned() });
            }
            buffers.push(Buffer { name: name.to_owned(), values: values.clone() });
        }
        *self = Sgd { config, step: state.step, buffers };
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        debug_assert!(lr.is_finite() && lr >= 0.0, "SGD: learning rate {lr} is not finite and ≥ 0");
        self.config.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.step
    }
}
