//! Restart latency: how long a supervised child takes from its crash to its
//! new incarnation answering its first message, zbmd's supervisors against
//! Erlang/OTP's `supervisor` doing the same (`benches/erlang/supervision.erl`,
//! run by `benches/erlang/run_supervision.sh` in the same session).
//!
//! One *cycle*, the same on both sides: a driver actor (not supervised)
//! sends `Crash` to child 0, whose handler returns an error (Erlang: the
//! child calls `exit(crash)`); the supervisor restarts per its strategy;
//! the new incarnation's `started` hook sends `Up` with its `ActorRef` to
//! the driver (Erlang: a plain process, `spawn_link`ed by the start
//! function the supervisor calls, sends `{up, ..., self()}` as the first
//! thing it does; no `proc_lib`, no `gen_server`); the driver sends it
//! `Ping`; it answers `Pong`. The figure is ns per cycle: criterion's median
//! (Erlang: the median of 5 repetitions, as `actors.erl`).
//!
//! | group/case | the tree | what a cycle restarts |
//! |---|---|---|
//! | `restart/one_for_one_10` | one supervisor, 10 permanent workers | child 0 |
//! | `restart/one_for_all_10` | one supervisor, 10 permanent workers | all 10: the other 9 are stopped first, newest first, with the default worker shutdown (`shutdown`, then `kill` after 5 s; they do not trap exits, so they stop at once), then all 10 start in order; the driver acts on child 0's `Up` and drops the others' |
//! | `restart/no_supervisor` (zbmd only) | none: the driver links to one plain child and traps exits | the driver itself: on the child's exit signal it `start_link`s a fresh one. The floor: what a restart costs without a supervisor |
//!
//! The supervisor has intensity 100 and period 1 s on both sides, and the
//! driver replaces the whole tree after every 100 cycles (it stops the
//! supervisor with `shutdown`, waits for its exit, starts a fresh one and
//! waits for its 10 children's `Up`s), outside the timed spans. OTP filters
//! its list of restart times on every restart, so a huge intensity would
//! make OTP quadratic; 100 restarts per tree keeps both lists short and the
//! two sides comparable, and never exceeds the intensity.
//!
//! Placement: 2 shards (Erlang `+S 2:2 +sbt db`), as the actor benches. The
//! driver is pinned to shard 0 (Erlang: bound to scheduler 1); it starts
//! the supervisor with [`SupervisorSpec::start_link`], which spawns it on
//! the driver's shard, and the supervisor starts its children on its own
//! shard (OTP: both begin on the spawner's scheduler). zbmd pins every
//! supervisor to the shard it starts on; the children are not pinned, so
//! the idle shard may steal them, as BEAM's idle scheduler may migrate
//! processes.
//!
//! Logging is off on both sides: no `tracing` subscriber here (zbmd's
//! "actor crashed" event goes nowhere), logger level `none` in Erlang
//! (otherwise OTP formats and prints a supervisor report per restart).
//!
//! The measuring thread sends the driver `Run(n)`; the driver runs `n`
//! cycles, timing each stretch of cycles on one tree with [`Instant`] and
//! leaving out the tree replacements, and sends back the sum. With
//! `ZBMD_BENCH_METRICS=1`, each benchmark prints its shards' counters
//! (messages, restarts, steals, parks) when it ends.
//!
//! Run with `cargo bench -p zbmd-benches --bench supervision` (about half a
//! minute), then `benches/erlang/run_supervision.sh
//! bench_results/supervision.erlang.jsonl` and `python3
//! benches/supervision_report.py` for `bench_results/supervision.{json,md}`
//! (both done by `make bench`).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{ChildSpec, SupervisorSpec};
use zbmd_rt::{
    Actor, ActorError, ActorId, ActorRef, Context, ExitReason, Pid, Runtime, SpawnOptions,
};

/// Shards of the runtime: one per core of the 2-core machines the project
/// measures on (Erlang: `+S 2:2`).
const SHARDS: usize = 2;

/// Children of each supervisor.
const CHILDREN: usize = 10;

/// Cycles run on one tree before the driver replaces it: no more than
/// [`INTENSITY`], so no supervisor ever gives up.
const CYCLES_PER_TREE: u32 = 100;

/// The supervisor's restart intensity...
const INTENSITY: u32 = 100;

/// ...within this period (OTP's unit is the second).
const PERIOD: Duration = Duration::from_secs(1);

/// How long a run of cycles may take before the benchmark gives up: far
/// above any healthy figure, so only a lost message (a bug) trips it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The crash reason, built once (Erlang's is the atom `crash`).
static CRASH: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("crash"));

/// What a cycle restarts, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// A one_for_one supervisor of [`CHILDREN`] workers.
    OneForOne,
    /// A one_for_all supervisor of [`CHILDREN`] workers.
    OneForAll,
    /// No supervisor: the driver restarts one linked child itself.
    NoSupervisor,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::OneForOne => "one_for_one_10",
            Case::OneForAll => "one_for_all_10",
            Case::NoSupervisor => "no_supervisor",
        }
    }

    /// The tree's spec, or none without a supervisor.
    fn spec(self) -> Option<SupervisorSpec> {
        match self {
            Case::OneForOne => Some(SupervisorSpec::one_for_one()),
            Case::OneForAll => Some(SupervisorSpec::one_for_all()),
            Case::NoSupervisor => None,
        }
    }
}

