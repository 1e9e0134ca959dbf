//! The numeric kernels behind the graph's operations: matrix products through
//! the `gemm` crate, the error function for exact GELU, row-wise softmax,
//! broadcasting iteration and blockwise transposes.

/// A read-only strided matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Mat<'a> {
        Mat { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns, without a copy.
    pub fn transposed(data: &'a [f32], cols: usize) -> Mat<'a> {
        Mat { data, rs: 1, cs: cols }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }

    /// Whether the first `rows * cols` elements of `data` are this
    /// `rows x cols` matrix in row-major order.
    pub fn is_row_major(&self, rows: usize, cols: usize) -> bool {
        let unit_rows = rows <= 1 || self.rs == cols;
        let unit_cols = cols <= 1 || self.cs == 1;
        unit_rows && unit_cols && self.data.len() >= rows * cols
    }

    /// Copies the `rows x cols` matrix into `dst` in row-major order.
    pub fn copy_into(&self, dst: &mut [f32], rows: usize, cols: usize) {
        assert!(dst.len() == rows * cols, "copy_into: dst holds {}, not {rows}x{cols}", dst.len());
        assert!(self.fits(rows, cols), "copy_into: strides exceed the buffer");
        if cols == 0 {
            return;
        }
        for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
            let start = r * self.rs;
            row.iter_mut().enumerate().for_each(|(c, d)| *d = self.data[start + c * self.cs]);
        }
    }
}

/// `dst[m x n] (row-major) = (accumulate ? dst : 0) + lhs[m x k] * rhs[k x n]`.
///
/// Single-threaded (`Parallelism::None`): zbmd runs one shard per core, so a
/// kernel that spawned its own thread pool would fight the shards for cores;
/// it also keeps results bit-for-bit reproducible. At the model sizes this
/// crate trains (64x64 by 64x128) the product takes microseconds and a
/// thread hand-off would cost as much as it saves.
pub(crate) fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(dst.len() == m * n, "matmul: dst holds {} elements, not {m}x{n}", dst.len());
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "matmul: operand strides exceed their buffers");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `gemm` reads lhs at `r * rs + c * cs` for r < m, c < k, rhs at
    // the same pattern for r < k, c < n, and reads and writes dst at
    // `r * n + c` for r < m, c < n. (1) The asserts above show every lhs and
    // rhs offset is inside its slice, and dst.len() == m * n covers dst.
    // (2) dst is borrowed mutably, so it aliases neither operand. (3) Strides
    // are below the slice lengths, which fit in isize (slices never exceed
    // isize::MAX bytes). (4) T = f32 is a type gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The error function, accurate to about 1e-15 in `f64`.
///
/// Below |x| = 2.5 it sums the Maclaurin series (whose largest term there is
/// about 200, so cancellation costs under three of the sixteen digits);
/// above, it evaluates the continued fraction of erfc (Abramowitz and Stegun
/// 7.1.14) from the bottom up, which converges fast for large |x|; beyond
/// |x| = 6, erfc is below 3e-17 and erf is ±1 in `f64`.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let value = if a < 2.5 {
        erf_series(a)
    } else if a < 6.0 {
        1.0 - erfc_continued_fraction(a)
    } else {
        1.0
    };
    if x < 0.0 { -value } else { value }
}

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

fn erf_series(x: f64) -> f64 {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let x2 = x * x;
    let mut power = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    // 60 terms reach 1e-17 relative for x < 2.5 (6.25^60 / 60! ~ 1e-34).
    for n in 1..60 {
        power *= -x2 / n as f64;
        let term = power / (2 * n + 1) as f64;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * FRAC_2_SQRT_PI
}

fn erfc_continued_fraction(x: f64) -> f64 {
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
    // 80 levels give full f64 precision from x = 2.5 up.
    let mut tail = x;
    for n in (1..=80).rev() {
        tail = x + (n as f64 * 0.5) / tail;
    }
    (-x * x).exp() / (tail * std::f64::consts::PI.sqrt())
}

/// Exact GELU, `x * Phi(x)` with `Phi` the standard normal CDF (PyTorch's
/// default `approximate='none'`).
pub(crate) fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// d/dx GELU(x) = Phi(x) + x * phi(x).
pub(crate) fn gelu_grad(x: f32) -> f32 {
    let x = f64::from(x);
    let cdf = 0.5 * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}

/// Writes the softmax (or log-softmax) of each `cols`-long row of `x` to `out`,
/// subtracting the row maximum first so `exp` cannot overflow.
pub(crate) fn softmax_rows(x: &[f32], out: &mut [f32], cols: usize, log: bool) {
    debug_assert_eq!(x.len(), out.len());
    if cols == 0 {
        return;
    }
    for (row, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f32;
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v - max).exp();
            total += *d;
        }
        if log {
            let log_total = total.ln();
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = v - max - log_total;
            }
        } else {
            let inv = 1.0 / total;
            dst.iter_mut().for_each(|d| *d *= inv);
        }
    }
}

