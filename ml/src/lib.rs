//! zbmd-ml: tensors, reverse-mode autodiff, layers, optimizers, data
//! loaders and checkpoints, and a training run that survives crashes and
//! device faults without losing or repeating a step.
//!
//! The pieces work on their own, in a loop you write: a [`Tensor`] holds
//! values, a [`Graph`] records what is computed from them and differentiates
//! it, and an [`Optimizer`] updates parameters from the gradients, formula
//! for formula as PyTorch does. Everything computes on the host in `f32`,
//! single-threaded (a shard runs it), with matrix products through `gemm`
//! or, optionally, on a zbmd-gpu device. [`train::train`] puts the same
//! pieces under an OTP supervision tree: one actor each for the model, the
//! optimizer, the data loader, the checkpointer and the metrics, and a
//! driver that commits every step so that a crash anywhere is recovered
//! bit-identically.
//!
//! # A tensor, its gradient, an optimizer step
//!
//! ```
//! use zbmd_ml::optim::{Optimizer, ParamView, Sgd, SgdConfig};
//! use zbmd_ml::tensor::{Graph, Tensor};
//!
//! // Fit w in y = w * x to one example, x = 2 and y = 6: w goes to 3.
//! let mut w = Tensor::from_vec(vec![0.5], &[1])?;
//! let (x, y) = (Tensor::from_vec(vec![2.0], &[1])?, Tensor::from_vec(vec![6.0], &[1])?);
//! let mut sgd = Sgd::new(SgdConfig { lr: 0.05, ..SgdConfig::default() })?;
//! let mut graph = Graph::new();
//! for _ in 0..50 {
//!     // Each step records its graph anew; cleared, it reuses last step's buffers.
//!     graph.clear();
//!     let (wv, xv, yv) = (graph.param(&w), graph.input(&x), graph.input(&y));
//!     let prediction = graph.mul(wv, xv)?;
//!     let error = graph.sub(prediction, yv)?;
//!     let squared = graph.mul(error, error)?;
//!     let loss = graph.mean(squared)?;
//!     let grads = graph.backward(loss)?;
//!     let grad = grads.get(wv).expect("w is trainable");
//!     let value = w.as_f32_slice_mut().expect("w is a host f32 tensor");
//!     sgd.step(&mut [ParamView { name: "w", value, grad }])?;
//!     graph.recycle(grads);
//! }
//! assert!((w.get(&[0])? - 3.0).abs() < 1e-3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A model is a [`Sequential`](nn::Sequential) built from a spec
//! (`"[64, 128, 10]"`, or TOML); its `forward` records its parameters on the
//! graph and its `param_views` pairs them with their gradients for the
//! optimizer, as the repository's `examples/custom_training_loop.rs` does
//! with a data loader and a checkpoint.
//!
//! # The modules
//!
//! - [`tensor`]: [`Tensor`] (shapes, strided views, `f16`/`bf16` storage,
//!   device buffers) and the autodiff tape, [`Graph`].
//! - [`nn`]: layers and [`Sequential`](nn::Sequential) models, with
//!   PyTorch's parameter names and safetensors files.
//! - [`optim`]: SGD, Adam and AdamW, learning-rate schedules, gradient
//!   accumulation, and optimizer state that saves and restores exactly.
//! - [`data`]: IDX (MNIST) and CSV loaders, the embedded UCI digits, and a
//!   seeded, resumable [`DataLoader`](data::DataLoader).
//! - [`checkpoint`]: checksummed checkpoint files written atomically, and a
//!   store that resumes from the newest valid one.
//! - [`rng`]: the crate's one seeded generator, whose state a checkpoint
//!   holds.
//! - [`train`]: training under supervision ([`train::train`], and
//!   `zbmd-node train` on the command line).
//!
//! # Where to go next
//!
//! `docs/training.md` in the repository is the design of supervised
//! training: the tree and why it is `rest_for_one`, how a step is committed
//! and replayed, and what a checkpoint must hold. The examples run as
//! `cargo run --release -p zbmd-ml --example <name>`: `train_mlp` (a
//! supervised run with a crash of every actor and a lost device injected),
//! `custom_training_loop` (the pieces without the supervisor) and
//! `torch_parity` (zbmd's half of the check against PyTorch's numerics,
//! `benches/torch/run.sh`).
//!
//! [`Tensor`]: tensor::Tensor
//! [`Graph`]: tensor::Graph
//! [`Optimizer`]: optim::Optimizer

pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod tensor;
pub mod train;
