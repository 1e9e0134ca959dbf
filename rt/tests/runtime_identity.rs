//! Two runtimes in one process: distinct ids, refs that never compare
//! equal, CPU claims that warn or refuse and are released at shutdown; the
//! embedding preset; the runtime's labels on its metrics.
//!
//! Only `pinned_runtimes_share_cpus_with_a_warning_or_are_refused` pins: the
//! process-wide record of pinned CPUs is shared by every test of this file,
//! and `cargo test` runs them side by side.

mod common;

use std::collections::HashSet;

use common::{PATIENCE, Probe};
use zbmd_rt::runtime::{EMBEDDED_MAX_ACTORS_PER_SHARD, EMBEDDED_POOL_CLASSES};
use zbmd_rt::topology::{CpuSet, pinned_cpus};
use zbmd_rt::{Runtime, RuntimeError};

fn embedded() -> Runtime {
    Runtime::builder().embedded().build().expect("embedded runtime")
}

#[test]
// Hashing and equality of refs read only their `ActorId`, which never
// changes; clippy sees the mailbox's interior mutability behind the `Arc`.
#[allow(clippy::mutable_key_type)]
fn actors_of_two_runtimes_have_distinct_ids_and_never_compare_equal() {
    let (events, seen) = std::sync::mpsc::channel();
    let (a, b) = (embedded(), embedded());
    assert_ne!(a.id(), b.id());
    // The first actor of each one-shard runtime takes the same shard, slot
    // and generation: only the runtime tells them apart.
    let x = a.spawn(Probe::new(&events)).unwrap();
    let y = b.spawn(Probe::new(&events)).unwrap();
    let (ix, iy) = (x.id(), y.id());
    assert_eq!(
        (ix.node, ix.shard, ix.slot, ix.generation),
        (iy.node, iy.shard, iy.slot, iy.generation)
    );
    assert_eq!((ix.runtime, iy.runtime), (a.id(), b.id()));
    assert_ne!(ix, iy);
    assert_ne!(x, y);
    assert_ne!(x.pid(), y.pid());
    assert_eq!(x, x.clone());
    assert_eq!(x.pid(), x.pid().clone());
    let refs: HashSet<_> = [x.clone(), y.clone(), x.clone()].into_iter().collect();
    assert_eq!(refs.len(), 2, "hashing tells the runtimes apart");
    let pids: HashSet<_> = [x.pid(), y.pid()].into_iter().collect();
    assert_eq!(pids.len(), 2);
    // Display and Debug show the runtime.
    assert_eq!(ix.to_string(), format!("<0.{}.0.{}.{}>", a.id(), ix.slot, ix.generation));
    assert_ne!(ix.to_string(), iy.to_string());
    assert!(format!("{x:?}").contains(&ix.to_string()), "{x:?}");
    assert!(format!("{:?}", y.pid()).contains(&iy.to_string()));
    // Both actors are alive and answer: the ids name two real actors.
    x.try_send(1).unwrap();
    y.try_send(2).unwrap();
    let mut got: Vec<_> = (0..4).map(|_| seen.recv_timeout(PATIENCE).unwrap()).collect();
    got.sort_by_key(|event| format!("{event:?}"));
    assert!(got.contains(&common::Event::Got(ix, 1)), "{got:?}");
    assert!(got.contains(&common::Event::Got(iy, 2)), "{got:?}");
}

#[test]
fn runtime_ids_are_never_reused() {
    let first = embedded();
    let id = first.id();
    first.shutdown();
    let second = embedded();
    assert!(second.id() > id, "{} after {id}", second.id());
}

#[test]
fn pinned_runtimes_share_cpus_with_a_warning_or_are_refused() {
    let cpu = CpuSet::current_affinity().unwrap().first().unwrap();
    let one = CpuSet::from_cpus([cpu]).unwrap();
    let pinned = || Runtime::builder().shards(1).allowed_cpus(one);

    let first = pinned().build().unwrap();
    assert_eq!(first.pinned_cpus(), one);
    assert!(first.shared_cpus().is_empty());
    assert!(pinned_cpus().contains(cpu));

    // By default the second is built, and reports the shared CPU.
    let second = pinned().build().unwrap();
    assert_eq!(second.shared_cpus(), one);
    assert_eq!(second.metrics().shared_cpus, 1);
    let gauge = format!("zbmd_shared_cpus{{runtime=\"{}\"}} 1", second.id());
    assert!(second.metrics().to_prometheus().contains(&gauge));

    // Asked for its CPUs alone, a third is refused, naming both holders.
    match pinned().exclusive_cpus(true).build() {
        Err(RuntimeError::CpusInUse { cpus, runtimes }) => {
            assert_eq!(*cpus, one);
            assert_eq!(runtimes, [first.id(), second.id()]);
        }
        other => panic!("expected CpusInUse, got {other:?}"),
    }
    // Unpinned, it claims nothing and is never refused.
    let unpinned = pinned().pin(false).exclusive_cpus(true).build().unwrap();
    assert!(unpinned.pinned_cpus().is_empty());

    // Shutdown (or drop) releases the claims.
    first.shutdown();
    drop(second);
    assert!(!pinned_cpus().contains(cpu));
    let alone = pinned().exclusive_cpus(true).build().unwrap();
    assert!(alone.shared_cpus().is_empty());
}

#[test]
fn the_embedded_preset_is_one_unpinned_shard_with_small_limits() {
    let rt = embedded();
    assert_eq!(rt.shards(), 1);
    assert!(rt.pinned_cpus().is_empty());
    let pools: Vec<_> = rt.memory().iter().map(|pool| (pool.block_bytes, pool.capacity)).collect();
    for class in EMBEDDED_POOL_CLASSES {
        assert!(pools.contains(&class), "{class:?} in {pools:?}");
    }
    let (events, _seen) = std::sync::mpsc::channel();
    let spawned: Vec<_> = (0..EMBEDDED_MAX_ACTORS_PER_SHARD)
        .map(|_| rt.spawn(Probe::new(&events)).expect("room for the preset's actors"))
        .collect();
    match rt.spawn(Probe::new(&events)) {
        Err(RuntimeError::ActorLimit { shard: 0, limit }) => {
            assert_eq!(limit, EMBEDDED_MAX_ACTORS_PER_SHARD)
        }
        other => panic!("expected ActorLimit, got {other:?}"),
    }
    assert_eq!(spawned.len(), rt.live_actors());
}

#[test]
fn a_named_runtime_labels_its_metrics_and_a_bad_name_is_refused() {
    let rt = Runtime::builder().embedded().name("api-v2.0_x").build().unwrap();
    assert_eq!(rt.name(), Some("api-v2.0_x"));
    let text = rt.metrics().to_prometheus();
    let labels = format!("{{runtime=\"{}\",runtime_name=\"api-v2.0_x\"", rt.id());
    for series in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(series.contains(&labels), "{series}");
    }
    for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
        match Runtime::builder().embedded().name(bad).build() {
            Err(RuntimeError::Config(what)) => assert!(what.contains("name"), "{what}"),
            other => panic!("name {bad:?}: expected Config, got {other:?}"),
        }
    }
}
