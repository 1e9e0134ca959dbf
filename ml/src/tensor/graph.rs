//! The tape: a [`Graph`] records each operation as a node holding its value,
//! and [`Graph::backward`] walks the nodes in reverse order accumulating
//! gradients (reverse-mode automatic differentiation).
//!
//! This file holds the tape itself: [`Var`], the nodes and what each one
//! records ([`Op`]), leaves, the buffer pool and where matrix products run.
//! The operations that record nodes are in `forward.rs`, one method per
//! operation; their derivatives are in `backward.rs`, one function per op
//! family behind a dispatch that reads like a table.
//!
//! Buffers are pooled: [`Graph::clear`] and [`Graph::recycle`] hand node
//! values and gradients back, and the next step's nodes take them in the
//! same order, so a training loop that rebuilds the same graph each step
//! stops allocating element buffers after its first step.
//!
//! Matrix products (forward `matmul` and `linear`, and their four backward
//! products) run on the host through `gemm`, or through a
//! [`MatmulBackend`] set with [`Graph::set_matmul_backend`].

mod backward;
mod forward;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::device::{MatmulBackend, Product};
use super::kernels::{self, Mat};
use super::{Tensor, TensorError};

/// Source of tape ids: each graph, and each [`Graph::clear`], takes a fresh
/// one, so a [`Var`] from elsewhere is detected rather than misread.
static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);

fn fresh_tape() -> u64 {
    NEXT_TAPE.fetch_add(1, Ordering::Relaxed)
}

/// A value recorded on a [`Graph`]: a cheap handle (tape id and index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var {
    tape: u64,
    index: usize,
}

impl Var {
    /// The position of this value on its tape.
    pub fn index(self) -> usize {
        self.index
    }
}

/// How a node was computed; indices name earlier nodes.
#[derive(Debug)]
enum Op {
    Leaf,
    MatMul {
        a: usize,
        b: usize,
        m: usize,
        k: usize,
        n: usize,
    },
    Linear {
        x: usize,
        w: usize,
        bias: Option<usize>,
        m: usize,
        k: usize,
        n: usize,
    },
    Add {
        a: usize,
        b: usize,
    },
    Sub {
        a: usize,
        b: usize,
    },
    Mul {
        a: usize,
        b: usize,
    },
    Scale {
        a: usize,
        factor: f32,
    },
    Relu {
        a: usize,
    },
    Gelu {
        a: usize,
    },
    Tanh {
        a: usize,
    },
    Softmax {
        a: usize,
    },
    LogSoftmax {
        a: usize,
    },
    /// `aux` holds the softmax probabilities.
    CrossEntropy {
        logits: usize,
        targets: Vec<usize>,
    },
    /// `aux` holds (mean, 1/std) per row.
    LayerNorm {
        x: usize,
        gamma: usize,
        beta: usize,
    },
    SumAxis {
        a: usize,
        outer: usize,
        len: usize,
        inner: usize,
        factor: f32,
    },
    Transpose {
        a: usize,
        rows: usize,
        cols: usize,
    },
    Reshape {
        a: usize,
    },
    Embedding {
        table: usize,
        ids: Vec<usize>,
    },
    /// `aux` holds the multiplier per element.
    Mask {
        a: usize,
    },
}

#[derive(Debug)]
struct Node {
    op: Op,
    shape: Vec<usize>,
    value: Vec<f32>,
    aux: Vec<f32>,
    requires_grad: bool,
}

/// A tape of operations on [`Var`]s, with reverse-mode differentiation.
#[derive(Debug)]
pub struct Graph {
    tape: u64,
    nodes: Vec<Node>,
    pool: Vec<Vec<f32>>,
    backend: Backend,
}

/// Where the graph's matrix products run: `None` is the host's `gemm`.
#[derive(Clone, Default)]
struct Backend(Option<Arc<dyn MatmulBackend>>);

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("host gemm"),
            Some(backend) => f.write_str(&backend.describe()),
        }
    }
}

