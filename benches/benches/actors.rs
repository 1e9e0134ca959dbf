//! zbmd's actor runtime against tokio, actix, ractor and kameo: one
//! criterion group per workload, every implementation of a workload in the
//! same group so that one run compares them on the same machine state.
//! Erlang/OTP runs the ping-pong and ring workloads separately
//! (`benches/erlang/run.sh`), in the same session.
//!
//! | group | what one iteration does | figure | zbmd placement |
//! |---|---|---|---|
//! | `tell_100/{outside,inside}` | 100,000 u64 round robin to 100 counting actors, sent by a thread outside the runtime or by a driver actor's handler | per message | counters round robin over 2 shards; driver on shard 0 |
//! | `ping_pong/{same_shard,two_shards}` | 10,000 (same shard) or 1,000 (two shards) round trips between two actors | per round trip | both pinned on shard 0, or on shards 0 and 1 |
//! | `spawn_first_msg/{one_by_one,burst}` | a spawner actor spawns 10,000 actors, each sent its first message, which it handles before stopping: one at a time (each answers the spawner) or all at once | per spawn | spawner on shard 0, children on the spawner's shard; `zbmd` takes each child's cell and mailbox from shard 0's pools, `zbmd-heap` (`pool_actors(false)`) from the heap |
//! | `ring_1000` | a token passed 1,000,000 times around a ring of 1,000 actors | per hop | all on shard 0, pinned (`zbmd-unpinned`: not pinned, 100,000 hops) |
//! | `fan_in` | two sender actors (one per shard) send 50,000 u64 each to one actor | per message | senders pinned on shards 0 and 1, the receiver on shard 1 |
//!
//! Every message is a `u64`; every mailbox holds 256 (zbmd's default) where
//! the peer has a bounded mailbox (ractor's is unbounded; actix's `do_send`,
//! used inside actors, queues past the capacity). Runtimes have two worker
//! threads, one per core: zbmd `shards(2)` (pinned, its default), tokio
//! `worker_threads(2)` (also under ractor and kameo), actix two arbiters
//! pinned to cores 0 and 1. For `ping_pong`, where placement is the point,
//! tokio, ractor and kameo run thread-per-core: one current-thread tokio
//! runtime per core, pinned, each actor spawned into the named one. The
//! hardware floor of `ping_pong/two_shards` is `spsc-ring`: two threads
//! pinned to cores 0 and 1 bouncing a u64 through two zbmd SPSC rings,
//! spinning.
//!
//! Each implementation's runtime is built before its first iteration and
//! dropped after its benchmark, outside the timed spans. The measuring thread
//! arms a [`Latch`](harness::Latch), sends the iteration's start message, and
//! sleeps until the actors have handled everything (the last one unparks
//! it). With `ZBMD_BENCH_METRICS=1`, each zbmd benchmark prints its shards'
//! counters (messages, steals, parks, full mailboxes) when it ends.
//!
//! Run with `cargo bench -p zbmd-benches --bench actors` (about ten minutes
//! on two cores), then `benches/erlang/run.sh bench_results/actors.erlang.jsonl`,
//! `python3 benches/actors_report.py` for `bench_results/actors.{json,md}` and
//! `cargo run --release -p zbmd-benches --example actors_plot` for
//! `bench_results/actors.svg`.
//!
//! One file per implementation under `actors/` (`zbmd.rs`, `raw.rs`,
//! `tokio.rs`, `actix.rs`, `ractor.rs`, `kameo.rs`): each builds its actors
//! and its runtime and hands them to a fixture of `actors/harness.rs`,
//! whose timed loop (arm, send, wait) is the same code for all of them.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "actors/actix.rs"]
mod actix_peer;
#[path = "actors/harness.rs"]
mod harness;
#[path = "actors/kameo.rs"]
mod kameo_peer;
#[path = "actors/ractor.rs"]
mod ractor_peer;
#[path = "actors/raw.rs"]
mod raw;
#[path = "actors/tokio.rs"]
mod tokio_peer;
#[path = "actors/zbmd.rs"]
mod zbmd;

