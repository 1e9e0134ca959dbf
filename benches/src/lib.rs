//! Shared helpers for zbmd's criterion benchmarks: the element types every
//! queue benchmark moves, pinning a thread to a core, a bounded spin-then-yield
//! wait, and a runner that times producer and consumer threads.
//!
//! The benchmarks themselves live in `benches/` (run them with
//! `cargo bench -p zbmd-benches`); `scripts/bench_report.py` turns criterion's
//! output into `bench_results/`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// A 64-byte message: one cache line, the size of a typical actor envelope
/// (header plus a pointer to its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Msg64(pub [u64; 8]);

/// An element a queue benchmark sends: built from a sequence number, so the
/// receiving side can check that every element arrived exactly once.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The name that goes into the benchmark id (`u64`, `msg64`).
    const NAME: &'static str;
    /// Builds the element that carries `seq`.
    fn from_seq(seq: u64) -> Self;
    /// The sequence number the element carries.
    fn seq(&self) -> u64;
}

impl Element for u64 {
    const NAME: &'static str = "u64";
    #[inline(always)]
    fn from_seq(seq: u64) -> Self {
        seq
    }
    #[inline(always)]
    fn seq(&self) -> u64 {
        *self
    }
}

impl Element for Msg64 {
    const NAME: &'static str = "msg64";
    #[inline(always)]
    fn from_seq(seq: u64) -> Self {
        // Every word is written, so a send moves a full cache line of fresh data.
        Msg64([seq; 8])
    }
    #[inline(always)]
    fn seq(&self) -> u64 {
        self.0[0]
    }
}

/// The sum of the sequence numbers `0..count`: what the consumers of a run
/// that sent `count` elements must add up to.
pub fn seq_sum(count: u64) -> u64 {
    // One of count and count - 1 is even, so the halving is exact.
    if count % 2 == 0 { (count / 2) * count.saturating_sub(1) } else { count * ((count - 1) / 2) }
}

/// Pins the calling thread to the `index`-th core the OS reports (modulo
/// the number of cores). Returns false, and leaves the thread where it was,
/// when the cores cannot be listed or the affinity cannot be set.
pub fn pin_to_core(index: usize) -> bool {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => core_affinity::set_for_current(ids[index % ids.len()]),
        _ => false,
    }
}

/// The number of cores threads can be pinned to (1 when they cannot be listed).
pub fn core_count() -> usize {
    core_affinity::get_core_ids().map_or(1, |ids| ids.len().max(1))
}

/// Waiting on a queue: spin a little, doubling each time, then yield the core.
///
/// Yielding is what keeps an oversubscribed run (more threads than cores)
/// from livelocking: the thread that would make progress gets the core.
#[derive(Debug, Default)]
pub struct Backoff {
    step: u32,
}

impl Backoff {
    /// Spin rounds before yielding: 2^0 + ... + 2^6 = 127 `spin_loop` hints,
    /// about 1 µs (a ~10-cycle PAUSE, AMD) to 6 µs (a ~140-cycle PAUSE, Intel
    /// since Skylake); long enough to cover the other core's store reaching
    /// us, short enough that a descheduled peer costs little. crossbeam's
    /// `Backoff` spins to the same limit.
    const SPIN_STEPS_MAX: u32 = 6;

    /// A fresh wait, starting with the shortest spin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits once: spins `2^step` hints while under the limit, then yields.
    #[inline]
    pub fn snooze(&mut self) {
        if self.step <= Self::SPIN_STEPS_MAX {
            for _ in 0..(1u32 << self.step) {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else {
            std::thread::yield_now();
        }
    }

    /// Starts over after progress was made.
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// Where the threads of a run are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Thread `i` (producers first, then consumers) is pinned to core
    /// `i % cores`.
    Pinned,
    /// The OS scheduler places the threads (used when there are more threads
    /// than cores: pinning two spinning threads to one core only measures the
    /// scheduler's time slice).
    Unpinned,
}

/// What one thread of a run saw: when it passed the start barrier, when it
/// finished, and the sum of the sequence numbers it received (0 for
/// producers).
#[derive(Debug, Clone, Copy)]
pub struct ThreadReport {
    /// When the thread passed the start barrier.
    pub start: Instant,
    /// When the thread finished its share.
    pub end: Instant,
    /// The sum of the sequence numbers received.
    pub seq_sum: u64,
}

/// Runs `producers` and `consumers` (closures that do one thread's share)
/// on their own threads, released together by a barrier, and returns the
/// time from the first thread's start to the last thread's end, with the
/// total of the consumers' sequence sums.
///
/// Each closure gets its index among its kind. Thread start-up and the
/// barrier are outside the timed span.
pub fn run_threads<P, C>(
    producers: Vec<P>,
    consumers: Vec<C>,
    placement: Placement,
) -> (Duration, u64)
where
    P: FnOnce(usize) + Send,
    C: FnOnce(usize) -> u64 + Send,
{
    let producer_count = producers.len();
    let barrier = Barrier::new(producer_count + consumers.len());
    let reports: Vec<ThreadReport> = std::thread::scope(|scope| {
        let barrier = &barrier;
        let mut handles = Vec::new();
        for (index, work) in producers.into_iter().enumerate() {
            handles.push(scope.spawn(move || {
                place(placement, index);
                barrier.wait();
                let start = Instant::now();
                work(index);
                ThreadReport { start, end: Instant::now(), seq_sum: 0 }
            }));
        }
        for (index, work) in consumers.into_iter().enumerate() {
            handles.push(scope.spawn(move || {
                place(placement, producer_count + index);
                barrier.wait();
                let start = Instant::now();
                let seq_sum = work(index);
                ThreadReport { start, end: Instant::now(), seq_sum }
            }));
        }
        handles.into_iter().map(|h| h.join().expect("a benchmark thread panicked")).collect()
    });
    let start = reports.iter().map(|r| r.start).min().expect("a run has threads");
    let end = reports.iter().map(|r| r.end).max().expect("a run has threads");
    let sum = reports.iter().fold(0u64, |acc, r| acc.wrapping_add(r.seq_sum));
    (end.duration_since(start), sum)
}

fn place(placement: Placement, thread_index: usize) {
    if placement == Placement::Pinned && !pin_to_core(thread_index) {
        eprintln!("zbmd-benches: could not pin thread {thread_index}; running it unpinned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sum_matches_the_loop() {
        for n in 0..50u64 {
            assert_eq!(seq_sum(n), (0..n).sum::<u64>());
        }
    }

    #[test]
    fn msg64_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Msg64>(), 64);
        assert_eq!(std::mem::align_of::<Msg64>(), 64);
        assert_eq!(Msg64::from_seq(7).seq(), 7);
    }

    #[test]
    fn run_threads_sums_what_consumers_return() {
        let producer = |_: usize| {};
        let consumer = |i: usize| i as u64 + 1;
        let (_, sum) = run_threads(vec![producer; 2], vec![consumer; 2], Placement::Unpinned);
        assert_eq!(sum, 3);
    }
}
