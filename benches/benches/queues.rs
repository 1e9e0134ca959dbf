//! zbmd's lock-free queues against their peers, one criterion group per
//! shape, every implementation of a shape in the same group so that one run
//! compares them on the same machine state.
//!
//! | group | threads | zbmd | peers |
//! |---|---|---|---|
//! | `push_pop_1thread/<type>/<impl>` | 1 | spsc, mpsc, mpmc, deque owner | ArrayQueue, SegQueue, crossbeam-channel, rtrb, std sync_channel, crossbeam-deque |
//! | `spsc_throughput/<type>/<impl>` | 1P + 1C pinned | spsc, spsc batches | rtrb, rtrb chunks, ArrayQueue |
//! | `mpsc_2producers/<type>/<impl>` | 2P + 1C unpinned | mpsc | crossbeam-channel, std sync_channel, ArrayQueue |
//! | `mpmc/<type>-2p2c/<impl>`, `mpmc/<type>-1p1c/<impl>` | 2P + 2C unpinned; 1P + 1C pinned | mpmc | ArrayQueue, crossbeam-channel, SegQueue |
//! | `steal/<impl>` | owner + thief pinned | deque | crossbeam-deque |
//!
//! Every wait is a bounded spin then `yield_now` ([`Backoff`]), and every
//! implementation uses the non-blocking calls (`try_send`, `try_recv`, `push`,
//! `pop`) with that same wait, so the figures compare the queues and not their
//! parking strategies. On a 2-core machine the 2P + 1C and 2P + 2C runs have
//! more threads than cores: they measure the queues under preemption too.
//!
//! Run with `cargo bench -p zbmd-benches --bench queues`, then
//! `python3 scripts/bench_report.py queues` for `bench_results/queues.{json,md}`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use crossbeam_queue::{ArrayQueue, SegQueue};
use zbmd_benches::{Backoff, Element, Msg64, Placement, run_threads, seq_sum};
use zbmd_rt::sync::mpmc::MpmcQueue;
use zbmd_rt::sync::mpsc::MpscQueue;
use zbmd_rt::sync::{deque, spsc};

/// Capacity of every bounded queue: big enough that producer and consumer
/// rarely meet at full or empty in steady state, small enough (64 KiB of
/// `Msg64`) to stay in L2, where a shard-to-shard ring lives in practice.
const QUEUE_CAPACITY: usize = 1024;

/// Elements moved per criterion iteration in the threaded groups: about a
/// millisecond of work, so thread hand-off at the start and end of a sample
/// is noise, and a multiple of every producer, consumer and batch count.
const ELEMENTS_PER_ITER: u64 = 1 << 16;

/// Elements per `push_slice` / `pop_into` (and rtrb chunk) call: a typical
/// shard-to-shard batch, 1/16 of the ring, so both sides work at once.
const BATCH_LEN: usize = 64;

/// Elements the owner pushes per steal round: a full deque.
const STEAL_ROUND_LEN: usize = QUEUE_CAPACITY;

/// Most elements one batch steal takes; crossbeam-deque's own cap is 32, so
/// both deques move the same amount per steal.
const STEAL_BATCH_MAX: usize = 32;

// ---------------------------------------------------------------------------
// One interface over every queue's sending and receiving side.

/// A sending side: hands the value back when the queue is full.
trait Tx<T> {
    fn try_send(&mut self, value: T) -> Result<(), T>;
}

/// A receiving side.
trait Rx<T> {
    fn try_recv(&mut self) -> Option<T>;
}

/// A sending side that copies a slice in one call; returns how many went in.
trait BatchTx<T> {
    fn send_slice(&mut self, values: &[T]) -> usize;
}

/// A receiving side that copies into a slice in one call; returns how many came out.
trait BatchRx<T> {
    fn recv_slice(&mut self, out: &mut [T]) -> usize;
}

impl<T> Tx<T> for spsc::Producer<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value).map_err(|full| full.into_inner())
    }
}

