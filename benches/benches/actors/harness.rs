//! What every implementation of the actor benchmarks shares: the workload
//! sizes, the [`Latch`] the measuring thread sleeps on, the counting and
//! spawning logic the actors run, and the fixtures that time an iteration
//! ([`Tell`], [`OneShot`], [`FanIn`]), generic over a runtime's address
//! type through [`Mailbox`].
//!
//! A peer's module (`zbmd.rs`, `tokio.rs`, ...) builds its actors and its
//! runtime and hands them to one of these fixtures; the timed loop is the
//! same code for every peer, so only the runtimes differ in what is timed.

use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use zbmd_benches::Backoff;

/// Worker threads of every runtime: one per core of the 2-core machines the
/// project measures on.
pub const SHARDS: usize = 2;

/// Every bounded mailbox and channel: zbmd's default, so no peer gets a
/// deeper buffer than zbmd.
pub const MAILBOX_CAPACITY: usize = zbmd_rt::runtime::DEFAULT_MAILBOX_CAPACITY;

/// Receivers of `tell_100`.
pub const TELL_ACTORS: usize = 100;

/// Messages per `tell_100` iteration: a multiple of [`TELL_ACTORS`] (each
/// gets the same share) and a few milliseconds of work, so the one wake-up
/// that starts an iteration and the one that ends it are noise.
pub const TELL_MSGS: u64 = 100_000;

/// Round trips per `ping_pong` iteration on one shard.
pub const PING_ROUND_TRIPS: u64 = 10_000;

/// Round trips per `ping_pong` iteration across two shards: fewer, because
/// every one wakes a sleeping thread, which costs tens of microseconds on
/// a small VM (the whole run has to fit in about ten minutes).
pub const PING_ROUND_TRIPS_CROSS: u64 = 1_000;

/// Actors spawned per `spawn_first_msg` iteration: well under zbmd's
/// 65,536 actors per shard even if none had stopped yet.
pub const SPAWNS: u64 = 10_000;

/// Actors in the ring of `ring_1000`.
pub const RING_ACTORS: usize = 1_000;

/// Token passes per `ring_1000` iteration.
pub const RING_HOPS: u64 = 1_000_000;

/// Token passes per iteration of the unpinned zbmd ring, where most hops
/// cross shards (see `zbmd::ring`): fewer, to fit the time budget.
pub const RING_HOPS_UNPINNED: u64 = 100_000;

/// Messages each of the two senders of `fan_in` sends per iteration.
pub const FAN_IN_PER_SENDER: u64 = 50_000;

/// How long an iteration may take before the benchmark gives up: far above
/// any healthy figure, so only a lost message (a bug) trips it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Counts arrivals of one iteration; the thread that waits sleeps until the
/// last one. Leaked once per benchmark so actors hold a `&'static` and no
/// reference count is touched per message.
pub struct Latch {
    remaining: AtomicU64,
    waiter: Thread,
}

impl Latch {
    /// A latch whose waiter is the calling thread (criterion's).
    pub fn leaked() -> &'static Latch {
        Box::leak(Box::new(Latch { remaining: AtomicU64::new(0), waiter: thread::current() }))
    }

    /// Expects `count` arrivals.
    fn arm(&self, count: u64) {
        debug_assert_eq!(self.remaining.load(Ordering::Acquire), 0, "armed twice");
        self.remaining.store(count, Ordering::Release);
    }

    /// One arrival; the last one wakes the waiter.
    pub fn arrive(&self) {
        let before = self.remaining.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "more arrivals than armed");
        if before == 1 {
            self.waiter.unpark();
        }
    }

    /// Sleeps until every arrival is in.
    fn wait(&self) {
        let deadline = Instant::now() + STALL_LIMIT;
        loop {
            let left = self.remaining.load(Ordering::Acquire);
            if left == 0 {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "benchmark stalled: {left} arrivals missing after {STALL_LIMIT:?}"
            );
            thread::park_timeout(deadline - now);
        }
    }
}

/// What every counting actor does with a message: count it, and arrive at
/// the latch once it has seen its share of the iteration.
pub struct Tally {
    quota: u64,
    seen: u64,
    latch: &'static Latch,
}

impl Tally {
    /// A tally that arrives at `latch` after every `quota` messages.
    pub fn new(quota: u64, latch: &'static Latch) -> Self {
        Tally { quota, seen: 0, latch }
    }

    /// Counts one message.
    #[inline]
    pub fn count(&mut self, msg: u64) {
        black_box(msg);
        self.seen += 1;
        if self.seen == self.quota {
            self.seen = 0;
            self.latch.arrive();
        }
    }
}

/// Round trips per `ping_pong` iteration.
pub fn round_trips(two_shards: bool) -> u64 {
    if two_shards { PING_ROUND_TRIPS_CROSS } else { PING_ROUND_TRIPS }
}

/// How `spawn_first_msg` spawns its [`SPAWNS`] actors per iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnMode {
    /// All in one handler call, each sent its first message right away; the
    /// iteration ends when every one has handled it.
    Burst,
    /// One at a time: the next is spawned when the last one has handled its
    /// first message and told the spawner.
    OneByOne,
}

