//! Model descriptions: the `[64, 128, 10]` size list and the TOML layer list,
//! and the width check every [`Sequential`](super::Sequential) passes.

use serde::Deserialize;

use super::{Embedding, Layer, LayerNorm, Linear, ModelError};
use crate::rng::Rng;

/// The most layers a model description may hold. Far above any model this
/// crate trains; it stops a malformed or hostile description from asking for
/// unbounded allocation.
pub const LAYERS_MAX: usize = 1024;

/// Parses `[n0, n1, ..., nk]` into Linear(n0, n1), ReLU, ..., Linear(nk-1, nk).
pub(super) fn parse_sizes(text: &str, rng: &mut Rng) -> Result<Vec<Layer>, ModelError> {
    let problem = |problem: String| ModelError::Spec { spec: text.to_owned(), problem };
    let inner =
        text.trim().strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).ok_or_else(|| {
            problem("expected a bracketed list of layer sizes such as [784, 128, 10]".into())
        })?;
    let mut sizes = Vec::new();
    for (position, entry) in inner.split(',').enumerate() {
        let entry = entry.trim();
        match entry.parse::<usize>() {
            Ok(0) => {
                return Err(problem(format!(
                    "size {position} is 0; every layer needs at least one unit"
                )));
            }
            Ok(size) => sizes.push(size),
            Err(_) => {
                return Err(problem(format!(
                    "size {position} ({entry:?}) is not a positive whole number"
                )));
            }
        }
    }
    if sizes.len() < 2 {
        return Err(problem(format!(
            "needs at least an input and an output size, got {}",
            sizes.len()
        )));
    }
    if 2 * sizes.len() - 3 > LAYERS_MAX {
        return Err(problem(format!(
            "{} sizes make more than LAYERS_MAX = {LAYERS_MAX} layers",
            sizes.len()
        )));
    }
    let mut layers = Vec::with_capacity(2 * sizes.len());
    for (i, pair) in sizes.windows(2).enumerate() {
        if i > 0 {
            layers.push(Layer::Relu);
        }
        layers.push(Layer::Linear(Linear::new(pair[0], pair[1], true, rng)));
    }
    Ok(layers)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelToml {
    layers: Vec<LayerToml>,
}

fn yes() -> bool {
    true
}

fn default_eps() -> f32 {
    1e-5
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LayerToml {
    Linear {
        #[serde(rename = "in")]
        inputs: usize,
        #[serde(rename = "out")]
        outputs: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Relu,
    Gelu,
    Tanh,
    LayerNorm {
        size: usize,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    Embedding {
        count: usize,
        dim: usize,
    },
    Dropout {
        p: f32,
    },
}

/// Parses a TOML layer list (format in [`super::Sequential::from_toml`]).
pub(super) fn parse_toml(text: &str, rng: &mut Rng) -> Result<Vec<Layer>, ModelError> {
    let model: ModelToml = toml::from_str(text).map_err(|e| ModelError::Toml(e.to_string()))?;
    if model.layers.is_empty() || model.layers.len() > LAYERS_MAX {
        return Err(ModelError::Toml(format!(
            "needs between 1 and LAYERS_MAX = {LAYERS_MAX} layers, got {}",
            model.layers.len()
        )));
    }
    let layers = model
        .layers
        .into_iter()
        .map(|layer| match layer {
            LayerToml::Linear { inputs, outputs, bias } => {
                Layer::Linear(Linear::new(inputs, outputs, bias, rng))
            }
            LayerToml::Relu => Layer::Relu,
            LayerToml::Gelu => Layer::Gelu,
            LayerToml::Tanh => Layer::Tanh,
            LayerToml::LayerNorm { size, eps } => Layer::LayerNorm(LayerNorm::new(size, eps)),
            LayerToml::Embedding { count, dim } => {
                Layer::Embedding(Embedding::new(count, dim, rng))
            }
            LayerToml::Dropout { p } => Layer::Dropout { p },
        })
        .collect();
    Ok(layers)
}

/// Checks that each layer accepts what the one before produces, that sizes
/// are positive and that hyperparameters are in range.
pub(super) fn check_widths(layers: &[Layer]) -> Result<(), ModelError> {
    let mut width: Option<usize> = None;
    for (index, layer) in layers.iter().enumerate() {
        let fail = |problem: String| ModelError::Layer { index, kind: layer.kind(), problem };
        let (takes, gives) = match layer {
            Layer::Linear(l) => {
                if l.weight.rank() != 2
                    || l.bias.as_ref().is_some_and(|b| b.shape() != [l.out_features()])
                {
                    return Err(fail(format!(
                        "weight {:?} and bias {:?} do not form a layer",
                        l.weight.shape(),
                        l.bias.as_ref().map(|b| b.shape().to_vec())
                    )));
                }
                (Some(l.in_features()), Some(l.out_features()))
            }
            Layer::LayerNorm(l) => {
                if l.eps.is_nan()
                    || l.eps <= 0.0
                    || l.weight.shape() != l.bias.shape()
                    || l.weight.rank() != 1
                {
                    return Err(fail(format!(
                        "needs eps > 0 (got {}) and weight and bias of one shape [size]",
                        l.eps
                    )));
                }
                (Some(l.weight.shape()[0]), Some(l.weight.shape()[0]))
            }
            Layer::Embedding(e) => {
                if index != 0 || e.weight.rank() != 2 {
                    return Err(fail("an embedding must be the first layer (its input holds ids), with a [count, dim] table".into()));
                }
                (None, Some(e.weight.shape()[1]))
            }
            Layer::Dropout { p } if !(0.0..=1.0).contains(p) => {
                return Err(fail(format!("probability {p} is outside [0, 1]")));
            }
            Layer::Relu | Layer::Gelu | Layer::Tanh | Layer::Dropout { .. } => (None, width),
        };
        if let (Some(have), Some(want)) = (width, takes) {
            if have != want {
                return Err(fail(format!(
                    "takes {want} features but the layer before produces {have}"
                )));
            }
        }
        if takes.is_some_and(|n| n == 0) || gives.is_some_and(|n| n == 0) {
            return Err(fail("sizes must be positive".into()));
        }
        width = gives;
    }
    Ok(())
}
