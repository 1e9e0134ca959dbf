//! The pools' promises: bounded with a named error, owner-only allocation,
//! remote frees that come home, stats, generations, and the buffers'
//! sharing rules.
#![cfg(not(zbmd_loom))]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use zbmd_alloc::{
    AllocError, BufPool, HugePages, PoolArc, PoolBox, Region, RegionConfig, ShardPools, TypedPool,
    to_prometheus,
};

fn region(bytes: usize) -> Region {
    Region::map(RegionConfig::new("test", bytes).hugepages(HugePages::Off)).expect("region")
}

fn bound_buf_pool(block_bytes: usize, blocks: usize) -> BufPool {
    let pool =
        BufPool::new(&region(block_bytes.max(4096) * (blocks + 1)), "bufs", block_bytes, blocks)
            .expect("pool");
    pool.bind_current_thread().expect("bind");
    pool
}

#[test]
fn exhaustion_names_the_pool_and_its_limit_and_recovers_after_a_free() {
    let pool = bound_buf_pool(64, 3);
    let held: Vec<_> = (0..3).map(|_| pool.alloc(64).expect("room")).collect();
    match pool.alloc(1) {
        Err(AllocError::PoolExhausted { pool, limit }) => {
            assert_eq!((&*pool, limit), ("bufs", 3));
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(pool.stats().exhausted, 1);
    drop(held);
    assert!(pool.alloc(64).is_ok());

    let region = region(1 << 16);
    let typed = TypedPool::<u64>::new(&region, "words", 2).unwrap();
    typed.bind_current_thread().unwrap();
    let _a = typed.alloc(1).unwrap();
    let _b = typed.alloc(2).unwrap();
    let made = AtomicUsize::new(0);
    let refused = typed.alloc_with(|| {
        made.fetch_add(1, Ordering::Relaxed);
        3
    });
    assert!(matches!(refused, Err(AllocError::PoolExhausted { limit: 2, .. })));
    assert_eq!(made.load(Ordering::Relaxed), 0, "the value was built for a full pool");
}

#[test]
fn a_full_class_never_borrows_from_a_larger_one() {
    let pools = ShardPools::builder()
        .shard(3)
        .classes([(64, 2), (4096, 4)])
        .hugepages(HugePages::Off)
        .build()
        .unwrap();
    pools.bind_current_thread().unwrap();
    let _held = (pools.alloc_buf(10).unwrap(), pools.alloc_buf(64).unwrap());
    match pools.alloc_buf(64) {
        Err(AllocError::PoolExhausted { pool, limit }) => {
            assert_eq!((&*pool, limit), ("shard3.buf-64B", 2));
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(pools.alloc_buf(65).unwrap().capacity(), 4096);
    assert!(matches!(
        pools.alloc_buf(4097),
        Err(AllocError::BufferTooLarge { requested_bytes: 4097, max_bytes: 4096, .. })
    ));
}

#[test]
fn only_the_owner_allocates_and_binding_is_once() {
    let region = region(1 << 16);
    let pool = Arc::new(BufPool::new(&region, "owned", 64, 4).unwrap());
    assert!(matches!(pool.alloc(1), Err(AllocError::NotOwner { .. })), "unbound pool allocated");
    pool.bind_current_thread().unwrap();
    assert!(matches!(pool.bind_current_thread(), Err(AllocError::AlreadyBound { .. })));
    let other = Arc::clone(&pool);
    thread::spawn(move || {
        assert!(matches!(other.alloc(1), Err(AllocError::NotOwner { .. })));
        assert!(matches!(other.drain_remote(), Err(AllocError::NotOwner { .. })));
        assert!(matches!(other.bind_current_thread(), Err(AllocError::AlreadyBound { .. })));
    })
    .join()
    .unwrap();
    assert!(pool.alloc(1).is_ok());
}

/// Every block is freed on other threads; the owner gets all of them back,
/// the same blocks, and counts them as remote frees.
#[test]
fn remote_frees_from_other_threads_return_the_same_slots_home() {
    const BLOCKS: usize = 64;
    let pool = bound_buf_pool(256, BLOCKS);
    let bufs: Vec<_> = (0..BLOCKS).map(|_| pool.alloc(256).unwrap()).collect();
    let first: HashSet<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(first.len(), BLOCKS, "two live buffers share a block");
    let mut chunks: Vec<Vec<_>> = (0..4).map(|_| Vec::new()).collect();
    for (i, buf) in bufs.into_iter().enumerate() {
        chunks[i % 4].push(buf);
    }
    let freers: Vec<_> = chunks.into_iter().map(|c| thread::spawn(move || drop(c))).collect();
    for freer in freers {
        freer.join().unwrap();
    }
    // Not taken back yet: the owner's free list did not run dry.
    assert_eq!(pool.stats().in_use, BLOCKS);
    let again: Vec<_> = (0..BLOCKS).map(|_| pool.alloc(256).expect("came home")).collect();
    let second: HashSet<usize> = again.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(first, second, "the blocks that came home are not the ones that left");
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.high_water, stats.remote_frees), (BLOCKS, BLOCKS, 64));
}

#[test]
fn drain_remote_takes_blocks_back_on_demand() {
    let pool = bound_buf_pool(64, 8);
    let bufs: Vec<_> = (0..5).map(|_| pool.alloc(8).unwrap()).collect();
    thread::spawn(move || drop(bufs)).join().unwrap();
    assert_eq!(pool.stats().in_use, 5);
    assert_eq!(pool.drain_remote().unwrap(), 5);
    assert_eq!(pool.drain_remote().unwrap(), 0);
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.remote_frees, stats.high_water), (0, 5, 5));
}

