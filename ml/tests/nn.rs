//! Layers and sequential models: specs, PyTorch names, initialisation,
//! safetensors round trips and errors, determinism, dropout, and a small
//! training run.

use zbmd_ml::nn::{Layer, ModelError, Sequential};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{DType, Graph, Tensor};

fn mlp(seed: u64) -> Sequential {
    Sequential::from_spec("[64, 32, 10]", &mut Rng::new(seed)).unwrap()
}

fn names(model: &Sequential) -> Vec<String> {
    model.parameters().iter().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn spec_builds_linear_relu_linear_with_pytorch_names() {
    let model = Sequential::from_spec(" [64, 128, 10] ", &mut Rng::new(1)).unwrap();
    let kinds: Vec<&str> = model.layers().iter().map(Layer::kind).collect();
    assert_eq!(kinds, ["linear", "relu", "linear"]);
    assert_eq!(names(&model), ["0.weight", "0.bias", "2.weight", "2.bias"]);
    let shapes: Vec<Vec<usize>> =
        model.parameters().iter().map(|(_, t)| t.shape().to_vec()).collect();
    assert_eq!(shapes, [vec![128, 64], vec![128], vec![10, 128], vec![10]]);
    assert_eq!(model.num_parameters(), 128 * 64 + 128 + 10 * 128 + 10);
    let deep = Sequential::from_spec("[4, 5, 6, 7]", &mut Rng::new(1)).unwrap();
    assert_eq!(names(&deep), ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]);
}

#[test]
fn linear_init_is_uniform_within_one_over_sqrt_fan_in() {
    let model = Sequential::from_spec("[64, 128, 10]", &mut Rng::new(3)).unwrap();
    for (name, tensor) in model.parameters() {
        let fan_in = if name.starts_with('0') { 64.0f32 } else { 128.0 };
        let bound = 1.0 / fan_in.sqrt();
        let values = tensor.to_vec_f32();
        assert!(values.iter().all(|v| v.abs() <= bound), "{name} exceeds ±{bound}");
        // Spread over the range, not squeezed into a corner of it.
        let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.8 * bound, "{name}: largest |value| {max} of bound {bound}");
    }
}

#[test]
fn spec_errors_name_the_problem() {
    let err = |text: &str| Sequential::from_spec(text, &mut Rng::new(0)).unwrap_err().to_string();
    assert_eq!(
        err("64, 10"),
        "model spec \"64, 10\": expected a bracketed list of layer sizes such as [784, 128, 10]"
    );
    assert_eq!(
        err("[64, x, 10]"),
        "model spec \"[64, x, 10]\": size 1 (\"x\") is not a positive whole number"
    );
    assert_eq!(
        err("[64, 0]"),
        "model spec \"[64, 0]\": size 1 is 0; every layer needs at least one unit"
    );
    assert_eq!(
        err("[64]"),
        "model spec \"[64]\": needs at least an input and an output size, got 1"
    );
    assert!(err("[64, -3]").contains("size 1 (\"-3\")"));
}

#[test]
fn toml_builds_every_layer_kind_and_numbers_them_like_pytorch() {
    let text = r#"
        [[layers]]
        kind = "embedding"
        count = 20
        dim = 8
        [[layers]]
        kind = "layer_norm"
        size = 8
        [[layers]]
        kind = "linear"
        in = 8
        out = 16
        [[layers]]
        kind = "gelu"
        [[layers]]
        kind = "dropout"
        p = 0.5
        [[layers]]
        kind = "tanh"
        [[layers]]
        kind = "linear"
        in = 16
        out = 3
        bias = false
    "#;
    let mut model = Sequential::from_toml(text, &mut Rng::new(2)).unwrap();
    assert_eq!(names(&model), ["0.weight", "1.weight", "1.bias", "2.weight", "2.bias", "6.weight"]);
    // Ids [2, 4] (batch 2 x sequence 2 after the reshape below) through the model.
    let mut g = Graph::new();
    let ids = g.input(&Tensor::from_vec(vec![1.0, 19.0, 0.0, 5.0], &[2, 2]).unwrap());
    let out = model.forward(&mut g, ids).unwrap();
    assert_eq!(g.shape(out), &[2, 2, 3]);
    let loss = g.mean(out).unwrap();
    let grads = g.backward(loss).unwrap();
    // Only the looked-up embedding rows receive gradient.
    let table_grad = grads.get(model.param_vars()[0]).unwrap();
    let row_touched = |r: usize| table_grad[r * 8..(r + 1) * 8].iter().any(|&v| v != 0.0);
    assert!(row_touched(1) && row_touched(19) && row_touched(0) && row_touched(5));
    assert!(!row_touched(2) && !row_touched(18));

    let mut g = Graph::new();
    let bad = g.input(&Tensor::from_vec(vec![1.5], &[1]).unwrap());
    let err = model.forward(&mut g, bad).unwrap_err().to_string();
    assert_eq!(err, "embedding: entry 0 is 1.5, not a non-negative whole number");
}

