//! Layers and sequential models, with PyTorch-compatible parameter names and
//! safetensors files.
//!
//! A [`Sequential`] holds its parameters as [`Tensor`]s; each
//! [`Sequential::forward`] records them on a [`Graph`] as trainable leaves,
//! and [`Sequential::param_views`] pairs them with the gradients of the
//! following [`Graph::backward`] for an optimizer.
//!
//! Parameter names follow PyTorch's `nn.Sequential`: `"{index}.weight"` and
//! `"{index}.bias"`, where the index counts every module, activations
//! included, so `[64, 128, 10]` has `0.weight`, `0.bias`, `2.weight`,
//! `2.bias`. Weights therefore move between PyTorch (`model.state_dict()`
//! through `safetensors.torch.save_file`) and zbmd in both directions.

mod io;
mod spec;

use crate::optim::ParamView;
use crate::rng::Rng;
use crate::tensor::{Gradients, Graph, Tensor, TensorError, Var};

pub use spec::{LAYERS_MAX, MODEL_TEXT_BYTES_MAX, ModelLimits, PARAMETER_BYTES_MAX, WIDTH_MAX};

/// Errors from building, running and loading models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A `[64, 128, 10]`-style spec could not be parsed.
    #[error("model spec {spec:?}: {problem}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A TOML model description could not be parsed.
    #[error("model TOML: {0}")]
    Toml(String),
    /// A layer of a description is wider than [`ModelLimits::width_max`].
    #[error(
        "layer {index} ({kind}): a width of {width} is above the limit of {width_max} \
         (zbmd_ml::nn::WIDTH_MAX); the model would need {} for its parameters",
        spec::bytes_text(.parameter_bytes)
    )]
    TooWide {
        /// The layer's index in the sequence.
        index: usize,
        /// The layer's kind (`linear`, `layer_norm`, ...).
        kind: &'static str,
        /// The width asked for.
        width: usize,
        /// The limit it is above.
        width_max: usize,
        /// What the whole model's parameters would take as `f32`.
        parameter_bytes: u128,
    },
    /// A description's parameters would take more than
    /// [`ModelLimits::parameter_bytes_max`].
    #[error(
        "the model needs {} for its {parameters} parameters (f32), above the limit of {} \
         (zbmd_ml::nn::PARAMETER_BYTES_MAX unless lowered): use fewer or narrower layers",
        spec::bytes_text(.parameter_bytes),
        spec::bytes_text(&u128::from(*.limit_bytes))
    )]
    TooLarge {
        /// The parameters the description asks for.
        parameters: u128,
        /// What they would take as `f32`.
        parameter_bytes: u128,
        /// The limit.
        limit_bytes: u64,
    },
    /// A layer is inconsistent with itself or with the layer before it.
    #[error("layer {index} ({kind}): {problem}")]
    Layer {
        /// The layer's index in the sequence.
        index: usize,
        /// The layer's kind (`linear`, `layer_norm`, ...).
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A parameter the model needs is not in the safetensors file.
    #[error("safetensors: tensor {name:?} is missing (the model needs {expected:?})")]
    MissingTensor {
        /// The parameter's name.
        name: String,
        /// The model's shape for it.
        expected: Vec<usize>,
    },
    /// A tensor in the file has another shape than the model's parameter.
    #[error(
        "safetensors: tensor {name:?} has shape {found:?} but the model's parameter has shape {expected:?}"
    )]
    ShapeMismatch {
        /// The parameter's name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The model's shape.
        expected: Vec<usize>,
    },
    /// A tensor in the file has a dtype that is not a float zbmd reads.
    #[error(
        "safetensors: tensor {name:?} has dtype {found} but the model's parameters are F32 (F16 and BF16 are converted on import)"
    )]
    DTypeMismatch {
        /// The parameter's name.
        name: String,
        /// The dtype in the file.
        found: String,
    },
    /// The file holds a tensor that is no parameter of the model.
    #[error(
        "safetensors: tensor {name:?} is not a parameter of this model (its parameters are {known:?})"
    )]
    UnexpectedTensor {
        /// The tensor's name.
        name: String,
        /// The model's parameter names.
        known: Vec<String>,
    },
    /// The bytes are not a valid safetensors file.
    #[error("safetensors: {0}")]
    Format(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The gradients do not come from a backward pass over this model's
    /// latest forward pass.
    #[error(
        "gradients for parameter {name:?} are missing: call forward, then backward on that graph, before param_views"
    )]
    StaleGradients {
        /// The first parameter without a matching gradient.
        name: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// A fully connected layer, `y = x W^T + b`, laid out like PyTorch's
/// `nn.Linear`: weight `[out, in]`, bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer initialised as PyTorch does by default: weight and bias
    /// uniform in `±1/sqrt(in_features)` (Kaiming-uniform with `a = sqrt 5`),
    /// weight drawn first, row-major, then bias.
    ///
    /// # Panics
    ///
    /// When the layer is too large to allocate (sizes from users or files go
    /// through [`try_new`](Self::try_new)).
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Linear {
        Linear::try_new(in_features, out_features, bias, rng)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`new`](Self::new), or [`TensorError::TooLarge`] when the weight's
    /// element count overflows or its memory cannot be had.
    pub fn try_new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Linear, TensorError> {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let weight = Tensor::try_uniform(&[out_features, in_features], -bound, bound, rng)?;
        let bias =
            bias.then(|| Tensor::try_uniform(&[out_features], -bound, bound, rng)).transpose()?;
        Ok(Linear { weight, bias })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

/// Layer normalisation over the last dimension with a learned scale
/// (`weight`, ones at first) and shift (`bias`, zeros at first).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `[size]`.
    pub weight: Tensor,
    /// `[size]`.
    pub bias: Tensor,
    /// Added to the variance (PyTorch's default is 1e-5).
    pub eps: f32,
}

impl LayerNorm {
    /// Normalisation over `size` features.
    ///
    /// # Panics
    ///
    /// When `size` is too large to allocate (see [`try_new`](Self::try_new)).
    pub fn new(size: usize, eps: f32) -> LayerNorm {
        LayerNorm::try_new(size, eps).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`new`](Self::new), or [`TensorError::TooLarge`] when the memory
    /// cannot be had.
    pub fn try_new(size: usize, eps: f32) -> Result<LayerNorm, TensorError> {
        Ok(LayerNorm {
            weight: Tensor::try_full(&[size], 1.0)?,
            bias: Tensor::try_zeros(&[size])?,
            eps,
        })
    }
}

/// A lookup table of `count` vectors of width `dim`, initialised from a
/// standard normal (as PyTorch's `nn.Embedding`).
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[count, dim]`.
    pub weight: Tensor,
}

impl Embedding {
    /// A table drawn from `rng`.
    ///
    /// # Panics
    ///
    /// When the table is too large to allocate (see
    /// [`try_new`](Self::try_new)).
    pub fn new(count: usize, dim: usize, rng: &mut Rng) -> Embedding {
        Embedding::try_new(count, dim, rng).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`new`](Self::new), or [`TensorError::TooLarge`] when the table's
    /// element count overflows or its memory cannot be had.
    pub fn try_new(count: usize, dim: usize, rng: &mut Rng) -> Result<Embedding, TensorError> {
        Ok(Embedding { weight: Tensor::try_randn(&[count, dim], 1.0, rng)? })
    }
}

/// One module of a [`Sequential`].
#[derive(Debug, Clone)]
pub enum Layer {
    /// Fully connected.
    Linear(Linear),
    /// `max(x, 0)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
    /// Layer normalisation.
    LayerNorm(LayerNorm),
    /// Row lookup: the input holds ids (whole numbers stored as `f32`).
    Embedding(Embedding),
    /// Inverted dropout with probability `p` in training mode; identity in
    /// evaluation mode.
    Dropout {
        /// Probability of zeroing each element, in `[0, 1]`.
        p: f32,
    },
}

