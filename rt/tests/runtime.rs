//! The runtime's promises to its users: delivery, requests, scheduling,
//! timers, the registry, limits and shutdown.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use zbmd_rt::runtime::Metric;
use zbmd_rt::topology::{CpuSet, L3Scope, Placement, SyntheticSpec, Topology};
use zbmd_rt::{
    Actor, ActorError, ActorRef, AskError, Context, ExitReason, ReplyTo, Runtime, RuntimeError,
    SendError, SpawnOptions,
};

/// Records every value it gets, and answers requests.
struct Recorder {
    seen: Sender<(usize, u64)>,
}

enum Rec {
    Value(u64),
    Get(ReplyTo<u64>),
    Hold(ReplyTo<u64>),
    Drop(ReplyTo<u64>),
    /// Meets the test at the barrier, then blocks until it meets it again.
    Block(Arc<Barrier>),
}

impl Actor for Recorder {
    type Msg = Rec;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Rec) -> Result<(), ActorError> {
        match msg {
            Rec::Value(v) => {
                let _ = self.seen.send((ctx.shard(), v));
            }
            Rec::Get(reply) => {
                reply.reply(42);
            }
            Rec::Hold(reply) => std::mem::forget(reply),
            Rec::Drop(reply) => drop(reply),
            Rec::Block(barrier) => {
                barrier.wait(); // tell the test we are busy
                barrier.wait(); // until it lets us go
            }
        }
        Ok(())
    }
}

fn recorder(rt: &Runtime) -> (ActorRef<Rec>, std::sync::mpsc::Receiver<(usize, u64)>) {
    let (tx, rx) = channel();
    (rt.spawn(Recorder { seen: tx }).unwrap(), rx)
}

#[test]
fn messages_from_one_sender_arrive_in_order() {
    let rt = runtime(2);
    let (target, seen) = recorder(&rt);
    for v in 0..20_000u64 {
        target.send_timeout(Rec::Value(v), PATIENCE).unwrap();
    }
    for v in 0..20_000u64 {
        assert_eq!(seen.recv_timeout(PATIENCE).unwrap().1, v);
    }
}

#[test]
fn call_returns_the_reply() {
    let rt = runtime(2);
    let (target, _) = recorder(&rt);
    assert_eq!(rt.call(&target, Rec::Get, PATIENCE), Ok(42));
}

#[test]
fn call_times_out_when_no_reply_comes_and_reports_a_dropped_request() {
    let rt = runtime(1);
    let (target, _) = recorder(&rt);
    assert_eq!(rt.call(&target, Rec::Hold, Duration::from_millis(20)), Err(AskError::Timeout));
    assert_eq!(rt.call(&target, Rec::Drop, PATIENCE), Err(AskError::Dropped));
}

#[test]
fn call_with_a_zero_timeout_is_an_error_and_sends_nothing() {
    let rt = runtime(1);
    let (target, seen) = recorder(&rt);
    let result = rt.call(&target, |_reply: ReplyTo<u64>| Rec::Value(1), Duration::ZERO);
    assert_eq!(result, Err(AskError::ZeroTimeout));
    assert!(seen.recv_timeout(QUIET).is_err(), "nothing was delivered");
}

#[test]
fn a_full_mailbox_hands_the_message_back_and_counts_it() {
    let rt = Runtime::builder().shards(1).pin(false).mailbox_capacity(4).build().unwrap();
    let (target, seen) = recorder(&rt);
    let gate = Arc::new(Barrier::new(2));
    target.try_send(Rec::Block(gate.clone())).unwrap();
    gate.wait(); // the handler is now busy and the mailbox empty
    for v in 0..4 {
        target.try_send(Rec::Value(v)).unwrap();
    }
    match target.try_send(Rec::Value(99)) {
        Err(SendError::Full(Rec::Value(99))) => {}
        other => panic!("a full mailbox must hand the message back, got {other:?}"),
    }
    gate.wait(); // release the handler
    for v in 0..4 {
        assert_eq!(seen.recv_timeout(PATIENCE).unwrap().1, v);
    }
    assert!(seen.recv_timeout(QUIET).is_err(), "the refused message was not delivered");
    assert_eq!(rt.metrics().total(Metric::MailboxFull), 1);
}

