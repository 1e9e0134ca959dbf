//! Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019), as
//! `torch.optim.Adam` and `torch.optim.AdamW` (formulas in the parent module).
//! Both share one implementation; they differ only in how weight decay
//! enters.

use serde::{Deserialize, Serialize};

use super::{
    OptimError, Optimizer, OptimizerState, ParamView, Slot, bool_scalar, check_params, check_range,
    param_name, read_scalars, scalar_bool,
};

const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const SCALARS: [&str; 6] =
    ["lr", "beta1", "beta2", "eps", "weight_decay", "decoupled_weight_decay"];

/// Adam's and AdamW's hyperparameters. The defaults are PyTorch's for Adam
/// (`weight_decay` 0); PyTorch's AdamW defaults to `weight_decay` 0.01, which
/// [`AdamConfig::adamw`] gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (≥ 0).
    pub lr: f64,
    /// Decay of the first-moment average, in `[0, 1)`.
    pub beta1: f64,
    /// Decay of the second-moment average, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the denominator for numerical stability (> 0).
    pub eps: f64,
    /// Weight decay (≥ 0): an L2 penalty in the gradient for Adam, decoupled
    /// (`p ← p·(1 − lr·wd)`) for AdamW.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// PyTorch's AdamW defaults: Adam's with `weight_decay` 0.01.
    pub fn adamw() -> Self {
        AdamConfig { weight_decay: 1e-2, ..AdamConfig::default() }
    }

    fn check(&self, owner: &'static str) -> Result<(), OptimError> {
        check_range(owner, "lr", self.lr, 0.0, f64::MAX, "must be finite and ≥ 0")?;
        let below_one = 1.0 - f64::EPSILON;
        check_range(owner, "beta1", self.beta1, 0.0, below_one, "must be in [0, 1)")?;
        check_range(owner, "beta2", self.beta2, 0.0, below_one, "must be in [0, 1)")?;
        check_range(owner, "eps", self.eps, f64::MIN_POSITIVE, f64::MAX, "must be > 0")?;
        check_range(owner, "weight_decay", self.weight_decay, 0.0, f64::MAX, "must be ≥ 0")
    }
}

/// One parameter's moment estimates.
#[derive(Debug, Clone)]
struct Moments {
    name: String,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl Slot for Moments {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.exp_avg.len()
    }
}

/// The shared implementation of Adam and AdamW.
#[derive(Debug, Clone)]
struct AdamCore {
    config: AdamConfig,
    /// AdamW's decoupled weight decay instead of Adam's L2 penalty.
    decoupled: bool,
    step: u64,
    /// Moments in parameter order; empty before the first step.
    moments: Vec<Moments>,
}

/// The step's coefficients: computed in `f64` (as PyTorch computes them in
/// Python floats) and rounded to `f32` once.
struct Coefficients {
    l2: f32,
    decay_factor: f32,
    avg_weight: f32,
    beta2: f32,
    sq_weight: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

impl AdamCore {
    fn owner(&self) -> &'static str {
        if self.decoupled { "AdamW" } else { "Adam" }
    }

    fn coefficients(&self, t: u64) -> Coefficients {
        let c = &self.config;
        // PyTorch raises the betas to the step count as a float.
        let t = t as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        Coefficients {
            l2: if self.decoupled { 0.0 } else { c.weight_decay as f32 },
            decay_factor: if self.decoupled { (1.0 - c.lr * c.weight_decay) as f32 } else { 1.0 },
            avg_weight: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            sq_weight: (1.0 - c.beta2) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: c.eps as f32,
            neg_step_size: (-(c.lr / bias_correction1)) as f32,
        }
    }