impl<T> Rx<T> for spsc::Consumer<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T: Copy> BatchTx<T> for spsc::Producer<T> {
    #[inline]
    fn send_slice(&mut self, values: &[T]) -> usize {
        self.push_slice(values)
    }
}

impl<T: Copy> BatchRx<T> for spsc::Consumer<T> {
    #[inline]
    fn recv_slice(&mut self, out: &mut [T]) -> usize {
        self.pop_into(out)
    }
}

impl<T> Tx<T> for Arc<MpscQueue<T>> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value).map_err(|full| full.into_inner())
    }
}

/// The one consumer of an [`MpscQueue`]; made only by [`mpsc_queue`], once
/// per queue, and not `Clone`.
struct MpscConsumer<T>(Arc<MpscQueue<T>>);

impl<T> Rx<T> for MpscConsumer<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        // SAFETY: `pop` needs its calls never to overlap and to be ordered.
        // `mpsc_queue` makes exactly one `MpscConsumer` per queue, it is not
        // `Clone`, and `pop` is only reached through `&mut self`, so calls
        // never overlap; the handle only changes threads by being moved into
        // a spawned thread, which orders the calls before and after.
        unsafe { self.0.pop() }
    }
}

/// An MPSC queue with its producers' handle and its one consumer.
fn mpsc_queue<T>() -> (Arc<MpscQueue<T>>, MpscConsumer<T>) {
    let queue = Arc::new(MpscQueue::with_capacity(QUEUE_CAPACITY).expect("valid capacity"));
    (queue.clone(), MpscConsumer(queue))
}

impl<T> Tx<T> for Arc<MpmcQueue<T>> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value).map_err(|full| full.into_inner())
    }
}

impl<T> Rx<T> for Arc<MpmcQueue<T>> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T> Tx<T> for deque::Worker<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value).map_err(|full| full.into_inner())
    }
}

impl<T> Rx<T> for deque::Worker<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T> Tx<T> for Arc<ArrayQueue<T>> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value)
    }
}

impl<T> Rx<T> for Arc<ArrayQueue<T>> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T> Tx<T> for Arc<SegQueue<T>> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value);
        Ok(())
    }
}

impl<T> Rx<T> for Arc<SegQueue<T>> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T> Tx<T> for crossbeam_channel::Sender<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        match crossbeam_channel::Sender::try_send(self, value) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(value)) => Err(value),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                panic!("the benchmark's receiver hung up early")
            }
        }
    }
}

impl<T> Rx<T> for crossbeam_channel::Receiver<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        crossbeam_channel::Receiver::try_recv(self).ok()
    }
}

impl<T> Tx<T> for std::sync::mpsc::SyncSender<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        match std::sync::mpsc::SyncSender::try_send(self, value) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(value)) => Err(value),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                panic!("the benchmark's receiver hung up early")
            }
        }
    }
}

impl<T> Rx<T> for std::sync::mpsc::Receiver<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        std::sync::mpsc::Receiver::try_recv(self).ok()
    }
}

impl<T> Tx<T> for rtrb::Producer<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value).map_err(|rtrb::PushError::Full(value)| value)
    }
}

impl<T> Rx<T> for rtrb::Consumer<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop().ok()
    }
}

impl<T: Copy> BatchTx<T> for rtrb::Producer<T> {
    #[inline]
    fn send_slice(&mut self, values: &[T]) -> usize {
        self.push_partial_slice(values).0.len()
    }
}

impl<T: Copy> BatchRx<T> for rtrb::Consumer<T> {
    #[inline]
    fn recv_slice(&mut self, out: &mut [T]) -> usize {
        self.pop_partial_slice(out).0.len()
    }
}

impl<T> Tx<T> for crossbeam_deque::Worker<T> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.push(value);
        Ok(())
    }
}

impl<T> Rx<T> for crossbeam_deque::Worker<T> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }
}

/// The two ends of one queue used from one thread.
struct Both<S, R> {
    tx: S,
    rx: R,
}

impl<T, S: Tx<T>, R> Tx<T> for Both<S, R> {
    #[inline]
    fn try_send(&mut self, value: T) -> Result<(), T> {
        self.tx.try_send(value)
    }
}