/// What a recorder saw: (shard, value) pairs.
type Seen = std::sync::mpsc::Receiver<(usize, u64)>;

/// A recorder whose mailbox holds `capacity` messages, held in a handler
/// until the test meets the returned barrier again, with its mailbox full.
fn full_recorder(capacity: usize) -> (Runtime, ActorRef<Rec>, Seen, Arc<Barrier>) {
    let rt = Runtime::builder().shards(1).pin(false).mailbox_capacity(capacity).build().unwrap();
    let (target, seen) = recorder(&rt);
    let gate = Arc::new(Barrier::new(2));
    target.try_send(Rec::Block(gate.clone())).unwrap();
    gate.wait(); // the handler is now busy and the mailbox empty
    for v in 0..capacity as u64 {
        target.try_send(Rec::Value(v)).unwrap();
    }
    (rt, target, seen, gate)
}

/// Sends `msg` with `send_timeout` from another thread, with a deadline far
/// beyond the test's patience (only a wake-up ends it in time), and returns
/// once the sender found the mailbox full, registered and tried again.
fn blocked_send(
    rt: &Runtime,
    target: &ActorRef<Rec>,
    msg: Rec,
) -> std::sync::mpsc::Receiver<Result<(), SendError<Rec>>> {
    let (done, finished) = channel();
    let target = target.clone();
    std::thread::spawn(move || {
        let _ = done.send(target.send_timeout(msg, Duration::from_secs(3600)));
    });
    eventually("the sender to find the mailbox full", || {
        rt.metrics().total(Metric::MailboxFull) >= 2
    });
    finished
}

#[test]
fn send_timeout_to_a_full_mailbox_is_woken_by_the_drain_and_delivers() {
    let (rt, target, seen, gate) = full_recorder(4);
    let finished = blocked_send(&rt, &target, Rec::Value(99));
    gate.wait(); // release the handler: its turn drains the mailbox
    let sent = finished.recv_timeout(PATIENCE).expect("the drain did not wake the sender");
    assert!(sent.is_ok(), "the send was refused: {sent:?}");
    for v in [0, 1, 2, 3, 99] {
        assert_eq!(seen.recv_timeout(PATIENCE).unwrap().1, v);
    }
}

#[test]
fn send_timeout_to_a_full_mailbox_answers_noproc_when_the_actor_dies() {
    let (rt, target, _seen, gate) = full_recorder(1);
    let finished = blocked_send(&rt, &target, Rec::Value(1));
    // Killed while busy: its death, not the mailbox, must end the wait
    // (the dead actor never drains in a turn).
    rt.exit(&target.pid(), ExitReason::Kill);
    gate.wait();
    let sent = finished.recv_timeout(PATIENCE).expect("the death did not wake the sender");
    assert!(matches!(sent, Err(SendError::NoProc(Rec::Value(1)))), "got {sent:?}");
}

#[test]
fn a_stale_ref_gets_noproc_and_never_reaches_the_slots_new_actor() {
    let rt = Runtime::builder().shards(1).pin(false).max_actors_per_shard(1).build().unwrap();
    let (tx, rx) = events();
    let old = rt.spawn(Probe::new(&tx)).unwrap();
    rt.exit(&old.pid(), ExitReason::Shutdown);
    eventually("old actor dead", || !old.is_alive());
    eventually("slot released", || rt.live_actors() == 0);
    let new = rt.spawn(Probe::new(&tx)).unwrap();
    assert_eq!((new.id().shard, new.id().slot), (old.id().shard, old.id().slot));
    assert_ne!(new.id().generation, old.id().generation);
    assert!(matches!(old.try_send(5), Err(SendError::NoProc(5))));
    let n = new.id();
    expect_none(&rx, "delivery to the new actor", |e| *e == Event::Got(n, 5));
}

