//! The tape: a [`Graph`] records each operation as a node holding its value,
//! and [`Graph::backward`] walks the nodes in reverse order accumulating
//! gradients (reverse-mode automatic differentiation).
//!
//! Buffers are pooled: [`Graph::clear`] and [`Graph::recycle`] hand node
//! values and gradients back, and the next step's nodes take them in the
//! same order, so a training loop that rebuilds the same graph each step
//! stops allocating element buffers after its first step.
//!
//! Matrix products (forward `matmul` and `linear`, and their four backward
//! products) run on the host through `gemm`, or through a
//! [`MatmulBackend`] set with [`Graph::set_matmul_backend`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::device::{MatmulBackend, Product};
use super::kernels::{self, Mat};
use super::{Tensor, TensorError};
use crate::rng::Rng;

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

/// The accumulating gradient buffer of node `i`, created zeroed on first use.
fn grad_of<'g>(
    grads: &'g mut [Option<Vec<f32>>],
    pool: &mut Vec<Vec<f32>>,
    nodes: &[Node],
    i: usize,
) -> &'g mut [f32] {
    grads[i].get_or_insert_with(|| take_buffer(pool, nodes[i].value.len()))
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

    /// Matrix product: `a` of shape `[..., k]` (leading dimensions flattened
    /// into rows) times `b` of shape `[k, n]`, giving `[..., n]`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var, TensorError> {
        let (sa, sb) =
            (self.node(a, "matmul")?.shape.clone(), self.node(b, "matmul")?.shape.clone());
        if sa.len() < 2 || sb.len() != 2 || sa[sa.len() - 1] != sb[0] {
            return Err(TensorError::ShapeMismatch { op: "matmul", left: sa, right: sb });
        }
        let (k, n) = (sb[0], sb[1]);
        // The rows are the leading dimensions' product (not the element
        // count over k, which is 0 whatever the rows when k is 0).
        let m = sa[..sa.len() - 1].iter().product::<usize>();
        let mut shape = sa;
        *shape.last_mut().expect("rank >= 2") = n;
        let mut out = self.buffer(super::checked_numel("matmul", &shape)?);
        let done = product(
            &self.backend,
            &mut self.pool,
            &mut out,
            false,
            Mat::rows(&self.nodes[a.index].value, k),
            Mat::rows(&self.nodes[b.index].value, n),
            m,
            n,
            k,
        );
        if let Err(error) = done {
            self.pool.push(out);
            return Err(error);
        }
        let aux = self.buffer(0);
        let rg = self.grad_flag(&[a.index, b.index]);
        Ok(self.push(Op::MatMul { a: a.index, b: b.index, m, k, n }, shape, out, aux, rg))
    }

    /// PyTorch's `F.linear`: `x [..., in]` times the transpose of `w [out, in]`,
    /// plus `bias [out]` on every row, giving `[..., out]`.
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>) -> Result<Var, TensorError> {
        let (sx, sw) =
            (self.node(x, "linear")?.shape.clone(), self.node(w, "linear")?.shape.clone());
        if sx.is_empty() || sw.len() != 2 || sx[sx.len() - 1] != sw[1] {
            return Err(TensorError::ShapeMismatch { op: "linear", left: sx, right: sw });
        }
        let (n, k) = (sw[0], sw[1]);
        if let Some(b) = bias {
            let sb = &self.node(b, "linear")?.shape;
            if sb.as_slice() != [n] {
                return Err(TensorError::ShapeMismatch {
                    op: "linear (bias)",
                    left: sw,
                    right: sb.clone(),
                });
            }
        }
        let m = sx[..sx.len() - 1].iter().product::<usize>();
        let mut shape = sx;
        *shape.last_mut().expect("rank >= 1") = n;
        let mut out = self.buffer(super::checked_numel("linear", &shape)?);
        if let Some(b) = bias {
            let bv = &self.nodes[b.index].value;
            out.chunks_exact_mut(n.max(1)).for_each(|row| row.copy_from_slice(bv));
        }
        let done = product(
            &self.backend,
            &mut self.pool,
            &mut out,
            bias.is_some(),
            Mat::rows(&self.nodes[x.index].value, k),
            Mat::transposed(&self.nodes[w.index].value, k),
            m,
            n,
            k,
        );
        if let Err(error) = done {
            self.pool.push(out);
            return Err(error);
        }
        let aux = self.buffer(0);
        let mut inputs = vec![x.index, w.index];
        inputs.extend(bias.map(|b| b.index));
        let rg = self.grad_flag(&inputs);
        Ok(self.push(
            Op::Linear { x: x.index, w: w.index, bias: bias.map(|b| b.index), m, k, n },
            shape,
            out,
            aux,
            rg,
        ))
    }

    fn binary(
        &mut self,
        a: Var,
        b: Var,
        op: &'static str,
        f: fn(f32, f32) -> f32,
    ) -> Result<(Vec<usize>, Vec<f32>), TensorError> {
        let (sa, sb) = (&self.node(a, op)?.shape, &self.node(b, op)?.shape);
        let Some(shape) = kernels::broadcast_shape(sa, sb) else {
            return Err(TensorError::ShapeMismatch { op, left: sa.clone(), right: sb.clone() });
        };
        let (sa, sb) = (sa.clone(), sb.clone());
        let mut out = take_buffer(&mut self.pool, super::checked_numel(op, &shape)?);
        let (av, bv) = (&self.nodes[a.index].value, &self.nodes[b.index].value);
        kernels::broadcast_for_each(&shape, &sa, &sb, |o, i, j| {
            out[o] = f(av[i], bv[j]);
        });
        Ok((shape, out))
    }

    /// `a + b` with NumPy broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var, TensorError> {
        let (shape, out) = self.binary(a, b, "add", |x, y| x + y)?;
        self.finish(Op::Add { a: a.index, b: b.index }, shape, out, &[a.index, b.index])
    }

    /// `a - b` with NumPy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var, TensorError> {
        let (shape, out) = self.binary(a, b, "sub", |x, y| x - y)?;
        self.finish(Op::Sub { a: a.index, b: b.index }, shape, out, &[a.index, b.index])
    }

    /// `a * b` elementwise with NumPy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var, TensorError> {
        let (shape, out) = self.binary(a, b, "mul", |x, y| x * y)?;
        self.finish(Op::Mul { a: a.index, b: b.index }, shape, out, &[a.index, b.index])
    }

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

    fn unary(
        &mut self,
        a: Var,
        op_name: &'static str,
        op: Op,
        f: impl Fn(f32) -> f32,
    ) -> Result<Var, TensorError> {
        let shape = self.node(a, op_name)?.shape.clone();
        let mut out = self.buffer(0);
        out.extend(self.nodes[a.index].value.iter().map(|&x| f(x)));
        self.finish(op, shape, out, &[a.index])
    }

    /// `a * factor` for a constant `factor`.
    pub fn scale(&mut self, a: Var, factor: f32) -> Result<Var, TensorError> {
        self.unary(a, "scale", Op::Scale { a: a.index, factor }, |x| x * factor)
    }

    /// `max(a, 0)`; its derivative at 0 is taken as 0, as PyTorch does.
    pub fn relu(&mut self, a: Var) -> Result<Var, TensorError> {
        self.unary(a, "relu", Op::Relu { a: a.index }, |x| x.max(0.0))
    }

    /// Exact GELU, `x * Phi(x)` through the error function (PyTorch's default,
    /// not the tanh approximation).
    pub fn gelu(&mut self, a: Var) -> Result<Var, TensorError> {
        self.unary(a, "gelu", Op::Gelu { a: a.index }, kernels::gelu)
    }

    /// Hyperbolic tangent.
    pub fn tanh(&mut self, a: Var) -> Result<Var, TensorError> {
        self.unary(a, "tanh", Op::Tanh { a: a.index }, f32::tanh)
    }

    fn last_dim(&self, a: Var, op: &'static str) -> Result<(Vec<usize>, usize), TensorError> {
        let shape = self.node(a, op)?.shape.clone();
        match shape.last() {
            Some(&cols) => Ok((shape, cols)),
            None => Err(TensorError::Rank { op, expected: 1, shape }),
        }
    }

    /// Softmax over the last dimension.
    pub fn softmax(&mut self, a: Var) -> Result<Var, TensorError> {
        self.softmax_op(a, false)
    }

    /// Log-softmax over the last dimension, computed stably (max subtracted).
    pub fn log_softmax(&mut self, a: Var) -> Result<Var, TensorError> {
        self.softmax_op(a, true)
    }

    fn softmax_op(&mut self, a: Var, log: bool) -> Result<Var, TensorError> {
        let (shape, cols) = self.last_dim(a, if log { "log_softmax" } else { "softmax" })?;
        let mut out = self.buffer(self.nodes[a.index].value.len());
        kernels::softmax_rows(&self.nodes[a.index].value, &mut out, cols, log);
        let op = if log { Op::LogSoftmax { a: a.index } } else { Op::Softmax { a: a.index } };
        self.finish(op, shape, out, &[a.index])
    }

    /// Mean cross-entropy of `logits [batch, classes]` against integer class
    /// `targets` (one per row), fused with log-softmax for stability. Returns
    /// a scalar (shape `[]`).
    pub fn cross_entropy(&mut self, logits: Var, targets: &[usize]) -> Result<Var, TensorError> {
        let shape = self.node(logits, "cross_entropy")?.shape.clone();
        if shape.len() != 2 || shape[0] != targets.len() {
            return Err(TensorError::ShapeMismatch {
                op: "cross_entropy",
                left: shape,
                right: vec![targets.len()],
            });
        }
        let classes = shape[1];
        if let Some((position, &value)) = targets.iter().enumerate().find(|(_, t)| **t >= classes) {
            return Err(TensorError::OutOfRange {
                op: "cross_entropy",
                position,
                value,
                bound: classes,
            });
        }
        let mut log_probs = self.buffer(shape[0] * classes);
        kernels::softmax_rows(&self.nodes[logits.index].value, &mut log_probs, classes, true);
        let total: f64 =
            targets.iter().enumerate().map(|(r, &t)| -f64::from(log_probs[r * classes + t])).sum();
        log_probs.iter_mut().for_each(|p| *p = p.exp());
        let mut out = self.buffer(1);
        out[0] = (total / targets.len().max(1) as f64) as f32;
        let rg = self.grad_flag(&[logits.index]);
        Ok(self.push(
            Op::CrossEntropy { logits: logits.index, targets: targets.to_vec() },
            vec![],
            out,
            log_probs,
            rg,
        ))
    }

    /// Layer normalisation over the last dimension (biased variance, as
    /// PyTorch), then `* gamma + beta` with `gamma`, `beta` of shape `[last]`.
    pub fn layer_norm(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        eps: f32,
    ) -> Result<Var, TensorError> {
        let (shape, cols) = self.last_dim(x, "layer_norm")?;
        for p in [gamma, beta] {
            let sp = &self.node(p, "layer_norm")?.shape;
            if sp.as_slice() != [cols] {
                return Err(TensorError::ShapeMismatch {
                    op: "layer_norm (affine)",
                    left: shape,
                    right: sp.clone(),
                });
            }
        }
        let rows = self.nodes[x.index].value.len().checked_div(cols).unwrap_or(0);
        let mut out = self.buffer(rows * cols);
        let mut stats = self.buffer(2 * rows);
        let (xv, gv, bv) = (
            &self.nodes[x.index].value,
            &self.nodes[gamma.index].value,
            &self.nodes[beta.index].value,
        );
        for r in 0..rows {
            let row = &xv[r * cols..(r + 1) * cols];
            let mean = row.iter().sum::<f32>() / cols as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            stats[2 * r] = mean;
            stats[2 * r + 1] = rstd;
            for j in 0..cols {
                out[r * cols + j] = (row[j] - mean) * rstd * gv[j] + bv[j];
            }
        }
        let rg = self.grad_flag(&[x.index, gamma.index, beta.index]);
        Ok(self.push(
            Op::LayerNorm { x: x.index, gamma: gamma.index, beta: beta.index },
            shape,
            out,
            stats,
            rg,
        ))
    }

    /// The sum of all elements, as a scalar (shape `[]`).
    pub fn sum(&mut self, a: Var) -> Result<Var, TensorError> {
        let len = self.node(a, "sum")?.value.len();
        self.reduce(a, 1, len, 1, 1.0, vec![])
    }

    /// The mean of all elements, as a scalar (shape `[]`).
    pub fn mean(&mut self, a: Var) -> Result<Var, TensorError> {
        let len = self.node(a, "mean")?.value.len();
        self.reduce(a, 1, len, 1, 1.0 / len.max(1) as f32, vec![])
    }

    /// The sum along `axis`, which is removed from the shape.
    pub fn sum_axis(&mut self, a: Var, axis: usize) -> Result<Var, TensorError> {
        self.axis_reduce(a, axis, "sum_axis", false)
    }

    /// The mean along `axis`, which is removed from the shape.
    pub fn mean_axis(&mut self, a: Var, axis: usize) -> Result<Var, TensorError> {
        self.axis_reduce(a, axis, "mean_axis", true)
    }

    fn axis_reduce(
        &mut self,
        a: Var,
        axis: usize,
        op: &'static str,
        mean: bool,
    ) -> Result<Var, TensorError> {
        let shape = self.node(a, op)?.shape.clone();
        if axis >= shape.len() {
            return Err(TensorError::Axis { op, axis, shape });
        }
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        let len = shape[axis];
        let factor = if mean { 1.0 / len.max(1) as f32 } else { 1.0 };
        let mut out_shape = shape;
        out_shape.remove(axis);
        self.reduce(a, outer, len, inner, factor, out_shape)
    }

    fn reduce(
        &mut self,
        a: Var,
        outer: usize,
        len: usize,
        inner: usize,
        factor: f32,
        shape: Vec<usize>,
    ) -> Result<Var, TensorError> {
        let mut out = self.buffer(outer * inner);
        let av = &self.nodes[a.index].value;
        for o in 0..outer {
            for j in 0..len {
                let src = &av[(o * len + j) * inner..(o * len + j + 1) * inner];
                out[o * inner..(o + 1) * inner].iter_mut().zip(src).for_each(|(d, s)| *d += s);
            }
        }
        out.iter_mut().for_each(|d| *d *= factor);
        self.finish(Op::SumAxis { a: a.index, outer, len, inner, factor }, shape, out, &[a.index])
    }

    /// Swaps the last two dimensions (a matrix transpose for each leading
    /// index), copying.
    pub fn transpose(&mut self, a: Var) -> Result<Var, TensorError> {
        let shape = self.node(a, "transpose")?.shape.clone();
        if shape.len() < 2 {
            return Err(TensorError::Rank { op: "transpose", expected: 2, shape });
        }
        let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let mut out = self.buffer(self.nodes[a.index].value.len());
        transpose_into(&self.nodes[a.index].value, &mut out, rows, cols, false);
        let mut new_shape = shape;
        let rank = new_shape.len();
        new_shape.swap(rank - 2, rank - 1);
        self.finish(Op::Transpose { a: a.index, rows, cols }, new_shape, out, &[a.index])
    }

    /// The same elements with a new shape of equal element count.
    pub fn reshape(&mut self, a: Var, shape: &[usize]) -> Result<Var, TensorError> {
        let old = &self.node(a, "reshape")?.shape;
        if old.iter().product::<usize>() != super::checked_numel("reshape", shape)? {
            return Err(TensorError::ShapeMismatch {
                op: "reshape",
                left: old.clone(),
                right: shape.to_vec(),
            });
        }
        let mut out = self.buffer(0);
        out.extend_from_slice(&self.nodes[a.index].value);
        self.finish(Op::Reshape { a: a.index }, shape.to_vec(), out, &[a.index])
    }

    /// Rows `ids` of `table [rows, dim]`, giving `[ids.len(), dim]`.
    pub fn embedding(&mut self, table: Var, ids: &[usize]) -> Result<Var, TensorError> {
        let shape = self.node(table, "embedding")?.shape.clone();
        if shape.len() != 2 {
            return Err(TensorError::Rank { op: "embedding", expected: 2, shape });
        }
        let (rows, dim) = (shape[0], shape[1]);
        if let Some((position, &value)) = ids.iter().enumerate().find(|(_, id)| **id >= rows) {
            return Err(TensorError::OutOfRange { op: "embedding", position, value, bound: rows });
        }
        let mut out = self.buffer(0);
        let tv = &self.nodes[table.index].value;
        ids.iter().for_each(|&id| out.extend_from_slice(&tv[id * dim..(id + 1) * dim]));
        self.finish(
            Op::Embedding { table: table.index, ids: ids.to_vec() },
            vec![ids.len(), dim],
            out,
            &[table.index],
        )
    }

    /// Inverted dropout: each element is zeroed with probability `p` (drawn
    /// from `rng` in row-major order) and the survivors scaled by `1/(1-p)`.
    pub fn dropout(&mut self, a: Var, p: f32, rng: &mut Rng) -> Result<Var, TensorError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(TensorError::InvalidArgument {
                op: "dropout",
                what: format!("probability {p} is outside [0, 1]"),
            });
        }
        let shape = self.node(a, "dropout")?.shape.clone();
        let keep_scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let mut mask = self.buffer(0);
        mask.extend(
            (0..self.nodes[a.index].value.len())
                .map(|_| if rng.next_f32() < p { 0.0 } else { keep_scale }),
        );
        let mut out = self.buffer(0);
        out.extend(self.nodes[a.index].value.iter().zip(&mask).map(|(x, m)| x * m));
        let rg = self.grad_flag(&[a.index]);
        Ok(self.push(Op::Mask { a: a.index }, shape, out, mask, rg))
    }

    /// Reverse-mode differentiation of the scalar `loss` with respect to every
    /// node it depends on. Gradients of a leaf used several times are summed;
    /// trainable leaves the loss ignores get zero gradients.
    pub fn backward(&mut self, loss: Var) -> Result<Gradients, TensorError> {
        let node = self.node(loss, "backward")?;
        if node.value.len() != 1 {
            return Err(TensorError::NotScalar { op: "backward", shape: node.shape.clone() });
        }
        let mut grads: Vec<Option<Vec<f32>>> = Vec::with_capacity(self.nodes.len());
        grads.resize_with(self.nodes.len(), || None);
        let mut seed = take_buffer(&mut self.pool, 1);
        seed[0] = 1.0;
        grads[loss.index] = Some(seed);
        for i in (0..=loss.index).rev() {
            if !self.nodes[i].requires_grad {
                continue;
            }
            let Some(g) = grads[i].take() else { continue };
            let done = backprop(&self.nodes, &self.backend, i, &g, &mut grads, &mut self.pool);
            grads[i] = Some(g);
            if let Err(error) = done {
                // The partial gradients are useless; their buffers are not.
                self.pool.extend(grads.into_iter().rev().flatten());
                return Err(error);
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if matches!(node.op, Op::Leaf) && node.requires_grad && grads[i].is_none() {
                grads[i] = Some(take_buffer(&mut self.pool, node.value.len()));
            }
        }
        Ok(Gradients { tape: self.tape, grads })
    }
}

