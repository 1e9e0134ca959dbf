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
//! arms a [`Latch`], sends the iteration's start message, and sleeps until
//! the actors have handled everything (the last one unparks it). With
//! `ZBMD_BENCH_METRICS=1`, each zbmd benchmark prints its shards' counters
//! (messages, steals, parks, full mailboxes) when it ends.
//!
//! Run with `cargo bench -p zbmd-benches --bench actors` (about ten minutes
//! on two cores), then `benches/erlang/run.sh bench_results/actors.erlang.jsonl`,
//! `python3 benches/actors_report.py` for `bench_results/actors.{json,md}` and
//! `cargo run --release -p zbmd-benches --example actors_plot` for
//! `bench_results/actors.svg`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use zbmd_benches::{Backoff, Placement, pin_to_core, run_threads};

/// Worker threads of every runtime: one per core of the 2-core machines the
/// project measures on.
const SHARDS: usize = 2;

/// Every bounded mailbox and channel: zbmd's default, so no peer gets a
/// deeper buffer than zbmd.
const MAILBOX_CAPACITY: usize = zbmd_rt::runtime::DEFAULT_MAILBOX_CAPACITY;

/// Receivers of `tell_100`.
const TELL_ACTORS: usize = 100;

/// Messages per `tell_100` iteration: a multiple of [`TELL_ACTORS`] (each
/// gets the same share) and a few milliseconds of work, so the one wake-up
/// that starts an iteration and the one that ends it are noise.
const TELL_MSGS: u64 = 100_000;

/// Round trips per `ping_pong` iteration on one shard.
const PING_ROUND_TRIPS: u64 = 10_000;

/// Round trips per `ping_pong` iteration across two shards: fewer, because
/// every one wakes a sleeping thread, which costs tens of microseconds on
/// a small VM (the whole run has to fit in about ten minutes).
const PING_ROUND_TRIPS_CROSS: u64 = 1_000;

/// Actors spawned per `spawn_first_msg` iteration: well under zbmd's
/// 65,536 actors per shard even if none had stopped yet.
const SPAWNS: u64 = 10_000;

/// Actors in the ring of `ring_1000`.
const RING_ACTORS: usize = 1_000;

/// Token passes per `ring_1000` iteration.
const RING_HOPS: u64 = 1_000_000;

/// Token passes per iteration of the unpinned zbmd ring, where most hops
/// cross shards (see [`zbmd::ring`]): fewer, to fit the time budget.
const RING_HOPS_UNPINNED: u64 = 100_000;

/// Messages each of the two senders of `fan_in` sends per iteration.
const FAN_IN_PER_SENDER: u64 = 50_000;

/// Capacity of each of the two rings of the raw SPSC ping-pong (only one
/// value is ever in flight).
const RAW_RING_CAPACITY: usize = 1024;

/// How long an iteration may take before the benchmark gives up: far above
/// any healthy figure, so only a lost message (a bug) trips it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Shared by every implementation.

/// Counts arrivals of one iteration; the thread that waits sleeps until the
/// last one. Leaked once per benchmark so actors hold a `&'static` and no
/// reference count is touched per message.
pub struct Latch {
    remaining: AtomicU64,
    waiter: Thread,
}

impl Latch {
    /// A latch whose waiter is the calling thread (criterion's).
    fn leaked() -> &'static Latch {
        Box::leak(Box::new(Latch { remaining: AtomicU64::new(0), waiter: thread::current() }))
    }

    /// Expects `count` arrivals.
    fn arm(&self, count: u64) {
        debug_assert_eq!(self.remaining.load(Ordering::Acquire), 0, "armed twice");
        self.remaining.store(count, Ordering::Release);
    }

    /// One arrival; the last one wakes the waiter.
    fn arrive(&self) {
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
    fn new(quota: u64, latch: &'static Latch) -> Self {
        Tally { quota, seen: 0, latch }
    }

    #[inline]
    fn count(&mut self, msg: u64) {
        black_box(msg);
        self.seen += 1;
        if self.seen == self.quota {
            self.seen = 0;
            self.latch.arrive();
        }
    }
}

/// Round trips per `ping_pong` iteration.
fn round_trips(two_shards: bool) -> u64 {
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
    fn arrivals(self) -> u64 {
        match self {
            SpawnMode::Burst => SPAWNS,
            SpawnMode::OneByOne => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SpawnMode::Burst => "burst",
            SpawnMode::OneByOne => "one_by_one",
        }
    }
}

/// The next index of a round robin over `len` targets.
#[inline]
fn next_index(index: usize, len: usize) -> usize {
    if index + 1 == len { 0 } else { index + 1 }
}