use harness::{
    FAN_IN_PER_SENDER, PING_ROUND_TRIPS, RING_HOPS, RING_HOPS_UNPINNED, SHARDS, SPAWNS, SpawnMode,
    TELL_MSGS, bench, group, round_trips,
};

fn tell_100(c: &mut Criterion) {
    let mut group = group(c, "tell_100");
    for (case, inside) in [("outside", false), ("inside", true)] {
        bench(&mut group, (case, "zbmd"), TELL_MSGS, || zbmd::tell(inside));
        bench(&mut group, (case, "tokio"), TELL_MSGS, || tokio_peer::tell(inside));
        bench(&mut group, (case, "actix"), TELL_MSGS, || actix_peer::tell(inside));
        bench(&mut group, (case, "ractor"), TELL_MSGS, || ractor_peer::tell(inside));
        bench(&mut group, (case, "kameo"), TELL_MSGS, || kameo_peer::tell(inside));
    }
    group.finish();
}

fn ping_pong(c: &mut Criterion) {
    let mut group = group(c, "ping_pong");
    for (case, two) in [("same_shard", false), ("two_shards", true)] {
        let n = round_trips(two);
        bench(&mut group, (case, "zbmd"), n, || zbmd::ping_pong(two));
        bench(&mut group, (case, "tokio"), n, || tokio_peer::ping_pong(two));
        bench(&mut group, (case, "actix"), n, || actix_peer::ping_pong(two));
        bench(&mut group, (case, "ractor"), n, || ractor_peer::ping_pong(two));
        bench(&mut group, (case, "kameo"), n, || kameo_peer::ping_pong(two));
    }
    bench(&mut group, ("two_shards", "spsc-ring"), PING_ROUND_TRIPS, || raw::RingPingPong);
    group.finish();
}

fn spawn_first_msg(c: &mut Criterion) {
    let mut group = group(c, "spawn_first_msg");
    for mode in [SpawnMode::OneByOne, SpawnMode::Burst] {
        let case = mode.name();
        bench(&mut group, (case, "zbmd"), SPAWNS, || zbmd::spawn(mode, true));
        bench(&mut group, (case, "zbmd-heap"), SPAWNS, || zbmd::spawn(mode, false));
        bench(&mut group, (case, "tokio"), SPAWNS, || tokio_peer::spawn(mode));
        bench(&mut group, (case, "actix"), SPAWNS, || actix_peer::spawn(mode));
        bench(&mut group, (case, "ractor"), SPAWNS, || ractor_peer::spawn(mode));
        bench(&mut group, (case, "kameo"), SPAWNS, || kameo_peer::spawn(mode));
    }
    group.finish();
}

fn ring_1000(c: &mut Criterion) {
    let mut group = group(c, "ring_1000");
    bench(&mut group, ("", "zbmd"), RING_HOPS, || zbmd::ring(true));
    bench(&mut group, ("", "zbmd-unpinned"), RING_HOPS_UNPINNED, || zbmd::ring(false));
    bench(&mut group, ("", "tokio"), RING_HOPS, tokio_peer::ring);
    bench(&mut group, ("", "actix"), RING_HOPS, actix_peer::ring);
    bench(&mut group, ("", "ractor"), RING_HOPS, ractor_peer::ring);
    bench(&mut group, ("", "kameo"), RING_HOPS, kameo_peer::ring);
    group.finish();
}

fn fan_in(c: &mut Criterion) {
    let mut group = group(c, "fan_in");
    let n = SHARDS as u64 * FAN_IN_PER_SENDER;
    bench(&mut group, ("", "zbmd"), n, zbmd::fan_in);
    bench(&mut group, ("", "tokio"), n, tokio_peer::fan_in);
    bench(&mut group, ("", "actix"), n, actix_peer::fan_in);
    bench(&mut group, ("", "ractor"), n, ractor_peer::fan_in);
    bench(&mut group, ("", "kameo"), n, kameo_peer::fan_in);
    group.finish();
}

/// Short warm-up and few samples: the whole run (42 benchmarks, five
/// runtimes) has to fit in about ten minutes on two cores.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10)
}

criterion_group! {
    name = actors;
    config = config();
    targets = tell_100, ping_pong, spawn_first_msg, ring_1000, fan_in
}
criterion_main!(actors);