fn transpose_into(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, accumulate: bool) {
    let block = rows * cols;
    if block == 0 {
        return;
    }
    for (s, d) in src.chunks_exact(block).zip(dst.chunks_exact_mut(block)) {
        for r in 0..rows {
            for c in 0..cols {
                let v = s[r * cols + c];
                let slot = &mut d[c * rows + r];
                *slot = if accumulate { *slot + v } else { v };
            }
        }
    }
}

/// Adds node `i`'s contribution (its gradient `g`) to its inputs' gradients.
/// Only the matrix products can fail (on a backend).
fn backprop(
    nodes: &[Node],
    backend: &Backend,
    i: usize,
    g: &[f32],
    grads: &mut [Option<Vec<f32>>],
    pool: &mut Vec<Vec<f32>>,
) -> Result<(), TensorError> {
    let node = &nodes[i];
    let wants = |j: usize| nodes[j].requires_grad;
    let value = |j: usize| nodes[j].value.as_slice();
    match node.op {
        Op::Leaf => {}
        Op::MatMul { a, b, m, k, n } => {
            if wants(a) {
                // dA += dC * B^T
                let da = grad_of(grads, pool, nodes, a);
                let (lhs, rhs) = (Mat::rows(g, n), Mat::transposed(value(b), n));
                product(backend, pool, da, true, lhs, rhs, m, k, n)?;
            }
            if wants(b) {
                // dB += A^T * dC
                let db = grad_of(grads, pool, nodes, b);
                let (lhs, rhs) = (Mat::transposed(value(a), k), Mat::rows(g, n));
                product(backend, pool, db, true, lhs, rhs, k, n, m)?;
            }
        }
        Op::Linear { x, w, bias, m, k, n } => {
            if wants(x) {
                // dX += dY * W   (W is [n, k])
                let dx = grad_of(grads, pool, nodes, x);
                let (lhs, rhs) = (Mat::rows(g, n), Mat::rows(value(w), k));
                product(backend, pool, dx, true, lhs, rhs, m, k, n)?;
            }
            if wants(w) {
                // dW += dY^T * X
                let dw = grad_of(grads, pool, nodes, w);
                let (lhs, rhs) = (Mat::transposed(g, n), Mat::rows(value(x), k));
                product(backend, pool, dw, true, lhs, rhs, n, k, m)?;
            }
            if let Some(b) = bias.filter(|&b| wants(b)) {
                let db = grad_of(grads, pool, nodes, b);
                g.chunks_exact(n.max(1))
                    .for_each(|row| db.iter_mut().zip(row).for_each(|(d, v)| *d += v));
            }
        }
        Op::Add { a, b } | Op::Sub { a, b } | Op::Mul { a, b } => {
            backprop_binary(nodes, i, g, grads, pool, a, b)
        }
        Op::Scale { a, factor } => {
            let da = grad_of(grads, pool, nodes, a);
            da.iter_mut().zip(g).for_each(|(d, v)| *d += v * factor);
        }
        Op::Relu { a } => {
            let da = grad_of(grads, pool, nodes, a);
            for ((d, v), x) in da.iter_mut().zip(g).zip(value(a)) {
                if *x > 0.0 {
                    *d += v;
                }
            }
        }
        Op::Gelu { a } => {
            let da = grad_of(grads, pool, nodes, a);
            da.iter_mut()
                .zip(g)
                .zip(value(a))
                .for_each(|((d, v), &x)| *d += v * kernels::gelu_grad(x));
        }
        Op::Tanh { a } => {
            let da = grad_of(grads, pool, nodes, a);
            da.iter_mut().zip(g).zip(&node.value).for_each(|((d, v), y)| *d += v * (1.0 - y * y));
        }
        Op::Softmax { a } | Op::LogSoftmax { a } => {
            let cols = *node.shape.last().expect("softmax has rank >= 1");
            let log = matches!(node.op, Op::LogSoftmax { .. });
            let da = grad_of(grads, pool, nodes, a);
            backprop_softmax(da, g, &node.value, cols.max(1), log);
        }
        Op::CrossEntropy { logits, ref targets } => {
            let classes = nodes[logits].shape[1].max(1);
            let scale = g[0] / targets.len().max(1) as f32;
            let dl = grad_of(grads, pool, nodes, logits);
            for (r, (d, p)) in
                dl.chunks_exact_mut(classes).zip(node.aux.chunks_exact(classes)).enumerate()
            {
                d.iter_mut().zip(p).for_each(|(d, p)| *d += scale * p);
                d[targets[r]] -= scale;
            }
        }
        Op::LayerNorm { x, gamma, beta } => {
            backprop_layer_norm(nodes, i, g, grads, pool, x, gamma, beta)
        }
        Op::SumAxis { a, outer, len, inner, factor } => {
            let da = grad_of(grads, pool, nodes, a);
            for o in 0..outer {
                let src = &g[o * inner..(o + 1) * inner];
                for j in 0..len {
                    let dst = &mut da[(o * len + j) * inner..(o * len + j + 1) * inner];
                    dst.iter_mut().zip(src).for_each(|(d, v)| *d += v * factor);
                }
            }
        }
        Op::Transpose { a, rows, cols } => {
            // The output is [cols, rows]; transposing its gradient back.
            transpose_into(g, grad_of(grads, pool, nodes, a), cols, rows, true);
        }
        Op::Reshape { a } => {
            let da = grad_of(grads, pool, nodes, a);
            da.iter_mut().zip(g).for_each(|(d, v)| *d += v);
        }
        Op::Embedding { table, ref ids } => {
            let dim = nodes[table].shape[1];
            let dt = grad_of(grads, pool, nodes, table);
            for (r, &id) in ids.iter().enumerate() {
                let src = &g[r * dim..(r + 1) * dim];
                dt[id * dim..(id + 1) * dim].iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
        Op::Mask { a } => {
            let da = grad_of(grads, pool, nodes, a);
            da.iter_mut().zip(g).zip(&node.aux).for_each(|((d, v), m)| *d += v * m);
        }
    }
    Ok(())
}

fn backprop_binary(
    nodes: &[Node],
    i: usize,
    g: &[f32],
    grads: &mut [Option<Vec<f32>>],
    pool: &mut Vec<Vec<f32>>,
    a: usize,
    b: usize,
) {
    let node = &nodes[i];
    let (sa, sb) = (&nodes[a].shape, &nodes[b].shape);
    let (av, bv) = (&nodes[a].value, &nodes[b].value);
    // One pass per input, so `x * x` (a == b) accumulates both terms.
    if nodes[a].requires_grad {
        let da = grad_of(grads, pool, nodes, a);
        match node.op {
            Op::Mul { .. } => {
                kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, y| da[x] += g[o] * bv[y])
            }
            _ => kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, _| da[x] += g[o]),
        }
    }
    if nodes[b].requires_grad {
        let db = grad_of(grads, pool, nodes, b);
        match node.op {
            Op::Mul { .. } => {
                kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, y| db[y] += g[o] * av[x])
            }
            Op::Sub { .. } => {
                kernels::broadcast_for_each(&node.shape, sa, sb, |o, _, y| db[y] -= g[o])
            }
            _ => kernels::broadcast_for_each(&node.shape, sa, sb, |o, _, y| db[y] += g[o]),
        }
    }
}