#[test]
fn toml_errors_name_the_layer_and_the_problem() {
    let err = |text: &str| Sequential::from_toml(text, &mut Rng::new(0)).unwrap_err().to_string();
    let mismatch = "[[layers]]\nkind = \"linear\"\nin = 4\nout = 8\n[[layers]]\nkind = \"relu\"\n[[layers]]\nkind = \"linear\"\nin = 9\nout = 2\n";
    assert_eq!(err(mismatch), "layer 2 (linear): takes 9 features but the layer before produces 8");
    let unknown = "[[layers]]\nkind = \"conv\"\n";
    assert!(
        err(unknown).starts_with("model TOML:") && err(unknown).contains("conv"),
        "{}",
        err(unknown)
    );
    let typo = "[[layers]]\nkind = \"linear\"\nin = 4\nouts = 8\n";
    assert!(err(typo).contains("outs"), "{}", err(typo));
    let bad_p = "[[layers]]\nkind = \"dropout\"\np = 1.5\n";
    assert_eq!(err(bad_p), "layer 0 (dropout): probability 1.5 is outside [0, 1]");
    let late_embedding =
        "[[layers]]\nkind = \"relu\"\n[[layers]]\nkind = \"embedding\"\ncount = 3\ndim = 2\n";
    assert!(
        err(late_embedding)
            .starts_with("layer 1 (embedding): an embedding must be the first layer")
    );
}

#[test]
fn same_seed_gives_bit_identical_parameters_and_outputs() {
    let input = Tensor::randn(&[8, 64], 1.0, &mut Rng::new(11));
    let run = |seed: u64| {
        let mut model = mlp(seed);
        let mut g = Graph::new();
        let x = g.input(&input);
        let y = model.forward(&mut g, x).unwrap();
        let params: Vec<u32> =
            model.parameters().iter().flat_map(|(_, t)| t.to_vec_f32()).map(f32::to_bits).collect();
        let out: Vec<u32> = g.value(y).iter().map(|v| v.to_bits()).collect();
        (params, out)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

#[test]
fn safetensors_round_trip_is_exact_and_half_precision_imports() {
    let source = mlp(1);
    let bytes = source.to_safetensors().unwrap();
    let mut target = mlp(2);
    target.load_safetensors(&bytes).unwrap();
    for ((n1, a), (n2, b)) in source.parameters().iter().zip(target.parameters()) {
        assert_eq!(*n1, n2);
        assert_eq!(a.to_vec_f32(), b.to_vec_f32(), "{n1}");
    }
    // Through a file too.
    let path =
        std::env::temp_dir().join(format!("zbmd-nn-test-{}.safetensors", std::process::id()));
    source.export_safetensors(&path).unwrap();
    let mut from_file = mlp(3);
    from_file.import_safetensors(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file.parameters()[0].1.to_vec_f32(), source.parameters()[0].1.to_vec_f32());
    // F16 and BF16 files load, rounded the way the dtype rounds.
    for dtype in [DType::F16, DType::BF16] {
        let mut half = mlp(4);
        half.load_safetensors(&source.to_safetensors_as(dtype).unwrap()).unwrap();
        let want = source.parameters()[2].1.to_dtype(dtype).to_vec_f32();
        assert_eq!(half.parameters()[2].1.to_vec_f32(), want);
        assert_eq!(half.parameters()[2].1.dtype(), DType::F32);
    }
}

#[test]
fn safetensors_mismatches_name_the_tensor_and_leave_the_model_unchanged() {
    let small = Sequential::from_spec("[64, 16, 10]", &mut Rng::new(1)).unwrap();
    let mut model = mlp(2);
    let before: Vec<f32> = model.parameters()[0].1.to_vec_f32();
    let err = model.load_safetensors(&small.to_safetensors().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "safetensors: tensor \"0.weight\" has shape [16, 64] but the model's parameter has shape [32, 64]"
    );
    assert_eq!(model.parameters()[0].1.to_vec_f32(), before);

    let shallow = Sequential::from_spec("[64, 10]", &mut Rng::new(1)).unwrap();
    let err = model.load_safetensors(&shallow.to_safetensors().unwrap()).unwrap_err();
    assert!(matches!(&err, ModelError::ShapeMismatch { name, .. } if name == "0.weight"), "{err}");
    let mut wide = Sequential::from_spec("[64, 10]", &mut Rng::new(1)).unwrap();
    let err = wide.load_safetensors(&model.to_safetensors().unwrap()).unwrap_err();
    assert!(err.to_string().contains("\"0.weight\" has shape [32, 64]"), "{err}");

    // A file missing 2.bias, and one with an integer tensor.
    let data: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = model
        .parameters()
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_le_bytes(), t.shape().to_vec(), safetensors::Dtype::F32))
        .collect();
    let write = |entries: &[(String, Vec<u8>, Vec<usize>, safetensors::Dtype)]| {
        let views = entries.iter().map(|(n, b, s, d)| {
            (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())
        });
        safetensors::serialize(views, None).unwrap()
    };
    let err = model.load_safetensors(&write(&data[..3])).unwrap_err();
    assert_eq!(err.to_string(), "safetensors: tensor \"2.bias\" is missing (the model needs [10])");
    let mut ints = data.clone();
    ints[1].3 = safetensors::Dtype::I32;
    let err = model.load_safetensors(&write(&ints)).unwrap_err();
    assert!(err.to_string().starts_with("safetensors: tensor \"0.bias\" has dtype I32"), "{err}");
    let mut extra = data.clone();
    extra.push(("4.weight".into(), vec![0; 4], vec![1], safetensors::Dtype::F32));
    let err = model.load_safetensors(&write(&extra)).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnexpectedTensor { name, .. } if name == "4.weight"),
        "{err}"
    );
    assert!(matches!(model.load_safetensors(b"not a file"), Err(ModelError::Format(_))));
    assert_eq!(model.parameters()[0].1.to_vec_f32(), before);
}