/// One implementation of one workload, with its runtime running.
trait Fixture {
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

/// Registers one implementation, whose iterations do `elements` of the
/// group's unit each: its fixture is built on the first call (so a
/// filtered-out benchmark starts no runtime) and dropped, stopping its
/// runtime, before the next implementation starts.
fn bench<F: Fixture>(
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

/// The peer a ping-pong or ring actor sends to, set once all are spawned.
type Peer<R> = Arc<OnceLock<R>>;

fn peer<R>(cell: &Peer<R>) -> &R {
    cell.get().expect("peers are set before the first message")
}

// ---------------------------------------------------------------------------
// zbmd.

mod zbmd {
    use super::*;
    use zbmd_rt::runtime::Metric;
    use zbmd_rt::{
        Actor, ActorError, ActorRef, Context, ExitReason, Runtime, SendError, SpawnOptions,
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

    /// Sends from a thread outside the runtime, spinning then yielding while
    /// the mailbox is full.
    fn send_spin(to: &ActorRef<u64>, msg: u64) {
        let mut msg = msg;
        let mut backoff = Backoff::new();
        loop {
            match to.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(back)) => {
                    msg = back;
                    backoff.snooze();
                }
                Err(SendError::NoProc(_)) => panic!("a benchmark actor died"),
            }
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

    pub struct Tell {
        latch: &'static Latch,
        targets: Vec<ActorRef<u64>>,
        driver: Option<ActorRef<u64>>,
        _rt: Rt,
    }

    pub fn tell(inside: bool) -> Tell {
        let rt = runtime();
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<_> = (0..TELL_ACTORS)
            .map(|_| rt.spawn(Count(Tally::new(quota, latch))).expect("spawn"))
            .collect();
        let driver = inside
            .then(|| rt.spawn_with(Driver::new(targets.clone()), on(0, false)).expect("spawn"));
        Tell { latch, targets, driver, _rt: rt }
    }

    impl Fixture for Tell {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(TELL_ACTORS as u64);
                match &self.driver {
                    Some(driver) => send_spin(driver, TELL_MSGS),
                    None => {
                        for i in 0..TELL_MSGS {
                            send_spin(&self.targets[i as usize % TELL_ACTORS], i);
                        }
                    }
                }
                self.latch.wait();
            })
        }
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

    /// Serves the ball until it comes back as 0.
    struct Ping(Peer<ActorRef<u64>>, &'static Latch);

    impl Actor for Ping {
        type Msg = u64;
        fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
            if msg == 0 {
                self.1.arrive();
            } else {
                peer(&self.0).try_send(msg)?;
            }
            Ok(())
        }
    }

    /// Sends the start of each iteration to `start` and waits for one arrival.
    pub struct OneShot {
        latch: &'static Latch,
        start: ActorRef<u64>,
        first: u64,
        arrivals: u64,
        _rt: Rt,
    }

    impl Fixture for OneShot {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(self.arrivals);
                send_spin(&self.start, self.first);
                self.latch.wait();
            })
        }
    }

    pub fn ping_pong(two_shards: bool) -> OneShot {
        let rt = runtime();
        let latch = Latch::leaked();
        let (to_pong, to_ping) = (Peer::default(), Peer::default());
        let ping = rt.spawn_with(Ping(to_pong.clone(), latch), on(0, true)).expect("spawn");
        let pong =
            rt.spawn_with(Pong(to_ping.clone()), on(usize::from(two_shards), true)).expect("spawn");
        let _ = to_pong.set(pong);
        let _ = to_ping.set(ping.clone());
        OneShot { latch, start: ping, first: round_trips(two_shards), arrivals: 1, _rt: rt }
    }

    /// Handles its first message, tells its spawner (or the latch), stops.
    struct Child {
        spawner: Option<ActorRef<u64>>,
        latch: &'static Latch,
    }

    impl Actor for Child {
        type Msg = u64;
        fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
            black_box(msg);
            match &self.spawner {
                Some(spawner) => spawner.try_send(0)?,
                None => self.latch.arrive(),
            }
            ctx.stop(ExitReason::Normal);
            Ok(())
        }
    }

    /// Receives `n`: spawns `n` children on its shard, each sent its first
    /// message, all at once (burst) or each after the last one answered 0
    /// (one by one).
    struct Spawner {
        mode: SpawnMode,
        left: u64,
        latch: &'static Latch,
    }

    impl Spawner {
        fn child(&self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
            let spawner = (self.mode == SpawnMode::OneByOne).then(|| ctx.myself());
            let child = ctx.spawn(Child { spawner, latch: self.latch })?;
            child.try_send(msg)?;
            Ok(())
        }
    }

    impl Actor for Spawner {
        type Msg = u64;
        fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
            match (self.mode, msg) {
                (SpawnMode::Burst, n) => (0..n).try_for_each(|i| self.child(ctx, i)),
                (SpawnMode::OneByOne, 0) => {
                    self.left -= 1;
                    if self.left == 0 {
                        self.latch.arrive();
                        return Ok(());
                    }
                    self.child(ctx, self.left)
                }
                (SpawnMode::OneByOne, n) => {
                    self.left = n;
                    self.child(ctx, n)
                }
            }
        }
    }

    /// `pooled`: children's cells and mailboxes from the spawning shard's
    /// pools (the default); otherwise from the heap.
    pub fn spawn(mode: SpawnMode, pooled: bool) -> OneShot {
        let rt = Rt(Runtime::builder()
            .shards(SHARDS)
            .pool_actors(pooled)
            .build()
            .expect("zbmd runtime starts"));
        let latch = Latch::leaked();
        let spawner = Spawner { mode, left: 0, latch };
        let spawner = rt.spawn_with(spawner, on(0, false)).expect("spawn");
        OneShot { latch, start: spawner, first: SPAWNS, arrivals: mode.arrivals(), _rt: rt }
    }

    /// Passes the token (the hops left) on; the one that gets 0 arrives.
    struct Node(Peer<ActorRef<u64>>, &'static Latch);

    impl Actor for Node {
        type Msg = u64;
        fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
            if msg == 0 {
                self.1.arrive();
            } else {
                peer(&self.0).try_send(msg - 1)?;
            }
            Ok(())
        }
    }

    /// The ring on shard 0: `pinned` keeps it there; unpinned, the idle
    /// shard steals the one runnable node, again and again.
    pub fn ring(pinned: bool) -> OneShot {
        let rt = runtime();
        let latch = Latch::leaked();
        let cells: Vec<Peer<ActorRef<u64>>> = (0..RING_ACTORS).map(|_| Peer::default()).collect();
        let nodes: Vec<_> = cells
            .iter()
            .map(|cell| rt.spawn_with(Node(cell.clone(), latch), on(0, pinned)).expect("spawn"))
            .collect();
        for (i, cell) in cells.iter().enumerate() {
            let _ = cell.set(nodes[next_index(i, RING_ACTORS)].clone());
        }
        OneShot {
            latch,
            start: nodes[0].clone(),
            first: if pinned { RING_HOPS } else { RING_HOPS_UNPINNED },
            arrivals: 1,
            _rt: rt,
        }
    }

    pub struct FanIn {
        latch: &'static Latch,
        senders: Vec<ActorRef<u64>>,
        _rt: Rt,
    }

    pub fn fan_in() -> FanIn {
        let rt = runtime();
        let latch = Latch::leaked();
        let sink = rt
            .spawn_with(Count(Tally::new(2 * FAN_IN_PER_SENDER, latch)), on(1, true))
            .expect("spawn");
        let senders = (0..SHARDS)
            .map(|shard| {
                rt.spawn_with(Driver::new(vec![sink.clone()]), on(shard, true)).expect("spawn")
            })
            .collect();
        FanIn { latch, senders, _rt: rt }
    }

    impl Fixture for FanIn {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(1);
                for sender in &self.senders {
                    send_spin(sender, FAN_IN_PER_SENDER);
                }
                self.latch.wait();
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The hardware floor: two pinned threads and two SPSC rings.

mod raw {
    use super::*;
    use zbmd_rt::sync::spsc::{self, Consumer, Producer};

    fn push_spin(ring: &mut Producer<u64>, value: u64) {
        let mut value = value;
        while let Err(full) = ring.push(value) {
            value = full.into_inner();
            std::hint::spin_loop();
        }
    }

    fn pop_spin(ring: &mut Consumer<u64>) -> u64 {
        loop {
            if let Some(value) = ring.pop() {
                return value;
            }
            std::hint::spin_loop();
        }
    }

    pub struct RingPingPong;

    impl Fixture for RingPingPong {
        fn run(&mut self, iters: u64) -> Duration {
            let round_trips = iters * PING_ROUND_TRIPS;
            let (mut to_pong, mut at_pong) = spsc::channel::<u64>(RAW_RING_CAPACITY).expect("ring");
            let (mut to_ping, mut at_ping) = spsc::channel::<u64>(RAW_RING_CAPACITY).expect("ring");
            let ping = move |_: usize| {
                for i in 0..round_trips {
                    push_spin(&mut to_pong, i);
                    black_box(pop_spin(&mut at_ping));
                }
            };
            let pong = move |_: usize| {
                for _ in 0..round_trips {
                    let value = pop_spin(&mut at_pong);
                    push_spin(&mut to_ping, value);
                }
                0
            };
            // Ping is pinned to core 0, pong to core 1; thread start-up is
            // outside the timed span.
            run_threads(vec![ping], vec![pong], Placement::Pinned).0
        }
    }
}

// ---------------------------------------------------------------------------
// Tokio: tasks as actors, a bounded mpsc channel as each one's mailbox. Also
// the thread-per-core shards that the ractor and kameo ping-pongs run on.

mod tokio_peer {
    use super::*;
    use tokio::runtime::{Builder, Handle, Runtime};
    use tokio::sync::mpsc::error::TrySendError;
    use tokio::sync::mpsc::{self, Receiver, Sender};
    use tokio::sync::oneshot;

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

    fn send_spin(to: &Sender<u64>, msg: u64) {
        let mut msg = msg;
        let mut backoff = Backoff::new();
        loop {
            match to.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    backoff.snooze();
                }
                Err(TrySendError::Closed(_)) => panic!("a benchmark task ended"),
            }
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

    pub struct Tell {
        latch: &'static Latch,
        targets: Vec<Sender<u64>>,
        driver: Option<Sender<u64>>,
        _rt: Runtime,
    }

    pub fn tell(inside: bool) -> Tell {
        let rt = multi_thread();
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<_> = (0..TELL_ACTORS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
                rt.spawn(counter(rx, Tally::new(quota, latch)));
                tx
            })
            .collect();
        let driver = inside.then(|| {
            let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
            rt.spawn(driver(rx, targets.clone()));
            tx
        });
        Tell { latch, targets, driver, _rt: rt }
    }

    impl Fixture for Tell {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(TELL_ACTORS as u64);
                match &self.driver {
                    Some(driver) => send_spin(driver, TELL_MSGS),
                    None => {
                        for i in 0..TELL_MSGS {
                            send_spin(&self.targets[i as usize % TELL_ACTORS], i);
                        }
                    }
                }
                self.latch.wait();
            })
        }
    }

    /// Sends the start of each iteration and waits for `arrivals`. Holds
    /// whatever runs the tasks, to drop it after the benchmark.
    pub struct OneShot<R> {
        latch: &'static Latch,
        start: Sender<u64>,
        first: u64,
        arrivals: u64,
        _rt: R,
    }

    impl<R> Fixture for OneShot<R> {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(self.arrivals);
                send_spin(&self.start, self.first);
                self.latch.wait();
            })
        }
    }

    async fn ping(mut rx: Receiver<u64>, to_pong: Sender<u64>, latch: &'static Latch) {
        while let Some(msg) = rx.recv().await {
            if msg == 0 {
                latch.arrive();
            } else if to_pong.send(msg).await.is_err() {
                return;
            }
        }
    }

    async fn pong(mut rx: Receiver<u64>, to_ping: Sender<u64>) {
        while let Some(msg) = rx.recv().await {
            if to_ping.send(msg - 1).await.is_err() {
                return;
            }
        }
    }

    pub fn ping_pong(two_shards: bool) -> OneShot<Shards> {
        let shards = Shards::start();
        let latch = Latch::leaked();
        let (ping_tx, ping_rx) = mpsc::channel(MAILBOX_CAPACITY);
        let (pong_tx, pong_rx) = mpsc::channel(MAILBOX_CAPACITY);
        shards.handle(0).spawn(ping(ping_rx, pong_tx, latch));
        shards.handle(usize::from(two_shards)).spawn(pong(pong_rx, ping_tx.clone()));
        OneShot { latch, start: ping_tx, first: round_trips(two_shards), arrivals: 1, _rt: shards }
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
    /// `me` is a sender to its own channel, for the children's answers.
    async fn spawner(
        mut rx: Receiver<u64>,
        me: Sender<u64>,
        mode: SpawnMode,
        latch: &'static Latch,
    ) {
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

    pub fn spawn(mode: SpawnMode) -> OneShot<Runtime> {
        let rt = multi_thread();
        let latch = Latch::leaked();
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        rt.spawn(spawner(rx, tx.clone(), mode, latch));
        OneShot { latch, start: tx, first: SPAWNS, arrivals: mode.arrivals(), _rt: rt }
    }

    async fn node(mut rx: Receiver<u64>, next: Sender<u64>, latch: &'static Latch) {
        while let Some(msg) = rx.recv().await {
            if msg == 0 {
                latch.arrive();
            } else if next.send(msg - 1).await.is_err() {
                return;
            }
        }
    }

    pub fn ring() -> OneShot<Runtime> {
        let rt = multi_thread();
        let latch = Latch::leaked();
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..RING_ACTORS).map(|_| mpsc::channel(MAILBOX_CAPACITY)).unzip();
        for (i, rx) in rxs.into_iter().enumerate() {
            rt.spawn(node(rx, txs[next_index(i, RING_ACTORS)].clone(), latch));
        }
        OneShot { latch, start: txs[0].clone(), first: RING_HOPS, arrivals: 1, _rt: rt }
    }

    pub struct FanIn {
        latch: &'static Latch,
        senders: Vec<Sender<u64>>,
        _rt: Runtime,
    }

    pub fn fan_in() -> FanIn {
        let rt = multi_thread();
        let latch = Latch::leaked();
        let (sink, sink_rx) = mpsc::channel(MAILBOX_CAPACITY);
        rt.spawn(counter(sink_rx, Tally::new(2 * FAN_IN_PER_SENDER, latch)));
        let senders = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
                rt.spawn(driver(rx, vec![sink.clone()]));
                tx
            })
            .collect();
        FanIn { latch, senders, _rt: rt }
    }

    impl Fixture for FanIn {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(1);
                for sender in &self.senders {
                    send_spin(sender, FAN_IN_PER_SENDER);
                }
                self.latch.wait();
            })
        }
    }
}

