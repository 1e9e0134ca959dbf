//! Sizes that cannot overflow and allocations that cannot abort: every
//! constructor checks its shape's element count once (then its element
//! loops run unchecked) and reserves its memory fallibly, so a shape from a
//! user or a file is an error, never a wrapped size or an aborted process.

use super::TensorError;

/// The element count of `shape`, checked: every product is a `checked_mul`,
/// and dimensions of zero count as one so that the strides of an empty
/// tensor fit in `usize` too (`[0, 2^40, 2^40]` is refused, not wrapped).
/// Constructors call this once; element loops then run unchecked.
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize, TensorError> {
    let too_large = || TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
        reason: "the product of its dimensions overflows usize".to_string(),
    };
    let spans = shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n.max(1)));
    spans.ok_or_else(too_large)?;
    Ok(if shape.contains(&0) { 0 } else { shape.iter().product() })
}

/// A vector of `len` copies of `value`, or [`TensorError::TooLarge`] when
/// the memory cannot be had (instead of aborting the process).
pub(crate) fn try_filled<T: Copy>(
    op: &'static str,
    shape: &[usize],
    len: usize,
    value: T,
) -> Result<Vec<T>, TensorError> {
    let mut out = try_with_capacity(op, shape, len)?;
    out.resize(len, value);
    Ok(out)
}

/// An empty vector with room for exactly `len` elements, or
/// [`TensorError::TooLarge`] naming the bytes that could not be allocated.
pub(crate) fn try_with_capacity<T>(
    op: &'static str,
    shape: &[usize],
    len: usize,
) -> Result<Vec<T>, TensorError> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| TensorError::TooLarge {
        op,
        shape: shape.to_vec(),
        reason: format!(
            "cannot allocate {} bytes for its {len} elements",
            (len as u128) * std::mem::size_of::<T>() as u128
        ),
    })?;
    Ok(out)
}

/// Row-major (C order) strides for `shape`, whose size was checked by
/// [`checked_numel`] (so no product here overflows).
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}
