//! loom models of zbmd-alloc's remote frees: other threads push freed
//! blocks onto the owner's lock-free stack while the owner allocates (and
//! drains it), frees locally, or closes the pool. In every interleaving
//! within the preemption bound, no block is lost (the owner can hand out
//! all of them again), none is handed out twice (live addresses are
//! distinct), a finished remote free is visible to the owner's next drain,
//! a shared block goes home exactly once, and a closed pool is freed
//! exactly once, after its last block. loom also checks that every `next`
//! link a freer writes happens before the owner reads it.
//!
//! The ABA argument these models back (see `alloc/src/pool.rs`): nobody
//! pops single elements off the remote stack; the owner takes all of it
//! with one swap, so a pusher's CAS only relies on "my `next` is the head I
//! compare against", which the CAS itself checks.
//!
//! Each freer thread ends by bumping a `done` counter the owner reads:
//! besides giving the assertions something to condition on, the extra
//! shared access makes loom's partial-order reduction schedule the freers'
//! pushes before the owner's drains (without it, loom explored only the
//! orders where every push comes after the owner's last look).
#![cfg(zbmd_loom)]

use std::collections::HashSet;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zbmd_alloc::{AllocError, BufPool, HugePages, PooledBuf, Region, RegionConfig};

mod common;
use common::model;

fn pool(blocks: usize) -> (Region, BufPool) {
    let region =
        Region::map(RegionConfig::new("loom", 4096).hugepages(HugePages::Off)).expect("region");
    let pool = BufPool::new(&region, "loom", 64, blocks).expect("pool");
    pool.bind_current_thread().expect("bind");
    (region, pool)
}

/// Allocates until the pool refuses.
fn take_all(pool: &BufPool, held: &mut Vec<PooledBuf>) {
    loop {
        match pool.alloc(8) {
            Ok(buf) => held.push(buf),
            Err(AllocError::PoolExhausted { .. }) => return,
            Err(other) => panic!("{other}"),
        }
    }
}

/// Asserts the held buffers are `blocks` distinct blocks.
fn assert_distinct(held: &[PooledBuf], blocks: usize) {
    let addrs: HashSet<usize> = held.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(addrs.len(), held.len(), "one block handed out twice");
    assert_eq!(held.len(), blocks, "a block was lost");
}