#[test]
fn spawning_past_the_actor_limit_is_an_error_that_disturbs_nothing() {
    let rt = Runtime::builder().shards(1).pin(false).max_actors_per_shard(3).build().unwrap();
    let (tx, rx) = events();
    let actors: Vec<_> = (0..3).map(|_| rt.spawn(Probe::new(&tx)).unwrap()).collect();
    let error = rt.spawn(Probe::new(&tx)).unwrap_err();
    assert!(matches!(error, RuntimeError::ActorLimit { shard: 0, limit: 3 }), "{error}");
    for (i, actor) in actors.iter().enumerate() {
        actor.try_send(i as u64).unwrap();
        let id = actor.id();
        expect(&rx, "an answer", |e| *e == Event::Got(id, i as u64));
    }
    assert_eq!(rt.live_actors(), 3);
}

#[test]
fn spawning_on_a_shard_that_does_not_exist_is_an_error() {
    let rt = runtime(2);
    let (tx, _rx) = events();
    let options = SpawnOptions { shard: Some(2), ..SpawnOptions::default() };
    let error = rt.spawn_with(Probe::new(&tx), options).unwrap_err();
    assert!(matches!(error, RuntimeError::NoSuchShard { shard: 2, shards: 2 }));
}

#[test]
fn the_registry_names_live_actors_only_and_refuses_bad_names() {
    let rt = Runtime::builder().shards(1).pin(false).max_name_len(8).build().unwrap();
    let (tx, rx) = events();
    let a = rt.spawn(Probe::new(&tx)).unwrap();
    let b = rt.spawn(Probe::new(&tx)).unwrap();
    rt.register("worker", &a.pid()).unwrap();
    assert_eq!(rt.whereis("worker").map(|p| p.id()), Some(a.id()));
    let taken = rt.register("worker", &b.pid()).unwrap_err();
    assert!(
        matches!(taken, RuntimeError::NameTaken { ref holder, .. } if *holder == a.id()),
        "{taken}"
    );
    let twice = rt.register("other", &a.pid()).unwrap_err();
    assert!(matches!(twice, RuntimeError::AlreadyNamed { .. }), "{twice}");
    assert!(matches!(
        rt.register("much-too-long", &b.pid()),
        Err(RuntimeError::NameTooLong { len: 13, limit: 8 })
    ));
    assert!(matches!(rt.register("", &b.pid()), Err(RuntimeError::NameTooLong { len: 0, .. })));
    // The typed lookup works, and the name dies with its actor.
    let typed: ActorRef<u64> = rt.whereis("worker").unwrap().typed().unwrap();
    typed.try_send(9).unwrap();
    let a_id = a.id();
    expect(&rx, "delivery by name", |e| *e == Event::Got(a_id, 9));
    rt.exit(&a.pid(), ExitReason::Kill);
    eventually("name released", || rt.whereis("worker").is_none());
    rt.register("worker", &b.pid()).unwrap();
    assert!(rt.register("late", &a.pid()).is_err(), "a dead actor cannot be named");
}

/// Links to `target` and reports whether its name was already gone when
/// the link's exit signal arrived (OTP releases names first).
struct NameChecker {
    target: zbmd_rt::Pid,
    linked: Sender<()>,
    report: Sender<bool>,
}

impl Actor for NameChecker {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(true);
        ctx.link(&self.target);
        let _ = self.linked.send(());
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        _: zbmd_rt::ActorId,
        _: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = self.report.send(ctx.whereis("doomed").is_none());
        Ok(())
    }
}