// ---------------------------------------------------------------------------
// actix: actors on arbiters (one single-threaded event loop per thread).

mod actix_peer {
    use super::*;
    use actix::prelude::{
        Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SendError,
    };
    use actix_rt::{Arbiter, System, SystemRunner};

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

    fn send_spin<A>(to: &Addr<A>, msg: u64)
    where
        A: Actor<Context = Context<A>> + Handler<Num>,
    {
        let mut msg = Num(msg);
        let mut backoff = Backoff::new();
        loop {
            match to.try_send(msg) {
                Ok(()) => return,
                Err(SendError::Full(back)) => {
                    msg = back;
                    backoff.snooze();
                }
                Err(SendError::Closed(_)) => panic!("a benchmark actor stopped"),
            }
        }
    }

    pub struct Counter(Tally);

    impl Actor for Counter {
        type Context = Context<Self>;
    }

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

    impl Actor for Driver {
        type Context = Context<Self>;
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

    pub struct Tell {
        latch: &'static Latch,
        targets: Vec<Addr<Counter>>,
        driver: Option<Addr<Driver>>,
        _arbiters: Arbiters,
    }

    pub fn tell(inside: bool) -> Tell {
        let arbiters = Arbiters::start();
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<_> = (0..TELL_ACTORS)
            .map(|i| arbiters.start_on(i % SHARDS, move || Counter(Tally::new(quota, latch))))
            .collect();
        let driver = inside.then(|| {
            let targets = targets.clone();
            arbiters.start_on(0, move || Driver { targets, next: 0 })
        });
        Tell { latch, targets, driver, _arbiters: arbiters }
    }