#[test]
fn stats_track_in_use_and_high_water_and_render_for_prometheus() {
    let pools = ShardPools::builder()
        .shard(1)
        .classes([(64, 4), (1024, 2)])
        .hugepages(HugePages::Off)
        .typed_bytes(4096)
        .build()
        .unwrap();
    pools.bind_current_thread().unwrap();
    let words = pools.typed_pool::<u64>("words", 8).unwrap();
    let a = pools.alloc_buf(1).unwrap();
    let b = pools.alloc_buf(2).unwrap();
    let c = pools.alloc_buf(3).unwrap();
    let w = words.alloc(7).unwrap();
    drop((a, b));
    let stats = pools.stats();
    let small = &stats[0];
    assert_eq!((small.capacity, small.in_use, small.high_water), (4, 1, 3));
    assert_eq!((&*stats[2].pool, stats[2].in_use, stats[2].shard), ("shard1.words", 1, Some(1)));
    let text = pools.to_prometheus();
    assert!(text.contains("# TYPE zbmd_pool_in_use_blocks gauge"));
    assert!(text.contains("zbmd_pool_in_use_blocks{pool=\"shard1.buf-64B\",shard=\"1\"} 1"));
    assert!(text.contains("zbmd_pool_high_water_blocks{pool=\"shard1.buf-64B\",shard=\"1\"} 3"));
    assert!(text.contains("zbmd_pool_capacity_blocks{pool=\"shard1.buf-1KiB\",shard=\"1\"} 2"));
    assert!(text.contains("zbmd_pool_in_use_blocks{pool=\"shard1.words\",shard=\"1\"} 1"));
    assert_eq!(to_prometheus(&stats), text);
    drop((c, w));
}

#[test]
fn slot_ids_of_freed_values_are_dead_even_after_the_slot_is_reused() {
    let region = region(1 << 16);
    let pool = TypedPool::<String>::new(&region, "strings", 1).unwrap();
    pool.bind_current_thread().unwrap();
    let first = pool.alloc("one".to_owned()).unwrap();
    let id = PoolBox::slot_id(&first);
    assert!(pool.is_live(id));
    drop(first);
    assert!(!pool.is_live(id));
    let second = pool.alloc("two".to_owned()).unwrap();
    let reused = PoolBox::slot_id(&second);
    assert_eq!(reused.index, id.index, "one slot: it must be reused");
    assert_ne!(reused.generation, id.generation);
    assert!(!pool.is_live(id) && pool.is_live(reused));
}

/// A value's `Drop` counts into this.
struct Counted(Arc<AtomicUsize>, u64);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

trait Describe {
    fn describe(&self) -> u64;
}

impl Describe for Counted {
    fn describe(&self) -> u64 {
        self.1
    }
}

