//! Model descriptions: the `[64, 128, 10]` size list and the TOML layer list,
//! the size limits every description passes before a byte is allocated, and
//! the width check every [`Sequential`](super::Sequential) passes.
//!
//! A description is read in two steps: parsing gives a plan (layer kinds and
//! sizes, no parameters), which [`check_plan`] measures against
//! [`ModelLimits`]; only a plan within them is built. A description that
//! asks for a billion-unit layer is therefore an error that says how much
//! memory it would need, never an aborted allocation.

use serde::Deserialize;

use super::{Embedding, Layer, LayerNorm, Linear, ModelError};
use crate::rng::Rng;

/// The most layers a model description may hold. Far above any model this
/// crate trains; it stops a malformed or hostile description from asking for
/// unbounded allocation.
pub const LAYERS_MAX: usize = 1024;

/// The widest a layer may be (a linear layer's inputs or outputs, a layer
/// norm's size, an embedding's row count or width): 2^24 = 16,777,216.
/// Embedding ids travel as `f32`, which holds whole numbers exactly only up
/// to 2^24, so no wider table could be indexed; and no layer of a real model
/// comes near it (language-model vocabularies are about 2^18 rows, hidden
/// sizes about 2^14).
pub const WIDTH_MAX: usize = 1 << 24;

/// The most bytes a model's parameters may take, as `f32`: 8 GiB (about 2.1
/// billion parameters). Training holds a gradient and, under Adam, two
/// state tensors beside every parameter, all on the host, so this is a run
/// of about 32 GiB: the memory of a large workstation, and room for GPT-2 XL
/// (1.5 billion parameters). Lower it with [`ModelLimits`] on smaller
/// machines.
pub const PARAMETER_BYTES_MAX: u64 = 8 << 30;

/// The longest model description, in bytes: 1 MiB. A size list of
/// [`LAYERS_MAX`] layers takes about 10 KiB and a TOML list about 50 KiB, so
/// a longer text is not a model description.
pub const MODEL_TEXT_BYTES_MAX: usize = 1 << 20;

/// The sizes a model description may ask for; [`Default`] gives
/// [`WIDTH_MAX`] and [`PARAMETER_BYTES_MAX`]. Checked before any parameter
/// is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// The widest a layer may be (see [`WIDTH_MAX`]).
    pub width_max: usize,
    /// The most bytes all parameters together may take as `f32`.
    pub parameter_bytes_max: u64,
}

impl Default for ModelLimits {
    fn default() -> Self {
        ModelLimits { width_max: WIDTH_MAX, parameter_bytes_max: PARAMETER_BYTES_MAX }
    }
}

/// Bytes of an `f32` parameter.
const PARAMETER_SIZE_BYTES: u128 = 4;