impl<T, S, R: Rx<T>> Rx<T> for Both<S, R> {
    #[inline]
    fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv()
    }
}

// ---------------------------------------------------------------------------
// The queues, as the groups build them.

fn zbmd_spsc<T>() -> (spsc::Producer<T>, spsc::Consumer<T>) {
    spsc::channel(QUEUE_CAPACITY).expect("valid capacity")
}

fn zbmd_mpmc<T>() -> Arc<MpmcQueue<T>> {
    Arc::new(MpmcQueue::with_capacity(QUEUE_CAPACITY).expect("valid capacity"))
}

fn array_queue<T>() -> Arc<ArrayQueue<T>> {
    Arc::new(ArrayQueue::new(QUEUE_CAPACITY))
}

// ---------------------------------------------------------------------------
// Runners.

/// Sends `value` until the queue takes it.
#[inline]
fn send_blocking<T, S: Tx<T>>(tx: &mut S, mut value: T) {
    let mut backoff = Backoff::new();
    loop {
        match tx.try_send(value) {
            Ok(()) => return,
            Err(back) => {
                value = back;
                backoff.snooze();
            }
        }
    }
}

/// Receives one value, waiting as long as it takes.
#[inline]
fn recv_blocking<T, R: Rx<T>>(rx: &mut R) -> T {
    let mut backoff = Backoff::new();
    loop {
        if let Some(value) = rx.try_recv() {
            return value;
        }
        backoff.snooze();
    }
}

/// Moves `total` elements from the producers to the consumers, each
/// producer sending an equal share of the sequence numbers `0..total` and
/// each consumer receiving an equal share; returns the time it took and
/// checks that every sequence number arrived exactly once (by their sum).
fn run_queue<T, S, R>(txs: Vec<S>, rxs: Vec<R>, total: u64, placement: Placement) -> Duration
where
    T: Element,
    S: Tx<T> + Send,
    R: Rx<T> + Send,
{
    let per_producer = total / txs.len() as u64;
    let per_consumer = total / rxs.len() as u64;
    assert_eq!(per_producer * txs.len() as u64, total, "producers split the elements evenly");
    assert_eq!(per_consumer * rxs.len() as u64, total, "consumers split the elements evenly");
    let producers: Vec<_> = txs
        .into_iter()
        .map(|mut tx| {
            move |index: usize| {
                let first = index as u64 * per_producer;
                for seq in first..first + per_producer {
                    send_blocking(&mut tx, T::from_seq(seq));
                }
            }
        })
        .collect();
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            move |_index: usize| {
                let mut sum = 0u64;
                for _ in 0..per_consumer {
                    sum = sum.wrapping_add(recv_blocking(&mut rx).seq());
                }
                sum
            }
        })
        .collect();
    let (elapsed, sum) = run_threads(producers, consumers, placement);
    assert_eq!(sum, seq_sum(total), "every element arrives exactly once");
    elapsed
}

/// Like [`run_queue`] for one pinned producer and one pinned consumer that
/// move `BATCH_LEN` elements per call.
fn run_batched<T, S, R>(mut tx: S, mut rx: R, total: u64) -> Duration
where
    T: Element,
    S: BatchTx<T> + Send,
    R: BatchRx<T> + Send,
{
    let producer = move |_index: usize| {
        let mut buffer = [T::from_seq(0); BATCH_LEN];
        let mut next = 0u64;
        while next < total {
            let len = (total - next).min(BATCH_LEN as u64) as usize;
            for (offset, slot) in buffer[..len].iter_mut().enumerate() {
                *slot = T::from_seq(next + offset as u64);
            }
            let mut sent = 0;
            let mut backoff = Backoff::new();
            while sent < len {
                let n = tx.send_slice(&buffer[sent..len]);
                if n == 0 {
                    backoff.snooze();
                } else {
                    sent += n;
                    backoff.reset();
                }
            }
            next += len as u64;
        }
    };
    let consumer = move |_index: usize| {
        let mut buffer = [T::from_seq(0); BATCH_LEN];
        let mut received = 0u64;
        let mut sum = 0u64;
        let mut backoff = Backoff::new();
        while received < total {
            let want = (total - received).min(BATCH_LEN as u64) as usize;
            let n = rx.recv_slice(&mut buffer[..want]);
            if n == 0 {
                backoff.snooze();
                continue;
            }
            backoff.reset();
            for value in &buffer[..n] {
                sum = sum.wrapping_add(value.seq());
            }
            received += n as u64;
        }
        sum
    };
    let (elapsed, sum) = run_threads(vec![producer], vec![consumer], Placement::Pinned);
    assert_eq!(sum, seq_sum(total), "every element arrives exactly once");
    elapsed
}