#[test]
fn values_drop_once_wherever_the_box_drops_and_unsize_to_trait_objects() {
    let region = region(1 << 16);
    let pool = TypedPool::<Counted>::new(&region, "counted", 4).unwrap();
    pool.bind_current_thread().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let local = pool.alloc(Counted(drops.clone(), 1)).unwrap();
    let remote = pool.alloc(Counted(drops.clone(), 2)).unwrap();
    let dynamic: PoolBox<dyn Describe + Send> =
        PoolBox::unsize(pool.alloc(Counted(drops.clone(), 3)).unwrap(), |value| {
            value as &mut (dyn Describe + Send)
        });
    assert_eq!(dynamic.describe(), 3);
    drop(local);
    thread::spawn(move || drop((remote, dynamic))).join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    assert_eq!(pool.drain_remote().unwrap(), 2);
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
fn raw_parts_round_trip() {
    let region = region(1 << 16);
    let pool = TypedPool::<u64>::new(&region, "raw", 2).unwrap();
    pool.bind_current_thread().unwrap();
    let boxed = pool.alloc(41).unwrap();
    let (ptr, slot) = PoolBox::into_raw(boxed);
    // SAFETY: the pair from one into_raw, rebuilt once.
    let mut boxed = unsafe { PoolBox::from_raw(ptr, slot) };
    *boxed += 1;
    assert_eq!(*boxed, 42);
}

#[test]
#[should_panic(expected = "must return the whole value")]
fn unsize_refuses_a_part_of_the_value() {
    let region = region(1 << 16);
    let pool = TypedPool::<(u64, u64)>::new(&region, "pairs", 1).unwrap();
    pool.bind_current_thread().unwrap();
    let pair = pool.alloc((1, 2)).unwrap();
    let _part: PoolBox<dyn std::fmt::Debug> =
        PoolBox::unsize(pair, |pair| &mut pair.0 as &mut dyn std::fmt::Debug);
}

/// Debug builds catch a slot ticket used after its value was freed.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "stale handle")]
fn a_stale_raw_slot_is_caught_in_debug() {
    let region = region(1 << 16);
    let pool = TypedPool::<u64>::new(&region, "stale", 1).unwrap();
    pool.bind_current_thread().unwrap();
    let (ptr, slot) = PoolBox::into_raw(pool.alloc(1).unwrap());
    // SAFETY: (test) a bitwise copy of the ticket stands in for a bug in
    // unsafe code that keeps a second copy of a raw handle.
    let copy = unsafe { std::ptr::read(&slot) };
    // SAFETY: the pair from one into_raw, rebuilt once.
    drop(unsafe { PoolBox::from_raw(ptr, slot) });
    // SAFETY: deliberately violated: the debug check must refuse it
    // before anything touches the slot.
    let _ = unsafe { PoolBox::from_raw(ptr, copy) };
}

/// Debug builds catch the second free of one allocation.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "double free")]
fn a_double_free_is_caught_in_debug() {
    let region = region(1 << 16);
    let pool = TypedPool::<u64>::new(&region, "twice", 1).unwrap();
    pool.bind_current_thread().unwrap();
    let (ptr, slot) = PoolBox::into_raw(pool.alloc(1).unwrap());
    // SAFETY: (test) a copy of the ticket, as above.
    let copy = unsafe { std::ptr::read(&slot) };
    // SAFETY: deliberately violated: two boxes for one slot; the second
    // drop must panic instead of pushing the slot twice.
    let (a, b) = unsafe { (PoolBox::from_raw(ptr, slot), PoolBox::from_raw(ptr, copy)) };
    drop(a);
    drop(b);
}

/// Debug builds fill freed blocks with 0xDB, so a stale read is visible.
#[cfg(debug_assertions)]
#[test]
fn freed_blocks_are_poisoned_in_debug() {
    let pool = bound_buf_pool(128, 1);
    let mut buf = pool.alloc(128).unwrap();
    buf.fill(0x11);
    drop(buf);
    let again = pool.alloc(128).unwrap();
    assert!(again.iter().all(|&b| b == 0xDB), "a freed block kept its old bytes");
}

#[test]
fn zeroed_buffers_are_zero_and_set_len_is_bounded() {
    let pool = bound_buf_pool(256, 1);
    let mut buf = pool.alloc(256).unwrap();
    buf.fill(0x5A);
    drop(buf);
    let mut buf = pool.alloc_zeroed(100).unwrap();
    assert!(buf.iter().all(|&b| b == 0) && buf.len() == 100);
    buf.set_len(256).unwrap();
    assert!(matches!(buf.set_len(257), Err(AllocError::BufferTooLarge { .. })));
    assert_eq!(buf.len(), 256);
}

/// Clones and slices share the block; views dropped on several threads
/// send it home exactly once, when the last goes.
#[test]
fn shared_bufs_slice_and_clone_without_copying_and_the_last_drop_sends_the_block_home() {
    let pool = bound_buf_pool(4096, 2);
    let mut buf = pool.alloc(4096).unwrap();
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = i as u8;
    }
    let base = buf.as_ptr();
    let shared = buf.freeze();
    assert_eq!((shared.len(), shared.ref_count()), (4096, 1));
    let middle = shared.slice(1000..1010);
    assert_eq!(middle.as_ptr(), base.wrapping_add(1000), "a slice copied");
    assert_eq!(&middle[..], &(1000..1010).map(|i| i as u8).collect::<Vec<_>>()[..]);
    let inner = middle.slice(2..=3);
    assert_eq!(&inner[..], &[1002u16 as u8, 1003u16 as u8]);
    let (seven, three) = (7, 3); // a decreasing range, built at run time
    assert!(middle.try_slice(5..11).is_none() && middle.try_slice(seven..three).is_none());
    assert!(middle.try_slice(..).is_some_and(|all| all.len() == 10));
    assert_eq!(shared.ref_count(), 3);
    let views: Vec<_> = (0..8).map(|i| shared.slice(i * 100..i * 100 + 50)).collect();
    let handles: Vec<_> = views
        .into_iter()
        .map(|view| {
            thread::spawn(move || {
                let clone = view.clone();
                assert_eq!(clone.as_ptr(), view.as_ptr());
                drop((view, clone));
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(shared.ref_count(), 3);
    drop((middle, inner));
    assert_eq!(pool.stats().in_use, 1, "the block went home while a view was alive");
    thread::spawn(move || drop(shared)).join().unwrap();
    assert_eq!(pool.drain_remote().unwrap(), 1, "the block did not come home exactly once");
    assert_eq!(pool.stats().in_use, 0);
}

#[test]
#[should_panic(expected = "out of 0..10")]
fn slicing_out_of_bounds_panics_like_a_slice() {
    let pool = bound_buf_pool(64, 1);
    let shared = pool.alloc(10).unwrap().freeze();
    let _ = shared.slice(5..11);
}

/// A pool dropped while buffers are out stays alive (and its region
/// mapped) until the last buffer comes home, from whatever thread.
#[test]
fn a_dropped_pool_lives_until_its_last_buffer_comes_home() {
    let region = region(1 << 16);
    let pool = BufPool::new(&region, "closing", 64, 4).unwrap();
    pool.bind_current_thread().unwrap();
    let local = pool.alloc(64).unwrap();
    let mut remote = pool.alloc(64).unwrap();
    let shared = pool.alloc(8).unwrap().freeze();
    assert_eq!(region.users(), 2);
    drop(pool);
    assert_eq!(region.users(), 2, "the pool went while buffers were out");
    remote.fill(7);
    let view = shared.clone();
    thread::spawn(move || {
        assert!(remote.iter().all(|&b| b == 7));
        drop((remote, view));
    })
    .join()
    .unwrap();
    drop(local);
    assert_eq!(region.users(), 2);
    thread::spawn(move || drop(shared)).join().unwrap();
    assert_eq!(region.users(), 1, "the pool outlived its last buffer");
}

/// The owner allocates as fast as it can while three threads free what it
/// sends them: each buffer carries a tag that only its holder writes, so a
/// block handed out twice at once would show up as a wrong tag.
#[test]
fn a_small_pool_cycles_through_many_remote_frees_without_losing_or_sharing_a_block() {
    const BLOCKS: usize = 16;
    const ROUNDS: u64 = 20_000;
    let pool = bound_buf_pool(64, BLOCKS);
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<(u64, zbmd_alloc::PooledBuf)>();
            let ack = ack_tx.clone();
            let handle = thread::spawn(move || {
                for (tag, buf) in rx {
                    assert_eq!(buf[..8], tag.to_le_bytes(), "a block was handed out twice");
                    drop(buf);
                    let _ = ack.send(());
                }
            });
            (tx, handle)
        })
        .collect();
    for tag in 0..ROUNDS {
        let mut buf = loop {
            match pool.alloc(64) {
                Ok(buf) => break buf,
                Err(AllocError::PoolExhausted { .. }) => {
                    // A worker's ack comes after its free: the next alloc
                    // finds that block on the remote stack (or an earlier
                    // ack's block was reused already, and we wait again).
                    ack_rx.recv().unwrap();
                }
                Err(error) => panic!("{error}"),
            }
        };
        buf[..8].copy_from_slice(&tag.to_le_bytes());
        workers[tag as usize % 3].0.send((tag, buf)).unwrap();
    }
    for (tx, handle) in workers {
        drop(tx);
        handle.join().unwrap();
    }
    pool.drain_remote().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.remote_frees), (0, ROUNDS));
    assert!(stats.high_water <= BLOCKS);
}

