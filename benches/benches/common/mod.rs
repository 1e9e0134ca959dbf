//! The training step that `train_step.rs` sets beside PyTorch's and
//! `train_offload.rs` runs with its products in different places: the
//! batches and the trainer, shared so that both measure the same step.

use std::sync::Arc;

use zbmd_ml::data::{DataLoader, Normalize, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::optim::{Optimizer, Sgd, SgdConfig};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, MatmulBackend};

/// Rows per batch.
pub const BATCH: usize = 64;

/// One batch, ready to feed: features `[BATCH, 64]` and class indices.
pub struct Prepared {
    pub features: Vec<f32>,
    pub targets: Vec<usize>,
}

/// The full batches of one unshuffled epoch over the digits scaled to [0, 1].
pub fn batches() -> Vec<Prepared> {
    let mut data = digits();
    data.normalize(Normalize::Divide(16.0));
    let mut loader = DataLoader::builder(data)
        .batch_size(BATCH)
        .shuffle(false)
        .drop_last(true)
        .build()
        .expect("the digits form batches of 64");
    (0..loader.batches_per_epoch())
        .map(|_| {
            let batch = loader.next_batch();
            Prepared {
                features: batch.features,
                targets: batch.labels.iter().map(|&l| l as usize).collect(),
            }
        })
        .collect()
}

/// The `[64, 128, 10]` MLP, SGD (lr 0.1, momentum 0.9) and the tape that
/// persist across steps; the tape's products run where `backend` says
/// (`None`: in place, through the `gemm` crate).
pub struct Trainer {
    model: Sequential,
    optimizer: Sgd,
    graph: Graph,
}

impl Trainer {
    pub fn new(backend: Option<Arc<dyn MatmulBackend>>) -> Trainer {
        let model = Sequential::from_spec("[64, 128, 10]", &mut Rng::new(7)).expect("valid spec");
        let optimizer = Sgd::new(SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() })
            .expect("valid SGD settings");
        let mut graph = Graph::new();
        graph.set_matmul_backend(backend);
        Trainer { model, optimizer, graph }
    }

    /// Forward, loss, backward and update on one batch; returns the loss.
    pub fn step(&mut self, batch: &Prepared) -> f32 {
        self.graph.clear();
        let x =
            self.graph.leaf_from_slice(&batch.features, &[BATCH, 64], false).expect("batch shape");
        let logits = self.model.forward(&mut self.graph, x).expect("forward");
        let loss = self.graph.cross_entropy(logits, &batch.targets).expect("cross-entropy");
        let loss_value = self.graph.value(loss)[0];
        let grads = self.graph.backward(loss).expect("backward");
        let mut views = self.model.param_views(&grads).expect("gradients of this forward pass");
        self.optimizer.step(&mut views).expect("SGD step");
        drop(views);
        self.graph.recycle(grads);
        loss_value
    }
}
