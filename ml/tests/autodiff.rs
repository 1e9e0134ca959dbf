//! Every differentiable operation's `backward` against central finite
//! differences, plus the tape's error and buffer-reuse behaviour.

use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, Tensor, TensorError, Var};

type Op = dyn Fn(&mut Graph, &[Var]) -> Result<Var, TensorError>;

/// Random inputs in [-1, 1), pushed at least 0.05 away from zero so that
/// kinks (relu at 0) stay outside the finite-difference stencil.
fn inputs(shapes: &[&[usize]], seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    shapes
        .iter()
        .map(|shape| {
            let t = Tensor::uniform(shape, -1.0, 1.0, &mut rng);
            let data = t
                .to_vec_f32()
                .into_iter()
                .map(|x| if x.abs() < 0.05 { x + 0.1f32.copysign(x) } else { x })
                .collect();
            Tensor::from_vec(data, shape).unwrap()
        })
        .collect()
}

/// sum(out * weights) in f64, for fixed random weights: a scalar whose
/// gradient exercises every output element differently.
fn weighted_loss(f: &Op, inputs: &[Tensor], weights: &mut Option<Vec<f32>>) -> f64 {
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs.iter().map(|t| g.input(t)).collect();
    let out = f(&mut g, &vars).unwrap();
    let values = g.value(out);
    let w = weights.get_or_insert_with(|| {
        let mut rng = Rng::new(99);
        (0..values.len()).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    });
    values.iter().zip(w.iter()).map(|(&v, &w)| f64::from(v) * f64::from(w)).sum()
}

/// Compares backward() with central differences (eps 1e-3) for every
/// element of every input: |analytic - numeric| <= 1e-3 + 1e-2 * scale.
fn gradcheck(name: &str, shapes: &[&[usize]], f: &Op) {
    let xs = inputs(shapes, 7);
    let mut weights = None;
    weighted_loss(f, &xs, &mut weights);
    let weights = weights.unwrap();

    let mut g = Graph::new();
    let vars: Vec<Var> = xs.iter().map(|t| g.param(t)).collect();
    let out = f(&mut g, &vars).unwrap();
    let out_shape = g.shape(out).to_vec();
    let w = g.leaf_from_slice(&weights, &out_shape, false).unwrap();
    let prod = g.mul(out, w).unwrap();
    let loss = g.sum(prod).unwrap();
    let grads = g.backward(loss).unwrap();

    let eps = 1e-3f32;
    for (n, x) in xs.iter().enumerate() {
        let analytic = grads.get(vars[n]).unwrap().to_vec();
        let base = x.to_vec_f32();
        for e in 0..base.len() {
            let eval = |delta: f32| {
                let mut moved = base.clone();
                moved[e] += delta;
                let mut perturbed = xs.clone();
                perturbed[n] = Tensor::from_vec(moved, x.shape()).unwrap();
                weighted_loss(f, &perturbed, &mut Some(weights.clone()))
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * f64::from(eps));
            let a = f64::from(analytic[e]);
            let tolerance = 1e-3 + 1e-2 * a.abs().max(numeric.abs());
            assert!(
                (a - numeric).abs() <= tolerance,
                "{name}: input {n} element {e}: backward {a} vs finite difference {numeric}"
            );
        }
    }
}

#[test]
fn matmul_gradients() {
    gradcheck("matmul 2-D", &[&[3, 4], &[4, 5]], &|g, v| g.matmul(v[0], v[1]));
    gradcheck("matmul batched lhs", &[&[2, 3, 4], &[4, 2]], &|g, v| g.matmul(v[0], v[1]));
}

#[test]
fn linear_gradients() {
    gradcheck("linear with bias", &[&[3, 4], &[5, 4], &[5]], &|g, v| {
        g.linear(v[0], v[1], Some(v[2]))
    });
    gradcheck("linear without bias", &[&[2, 2, 4], &[3, 4]], &|g, v| g.linear(v[0], v[1], None));
}