#[test]
fn dropout_is_seeded_scaled_in_training_and_off_in_evaluation() {
    let text = "[[layers]]\nkind = \"dropout\"\np = 0.25\n";
    let input = Tensor::full(&[1000], 2.0);
    let outputs = |model: &mut Sequential| {
        let mut g = Graph::new();
        let x = g.input(&input);
        let y = model.forward(&mut g, x).unwrap();
        g.value(y).to_vec()
    };
    let mut model = Sequential::from_toml(text, &mut Rng::new(4)).unwrap();
    let first = outputs(&mut model);
    let dropped = first.iter().filter(|&&v| v == 0.0).count();
    assert!((200..300).contains(&dropped), "{dropped} of 1000 dropped at p = 0.25");
    assert!(first.iter().all(|&v| v == 0.0 || (v - 2.0 / 0.75).abs() < 1e-6));
    // The generator moves on between steps, and a model built with the same
    // seed replays the same masks.
    assert_ne!(outputs(&mut model), first);
    assert_eq!(outputs(&mut Sequential::from_toml(text, &mut Rng::new(4)).unwrap()), first);
    // A saved generator state resumes the same masks.
    let state = model.dropout_rng_state();
    let next = outputs(&mut model);
    model.set_dropout_rng_state(state);
    assert_eq!(outputs(&mut model), next);
    model.set_training(false);
    assert!(outputs(&mut model).iter().all(|&v| v == 2.0));
}

#[test]
fn param_views_reject_gradients_from_another_pass() {
    let mut model = mlp(1);
    let mut g = Graph::new();
    let x = g.input(&Tensor::zeros(&[2, 64]));
    let y = model.forward(&mut g, x).unwrap();
    let loss = g.cross_entropy(y, &[1, 2]).unwrap();
    let stale = g.backward(loss).unwrap();
    let mut g2 = Graph::new();
    let x2 = g2.input(&Tensor::zeros(&[2, 64]));
    model.forward(&mut g2, x2).unwrap();
    let err = model.param_views(&stale).unwrap_err();
    assert_eq!(
        err.to_string(),
        "gradients for parameter \"0.weight\" are missing: call forward, then backward on that graph, before param_views"
    );
}

/// Ten Gaussian clusters in 64 dimensions, 20 points each.
fn clusters(rng: &mut Rng) -> (Tensor, Vec<usize>) {
    let centres: Vec<Vec<f32>> = (0..10).map(|_| (0..64).map(|_| rng.normal()).collect()).collect();
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for i in 0..200 {
        let class = i % 10;
        data.extend(centres[class].iter().map(|c| c + 0.5 * rng.normal()));
        labels.push(class);
    }
    (Tensor::from_vec(data, &[200, 64]).unwrap(), labels)
}

#[test]
fn sgd_training_of_a_64_32_10_mlp_drops_the_loss() {
    let mut rng = Rng::new(2024);
    let (inputs, labels) = clusters(&mut rng);
    let mut model = mlp(7);
    let mut g = Graph::new();
    let learning_rate = 0.1;
    let mut losses = Vec::new();
    for _ in 0..300 {
        g.clear();
        let x = g.input(&inputs);
        let logits = model.forward(&mut g, x).unwrap();
        let loss = g.cross_entropy(logits, &labels).unwrap();
        losses.push(g.value(loss)[0]);
        let grads = g.backward(loss).unwrap();
        for view in model.param_views(&grads).unwrap() {
            view.value.iter_mut().zip(view.grad).for_each(|(v, g)| *v -= learning_rate * g);
        }
        g.recycle(grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first > 2.0, "an untrained 10-class model starts near ln 10: {first}");
    assert!(last < first / 2.0, "loss went from {first} to {last}");
    assert!(last < 0.1, "separable clusters should be fitted: {last}");
}
