//! kameo: actors on tokio ([`multi_thread`], or the pinned [`Shards`] for
//! the ping-pong), one boxed message per tell; bounded mailboxes.

use std::hint::black_box;

use kameo::Actor;
use kameo::actor::ActorRef;
use kameo::error::{Infallible, SendError};
use kameo::mailbox;
use kameo::message::{Context, Message};
use tokio::runtime::{Handle, Runtime};

use crate::harness::{
    Answer, FanIn, Latch, MAILBOX_CAPACITY, Mailbox, OneShot, Peer, RING_HOPS, SPAWNS, SpawnMode,
    Spawns, Tally, Tell, next_index, pair, peer, ring_of, round_trips, spin_send,
};
use crate::tokio_peer::{Shards, multi_thread};

fn spawn_on<A: Actor<Args = A>>(handle: &Handle, actor: A) -> ActorRef<A> {
    let _entered = handle.enter();
    A::spawn_with_mailbox(actor, mailbox::bounded(MAILBOX_CAPACITY))
}

impl<A: Message<u64>> Mailbox for ActorRef<A> {
    fn send_from_outside(&self, msg: u64) {
        let full = |error| if let SendError::MailboxFull(back) = error { Some(back) } else { None };
        spin_send(msg, |msg| self.tell(msg).try_send().map_err(full));
    }
}

/// `impl Actor` with the state as its own arguments.
macro_rules! plain_actor {
    ($($name:ident),*) => {$(
        impl Actor for $name {
            type Args = Self;
            type Error = Infallible;
            async fn on_start(state: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
                Ok(state)
            }
        }
    )*};
}

plain_actor!(Counter, Driver, Ping, Pong, Child, Spawner, Node);

pub struct Counter(Tally);

impl Message<u64> for Counter {
    type Reply = ();
    async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
        self.0.count(msg);
    }
}

/// Sends `n` round robin, waiting for mailbox room.
pub struct Driver {
    targets: Vec<ActorRef<Counter>>,
    next: usize,
}

impl Message<u64> for Driver {
    type Reply = ();
    async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
        for i in 0..msg {
            let sent = self.targets[self.next].tell(i).send().await;
            assert!(sent.is_ok(), "a benchmark actor stopped");
            self.next = next_index(self.next, self.targets.len());
        }
    }
}

pub fn tell(inside: bool) -> Tell<ActorRef<Counter>, ActorRef<Driver>, Runtime> {
    Tell::spawn(
        multi_thread(),
        inside,
        |rt, _, tally| spawn_on(rt.handle(), Counter(tally)),
        |rt, targets| spawn_on(rt.handle(), Driver { targets, next: 0 }),
    )
}

/// Bounces the ball back to the pinger, one round trip fewer.
pub struct Pong(Peer<ActorRef<Ping>>);

impl Message<u64> for Pong {
    type Reply = ();
    async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
        let sent = peer(&self.0).tell(msg - 1).send().await;
        assert!(sent.is_ok(), "the pinger stopped");
    }
}

/// A relay: passes the ball (the hops left, less `$dec`) on to a `$to`,
/// or arrives when it comes as 0.
macro_rules! relay {
    ($name:ident, $to:ident, $dec:expr, $lost:literal) => {
        pub struct $name(Peer<ActorRef<$to>>, &'static Latch);

        impl Message<u64> for $name {
            type Reply = ();
            async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
                if msg == 0 {
                    self.1.arrive();
                } else {
                    let sent = peer(&self.0).tell(msg - $dec).send().await;
                    assert!(sent.is_ok(), $lost);
                }
            }
        }
    };
}

// The pinger serves the ball until it comes back as 0 (the ponger counts).
relay!(Ping, Pong, 0, "the ponger stopped");
// A ring node passes the token on, one hop fewer.
relay!(Node, Node, 1, "a ring node stopped");

pub fn ping_pong(two_shards: bool) -> OneShot<ActorRef<Ping>, Shards> {
    let shards = Shards::start();
    let latch = Latch::leaked();
    let ping = pair(
        |to_pong| spawn_on(shards.handle(0), Ping(to_pong, latch)),
        |to_ping| spawn_on(shards.handle(usize::from(two_shards)), Pong(to_ping)),
    );
    OneShot::new(latch, ping, round_trips(two_shards), 1, shards)
}

/// Handles its first message, tells its spawner (or the latch), stops.
pub struct Child(Answer<ActorRef<Spawner>>);

impl Message<u64> for Child {
    type Reply = ();
    async fn handle(&mut self, msg: u64, ctx: &mut Context<Self, ()>) {
        black_box(msg);
        match &self.0 {
            Answer::Spawner(spawner) => {
                let sent = spawner.tell(0).send().await;
                assert!(sent.is_ok(), "the spawner stopped");
            }
            Answer::Latch(latch) => latch.arrive(),
        }
        ctx.stop();
    }
}

/// Spawns children, each sent its first message (see [`Spawns`]).
pub struct Spawner(Spawns);

impl Message<u64> for Spawner {
    type Reply = ();
    async fn handle(&mut self, msg: u64, ctx: &mut Context<Self, ()>) {
        for first in self.0.on_message(msg) {
            let child = Child(self.0.answer(|| ctx.actor_ref().clone()));
            let child = Child::spawn_with_mailbox(child, mailbox::bounded(MAILBOX_CAPACITY));
            assert!(child.tell(first).try_send().is_ok(), "a new mailbox has room");
        }
    }
}

pub fn spawn(mode: SpawnMode) -> OneShot<ActorRef<Spawner>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let spawner = spawn_on(rt.handle(), Spawner(Spawns::new(mode, latch)));
    OneShot::new(latch, spawner, SPAWNS, mode.arrivals(), rt)
}

pub fn ring() -> OneShot<ActorRef<Node>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let first = ring_of(|next| spawn_on(rt.handle(), Node(next, latch)));
    OneShot::new(latch, first, RING_HOPS, 1, rt)
}

pub fn fan_in() -> FanIn<ActorRef<Driver>, Runtime> {
    FanIn::spawn(
        multi_thread(),
        |rt, tally| spawn_on(rt.handle(), Counter(tally)),
        |rt, _, sink| spawn_on(rt.handle(), Driver { targets: vec![sink], next: 0 }),
    )
}