/// One matrix product, `dst[m x n] = (accumulate ? dst : 0) + lhs[m x k] *
/// rhs[k x n]`, on the host or on `backend`. A backend takes row-major
/// operands only, so a strided one (a transposed view) is first copied into
/// a scratch buffer from `pool`, which gets it back afterwards: once warm,
/// no step allocates for it.
#[allow(clippy::too_many_arguments)] // the product's operands, sizes, and where it runs
fn product(
    backend: &Backend,
    pool: &mut Vec<Vec<f32>>,
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), TensorError> {
    let Some(backend) = &backend.0 else {
        kernels::matmul(dst, accumulate, lhs, rhs, m, n, k);
        return Ok(());
    };
    let copy = |pool: &mut Vec<Vec<f32>>, mat: Mat<'_>, rows: usize, cols: usize| {
        let mut buffer = take_buffer(pool, rows * cols);
        mat.copy_into(&mut buffer, rows, cols);
        buffer
    };
    let lhs_copy = (!lhs.is_row_major(m, k)).then(|| copy(pool, lhs, m, k));
    let rhs_copy = (!rhs.is_row_major(k, n)).then(|| copy(pool, rhs, k, n));
    let a = lhs_copy.as_deref().unwrap_or(&lhs.data[..m * k]);
    let b = rhs_copy.as_deref().unwrap_or(&rhs.data[..k * n]);
    let result =
        Product::new(a, b, (m, n, k)).and_then(|product| backend.matmul(product, dst, accumulate));
    // Back in the reverse order of taking, so the next step pops the same ones.
    pool.extend(rhs_copy);
    pool.extend(lhs_copy);
    result
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

/// Gradients from one [`Graph::backward`]: one buffer per node that the loss
/// depends on (and one per trainable leaf, zero where the loss ignores it).
#[derive(Debug)]
pub struct Gradients {
    tape: u64,
    grads: Vec<Option<Vec<f32>>>,
}

impl Gradients {
    /// The gradient of the loss with respect to `var`, or `None` when `var`
    /// is from another tape or the loss does not depend on it through
    /// trainable values.
    pub fn get(&self, var: Var) -> Option<&[f32]> {
        if var.tape != self.tape {
            return None;
        }
        self.grads.get(var.index)?.as_deref()
    }

    /// Whether these gradients came from the tape `var` was recorded on.
    pub fn belongs(&self, var: Var) -> bool {
        var.tape == self.tape
    }
}