/// Runs `f` on a new thread, then bumps `done` (Release).
fn spawn_counted(
    done: &Arc<AtomicUsize>,
    f: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<()> {
    let done = done.clone();
    thread::spawn(move || {
        f();
        done.fetch_add(1, Ordering::Release);
    })
}

/// Two threads free one buffer each while the owner, holding the other
/// two, allocates (its free list is empty and its fresh blocks used up, so
/// it drains the remote stack, possibly mid-push), frees one block locally
/// and drains again (splicing the remote list onto a non-empty local one).
/// Every push the owner saw finish is in what it took; afterwards it gets
/// all four blocks back, distinct, and counts both remote frees.
#[test]
fn remote_frees_racing_the_owners_drain_lose_and_duplicate_nothing() {
    model(|| {
        let (_region, pool) = pool(4);
        let mut bufs: Vec<PooledBuf> = (0..4).map(|_| pool.alloc(8).unwrap()).collect();
        let mut held = vec![bufs.pop().unwrap()];
        let local = bufs.pop().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let freers: Vec<_> =
            bufs.into_iter().map(|buf| spawn_counted(&done, || drop(buf))).collect();
        let finished = done.load(Ordering::Acquire);
        if let Ok(buf) = pool.alloc(8) {
            held.push(buf);
        }
        drop(local);
        pool.drain_remote().unwrap();
        let taken = pool.stats().remote_frees as usize;
        assert!(taken >= finished, "{finished} frees finished but only {taken} came home");
        for freer in freers {
            freer.join().unwrap();
        }
        take_all(&pool, &mut held);
        assert_distinct(&held, 4);
        pool.drain_remote().unwrap();
        let stats = pool.stats();
        assert_eq!((stats.in_use, stats.remote_frees), (4, 2));
    });
}

/// Three views of one block: two dropped on two threads, one by the owner,
/// in any order. The block goes home exactly once: the one-block pool then
/// hands it out once and refuses the next allocation. If the owner's view
/// was the last, the block went home on the owner's local list at once.
#[test]
fn a_shared_block_goes_home_exactly_once() {
    model(|| {
        let (_region, pool) = pool(1);
        let shared = pool.alloc(8).unwrap().freeze();
        let done = Arc::new(AtomicUsize::new(0));
        let droppers: Vec<_> = (0..2)
            .map(|_| {
                let view = shared.clone();
                spawn_counted(&done, move || drop(view))
            })
            .collect();
        let owner_last = done.load(Ordering::Acquire) == 2;
        drop(shared);
        if owner_last {
            let stats = pool.stats();
            assert_eq!((stats.in_use, stats.remote_frees), (0, 0), "not home locally");
        }
        for dropper in droppers {
            dropper.join().unwrap();
        }
        let mut held = Vec::new();
        take_all(&pool, &mut held);
        assert_distinct(&held, 1);
    });
}

/// The owner drops the pool handle (closing it) and its own buffer while
/// another thread frees the last buffer out. Whoever finishes last frees
/// the pool: exactly once, after both buffers are home (the region's user
/// count falls back to the test's own handle), and at once if the remote
/// free had finished before the owner's last drop.
#[test]
fn closing_races_a_remote_free_and_the_pool_is_freed_once() {
    model(|| {
        let (region, pool) = pool(2);
        let local = pool.alloc(8).unwrap();
        let remote = pool.alloc(8).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let freer = spawn_counted(&done, move || drop(remote));
        drop(pool);
        assert_eq!(region.users(), 2, "the pool was freed with a block still out");
        let remote_done = done.load(Ordering::Acquire) == 1;
        drop(local);
        if remote_done {
            assert_eq!(region.users(), 1, "the last free did not free the pool");
        }
        freer.join().unwrap();
        assert_eq!(region.users(), 1, "the pool was not freed, or freed early");
    });
}

/// Binds the pool as soon as no other thread holds it, allocates a block
/// and frees it (the owner's free list is written), and unbinds.
fn own_for_a_while(pool: &BufPool) {
    while pool.bind_current_thread().is_err() {
        thread::yield_now();
    }
    drop(pool.alloc(8).unwrap());
    pool.unbind_current_thread().unwrap();
}

/// The owner hand-off: two threads take turns owning the pool, in either
/// order. The second's bind must see the first's free list (`unbind`
/// Release, `bind` Acquire: loom fails the model on the list's cell
/// otherwise); afterwards both blocks come out, distinct.
#[test]
fn a_pool_rebound_on_another_thread_sees_its_free_list() {
    model(|| {
        let region =
            Region::map(RegionConfig::new("loom", 4096).hugepages(HugePages::Off)).expect("region");
        let pool = Arc::new(BufPool::new(&region, "loom", 64, 2).expect("pool"));
        let other = {
            let pool = pool.clone();
            thread::spawn(move || own_for_a_while(&pool))
        };
        own_for_a_while(&pool);
        other.join().unwrap();
        pool.bind_current_thread().unwrap();
        let mut held = Vec::new();
        take_all(&pool, &mut held);
        assert_distinct(&held, 2);
        drop(held);
        pool.unbind_current_thread().unwrap();
    });
}

/// The teardown when the last remote block comes home: one thread frees
/// its block before the close (the close's walk reads its `next`), another
/// after or during it, while the owner drops the pool. Whoever brings the
/// count home frees the pool (under loom that free writes every `next`
/// cell), so it must come after every other thread's last use of the pool:
/// the close's walk, the pushes. The pool is freed once, after both blocks.
#[test]
fn the_last_block_home_frees_the_pool_after_every_use() {
    model(|| {
        let (region, pool) = pool(2);
        let bufs: Vec<PooledBuf> = (0..2).map(|_| pool.alloc(8).unwrap()).collect();
        let freers: Vec<_> = bufs.into_iter().map(|buf| thread::spawn(move || drop(buf))).collect();
        drop(pool);
        for freer in freers {
            freer.join().unwrap();
        }
        assert_eq!(region.users(), 1, "the pool was not freed, or freed early");
    });
}