// ---------------------------------------------------------------------------
// Group settings.

/// The settings of a group whose benchmarks run threads. Each sample moves
/// many elements with fresh threads and a fresh queue, so samples land in
/// different producer/consumer regimes (the queue running near empty or near
/// full): 20 samples with the same iteration count (flat sampling) give a
/// usable median, and the whole file stays near four minutes on two cores.
fn threaded(group: &mut BenchmarkGroup<'_, WallTime>, elements_per_iter: u64) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(elements_per_iter));
}

// ---------------------------------------------------------------------------
// 1. push_pop_1thread

fn push_pop<T: Element, Q: Tx<T> + Rx<T>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mut queue: Q,
) {
    let value = T::from_seq(1);
    group.bench_function(BenchmarkId::new(T::NAME, name), |b| {
        b.iter(|| {
            if queue.try_send(black_box(value)).is_err() {
                panic!("{name}: an empty queue refused a push");
            }
            black_box(queue.try_recv().expect("the value just pushed"))
        })
    });
}

fn push_pop_1thread_of<T: Element>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (tx, rx) = zbmd_spsc::<T>();
    push_pop(group, "zbmd-spsc", Both { tx, rx });
    let (tx, rx) = mpsc_queue::<T>();
    push_pop(group, "zbmd-mpsc", Both { tx, rx });
    push_pop(group, "zbmd-mpmc", zbmd_mpmc::<T>());
    let (worker, _stealer) = deque::bounded::<T>(QUEUE_CAPACITY).expect("valid capacity");
    push_pop(group, "zbmd-deque", worker);
    push_pop(group, "ArrayQueue", array_queue::<T>());
    push_pop(group, "SegQueue", Arc::new(SegQueue::<T>::new()));
    let (tx, rx) = crossbeam_channel::bounded::<T>(QUEUE_CAPACITY);
    push_pop(group, "crossbeam-channel", Both { tx, rx });
    let (tx, rx) = rtrb::RingBuffer::<T>::new(QUEUE_CAPACITY);
    push_pop(group, "rtrb", Both { tx, rx });
    let (tx, rx) = std::sync::mpsc::sync_channel::<T>(QUEUE_CAPACITY);
    push_pop(group, "std-sync_channel", Both { tx, rx });
    push_pop(group, "crossbeam-deque", crossbeam_deque::Worker::<T>::new_lifo());
}

/// Not a queue: one uncontended compare-and-swap on each of two private
/// counters (a queue's `tail` and `head`), the floor under any queue that
/// claims both its push and its pop with a CAS (Vyukov's MPMC, crossbeam's
/// `ArrayQueue`). Shows what the machine's atomics cost next to the 10 ns
/// target.
fn two_cas_floor(group: &mut BenchmarkGroup<'_, WallTime>) {
    let counters = [AtomicU64::new(0), AtomicU64::new(0)];
    group.bench_function(BenchmarkId::new(u64::NAME, "ref-2cas"), |b| {
        b.iter(|| {
            for counter in black_box(&counters) {
                let seen = counter.load(Ordering::Relaxed);
                let swapped = counter.compare_exchange_weak(
                    seen,
                    seen + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                black_box(swapped.is_ok());
            }
        })
    });
}

fn push_pop_1thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_pop_1thread");
    // A push and a pop take nanoseconds: a second of measurement is millions
    // of iterations, and 50 samples give a tight interval.
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    push_pop_1thread_of::<u64>(&mut group);
    two_cas_floor(&mut group);
    push_pop_1thread_of::<Msg64>(&mut group);
    group.finish();
}