/// What a child is told.
enum ToChild {
    /// Fail the handler: the child crashes with reason `crash`.
    Crash,
    /// Answer [`ToDriver::Pong`].
    Ping,
}

/// What the driver is told.
enum ToDriver {
    /// From the measuring thread: run this many cycles and send back the
    /// time they took.
    Run(u64),
    /// From a child's `started` hook: incarnation `child` of child `index`
    /// of tree `tree` is up.
    Up { tree: u64, index: usize, child: ActorRef<ToChild> },
    /// From child 0: the answer to `Ping`.
    Pong,
}

/// A supervised worker (or, in [`Case::NoSupervisor`], the driver's
/// linked child).
struct Child {
    driver: ActorRef<ToDriver>,
    tree: u64,
    index: usize,
}

impl Actor for Child {
    type Msg = ToChild;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let up = ToDriver::Up { tree: self.tree, index: self.index, child: ctx.myself() };
        self.driver.try_send(up)?;
        Ok(())
    }

    fn handle(&mut self, _ctx: &mut Context<'_, Self>, msg: ToChild) -> Result<(), ActorError> {
        match msg {
            ToChild::Crash => Err(ActorError::exit(ExitReason::Error(CRASH.clone()))),
            ToChild::Ping => {
                self.driver.try_send(ToDriver::Pong)?;
                Ok(())
            }
        }
    }
}

/// Where the driver is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `Run`.
    Idle,
    /// A tree is starting: waiting for its children's first `Up`s.
    Building,
    /// Child 0 was told to crash: waiting for its next incarnation's `Up`.
    Crashed,
    /// The new incarnation was pinged: waiting for `Pong`.
    Pinged,
    /// The old tree is stopping: waiting for the supervisor's exit.
    TearingDown,
}

/// Runs the cycles (see the module docs): the only actor that times.
struct Driver {
    case: Case,
    /// Where the time of each `Run` goes.
    done: Sender<Duration>,
    phase: Phase,
    /// The current tree's number: `Up`s of older trees are dropped.
    tree: u64,
    /// The current tree's supervisor.
    supervisor: Option<Pid>,
    /// Child 0's current incarnation.
    child: Option<ActorRef<ToChild>>,
    /// `Up`s still awaited from the current tree's first start.
    starting: usize,
    /// Cycles left in the current `Run`.
    left: u64,
    /// Cycles run on the current tree.
    on_tree: u32,
    /// When the current stretch of timed cycles began.
    since: Option<Instant>,
    /// Timed so far in the current `Run`.
    timed: Duration,
}

impl Driver {
    fn new(case: Case, done: Sender<Duration>) -> Self {
        Driver {
            case,
            done,
            phase: Phase::Idle,
            tree: 0,
            supervisor: None,
            child: None,
            starting: 0,
            left: 0,
            on_tree: 0,
            since: None,
            timed: Duration::ZERO,
        }
    }

    fn stop_clock(&mut self) {
        if let Some(since) = self.since.take() {
            self.timed += since.elapsed();
        }
    }

    /// Starts the next cycle, or replaces the tree first, or reports the
    /// end of the run.
    fn next(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        if self.left == 0 {
            self.stop_clock();
            self.phase = Phase::Idle;
            let _ = self.done.send(std::mem::take(&mut self.timed));
            return Ok(());
        }
        let worn_out = self.case != Case::NoSupervisor && self.on_tree == CYCLES_PER_TREE;
        if self.child.is_none() || worn_out {
            self.stop_clock();
            return self.replace_tree(ctx);
        }
        let Some(child) = &self.child else { unreachable!("checked just above") };
        self.since.get_or_insert_with(Instant::now);
        child.try_send(ToChild::Crash)?;
        self.left -= 1;
        self.on_tree += 1;
        self.phase = Phase::Crashed;
        Ok(())
    }

    /// Stops the current tree (its exit signal comes back to
    /// `handle_exit`, which builds the next), or builds the first.
    fn replace_tree(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.child = None;
        match &self.supervisor {
            Some(supervisor) => {
                let supervisor = supervisor.clone();
                ctx.exit(&supervisor, ExitReason::Shutdown);
                self.phase = Phase::TearingDown;
                Ok(())
            }
            None => self.build(ctx),
        }
    }

    /// Starts a fresh tree (or, without a supervisor, the first child); its
    /// `Up`s bring the driver back to [`next`](Self::next).
    fn build(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.tree += 1;
        self.on_tree = 0;
        self.phase = Phase::Building;
        let Some(spec) = self.case.spec() else {
            self.starting = 1;
            return self.start_plain(ctx);
        };
        let spec = (0..CHILDREN).fold(spec.intensity(INTENSITY, PERIOD), |spec, index| {
            let (driver, tree) = (ctx.myself(), self.tree);
            spec.child(ChildSpec::worker(format!("child-{index}"), move || Child {
                driver: driver.clone(),
                tree,
                index,
            }))
        });
        self.starting = CHILDREN;
        let supervisor = spec.start_link(ctx)?;
        let supervisor = supervisor.actor().ok_or_else(|| ActorError::msg("supervisor gone"))?;
        self.supervisor = Some(supervisor.pid());
        Ok(())
    }

