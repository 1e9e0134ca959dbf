//! zbmd-ml: tensors, autodiff, layers, optimizers, data loaders and
//! checkpoints for training under supervision.

pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod tensor;
pub mod train;