#[test]
fn a_name_is_released_before_links_hear_of_the_death() {
    let rt = runtime(2);
    let (tx, _rx) = events();
    let doomed = rt.spawn(Probe::new(&tx)).unwrap();
    rt.register("doomed", &doomed.pid()).unwrap();
    let (linked_tx, linked) = channel();
    let (report, released) = channel();
    rt.spawn(NameChecker { target: doomed.pid(), linked: linked_tx, report }).unwrap();
    linked.recv_timeout(PATIENCE).unwrap();
    rt.exit(&doomed.pid(), ExitReason::error("crash"));
    assert!(released.recv_timeout(PATIENCE).unwrap(), "name still registered when the link fired");
}

/// Sends itself a message for every message it handles: it never runs dry.
struct Flooder;

impl Actor for Flooder {
    type Msg = ();
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        for _ in 0..8 {
            let _ = ctx.myself().try_send(());
        }
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
        let _ = ctx.myself().try_send(());
        Ok(())
    }
}

#[test]
fn an_actor_flooding_itself_cannot_starve_its_shard() {
    let rt = runtime(1);
    let pinned = SpawnOptions { shard: Some(0), pinned: true, ..SpawnOptions::default() };
    let _flooder = rt.spawn_with(Flooder, pinned.clone()).unwrap();
    let (tx, seen) = channel();
    let neighbour = rt.spawn_with(Recorder { seen: tx }, pinned).unwrap();
    for v in 0..100 {
        neighbour.send_timeout(Rec::Value(v), PATIENCE).unwrap();
        assert_eq!(seen.recv_timeout(PATIENCE).unwrap().1, v);
    }
    let metrics = rt.metrics();
    assert!(metrics.total(Metric::Messages) > 1000, "the flooder kept running too");
}

/// Burns CPU on every message, so one shard cannot keep up alone.
struct Busy {
    done: Arc<Mutex<Vec<usize>>>,
}

impl Actor for Busy {
    type Msg = u32;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, work: u32) -> Result<(), ActorError> {
        let mut x = 0u64;
        for i in 0..work {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(u64::from(i)));
        }
        ctx.consume(10);
        self.done.lock().unwrap().push(ctx.shard());
        Ok(())
    }
}

#[test]
fn idle_shards_steal_a_skewed_load_and_never_steal_pinned_actors() {
    let rt = runtime(2);
    let spread = Arc::new(Mutex::new(Vec::new()));
    let pinned_runs = Arc::new(Mutex::new(Vec::new()));
    let on_zero = SpawnOptions { shard: Some(0), ..SpawnOptions::default() };
    let pinned = SpawnOptions { shard: Some(0), pinned: true, ..SpawnOptions::default() };
    let free: Vec<_> = (0..64)
        .map(|_| rt.spawn_with(Busy { done: spread.clone() }, on_zero.clone()).unwrap())
        .collect();
    let held: Vec<_> = (0..8)
        .map(|_| rt.spawn_with(Busy { done: pinned_runs.clone() }, pinned.clone()).unwrap())
        .collect();
    for _ in 0..20 {
        for actor in free.iter().chain(&held) {
            actor.send_timeout(200_000, PATIENCE).unwrap();
        }
    }
    eventually("all work done", || {
        spread.lock().unwrap().len() == 64 * 20 && pinned_runs.lock().unwrap().len() == 8 * 20
    });
    let on_one = spread.lock().unwrap().iter().filter(|&&s| s == 1).count();
    assert!(on_one > 0, "shard 1 never ran any of the actors spawned on shard 0");
    assert!(
        pinned_runs.lock().unwrap().iter().all(|&s| s == 0),
        "a pinned actor ran on another shard"
    );
    assert!(rt.metrics().get(1, Metric::Steals) > 0);
}

/// Does blocking work off the shard and reports the result.
struct Offloader {
    report: Sender<u64>,
}

impl Actor for Offloader {
    type Msg = u64;
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.spawn_blocking(
            || {
                std::thread::sleep(Duration::from_millis(5));
                zbmd_rt::runtime::on_shard_thread() as u64 + 40
            },
            |v| v,
        )?;
        Ok(())
    }
    fn handle(&mut self, _: &mut Context<'_, Self>, v: u64) -> Result<(), ActorError> {
        let _ = self.report.send(v);
        Ok(())
    }
}