    /// [`Case::NoSupervisor`]'s restart: a fresh child, linked, started
    /// before this returns (its `Up` is then in the driver's mailbox).
    fn start_plain(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let child = Child { driver: ctx.myself(), tree: self.tree, index: 0 };
        ctx.start_link(child, SpawnOptions::default(), None)?;
        Ok(())
    }
}

impl Actor for Driver {
    type Msg = ToDriver;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        // The driver is the supervisor's parent (or the plain child's
        // link): their exits come as messages.
        ctx.trap_exit(true);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: ToDriver) -> Result<(), ActorError> {
        match msg {
            ToDriver::Run(cycles) => {
                assert_eq!(self.phase, Phase::Idle, "a run while another is going");
                self.left = cycles;
                self.next(ctx)
            }
            ToDriver::Up { tree, .. } if tree != self.tree => Ok(()),
            ToDriver::Up { index, child, .. } => match self.phase {
                Phase::Building => {
                    if index == 0 {
                        self.child = Some(child);
                    }
                    self.starting -= 1;
                    if self.starting == 0 { self.next(ctx) } else { Ok(()) }
                }
                Phase::Crashed if index == 0 => {
                    child.try_send(ToChild::Ping)?;
                    self.child = Some(child);
                    self.phase = Phase::Pinged;
                    Ok(())
                }
                // one_for_all: the other children's new incarnations.
                _ => Ok(()),
            },
            ToDriver::Pong => {
                assert_eq!(self.phase, Phase::Pinged, "a pong out of turn");
                self.next(ctx)
            }
        }
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        match self.phase {
            Phase::TearingDown if self.supervisor.as_ref().is_some_and(|s| s.id() == from) => {
                self.supervisor = None;
                self.build(ctx)
            }
            Phase::Crashed if self.case == Case::NoSupervisor => self.start_plain(ctx),
            // Between runs: the runtime stopping the tree when the
            // benchmark ends.
            Phase::Idle => Ok(()),
            // A bug: say so on stderr rather than stall for a minute.
            phase => panic!("unexpected exit from {from} ({reason}) while {phase:?}"),
        }
    }
}

/// The runtime and driver of one benchmark. With `ZBMD_BENCH_METRICS` set,
/// prints the shards' counters when the benchmark ends.
struct Fixture {
    driver: ActorRef<ToDriver>,
    done: Receiver<Duration>,
    rt: Runtime,
}

impl Fixture {
    fn new(case: Case) -> Self {
        let rt = Runtime::builder().shards(SHARDS).build().expect("zbmd runtime starts");
        let (tx, done) = mpsc::channel();
        let on_shard_0 = SpawnOptions { shard: Some(0), pinned: true, ..SpawnOptions::default() };
        let driver = rt.spawn_with(Driver::new(case, tx), on_shard_0).expect("spawn the driver");
        Fixture { driver, done, rt }
    }

    /// Runs `cycles` cycles and answers the time they took.
    fn run(&mut self, cycles: u64) -> Duration {
        if self.driver.try_send(ToDriver::Run(cycles)).is_err() {
            panic!("the driver is gone");
        }
        match self.done.recv_timeout(STALL_LIMIT) {
            Ok(timed) => timed,
            Err(_) => panic!("benchmark stalled: {cycles} cycles not done after {STALL_LIMIT:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::env::var_os("ZBMD_BENCH_METRICS").is_none() {
            return;
        }
        let metrics = self.rt.metrics();
        let counters = [
            Metric::Messages,
            Metric::Restarts,
            Metric::Steals,
            Metric::StolenActors,
            Metric::Parks,
        ];
        for shard in 0..self.rt.shards() {
            let line: Vec<String> = counters
                .iter()
                .map(|&c| format!("{}={}", c.name(), metrics.get(shard, c)))
                .collect();
            eprintln!("zbmd shard {shard}: {}", line.join(" "));
        }
    }
}

/// Registers one case; its runtime starts on the first call (so a
/// filtered-out case starts none) and stops before the next case starts.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, case: Case) {
    group.throughput(Throughput::Elements(1));
    let mut fixture: Option<Fixture> = None;
    group.bench_function(BenchmarkId::new(case.name(), "zbmd"), |b| {
        let fixture = fixture.get_or_insert_with(|| Fixture::new(case));
        b.iter_custom(|cycles| fixture.run(cycles));
    });
    drop(fixture);
}

fn restart(c: &mut Criterion) {
    let mut group = c.benchmark_group("restart");
    for case in [Case::OneForOne, Case::OneForAll, Case::NoSupervisor] {
        bench(&mut group, case);
    }
    group.finish();
}

/// Short warm-up and few samples, as the actor benches: three cases in
/// about half a minute on two cores.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
}

criterion_group! {
    name = supervision;
    config = config();
    targets = restart
}
criterion_main!(supervision);
