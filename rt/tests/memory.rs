//! The runtime's memory: actors spawned on a shard live in that shard's
//! pools (cell and both mailbox lanes) and go home when they die, wherever
//! they die; message buffers come from the same pools; a full pool is a
//! named error at spawn; bad memory settings fail the build.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::mpsc::{Sender, channel};

use common::{PATIENCE, eventually};
use zbmd_alloc::{AllocError, HugePages, PoolStats, ShardPools};
use zbmd_rt::{
    Actor, ActorError, ActorRef, Context, ExitReason, Runtime, RuntimeError, SpawnOptions,
};

/// Blocks in use across all of shard `shard`'s pools.
fn in_use(rt: &Runtime, shard: usize) -> usize {
    rt.memory().iter().filter(|p| p.shard == Some(shard)).map(|p| p.in_use).sum()
}

fn pool(stats: &[PoolStats], shard: usize, block_bytes: usize) -> &PoolStats {
    stats
        .iter()
        .find(|p| p.shard == Some(shard) && p.block_bytes == block_bytes)
        .expect("the pool exists")
}

/// Stops when told.
struct Child;

impl Actor for Child {
    type Msg = ();

    fn handle(&mut self, ctx: &mut Context<'_, Self>, (): ()) -> Result<(), ActorError> {
        ctx.stop(ExitReason::Normal);
        Ok(())
    }
}

/// Spawns children on the shard it is told, and reports what happened.
struct Spawner {
    report: Sender<Result<ActorRef<()>, String>>,
}

impl Actor for Spawner {
    type Msg = Option<usize>;

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Self>,
        shard: Option<usize>,
    ) -> Result<(), ActorError> {
        let options = SpawnOptions { shard, ..SpawnOptions::default() };
        let child = ctx.spawn_with(Child, options).map_err(|e| e.to_string());
        let _ = self.report.send(child);
        Ok(())
    }
}

fn pinned_on(shard: usize) -> SpawnOptions {
    SpawnOptions { shard: Some(shard), pinned: true, ..SpawnOptions::default() }
}

#[test]
fn actors_spawned_on_a_shard_live_in_its_pools_and_go_home_when_they_die() {
    let rt = Runtime::builder().shards(2).pin(false).build().unwrap();
    let (report, spawned) = channel();
    let spawner = rt.spawn_with(Spawner { report }, pinned_on(0)).unwrap();
    eventually("the spawner started", || spawner.is_alive());
    let before = in_use(&rt, 0);
    // Ten children spawned by shard 0 onto shard 1: their memory is shard
    // 0's (the spawning shard allocates), three blocks each: the cell, the
    // system lane and the user lane.
    let children: Vec<ActorRef<()>> = (0..10)
        .map(|_| {
            spawner.try_send(Some(1)).unwrap();
            spawned.recv_timeout(PATIENCE).unwrap().unwrap()
        })
        .collect();
    assert_eq!(in_use(&rt, 0) - before, 30);
    // They die on shard 1; their blocks go home to shard 0 as remote frees
    // once the last reference to each is gone.
    for child in &children {
        child.try_send(()).unwrap();
    }
    eventually("all children dead", || children.iter().all(|c| !c.is_alive()));
    drop(children);
    // Shard 0 takes remote frees back when it next runs out of local free
    // blocks, or when it goes idle.
    eventually("their blocks back home", || in_use(&rt, 0) == before);
    let stats = rt.memory();
    assert!(pool(&stats, 0, 4 << 10).remote_frees >= 10, "{stats:?}");
    rt.shutdown();
}

#[test]
fn actors_spawned_from_outside_the_runtime_or_with_pooling_off_use_no_pool() {
    let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    let before = in_use(&rt, 0);
    let children: Vec<_> = (0..5).map(|_| rt.spawn(Child).unwrap()).collect();
    assert_eq!(in_use(&rt, 0), before);
    drop(children);
    rt.shutdown();

    let rt = Runtime::builder().shards(1).pin(false).pool_actors(false).build().unwrap();
    let (report, spawned) = channel();
    let spawner = rt.spawn(Spawner { report }).unwrap();
    let before = in_use(&rt, 0);
    spawner.try_send(None).unwrap();
    assert!(spawned.recv_timeout(PATIENCE).unwrap().is_ok());
    assert_eq!(in_use(&rt, 0), before, "made on the heap");
    rt.shutdown();
}