/// The NumPy broadcast of two shapes, or `None` when they are incompatible.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for d in 0..rank {
        let da = if d + a.len() >= rank { a[d + a.len() - rank] } else { 1 };
        let db = if d + b.len() >= rank { b[d + b.len() - rank] } else { 1 };
        out[d] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides that read an input of `shape` as if it had `out` (its broadcast
/// shape): zero along broadcast dimensions.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = super::contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|d| if d < lead || shape[d - lead] == 1 { 0 } else { own[d - lead] })
        .collect()
}

/// Calls `visit(out_index, a_index, b_index)` for every element of the
/// broadcast shape `out`, in row-major order. Allocation is per call (two
/// stride vectors and one counter), never per element.
pub(crate) fn broadcast_for_each(
    out: &[usize],
    a: &[usize],
    b: &[usize],
    mut visit: impl FnMut(usize, usize, usize),
) {
    let numel: usize = out.iter().product();
    if numel == 0 {
        return;
    }
    if a == out && b == out {
        (0..numel).for_each(|i| visit(i, i, i));
        return;
    }
    let sa = broadcast_strides(a, out);
    let sb = broadcast_strides(b, out);
    let rank = out.len();
    if rank == 0 {
        visit(0, 0, 0);
        return;
    }
    let inner = out[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut index = vec![0usize; rank];
    let (mut at_a, mut at_b) = (0usize, 0usize);
    let mut o = 0;
    while o < numel {
        for j in 0..inner {
            visit(o + j, at_a + j * ia, at_b + j * ib);
        }
        o += inner;
        // Advance the outer dimensions like an odometer.
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            at_a += sa[d];
            at_b += sb[d];
            if index[d] < out[d] {
                break;
            }
            at_a -= sa[d] * out[d];
            at_b -= sb[d] * out[d];
            index[d] = 0;
        }
    }
}

/// Transposes each `rows x cols` block of `src` (row-major) into the
/// matching `cols x rows` block of `dst`, adding to what is there when
/// `accumulate` (the backward pass) and overwriting otherwise.
pub(crate) fn transpose_into(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposed_view_is_copied_row_major_and_recognised() {
        let data: Vec<f32> = (0..6).map(|x| x as f32).collect(); // [[0,1,2],[3,4,5]]
        assert!(Mat::rows(&data, 3).is_row_major(2, 3));
        let t = Mat::transposed(&data, 3); // [[0,3],[1,4],[2,5]]
        assert!(!t.is_row_major(3, 2));
        let mut out = vec![0.0; 6];
        t.copy_into(&mut out, 3, 2);
        assert_eq!(out, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // One row of a transposed single column is already row-major.
        assert!(Mat::transposed(&data[..3], 1).is_row_major(1, 3));
        assert!(!Mat::rows(&data[..5], 3).is_row_major(2, 3), "too short for 2x3");
    }

    #[test]
    fn erf_matches_reference_values() {
        // Reference values to 16 digits (DLMF; also Python's math.erf).
        let cases = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (4.0, 0.9999999845827421),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {} not {want}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-13);
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
    }

    #[test]
    fn gelu_matches_known_values() {
        // 0.5 * x * (1 + erf(x / sqrt 2)).
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }

    #[test]
    fn broadcasting_follows_numpy_rules() {
        assert_eq!(broadcast_shape(&[4, 3], &[3]), Some(vec![4, 3]));
        assert_eq!(broadcast_shape(&[4, 1], &[1, 3]), Some(vec![4, 3]));
        assert_eq!(broadcast_shape(&[], &[2, 2]), Some(vec![2, 2]));
        assert_eq!(broadcast_shape(&[4, 3], &[4]), None);
        let mut seen = Vec::new();
        broadcast_for_each(&[2, 3], &[2, 1], &[3], |o, a, b| seen.push((o, a, b)));
        assert_eq!(seen, vec![(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0), (4, 1, 1), (5, 1, 2)]);
    }

    #[test]
    fn matmul_handles_transposed_operands() {
        // [[1, 2], [3, 4]] * [[5, 6], [7, 8]]^T = [[17, 23], [39, 53]]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut out = [1.0; 4];
        matmul(&mut out, false, Mat::rows(&a, 2), Mat::transposed(&b, 2), 2, 2, 2);
        assert_eq!(out, [17.0, 23.0, 39.0, 53.0]);
        matmul(&mut out, true, Mat::rows(&a, 2), Mat::transposed(&b, 2), 2, 2, 2);
        assert_eq!(out, [34.0, 46.0, 78.0, 106.0]);
    }
}