fn take_buffer(pool: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut buffer = pool.pop().unwrap_or_default();
    buffer.clear();
    buffer.resize(len, 0.0);
    buffer
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph { tape: fresh_tape(), nodes: Vec::new(), pool: Vec::new(), backend: Backend(None) }
    }

    /// Sends every matrix product, forward and backward, to `backend`
    /// (`None`: back to the host's `gemm`, bit-for-bit today's results).
    /// Its failures come out of [`matmul`](Self::matmul),
    /// [`linear`](Self::linear) and [`backward`](Self::backward).
    pub fn set_matmul_backend(&mut self, backend: Option<Arc<dyn MatmulBackend>>) {
        self.backend = Backend(backend);
    }

    /// Where the matrix products run, in words ("host gemm", or the
    /// backend's [`describe`](MatmulBackend::describe)).
    pub fn matmul_backend(&self) -> String {
        format!("{:?}", self.backend)
    }

    /// Forgets every node (their buffers return to the pool for the next
    /// step); [`Var`]s recorded before become invalid.
    pub fn clear(&mut self) {
        // Reverse order so the next step, popping, gets node 0's buffer first.
        for node in self.nodes.drain(..).rev() {
            self.pool.push(node.aux);
            self.pool.push(node.value);
        }
        self.tape = fresh_tape();
    }

    /// Returns gradient buffers to the pool for reuse.
    pub fn recycle(&mut self, gradients: Gradients) {
        self.pool.extend(gradients.grads.into_iter().rev().flatten());
    }

    /// The number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, var: Var, op: &'static str) -> Result<&Node, TensorError> {
        if var.tape != self.tape || var.index >= self.nodes.len() {
            return Err(TensorError::ForeignVar { op, index: var.index });
        }
        Ok(&self.nodes[var.index])
    }

    /// The value of `var`, row-major. Panics if `var` is from another tape.
    pub fn value(&self, var: Var) -> &[f32] {
        &self.node(var, "value").expect("Graph::value: foreign Var").value
    }

    /// The shape of `var`. Panics if `var` is from another tape.
    pub fn shape(&self, var: Var) -> &[usize] {
        &self.node(var, "shape").expect("Graph::shape: foreign Var").shape
    }

    /// A copy of `var`'s value as a [`Tensor`].
    pub fn tensor(&self, var: Var) -> Result<Tensor, TensorError> {
        let node = self.node(var, "tensor")?;
        Tensor::from_vec(node.value.clone(), &node.shape)
    }

    fn push(
        &mut self,
        op: Op,
        shape: Vec<usize>,
        value: Vec<f32>,
        aux: Vec<f32>,
        requires_grad: bool,
    ) -> Var {
        debug_assert_eq!(value.len(), shape.iter().product::<usize>());
        self.nodes.push(Node { op, shape, value, aux, requires_grad });
        Var { tape: self.tape, index: self.nodes.len() - 1 }
    }

    fn buffer(&mut self, len: usize) -> Vec<f32> {
        take_buffer(&mut self.pool, len)
    }

    fn leaf(&mut self, tensor: &Tensor, requires_grad: bool, op: &'static str) -> Var {
        if let Some(device) = tensor.device() {
            // The tape computes on the host; an implicit download here would
            // hide a transfer (and its failure) inside an infallible call.
            panic!("{}", TensorError::OnDevice { op, device: device.to_string() });
        }
        let mut value = self.buffer(0);
        match tensor.as_f32_slice() {
            Some(slice) => value.extend_from_slice(slice),
            None => value.extend(tensor.to_vec_f32()),
        }
        let aux = self.buffer(0);
        self.push(Op::Leaf, tensor.shape().to_vec(), value, aux, requires_grad)
    }

    /// Records a constant (no gradient is computed for it).
    ///
    /// # Panics
    ///
    /// On a device tensor: the graph computes on the host, so move it with
    /// [`Tensor::to_host`] first.
    pub fn input(&mut self, tensor: &Tensor) -> Var {
        self.leaf(tensor, false, "Graph::input")
    }

    /// Records a trainable leaf: [`backward`](Self::backward) computes its
    /// gradient, summed over every use.
    ///
    /// # Panics
    ///
    /// On a device tensor, as [`input`](Self::input).
    pub fn param(&mut self, tensor: &Tensor) -> Var {
        self.leaf(tensor, true, "Graph::param")
    }

    /// Records a leaf from a slice, trainable or not.
    pub fn leaf_from_slice(
        &mut self,
        values: &[f32],
        shape: &[usize],
        requires_grad: bool,
    ) -> Result<Var, TensorError> {
        let expected = super::checked_numel("leaf_from_slice", shape)?;
        if expected != values.len() {
            return Err(TensorError::DataLength {
                op: "leaf_from_slice",
                shape: shape.to_vec(),
                expected,
                actual: values.len(),
            });
        }
        let mut value = self.buffer(0);
        value.extend_from_slice(values);
        let aux = self.buffer(0);
        Ok(self.push(Op::Leaf, shape.to_vec(), value, aux, requires_grad))
    }

    fn grad_flag(&self, inputs: &[usize]) -> bool {
        inputs.iter().any(|&i| self.nodes[i].requires_grad)
    }

    /// Records `op`'s node with no auxiliary values, trainable when any of
    /// `inputs` is.
    fn finish(
        &mut self,
        op: Op,
        shape: Vec<usize>,
        out: Vec<f32>,
        inputs: &[usize],
    ) -> Result<Var, TensorError> {
        let aux = self.buffer(0);
        let rg = self.grad_flag(inputs);
        Ok(self.push(op, shape, out, aux, rg))
    }
}