impl Layer {
    /// The layer's kind as written in TOML descriptions.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "linear",
            Layer::Relu => "relu",
            Layer::Gelu => "gelu",
            Layer::Tanh => "tanh",
            Layer::LayerNorm(_) => "layer_norm",
            Layer::Embedding(_) => "embedding",
            Layer::Dropout { .. } => "dropout",
        }
    }

    /// The layer's parameters with their local names (`"weight"`, `"bias"`).
    fn params(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Layer::Linear(l) => {
                let mut out = vec![("weight", &l.weight)];
                out.extend(l.bias.as_ref().map(|b| ("bias", b)));
                out
            }
            Layer::LayerNorm(l) => vec![("weight", &l.weight), ("bias", &l.bias)],
            Layer::Embedding(e) => vec![("weight", &e.weight)],
            Layer::Relu | Layer::Gelu | Layer::Tanh | Layer::Dropout { .. } => vec![],
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Layer::Linear(l) => {
                let mut out = vec![&mut l.weight];
                out.extend(l.bias.as_mut());
                out
            }
            Layer::LayerNorm(l) => vec![&mut l.weight, &mut l.bias],
            Layer::Embedding(e) => vec![&mut e.weight],
            Layer::Relu | Layer::Gelu | Layer::Tanh | Layer::Dropout { .. } => vec![],
        }
    }
}