#[test]
fn blocking_work_runs_off_the_shards_and_comes_back_as_a_message() {
    let rt = runtime(1);
    let (report, results) = channel();
    rt.spawn(Offloader { report }).unwrap();
    assert_eq!(
        results.recv_timeout(PATIENCE).unwrap(),
        40,
        "ran on a blocking thread, not a shard"
    );
}

/// Sets timers when started and reports when they fire.
struct Timed {
    report: Sender<(&'static str, Instant)>,
    interval: Option<zbmd_rt::actor::TimerRef>,
    ticks: u32,
}

#[derive(Clone)]
enum Tick {
    Once,
    Cancelled,
    Every,
}

impl Actor for Timed {
    type Msg = Tick;
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let me = ctx.myself();
        let _ = self.report.send(("start", Instant::now()));
        ctx.send_after(&me, Tick::Once, Duration::from_millis(30))?;
        let cancelled = ctx.send_after(&me, Tick::Cancelled, Duration::from_millis(10))?;
        assert!(ctx.cancel_timer(&cancelled));
        self.interval = Some(ctx.send_interval(&me, || Tick::Every, Duration::from_millis(5))?);
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<'_, Self>, tick: Tick) -> Result<(), ActorError> {
        match tick {
            Tick::Once => {
                let _ = self.report.send(("once", Instant::now()));
            }
            Tick::Cancelled => {
                let _ = self.report.send(("cancelled", Instant::now()));
            }
            Tick::Every => {
                self.ticks += 1;
                let _ = self.report.send(("every", Instant::now()));
                if self.ticks == 3 {
                    ctx.cancel_timer(self.interval.as_ref().unwrap());
                }
            }
        }
        Ok(())
    }
}

#[test]
fn timers_fire_never_early_and_cancelled_ones_never() {
    let rt = runtime(1);
    let (report, fired) = channel();
    rt.spawn(Timed { report, interval: None, ticks: 0 }).unwrap();
    let (what, start) = fired.recv_timeout(PATIENCE).unwrap();
    assert_eq!(what, "start");
    let mut events = Vec::new();
    while let Ok(event) = fired.recv_timeout(Duration::from_millis(300)) {
        events.push(event);
    }
    let names: Vec<_> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.iter().filter(|n| **n == "every").count(), 3, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "once").count(), 1, "{names:?}");
    assert!(!names.contains(&"cancelled"), "{names:?}");
    let once_at = events.iter().find(|(n, _)| *n == "once").unwrap().1;
    let early = once_at < start + Duration::from_millis(30);
    assert!(!early, "send_after fired before its delay");
}

#[test]
fn the_stall_detector_counts_a_turn_that_held_the_shard() {
    struct Sleeper;
    impl Actor for Sleeper {
        type Msg = ();
        fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
            std::thread::sleep(Duration::from_millis(30));
            Ok(())
        }
    }
    let rt = Runtime::builder()
        .shards(1)
        .pin(false)
        .stall_limit(Duration::from_millis(5))
        .build()
        .unwrap();
    let sleeper = rt.spawn(Sleeper).unwrap();
    sleeper.try_send(()).unwrap();
    eventually("a stall counted", || rt.metrics().total(Metric::Stalls) >= 1);
}

#[test]
fn metrics_read_as_prometheus_text() {
    let rt = runtime(2);
    let (target, seen) = recorder(&rt);
    target.try_send(Rec::Value(1)).unwrap();
    seen.recv_timeout(PATIENCE).unwrap();
    let text = rt.metrics().to_prometheus();
    assert!(text.contains("# TYPE zbmd_messages_total counter"));
    let id = rt.id();
    assert!(
        text.contains(&format!("zbmd_spawns_total{{runtime=\"{id}\",shard=\"outside\"}} 1")),
        "{text}"
    );
    // Every series carries the runtime's label, the memory pools' included.
    for series in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(series.contains(&format!("{{runtime=\"{id}\"")), "{series}");
    }
    assert!(text.contains(&format!("zbmd_live_actors{{runtime=\"{id}\"}} 1")), "{text}");
    // A turn's messages are counted when the turn ends, just after the
    // handler that told us.
    eventually("the start signal and the message counted", || {
        (0..2).map(|s| rt.metrics().get(s, Metric::Messages)).sum::<u64>() >= 2
    });
}