    fn step(&mut self, params: &mut [ParamView<'_>]) -> Result<(), OptimError> {
        let first = self.step == 0;
        check_params(params, first, (!first).then_some(self.moments.as_slice()))?;
        if first {
            self.moments = params
                .iter()
                .map(|p| Moments {
                    name: p.name.to_owned(),
                    exp_avg: vec![0.0; p.value.len()],
                    exp_avg_sq: vec![0.0; p.value.len()],
                })
                .collect();
        }
        let k = self.coefficients(self.step + 1);
        for (param, moments) in params.iter_mut().zip(self.moments.iter_mut()) {
            k.update(param, moments);
        }
        self.step += 1;
        Ok(())
    }

    fn state_into(&self, state: &mut OptimizerState) {
        let c = &self.config;
        let values = [c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, bool_scalar(self.decoupled)];
        let mut scalars = [("", 0.0); SCALARS.len()];
        for (slot, pair) in scalars.iter_mut().zip(SCALARS.into_iter().zip(values)) {
            *slot = pair;
        }
        let arrays = self.moments.iter().flat_map(|m| {
            [
                (m.name.as_str(), EXP_AVG, m.exp_avg.as_slice()),
                (m.name.as_str(), EXP_AVG_SQ, m.exp_avg_sq.as_slice()),
            ]
        });
        state.refresh(self.step, arrays, &scalars);
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        let owner = self.owner();
        let [lr, beta1, beta2, eps, weight_decay, decoupled] = read_scalars(owner, state, SCALARS)?;
        if scalar_bool(owner, "decoupled_weight_decay", decoupled)? != self.decoupled {
            let other = if self.decoupled { "Adam" } else { "AdamW" };
            let problem = format!("it is {other}'s state");
            return Err(OptimError::IncompatibleState { optimizer: owner, problem });
        }
        let config = AdamConfig { lr, beta1, beta2, eps, weight_decay };
        config.check(owner)?;
        if state.step == 0 && !state.arrays.is_empty() {
            let problem = format!("{} arrays before the first step", state.arrays.len());
            return Err(OptimError::IncompatibleState { optimizer: owner, problem });
        }
        let mut moments = Vec::with_capacity(state.arrays.len() / 2);
        for pair in state.arrays.chunks(2) {
            let [(avg_name, exp_avg), (sq_name, exp_avg_sq)] = pair else {
                let problem = format!("array `{}` has no `{EXP_AVG_SQ}` after it", pair[0].0);
                return Err(OptimError::IncompatibleState { optimizer: owner, problem });
            };
            let name = param_name(owner, avg_name, EXP_AVG)?;
            if param_name(owner, sq_name, EXP_AVG_SQ)? != name || exp_avg.len() != exp_avg_sq.len()
            {
                let problem = format!("`{avg_name}` and `{sq_name}` do not form a pair");
                return Err(OptimError::IncompatibleState { optimizer: owner, problem });
            }
            if moments.iter().any(|m: &Moments| m.name == name) {
                return Err(OptimError::DuplicateParam { name: name.to_owned() });
            }
            let (exp_avg, exp_avg_sq) = (exp_avg.clone(), exp_avg_sq.clone());
            moments.push(Moments { name: name.to_owned(), exp_avg, exp_avg_sq });
        }
        *self = AdamCore { config, decoupled: self.decoupled, step: state.step, moments };
        Ok(())
    }
}

impl Coefficients {
    /// One parameter's update, element by element in PyTorch's operation
    /// order (`lerp_`, `mul_`/`addcmul_`, `sqrt`/`div`/`add_`, `addcdiv_`).
    fn update(&self, param: &mut ParamView<'_>, moments: &mut Moments) {
        debug_assert_eq!(moments.exp_avg.len(), param.value.len());
        let values = param.value.iter_mut().zip(param.grad);
        let avgs = moments.exp_avg.iter_mut().zip(moments.exp_avg_sq.iter_mut());
        for ((p, &grad), (m, v)) in values.zip(avgs) {
            if self.decay_factor != 1.0 {
                *p *= self.decay_factor;
            }
            let g = if self.l2 != 0.0 { grad + self.l2 * *p } else { grad };
            *m = lerp(*m, g, self.avg_weight);
            *v = *v * self.beta2 + self.sq_weight * g * g;
            let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
            *p += self.neg_step_size * *m / denom;
        }
    }
}

/// `start + weight·(end − start)`, computed as ATen's CPU `lerp` does: from
/// the nearer end, so the result is exact at `weight` 0 and 1.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// Adam, as `torch.optim.Adam` (without `amsgrad`): weight decay is an L2
/// penalty added to the gradient.
#[derive(Debug, Clone)]
pub struct Adam(AdamCore);

/// AdamW, as `torch.optim.AdamW` (without `amsgrad`): weight decay shrinks
/// the parameters directly, before and apart from the Adam update.
#[derive(Debug, Clone)]
pub struct AdamW(AdamCore);

impl Adam {
    /// Adam with these hyperparameters, checked.
    pub fn new(config: AdamConfig) -> Result<Self, OptimError> {
        config.check("Adam")?;
        Ok(Adam(AdamCore { config, decoupled: false, step: 0, moments: Vec::new() }))
    }

    /// The hyperparameters in use.
    pub fn config(&self) -> &AdamConfig {
        &self.0.config
    }
}

impl AdamW {
    /// AdamW with these hyperparameters, checked.
    pub fn new(config: AdamConfig) -> Result<Self, OptimError> {
        config.check("AdamW")?;
        Ok(AdamW(AdamCore { config, decoupled: true, step: 0, moments: Vec::new() }))
    }

    /// The hyperparameters in use.
    pub fn config(&self) -> &AdamConfig {
        &self.0.config
    }
}

macro_rules! delegate_optimizer {
    ($ty:ty) => {
        impl Optimizer for $ty {
            fn step(&mut self, params: &mut [ParamView<'_>]) -> Result<(), OptimError> {
                self.0.step(params)
            }
            fn state_into(&self, state: &mut OptimizerState) {
                self.0.state_into(state)
            }
            fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
                self.0.load_state(state)
            }
            fn lr(&self) -> f64 {
                self.0.config.lr
            }
            fn set_lr(&mut self, lr: f64) {
                debug_assert!(lr.is_finite() && lr >= 0.0, "learning rate {lr} is not ≥ 0");
                self.0.config.lr = lr;
            }
            fn steps(&self) -> u64 {
                self.0.step
            }
        }
    };
}

delegate_optimizer!(Adam);
delegate_optimizer!(AdamW);
