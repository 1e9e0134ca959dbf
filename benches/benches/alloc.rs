//! zbmd-alloc against its peers: allocate and free one object, side by side
//! in one run, on one thread and across two threads.
//!
//! | group | threads | zbmd | peers |
//! |---|---|---|---|
//! | `alloc_free_1thread/<size>/<impl>` | 1 | `BufPool` (owner alloc + local free), `ShardPools` (class lookup too) | system allocator, mimalloc, `slab` |
//! | `alloc_free_cross_thread/<size>/<impl>` | owner + freer, pinned | `BufPool` (owner alloc, remote free, drain) | system allocator, mimalloc, `slab` behind a `Mutex` |
//!
//! Sizes: 64 B (a message), 4 KiB (a page), 1 MiB (a tensor chunk).
//!
//! * The system allocator (`std::alloc::System`, glibc malloc here) and
//!   mimalloc (the crate's `MiMalloc`, called as a plain `GlobalAlloc`, not
//!   installed as the global allocator) get `Layout(size, 16)`.
//! * `slab` holds `MaybeUninit<[u8; size]>` entries in a slab preallocated
//!   to the pool's capacity, so an insert neither grows it nor writes the
//!   payload. It has no cross-thread free: there it sits behind a `Mutex`,
//!   the usual way to share it.
//! * In the cross-thread group the owner allocates and pushes the handle
//!   through a bounded SPSC ring (`zbmd_rt::sync::spsc`, capacity
//!   [`RING`]) to a second thread that frees it: every implementation pays
//!   the same hand-off, and the figure is per object, alloc to free.
//!
//! Nothing touches the payload: these measure the allocators, not memset.
//! Smoke-run with `cargo bench -p zbmd-benches --bench alloc -- --quick`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use mimalloc::MiMalloc;
use slab::Slab;
use zbmd_alloc::{BufPool, HugePages, Region, RegionConfig, ShardPools};
use zbmd_benches::{Backoff, pin_to_core};
use zbmd_rt::sync::spsc;

/// Handles in flight between the owner and the freer: enough that neither
/// side waits on the other in steady state, few enough to stay in cache.
const RING: usize = 64;

/// Blocks per pool (and slab capacity): the ring plus what each side holds,
/// with room to spare, so the owner rarely finds its pool empty.
const BLOCKS: usize = 4 * RING;

/// Peers' alignment: what a byte buffer asks for by default on x86_64.
const ALIGN: usize = 16;

/// One size under test.
trait Size {
    const BYTES: usize;
    const NAME: &'static str;
    type Payload: Send + 'static;
}

struct B64;
impl Size for B64 {
    const BYTES: usize = 64;
    const NAME: &'static str = "64B";
    type Payload = [u8; 64];
}

struct K4;
impl Size for K4 {
    const BYTES: usize = 4 << 10;
    const NAME: &'static str = "4KiB";
    type Payload = [u8; 4 << 10];
}

struct M1;
impl Size for M1 {
    const BYTES: usize = 1 << 20;
    const NAME: &'static str = "1MiB";
    type Payload = [u8; 1 << 20];
}

/// A pointer from a peer allocator, sent to the freeing thread.
struct SendPtr(NonNull<u8>);
// SAFETY: the pointer is a plain allocation that only the receiving thread
// uses (to free it); both peers allow freeing on another thread.
unsafe impl Send for SendPtr {}

/// A `GlobalAlloc` as a plain allocator.
fn alloc_with<A: GlobalAlloc>(a: &A, layout: Layout) -> Option<SendPtr> {
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { a.alloc(layout) }).map(SendPtr)
}

fn free_with<A: GlobalAlloc>(a: &A, ptr: SendPtr, layout: Layout) {
    // SAFETY: `ptr` came from `a.alloc(layout)` and is freed once.
    unsafe { a.dealloc(ptr.0.as_ptr(), layout) }
}

/// A bound pool of `BLOCKS` blocks of `S::BYTES` (transparent hugepages
/// where the machine has them, as a shard's would).
fn zbmd_pool<S: Size>() -> BufPool {
    let bytes = (S::BYTES.max(4096) + 4096) * BLOCKS;
    let region = Region::map(RegionConfig::new("bench", bytes).hugepages(HugePages::Transparent))
        .expect("region");
    let pool = BufPool::new(&region, S::NAME, S::BYTES, BLOCKS).expect("pool");
    pool.bind_current_thread().expect("bind");
    pool
}

fn alloc_free_1thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free_1thread");
    group.throughput(Throughput::Elements(1));
    one_thread::<B64>(&mut group);
    one_thread::<K4>(&mut group);
    one_thread::<M1>(&mut group);
    group.finish();
}