    impl Fixture for Tell {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(TELL_ACTORS as u64);
                match &self.driver {
                    Some(driver) => send_spin(driver, TELL_MSGS),
                    None => {
                        for i in 0..TELL_MSGS {
                            send_spin(&self.targets[i as usize % TELL_ACTORS], i);
                        }
                    }
                }
                self.latch.wait();
            })
        }
    }

    /// Sends the start of each iteration to an actor of type `A` and waits
    /// for one arrival (or `arrivals`).
    pub struct OneShot<A: Actor<Context = Context<A>> + Handler<Num>> {
        latch: &'static Latch,
        start: Addr<A>,
        first: u64,
        arrivals: u64,
        _arbiters: Arbiters,
    }

    impl<A: Actor<Context = Context<A>> + Handler<Num>> Fixture for OneShot<A> {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(self.arrivals);
                send_spin(&self.start, self.first);
                self.latch.wait();
            })
        }
    }

    pub struct Pong(Peer<Addr<Ping>>);

    impl Actor for Pong {
        type Context = Context<Self>;
    }

    impl Handler<Num> for Pong {
        type Result = ();
        fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
            peer(&self.0).do_send(Num(msg.0 - 1));
        }
    }

    pub struct Ping(Peer<Addr<Pong>>, &'static Latch);

    impl Actor for Ping {
        type Context = Context<Self>;
    }

    impl Handler<Num> for Ping {
        type Result = ();
        fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
            if msg.0 == 0 {
                self.1.arrive();
            } else {
                peer(&self.0).do_send(msg);
            }
        }
    }

    pub fn ping_pong(two_shards: bool) -> OneShot<Ping> {
        let arbiters = Arbiters::start();
        let latch = Latch::leaked();
        let (to_pong, to_ping): (Peer<Addr<Pong>>, Peer<Addr<Ping>>) =
            (Peer::default(), Peer::default());
        let cell = to_pong.clone();
        let ping = arbiters.start_on(0, move || Ping(cell, latch));
        let cell = to_ping.clone();
        let pong = arbiters.start_on(usize::from(two_shards), move || Pong(cell));
        let _ = to_pong.set(pong);
        let _ = to_ping.set(ping.clone());
        OneShot {
            latch,
            start: ping,
            first: round_trips(two_shards),
            arrivals: 1,
            _arbiters: arbiters,
        }
    }

    /// Handles its first message, tells its spawner (or the latch), stops.
    pub struct Child {
        spawner: Option<Addr<Spawner>>,
        latch: &'static Latch,
    }

    impl Actor for Child {
        type Context = Context<Self>;
    }

    impl Handler<Num> for Child {
        type Result = ();
        fn handle(&mut self, msg: Num, ctx: &mut Context<Self>) {
            black_box(msg.0);
            match &self.spawner {
                Some(spawner) => spawner.do_send(Num(0)),
                None => self.latch.arrive(),
            }
            ctx.stop();
        }
    }

    /// Starts `n` children on its arbiter (see [`SpawnMode`]), each sent
    /// its first message.
    pub struct Spawner {
        mode: SpawnMode,
        left: u64,
        latch: &'static Latch,
    }

    impl Spawner {
        fn child(&self, ctx: &mut Context<Self>, msg: u64) {
            let spawner = (self.mode == SpawnMode::OneByOne).then(|| ctx.address());
            let latch = self.latch;
            Child { spawner, latch }.start().do_send(Num(msg));
        }
    }

    impl Actor for Spawner {
        type Context = Context<Self>;
    }

    impl Handler<Num> for Spawner {
        type Result = ();
        fn handle(&mut self, msg: Num, ctx: &mut Context<Self>) {
            match (self.mode, msg.0) {
                (SpawnMode::Burst, n) => (0..n).for_each(|i| self.child(ctx, i)),
                (SpawnMode::OneByOne, 0) => {
                    self.left -= 1;
                    if self.left == 0 {
                        self.latch.arrive();
                    } else {
                        self.child(ctx, self.left);
                    }
                }
                (SpawnMode::OneByOne, n) => {
                    self.left = n;
                    self.child(ctx, n);
                }
            }
        }
    }

    pub fn spawn(mode: SpawnMode) -> OneShot<Spawner> {
        let arbiters = Arbiters::start();
        let latch = Latch::leaked();
        let spawner = arbiters.start_on(0, move || Spawner { mode, left: 0, latch });
        OneShot {
            latch,
            start: spawner,
            first: SPAWNS,
            arrivals: mode.arrivals(),
            _arbiters: arbiters,
        }
    }

    pub struct Node(Peer<Addr<Node>>, &'static Latch);

    impl Actor for Node {
        type Context = Context<Self>;
    }

    impl Handler<Num> for Node {
        type Result = ();
        fn handle(&mut self, msg: Num, _ctx: &mut Context<Self>) {
            if msg.0 == 0 {
                self.1.arrive();
            } else {
                peer(&self.0).do_send(Num(msg.0 - 1));
            }
        }
    }

    pub fn ring() -> OneShot<Node> {
        let arbiters = Arbiters::start();
        let latch = Latch::leaked();
        let cells: Vec<Peer<Addr<Node>>> = (0..RING_ACTORS).map(|_| Peer::default()).collect();
        let nodes: Vec<_> = cells
            .iter()
            .map(|cell| {
                let cell = cell.clone();
                arbiters.start_on(0, move || Node(cell, latch))
            })
            .collect();
        for (i, cell) in cells.iter().enumerate() {
            let _ = cell.set(nodes[next_index(i, RING_ACTORS)].clone());
        }
        OneShot {
            latch,
            start: nodes[0].clone(),
            first: RING_HOPS,
            arrivals: 1,
            _arbiters: arbiters,
        }
    }

    pub struct FanIn {
        latch: &'static Latch,
        senders: Vec<Addr<Driver>>,
        _arbiters: Arbiters,
    }

    pub fn fan_in() -> FanIn {
        let arbiters = Arbiters::start();
        let latch = Latch::leaked();
        let sink = arbiters.start_on(1, move || Counter(Tally::new(2 * FAN_IN_PER_SENDER, latch)));
        let senders = (0..SHARDS)
            .map(|arbiter| {
                let targets = vec![sink.clone()];
                arbiters.start_on(arbiter, move || Driver { targets, next: 0 })
            })
            .collect();
        FanIn { latch, senders, _arbiters: arbiters }
    }

    impl Fixture for FanIn {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(1);
                for sender in &self.senders {
                    send_spin(sender, FAN_IN_PER_SENDER);
                }
                self.latch.wait();
            })
        }
    }
}