/// Ownership moves only by the owner letting go: then another thread may
/// bind and allocate, the old owner's frees go home remotely, and a pool
/// let go of may be dropped (and freed) on any thread.
#[test]
fn an_owner_can_hand_its_pools_to_another_thread() {
    let pools = Arc::new(
        ShardPools::builder().classes([(64, 4)]).hugepages(HugePages::Off).build().unwrap(),
    );
    pools.bind_current_thread().unwrap();
    let kept = pools.alloc_buf(8).unwrap();
    pools.unbind_current_thread().unwrap();
    assert!(matches!(pools.alloc_buf(8), Err(AllocError::NotOwner { .. })));
    assert!(matches!(pools.unbind_current_thread(), Err(AllocError::NotOwner { .. })));
    let region = pools.region().clone();
    let heir = Arc::clone(&pools);
    let (bound_tx, bound) = mpsc::channel();
    let (freed_tx, freed) = mpsc::channel();
    let new_owner = thread::spawn(move || {
        heir.bind_current_thread().unwrap();
        let buf = heir.alloc_buf(8).unwrap();
        bound_tx.send(()).unwrap();
        freed.recv().unwrap(); // the old owner freed its buffer
        assert_eq!(heir.drain_remote().unwrap(), 1, "the old owner's free did not come home");
        drop(buf);
        heir.unbind_current_thread().unwrap();
    });
    bound.recv().unwrap();
    drop(kept); // now a remote free
    freed_tx.send(()).unwrap();
    new_owner.join().unwrap();
    assert_eq!(region.users(), 3, "ours, the set's and its pool's");
    let pools = Arc::into_inner(pools).expect("the only handle");
    thread::spawn(move || drop(pools)).join().unwrap();
    assert_eq!(region.users(), 1, "an unbound pool dropped elsewhere was not freed");
}

