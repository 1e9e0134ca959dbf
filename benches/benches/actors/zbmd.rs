//! zbmd: actors on pinned shards, bounded lock-free mailboxes.

use std::hint::black_box;

use zbmd_rt::runtime::Metric;
use zbmd_rt::{Actor, ActorError, ActorRef, Context, ExitReason, Runtime, SendError, SpawnOptions};

use crate::harness::{
    Answer, FanIn, Latch, Mailbox, OneShot, Peer, RING_HOPS, RING_HOPS_UNPINNED, SHARDS, SPAWNS,
    SpawnMode, Spawns, Tally, Tell, next_index, pair, peer, ring_of, round_trips, spin_send,
};

/// The runtime of one benchmark. With `ZBMD_BENCH_METRICS` set, prints
/// the shards' counters when the benchmark ends (steals and parks
/// explain many a figure).
pub struct Rt(Runtime);

impl Drop for Rt {
    fn drop(&mut self) {
        if std::env::var_os("ZBMD_BENCH_METRICS").is_none() {
            return;
        }
        let metrics = self.0.metrics();
        let counters = [
            Metric::Messages,
            Metric::Steals,
            Metric::StolenActors,
            Metric::Parks,
            Metric::MailboxFull,
        ];
        for shard in 0..self.0.shards() {
            let line: Vec<String> = counters
                .iter()
                .map(|&c| format!("{}={}", c.name(), metrics.get(shard, c)))
                .collect();
            eprintln!("zbmd shard {shard}: {}", line.join(" "));
        }
    }
}

impl std::ops::Deref for Rt {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0
    }
}

fn runtime() -> Rt {
    Rt(Runtime::builder().shards(SHARDS).build().expect("zbmd runtime starts"))
}

fn on(shard: usize, pinned: bool) -> SpawnOptions {
    SpawnOptions { shard: Some(shard), pinned, ..SpawnOptions::default() }
}

impl Mailbox for ActorRef<u64> {
    fn send_from_outside(&self, msg: u64) {
        let full = |error| if let SendError::Full(back) = error { Some(back) } else { None };
        spin_send(msg, |msg| self.try_send(msg).map_err(full));
    }
}

struct Count(Tally);

impl Actor for Count {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        self.0.count(msg);
        Ok(())
    }
}

/// Sends `n` messages round robin from its handler when it receives `n`;
/// on a full mailbox it sends itself 0 ("go on") and returns, so the
/// receivers on its shard get to run.
struct Driver {
    targets: Vec<ActorRef<u64>>,
    left: u64,
    next: usize,
}

impl Driver {
    fn new(targets: Vec<ActorRef<u64>>) -> Self {
        Driver { targets, left: 0, next: 0 }
    }
}

impl Actor for Driver {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        self.left += msg;
        while self.left > 0 {
            match self.targets[self.next].try_send(self.left) {
                Ok(()) => {
                    self.left -= 1;
                    self.next = next_index(self.next, self.targets.len());
                }
                Err(SendError::Full(_)) => {
                    ctx.myself().try_send(0)?;
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

pub fn tell(inside: bool) -> Tell<ActorRef<u64>, ActorRef<u64>, Rt> {
    Tell::spawn(
        runtime(),
        inside,
        |rt, _, tally| rt.spawn(Count(tally)).expect("spawn"),
        |rt, targets| rt.spawn_with(Driver::new(targets), on(0, false)).expect("spawn"),
    )
}

/// Bounces the ball back to the pinger, one round trip fewer.
struct Pong(Peer<ActorRef<u64>>);

impl Actor for Pong {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        peer(&self.0).try_send(msg - 1)?;
        Ok(())
    }
}

/// Passes the ball (the hops left, less `DEC`) on, or arrives when it
/// comes as 0: the pinger (`DEC` 0, the ponger counts) and a ring node
/// (`DEC` 1).
struct Relay<const DEC: u64>(Peer<ActorRef<u64>>, &'static Latch);

impl<const DEC: u64> Actor for Relay<DEC> {
    type Msg = u64;
    fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        if msg == 0 {
            self.1.arrive();
        } else {
            peer(&self.0).try_send(msg - DEC)?;
        }
        Ok(())
    }
}

pub fn ping_pong(two_shards: bool) -> OneShot<ActorRef<u64>, Rt> {
    let rt = runtime();
    let latch = Latch::leaked();
    let ping = pair(
        |to_pong| rt.spawn_with(Relay::<0>(to_pong, latch), on(0, true)).expect("spawn"),
        |to_ping| rt.spawn_with(Pong(to_ping), on(usize::from(two_shards), true)).expect("spawn"),
    );
    OneShot::new(latch, ping, round_trips(two_shards), 1, rt)
}

/// Handles its first message, tells its spawner (or the latch), stops.
struct Child(Answer<ActorRef<u64>>);

impl Actor for Child {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        black_box(msg);
        match &self.0 {
            Answer::Spawner(spawner) => spawner.try_send(0)?,
            Answer::Latch(latch) => latch.arrive(),
        }
        ctx.stop(ExitReason::Normal);
        Ok(())
    }
}

/// Spawns children on its shard, each sent its first message (see
/// [`Spawns`]).
struct Spawner(Spawns);

impl Actor for Spawner {
    type Msg = u64;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        for first in self.0.on_message(msg) {
            let child = ctx.spawn(Child(self.0.answer(|| ctx.myself())))?;
            child.try_send(first)?;
        }
        Ok(())
    }
}

/// `pooled`: children's cells and mailboxes from the spawning shard's
/// pools (the default); otherwise from the heap.
pub fn spawn(mode: SpawnMode, pooled: bool) -> OneShot<ActorRef<u64>, Rt> {
    let rt = Rt(Runtime::builder()
        .shards(SHARDS)
        .pool_actors(pooled)
        .build()
        .expect("zbmd runtime starts"));
    let latch = Latch::leaked();
    let spawner = rt.spawn_with(Spawner(Spawns::new(mode, latch)), on(0, false)).expect("spawn");
    OneShot::new(latch, spawner, SPAWNS, mode.arrivals(), rt)
}

/// The ring on shard 0: `pinned` keeps it there; unpinned, the idle
/// shard steals the one runnable node, again and again.
pub fn ring(pinned: bool) -> OneShot<ActorRef<u64>, Rt> {
    let rt = runtime();
    let latch = Latch::leaked();
    let first =
        ring_of(|next| rt.spawn_with(Relay::<1>(next, latch), on(0, pinned)).expect("spawn"));
    let hops = if pinned { RING_HOPS } else { RING_HOPS_UNPINNED };
    OneShot::new(latch, first, hops, 1, rt)
}

pub fn fan_in() -> FanIn<ActorRef<u64>, Rt> {
    FanIn::spawn(
        runtime(),
        |rt, tally| rt.spawn_with(Count(tally), on(1, true)).expect("spawn"),
        |rt, shard, sink| rt.spawn_with(Driver::new(vec![sink]), on(shard, true)).expect("spawn"),
    )
}
