//! zbmd's half of the PyTorch numerics check (`benches/torch/run.sh`).
//!
//! Builds the `[64, 128, 10]` MLP from a seed, writes its initial weights
//! (`init.safetensors`, PyTorch names) and the batches it trains on
//! (`batches.safetensors`: `features` F32 `[steps, 64, 64]`, the UCI digits
//! scaled to [0, 1], and `labels` I64 `[steps, 64]`), runs one SGD step
//! (lr 0.1, momentum 0.9) per batch, writes the final weights
//! (`final.safetensors`) and prints the loss of every step as JSON.
//! `benches/torch/parity.py` replays the same steps in PyTorch from those
//! files and compares.
//!
//! The batches are the first `steps` of an unshuffled loader that drops each
//! epoch's short last batch, so every step sees 64 rows (28 batches an epoch).
//!
//! ```text
//! cargo run --release -p zbmd-ml --example torch_parity -- --seed 7 --steps 100 --out DIR
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use zbmd_ml::data::{DataLoader, Normalize, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::optim::{Optimizer, Sgd, SgdConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::Graph;

/// Rows per batch, as in the PyTorch script.
const BATCH: usize = 64;
/// The model, as `Sequential::from_spec` reads it.
const SPEC: &str = "[64, 128, 10]";
/// The most steps the check may ask for: each step's batch is written to
/// `batches.safetensors` (16 KiB a step), so this bounds that file at 16 MiB.
const STEPS_MAX: usize = 1000;

struct Args {
    seed: u64,
    steps: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seed: 7, steps: 100, out: PathBuf::from("target/torch-parity") };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(|e| format!("--seed {value:?}: {e}"))?,
            "--steps" => {
                args.steps = value.parse().map_err(|e| format!("--steps {value:?}: {e}"))?
            }
            "--out" => args.out = PathBuf::from(value),
            _ => return Err(format!("unknown flag {flag:?} (expected --seed, --steps, --out)")),
        }
    }
    if args.steps == 0 || args.steps > STEPS_MAX {
        return Err(format!("--steps {}: expected 1..={STEPS_MAX}", args.steps));
    }
    Ok(args)
}

fn write_batches(
    path: &Path,
    features: &[f32],
    labels: &[i64],
    steps: usize,
) -> Result<(), Box<dyn Error>> {
    let feature_bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let label_bytes: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("features", TensorView::new(Dtype::F32, vec![steps, BATCH, 64], &feature_bytes)?),
        ("labels", TensorView::new(Dtype::I64, vec![steps, BATCH], &label_bytes)?),
    ];
    std::fs::write(path, safetensors::serialize(views, None)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;

    let mut model = Sequential::from_spec(SPEC, &mut Rng::new(args.seed))?;
    model.export_safetensors(&args.out.join("init.safetensors"))?;

    let mut data = digits();
    data.normalize(Normalize::Divide(16.0));
    let mut loader =
        DataLoader::builder(data).batch_size(BATCH).shuffle(false).drop_last(true).build()?;
    let mut optimizer = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() })?;

    let mut graph = Graph::new();
    let mut losses = Vec::with_capacity(args.steps);
    let mut all_features = Vec::with_capacity(args.steps * BATCH * 64);
    let mut all_labels = Vec::with_capacity(args.steps * BATCH);
    let mut targets = Vec::with_capacity(BATCH);
    for _ in 0..args.steps {
        let batch = loader.next_batch();
        targets.clear();
        targets.extend(batch.labels.iter().map(|&l| l as usize));
        all_features.extend_from_slice(&batch.features);
        all_labels.extend(batch.labels.iter().map(|&l| i64::from(l)));

        graph.clear();
        let x = graph.leaf_from_slice(&batch.features, &[batch.rows, batch.dim], false)?;
        let logits = model.forward(&mut graph, x)?;
        let loss = graph.cross_entropy(logits, &targets)?;
        losses.push(graph.value(loss)[0]);
        let grads = graph.backward(loss)?;
        optimizer.step(&mut model.param_views(&grads)?)?;
        graph.recycle(grads);
    }

    write_batches(&args.out.join("batches.safetensors"), &all_features, &all_labels, args.steps)?;
    model.export_safetensors(&args.out.join("final.safetensors"))?;
    let report = serde_json::json!({
        "seed": args.seed,
        "spec": SPEC,
        "batch": BATCH,
        "optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.9},
        "losses": losses,
    });
    println!("{report}");
    Ok(())
}
