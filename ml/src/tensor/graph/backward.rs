//! The backward pass: [`Graph::backward`] walks the tape from the loss back
//! to the first node, and each node adds its share to its inputs' gradients
//! (the chain rule, one node at a time).
//!
//! [`Backprop::node`] is the dispatch: one line per [`Op`], naming the
//! function that differentiates it. Every function adds to its inputs'
//! gradient buffers and never overwrites them, so a value used twice
//! (`x * x`, a leaf two layers share) sums both uses; a node's buffer comes
//! zeroed from the pool the first time its gradient is touched. Only the
//! matrix products can fail (on a backend), so only they return a `Result`.
//!
//! The loops are the hot path of a training step: each walks its buffers
//! with iterators (no bounds check per element) and allocates nothing once
//! the pool is warm.

use super::{Backend, Gradients, Graph, Node, Op, Var, product, take_buffer};
use crate::tensor::TensorError;
use crate::tensor::kernels::{self, Mat};

impl Graph {
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
        let mut pass = Backprop {
            nodes: &self.nodes,
            backend: &self.backend,
            grads: &mut grads,
            pool: &mut self.pool,
        };
        if let Err(error) = pass.run(loss.index) {
            // The partial gradients are useless; their buffers are not.
            self.pool.extend(grads.into_iter().rev().flatten());
            return Err(error);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if matches!(node.op, Op::Leaf) && node.requires_grad && grads[i].is_none() {
                grads[i] = Some(take_buffer(&mut self.pool, node.value.len()));
            }
        }
        Ok(Gradients { tape: self.tape, grads })
    }
}

/// One backward pass in progress: the tape it reads, where its matrix
/// products run, the gradients so far (one slot per node, `None` until the
/// loss reaches the node) and the pool their buffers come from.
struct Backprop<'t> {
    nodes: &'t [Node],
    backend: &'t Backend,
    grads: &'t mut [Option<Vec<f32>>],
    pool: &'t mut Vec<Vec<f32>>,
}

/// The accumulating gradient buffer of node `i`, taken zeroed from `pool`
/// on first use. A free function over the pass's fields (not a method), so
/// that a matrix product can hold it and the pool at once.
fn grad_of<'g>(
    grads: &'g mut [Option<Vec<f32>>],
    pool: &mut Vec<Vec<f32>>,
    nodes: &[Node],
    i: usize,
) -> &'g mut [f32] {
    grads[i].get_or_insert_with(|| take_buffer(pool, nodes[i].value.len()))
}