// ---------------------------------------------------------------------------
// 2. spsc_throughput: 1 producer on core 0, 1 consumer on core 1.

fn one_to_one<T, S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    make: impl Fn() -> (S, R),
) where
    T: Element,
    S: Tx<T> + Send,
    R: Rx<T> + Send,
{
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = make();
            run_queue::<T, S, R>(vec![tx], vec![rx], iters * ELEMENTS_PER_ITER, Placement::Pinned)
        })
    });
}

fn one_to_one_batched<T, S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    make: impl Fn() -> (S, R),
) where
    T: Element,
    S: BatchTx<T> + Send,
    R: BatchRx<T> + Send,
{
    group.bench_function(BenchmarkId::new(T::NAME, name), |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = make();
            run_batched::<T, S, R>(tx, rx, iters * ELEMENTS_PER_ITER)
        })
    });
}

fn spsc_throughput_of<T: Element>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let id = |name: &str| BenchmarkId::new(T::NAME, name);
    one_to_one::<T, _, _>(group, id("zbmd-spsc"), zbmd_spsc::<T>);
    one_to_one_batched::<T, _, _>(group, "zbmd-spsc-batch", zbmd_spsc::<T>);
    let rtrb_ring = || rtrb::RingBuffer::<T>::new(QUEUE_CAPACITY);
    one_to_one::<T, _, _>(group, id("rtrb"), rtrb_ring);
    one_to_one_batched::<T, _, _>(group, "rtrb-chunk", rtrb_ring);
    one_to_one::<T, _, _>(group, id("ArrayQueue"), || {
        let queue = array_queue::<T>();
        (queue.clone(), queue)
    });
}

fn spsc_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_throughput");
    threaded(&mut group, ELEMENTS_PER_ITER);
    spsc_throughput_of::<u64>(&mut group);
    spsc_throughput_of::<Msg64>(&mut group);
    group.finish();
}

// ---------------------------------------------------------------------------
// 3. mpsc_2producers: 2 producers + 1 consumer, unpinned (3 threads, 2 cores).

fn many_to_many<T, S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    shape: (usize, usize, Placement),
    make: impl Fn() -> (S, R),
) where
    T: Element,
    S: Tx<T> + Send + Clone,
    R: Rx<T> + Send + Clone,
{
    let (producers, consumers, placement) = shape;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = make();
            let txs = vec![tx; producers];
            let rxs = vec![rx; consumers];
            run_queue::<T, S, R>(txs, rxs, iters * ELEMENTS_PER_ITER, placement)
        })
    });
}

/// [`many_to_many`] for queues with one consumer, whose receiving side is
/// not `Clone`.
fn many_to_one<T, S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    producers: usize,
    make: impl Fn() -> (S, R),
) where
    T: Element,
    S: Tx<T> + Send + Clone,
    R: Rx<T> + Send,
{
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = make();
            let txs = vec![tx; producers];
            run_queue::<T, S, R>(txs, vec![rx], iters * ELEMENTS_PER_ITER, Placement::Unpinned)
        })
    });
}

fn mpsc_2producers_of<T: Element>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let id = |name: &str| BenchmarkId::new(T::NAME, name);
    many_to_one::<T, _, _>(group, id("zbmd-mpsc"), 2, mpsc_queue::<T>);
    many_to_one::<T, _, _>(group, id("crossbeam-channel"), 2, || {
        crossbeam_channel::bounded::<T>(QUEUE_CAPACITY)
    });
    many_to_one::<T, _, _>(group, id("std-sync_channel"), 2, || {
        std::sync::mpsc::sync_channel::<T>(QUEUE_CAPACITY)
    });
    many_to_one::<T, _, _>(group, id("ArrayQueue"), 2, || {
        let queue = array_queue::<T>();
        (queue.clone(), queue)
    });
}