#[test]
fn elementwise_gradients_with_broadcasting() {
    gradcheck("add same shape", &[&[3, 4], &[3, 4]], &|g, v| g.add(v[0], v[1]));
    gradcheck("add row bias", &[&[3, 4], &[4]], &|g, v| g.add(v[0], v[1]));
    gradcheck("add scalar", &[&[3, 4], &[]], &|g, v| g.add(v[0], v[1]));
    gradcheck("add column + row", &[&[3, 1], &[1, 4]], &|g, v| g.add(v[0], v[1]));
    gradcheck("sub row bias", &[&[2, 3, 4], &[4]], &|g, v| g.sub(v[0], v[1]));
    gradcheck("sub scalar from left", &[&[], &[3, 2]], &|g, v| g.sub(v[0], v[1]));
    gradcheck("mul row", &[&[3, 4], &[1, 4]], &|g, v| g.mul(v[0], v[1]));
    gradcheck("mul scalar", &[&[3, 4], &[]], &|g, v| g.mul(v[0], v[1]));
    gradcheck("mul self (one leaf used twice)", &[&[5]], &|g, v| g.mul(v[0], v[0]));
    gradcheck("scale", &[&[2, 3]], &|g, v| g.scale(v[0], -2.5));
}

#[test]
fn activation_gradients() {
    gradcheck("relu", &[&[4, 5]], &|g, v| g.relu(v[0]));
    gradcheck("gelu", &[&[4, 5]], &|g, v| {
        let wide = g.scale(v[0], 3.0)?; // cover the tails too
        g.gelu(wide)
    });
    gradcheck("tanh", &[&[4, 5]], &|g, v| g.tanh(v[0]));
}

#[test]
fn softmax_and_loss_gradients() {
    gradcheck("softmax", &[&[3, 5]], &|g, v| g.softmax(v[0]));
    gradcheck("log_softmax", &[&[2, 2, 4]], &|g, v| g.log_softmax(v[0]));
    gradcheck("cross_entropy", &[&[4, 3]], &|g, v| g.cross_entropy(v[0], &[2, 0, 1, 2]));
}

#[test]
fn layer_norm_gradients() {
    gradcheck("layer_norm", &[&[3, 6], &[6], &[6]], &|g, v| g.layer_norm(v[0], v[1], v[2], 1e-5));
    gradcheck("layer_norm 3-D", &[&[2, 2, 4], &[4], &[4]], &|g, v| {
        g.layer_norm(v[0], v[1], v[2], 1e-5)
    });
}

#[test]
fn reduction_gradients() {
    gradcheck("sum", &[&[3, 4]], &|g, v| g.sum(v[0]));
    gradcheck("mean", &[&[3, 4]], &|g, v| g.mean(v[0]));
    gradcheck("sum_axis 0", &[&[3, 4]], &|g, v| g.sum_axis(v[0], 0));
    gradcheck("sum_axis middle", &[&[2, 3, 4]], &|g, v| g.sum_axis(v[0], 1));
    gradcheck("mean_axis last", &[&[2, 3, 4]], &|g, v| g.mean_axis(v[0], 2));
}

#[test]
fn shape_op_gradients() {
    gradcheck("transpose", &[&[3, 4]], &|g, v| g.transpose(v[0]));
    gradcheck("transpose batched", &[&[2, 3, 4]], &|g, v| g.transpose(v[0]));
    gradcheck("reshape", &[&[3, 4]], &|g, v| g.reshape(v[0], &[2, 6]));
    gradcheck("embedding with repeated ids", &[&[5, 3]], &|g, v| g.embedding(v[0], &[4, 0, 4, 2]));
    gradcheck("dropout", &[&[4, 6]], &|g, v| g.dropout(v[0], 0.3, &mut Rng::new(5)));
}

#[test]
fn composed_mlp_loss_gradients() {
    // LayerNorm -> Linear -> GELU -> Linear -> Tanh -> Linear -> cross-entropy.
    let shapes: &[&[usize]] = &[&[4, 5], &[5], &[5], &[6, 5], &[6], &[6, 6], &[6], &[3, 6], &[3]];
    gradcheck("mlp", shapes, &|g, v| {
        let x = g.layer_norm(v[0], v[1], v[2], 1e-5)?;
        let h = g.linear(x, v[3], Some(v[4]))?;
        let h = g.gelu(h)?;
        let h = g.linear(h, v[5], Some(v[6]))?;
        let h = g.tanh(h)?;
        let logits = g.linear(h, v[7], Some(v[8]))?;
        g.cross_entropy(logits, &[0, 2, 1, 1])
    });
}