// ---------------------------------------------------------------------------
// ractor: gen_server-style actors on tokio; unbounded mailboxes.

mod ractor_peer {
    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::runtime::{Handle, Runtime};

    fn spawn_on<A: Actor>(handle: &Handle, actor: A, args: A::Arguments) -> ActorRef<A::Msg> {
        handle.block_on(Actor::spawn(None, actor, args)).expect("ractor spawn").0
    }

    fn send(to: &ActorRef<u64>, msg: u64) {
        to.send_message(msg).expect("a benchmark actor stopped");
    }

    pub struct Counter;

    impl Actor for Counter {
        type Msg = u64;
        type State = Tally;
        type Arguments = Tally;

        async fn pre_start(
            &self,
            _: ActorRef<u64>,
            tally: Tally,
        ) -> Result<Tally, ActorProcessingErr> {
            Ok(tally)
        }

        async fn handle(
            &self,
            _: ActorRef<u64>,
            msg: u64,
            tally: &mut Tally,
        ) -> Result<(), ActorProcessingErr> {
            tally.count(msg);
            Ok(())
        }
    }

    /// Sends `n` round robin (the mailboxes are unbounded: never full).
    pub struct Driver;

    impl Actor for Driver {
        type Msg = u64;
        type State = (Vec<ActorRef<u64>>, usize);
        type Arguments = Vec<ActorRef<u64>>;

