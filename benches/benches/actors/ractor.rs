//! ractor: gen_server-style actors on tokio ([`multi_thread`], or the
//! pinned [`Shards`] for the ping-pong); unbounded mailboxes.

use std::hint::black_box;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::runtime::{Handle, Runtime};

use crate::harness::{
    Answer, FanIn, Latch, Mailbox, OneShot, Peer, RING_HOPS, SPAWNS, SpawnMode, Spawns, Tally,
    Tell, next_index, pair, peer, ring_of, round_trips,
};
use crate::tokio_peer::{Shards, multi_thread};

fn spawn_on<A: Actor>(handle: &Handle, actor: A, args: A::Arguments) -> ActorRef<A::Msg> {
    handle.block_on(Actor::spawn(None, actor, args)).expect("ractor spawn").0
}

impl Mailbox for ActorRef<u64> {
    /// The mailboxes are unbounded: a send never waits.
    fn send_from_outside(&self, msg: u64) {
        self.send_message(msg).expect("a benchmark actor stopped");
    }
}

/// `impl Actor` for an actor of `u64` messages whose state is the
/// arguments it is spawned with: `|myself, msg, state| body` is its
/// `handle`.
macro_rules! actor {
    ($name:ty, $state:ty, |$myself:tt, $msg:ident, $st:ident| $body:block) => {
        impl Actor for $name {
            type Msg = u64;
            type State = $state;
            type Arguments = $state;

            async fn pre_start(
                &self,
                _: ActorRef<u64>,
                state: $state,
            ) -> Result<$state, ActorProcessingErr> {
                Ok(state)
            }

            async fn handle(
                &self,
                $myself: ActorRef<u64>,
                $msg: u64,
                $st: &mut $state,
            ) -> Result<(), ActorProcessingErr> {
                $body
            }
        }
    };
}

/// Counts what it is sent.
pub struct Counter;

actor!(Counter, Tally, |_, msg, tally| {
    tally.count(msg);
    Ok(())
});

/// Sends `n` round robin (the mailboxes are unbounded: never full). State:
/// the targets and the next one's index.
pub struct Driver;

actor!(Driver, (Vec<ActorRef<u64>>, usize), |_, msg, state| {
    let (targets, next) = state;
    for i in 0..msg {
        targets[*next].send_message(i)?;
        *next = next_index(*next, targets.len());
    }
    Ok(())
});

pub fn tell(inside: bool) -> Tell<ActorRef<u64>, ActorRef<u64>, Runtime> {
    Tell::spawn(
        multi_thread(),
        inside,
        |rt, _, tally| spawn_on(rt.handle(), Counter, tally),
        |rt, targets| spawn_on(rt.handle(), Driver, (targets, 0)),
    )
}

/// Bounces the ball back to the pinger, one round trip fewer.
pub struct Pong;

actor!(Pong, Peer<ActorRef<u64>>, |_, msg, to_ping| {
    peer(to_ping).send_message(msg - 1)?;
    Ok(())
});

/// The pinger (`dec` 0: the ponger counts) and a ring node (`dec` 1):
/// passes `msg - dec` on, or arrives at 0. State: the next address, the
/// latch and `dec`.
pub struct Relay;

actor!(Relay, (Peer<ActorRef<u64>>, &'static Latch, u64), |_, msg, state| {
    if msg == 0 {
        state.1.arrive();
    } else {
        peer(&state.0).send_message(msg - state.2)?;
    }
    Ok(())
});

pub fn ping_pong(two_shards: bool) -> OneShot<ActorRef<u64>, Shards> {
    let shards = Shards::start();
    let latch = Latch::leaked();
    let ping = pair(
        |to_pong| spawn_on(shards.handle(0), Relay, (to_pong, latch, 0)),
        |to_ping| spawn_on(shards.handle(usize::from(two_shards)), Pong, to_ping),
    );
    OneShot::new(latch, ping, round_trips(two_shards), 1, shards)
}

/// Handles its first message, tells its spawner (or the latch), stops.
pub struct Child;

actor!(Child, Answer<ActorRef<u64>>, |myself, msg, answer| {
    black_box(msg);
    match answer {
        Answer::Spawner(spawner) => spawner.send_message(0)?,
        Answer::Latch(latch) => latch.arrive(),
    }
    myself.stop(None);
    Ok(())
});

/// Spawns children, each sent its first message (see [`Spawns`]).
pub struct Spawner;

actor!(Spawner, Spawns, |myself, msg, spawns| {
    for first in spawns.on_message(msg) {
        let answer = spawns.answer(|| myself.clone());
        let (child, _) = Actor::spawn(None, Child, answer).await?;
        child.send_message(first)?;
    }
    Ok(())
});

pub fn spawn(mode: SpawnMode) -> OneShot<ActorRef<u64>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let spawner = spawn_on(rt.handle(), Spawner, Spawns::new(mode, latch));
    OneShot::new(latch, spawner, SPAWNS, mode.arrivals(), rt)
}

pub fn ring() -> OneShot<ActorRef<u64>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let first = ring_of(|next| spawn_on(rt.handle(), Relay, (next, latch, 1)));
    OneShot::new(latch, first, RING_HOPS, 1, rt)
}

pub fn fan_in() -> FanIn<ActorRef<u64>, Runtime> {
    FanIn::spawn(
        multi_thread(),
        |rt, tally| spawn_on(rt.handle(), Counter, tally),
        |rt, _, sink| spawn_on(rt.handle(), Driver, (vec![sink], 0)),
    )
}