#[test]
fn shutdown_stops_actors_newest_first() {
    struct Logged {
        index: usize,
        log: Arc<Mutex<Vec<usize>>>,
    }
    impl Actor for Logged {
        type Msg = ();
        fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
            Ok(())
        }
        fn stopping(&mut self, _: &mut Context<'_, Self>, reason: &ExitReason) {
            assert_eq!(*reason, ExitReason::Shutdown);
            self.log.lock().unwrap().push(self.index);
        }
    }
    let rt = runtime(2);
    let log = Arc::new(Mutex::new(Vec::new()));
    for index in 0..10 {
        rt.spawn(Logged { index, log: log.clone() }).unwrap();
    }
    rt.shutdown();
    assert_eq!(*log.lock().unwrap(), (0..10).rev().collect::<Vec<_>>());
}

#[test]
fn after_shutdown_refs_answer_noproc() {
    let rt = runtime(1);
    let (target, _) = recorder(&rt);
    rt.shutdown();
    assert!(matches!(target.try_send(Rec::Value(1)), Err(SendError::NoProc(_))));
}

#[test]
fn the_builder_places_shards_on_a_fake_two_socket_machine() {
    let spec = SyntheticSpec {
        packages: 2,
        numa_per_package: 2,
        cores_per_numa: 4,
        threads_per_core: 2,
        l3_per: L3Scope::Numa,
    };
    let topology = Topology::synthetic(&spec).unwrap();
    let rt = Runtime::builder()
        .topology(topology.clone())
        .allowed_cpus(topology.cpus())
        .pin(false)
        .shards(4)
        .placement(Placement::Spread)
        .build()
        .unwrap();
    let nodes: std::collections::BTreeSet<_> = rt.placement().iter().map(|p| p.numa_node).collect();
    assert_eq!(nodes.len(), 4, "spread puts 4 shards on 4 NUMA nodes: {:?}", rt.placement());
    let error = Runtime::builder()
        .topology(topology)
        .allowed_cpus(CpuSet::from_cpus([0, 1]).unwrap())
        .pin(false)
        .shards(3)
        .build()
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Topology(_)), "{error}");
}

#[test]
fn bad_builder_settings_are_named_errors() {
    let zero = Runtime::builder().shards(1).pin(false).reduction_budget(0).build().unwrap_err();
    assert!(matches!(zero, RuntimeError::Config(_)), "{zero}");
    let no_shards = Runtime::builder().shards(0).pin(false).build().unwrap_err();
    assert!(
        matches!(no_shards, RuntimeError::Topology(_) | RuntimeError::Config(_)),
        "{no_shards}"
    );
    let mailbox = Runtime::builder().shards(1).pin(false).mailbox_capacity(0).build().unwrap();
    let (tx, _rx) = events();
    let error = mailbox.spawn(Probe::new(&tx)).unwrap_err();
    assert!(matches!(error, RuntimeError::Capacity(_)), "{error}");
}

#[test]
fn many_senders_on_many_threads_lose_nothing() {
    let rt = runtime(2);
    let (target, seen) = recorder(&rt);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let target = target.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    target.send_timeout(Rec::Value(t << 32 | i), PATIENCE).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut next = [0u64; 4];
    for _ in 0..20_000 {
        let v = seen.recv_timeout(PATIENCE).unwrap().1;
        let (t, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(i, next[t], "sender {t}'s messages out of order");
        next[t] += 1;
    }
}

/// Sets as many one-minute timers as it is told, and reports each answer.
struct TimerHog {
    report: Sender<Result<(), String>>,
}

impl Actor for TimerHog {
    type Msg = u32;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, count: u32) -> Result<(), ActorError> {
        let me = ctx.myself();
        for _ in 0..count {
            let answer = ctx
                .send_after(&me, 0, Duration::from_secs(60))
                .map(drop)
                .map_err(|e| e.to_string());
            let _ = self.report.send(answer);
        }
        Ok(())
    }
}