        async fn pre_start(
            &self,
            _: ActorRef<u64>,
            targets: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok((targets, 0))
        }

        async fn handle(
            &self,
            _: ActorRef<u64>,
            msg: u64,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let (targets, next) = state;
            for i in 0..msg {
                targets[*next].send_message(i)?;
                *next = next_index(*next, targets.len());
            }
            Ok(())
        }
    }

    pub struct Tell {
        latch: &'static Latch,
        targets: Vec<ActorRef<u64>>,
        driver: Option<ActorRef<u64>>,
        _rt: Runtime,
    }

    pub fn tell(inside: bool) -> Tell {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<_> = (0..TELL_ACTORS)
            .map(|_| spawn_on(rt.handle(), Counter, Tally::new(quota, latch)))
            .collect();
        let driver = inside.then(|| spawn_on(rt.handle(), Driver, targets.clone()));
        Tell { latch, targets, driver, _rt: rt }
    }

    impl Fixture for Tell {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(TELL_ACTORS as u64);
                match &self.driver {
                    Some(driver) => send(driver, TELL_MSGS),
                    None => {
                        for i in 0..TELL_MSGS {
                            send(&self.targets[i as usize % TELL_ACTORS], i);
                        }
                    }
                }
                self.latch.wait();
            })
        }
    }

    /// Sends the start of each iteration and waits for `arrivals`.
    pub struct OneShot<R> {
        latch: &'static Latch,
        start: ActorRef<u64>,
        first: u64,
        arrivals: u64,
        _rt: R,
    }

    impl<R> Fixture for OneShot<R> {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(self.arrivals);
                send(&self.start, self.first);
                self.latch.wait();
            })
        }
    }

    pub struct Pong;

    impl Actor for Pong {
        type Msg = u64;
        type State = Peer<ActorRef<u64>>;
        type Arguments = Peer<ActorRef<u64>>;

        async fn pre_start(
            &self,
            _: ActorRef<u64>,
            to_ping: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(to_ping)
        }

        async fn handle(
            &self,
            _: ActorRef<u64>,
            msg: u64,
            to_ping: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            peer(to_ping).send_message(msg - 1)?;
            Ok(())
        }
    }

    /// Also the ring's node: passes `msg - dec` on, or arrives at 0.
    pub struct Relay {
        dec: u64,
    }

    impl Actor for Relay {
        type Msg = u64;
        type State = (Peer<ActorRef<u64>>, &'static Latch);
        type Arguments = Self::State;

        async fn pre_start(
            &self,
            _: ActorRef<u64>,
            state: Self::State,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(state)
        }

        async fn handle(
            &self,
            _: ActorRef<u64>,
            msg: u64,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if msg == 0 {
                state.1.arrive();
            } else {
                peer(&state.0).send_message(msg - self.dec)?;
            }
            Ok(())
        }
    }

    pub fn ping_pong(two_shards: bool) -> OneShot<tokio_peer::Shards> {
        let shards = tokio_peer::Shards::start();
        let latch = Latch::leaked();
        let (to_pong, to_ping) = (Peer::default(), Peer::default());
        let ping = spawn_on(shards.handle(0), Relay { dec: 0 }, (to_pong.clone(), latch));
        let pong = spawn_on(shards.handle(usize::from(two_shards)), Pong, to_ping.clone());
        let _ = to_pong.set(pong);
        let _ = to_ping.set(ping.clone());
        OneShot { latch, start: ping, first: round_trips(two_shards), arrivals: 1, _rt: shards }
    }

    /// Handles its first message, tells its spawner (or the latch), stops.
    pub struct Child;

    impl Actor for Child {
        type Msg = u64;
        type State = (Option<ActorRef<u64>>, &'static Latch);
        type Arguments = Self::State;

        async fn pre_start(
            &self,
            _: ActorRef<u64>,
            state: Self::State,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(state)
        }

        async fn handle(
            &self,
            myself: ActorRef<u64>,
            msg: u64,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            black_box(msg);
            match &state.0 {
                Some(spawner) => spawner.send_message(0)?,
                None => state.1.arrive(),
            }
            myself.stop(None);
            Ok(())
        }
    }

    /// Spawns `n` children (see [`SpawnMode`]), each sent its first
    /// message. State: the children left to spawn one by one.
    pub struct Spawner {
        mode: SpawnMode,
        latch: &'static Latch,
    }

    impl Spawner {
        async fn child(&self, myself: &ActorRef<u64>, msg: u64) -> Result<(), ActorProcessingErr> {
            let spawner = (self.mode == SpawnMode::OneByOne).then(|| myself.clone());
            let (child, _) = Actor::spawn(None, Child, (spawner, self.latch)).await?;
            child.send_message(msg)?;
            Ok(())
        }
    }

    impl Actor for Spawner {
        type Msg = u64;
        type State = u64;
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> {
            Ok(0)
        }

        async fn handle(
            &self,
            myself: ActorRef<u64>,
            msg: u64,
            left: &mut u64,
        ) -> Result<(), ActorProcessingErr> {
            match (self.mode, msg) {
                (SpawnMode::Burst, n) => {
                    for i in 0..n {
                        self.child(&myself, i).await?;
                    }
                }
                (SpawnMode::OneByOne, 0) => {
                    *left -= 1;
                    if *left == 0 {
                        self.latch.arrive();
                    } else {
                        self.child(&myself, *left).await?;
                    }
                }
                (SpawnMode::OneByOne, n) => {
                    *left = n;
                    self.child(&myself, n).await?;
                }
            }
            Ok(())
        }
    }

    pub fn spawn(mode: SpawnMode) -> OneShot<Runtime> {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let spawner = spawn_on(rt.handle(), Spawner { mode, latch }, ());
        OneShot { latch, start: spawner, first: SPAWNS, arrivals: mode.arrivals(), _rt: rt }
    }

    pub fn ring() -> OneShot<Runtime> {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let cells: Vec<Peer<ActorRef<u64>>> = (0..RING_ACTORS).map(|_| Peer::default()).collect();
        let nodes: Vec<_> = cells
            .iter()
            .map(|cell| spawn_on(rt.handle(), Relay { dec: 1 }, (cell.clone(), latch)))
            .collect();
        for (i, cell) in cells.iter().enumerate() {
            let _ = cell.set(nodes[next_index(i, RING_ACTORS)].clone());
        }
        OneShot { latch, start: nodes[0].clone(), first: RING_HOPS, arrivals: 1, _rt: rt }
    }

    pub struct FanIn {
        latch: &'static Latch,
        senders: Vec<ActorRef<u64>>,
        _rt: Runtime,
    }

    pub fn fan_in() -> FanIn {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let sink = spawn_on(rt.handle(), Counter, Tally::new(2 * FAN_IN_PER_SENDER, latch));
        let senders =
            (0..SHARDS).map(|_| spawn_on(rt.handle(), Driver, vec![sink.clone()])).collect();
        FanIn { latch, senders, _rt: rt }
    }

    impl Fixture for FanIn {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(1);
                for sender in &self.senders {
                    send(sender, FAN_IN_PER_SENDER);
                }
                self.latch.wait();
            })
        }
    }
}

