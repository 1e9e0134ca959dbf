//! Tokio: tasks as actors, a bounded mpsc channel as each one's mailbox.
//! Also the runtimes ractor and kameo run on: the usual work-stealing one
//! ([`multi_thread`]) and thread-per-core shards ([`Shards`]) for their
//! ping-pongs.

use std::hint::black_box;
use std::thread;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::oneshot;
use zbmd_benches::pin_to_core;

use crate::harness::{
    FanIn, Latch, MAILBOX_CAPACITY, Mailbox, OneShot, RING_ACTORS, RING_HOPS, SHARDS, SPAWNS,
    SpawnMode, Tally, Tell, next_index, round_trips, spin_send,
};

/// The usual tokio runtime: work-stealing, one worker per core.
pub fn multi_thread() -> Runtime {
    Builder::new_multi_thread().worker_threads(SHARDS).build().expect("tokio runtime starts")
}

/// Thread-per-core tokio: one current-thread runtime per core, on a
/// thread pinned to that core, running what is spawned into its handle.
pub struct Shards {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Shards {
    /// Starts one pinned thread, and its runtime, per core.
    pub fn start() -> Self {
        let mut shards = Shards { handles: Vec::new(), stops: Vec::new(), threads: Vec::new() };
        for core in 0..SHARDS {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            shards.threads.push(thread::spawn(move || {
                pin_to_core(core);
                let rt = Builder::new_current_thread().build().expect("tokio runtime starts");
                handle_tx.send(rt.handle().clone()).expect("the builder waits");
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            }));
            shards.handles.push(handle_rx.recv().expect("the shard thread starts"));
            shards.stops.push(stop_tx);
        }
        shards
    }

    /// The runtime of `shard`.
    pub fn handle(&self, shard: usize) -> &Handle {
        &self.handles[shard]
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Mailbox for Sender<u64> {
    fn send_from_outside(&self, msg: u64) {
        let full = |error| if let TrySendError::Full(back) = error { Some(back) } else { None };
        spin_send(msg, |msg| self.try_send(msg).map_err(full));
    }
}

async fn counter(mut rx: Receiver<u64>, mut tally: Tally) {
    while let Some(msg) = rx.recv().await {
        tally.count(msg);
    }
}

/// Sends `n` round robin for each `n` it receives, waiting for room.
async fn driver(mut rx: Receiver<u64>, targets: Vec<Sender<u64>>) {
    let mut next = 0;
    while let Some(n) = rx.recv().await {
        for i in 0..n {
            if targets[next].send(i).await.is_err() {
                return;
            }
            next = next_index(next, targets.len());
        }
    }
}

pub fn tell(inside: bool) -> Tell<Sender<u64>, Sender<u64>, Runtime> {
    Tell::spawn(
        multi_thread(),
        inside,
        |rt, _, tally| task(rt, |rx| counter(rx, tally)),
        |rt, targets| task(rt, |rx| driver(rx, targets)),
    )
}

/// A sender to a new task on `rt`, which `body` makes of its receiver.
fn task<F>(rt: &Runtime, body: impl FnOnce(Receiver<u64>) -> F) -> Sender<u64>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    rt.spawn(body(rx));
    tx
}

/// Serves the ball until it comes back as 0.
async fn ping(mut rx: Receiver<u64>, to_pong: Sender<u64>, latch: &'static Latch) {
    while let Some(msg) = rx.recv().await {
        if msg == 0 {
            latch.arrive();
        } else if to_pong.send(msg).await.is_err() {
            return;
        }
    }
}

/// Bounces the ball back, one round trip fewer.
async fn pong(mut rx: Receiver<u64>, to_ping: Sender<u64>) {
    while let Some(msg) = rx.recv().await {
        if to_ping.send(msg - 1).await.is_err() {
            return;
        }
    }
}

pub fn ping_pong(two_shards: bool) -> OneShot<Sender<u64>, Shards> {
    let shards = Shards::start();
    let latch = Latch::leaked();
    let (ping_tx, ping_rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (pong_tx, pong_rx) = mpsc::channel(MAILBOX_CAPACITY);
    shards.handle(0).spawn(ping(ping_rx, pong_tx, latch));
    shards.handle(usize::from(two_shards)).spawn(pong(pong_rx, ping_tx.clone()));
    OneShot::new(latch, ping_tx, round_trips(two_shards), 1, shards)
}

/// Handles its first message, tells its spawner (or the latch), ends.
async fn child(mut rx: Receiver<u64>, spawner: Option<Sender<u64>>, latch: &'static Latch) {
    if let Some(msg) = rx.recv().await {
        black_box(msg);
        match spawner {
            Some(spawner) => {
                let _ = spawner.send(0).await;
            }
            None => latch.arrive(),
        }
    }
}

/// Spawns `n` children for each `n` it receives (see [`SpawnMode`]);
/// `me` is a sender to its own channel, for the children's answers. A
/// task can wait for each answer in place, so this loop is its own
/// state rather than the other peers' [`Spawns`](crate::harness::Spawns).
async fn spawner(mut rx: Receiver<u64>, me: Sender<u64>, mode: SpawnMode, latch: &'static Latch) {
    while let Some(n) = rx.recv().await {
        for i in 0..n {
            let (tx, child_rx) = mpsc::channel(MAILBOX_CAPACITY);
            let answer_to = (mode == SpawnMode::OneByOne).then(|| me.clone());
            tokio::spawn(child(child_rx, answer_to, latch));
            tx.try_send(i).expect("a new channel has room");
            if mode == SpawnMode::OneByOne && rx.recv().await != Some(0) {
                return;
            }
        }
        if mode == SpawnMode::OneByOne {
            latch.arrive();
        }
    }
}

pub fn spawn(mode: SpawnMode) -> OneShot<Sender<u64>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    rt.spawn(spawner(rx, tx.clone(), mode, latch));
    OneShot::new(latch, tx, SPAWNS, mode.arrivals(), rt)
}

/// Passes the token (the hops left) on; the one that gets 0 arrives.
async fn node(mut rx: Receiver<u64>, next: Sender<u64>, latch: &'static Latch) {
    while let Some(msg) = rx.recv().await {
        if msg == 0 {
            latch.arrive();
        } else if next.send(msg - 1).await.is_err() {
            return;
        }
    }
}

pub fn ring() -> OneShot<Sender<u64>, Runtime> {
    let rt = multi_thread();
    let latch = Latch::leaked();
    let (txs, rxs): (Vec<_>, Vec<_>) =
        (0..RING_ACTORS).map(|_| mpsc::channel(MAILBOX_CAPACITY)).unzip();
    for (i, rx) in rxs.into_iter().enumerate() {
        rt.spawn(node(rx, txs[next_index(i, RING_ACTORS)].clone(), latch));
    }
    OneShot::new(latch, txs[0].clone(), RING_HOPS, 1, rt)
}

pub fn fan_in() -> FanIn<Sender<u64>, Runtime> {
    FanIn::spawn(
        multi_thread(),
        |rt, tally| task(rt, |rx| counter(rx, tally)),
        |rt, _, sink| task(rt, |rx| driver(rx, vec![sink])),
    )
}