impl Backprop<'_> {
    /// Differentiates the nodes from `last` (the loss) down to the first,
    /// skipping those that need no gradient or that the loss does not reach.
    fn run(&mut self, last: usize) -> Result<(), TensorError> {
        for i in (0..=last).rev() {
            if !self.nodes[i].requires_grad {
                continue;
            }
            let Some(g) = self.grads[i].take() else { continue };
            let done = self.node(i, &g);
            self.grads[i] = Some(g);
            done?;
        }
        Ok(())
    }

    /// Adds node `i`'s share (its gradient `g`) to its inputs' gradients:
    /// which function differentiates which operation.
    fn node(&mut self, i: usize, g: &[f32]) -> Result<(), TensorError> {
        let nodes = self.nodes;
        let node = &nodes[i];
        match node.op {
            Op::Leaf => {}
            Op::MatMul { a, b, m, k, n } => self.matmul(g, (a, b), (m, k, n))?,
            Op::Linear { x, w, bias, m, k, n } => self.linear(g, (x, w, bias), (m, k, n))?,
            Op::Add { a, b } | Op::Sub { a, b } | Op::Mul { a, b } => {
                self.arithmetic(node, g, a, b)
            }
            Op::Scale { a, factor } => self.scale(g, a, factor),
            Op::Relu { a } => self.relu(g, a),
            Op::Gelu { a } => self.gelu(g, a),
            Op::Tanh { a } => self.tanh(node, g, a),
            Op::Softmax { a } => self.softmax(node, g, a, false),
            Op::LogSoftmax { a } => self.softmax(node, g, a, true),
            Op::CrossEntropy { logits, ref targets } => {
                self.cross_entropy(node, g, logits, targets)
            }
            Op::LayerNorm { x, gamma, beta } => self.layer_norm(node, g, x, gamma, beta),
            Op::SumAxis { a, outer, len, inner, factor } => {
                self.sum_axis(g, a, (outer, len, inner), factor)
            }
            Op::Transpose { a, rows, cols } => self.transpose(g, a, rows, cols),
            Op::Reshape { a } => self.reshape(g, a),
            Op::Embedding { table, ref ids } => self.embedding(g, table, ids),
            Op::Mask { a } => self.mask(node, g, a),
        }
        Ok(())
    }

    /// The accumulating gradient buffer of node `i`.
    fn grad(&mut self, i: usize) -> &mut [f32] {
        grad_of(self.grads, self.pool, self.nodes, i)
    }

    // Matrix products.

    /// `C = A B`: `dA += dC B^T`, `dB += A^T dC`.
    fn matmul(
        &mut self,
        g: &[f32],
        (a, b): (usize, usize),
        (m, k, n): (usize, usize, usize),
    ) -> Result<(), TensorError> {
        let nodes = self.nodes;
        self.add_product(a, Mat::rows(g, n), Mat::transposed(&nodes[b].value, n), (m, k, n))?;
        self.add_product(b, Mat::transposed(&nodes[a].value, k), Mat::rows(g, n), (k, n, m))
    }

    /// `Y = X W^T + bias` (`W` is `[n, k]`): `dX += dY W`, `dW += dY^T X`,
    /// and `dbias` the column sums of `dY`.
    fn linear(
        &mut self,
        g: &[f32],
        (x, w, bias): (usize, usize, Option<usize>),
        (m, k, n): (usize, usize, usize),
    ) -> Result<(), TensorError> {
        let nodes = self.nodes;
        self.add_product(x, Mat::rows(g, n), Mat::rows(&nodes[w].value, k), (m, k, n))?;
        self.add_product(w, Mat::transposed(g, n), Mat::rows(&nodes[x].value, k), (n, k, m))?;
        if let Some(b) = bias.filter(|&b| nodes[b].requires_grad) {
            let db = self.grad(b);
            g.chunks_exact(n.max(1))
                .for_each(|row| db.iter_mut().zip(row).for_each(|(d, v)| *d += v));
        }
        Ok(())
    }

    /// `d[into] (rows x cols) += lhs (rows x inner) * rhs (inner x cols)`,
    /// when node `into` wants a gradient.
    fn add_product(
        &mut self,
        into: usize,
        lhs: Mat<'_>,
        rhs: Mat<'_>,
        (rows, cols, inner): (usize, usize, usize),
    ) -> Result<(), TensorError> {
        if !self.nodes[into].requires_grad {
            return Ok(());
        }
        let d = grad_of(self.grads, self.pool, self.nodes, into);
        product(self.backend, self.pool, d, true, lhs, rhs, rows, cols, inner)
    }

    // Elementwise operations.

    /// `a + b`, `a - b`, `a * b` with broadcasting: each input's gradient
    /// sums over the positions it was broadcast to. One pass per input, so
    /// `x * x` (`a == b`) accumulates both terms.
    fn arithmetic(&mut self, node: &Node, g: &[f32], a: usize, b: usize) {
        let nodes = self.nodes;
        let (sa, sb) = (&nodes[a].shape, &nodes[b].shape);
        let (av, bv) = (&nodes[a].value, &nodes[b].value);
        if nodes[a].requires_grad {
            let da = self.grad(a);
            match node.op {
                Op::Mul { .. } => kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, y| {
                    da[x] += g[o] * bv[y]
                }),
                _ => kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, _| da[x] += g[o]),
            }
        }
        if nodes[b].requires_grad {
            let db = self.grad(b);
            match node.op {
                Op::Mul { .. } => kernels::broadcast_for_each(&node.shape, sa, sb, |o, x, y| {
                    db[y] += g[o] * av[x]
                }),
                Op::Sub { .. } => {
                    kernels::broadcast_for_each(&node.shape, sa, sb, |o, _, y| db[y] -= g[o])
                }
                _ => kernels::broadcast_for_each(&node.shape, sa, sb, |o, _, y| db[y] += g[o]),
            }
        }
    }

    /// `a * factor`.
    fn scale(&mut self, g: &[f32], a: usize, factor: f32) {
        let da = self.grad(a);
        da.iter_mut().zip(g).for_each(|(d, v)| *d += v * factor);
    }

    /// `max(a, 0)`: the gradient passes where the input was positive.
    fn relu(&mut self, g: &[f32], a: usize) {
        let x = &self.nodes[a].value;
        let da = self.grad(a);
        for ((d, v), x) in da.iter_mut().zip(g).zip(x) {
            if *x > 0.0 {
                *d += v;
            }
        }
    }

    /// Exact GELU, through its derivative at the input.
    fn gelu(&mut self, g: &[f32], a: usize) {
        let x = &self.nodes[a].value;
        let da = self.grad(a);
        da.iter_mut().zip(g).zip(x).for_each(|((d, v), &x)| *d += v * kernels::gelu_grad(x));
    }

    /// `tanh`, through its output `y`: `dx = g (1 - y^2)`.
    fn tanh(&mut self, node: &Node, g: &[f32], a: usize) {
        let da = self.grad(a);
        da.iter_mut().zip(g).zip(&node.value).for_each(|((d, v), y)| *d += v * (1.0 - y * y));
    }

    /// Dropout: the gradient is scaled by the multiplier each element drew
    /// (in `aux`).
    fn mask(&mut self, node: &Node, g: &[f32], a: usize) {
        let da = self.grad(a);
        da.iter_mut().zip(g).zip(&node.aux).for_each(|((d, v), m)| *d += v * m);
    }

    /// A new shape over the same elements: the gradient passes as it is.
    fn reshape(&mut self, g: &[f32], a: usize) {
        let da = self.grad(a);
        da.iter_mut().zip(g).for_each(|(d, v)| *d += v);
    }

    // Row-wise operations over the last dimension.

    /// Softmax (`log`: log-softmax) over rows, through its output.
    fn softmax(&mut self, node: &Node, g: &[f32], a: usize, log: bool) {
        let cols = node.shape.last().copied().unwrap_or(0).max(1);
        let da = self.grad(a);
        for ((d, gr), y) in
            da.chunks_exact_mut(cols).zip(g.chunks_exact(cols)).zip(node.value.chunks_exact(cols))
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

    /// Mean cross-entropy fused with log-softmax: `dlogits = (p - onehot)
    /// * g / batch`, the probabilities `p` kept in `aux`.
    fn cross_entropy(&mut self, node: &Node, g: &[f32], logits: usize, targets: &[usize]) {
        let classes = self.nodes[logits].shape[1].max(1);
        let scale = g[0] / targets.len().max(1) as f32;
        let dl = self.grad(logits);
        for (r, (d, p)) in
            dl.chunks_exact_mut(classes).zip(node.aux.chunks_exact(classes)).enumerate()
        {
            d.iter_mut().zip(p).for_each(|(d, p)| *d += scale * p);
            d[targets[r]] -= scale;
        }
    }

    /// Layer normalisation, through the per-row mean and `1/std` kept in
    /// `aux`.
    fn layer_norm(&mut self, node: &Node, g: &[f32], x: usize, gamma: usize, beta: usize) {
        let cols = node.shape.last().copied().unwrap_or(0);
        if cols == 0 {
            return;
        }
        let nodes = self.nodes;
        let (xv, gv) = (&nodes[x].value, &nodes[gamma].value);
        let xhat = |r: usize, j: usize| (xv[r * cols + j] - node.aux[2 * r]) * node.aux[2 * r + 1];
        let rows = xv.len() / cols;
        if nodes[gamma].requires_grad {
            let dg = self.grad(gamma);
            (0..rows).for_each(|r| (0..cols).for_each(|j| dg[j] += g[r * cols + j] * xhat(r, j)));
        }
        if nodes[beta].requires_grad {
            let db = self.grad(beta);
            (0..rows).for_each(|r| (0..cols).for_each(|j| db[j] += g[r * cols + j]));
        }
        if nodes[x].requires_grad {
            let dx = self.grad(x);
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

    // Reductions and layout.

    /// A sum (or mean, `factor` = 1/len) along an axis: each output
    /// gradient spreads back over the `len` elements it summed.
    fn sum_axis(
        &mut self,
        g: &[f32],
        a: usize,
        (outer, len, inner): (usize, usize, usize),
        factor: f32,
    ) {
        let da = self.grad(a);
        for o in 0..outer {
            let src = &g[o * inner..(o + 1) * inner];
            for j in 0..len {
                let dst = &mut da[(o * len + j) * inner..(o * len + j + 1) * inner];
                dst.iter_mut().zip(src).for_each(|(d, v)| *d += v * factor);
            }
        }
    }

    /// A transpose of the last two dimensions: the output is `[cols, rows]`,
    /// so its gradient is transposed back.
    fn transpose(&mut self, g: &[f32], a: usize, rows: usize, cols: usize) {
        kernels::transpose_into(g, self.grad(a), cols, rows, true);
    }

    /// An embedding lookup: each looked-up row's gradient is added to that
    /// row of the table's (a row looked up twice gets both).
    fn embedding(&mut self, g: &[f32], table: usize, ids: &[usize]) {
        let dim = self.nodes[table].shape[1];
        let dt = self.grad(table);
        for (r, &id) in ids.iter().enumerate() {
            let src = &g[r * dim..(r + 1) * dim];
            dt[id * dim..(id + 1) * dim].iter_mut().zip(src).for_each(|(d, v)| *d += v);
        }
    }
}
