//! The cost of the GenServer behaviour: a call round trip through
//! `ServerRef` against a raw ask (or `Runtime::call`) to a plain actor doing
//! the same work (add the request to a sum, reply with the sum).
//!
//! | benchmark | what one iteration does | figure | placement |
//! |---|---|---|---|
//! | `call_round_trip/same_shard` | a driver actor makes 10,000 asks one after another, each sent when the last reply arrived | per round trip | driver and server pinned on shard 0 |
//! | `call_round_trip/two_shards` | as above, 1,000 asks | per round trip | driver on shard 0, server on shard 1, both pinned |
//! | `call_round_trip/outside` | the measuring thread makes 1,000 blocking calls | per round trip | server on shard 0, not pinned to it |
//!
//! In each group `gen_server` goes through `ServerRef::ask` / `ServerRef::call`
//! to a `Server<G>`, and `raw` through `Context::ask` / `Runtime::call` to a
//! plain actor with the same handler. Each ask arms its timeout timer, on
//! both sides alike (see [`ASK_TIMEOUT`]). The runtime has two pinned shards, as in
//! `benches/benches/actors.rs`, whose style this follows: each
//! implementation's runtime is built before its first iteration and dropped
//! after its benchmark, outside the timed spans, and the measuring thread
//! sleeps on a [`Latch`] that the driver opens when its round trips are done.
//!
//! Run with `cargo bench -p zbmd-benches --bench behaviours` (about a
//! minute on two cores).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use zbmd_benches::Backoff;
use zbmd_rt::behaviour::{GenServer, Server, ServerContext, ServerRef};
use zbmd_rt::{
    Actor, ActorError, ActorRef, AskError, Context, ReplyTo, Runtime, SendError, SpawnOptions,
};

/// Shards of every runtime: one per core of the 2-core machines the project
/// measures on.
const SHARDS: usize = 2;

/// Round trips per iteration between two actors on one shard: a few
/// milliseconds of work, so the wake-ups that start and end an iteration
/// are noise.
const ROUND_TRIPS_SAME_SHARD: u64 = 10_000;

/// Round trips per iteration across shards, or from a thread outside the
/// runtime: fewer, because each one wakes a sleeping thread (tens of
/// microseconds on a small VM).
const ROUND_TRIPS_CROSS: u64 = 1_000;

/// How long an iteration may take before the benchmark gives up, and the
/// timeout of every blocking call: far above any healthy figure, so only a
/// lost reply (a bug) trips it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The timeout of every ask: long enough never to fire (the answer frees
/// the ask's timer, so the default timer wheel suffices).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts the arrivals of one iteration; the measuring thread sleeps until
/// the last one. Leaked once per benchmark so actors hold a `&'static`.
struct Latch {
    remaining: AtomicU64,
    waiter: Thread,
}

impl Latch {
    fn leaked() -> &'static Latch {
        Box::leak(Box::new(Latch { remaining: AtomicU64::new(0), waiter: thread::current() }))
    }

    fn arm(&self, count: u64) {
        debug_assert_eq!(self.remaining.load(Ordering::Acquire), 0, "armed twice");
        self.remaining.store(count, Ordering::Release);
    }

    fn arrive(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waiter.unpark();
        }
    }

    fn wait(&self) {
        let deadline = Instant::now() + STALL_LIMIT;
        while self.remaining.load(Ordering::Acquire) != 0 {
            let now = Instant::now();
            assert!(now < deadline, "benchmark stalled: a reply was lost");
            thread::park_timeout(deadline - now);
        }
    }
}

/// The work both servers do: add the request to a sum, answer the sum.
#[derive(Default)]
struct Sum(u64);

impl Sum {
    #[inline]
    fn add(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(std::hint::black_box(n));
        self.0
    }
}

impl GenServer for Sum {
    type Call = u64;
    type Reply = u64;
    type Cast = std::convert::Infallible;
    type Info = std::convert::Infallible;

    fn handle_call(
        &mut self,
        _ctx: &mut ServerContext<'_, Self>,
        n: u64,
        from: ReplyTo<u64>,
    ) -> Result<(), ActorError> {
        from.reply(self.add(n));
        Ok(())
    }
}

/// The same server as a plain actor.
struct RawSum(Sum);

struct Add(u64, ReplyTo<u64>);

impl Actor for RawSum {
    type Msg = Add;
    fn handle(
        &mut self,
        _ctx: &mut Context<'_, Self>,
        Add(n, from): Add,
    ) -> Result<(), ActorError> {
        from.reply(self.0.add(n));
        Ok(())
    }
}

/// Which server a driver asks, and through what.
enum Target {
    GenServer(ServerRef<Sum>),
    Raw(ActorRef<Add>),
}

enum DriverMsg {
    /// Make this many round trips, then open the latch.
    Start(u64),
    Reply(Result<u64, AskError>),
}

/// Asks its target, one request at a time, `n` times per `Start(n)`.
struct Driver {
    target: Target,
    left: u64,
    latch: &'static Latch,
}

impl Driver {
    #[inline]
    fn ask(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), AskError> {
        match &self.target {
            Target::GenServer(server) => server.ask(ctx, 1, ASK_TIMEOUT, DriverMsg::Reply),
            Target::Raw(raw) => ctx.ask(raw, |from| Add(1, from), ASK_TIMEOUT, DriverMsg::Reply),
        }
    }
}