fn mpsc_2producers(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpsc_2producers");
    threaded(&mut group, ELEMENTS_PER_ITER);
    mpsc_2producers_of::<u64>(&mut group);
    mpsc_2producers_of::<Msg64>(&mut group);
    group.finish();
}

// ---------------------------------------------------------------------------
// 4. mpmc: 2 producers + 2 consumers unpinned (4 threads, 2 cores), and
//    1 producer + 1 consumer pinned to cores 0 and 1.

fn mpmc_of<T: Element>(group: &mut BenchmarkGroup<'_, WallTime>, shape: (usize, usize, Placement)) {
    let case = format!("{}-{}p{}c", T::NAME, shape.0, shape.1);
    let id = |name: &str| BenchmarkId::new(case.as_str(), name);
    many_to_many::<T, _, _>(group, id("zbmd-mpmc"), shape, || {
        let queue = zbmd_mpmc::<T>();
        (queue.clone(), queue)
    });
    many_to_many::<T, _, _>(group, id("ArrayQueue"), shape, || {
        let queue = array_queue::<T>();
        (queue.clone(), queue)
    });
    many_to_many::<T, _, _>(group, id("crossbeam-channel"), shape, || {
        crossbeam_channel::bounded::<T>(QUEUE_CAPACITY)
    });
    many_to_many::<T, _, _>(group, id("SegQueue"), shape, || {
        let queue = Arc::new(SegQueue::<T>::new());
        (queue.clone(), queue)
    });
}