/// `bytes` for a person: one decimal place and a decimal unit (`300.0 GB`).
pub(super) fn bytes_text(bytes: &u128) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = *bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The first 80 characters of a description, for error messages (the whole
/// text may be up to [`MODEL_TEXT_BYTES_MAX`]).
fn shown(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    match text.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses `[n0, n1, ..., nk]` into the plan of Linear(n0, n1), ReLU, ...,
/// Linear(nk-1, nk).
fn parse_sizes(text: &str) -> Result<Vec<LayerToml>, ModelError> {
    let problem = |problem: String| ModelError::Spec { spec: shown(text), problem };
    if text.len() > MODEL_TEXT_BYTES_MAX {
        return Err(problem(format!(
            "is {} bytes long, above the limit of MODEL_TEXT_BYTES_MAX = {MODEL_TEXT_BYTES_MAX}",
            text.len()
        )));
    }
    let inner =
        text.trim().strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).ok_or_else(|| {
            problem("expected a bracketed list of layer sizes such as [784, 128, 10]".into())
        })?;
    // Sizes n make 2n - 3 layers (n - 1 linear, n - 2 ReLU).
    let sizes_max = (LAYERS_MAX + 3) / 2;
    let mut sizes = Vec::new();
    for (position, entry) in inner.split(',').enumerate() {
        if position == sizes_max {
            return Err(problem(format!(
                "more than {sizes_max} sizes make more than LAYERS_MAX = {LAYERS_MAX} layers"
            )));
        }
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
                    "size {position} ({:?}) is not a positive whole number",
                    shown(entry)
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
    let mut plan = Vec::with_capacity(2 * sizes.len());
    for (i, pair) in sizes.windows(2).enumerate() {
        if i > 0 {
            plan.push(LayerToml::Relu);
        }
        plan.push(LayerToml::Linear { inputs: pair[0], outputs: pair[1], bias: true });
    }
    Ok(plan)
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

/// One layer of a plan: its kind and sizes, no parameters yet.
#[derive(Debug, Deserialize)]
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

impl LayerToml {
    /// The kind as written in TOML descriptions (as [`Layer::kind`]).
    fn kind(&self) -> &'static str {
        match self {
            LayerToml::Linear { .. } => "linear",
            LayerToml::Relu => "relu",
            LayerToml::Gelu => "gelu",
            LayerToml::Tanh => "tanh",
            LayerToml::LayerNorm { .. } => "layer_norm",
            LayerToml::Embedding { .. } => "embedding",
            LayerToml::Dropout { .. } => "dropout",
        }
    }

    /// The sizes the layer is built from.
    fn widths(&self) -> Vec<usize> {
        match *self {
            LayerToml::Linear { inputs, outputs, .. } => vec![inputs, outputs],
            LayerToml::LayerNorm { size, .. } => vec![size],
            LayerToml::Embedding { count, dim } => vec![count, dim],
            LayerToml::Relu | LayerToml::Gelu | LayerToml::Tanh | LayerToml::Dropout { .. } => {
                vec![]
            }
        }
    }

    /// How many `f32` parameters the layer holds (saturating: a count that
    /// does not fit in `u128` is refused all the same).
    fn parameters(&self) -> u128 {
        let wide = |n: usize| n as u128;
        match *self {
            LayerToml::Linear { inputs, outputs, bias } => wide(inputs)
                .saturating_mul(wide(outputs))
                .saturating_add(wide(outputs) * bias as u128),
            LayerToml::LayerNorm { size, .. } => wide(size).saturating_mul(2),
            LayerToml::Embedding { count, dim } => wide(count).saturating_mul(wide(dim)),
            LayerToml::Relu | LayerToml::Gelu | LayerToml::Tanh | LayerToml::Dropout { .. } => 0,
        }
    }

    /// The layer with its parameters drawn from `rng`, or
    /// [`ModelError::Tensor`] when memory for them cannot be had.
    fn build(self, rng: &mut Rng) -> Result<Layer, ModelError> {
        Ok(match self {
            LayerToml::Linear { inputs, outputs, bias } => {
                Layer::Linear(Linear::try_new(inputs, outputs, bias, rng)?)
            }
            LayerToml::Relu => Layer::Relu,
            LayerToml::Gelu => Layer::Gelu,
            LayerToml::Tanh => Layer::Tanh,
            LayerToml::LayerNorm { size, eps } => Layer::LayerNorm(LayerNorm::try_new(size, eps)?),
            LayerToml::Embedding { count, dim } => {
                Layer::Embedding(Embedding::try_new(count, dim, rng)?)
            }
            LayerToml::Dropout { p } => Layer::Dropout { p },
        })
    }
}

/// Parses a TOML layer list (format in [`super::Sequential::from_toml`]) into
/// a plan.
fn parse_toml(text: &str) -> Result<Vec<LayerToml>, ModelError> {
    if text.len() > MODEL_TEXT_BYTES_MAX {
        return Err(ModelError::Toml(format!(
            "the description is {} bytes long, above the limit of MODEL_TEXT_BYTES_MAX = {MODEL_TEXT_BYTES_MAX}",
            text.len()
        )));
    }
    let model: ModelToml = toml::from_str(text).map_err(|e| ModelError::Toml(e.to_string()))?;
    if model.layers.is_empty() || model.layers.len() > LAYERS_MAX {
        return Err(ModelError::Toml(format!(
            "needs between 1 and LAYERS_MAX = {LAYERS_MAX} layers, got {}",
            model.layers.len()
        )));
    }
    Ok(model.layers)
}

/// Checks every width against `limits.width_max` and the parameters'
/// bytes against `limits.parameter_bytes_max`; the errors say how much
/// memory the model would need.
fn check_plan(plan: &[LayerToml], limits: &ModelLimits) -> Result<(), ModelError> {
    let parameters =
        plan.iter().fold(0u128, |total, layer| total.saturating_add(layer.parameters()));
    let parameter_bytes = parameters.saturating_mul(PARAMETER_SIZE_BYTES);
    for (index, layer) in plan.iter().enumerate() {
        if let Some(&width) = layer.widths().iter().find(|&&width| width > limits.width_max) {
            return Err(ModelError::TooWide {
                index,
                kind: layer.kind(),
                width,
                width_max: limits.width_max,
                parameter_bytes,
            });
        }
    }
    if parameter_bytes > u128::from(limits.parameter_bytes_max) {
        return Err(ModelError::TooLarge {
            parameters,
            parameter_bytes,
            limit_bytes: limits.parameter_bytes_max,
        });
    }
    Ok(())
}

/// Builds a checked plan's layers in order, each drawing its parameters
/// from `rng`.
fn build(plan: Vec<LayerToml>, rng: &mut Rng) -> Result<Vec<Layer>, ModelError> {
    plan.into_iter().map(|layer| layer.build(rng)).collect()
}

/// The layers a `[64, 128, 10]` size list describes, within `limits`.
pub(super) fn layers_from_sizes(
    text: &str,
    limits: &ModelLimits,
    rng: &mut Rng,
) -> Result<Vec<Layer>, ModelError> {
    let plan = parse_sizes(text)?;
    check_plan(&plan, limits)?;
    build(plan, rng)
}

/// The layers a TOML description describes, within `limits`.
pub(super) fn layers_from_toml(
    text: &str,
    limits: &ModelLimits,
    rng: &mut Rng,
) -> Result<Vec<Layer>, ModelError> {
    let plan = parse_toml(text)?;
    check_plan(&plan, limits)?;
    build(plan, rng)
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
                if !l.eps.is_finite()
                    || l.eps <= 0.0
                    || l.weight.shape() != l.bias.shape()
                    || l.weight.rank() != 1
                {
                    return Err(fail(format!(
                        "needs a finite eps > 0 (got {}) and weight and bias of one shape [size]",
                        l.eps
                    )));
                }
                (Some(l.weight.shape()[0]), Some(l.weight.shape()[0]))
            }
            Layer::Embedding(e) => {
                if index != 0 || e.weight.rank() != 2 {
                    return Err(fail("an embedding must be the first layer (its input holds ids), with a [count, dim] table".into()));
                }
                if e.weight.shape()[0] == 0 {
                    return Err(fail("count is 0: a table without rows can look up no id".into()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_with_a_decimal_unit() {
        assert_eq!(bytes_text(&999), "999 B");
        assert_eq!(bytes_text(&256_000_000_000), "256.0 GB");
        assert_eq!(bytes_text(&(8 << 30)), "8.6 GB");
    }

    #[test]
    fn long_descriptions_are_shortened_in_messages() {
        let long = "x".repeat(500);
        assert_eq!(shown(&long).len(), 83);
        assert_eq!(shown("[1, 2]"), "[1, 2]");
    }

    fn spec_error(text: &str) -> ModelError {
        let plan = parse_sizes(text).unwrap();
        check_plan(&plan, &ModelLimits::default()).unwrap_err()
    }

    #[test]
    fn a_billion_unit_layer_is_refused_with_the_memory_it_needs() {
        // Before: "memory allocation of 256000000000 bytes failed", an abort.
        let message = spec_error("[64, 1000000000, 10]").to_string();
        assert_eq!(
            message,
            "layer 0 (linear): a width of 1000000000 is above the limit of 16777216 \
             (zbmd_ml::nn::WIDTH_MAX); the model would need 300.0 GB for its parameters"
        );
    }

    #[test]
    fn a_width_of_u64_max_is_refused_not_a_capacity_overflow() {
        // Before: a "capacity overflow" panic.
        let error = spec_error("[64, 18446744073709551615, 10]");
        assert!(
            matches!(error, ModelError::TooWide { index: 0, width: usize::MAX, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("5.5 ZB for its parameters"), "{error}");
    }

    #[test]
    fn widths_within_the_limit_can_still_make_too_large_a_model() {
        let limits = ModelLimits { parameter_bytes_max: 1 << 20, ..ModelLimits::default() };
        let plan = parse_sizes("[1024, 1024]").unwrap();
        let error = check_plan(&plan, &limits).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the model needs 4.2 MB for its 1049600 parameters (f32), above the limit of 1.0 MB \
             (zbmd_ml::nn::PARAMETER_BYTES_MAX unless lowered): use fewer or narrower layers"
        );
        assert!(check_plan(&parse_sizes("[256, 256]").unwrap(), &limits).is_ok());
    }

    #[test]
    fn toml_layers_are_held_to_the_same_limits() {
        for text in [
            "[[layers]]\nkind = \"layer_norm\"\nsize = 100000000\n",
            "[[layers]]\nkind = \"embedding\"\ncount = 100000000\ndim = 2\n",
            "[[layers]]\nkind = \"linear\"\nin = 2\nout = 18446744073709551615\n",
        ] {
            let plan = parse_toml(text).unwrap();
            let error = check_plan(&plan, &ModelLimits::default()).unwrap_err();
            assert!(matches!(error, ModelError::TooWide { index: 0, .. }), "{error:?}");
        }
        let big = "[[layers]]\nkind = \"embedding\"\ncount = 16777216\ndim = 16777216\n";
        let error = check_plan(&parse_toml(big).unwrap(), &ModelLimits::default()).unwrap_err();
        assert!(error.to_string().starts_with("the model needs 1.1 PB for its"), "{error}");
    }

    #[test]
    fn overlong_descriptions_are_refused_before_parsing() {
        let long = format!("[{}1]", "1, ".repeat(MODEL_TEXT_BYTES_MAX));
        assert!(parse_sizes(&long).unwrap_err().to_string().contains("MODEL_TEXT_BYTES_MAX"));
        let many = format!("[{}1]", "1, ".repeat(600));
        assert!(parse_sizes(&many).unwrap_err().to_string().contains("LAYERS_MAX"));
        let long = " ".repeat(MODEL_TEXT_BYTES_MAX + 1);
        assert!(parse_toml(&long).unwrap_err().to_string().contains("MODEL_TEXT_BYTES_MAX"));
    }

    #[test]
    fn an_infinite_layer_norm_eps_is_refused() {
        let text = "[[layers]]\nkind = \"layer_norm\"\nsize = 4\neps = inf\n";
        let layers = layers_from_toml(text, &ModelLimits::default(), &mut Rng::new(1)).unwrap();
        let error = check_widths(&layers).unwrap_err();
        assert!(error.to_string().contains("finite eps"), "{error}");
    }

    #[test]
    fn an_embedding_without_rows_is_refused() {
        // Found by the model_toml fuzz target: it was accepted, and every
        // forward pass then failed with an id out of 0..0.
        let text = "[[layers]]\nkind = \"embedding\"\ncount = 0\ndim = 8\n";
        let layers = layers_from_toml(text, &ModelLimits::default(), &mut Rng::new(1)).unwrap();
        let error = check_widths(&layers).unwrap_err();
        assert_eq!(
            error.to_string(),
            "layer 0 (embedding): count is 0: a table without rows can look up no id"
        );
    }
}