impl Actor for Driver {
    type Msg = DriverMsg;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: DriverMsg) -> Result<(), ActorError> {
        match msg {
            DriverMsg::Start(n) => self.left = n,
            DriverMsg::Reply(reply) => {
                if let Err(error) = &reply {
                    eprintln!("benchmark driver: an ask failed: {error}");
                }
                std::hint::black_box(reply?);
                self.left -= 1;
                if self.left == 0 {
                    self.latch.arrive();
                    return Ok(());
                }
            }
        }
        if let Err(error) = self.ask(ctx) {
            eprintln!("benchmark driver: could not ask: {error}");
            return Err(error.into());
        }
        Ok(())
    }
}

fn runtime() -> Runtime {
    Runtime::builder().shards(SHARDS).build().expect("zbmd runtime starts")
}

fn on(shard: usize, pinned: bool) -> SpawnOptions {
    SpawnOptions { shard: Some(shard), pinned, ..SpawnOptions::default() }
}

/// One implementation of one workload, with its runtime running.
trait Fixture {
    /// Runs `iters` iterations and returns how long they took.
    fn run(&mut self, iters: u64) -> Duration;
}

/// A driver actor making round trips inside the runtime.
struct Inside {
    driver: ActorRef<DriverMsg>,
    latch: &'static Latch,
    round_trips: u64,
    _rt: Runtime,
}

fn inside(gen_server: bool, two_shards: bool) -> Inside {
    let rt = runtime();
    let latch = Latch::leaked();
    let server_on = on(usize::from(two_shards), true);
    let target = if gen_server {
        let server = rt.spawn_with(Server::new(Sum::default()), server_on).expect("spawn");
        Target::GenServer(ServerRef::from(server))
    } else {
        Target::Raw(rt.spawn_with(RawSum(Sum::default()), server_on).expect("spawn"))
    };
    let driver = rt.spawn_with(Driver { target, left: 0, latch }, on(0, true)).expect("spawn");
    let round_trips = if two_shards { ROUND_TRIPS_CROSS } else { ROUND_TRIPS_SAME_SHARD };
    Inside { driver, latch, round_trips, _rt: rt }
}

impl Fixture for Inside {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.latch.arm(1);
            let mut msg = DriverMsg::Start(self.round_trips);
            let mut backoff = Backoff::new();
            while let Err(error) = self.driver.try_send(msg) {
                match error {
                    SendError::Full(back) => msg = back,
                    SendError::NoProc(_) => panic!("the driver died"),
                }
                backoff.snooze();
            }
            self.latch.wait();
        }
        start.elapsed()
    }
}

/// The measuring thread making blocking calls.
struct Outside {
    target: Target,
    rt: Runtime,
}

fn outside(gen_server: bool) -> Outside {
    let rt = runtime();
    let target = if gen_server {
        let server = rt.spawn_with(Server::new(Sum::default()), on(0, false)).expect("spawn");
        Target::GenServer(ServerRef::from(server))
    } else {
        Target::Raw(rt.spawn_with(RawSum(Sum::default()), on(0, false)).expect("spawn"))
    };
    Outside { target, rt }
}

impl Fixture for Outside {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters * ROUND_TRIPS_CROSS {
            let reply = match &self.target {
                Target::GenServer(server) => server.call(1, STALL_LIMIT),
                Target::Raw(raw) => self.rt.call(raw, |from| Add(1, from), STALL_LIMIT),
            };
            std::hint::black_box(reply.expect("a call answered"));
        }
        start.elapsed()
    }
}

/// Registers one implementation: its fixture is built on the first call
/// (so a filtered-out benchmark starts no runtime) and dropped, stopping
/// its runtime, before the next implementation starts.
fn bench<F: Fixture>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    (case, name): (&str, &str),
    elements: u64,
    make: impl Fn() -> F,
) {
    group.throughput(Throughput::Elements(elements));
    let mut fixture: Option<F> = None;
    group.bench_function(BenchmarkId::new(case, name), |b| {
        let fixture = fixture.get_or_insert_with(&make);
        b.iter_custom(|iters| fixture.run(iters));
    });
    drop(fixture);
}

fn call_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_round_trip");
    group.sampling_mode(SamplingMode::Flat);
    for (case, two_shards) in [("same_shard", false), ("two_shards", true)] {
        let n = if two_shards { ROUND_TRIPS_CROSS } else { ROUND_TRIPS_SAME_SHARD };
        bench(&mut group, (case, "gen_server"), n, || inside(true, two_shards));
        bench(&mut group, (case, "raw"), n, || inside(false, two_shards));
    }
    bench(&mut group, ("outside", "gen_server"), ROUND_TRIPS_CROSS, || outside(true));
    bench(&mut group, ("outside", "raw"), ROUND_TRIPS_CROSS, || outside(false));
    group.finish();
}

/// Short warm-up and few samples, as in `actors.rs`: six benchmarks of
/// millisecond iterations fit in about a minute on two cores.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10)
}

criterion_group! {
    name = behaviours;
    config = config();
    targets = call_round_trip
}
criterion_main!(behaviours);