fn mpmc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpmc");
    threaded(&mut group, ELEMENTS_PER_ITER);
    for shape in [(2, 2, Placement::Unpinned), (1, 1, Placement::Pinned)] {
        mpmc_of::<u64>(&mut group, shape);
        mpmc_of::<Msg64>(&mut group, shape);
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// 5. steal: the owner (core 0) fills its deque, then a thief (core 1) steals
//    until it has taken every element; the next round starts when the thief
//    is done. Only the thief's stealing is timed (the owner's push is
//    `push_pop_1thread`'s business, and the hand-off between rounds is the
//    harness's): the figure is one steal per element, with the element's
//    cache line coming over from the owner's core.

/// What a thief does in one attempt.
enum Taken {
    One(u64),
    Nothing,
}

/// The owner's side of a deque under test.
trait Owner: Send {
    fn push_one(&self, value: u64) -> bool;
}

/// The thief's side: single steals, or batch steals into its own deque.
trait Thief: Send {
    fn steal_one(&mut self) -> Taken;
    fn steal_batch_pop(&mut self) -> Taken;
    fn pop_local(&mut self) -> Option<u64>;
}

impl Owner for deque::Worker<u64> {
    fn push_one(&self, value: u64) -> bool {
        self.push(value).is_ok()
    }
}

struct ZbmdThief {
    stealer: deque::Stealer<u64>,
    local: deque::Worker<u64>,
}

impl Thief for ZbmdThief {
    #[inline]
    fn steal_one(&mut self) -> Taken {
        match self.stealer.steal() {
            deque::Steal::Success(value) => Taken::One(value),
            deque::Steal::Empty | deque::Steal::Retry => Taken::Nothing,
        }
    }
    #[inline]
    fn steal_batch_pop(&mut self) -> Taken {
        match self.stealer.steal_batch_and_pop(&self.local, STEAL_BATCH_MAX) {
            deque::Steal::Success(value) => Taken::One(value),
            deque::Steal::Empty | deque::Steal::Retry => Taken::Nothing,
        }
    }
    #[inline]
    fn pop_local(&mut self) -> Option<u64> {
        self.local.pop()
    }
}

impl Owner for crossbeam_deque::Worker<u64> {
    fn push_one(&self, value: u64) -> bool {
        self.push(value);
        true
    }
}

struct CrossbeamThief {
    stealer: crossbeam_deque::Stealer<u64>,
    local: crossbeam_deque::Worker<u64>,
}

impl Thief for CrossbeamThief {
    #[inline]
    fn steal_one(&mut self) -> Taken {
        match self.stealer.steal() {
            crossbeam_deque::Steal::Success(value) => Taken::One(value),
            crossbeam_deque::Steal::Empty | crossbeam_deque::Steal::Retry => Taken::Nothing,
        }
    }
    #[inline]
    fn steal_batch_pop(&mut self) -> Taken {
        match self.stealer.steal_batch_with_limit_and_pop(&self.local, STEAL_BATCH_MAX) {
            crossbeam_deque::Steal::Success(value) => Taken::One(value),
            crossbeam_deque::Steal::Empty | crossbeam_deque::Steal::Retry => Taken::Nothing,
        }
    }
    #[inline]
    fn pop_local(&mut self) -> Option<u64> {
        self.local.pop()
    }
}

/// A round counter on its own cache-line pair, so the owner's and the
/// thief's counters do not share a line.
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

/// Waits until `counter` reaches `value`.
fn wait_for(counter: &AtomicU64, value: u64) {
    let mut backoff = Backoff::new();
    while counter.load(Ordering::Acquire) < value {
        backoff.snooze();
    }
}

/// Runs `rounds` steal rounds; returns the time the thief spent stealing.
fn run_steal<O: Owner, H: Thief>(owner: O, mut thief: H, rounds: u64, batch: bool) -> Duration {
    let mut stealing = Duration::ZERO;
    let stealing_total = &mut stealing;
    let filled = PaddedCounter(AtomicU64::new(0));
    let drained = PaddedCounter(AtomicU64::new(0));
    let (filled, drained) = (&filled.0, &drained.0);
    let round_len = STEAL_ROUND_LEN as u64;
    let owner_side = move |_index: usize| {
        for round in 0..rounds {
            wait_for(drained, round);
            for offset in 0..round_len {
                assert!(owner.push_one(round * round_len + offset), "the deque holds a round");
            }
            filled.store(round + 1, Ordering::Release);
        }
    };
    let thief_side = move |_index: usize| {
        let mut sum = 0u64;
        for round in 0..rounds {
            wait_for(filled, round + 1);
            let round_start = Instant::now();
            let mut taken = 0;
            let mut backoff = Backoff::new();
            while taken < round_len {
                let got = if !batch {
                    thief.steal_one()
                } else if let Some(value) = thief.pop_local() {
                    Taken::One(value)
                } else {
                    thief.steal_batch_pop()
                };
                match got {
                    Taken::One(value) => {
                        sum = sum.wrapping_add(value);
                        taken += 1;
                    }
                    Taken::Nothing => backoff.snooze(),
                }
            }
            *stealing_total += round_start.elapsed();
            drained.store(round + 1, Ordering::Release);
        }
        sum
    };
    let (_, sum) = run_threads(vec![owner_side], vec![thief_side], Placement::Pinned);
    assert_eq!(sum, seq_sum(rounds * round_len), "every element is stolen exactly once");
    stealing
}

fn steal(c: &mut Criterion) {
    let mut group = c.benchmark_group("steal");
    threaded(&mut group, STEAL_ROUND_LEN as u64);
    for (mode, batch) in [("single", false), ("batch", true)] {
        group.bench_function(format!("zbmd-deque-{mode}"), |b| {
            b.iter_custom(|rounds| {
                let (owner, stealer) = deque::bounded::<u64>(STEAL_ROUND_LEN).expect("capacity");
                let (local, _) = deque::bounded::<u64>(STEAL_BATCH_MAX).expect("capacity");
                run_steal(owner, ZbmdThief { stealer, local }, rounds, batch)
            })
        });
        group.bench_function(format!("crossbeam-deque-{mode}"), |b| {
            b.iter_custom(|rounds| {
                let owner = crossbeam_deque::Worker::new_lifo();
                let stealer = owner.stealer();
                let local = crossbeam_deque::Worker::new_lifo();
                run_steal(owner, CrossbeamThief { stealer, local }, rounds, batch)
            })
        });
    }
    group.finish();
}

criterion_group!(queues, push_pop_1thread, spsc_throughput, mpsc_2producers, mpmc, steal);
criterion_main!(queues);
