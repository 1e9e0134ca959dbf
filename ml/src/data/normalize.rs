//! Feature scaling, fitted on one dataset (the training set) and applied
//! to others (the test set) with the same statistics.

use super::Dataset;

/// How to scale features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    /// Divide every feature by this number: `Divide(16.0)` takes the digits
    /// pixels (0..16) to [0, 1], `Divide(255.0)` does the same for MNIST.
    Divide(f32),
    /// Per feature, map the fitted minimum to 0 and maximum to 1; a constant
    /// feature becomes 0.
    MinMax,
    /// Per feature, subtract the fitted mean and divide by the standard
    /// deviation; a constant feature becomes 0.
    Standardize,
}

/// A fitted per-feature affine map, `x ↦ (x − offset) × scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer {
    /// Subtracted from each feature.
    pub offset: Vec<f32>,
    /// Then multiplied into it.
    pub scale: Vec<f32>,
}

impl Normalizer {
    /// Fits `how` to `data`'s features.
    pub fn fit(how: Normalize, data: &Dataset) -> Normalizer {
        let dim = data.dim;
        match how {
            Normalize::Divide(divisor) => {
                assert!(
                    divisor.is_finite() && divisor != 0.0,
                    "Normalize::Divide needs a finite, non-zero divisor, got {divisor}"
                );
                Normalizer { offset: vec![0.0; dim], scale: vec![1.0 / divisor; dim] }
            }
            Normalize::MinMax => {
                let mut low = vec![f32::INFINITY; dim];
                let mut high = vec![f32::NEG_INFINITY; dim];
                for row in data.features.chunks_exact(dim) {
                    for (j, &x) in row.iter().enumerate() {
                        low[j] = low[j].min(x);
                        high[j] = high[j].max(x);
                    }
                }
                let scale = low.iter().zip(&high).map(|(l, h)| inverse(h - l)).collect();
                Normalizer { offset: low, scale }
            }
            Normalize::Standardize => {
                let n = data.len() as f64;
                let mut sum = vec![0.0f64; dim];
                let mut sum_sq = vec![0.0f64; dim];
                for row in data.features.chunks_exact(dim) {
                    for (j, &x) in row.iter().enumerate() {
                        sum[j] += f64::from(x);
                        sum_sq[j] += f64::from(x) * f64::from(x);
                    }
                }
                let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
                let scale = mean
                    .iter()
                    .zip(&sum_sq)
                    .map(|(m, sq)| inverse(((sq / n - m * m).max(0.0)).sqrt() as f32))
                    .collect();
                let offset = mean.iter().map(|&m| m as f32).collect();
                Normalizer { offset, scale }
            }
        }
    }

    /// Applies the map to `data` in place.
    pub fn apply(&self, data: &mut Dataset) {
        assert_eq!(
            self.offset.len(),
            data.dim,
            "a normalizer fitted to {} features applied to {} ({})",
            self.offset.len(),
            data.dim,
            data.name
        );
        for row in data.features.chunks_exact_mut(self.offset.len()) {
            for ((x, offset), scale) in row.iter_mut().zip(&self.offset).zip(&self.scale) {
                *x = (*x - offset) * scale;
            }
        }
    }
}

/// `1 / range`, or 0 for a constant feature (so it maps to 0, not NaN).
fn inverse(range: f32) -> f32 {
    if range > f32::EPSILON { 1.0 / range } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Dataset {
        Dataset::new("n", vec![0.0, 5.0, 2.0, 5.0, 4.0, 5.0], vec![0, 1, 0], 2, 2).unwrap()
    }

    #[test]
    fn min_max_maps_to_the_unit_interval_and_constants_to_zero() {
        let mut d = data();
        d.normalize(Normalize::MinMax);
        assert_eq!(d.features, vec![0.0, 0.0, 0.5, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn standardize_centres_and_the_fit_carries_to_another_set() {
        let mut d = data();
        let fitted = d.normalize(Normalize::Standardize);
        let mean: f32 = d.features.iter().step_by(2).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6);
        let mut other = data();
        fitted.apply(&mut other);
        assert_eq!(other.features, d.features);
    }

    #[test]
    fn divide_scales() {
        let mut d = data();
        d.normalize(Normalize::Divide(4.0));
        assert_eq!(d.features, vec![0.0, 1.25, 0.5, 1.25, 1.0, 1.25]);
    }
}