fn backprop_softmax(da: &mut [f32], g: &[f32], out: &[f32], cols: usize, log: bool) {
    for ((d, gr), y) in
        da.chunks_exact_mut(cols).zip(g.chunks_exact(cols)).zip(out.chunks_exact(cols))
    {
        if log {
            // y = log p: dx = g - p * sum(g)
            let total: f32 = gr.iter().sum();
            d.iter_mut().zip(gr).zip(y).for_each(|((d, g), y)| *d += g - y.exp() * total);
        } else {
            // y = p: dx = p * (g - sum(g * p))
            let dot: f32 = gr.iter().zip(y).map(|(g, y)| g * y).sum();
            d.iter_mut().zip(gr).zip(y).for_each(|((d, g), y)| *d += y * (g - dot));
        }
    }
}

#[allow(clippy::too_many_arguments)] // the node, its gradient, the tape's buffers and three inputs
fn backprop_layer_norm(
    nodes: &[Node],
    i: usize,
    g: &[f32],
    grads: &mut [Option<Vec<f32>>],
    pool: &mut Vec<Vec<f32>>,
    x: usize,
    gamma: usize,
    beta: usize,
) {
    let node = &nodes[i];
    let cols = *node.shape.last().expect("layer_norm has rank >= 1");
    if cols == 0 {
        return;
    }
    let (xv, gv) = (&nodes[x].value, &nodes[gamma].value);
    let xhat = |r: usize, j: usize| (xv[r * cols + j] - node.aux[2 * r]) * node.aux[2 * r + 1];
    let rows = xv.len() / cols;
    if nodes[gamma].requires_grad {
        let dg = grad_of(grads, pool, nodes, gamma);
        (0..rows).for_each(|r| (0..cols).for_each(|j| dg[j] += g[r * cols + j] * xhat(r, j)));
    }
    if nodes[beta].requires_grad {
        let db = grad_of(grads, pool, nodes, beta);
        (0..rows).for_each(|r| (0..cols).for_each(|j| db[j] += g[r * cols + j]));
    }
    if nodes[x].requires_grad {
        let dx = grad_of(grads, pool, nodes, x);
        for r in 0..rows {
            // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            let (mut mean_d, mut mean_dx) = (0.0f32, 0.0f32);
            for j in 0..cols {
                let dxhat = g[r * cols + j] * gv[j];
                mean_d += dxhat;
                mean_dx += dxhat * xhat(r, j);
            }
            mean_d /= cols as f32;
            mean_dx /= cols as f32;
            let rstd = node.aux[2 * r + 1];
            for j in 0..cols {
                let dxhat = g[r * cols + j] * gv[j];
                dx[r * cols + j] += rstd * (dxhat - mean_d - xhat(r, j) * mean_dx);
            }
        }
    }
}