impl SpawnMode {
    /// The latch arrivals one iteration makes: one per child in a burst
    /// (each child arrives), one in all one by one (the spawner arrives).
    pub fn arrivals(self) -> u64 {
        match self {
            SpawnMode::Burst => SPAWNS,
            SpawnMode::OneByOne => 1,
        }
    }

    /// The benchmark case's name.
    pub fn name(self) -> &'static str {
        match self {
            SpawnMode::Burst => "burst",
            SpawnMode::OneByOne => "one_by_one",
        }
    }
}

/// The spawner actor's state, whatever runtime it runs on: which children
/// to spawn for each message it receives.
pub struct Spawns {
    mode: SpawnMode,
    left: u64,
    latch: &'static Latch,
}

impl Spawns {
    /// A spawner's state before its first iteration.
    pub fn new(mode: SpawnMode, latch: &'static Latch) -> Self {
        Spawns { mode, left: 0, latch }
    }

    /// Whom the next child answers: the spawner, whose address `myself`
    /// gives, one by one; the latch in a burst.
    pub fn answer<S>(&self, myself: impl FnOnce() -> S) -> Answer<S> {
        match self.mode {
            SpawnMode::OneByOne => Answer::Spawner(myself()),
            SpawnMode::Burst => Answer::Latch(self.latch),
        }
    }

    /// The first messages of the children to spawn on receiving `msg`, one
    /// child each: `0..n` for a burst of `n`; one by one, the count left
    /// (`n` to start, then one fewer per answer `0`), and none once the
    /// last child has answered, when the spawner arrives at the latch.
    pub fn on_message(&mut self, msg: u64) -> Range<u64> {
        match (self.mode, msg) {
            (SpawnMode::Burst, n) => 0..n,
            (SpawnMode::OneByOne, 0) => {
                self.left -= 1;
                if self.left == 0 {
                    self.latch.arrive();
                    return 0..0;
                }
                self.left..self.left + 1
            }
            (SpawnMode::OneByOne, n) => {
                self.left = n;
                n..n + 1
            }
        }
    }
}

/// Whom a spawned child tells that it has handled its first message.
pub enum Answer<S> {
    /// Its spawner, at this address (one by one).
    Spawner(S),
    /// The iteration's latch (a burst).
    Latch(&'static Latch),
}

/// The next index of a round robin over `len` targets.
#[inline]
pub fn next_index(index: usize, len: usize) -> usize {
    if index + 1 == len { 0 } else { index + 1 }
}

/// The peer a ping-pong or ring actor sends to, set once all are spawned.
pub type Peer<R> = Arc<OnceLock<R>>;

/// The address in `cell`.
pub fn peer<R>(cell: &Peer<R>) -> &R {
    cell.get().expect("peers are set before the first message")
}

/// A runtime's address of an actor that takes `u64` messages, as the
/// measuring thread (outside the runtime) sends to it.
pub trait Mailbox {
    /// Sends `msg`, waiting (spinning, then yielding: [`spin_send`]) while
    /// the mailbox is full; panics if the actor is gone, which only a bug
    /// does.
    fn send_from_outside(&self, msg: u64);
}

/// Sends `msg` with `try_send`, which gives the message back when the
/// mailbox is full (`Err(Some(msg))`) and says `Err(None)` when the actor
/// is gone: spins, then yields, while the mailbox is full, and panics if
/// the actor is gone. Every bounded peer's [`Mailbox`] is this loop.
#[inline]
pub fn spin_send<M>(msg: M, mut try_send: impl FnMut(M) -> Result<(), Option<M>>) {
    let mut msg = msg;
    let mut backoff = Backoff::new();
    loop {
        match try_send(msg) {
            Ok(()) => return,
            Err(Some(back)) => {
                msg = back;
                backoff.snooze();
            }
            Err(None) => panic!("a benchmark actor stopped"),
        }
    }
}

/// Spawns a ring of [`RING_ACTORS`] nodes with `spawn`, each given the
/// cell that will hold the next node's address, then fills the cells;
/// returns the first node.
pub fn ring_of<A: Clone>(mut spawn: impl FnMut(Peer<A>) -> A) -> A {
    let cells: Vec<Peer<A>> = (0..RING_ACTORS).map(|_| Peer::default()).collect();
    let nodes: Vec<A> = cells.iter().map(|cell| spawn(cell.clone())).collect();
    for (i, cell) in cells.iter().enumerate() {
        let _ = cell.set(nodes[next_index(i, RING_ACTORS)].clone());
    }
    nodes[0].clone()
}

/// Spawns a pinger and a ponger, each given the cell that will hold the
/// other's address, then fills both; returns the pinger.
pub fn pair<P: Clone, Q>(ping: impl FnOnce(Peer<Q>) -> P, pong: impl FnOnce(Peer<P>) -> Q) -> P {
    let (to_pong, to_ping) = (Peer::default(), Peer::default());
    let pinger = ping(to_pong.clone());
    let ponger = pong(to_ping.clone());
    let _ = to_pong.set(ponger);
    let _ = to_ping.set(pinger.clone());
    pinger
}

/// One implementation of one workload, with its runtime running.
pub trait Fixture {
    /// Runs `iters` iterations and returns how long they took.
    fn run(&mut self, iters: u64) -> Duration;
}

/// Times `iters` calls of `one`.
fn timed(iters: u64, mut one: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        one();
    }
    start.elapsed()
}

