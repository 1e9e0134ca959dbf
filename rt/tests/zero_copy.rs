//! Zero-copy buffers through the runtime: a 64 MiB pooled buffer travels
//! through 10 actors on 4 shards and arrives as the same memory (same
//! address, same bytes), and both a unique and a shared buffer go home to
//! their pool when dropped on a shard that does not own it.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::mpsc::{Sender, channel};

use common::PATIENCE;
use zbmd_alloc::{HugePages, PooledBuf, ShardPools, SharedBuf};
use zbmd_rt::topology::{L3Scope, SyntheticSpec, Topology};
use zbmd_rt::{Actor, ActorError, ActorRef, Context, Runtime, SpawnOptions};

const BUF_BYTES: usize = 64 << 20;
const HOPS: usize = 10;
const SHARDS: usize = 4;

/// What travels: the buffer and the (shard, address) of each hop.
enum Cargo {
    Unique(PooledBuf),
    Shared(SharedBuf),
}

impl Cargo {
    fn addr(&self) -> usize {
        match self {
            Cargo::Unique(buf) => buf.as_ptr() as usize,
            Cargo::Shared(buf) => buf.as_ptr() as usize,
        }
    }
}

struct Trip {
    cargo: Cargo,
    trail: Vec<(usize, usize)>,
    /// Drop the buffer at the last hop instead of handing it back.
    drop_at_end: bool,
}

/// What the last relay hands back: the cargo (unless it dropped it) and
/// the trail.
type Arrival = (Option<Cargo>, Vec<(usize, usize)>);

/// Passes each trip on to the next relay, or back to the test at the end.
struct Relay {
    next: Option<ActorRef<Trip>>,
    back: Sender<Arrival>,
}

impl Actor for Relay {
    type Msg = Trip;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, mut trip: Trip) -> Result<(), ActorError> {
        trip.trail.push((ctx.shard(), trip.cargo.addr()));
        match &self.next {
            Some(next) => next.try_send(trip).map_err(|_| ActorError::msg("next relay full")),
            None if trip.drop_at_end => {
                drop(trip.cargo); // on this shard, not the pools' owner
                let _ = self.back.send((None, trip.trail));
                Ok(())
            }
            None => {
                let _ = self.back.send((Some(trip.cargo), trip.trail));
                Ok(())
            }
        }
    }
}

/// The byte at `i` of the test pattern.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn a_64_mib_buffer_crosses_ten_actors_on_four_shards_without_a_copy_and_goes_home() {
    let pools = ShardPools::builder()
        .classes([(BUF_BYTES, 2)])
        .hugepages(HugePages::Prefer)
        .build()
        .expect("pools");
    pools.bind_current_thread().unwrap();
    // Four shards whatever this machine has: a fake four-core topology,
    // unpinned threads.
    let spec = SyntheticSpec {
        packages: 1,
        numa_per_package: 1,
        cores_per_numa: SHARDS,
        threads_per_core: 1,
        l3_per: L3Scope::Package,
    };
    let topology = Topology::synthetic(&spec).expect("topology");
    let rt = Runtime::builder()
        .allowed_cpus(topology.cpus())
        .topology(topology)
        .shards(SHARDS)
        .pin(false)
        .build()
        .expect("runtime");
    let (back_tx, back) = channel();
    // Built back to front: relay i lives on shard i % 4, pinned there (never
    // stolen), so each hop crosses to another shard.
    let mut next = None;
    for hop in (0..HOPS).rev() {
        let options =
            SpawnOptions { shard: Some(hop % SHARDS), pinned: true, ..SpawnOptions::default() };
        let relay = rt.spawn_with(Relay { next: next.take(), back: back_tx.clone() }, options);
        next = Some(relay.expect("spawn"));
    }
    let first = next.expect("ten relays");

    let mut buf = pools.alloc_buf(BUF_BYTES).unwrap();
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = pattern(i);
    }
    let start = buf.as_ptr() as usize;
    let trip = |cargo, drop_at_end| Trip { cargo, trail: Vec::new(), drop_at_end };

    // A unique buffer, there and back.
    first.try_send(trip(Cargo::Unique(buf), false)).map_err(|_| "send").unwrap();
    let (cargo, trail) = back.recv_timeout(PATIENCE).expect("the buffer came back");
    let Some(Cargo::Unique(buf)) = cargo else { panic!("the unique buffer did not come back") };
    assert_eq!(buf.as_ptr() as usize, start, "the buffer was copied");
    assert_eq!(trail.len(), HOPS);
    assert!(trail.iter().all(|&(_, addr)| addr == start), "a hop saw a copy: {trail:?}");
    let shards: Vec<usize> = trail.iter().map(|&(shard, _)| shard).collect();
    assert_eq!(shards, (0..HOPS).map(|hop| hop % SHARDS).collect::<Vec<_>>());
    assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(i)), "the bytes changed");

    // Shared: the test keeps a view; a slice makes the trip and is dropped
    // on the last relay's shard.
    let shared = buf.freeze();
    let window = shared.slice(1 << 20..2 << 20);
    first.try_send(trip(Cargo::Shared(window), true)).map_err(|_| "send").unwrap();
    let (_, trail) = back.recv_timeout(PATIENCE).expect("the slice arrived");
    assert!(trail.iter().all(|&(_, addr)| addr == start + (1 << 20)), "a hop saw a copy");
    assert_eq!(shared.ref_count(), 1, "the relay's view was not dropped");
    assert_eq!(shared[5 << 20], pattern(5 << 20));

    // The last view goes home from a shard: a remote free.
    let (_, trail) = {
        first.try_send(trip(Cargo::Shared(shared), true)).map_err(|_| "send").unwrap();
        back.recv_timeout(PATIENCE).expect("the shared buffer arrived")
    };
    assert_eq!(trail.len(), HOPS);
    let class = &pools.classes()[0];
    assert_eq!(class.stats().in_use, 1, "not yet taken back");
    assert_eq!(pools.drain_remote().unwrap(), 1, "the buffer did not come home");
    let stats = class.stats();
    assert_eq!((stats.in_use, stats.remote_frees, stats.high_water), (0, 1, 1));
    // And the block is reused: the same memory again.
    assert_eq!(pools.alloc_buf(BUF_BYTES).unwrap().as_ptr() as usize, start);
    rt.shutdown();
}