fn one_thread<S: Size>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let id = |name: &str| format!("{}/{name}", S::NAME);
    let layout = Layout::from_size_align(S::BYTES, ALIGN).expect("layout");

    let pool = zbmd_pool::<S>();
    group.bench_function(id("zbmd"), |b| {
        b.iter(|| drop(black_box(pool.alloc(S::BYTES).expect("room"))));
    });
    drop(pool);

    let shard = ShardPools::builder()
        .classes([(64, BLOCKS), (4 << 10, BLOCKS), (64 << 10, 16), (1 << 20, BLOCKS)])
        .hugepages(HugePages::Transparent)
        .build()
        .expect("shard pools");
    shard.bind_current_thread().expect("bind");
    group.bench_function(id("zbmd_shard"), |b| {
        b.iter(|| drop(black_box(shard.alloc_buf(black_box(S::BYTES)).expect("room"))));
    });
    drop(shard);

    group.bench_function(id("system"), |b| {
        b.iter(|| free_with(&System, black_box(alloc_with(&System, layout).expect("mem")), layout));
    });
    group.bench_function(id("mimalloc"), |b| {
        b.iter(|| {
            free_with(&MiMalloc, black_box(alloc_with(&MiMalloc, layout).expect("mem")), layout);
        });
    });
    let mut slab: Slab<MaybeUninit<S::Payload>> = Slab::with_capacity(BLOCKS);
    group.bench_function(id("slab"), |b| {
        b.iter(|| {
            let key = black_box(slab.insert(MaybeUninit::uninit()));
            let _ = slab.remove(key);
        });
    });
}

fn alloc_free_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free_cross_thread");
    group.throughput(Throughput::Elements(1));
    if !pin_to_core(0) {
        eprintln!("alloc bench: could not pin the owner thread; running unpinned");
    }
    cross_thread_all::<B64>(&mut group);
    cross_thread_all::<K4>(&mut group);
    cross_thread_all::<M1>(&mut group);
    group.finish();
}

fn cross_thread_all<S: Size>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let id = |name: &str| format!("{}/{name}", S::NAME);
    let layout = Layout::from_size_align(S::BYTES, ALIGN).expect("layout");

    let pool = zbmd_pool::<S>();
    group.bench_function(id("zbmd"), |b| {
        b.iter_custom(|iters| cross_thread(iters, || pool.alloc(S::BYTES).ok(), drop));
    });
    drop(pool);
    group.bench_function(id("system"), |b| {
        b.iter_custom(|iters| {
            cross_thread(iters, || alloc_with(&System, layout), |p| free_with(&System, p, layout))
        });
    });
    group.bench_function(id("mimalloc"), |b| {
        b.iter_custom(|iters| {
            cross_thread(
                iters,
                || alloc_with(&MiMalloc, layout),
                |p| free_with(&MiMalloc, p, layout),
            )
        });
    });
    let slab: Mutex<Slab<MaybeUninit<S::Payload>>> = Mutex::new(Slab::with_capacity(BLOCKS));
    let lock = || slab.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    group.bench_function(id("slab_mutex"), |b| {
        b.iter_custom(|iters| {
            cross_thread(
                iters,
                || {
                    let mut slab = lock();
                    (slab.len() < BLOCKS).then(|| slab.insert(MaybeUninit::uninit()))
                },
                |key| {
                    let _ = lock().remove(key);
                },
            )
        });
    });
}

/// The owner (this thread) allocates `iters` objects and pushes each
/// through the ring; a second thread pops and frees them. The time runs from
/// the first allocation to the last free.
fn cross_thread<H: Send>(
    iters: u64,
    mut alloc: impl FnMut() -> Option<H>,
    free: impl Fn(H) + Sync,
) -> Duration {
    let (mut tx, mut rx) = spsc::channel::<H>(RING).expect("ring");
    std::thread::scope(|scope| {
        let free = &free;
        let freer = scope.spawn(move || {
            pin_to_core(1);
            let mut backoff = Backoff::new();
            let mut freed = 0;
            while freed < iters {
                match rx.pop() {
                    Some(handle) => {
                        free(handle);
                        freed += 1;
                        backoff.reset();
                    }
                    None => backoff.snooze(),
                }
            }
            Instant::now()
        });
        let start = Instant::now();
        let mut backoff = Backoff::new();
        for _ in 0..iters {
            // The pool (or slab) is empty only while the freer lags.
            let mut handle = loop {
                match alloc() {
                    Some(handle) => break handle,
                    None => backoff.snooze(),
                }
            };
            backoff.reset();
            while let Err(full) = tx.push(handle) {
                handle = full.into_inner();
                backoff.snooze();
            }
            backoff.reset();
        }
        let end = freer.join().expect("the freer panicked");
        end.duration_since(start)
    })
}

criterion_group!(alloc, alloc_free_1thread, alloc_free_cross_thread);
criterion_main!(alloc);