/// `tell_100`: [`TELL_MSGS`] messages round robin to [`TELL_ACTORS`]
/// counters, sent by the measuring thread itself or, when there is a
/// `driver`, by that actor's handler on receiving the count. `R` is
/// whatever runs the actors, dropped (and stopped) with the fixture.
pub struct Tell<T, D, R> {
    latch: &'static Latch,
    targets: Vec<T>,
    driver: Option<D>,
    _rt: R,
}

impl<T: Clone, D, R> Tell<T, D, R> {
    /// Spawns the [`TELL_ACTORS`] counters on `rt` with `counter` (given
    /// each one's index and tally) and, when `inside`, the driver with
    /// `driver` (given the counters).
    pub fn spawn(
        rt: R,
        inside: bool,
        counter: impl Fn(&R, usize, Tally) -> T,
        driver: impl FnOnce(&R, Vec<T>) -> D,
    ) -> Self {
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<T> =
            (0..TELL_ACTORS).map(|i| counter(&rt, i, Tally::new(quota, latch))).collect();
        let driver = inside.then(|| driver(&rt, targets.clone()));
        Tell { latch, targets, driver, _rt: rt }
    }
}

impl<T: Mailbox, D: Mailbox, R> Fixture for Tell<T, D, R> {
    fn run(&mut self, iters: u64) -> Duration {
        timed(iters, || {
            self.latch.arm(TELL_ACTORS as u64);
            match &self.driver {
                Some(driver) => driver.send_from_outside(TELL_MSGS),
                None => {
                    for i in 0..TELL_MSGS {
                        self.targets[i as usize % TELL_ACTORS].send_from_outside(i);
                    }
                }
            }
            self.latch.wait();
        })
    }
}

/// Sends the start of each iteration (`first`) to `start` and waits for
/// `arrivals`: `ping_pong`, `spawn_first_msg` and `ring_1000`.
pub struct OneShot<A, R> {
    latch: &'static Latch,
    start: A,
    first: u64,
    arrivals: u64,
    _rt: R,
}

impl<A, R> OneShot<A, R> {
    /// The fixture; `rt` runs the actors and is dropped with it.
    pub fn new(latch: &'static Latch, start: A, first: u64, arrivals: u64, rt: R) -> Self {
        OneShot { latch, start, first, arrivals, _rt: rt }
    }
}

impl<A: Mailbox, R> Fixture for OneShot<A, R> {
    fn run(&mut self, iters: u64) -> Duration {
        timed(iters, || {
            self.latch.arm(self.arrivals);
            self.start.send_from_outside(self.first);
            self.latch.wait();
        })
    }
}

/// `fan_in`: each sender is told to send [`FAN_IN_PER_SENDER`] messages
/// to the one counting sink, which arrives once it has them all.
pub struct FanIn<A, R> {
    latch: &'static Latch,
    senders: Vec<A>,
    _rt: R,
}

impl<A, R> FanIn<A, R> {
    /// Spawns the sink on `rt` with `sink` (given its tally of every
    /// sender's messages), then one sender per shard with `sender` (given
    /// its shard and the sink).
    pub fn spawn<K: Clone>(
        rt: R,
        sink: impl FnOnce(&R, Tally) -> K,
        sender: impl Fn(&R, usize, K) -> A,
    ) -> Self {
        let latch = Latch::leaked();
        let sink = sink(&rt, Tally::new(SHARDS as u64 * FAN_IN_PER_SENDER, latch));
        let senders = (0..SHARDS).map(|shard| sender(&rt, shard, sink.clone())).collect();
        FanIn { latch, senders, _rt: rt }
    }
}

impl<A: Mailbox, R> Fixture for FanIn<A, R> {
    fn run(&mut self, iters: u64) -> Duration {
        timed(iters, || {
            self.latch.arm(1);
            for sender in &self.senders {
                sender.send_from_outside(FAN_IN_PER_SENDER);
            }
            self.latch.wait();
        })
    }
}

/// A group: every sample runs the same number of iterations (flat
/// sampling), which suits iterations of milliseconds.
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group
}

/// Registers one implementation, whose iterations do `elements` of the
/// group's unit each: its fixture is built on the first call (so a
/// filtered-out benchmark starts no runtime) and dropped, stopping its
/// runtime, before the next implementation starts.
pub fn bench<F: Fixture>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    (case, name): (&str, &str),
    elements: u64,
    make: impl Fn() -> F,
) {
    group.throughput(Throughput::Elements(elements));
    let id = if case.is_empty() {
        BenchmarkId::from_parameter(name)
    } else {
        BenchmarkId::new(case, name)
    };
    let mut fixture: Option<F> = None;
    group.bench_function(id, |b| {
        let fixture = fixture.get_or_insert_with(&make);
        b.iter_custom(|iters| fixture.run(iters));
    });
    drop(fixture);
}