#[test]
fn a_full_timer_wheel_is_a_named_error_and_the_shard_keeps_running() {
    let rt = Runtime::builder().shards(1).pin(false).timer_capacity(2).build().unwrap();
    let (report, answers) = channel();
    let hog = rt.spawn(TimerHog { report }).unwrap();
    hog.try_send(3).unwrap();
    let answers: Vec<_> = (0..3).map(|_| answers.recv_timeout(PATIENCE).unwrap()).collect();
    assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
    let refused = answers[2].as_ref().unwrap_err();
    assert!(refused.contains("timer wheel is full"), "{refused}");
    let (target, seen) = recorder(&rt);
    target.try_send(Rec::Value(1)).unwrap();
    assert_eq!(seen.recv_timeout(PATIENCE).unwrap().1, 1);
}

/// Sets and cancels `n` long timers, one after the other, and reports how
/// many could be set.
struct TimerChurn {
    report: std::sync::mpsc::Sender<usize>,
}

impl Actor for TimerChurn {
    type Msg = u64;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, n: u64) -> Result<(), ActorError> {
        let me = ctx.myself();
        let mut set = 0;
        for _ in 0..n {
            if let Ok(timer) = ctx.send_after(&me, 0, Duration::from_secs(60)) {
                set += 1;
                assert!(ctx.cancel_timer(&timer));
                assert!(!ctx.cancel_timer(&timer), "a second cancel finds nothing");
            }
        }
        let _ = self.report.send(set);
        Ok(())
    }
}

#[test]
fn cancelling_on_the_setting_shard_frees_the_timer_wheel_entry() {
    // A wheel of two entries takes a thousand timers set and cancelled in
    // turn: each cancel gives its entry back at once, not at the deadline.
    let rt = Runtime::builder().shards(1).pin(false).timer_capacity(2).build().unwrap();
    let (report, set) = channel();
    let churn = rt.spawn(TimerChurn { report }).unwrap();
    churn.try_send(1000).unwrap();
    assert_eq!(set.recv_timeout(PATIENCE).unwrap(), 1000);
}

/// Asks a recorder `left` more times, one ask after the answer to the last,
/// each with a long timeout; reports how many were answered.
struct Asker {
    target: ActorRef<Rec>,
    left: u64,
    answered: u64,
    report: Sender<Result<u64, String>>,
}

enum AskerMsg {
    Go,
    Answer(Result<u64, AskError>),
}

impl Asker {
    fn ask(&mut self, ctx: &mut Context<'_, Self>) {
        let asked = ctx.ask(&self.target, Rec::Get, Duration::from_secs(60), AskerMsg::Answer);
        if let Err(error) = asked {
            let _ = self.report.send(Err(error.to_string()));
        }
    }
}

impl Actor for Asker {
    type Msg = AskerMsg;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: AskerMsg) -> Result<(), ActorError> {
        match msg {
            AskerMsg::Go => self.ask(ctx),
            AskerMsg::Answer(answer) => {
                answer.map_err(ActorError::from)?;
                self.answered += 1;
                self.left -= 1;
                if self.left == 0 {
                    let _ = self.report.send(Ok(self.answered));
                } else {
                    self.ask(ctx);
                }
            }
        }
        Ok(())
    }
}

