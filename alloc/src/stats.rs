//! Pool statistics: a snapshot per pool, and their Prometheus rendering.

use std::fmt::Write as _;
use std::sync::Arc;

/// One pool's counters at one moment. Each field is read atomically, the
/// set is not: a snapshot of a running pool.
///
/// A block freed by another thread counts as in use until the owner takes
/// it back (when its free list runs dry, or on `drain_remote`); then it
/// counts in `remote_frees`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool's name.
    pub pool: Arc<str>,
    /// The shard that owns it, for pools built by [`ShardPools`](crate::ShardPools).
    pub shard: Option<usize>,
    /// Usable bytes per block.
    pub block_bytes: usize,
    /// Blocks in the pool: its limit.
    pub capacity: usize,
    /// Blocks handed out and not yet back with the owner.
    pub in_use: usize,
    /// The most blocks ever in use at once.
    pub high_water: usize,
    /// Blocks other threads freed that the owner has taken back.
    pub remote_frees: u64,
    /// Allocations refused with `PoolExhausted`.
    pub exhausted: u64,
}

/// One series [`to_prometheus`] writes: name, type, help, value.
type Series = (&'static str, &'static str, &'static str, fn(&PoolStats) -> u64);

/// The series [`to_prometheus`] writes.
const SERIES: [Series; 6] = [
    ("zbmd_pool_capacity_blocks", "gauge", "Blocks in the pool.", |s| s.capacity as u64),
    ("zbmd_pool_block_bytes", "gauge", "Usable bytes per block.", |s| s.block_bytes as u64),
    ("zbmd_pool_in_use_blocks", "gauge", "Blocks handed out and not yet home.", |s| {
        s.in_use as u64
    }),
    ("zbmd_pool_high_water_blocks", "gauge", "Most blocks ever in use at once.", |s| {
        s.high_water as u64
    }),
    (
        "zbmd_pool_remote_frees_total",
        "counter",
        "Blocks freed by other threads and taken back.",
        |s| s.remote_frees,
    ),
    (
        "zbmd_pool_exhausted_total",
        "counter",
        "Allocations refused because the pool was full.",
        |s| s.exhausted,
    ),
];

/// Renders snapshots in Prometheus' text exposition format, one series
/// per pool, labelled `pool` and (where known) `shard`: the form the
/// runtime's metrics endpoint concatenates with its own.
///
/// ```
/// # use zbmd_alloc::{PoolStats, to_prometheus};
/// let stats = PoolStats {
///     pool: "buf-64".into(), shard: Some(0), block_bytes: 64, capacity: 8,
///     in_use: 3, high_water: 5, remote_frees: 2, exhausted: 0,
/// };
/// let text = to_prometheus(&[stats]);
/// assert!(text.contains("zbmd_pool_in_use_blocks{pool=\"buf-64\",shard=\"0\"} 3"));
/// ```
pub fn to_prometheus(stats: &[PoolStats]) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for pool in stats {
            let label = escape(&pool.pool);
            let _ = match pool.shard {
                Some(shard) => {
                    writeln!(out, "{name}{{pool=\"{label}\",shard=\"{shard}\"}} {}", value(pool))
                }
                None => writeln!(out, "{name}{{pool=\"{label}\"}} {}", value(pool)),
            };
        }
    }
    out
}

/// Escapes a label value as the exposition format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
