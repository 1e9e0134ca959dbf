//! The errors the queues hand back.

use std::fmt;

/// A queue was full; the value that did not fit is handed back, never dropped.
///
/// ```
/// use zbmd_rt::sync::mpmc::MpmcQueue;
/// let q = MpmcQueue::with_capacity(1).unwrap();
/// q.push(1).unwrap();
/// let full = q.push(2).unwrap_err();
/// assert_eq!(full.into_inner(), 2);
/// ```
#[derive(PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// Takes back the value that did not fit.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Full").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "queue is full: the value was handed back to the sender; retry later or shed load",
        )
    }
}

impl<T> std::error::Error for Full<T> {}

/// A queue was asked for at a capacity it cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// A queue must hold at least one element.
    #[error("queue capacity must be at least 1")]
    Zero,
    /// The capacity is beyond what the queue's index arithmetic supports.
    #[error("queue capacity {requested} exceeds the maximum of {max}")]
    TooLarge {
        /// What was asked for.
        requested: usize,
        /// The largest capacity this queue supports.
        max: usize,
    },
}

/// The largest capacity any queue accepts: 2^30 slots. Indices are kept in
/// 32-bit halves in the work-stealing deque, and a ring this large is already
/// gigabytes for any useful element type, so one shared limit keeps the rules
/// simple.
pub const CAPACITY_MAX: usize = 1 << 30;

/// Checks a requested capacity against the shared limits.
pub(crate) fn check_capacity(requested: usize) -> Result<usize, CapacityError> {
    match requested {
        0 => Err(CapacityError::Zero),
        n if n > CAPACITY_MAX => Err(CapacityError::TooLarge { requested: n, max: CAPACITY_MAX }),
        n => Ok(n),
    }
}

/// Why a queue could not be built in a block lent by a memory pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The capacity itself is invalid.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// The block is smaller than the queue's slots need, or not aligned for
    /// them.
    #[error("the pool's block is too small or misaligned for the queue's slots")]
    Unfit,
}
