//! The pieces of zbmd-ml without the supervisor: a model from a spec, the
//! autodiff graph, an optimizer, a resumable data loader and an atomic
//! checkpoint, in a loop you write yourself.
//!
//! Run with `cargo run --release -p zbmd-ml --example custom_training_loop`.

use zbmd_ml::checkpoint::{Checkpoint, CheckpointStore, NamedArray};
use zbmd_ml::data::{DataLoader, Normalize, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::optim::{AdamConfig, OptimizerConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut data = digits();
    data.normalize(Normalize::Divide(16.0));
    let (train, test) = data.split(0.2, 7)?;
    let mut model = Sequential::from_spec("[64, 64, 10]", &mut Rng::new(7))?;
    let mut optimizer =
        OptimizerConfig::Adam(AdamConfig { lr: 3e-3, ..AdamConfig::default() }).build()?;
    let mut loader = DataLoader::builder(train).batch_size(32).seed(7).build()?;
    let mut graph = Graph::new();

    for step in 1..=300u64 {
        let batch = loader.next_batch();
        graph.clear();
        let x = graph.input(&Tensor::from_vec(batch.features, &[batch.rows, batch.dim])?);
        let logits = model.forward(&mut graph, x)?;
        let targets: Vec<usize> = batch.labels.iter().map(|&label| label as usize).collect();
        let loss = graph.cross_entropy(logits, &targets)?;
        let loss_value = graph.value(loss)[0];
        let grads = graph.backward(loss)?;
        optimizer.step(&mut model.param_views(&grads)?)?;
        graph.recycle(grads);
        if step % 100 == 0 {
            println!("step {step}: loss {loss_value:.4}");
        }
    }

    // Held-out accuracy.
    model.set_training(false);
    graph.clear();
    let x = graph.input(&Tensor::from_vec(test.features.clone(), &[test.len(), test.dim])?);
    let logits = model.forward(&mut graph, x)?;
    let classes = 10;
    let correct = graph
        .value(logits)
        .chunks_exact(classes)
        .zip(&test.labels)
        .filter(|(row, label)| {
            let best = (0..classes).fold(0, |best, i| if row[i] > row[best] { i } else { best });
            best == **label as usize
        })
        .count();
    println!("held-out accuracy: {:.1}%", 100.0 * correct as f64 / test.len() as f64);

    // An atomic, checksummed checkpoint of the parameters and where the
    // loader stands; `latest_valid` would skip it if it were corrupt.
    let dir = std::env::temp_dir().join(format!("zbmd-custom-loop-{}", std::process::id()));
    let store = CheckpointStore::open(&dir, 2)?;
    let tensors = model
        .parameters()
        .into_iter()
        .map(|(name, tensor)| NamedArray::new(name, tensor.shape().to_vec(), tensor.to_vec_f32()))
        .collect();
    let path = store.save(&Checkpoint {
        step: 300,
        tensors,
        loader: loader.position(),
        ..Checkpoint::default()
    })?;
    let recovered = store.latest_valid()?.found.expect("the checkpoint just written");
    println!("checkpoint {} holds step {}", path.display(), recovered.0.step);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