/// Layers applied in order, like PyTorch's `nn.Sequential`.
#[derive(Debug, Clone)]
pub struct Sequential {
    layers: Vec<Layer>,
    names: Vec<String>,
    training: bool,
    dropout_rng: Rng,
    /// The parameters' variables on the graph of the latest forward pass.
    bound: Vec<Var>,
}

impl Sequential {
    /// A model from already built layers, checked for consistent widths;
    /// dropout draws from `rng.fork("dropout")`. Starts in training mode.
    pub fn from_layers(layers: Vec<Layer>, rng: &Rng) -> Result<Sequential, ModelError> {
        spec::check_widths(&layers)?;
        let names = layers
            .iter()
            .enumerate()
            .flat_map(|(i, layer)| {
                layer.params().into_iter().map(move |(local, _)| format!("{i}.{local}"))
            })
            .collect();
        Ok(Sequential {
            layers,
            names,
            training: true,
            dropout_rng: rng.fork("dropout"),
            bound: Vec::new(),
        })
    }

    /// A multilayer perceptron from a spec such as `"[64, 128, 10]"`: Linear
    /// layers between consecutive sizes with ReLU between them (none after
    /// the last), initialised from `rng`. Widths and the parameters' bytes
    /// are held to [`ModelLimits::default`]; a larger model is a
    /// [`ModelError::TooWide`] or [`ModelError::TooLarge`] saying how much
    /// memory it would need.
    pub fn from_spec(text: &str, rng: &mut Rng) -> Result<Sequential, ModelError> {
        Sequential::from_spec_within(text, &ModelLimits::default(), rng)
    }

    /// [`from_spec`](Self::from_spec) held to `limits` instead of the
    /// default ones.
    pub fn from_spec_within(
        text: &str,
        limits: &ModelLimits,
        rng: &mut Rng,
    ) -> Result<Sequential, ModelError> {
        let layers = spec::layers_from_sizes(text, limits, rng)?;
        Sequential::from_layers(layers, rng)
    }

    /// A model from a TOML description, initialised from `rng` layer by
    /// layer. The format is a list of layers, each with a `kind`:
    ///
    /// ```toml
    /// [[layers]]
    /// kind = "linear"     # in, out; optional bias = true
    /// in = 64
    /// out = 128
    /// [[layers]]
    /// kind = "relu"       # also "gelu", "tanh"
    /// [[layers]]
    /// kind = "layer_norm" # size; optional eps = 1e-5
    /// size = 128
    /// [[layers]]
    /// kind = "dropout"    # p in [0, 1]
    /// p = 0.1
    /// [[layers]]
    /// kind = "linear"
    /// in = 128
    /// out = 10
    /// ```
    ///
    /// `kind = "embedding"` with `count` and `dim` may come first; its input
    /// holds ids. Unknown keys are errors. Sizes are held to
    /// [`ModelLimits::default`], as [`from_spec`](Self::from_spec) does.
    pub fn from_toml(text: &str, rng: &mut Rng) -> Result<Sequential, ModelError> {
        Sequential::from_toml_within(text, &ModelLimits::default(), rng)
    }