// ---------------------------------------------------------------------------
// kameo: actors on tokio, one boxed message per tell; bounded mailboxes.

mod kameo_peer {
    use super::*;
    use kameo::Actor;
    use kameo::actor::ActorRef;
    use kameo::error::{Infallible, SendError};
    use kameo::mailbox;
    use kameo::message::{Context, Message};
    use tokio::runtime::{Handle, Runtime};

    fn spawn_on<A: Actor<Args = A>>(handle: &Handle, actor: A) -> ActorRef<A> {
        let _entered = handle.enter();
        A::spawn_with_mailbox(actor, mailbox::bounded(MAILBOX_CAPACITY))
    }

    fn send_spin<A: Message<u64>>(to: &ActorRef<A>, msg: u64) {
        let mut msg = msg;
        let mut backoff = Backoff::new();
        loop {
            match to.tell(msg).try_send() {
                Ok(()) => return,
                Err(SendError::MailboxFull(back)) => {
                    msg = back;
                    backoff.snooze();
                }
                Err(_) => panic!("a benchmark actor stopped"),
            }
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

    pub struct Tell {
        latch: &'static Latch,
        targets: Vec<ActorRef<Counter>>,
        driver: Option<ActorRef<Driver>>,
        _rt: Runtime,
    }

    pub fn tell(inside: bool) -> Tell {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let quota = TELL_MSGS / TELL_ACTORS as u64;
        let targets: Vec<_> = (0..TELL_ACTORS)
            .map(|_| spawn_on(rt.handle(), Counter(Tally::new(quota, latch))))
            .collect();
        let driver =
            inside.then(|| spawn_on(rt.handle(), Driver { targets: targets.clone(), next: 0 }));
        Tell { latch, targets, driver, _rt: rt }
    }

    impl Fixture for Tell {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(TELL_ACTORS as u64);
                match &self.driver {
                    Some(driver) => send_spin(driver, TELL_MSGS),
                    None => {
                        for i in 0..TELL_MSGS {
                            send_spin(&self.targets[i as usize % TELL_ACTORS], i);
                        }
                    }
                }
                self.latch.wait();
            })
        }
    }

    /// Sends the start of each iteration to an `A` and waits for `arrivals`.
    pub struct OneShot<A: Actor, R> {
        latch: &'static Latch,
        start: ActorRef<A>,
        first: u64,
        arrivals: u64,
        _rt: R,
    }

    impl<A: Message<u64>, R> Fixture for OneShot<A, R> {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(self.arrivals);
                send_spin(&self.start, self.first);
                self.latch.wait();
            })
        }
    }

    pub struct Pong(Peer<ActorRef<Ping>>);

    impl Message<u64> for Pong {
        type Reply = ();
        async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
            let sent = peer(&self.0).tell(msg - 1).send().await;
            assert!(sent.is_ok(), "the pinger stopped");
        }
    }

    pub struct Ping(Peer<ActorRef<Pong>>, &'static Latch);

    impl Message<u64> for Ping {
        type Reply = ();
        async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
            if msg == 0 {
                self.1.arrive();
            } else {
                let sent = peer(&self.0).tell(msg).send().await;
                assert!(sent.is_ok(), "the ponger stopped");
            }
        }
    }

    pub fn ping_pong(two_shards: bool) -> OneShot<Ping, tokio_peer::Shards> {
        let shards = tokio_peer::Shards::start();
        let latch = Latch::leaked();
        let (to_pong, to_ping) = (Peer::default(), Peer::default());
        let ping = spawn_on(shards.handle(0), Ping(to_pong.clone(), latch));
        let pong = spawn_on(shards.handle(usize::from(two_shards)), Pong(to_ping.clone()));
        let _ = to_pong.set(pong);
        let _ = to_ping.set(ping.clone());
        OneShot { latch, start: ping, first: round_trips(two_shards), arrivals: 1, _rt: shards }
    }

    /// Handles its first message, tells its spawner (or the latch), stops.
    pub struct Child {
        spawner: Option<ActorRef<Spawner>>,
        latch: &'static Latch,
    }

    impl Message<u64> for Child {
        type Reply = ();
        async fn handle(&mut self, msg: u64, ctx: &mut Context<Self, ()>) {
            black_box(msg);
            match &self.spawner {
                Some(spawner) => {
                    let sent = spawner.tell(0).send().await;
                    assert!(sent.is_ok(), "the spawner stopped");
                }
                None => self.latch.arrive(),
            }
            ctx.stop();
        }
    }

    /// Spawns `n` children (see [`SpawnMode`]), each sent its first message.
    pub struct Spawner {
        mode: SpawnMode,
        left: u64,
        latch: &'static Latch,
    }

    impl Spawner {
        fn child(&self, ctx: &Context<Self, ()>, msg: u64) {
            let spawner = (self.mode == SpawnMode::OneByOne).then(|| ctx.actor_ref().clone());
            let child = Child { spawner, latch: self.latch };
            let child = Child::spawn_with_mailbox(child, mailbox::bounded(MAILBOX_CAPACITY));
            assert!(child.tell(msg).try_send().is_ok(), "a new mailbox has room");
        }
    }

    impl Message<u64> for Spawner {
        type Reply = ();
        async fn handle(&mut self, msg: u64, ctx: &mut Context<Self, ()>) {
            match (self.mode, msg) {
                (SpawnMode::Burst, n) => (0..n).for_each(|i| self.child(ctx, i)),
                (SpawnMode::OneByOne, 0) => {
                    self.left -= 1;
                    if self.left == 0 {
                        self.latch.arrive();
                    } else {
                        self.child(ctx, self.left);
                    }
                }
                (SpawnMode::OneByOne, n) => {
                    self.left = n;
                    self.child(ctx, n);
                }
            }
        }
    }

    pub fn spawn(mode: SpawnMode) -> OneShot<Spawner, Runtime> {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let spawner = spawn_on(rt.handle(), Spawner { mode, left: 0, latch });
        OneShot { latch, start: spawner, first: SPAWNS, arrivals: mode.arrivals(), _rt: rt }
    }

    pub struct Node(Peer<ActorRef<Node>>, &'static Latch);

    impl Message<u64> for Node {
        type Reply = ();
        async fn handle(&mut self, msg: u64, _: &mut Context<Self, ()>) {
            if msg == 0 {
                self.1.arrive();
            } else {
                let sent = peer(&self.0).tell(msg - 1).send().await;
                assert!(sent.is_ok(), "a ring node stopped");
            }
        }
    }

    pub fn ring() -> OneShot<Node, Runtime> {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let cells: Vec<Peer<ActorRef<Node>>> = (0..RING_ACTORS).map(|_| Peer::default()).collect();
        let nodes: Vec<_> =
            cells.iter().map(|cell| spawn_on(rt.handle(), Node(cell.clone(), latch))).collect();
        for (i, cell) in cells.iter().enumerate() {
            let _ = cell.set(nodes[next_index(i, RING_ACTORS)].clone());
        }
        OneShot { latch, start: nodes[0].clone(), first: RING_HOPS, arrivals: 1, _rt: rt }
    }

    pub struct FanIn {
        latch: &'static Latch,
        senders: Vec<ActorRef<Driver>>,
        _rt: Runtime,
    }

    pub fn fan_in() -> FanIn {
        let rt = tokio_peer::multi_thread();
        let latch = Latch::leaked();
        let sink = spawn_on(rt.handle(), Counter(Tally::new(2 * FAN_IN_PER_SENDER, latch)));
        let senders = (0..SHARDS)
            .map(|_| spawn_on(rt.handle(), Driver { targets: vec![sink.clone()], next: 0 }))
            .collect();
        FanIn { latch, senders, _rt: rt }
    }

    impl Fixture for FanIn {
        fn run(&mut self, iters: u64) -> Duration {
            timed(iters, || {
                self.latch.arm(1);
                for sender in &self.senders {
                    send_spin(sender, FAN_IN_PER_SENDER);
                }
                self.latch.wait();
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The groups.

/// A group: every sample runs the same number of iterations (flat
/// sampling), which suits iterations of milliseconds.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group
}

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
