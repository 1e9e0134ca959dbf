//! actix: actors on arbiters (one single-threaded event loop per thread),
//! two arbiters pinned to cores 0 and 1.

use std::hint::black_box;

use actix::prelude::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SendError,
};
use actix_rt::{Arbiter, System, SystemRunner};
use zbmd_benches::pin_to_core;

use crate::harness::{
    Answer, FanIn, Latch, MAILBOX_CAPACITY, Mailbox, OneShot, Peer, RING_HOPS, SHARDS, SPAWNS,
    SpawnMode, Spawns, Tally, Tell, next_index, pair, peer, ring_of, round_trips, spin_send,
};

/// actix needs a message type; this one is a u64 and nothing more.
pub struct Num(u64);

impl Message for Num {
    type Result = ();
}

/// A system and one arbiter per core, pinned like zbmd's shards.
pub struct Arbiters {
    arbiters: Vec<Arbiter>,
    _system: SystemRunner,
}

impl Arbiters {
    /// Starts the system and its arbiters.
    pub fn start() -> Self {
        let system = System::new();
        let arbiters = (0..SHARDS)
            .map(|core| {
                Arbiter::with_tokio_rt(move || {
                    pin_to_core(core);
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("tokio runtime starts")
                })
            })
            .collect();
        Arbiters { arbiters, _system: system }
    }

    fn start_on<A, F>(&self, arbiter: usize, make: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce() -> A + Send + 'static,
    {
        A::start_in_arbiter(&self.arbiters[arbiter].handle(), move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            make()
        })
    }
}

impl Drop for Arbiters {
    fn drop(&mut self) {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
}

impl<A> Mailbox for Addr<A>
where
    A: Actor<Context = Context<A>> + Handler<Num>,
{
    fn send_from_outside(&self, msg: u64) {
        let full = |error| if let SendError::Full(back) = error { Some(back) } else { None };
        spin_send(Num(msg), |msg| self.try_send(msg).map_err(full));
    }
}

/// `impl Actor` with actix's usual context, for each actor here.
macro_rules! actors {
    ($($name:ident),*) => {$(
        impl Actor for $name {
            type Context = Context<Self>;
        }
    )*};
}

actors!(Counter, Driver, Pong, Ping, Child, Spawner, Node);

pub struct Counter(Tally);

impl Handler<Num> for Counter {
    type Result = ();
    fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
        self.0.count(msg.0);
    }
}

/// Sends `n` round robin with `do_send`, actix's fire-and-forget from an
/// actor (it queues past the mailbox capacity: an actor cannot wait).
pub struct Driver {
    targets: Vec<Addr<Counter>>,
    next: usize,
}

impl Handler<Num> for Driver {
    type Result = ();
    fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
        for i in 0..msg.0 {
            self.targets[self.next].do_send(Num(i));
            self.next = next_index(self.next, self.targets.len());
        }
    }
}

pub fn tell(inside: bool) -> Tell<Addr<Counter>, Addr<Driver>, Arbiters> {
    Tell::spawn(
        Arbiters::start(),
        inside,
        |arbiters, i, tally| arbiters.start_on(i % SHARDS, move || Counter(tally)),
        |arbiters, targets| arbiters.start_on(0, move || Driver { targets, next: 0 }),
    )
}

/// Bounces the ball back to the pinger, one round trip fewer.
pub struct Pong(Peer<Addr<Ping>>);

impl Handler<Num> for Pong {
    type Result = ();
    fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
        peer(&self.0).do_send(Num(msg.0 - 1));
    }
}

/// A relay: passes the ball (the hops left, less `$dec`) on to a `$to`,
/// or arrives when it comes as 0.
macro_rules! relay {
    ($name:ident, $to:ident, $dec:expr) => {
        pub struct $name(Peer<Addr<$to>>, &'static Latch);

        impl Handler<Num> for $name {
            type Result = ();
            fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
                if msg.0 == 0 {
                    self.1.arrive();
                } else {
                    peer(&self.0).do_send(Num(msg.0 - $dec));
                }
            }
        }
    };
}

// The pinger serves the ball until it comes back as 0 (the ponger counts).
relay!(Ping, Pong, 0);
// A ring node passes the token on, one hop fewer.
relay!(Node, Node, 1);

pub fn ping_pong(two_shards: bool) -> OneShot<Addr<Ping>, Arbiters> {
    let arbiters = Arbiters::start();
    let latch = Latch::leaked();
    let ping = pair(
        |to_pong| arbiters.start_on(0, move || Ping(to_pong, latch)),
        |to_ping| arbiters.start_on(usize::from(two_shards), move || Pong(to_ping)),
    );
    OneShot::new(latch, ping, round_trips(two_shards), 1, arbiters)
}

/// Handles its first message, tells its spawner (or the latch), stops.
pub struct Child(Answer<Addr<Spawner>>);

impl Handler<Num> for Child {
    type Result = ();
    fn handle(&mut self, msg: Num, ctx: &mut Context<Self>) {
        black_box(msg.0);
        match &self.0 {
            Answer::Spawner(spawner) => spawner.do_send(Num(0)),
            Answer::Latch(latch) => latch.arrive(),
        }
        ctx.stop();
    }
}

/// Starts children on its arbiter, each sent its first message (see
/// [`Spawns`]).
pub struct Spawner(Spawns);

impl Handler<Num> for Spawner {
    type Result = ();
    fn handle(&mut self, msg: Num, ctx: &mut Context<Self>) {
        for first in self.0.on_message(msg.0) {
            Child(self.0.answer(|| ctx.address())).start().do_send(Num(first));
        }
    }
}

pub fn spawn(mode: SpawnMode) -> OneShot<Addr<Spawner>, Arbiters> {
    let arbiters = Arbiters::start();
    let latch = Latch::leaked();
    let spawner = arbiters.start_on(0, move || Spawner(Spawns::new(mode, latch)));
    OneShot::new(latch, spawner, SPAWNS, mode.arrivals(), arbiters)
}

pub fn ring() -> OneShot<Addr<Node>, Arbiters> {
    let arbiters = Arbiters::start();
    let latch = Latch::leaked();
    let first = ring_of(|next| arbiters.start_on(0, move || Node(next, latch)));
    OneShot::new(latch, first, RING_HOPS, 1, arbiters)
}

pub fn fan_in() -> FanIn<Addr<Driver>, Arbiters> {
    FanIn::spawn(
        Arbiters::start(),
        |arbiters, tally| arbiters.start_on(1, move || Counter(tally)),
        |arbiters, arbiter, sink| {
            arbiters.start_on(arbiter, move || Driver { targets: vec![sink], next: 0 })
        },
    )
}