    /// [`from_toml`](Self::from_toml) held to `limits` instead of the
    /// default ones.
    pub fn from_toml_within(
        text: &str,
        limits: &ModelLimits,
        rng: &mut Rng,
    ) -> Result<Sequential, ModelError> {
        let layers = spec::layers_from_toml(text, limits, rng)?;
        Sequential::from_layers(layers, rng)
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Switches dropout on (training) or off (evaluation).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The dropout generator's state, for checkpoints.
    pub fn dropout_rng_state(&self) -> u64 {
        self.dropout_rng.state()
    }

    /// Resumes the dropout generator from a saved state.
    pub fn set_dropout_rng_state(&mut self, state: u64) {
        self.dropout_rng = Rng::from_state(state);
    }

    /// Parameters with PyTorch `nn.Sequential` names, in module order.
    pub fn parameters(&self) -> Vec<(&str, &Tensor)> {
        let tensors = self.layers.iter().flat_map(|l| l.params().into_iter().map(|(_, t)| t));
        self.names.iter().map(String::as_str).zip(tensors).collect()
    }

    /// Parameters, writable, with their names.
    pub fn parameters_mut(&mut self) -> Vec<(&str, &mut Tensor)> {
        let tensors = self.layers.iter_mut().flat_map(Layer::params_mut);
        self.names.iter().map(String::as_str).zip(tensors).collect()
    }

    /// The total number of parameter elements.
    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Records the model applied to `input` on `graph`; parameters become
    /// trainable leaves whose variables [`param_vars`](Self::param_vars)
    /// returns until the next forward pass.
    pub fn forward(&mut self, graph: &mut Graph, input: Var) -> Result<Var, ModelError> {
        self.bound.clear();
        let mut x = input;
        for layer in &self.layers {
            x = match layer {
                Layer::Linear(l) => {
                    let w = graph.param(&l.weight);
                    let b = l.bias.as_ref().map(|b| graph.param(b));
                    self.bound.push(w);
                    self.bound.extend(b);
                    graph.linear(x, w, b)?
                }
                Layer::Relu => graph.relu(x)?,
                Layer::Gelu => graph.gelu(x)?,
                Layer::Tanh => graph.tanh(x)?,
                Layer::LayerNorm(l) => {
                    let (w, b) = (graph.param(&l.weight), graph.param(&l.bias));
                    self.bound.extend([w, b]);
                    graph.layer_norm(x, w, b, l.eps)?
                }
                Layer::Embedding(e) => {
                    let table = graph.param(&e.weight);
                    self.bound.push(table);
                    embed(graph, table, x)?
                }
                Layer::Dropout { p } if self.training => {
                    graph.dropout(x, *p, &mut self.dropout_rng)?
                }
                Layer::Dropout { .. } => x,
            };
        }
        Ok(x)
    }

    /// The parameters' variables from the latest [`forward`](Self::forward),
    /// in [`parameters`](Self::parameters) order.
    pub fn param_vars(&self) -> &[Var] {
        &self.bound
    }

    /// Each parameter's values (writable) beside its gradient from `grads`,
    /// which must come from `backward` on the graph of the latest forward
    /// pass. This is what [`crate::optim::Optimizer::step`] takes.
    pub fn param_views<'a>(
        &'a mut self,
        grads: &'a Gradients,
    ) -> Result<Vec<ParamView<'a>>, ModelError> {
        let mut found = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            match self.bound.get(i).and_then(|&v| grads.get(v)) {
                Some(grad) => found.push(grad),
                None => return Err(ModelError::StaleGradients { name: name.clone() }),
            }
        }
        let tensors = self.layers.iter_mut().flat_map(Layer::params_mut);
        let views = self.names.iter().zip(tensors).zip(found).map(|((name, tensor), grad)| {
            if tensor.as_f32_slice().is_none() {
                *tensor = tensor.contiguous();
            }
            let value =
                tensor.as_f32_slice_mut().expect("contiguous f32 after the conversion above");
            ParamView { name: name.as_str(), value, grad }
        });
        Ok(views.collect())
    }
}

/// Looks up the rows named by `ids` (whole numbers stored as `f32`), giving
/// `ids.shape + [dim]`.
fn embed(graph: &mut Graph, table: Var, ids: Var) -> Result<Var, ModelError> {
    let mut rows = Vec::with_capacity(graph.value(ids).len());
    for (position, &value) in graph.value(ids).iter().enumerate() {
        if !(value >= 0.0 && value.fract() == 0.0 && value < 16_777_216.0) {
            return Err(TensorError::NotAnIndex { op: "embedding", position, value }.into());
        }
        rows.push(value as usize);
    }
    let mut shape = graph.shape(ids).to_vec();
    shape.push(graph.shape(table)[1]);
    let looked_up = graph.embedding(table, &rows)?;
    Ok(graph.reshape(looked_up, &shape)?)
}