/// A type that needs a 256-byte boundary.
#[repr(align(256))]
struct Aligned(#[allow(dead_code)] u8);

/// Values of any type go in the smallest byte class that holds their size
/// and alignment; when dropped, their bytes are overwritten, so the block
/// serves as a byte buffer again.
#[test]
fn any_value_boxes_into_the_smallest_class_that_fits_and_leaves_clean_bytes() {
    let pools = ShardPools::builder()
        .classes([(64, 2), (4096, 2)])
        .hugepages(HugePages::Off)
        .build()
        .unwrap();
    pools.bind_current_thread().unwrap();
    let small = pools.alloc_box([7u64; 8]).unwrap();
    let big = pools.alloc_box([7u64; 9]).unwrap();
    let aligned = pools.alloc_box(Aligned(1)).unwrap();
    assert_eq!(PoolBox::as_ptr(&aligned).as_ptr() as usize % 256, 0);
    let in_use: Vec<usize> = pools.stats().iter().map(|s| s.in_use).collect();
    assert_eq!(in_use, [1, 2], "a value went to the wrong class");
    assert!(matches!(
        pools.alloc_box([0u8; 5000]),
        Err(AllocError::ValueDoesNotFit { bytes: 5000, .. })
    ));
    assert!(matches!(
        pools.classes()[0].alloc_box(Aligned(2)),
        Err(AllocError::ValueDoesNotFit { align: 256, .. })
    ));
    let addr = PoolBox::as_ptr(&small).as_ptr() as usize;
    thread::spawn(move || drop(small)).join().unwrap();
    pools.drain_remote().unwrap();
    let reused = pools.alloc_buf(64).unwrap();
    assert_eq!(reused.as_ptr() as usize, addr, "one free block: it must be reused");
    let expected = if cfg!(debug_assertions) { 0xDB } else { 0 };
    assert!(reused.iter().all(|&b| b == expected), "the value's bytes were left behind");
    drop((big, aligned));
}

/// A shared value is read on several threads, dropped exactly once when
/// the last handle goes, and its slot comes home.
#[test]
fn pool_arcs_share_a_value_across_threads_and_drop_it_once() {
    let region = region(1 << 16);
    let pool = TypedPool::<Counted>::new(&region, "shared", 2).unwrap();
    pool.bind_current_thread().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let shared = PoolBox::into_arc(pool.alloc(Counted(drops.clone(), 9)).unwrap());
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mine = shared.clone();
            thread::spawn(move || {
                assert_eq!(mine.describe(), 9);
                drop(mine);
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!((PoolArc::strong_count(&shared), drops.load(Ordering::SeqCst)), (1, 0));
    let other = shared.clone();
    assert!(PoolArc::ptr_eq(&shared, &other));
    let dynamic: PoolArc<dyn Describe + Send + Sync> =
        PoolArc::unsize(other, |value| value as &(dyn Describe + Send + Sync));
    assert_eq!((dynamic.describe(), PoolArc::strong_count(&shared)), (9, 2));
    drop(shared);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "dropped while a handle was alive");
    thread::spawn(move || drop(dynamic)).join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(pool.drain_remote().unwrap(), 1);
    assert_eq!(pool.stats().in_use, 0);
}