#[test]
fn cross_entropy_matches_a_hand_computed_value_and_is_stable() {
    let mut g = Graph::new();
    // Huge logits would overflow a naive exp; the fused form stays finite.
    let logits =
        g.input(&Tensor::from_vec(vec![1000.0, 0.0, 0.0, 1.0, 2.0, 3.0], &[2, 3]).unwrap());
    let loss = g.cross_entropy(logits, &[0, 1]).unwrap();
    // Row 0: ~0. Row 1: log(e^1+e^2+e^3) - 2 = 1.4076059.
    let want = (0.0 + ((1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 2.0)) / 2.0;
    assert!((f64::from(g.value(loss)[0]) - want).abs() < 1e-6, "{:?}", g.value(loss));
}

#[test]
fn errors_name_the_operation_and_the_shapes() {
    let mut g = Graph::new();
    let a = g.input(&Tensor::zeros(&[2, 3]));
    let b = g.input(&Tensor::zeros(&[2, 3]));
    let err = g.matmul(a, b).unwrap_err();
    assert_eq!(err.to_string(), "matmul: shapes [2, 3] and [2, 3] are incompatible");
    let c = g.input(&Tensor::zeros(&[4]));
    assert_eq!(g.add(a, c).unwrap_err().to_string(), "add: shapes [2, 3] and [4] are incompatible");
    let err = g.cross_entropy(a, &[0, 3]).unwrap_err();
    assert_eq!(err.to_string(), "cross_entropy: entry 1 is 3, outside 0..3");
    assert!(matches!(g.backward(a), Err(TensorError::NotScalar { .. })));
    assert!(matches!(g.sum_axis(a, 2), Err(TensorError::Axis { .. })));
    assert!(matches!(g.embedding(a, &[2]), Err(TensorError::OutOfRange { .. })));
}

#[test]
fn vars_from_a_cleared_or_other_graph_are_rejected() {
    let mut g = Graph::new();
    let a = g.input(&Tensor::zeros(&[2]));
    let mut other = Graph::new();
    assert!(matches!(other.relu(a), Err(TensorError::ForeignVar { .. })));
    g.clear();
    let _ = g.input(&Tensor::zeros(&[2]));
    assert!(matches!(g.relu(a), Err(TensorError::ForeignVar { .. })));
}

#[test]
fn reused_buffers_give_identical_gradients_step_after_step() {
    // Pooled buffers must come back zeroed: a second identical step must
    // produce exactly the first step's gradients, not twice them.
    let xs = inputs(&[&[4, 3], &[2, 3], &[2]], 3);
    let mut g = Graph::new();
    let mut previous: Option<Vec<Vec<f32>>> = None;
    for _ in 0..3 {
        let x = g.input(&xs[0]);
        let w = g.param(&xs[1]);
        let b = g.param(&xs[2]);
        let y = g.linear(x, w, Some(b)).unwrap();
        let loss = g.cross_entropy(y, &[0, 1, 1, 0]).unwrap();
        let grads = g.backward(loss).unwrap();
        let now = vec![grads.get(w).unwrap().to_vec(), grads.get(b).unwrap().to_vec()];
        if let Some(prev) = &previous {
            assert_eq!(prev, &now);
        }
        previous = Some(now);
        g.recycle(grads);
        g.clear();
    }
}

#[test]
fn unused_parameters_get_zero_gradients_and_constants_none() {
    let mut g = Graph::new();
    let x = g.input(&Tensor::full(&[3], 2.0));
    let used = g.param(&Tensor::full(&[3], 1.0));
    let unused = g.param(&Tensor::full(&[2], 1.0));
    let y = g.mul(x, used).unwrap();
    let loss = g.sum(y).unwrap();
    let grads = g.backward(loss).unwrap();
    assert_eq!(grads.get(used).unwrap(), &[2.0, 2.0, 2.0]);
    assert_eq!(grads.get(unused).unwrap(), &[0.0, 0.0]);
    assert!(grads.get(x).is_none());
}