#[test]
fn an_answered_ask_frees_its_timeout_timer() {
    // A wheel of two entries takes a thousand asks with a minute's timeout,
    // one after another: each answer frees its timer at once.
    let rt = Runtime::builder().shards(1).pin(false).timer_capacity(2).build().unwrap();
    let (target, _) = recorder(&rt);
    let (report, done) = channel();
    let asker = rt.spawn(Asker { target, left: 1000, answered: 0, report }).unwrap();
    asker.try_send(AskerMsg::Go).unwrap();
    assert_eq!(done.recv_timeout(PATIENCE).unwrap(), Ok(1000));
}

/// Lets a `Rec::Block` handler go, when told or when dropped.
struct Release(Option<Arc<Barrier>>);

impl Release {
    fn now(&mut self) {
        if let Some(barrier) = self.0.take() {
            barrier.wait();
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.now();
    }
}

/// Spawns `count` recorders on `shard`, pinned or not.
fn recorders_on(
    rt: &Runtime,
    shard: usize,
    pinned: bool,
    count: usize,
    seen: &Sender<(usize, u64)>,
) -> Vec<ActorRef<Rec>> {
    let options = SpawnOptions { shard: Some(shard), pinned, ..Default::default() };
    (0..count)
        .map(|_| rt.spawn_with(Recorder { seen: seen.clone() }, options.clone()).unwrap())
        .collect()
}

#[test]
fn woken_from_outside_past_a_full_injection_queue_unpinned_actors_run_elsewhere_and_pinned_ones_wait()
 {
    const ROOM: usize = 4;
    const UNPINNED: usize = 16;
    const PINNED: usize = 8;
    let rt = Runtime::builder().shards(2).pin(false).injection_capacity(ROOM).build().unwrap();
    let (seen, rx) = channel();
    let unpinned = recorders_on(&rt, 1, false, UNPINNED, &seen);
    let pinned = recorders_on(&rt, 1, true, PINNED, &seen);
    // Shard 1 busy in one handler: nothing in its queues runs until the
    // test meets the blocker again.
    let blocker = recorders_on(&rt, 1, true, 1, &seen).remove(0);
    let barrier = Arc::new(Barrier::new(2));
    blocker.try_send(Rec::Block(barrier.clone())).unwrap();
    barrier.wait();
    let mut release = Release(Some(barrier)); // a failed assertion must not hang the shutdown
    // Woken from this thread, every recorder goes to shard 1's injection
    // queues: ROOM unpinned ones fit, the others spill into the overflow
    // queue, which shard 0 drains; the pinned ones wait in their own queue.
    for (i, actor) in unpinned.iter().chain(&pinned).enumerate() {
        actor.try_send(Rec::Value(i as u64)).unwrap();
    }
    let spilled: Vec<(usize, u64)> = (ROOM..UNPINNED)
        .map(|_| rx.recv_timeout(PATIENCE).expect("an overflowed actor ran while shard 1 was held"))
        .collect();
    assert!(spilled.iter().all(|&(shard, _)| shard == 0), "{spilled:?}");
    release.now();
    // Released, shard 1 runs the rest: ROOM unpinned and every pinned one.
    let mut rest: Vec<(usize, u64)> = (0..ROOM + PINNED)
        .map(|_| rx.recv_timeout(PATIENCE).expect("every woken actor runs once released"))
        .collect();
    let pinned_values: Vec<u64> = (UNPINNED as u64..(UNPINNED + PINNED) as u64).collect();
    rest.retain(|&(shard, value)| !(pinned_values.contains(&value) && shard == 1));
    assert_eq!(rest.len(), ROOM, "each pinned actor ran on its own shard: {rest:?}");
    let mut values: Vec<u64> = spilled.iter().chain(&rest).map(|&(_, v)| v).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), UNPINNED, "every unpinned actor ran once");
    assert!(rx.try_recv().is_err(), "nothing ran twice");
    rt.shutdown();
}

#[test]
fn an_injection_capacity_of_zero_is_refused_by_name() {
    let error = Runtime::builder().shards(1).pin(false).injection_capacity(0).build().unwrap_err();
    assert!(error.to_string().contains("injection_capacity must be in 1..=2^31"), "{error}");
}