#[test]
fn a_full_pool_is_a_named_error_at_spawn_and_leaks_nothing() {
    // Two 4 KiB blocks: one actor's user lane each, so the spawner (from
    // outside, on the heap) can spawn two children and the third fails.
    let memory = ShardPools::builder()
        .classes([(256, 64), (4 << 10, 2), (8 << 10, 64)])
        .hugepages(HugePages::Off);
    let rt = Runtime::builder().shards(1).pin(false).memory(memory).build().unwrap();
    let (report, spawned) = channel();
    let spawner = rt.spawn(Spawner { report }).unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        spawner.try_send(None).unwrap();
        answers.push(spawned.recv_timeout(PATIENCE).unwrap());
    }
    assert!(answers[0].is_ok() && answers[1].is_ok());
    let refused = answers[2].as_ref().unwrap_err();
    assert!(refused.contains("shard0.buf-4KiB") && refused.contains('2'), "{refused}");
    assert_eq!(rt.live_actors(), 3, "the spawner and two children; nothing half-made");
    // Once a child is gone its blocks can be used again.
    answers[0].as_ref().unwrap().try_send(()).unwrap();
    drop(answers);
    eventually("a child can be spawned again", || {
        spawner.try_send(None).unwrap();
        spawned.recv_timeout(PATIENCE).unwrap().is_ok()
    });
    rt.shutdown();
}

/// Allocates a buffer from its shard's pools, fills it, and sends it on.
struct Producer {
    relay: ActorRef<(usize, zbmd_alloc::SharedBuf)>,
}

impl Actor for Producer {
    type Msg = usize;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, len: usize) -> Result<(), ActorError> {
        let mut buf = ctx.alloc_buf(len)?;
        buf.set_len(len)?;
        // SAFETY: `set_len` made `len` bytes of the block ours to write.
        unsafe { std::ptr::write_bytes(buf.as_mut_ptr(), 0xAB, len) };
        let shared = buf.freeze();
        let addr = shared.as_ptr() as usize;
        self.relay.try_send((addr, shared)).map_err(|_| ActorError::msg("relay full"))
    }
}

/// Checks what arrives on another shard and reports it.
struct Check(Sender<(bool, bool)>);

impl Actor for Check {
    type Msg = (usize, zbmd_alloc::SharedBuf);

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        (addr, buf): Self::Msg,
    ) -> Result<(), ActorError> {
        // SAFETY: a frozen buffer's bytes are initialised and immutable.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr(), buf.len()) };
        let _ = self.0.send((buf.as_ptr() as usize == addr, bytes.iter().all(|&b| b == 0xAB)));
        Ok(()) // the buffer drops here, on shard 1: a remote free
    }
}

#[test]
fn message_buffers_come_from_the_senders_shard_and_cross_shards_without_a_copy() {
    let rt = Runtime::builder().shards(2).pin(false).build().unwrap();
    let (tx, rx) = channel();
    let check = rt.spawn_with(Check(tx), pinned_on(1)).unwrap();
    let producer = rt.spawn_with(Producer { relay: check }, pinned_on(0)).unwrap();
    let class = |rt: &Runtime| pool(&rt.memory(), 0, 64 << 10).clone();
    let before = class(&rt);
    producer.try_send(60 << 10).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), (true, true), "same address, same bytes");
    assert_eq!(class(&rt).high_water, before.high_water.max(1), "one 64 KiB block was used");
    // The checker drops it on shard 1 just after reporting: it comes home.
    eventually("the block came home from shard 1", || {
        class(&rt).remote_frees == before.remote_frees + 1
    });
    rt.shutdown();
}

#[test]
fn bad_memory_settings_fail_the_build_with_a_named_error() {
    let zero = ShardPools::builder().classes([(0, 16)]);
    let error = Runtime::builder().shards(1).pin(false).memory(zero).build().unwrap_err();
    assert!(matches!(error, RuntimeError::Memory(AllocError::ZeroSizedClass { .. })), "{error}");
    let required = ShardPools::builder().hugepages(HugePages::Require).classes([(4096, 1)]);
    match Runtime::builder().shards(1).pin(false).memory(required).build() {
        // This machine has no hugetlb pages reserved: the documented error.
        Err(RuntimeError::Memory(AllocError::HugePagesNotReserved { .. })) => {}
        // One that has them reserved gets its runtime.
        Ok(rt) => rt.shutdown(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}
