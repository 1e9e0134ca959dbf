//! Model descriptions (the `[64, 128, 10]` size list and the TOML layer
//! list) and safetensors parameter files.

use std::sync::OnceLock;

use zbmd_ml::nn::{LAYERS_MAX, Layer, ModelError, ModelLimits, Sequential, WIDTH_MAX};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, Tensor};

use super::{says_something, text};

/// The limits the model targets build under: the default width, and 64 KiB
/// of parameters instead of 8 GiB, so that an input the parser accepts is
/// built, exported, reloaded and run in microseconds and the fuzzer spends
/// its time parsing (at 1 MiB, building took most of each run: under 1,000
/// runs a second). The limit check itself is the same code whatever the
/// numbers.
const FUZZ_LIMITS: ModelLimits = ModelLimits { width_max: WIDTH_MAX, parameter_bytes_max: 1 << 16 };

/// The most parameters a model may have for the target to also run it
/// forward and backward (a few microseconds' work).
const RUN_PARAMETERS_MAX: usize = 1 << 14;

/// A `[64, 128, 10]` size list through `Sequential::from_spec_within`: a
/// built model is within the limits with finite parameters, its safetensors
/// export loads back bit for bit, and (when small) it runs forward and
/// backward on zeros.
pub fn model_spec(data: &[u8]) {
    if let Some(text) = text(data) {
        check_built(Sequential::from_spec_within(text, &FUZZ_LIMITS, &mut Rng::new(1)));
    }
}

/// A TOML layer list through `Sequential::from_toml_within`, with the
/// checks of [`model_spec`].
pub fn model_toml(data: &[u8]) {
    if let Some(text) = text(data) {
        check_built(Sequential::from_toml_within(text, &FUZZ_LIMITS, &mut Rng::new(1)));
    }
}

fn check_built(built: Result<Sequential, ModelError>) {
    match built {
        Ok(model) => check_model(model),
        Err(error) => says_something(&error),
    }
}

/// What a built model satisfies: within the limits, finite parameters, a
/// safetensors round trip that is bit-exact, and (when small) a forward and
/// backward pass on zeros that succeeds.
fn check_model(mut model: Sequential) {
    assert!(!model.layers().is_empty() && model.layers().len() <= LAYERS_MAX);
    let bytes = model.num_parameters() as u64 * 4;
    assert!(bytes <= FUZZ_LIMITS.parameter_bytes_max, "{bytes} bytes of parameters");
    let values = parameter_bits(&model);
    assert!(values.iter().flatten().all(|&bits| f32::from_bits(bits).is_finite()));
    let file = model.to_safetensors().expect("a built model exports");
    let mut reloaded = model.clone();
    reloaded.load_safetensors(&file).expect("a model loads its own export");
    assert_eq!(parameter_bits(&reloaded), values, "the safetensors round trip changed bits");
    if model.num_parameters() <= RUN_PARAMETERS_MAX {
        run_on_zeros(&mut model);
    }
}

/// Every parameter's bits, in parameter order.
fn parameter_bits(model: &Sequential) -> Vec<Vec<u32>> {
    let bits = |t: &Tensor| t.to_vec_f32().iter().map(|x| x.to_bits()).collect();
    model.parameters().iter().map(|(_, tensor)| bits(tensor)).collect()
}

/// Two rows of zeros (ids 0 for an embedding) through the model, then
/// backward from the mean: a model that checked out runs.
fn run_on_zeros(model: &mut Sequential) {
    let shape: Vec<usize> = match model.layers().iter().find_map(input_width) {
        Some(None) => vec![2],
        Some(Some(width)) => vec![2, width],
        None => vec![2, 3],
    };
    let mut graph = Graph::new();
    let input = graph.input(&Tensor::zeros(&shape));
    let output = model.forward(&mut graph, input).expect("a checked model runs on zeros");
    let loss = graph.mean(output).expect("the mean of any output");
    graph.backward(loss).expect("backward from a scalar");
}

/// What the first layer that fixes the input takes: `Some(Some(width))`
/// features, or `Some(None)` for ids (an embedding); `None` for a layer
/// that takes any width.
fn input_width(layer: &Layer) -> Option<Option<usize>> {
    match layer {
        Layer::Linear(linear) => Some(Some(linear.in_features())),
        Layer::LayerNorm(norm) => Some(Some(norm.weight.shape()[0])),
        Layer::Embedding(_) => Some(None),
        Layer::Relu | Layer::Gelu | Layer::Tanh | Layer::Dropout { .. } => None,
    }
}

/// The model every safetensors input is loaded into: an embedding, a layer
/// norm and two linear layers, so every kind of parameter is named.
const IMPORT_MODEL: &str = r#"
[[layers]]
kind = "embedding"
count = 5
dim = 3
[[layers]]
kind = "layer_norm"
size = 3
[[layers]]
kind = "linear"
in = 3
out = 4
[[layers]]
kind = "relu"
[[layers]]
kind = "linear"
in = 4
out = 2
bias = false
"#;

/// Safetensors bytes through `Sequential::load_safetensors` into a fixed
/// model: on an error the model is unchanged; on success every shape is
/// the model's and an export of the result loads back bit for bit.
pub fn safetensors_import(data: &[u8]) {
    // Built once: the target measures the import, not the build.
    static BASE: OnceLock<Sequential> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        Sequential::from_toml(IMPORT_MODEL, &mut Rng::new(1)).expect("a fixed model")
    });
    let mut model = base.clone();
    let before = parameter_bits(&model);
    let shapes = |model: &Sequential| -> Vec<Vec<usize>> {
        model.parameters().iter().map(|(_, t)| t.shape().to_vec()).collect()
    };
    let expected_shapes = shapes(&model);
    match model.load_safetensors(data) {
        Ok(()) => {
            assert_eq!(shapes(&model), expected_shapes, "an import changed a shape");
            let loaded = parameter_bits(&model);
            let mut again = model.clone();
            again.load_safetensors(&model.to_safetensors().expect("export")).expect("reload");
            assert_eq!(parameter_bits(&again), loaded, "export and reload changed bits");
        }
        Err(error) => {
            says_something(&error);
            assert_eq!(parameter_bits(&model), before, "a failed import changed the model");
        }
    }
}
