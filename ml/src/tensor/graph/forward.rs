//! The forward operations: each checks its operands, computes its value
//! into a pooled buffer and records one node on the tape (what
//! `backward.rs` needs to differentiate it: the input indices, the sizes,
//! and in `aux` any intermediate the derivative reuses).

use super::{Graph, Op, Var, product, take_buffer};
use crate::rng::Rng;
use crate::tensor::TensorError;
use crate::tensor::kernels::{self, Mat};

impl Graph {
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
        let out = self.buffer(crate::tensor::checked_numel("matmul", &shape)?);
        let out = self.forward_product(out, false, (a.index, b.index), false, (m, n, k))?;
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
            self.check_vector(b, n, ("linear", "linear (bias)"), &sw)?;
        }
        let m = sx[..sx.len() - 1].iter().product::<usize>();
        let mut shape = sx;
        *shape.last_mut().expect("rank >= 1") = n;
        let mut out = self.buffer(crate::tensor::checked_numel("linear", &shape)?);
        if let Some(b) = bias {
            let bv = &self.nodes[b.index].value;
            out.chunks_exact_mut(n.max(1)).for_each(|row| row.copy_from_slice(bv));
        }
        let out = self.forward_product(out, bias.is_some(), (x.index, w.index), true, (m, n, k))?;
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

    /// `out [m x n] = (accumulate ? out : 0) + lhs [m x k] * rhs`, `rhs`
    /// being node `rhs` as `[k x n]` or, `rhs_transposed`, the transpose
    /// of its `[n x k]`: the product of `matmul` and `linear`. A failed
    /// product hands `out` back to the pool.
    fn forward_product(
        &mut self,
        mut out: Vec<f32>,
        accumulate: bool,
        (lhs, rhs): (usize, usize),
        rhs_transposed: bool,
        (m, n, k): (usize, usize, usize),
    ) -> Result<Vec<f32>, TensorError> {
        let lhs = Mat::rows(&self.nodes[lhs].value, k);
        let rhs = match rhs_transposed {
            true => Mat::transposed(&self.nodes[rhs].value, k),
            false => Mat::rows(&self.nodes[rhs].value, n),
        };
        match product(&self.backend, &mut self.pool, &mut out, accumulate, lhs, rhs, m, n, k) {
            Ok(()) => Ok(out),
            Err(error) => {
                self.pool.push(out);
                Err(error)
            }
        }
    }

    /// Checks that `var` (a bias, an affine parameter) has shape `[len]`:
    /// [`TensorError::ShapeMismatch`] naming `mismatch` and `against`
    /// otherwise, [`TensorError::ForeignVar`] naming `op` for a foreign
    /// `var`.
    fn check_vector(
        &self,
        var: Var,
        len: usize,
        (op, mismatch): (&'static str, &'static str),
        against: &[usize],
    ) -> Result<(), TensorError> {
        let shape = &self.node(var, op)?.shape;
        if shape.as_slice() != [len] {
            return Err(TensorError::ShapeMismatch {
                op: mismatch,
                left: against.to_vec(),
                right: shape.clone(),
            });
        }
        Ok(())
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
        let mut out = take_buffer(&mut self.pool, crate::tensor::checked_numel(op, &shape)?);
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
            self.check_vector(p, cols, ("layer_norm", "layer_norm (affine)"), &shape)?;
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
        kernels::transpose_into(&self.nodes[a.index].value, &mut out, rows, cols, false);
        let mut new_shape = shape;
        let rank = new_shape.len();
        new_shape.swap(rank - 2, rank - 1);
        self.finish(Op::Transpose { a: a.index, rows, cols }, new_shape, out, &[a.index])
    }

    /// The same elements with a new shape of equal element count.
    pub fn reshape(&mut self, a: Var, shape: &[usize]) -> Result<Var, TensorError> {
        let old = &self.node(a, "reshape")?.shape;
        if old.iter().product::<usize>() != crate::tensor::checked_numel("reshape", shape)? {
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
}
