//! Fault injection: the plan's grammar, and the runtime applying it for
//! real (crashes, drops, delays, exemption, sites, counters, replay).
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{PATIENCE, eventually};
use zbmd_rt::fault::{
    DELAY_MAX, DelayDistribution, ENV_VAR, FaultInjector, FaultPlan, FaultPlanError,
    INJECTED_CRASH, SITES_MAX,
};
use zbmd_rt::runtime::Metric;
use zbmd_rt::{
    Actor, ActorError, ActorId, ActorRef, Context, Down, ExitReason, Pid, Runtime, RuntimeError,
    SpawnOptions,
};

const MS: Duration = Duration::from_millis(1);

fn runtime_with(shards: usize, plan: FaultPlan) -> Runtime {
    Runtime::builder().shards(shards).pin(false).fault_plan(plan).build().expect("test runtime")
}

fn exempt() -> SpawnOptions {
    SpawnOptions { fault_exempt: true, ..SpawnOptions::default() }
}

fn injected_crash() -> ExitReason {
    ExitReason::error(INJECTED_CRASH)
}

// --- actors ---------------------------------------------------------------

/// Reports every message it handles, tagged with its own index.
struct Recorder {
    tag: usize,
    events: Sender<(usize, u64)>,
}

impl Actor for Recorder {
    type Msg = u64;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        let _ = self.events.send((self.tag, msg));
        Ok(())
    }
}

/// Sends every target its share of numbered messages, all in one turn
/// (target-major: target `t` gets `t * per_target ..`), and reports how
/// many were accepted. On a one-shard runtime no target runs until it is
/// done, so every target finds its whole share queued.
struct Blaster;

struct Blast {
    targets: Vec<ActorRef<u64>>,
    per_target: u64,
    done: Sender<u64>,
}

impl Actor for Blaster {
    type Msg = Blast;

    fn handle(&mut self, _: &mut Context<'_, Self>, blast: Blast) -> Result<(), ActorError> {
        let mut sent = 0;
        for (t, target) in blast.targets.iter().enumerate() {
            for i in 0..blast.per_target {
                if target.try_send(t as u64 * blast.per_target + i).is_ok() {
                    sent += 1;
                }
            }
        }
        let _ = blast.done.send(sent);
        Ok(())
    }
}

/// Spawns `targets` recorders and blasts `per_target` messages at each from
/// an exempt actor; returns the recorders, their events and how many
/// messages were accepted.
fn blast(
    rt: &Runtime,
    targets: usize,
    per_target: u64,
) -> (Vec<ActorRef<u64>>, Receiver<(usize, u64)>, u64) {
    let (tx, rx) = channel();
    // Room for every message, and for every one of them coming back delayed.
    let room = Some(per_target as usize);
    let capacity =
        SpawnOptions { mailbox_capacity: room, system_capacity: room, ..Default::default() };
    let refs: Vec<_> = (0..targets)
        .map(|tag| rt.spawn_with(Recorder { tag, events: tx.clone() }, capacity.clone()).unwrap())
        .collect();
    let blaster = rt.spawn_with(Blaster, exempt()).unwrap();
    let (done, sent) = channel();
    blaster.try_send(Blast { targets: refs.clone(), per_target, done }).unwrap();
    let sent = sent.recv_timeout(PATIENCE).expect("the blaster reports");
    (refs, rx, sent)
}

/// Where the sent messages went, by the counters: injected drops, messages
/// lost with injected crashes, dead letters (queued behind a crash) and
/// replies dropped (a delayed message waiting in a dead actor's lane).
fn lost(rt: &Runtime) -> u64 {
    let m = rt.metrics();
    m.total(Metric::FaultsDrop)
        + m.total(Metric::FaultsCrash)
        + m.total(Metric::DeadLetters)
        + m.total(Metric::RepliesDropped)
}

/// Collects events until every message is accounted for: handled (an
/// event) or lost (the counters). Returns the values each target handled,
/// in order.
fn settle(rt: &Runtime, rx: &Receiver<(usize, u64)>, targets: usize, sent: u64) -> Vec<Vec<u64>> {
    let mut handled = vec![Vec::new(); targets];
    eventually("every message handled or counted as lost", || {
        while let Ok((tag, value)) = rx.try_recv() {
            handled[tag].push(value);
        }
        let count: usize = handled.iter().map(Vec::len).sum();
        count as u64 + lost(rt) == sent
    });
    handled
}

/// Links to and monitors what it is told to, trapping exits; reports both.
struct Watcher {
    events: Sender<Watched>,
}

#[derive(Debug, PartialEq)]
enum Watched {
    Watching,
    Exit(ActorId, ExitReason),
    Down(Down),
}

impl Actor for Watcher {
    type Msg = Pid;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(true);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, pid: Pid) -> Result<(), ActorError> {
        ctx.link(&pid);
        ctx.monitor(&pid);
        let _ = self.events.send(Watched::Watching);
        Ok(())
    }

    fn handle_exit(
        &mut self,
        _: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = self.events.send(Watched::Exit(from, reason));
        Ok(())
    }

    fn handle_down(&mut self, _: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let _ = self.events.send(Watched::Down(down));
        Ok(())
    }
}

// --- the plan and its grammar ---------------------------------------------

#[test]
fn the_grammar_reads_every_key() {
    let plan =
        FaultPlan::parse("crash=0.01,drop=0.001,delay=0.01:1ms..5ms,seed=42,site.gpu.launch=0.05")
            .unwrap();
    let expected = FaultPlan::new()
        .crash(0.01)
        .drop(0.001)
        .delay(0.01, DelayDistribution::uniform(MS, 5 * MS))
        .seed(42)
        .site("gpu.launch", 0.05);
    assert_eq!(plan, expected);
    assert_eq!(plan.chosen_seed(), Some(42));
    assert_eq!(plan.sites().collect::<Vec<_>>(), [("gpu.launch", 0.05)]);

    // Spaces, hex seeds, exponential and fixed delays, units, exponents.
    let plan: FaultPlan = " crash = 1e-3 , seed=0x2A, delay=0.5:exp(1.5ms) ".parse().unwrap();
    assert_eq!(plan.crash_probability(), 0.001);
    assert_eq!(plan.chosen_seed(), Some(42));
    assert_eq!(
        plan.delay_distribution(),
        DelayDistribution::exponential(Duration::from_micros(1500))
    );
    let plan = FaultPlan::parse("delay=1:250us").unwrap();
    assert_eq!(plan.delay_distribution(), DelayDistribution::fixed(Duration::from_micros(250)));
    let plan = FaultPlan::parse("delay=0.1:0ns..2s,site.net-link_0=1").unwrap();
    assert_eq!(plan.delay_distribution(), DelayDistribution::uniform(Duration::ZERO, 2000 * MS));

    // An empty value is a plan that injects nothing.
    assert_eq!(FaultPlan::parse("  "), Ok(FaultPlan::new()));
    assert!(!FaultPlan::new().is_active());
    assert!(FaultPlan::new().site("x", 0.1).is_active());
}

#[test]
fn every_bad_input_is_an_error_that_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("crash", "crash"),                         // no '='
        ("crash=0.1,", ""),                         // empty entry
        ("chaos=0.1", "chaos"),                     // unknown key
        ("drop=0.1,drop=0.2", "drop"),              // duplicate key
        ("crash=lots", "crash"),                    // not a number
        ("crash=1.5", "crash"),                     // above 1
        ("drop=-0.1", "drop"),                      // below 0
        ("crash=NaN", "crash"),                     // not finite
        ("drop=inf", "drop"),                       // not finite
        ("crash=0.6,drop=0.5", "crash"),            // sum above 1
        ("delay=0.1", "delay"),                     // no distribution
        ("delay=0.1:5", "delay"),                   // no unit
        ("delay=0.1:5min", "delay"),                // unknown unit
        ("delay=0.1:5ms..1ms", "delay"),            // min above max
        ("delay=0.1:2ms..", "delay"),               // missing max
        ("delay=0.1:exp(1ms", "delay"),             // unclosed
        ("delay=0.1:-1ms", "delay"),                // negative
        ("delay=0.1:7200s", "delay"),               // beyond DELAY_MAX
        ("delay=2:1ms", "delay"),                   // probability above 1
        ("seed=-1", "seed"),                        // not a u64
        ("seed=0xZZ", "seed"),                      // bad hex
        ("site.=0.1", "site."),                     // empty site name
        ("site.gpu launch=0.1", "site.gpu launch"), // bad character
        ("site.gpu=2", "site.gpu"),                 // bad probability
    ];
    for (input, key) in cases {
        let error = FaultPlan::parse(input).expect_err(input);
        let message = error.to_string();
        assert!(message.contains(key), "{input:?}: {message:?} does not name {key:?}");
    }
    // The variants, for callers that match on them.
    assert_eq!(
        FaultPlan::parse("chaos=1"),
        Err(FaultPlanError::UnknownKey { key: "chaos".into() })
    );
    assert_eq!(
        FaultPlan::parse("drop=0.1,drop=0.2"),
        Err(FaultPlanError::DuplicateKey { key: "drop".into() })
    );
    assert_eq!(
        FaultPlan::parse("delay=0.1:7200s"),
        Err(FaultPlanError::DelayTooLong { value: Duration::from_secs(7200), max: DELAY_MAX })
    );
    let long_name = format!("site.{}=0.1", "x".repeat(65));
    assert!(matches!(FaultPlan::parse(&long_name), Err(FaultPlanError::SiteName { .. })));
}

#[test]
fn plans_built_in_code_are_validated() {
    let bad = [
        (FaultPlan::new().crash(f64::NAN), "crash"),
        (FaultPlan::new().drop(1.01), "drop"),
        (FaultPlan::new().crash(0.5).drop(0.3).delay(0.3, DelayDistribution::fixed(MS)), "delay"),
        (FaultPlan::new().delay(0.1, DelayDistribution::uniform(2 * MS, MS)), "delay"),
        (FaultPlan::new().delay(0.1, DelayDistribution::exponential(2 * DELAY_MAX)), "delay"),
        (FaultPlan::new().site("", 0.1), "site."),
        (FaultPlan::new().site("gpu", -1.0), "site.gpu"),
    ];
    for (plan, key) in bad {
        let error = plan.validate().expect_err(&format!("{plan:?}"));
        assert!(error.to_string().contains(key), "{error} does not name {key}");
        // And the runtime refuses it, saying why.
        match Runtime::builder().shards(1).pin(false).fault_plan(plan).build() {
            Err(RuntimeError::Config(message)) => {
                assert!(message.contains("fault plan") && message.contains(key), "{message}")
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    let many = (0..=SITES_MAX).fold(FaultPlan::new(), |plan, i| plan.site(format!("s{i}"), 0.1));
    assert_eq!(
        many.validate(),
        Err(FaultPlanError::TooManySites { count: SITES_MAX + 1, max: SITES_MAX })
    );
    // Sums that are 1 in decimal but not quite in binary are accepted.
    FaultPlan::new()
        .crash(0.7)
        .drop(0.2)
        .delay(0.1, DelayDistribution::fixed(MS))
        .validate()
        .unwrap();
}

// --- the runtime applying it ----------------------------------------------

/// What became of each message of one run, as the test can see it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Fate {
    /// Handled, after every smaller index of its target.
    InOrder,
    /// Handled after a larger index of its target: delayed.
    Late,
    /// Never handled: dropped, lost with a crash, or queued behind one.
    Missing,
}

#[derive(Debug, PartialEq)]
struct Run {
    fates: Vec<Vec<Fate>>,
    alive: Vec<bool>,
    crashes: u64,
    drops: u64,
    delays: u64,
}

/// Ten actors, a hundred messages each, on one shard, under `seed`.
fn workload(seed: u64) -> Run {
    const TARGETS: usize = 10;
    const PER_TARGET: u64 = 100;
    let plan = FaultPlan::new()
        .seed(seed)
        .crash(0.005)
        .drop(0.03)
        .delay(0.03, DelayDistribution::uniform(MS, 3 * MS));
    let rt = runtime_with(1, plan);
    assert_eq!(rt.faults().seed(), Some(seed));
    let (refs, rx, sent) = blast(&rt, TARGETS, PER_TARGET);
    assert_eq!(sent, TARGETS as u64 * PER_TARGET);
    let handled = settle(&rt, &rx, TARGETS, sent);
    let fates = handled
        .iter()
        .enumerate()
        .map(|(t, values)| {
            let mut fates = vec![Fate::Missing; PER_TARGET as usize];
            let mut highest = None;
            for &value in values {
                let index = (value - t as u64 * PER_TARGET) as usize;
                assert_eq!(fates[index], Fate::Missing, "message {value} handled twice");
                fates[index] = if highest > Some(index) { Fate::Late } else { Fate::InOrder };
                highest = highest.max(Some(index));
            }
            fates
        })
        .collect();
    let m = rt.metrics();
    Run {
        fates,
        alive: refs.iter().map(ActorRef::is_alive).collect(),
        crashes: m.total(Metric::FaultsCrash),
        drops: m.total(Metric::FaultsDrop),
        delays: m.total(Metric::FaultsDelay),
    }
}

#[test]
fn the_same_seed_replays_the_same_faults_on_one_shard() {
    let first = workload(42);
    let again = workload(42);
    assert_eq!(first, again);
    // The run did inject each kind of fault, so the comparison means something.
    assert!(first.crashes > 0 && first.drops > 0 && first.delays > 0, "{first:?}");
    assert!(first.fates.iter().flatten().any(|&fate| fate == Fate::Late));
    assert_eq!(first.alive.iter().filter(|alive| !**alive).count() as u64, first.crashes);
    let other = workload(43);
    assert_ne!(first.fates, other.fates);
}

#[test]
fn an_injected_crash_is_a_real_crash_that_links_and_monitors_see() {
    let rt = runtime_with(1, FaultPlan::new().seed(1).crash(1.0));
    let (tx, rx) = channel();
    let watcher = rt.spawn_with(Watcher { events: tx }, exempt()).unwrap();
    let (seen, handled) = channel();
    let victim = rt.spawn(Recorder { tag: 0, events: seen }).unwrap();
    watcher.try_send(victim.pid()).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(Watched::Watching));

    victim.try_send(7).unwrap();
    let mut exit = None;
    let mut down = None;
    while exit.is_none() || down.is_none() {
        match rx.recv_timeout(PATIENCE).expect("the crash is reported") {
            Watched::Exit(from, reason) => exit = Some((from, reason)),
            Watched::Down(d) => down = Some(d),
            Watched::Watching => unreachable!(),
        }
    }
    assert_eq!(exit, Some((victim.id(), injected_crash())));
    let down = down.unwrap();
    assert_eq!((down.actor, down.reason), (victim.id(), injected_crash()));
    assert!(handled.try_recv().is_err(), "the handler never saw the message");
    assert!(!victim.is_alive());
    let m = rt.metrics();
    assert_eq!(m.total(Metric::FaultsCrash), 1);
    assert_eq!(m.total(Metric::Crashes), 1);
    assert!(watcher.is_alive(), "the exempt watcher was never faulted");
}

#[test]
fn handled_plus_dropped_plus_lost_with_crashes_is_what_was_sent() {
    // Two shards: the victims crash while the blaster is still sending.
    const TARGETS: usize = 40;
    const PER_TARGET: u64 = 200;
    let rt = runtime_with(2, FaultPlan::new().seed(7).crash(0.002).drop(0.05));
    let (_refs, rx, sent) = blast(&rt, TARGETS, PER_TARGET);
    let handled = settle(&rt, &rx, TARGETS, sent);
    let handled: u64 = handled.iter().map(|v| v.len() as u64).sum();
    let m = rt.metrics();
    let (crashes, drops) = (m.total(Metric::FaultsCrash), m.total(Metric::FaultsDrop));
    assert_eq!(handled + drops + crashes + m.total(Metric::DeadLetters), sent);
    assert!(crashes > 0 && drops > 0, "crashes {crashes}, drops {drops}");
    assert_eq!(m.total(Metric::FaultsDelay), 0);
    // About 5% dropped (wide bounds; the seed fixes the rolls of each shard).
    let rolled = handled + drops + crashes;
    assert!((drops as f64 / rolled as f64 - 0.05).abs() < 0.02, "{drops} of {rolled}");
    // Each injected crash is a crash in the runtime's own count too.
    assert_eq!(m.total(Metric::Crashes), crashes);

    // The Prometheus text carries the same counts.
    let text = m.to_prometheus();
    assert_eq!(prometheus_sum(&text, "zbmd_faults_crash_total"), crashes);
    assert_eq!(prometheus_sum(&text, "zbmd_faults_drop_total"), drops);
    assert!(text.contains("# TYPE zbmd_faults_delay_total counter"));
    assert!(text.contains("# TYPE zbmd_faults_site_total counter"));
}

/// The sum of a counter's series in Prometheus text.
fn prometheus_sum(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_dropped_message_never_reaches_the_handler() {
    let rt = runtime_with(1, FaultPlan::new().seed(2).drop(1.0));
    let (tx, rx) = channel();
    let actor = rt.spawn(Recorder { tag: 0, events: tx }).unwrap();
    for i in 0..100 {
        actor.send_timeout(i, PATIENCE).unwrap();
    }
    eventually("100 drops", || rt.metrics().total(Metric::FaultsDrop) == 100);
    assert!(rx.try_recv().is_err(), "a dropped message was handled");
    assert!(actor.is_alive());
}

#[test]
fn delayed_messages_arrive_later_out_of_order_and_all_of_them() {
    const N: u64 = 1000;
    let plan = FaultPlan::new().seed(5).delay(0.1, DelayDistribution::uniform(MS, 3 * MS));
    let rt = runtime_with(1, plan);
    let (_refs, rx, sent) = blast(&rt, 1, N);
    assert_eq!(sent, N);
    let handled = settle(&rt, &rx, 1, sent).remove(0);
    let m = rt.metrics();
    assert_eq!(handled.len() as u64, N, "every delayed message is delivered");
    let mut sorted = handled.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "each exactly once");
    // A message handled after a larger one was overtaken: delayed.
    let mut highest = 0;
    let mut late = 0;
    for &value in &handled {
        if value < highest {
            late += 1;
        }
        highest = highest.max(value);
    }
    let delays = m.total(Metric::FaultsDelay);
    assert!(late > 0, "delays reorder messages");
    assert!(late <= delays, "only delayed messages come late ({late} late, {delays} delayed)");
    assert!((50..=150).contains(&delays), "about 10% of {N} delayed: {delays}");
    assert_eq!(m.total(Metric::FaultsDrop) + m.total(Metric::FaultsCrash), 0);
    assert!(prometheus_sum(&m.to_prometheus(), "zbmd_faults_delay_total") == delays);
}

#[test]
fn a_delay_that_finds_the_timer_wheel_full_is_counted_as_a_drop() {
    // Delays of an hour hold their timers for the whole test.
    let plan = FaultPlan::new().seed(9).delay(1.0, DelayDistribution::fixed(DELAY_MAX));
    let rt =
        Runtime::builder().shards(1).pin(false).timer_capacity(4).fault_plan(plan).build().unwrap();
    let (tx, rx) = channel();
    let actor = rt.spawn(Recorder { tag: 0, events: tx }).unwrap();
    for i in 0..10 {
        actor.send_timeout(i, PATIENCE).unwrap();
    }
    eventually("10 faults", || {
        let m = rt.metrics();
        m.total(Metric::FaultsDelay) + m.total(Metric::FaultsDrop) == 10
    });
    let m = rt.metrics();
    assert_eq!((m.total(Metric::FaultsDelay), m.total(Metric::FaultsDrop)), (4, 6));
    assert!(rx.try_recv().is_err());
}

#[test]
fn exempt_actors_are_never_faulted() {
    let rt = runtime_with(1, FaultPlan::new().seed(3).crash(1.0));
    let (tx, rx) = channel();
    let exempt_actor = rt.spawn_with(Recorder { tag: 0, events: tx.clone() }, exempt()).unwrap();
    let victim = rt.spawn(Recorder { tag: 1, events: tx }).unwrap();
    for i in 0..200 {
        exempt_actor.send_timeout(i, PATIENCE).unwrap();
    }
    let got: Vec<u64> = (0..200).map(|_| rx.recv_timeout(PATIENCE).unwrap().1).collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert!(exempt_actor.is_alive());
    // The plan is active: the next actor dies of its first message.
    victim.try_send(0).unwrap();
    eventually("the victim's crash", || !victim.is_alive());
    assert_eq!(rt.metrics().total(Metric::FaultsCrash), 1);
    assert!(rx.try_recv().is_err());
}

#[test]
fn without_a_plan_nothing_is_faulted_and_the_injector_never_fires() {
    let rt = runtime_with(1, FaultPlan::new());
    let faults = rt.faults();
    assert!(!faults.is_active() && faults.seed().is_none());
    assert!(!faults.inject("gpu.launch"));
    let (tx, rx) = channel();
    let actor = rt.spawn(Recorder { tag: 0, events: tx }).unwrap();
    for i in 0..100 {
        actor.send_timeout(i, PATIENCE).unwrap();
    }
    let got: Vec<u64> = (0..100).map(|_| rx.recv_timeout(PATIENCE).unwrap().1).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(rt.metrics().fault_sites.is_empty());
}

#[test]
fn a_plan_without_a_seed_gets_one_and_says_it() {
    let rt = runtime_with(1, FaultPlan::new().drop(0.5));
    let seed = rt.faults().seed().expect("a seed was chosen");
    let plan = rt.faults().plan().unwrap().clone();
    assert!(plan.to_string().contains(&format!("seed={seed}")));
    assert_eq!(FaultPlan::parse(&plan.to_string()), Ok(plan));
}

// --- sites ----------------------------------------------------------------

#[test]
fn sites_fire_at_their_rate_and_are_counted() {
    let plan = FaultPlan::new().seed(42).site("gpu.launch", 0.05).site("net.send", 0.5);
    let rt = runtime_with(1, plan);
    let faults = rt.faults();
    let launch = faults.site("gpu.launch");
    assert!(launch.is_configured());
    let launch_fires = (0..100_000).filter(|_| launch.inject()).count() as u64;
    let send_fires = (0..10_000).filter(|_| faults.inject("net.send")).count() as u64;
    // Expected 5 000 and 5 000; the bounds are 14 and 10 standard errors
    // wide, and the seed fixes the rolls anyway.
    assert!((4_000..=6_000).contains(&launch_fires), "{launch_fires}");
    assert!((4_500..=5_500).contains(&send_fires), "{send_fires}");
    assert_eq!((launch.rolls(), launch.fires()), (100_000, launch_fires));
    assert_eq!((faults.rolls("net.send"), faults.fires("net.send")), (10_000, send_fires));

    // A site the plan does not name never fires and counts nothing.
    let unknown = faults.site("disk.write");
    assert!(!unknown.is_configured());
    assert!(!(0..1000).any(|_| unknown.inject() || faults.inject("disk.write")));
    assert_eq!(faults.rolls("disk.write"), 0);

    // The runtime's metrics: per site, and in faults_site_total.
    let m = rt.metrics();
    assert_eq!(m.total(Metric::FaultsSite), launch_fires + send_fires);
    let sites: Vec<_> = m.fault_sites.iter().map(|s| (s.name.as_str(), s.rolls, s.fires)).collect();
    assert_eq!(sites, [("gpu.launch", 100_000, launch_fires), ("net.send", 10_000, send_fires)]);
    let text = m.to_prometheus();
    let id = rt.id();
    assert!(text.contains(&format!(
        "zbmd_fault_site_fires_total{{runtime=\"{id}\",site=\"gpu.launch\"}} {launch_fires}"
    )));
    assert!(text.contains(&format!(
        "zbmd_fault_site_rolls_total{{runtime=\"{id}\",site=\"net.send\"}} 10000"
    )));
    assert_eq!(prometheus_sum(&text, "zbmd_faults_site_total"), launch_fires + send_fires);
}

#[test]
fn a_sites_rolls_replay_from_the_seed_whatever_thread_rolls_them() {
    let plan = |seed| FaultPlan::new().seed(seed).site("net.link", 0.3);
    let pattern =
        |faults: &FaultInjector| (0..256).map(|_| faults.inject("net.link")).collect::<Vec<_>>();
    let a = FaultInjector::new(plan(42)).unwrap();
    let b = FaultInjector::new(plan(42)).unwrap();
    let expected = pattern(&a);
    // The same rolls from another thread, through a resolved handle.
    let site = b.site("net.link");
    let from_thread =
        std::thread::spawn(move || (0..256).map(|_| site.inject()).collect::<Vec<_>>())
            .join()
            .unwrap();
    assert_eq!(from_thread, expected);
    assert_ne!(pattern(&FaultInjector::new(plan(43)).unwrap()), expected);
    // And from a runtime with that seed, through an actor's context.
    let rt = runtime_with(1, plan(42));
    let (tx, rx) = channel();
    let roller = rt.spawn(SiteRoller { results: tx }).unwrap();
    roller.try_send(256).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), expected);
}

/// Rolls `net.link` through its context as many times as it is told.
struct SiteRoller {
    results: Sender<Vec<bool>>,
}

impl Actor for SiteRoller {
    type Msg = usize;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, n: usize) -> Result<(), ActorError> {
        let site = ctx.faults().site("net.link");
        let _ = self.results.send((0..n).map(|_| site.inject()).collect());
        Ok(())
    }
}

// --- the environment variable ---------------------------------------------

/// Runs one of the `env_child_*` tests below in a child process with
/// `ZBMD_FAULT_INJECTION` set (a variable set in this process would reach
/// every test running beside it).
fn run_child(test: &str, value: &str) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--ignored", "--test-threads=1"])
        .env(ENV_VAR, value)
        .env("ZBMD_FAULTS_CHILD", "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("test {test} ... ok")),
        "{test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn in_child() -> bool {
    std::env::var_os("ZBMD_FAULTS_CHILD").is_some()
}

#[test]
fn the_environment_variable_configures_the_runtime() {
    run_child("env_child_plan_applies", "crash=1, seed=9, site.gpu.launch=0.25");
    run_child("env_child_bad_plan_fails_the_build", "crash=0.1,chaos=2");
}

#[test]
#[ignore = "runs as a child of the_environment_variable_configures_the_runtime"]
fn env_child_plan_applies() {
    if !in_child() {
        return;
    }
    let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    let expected = FaultPlan::new().crash(1.0).seed(9).site("gpu.launch", 0.25);
    assert_eq!(rt.faults().plan(), Some(&expected));
    let (tx, _rx) = channel();
    let victim = rt.spawn(Recorder { tag: 0, events: tx }).unwrap();
    victim.try_send(1).unwrap();
    eventually("the injected crash", || !victim.is_alive());
    assert_eq!(rt.metrics().total(Metric::FaultsCrash), 1);
    // A plan in code wins over the variable; an empty one turns it off.
    let quiet = Runtime::builder().shards(1).pin(false).fault_plan(FaultPlan::new()).build();
    assert!(!quiet.unwrap().faults().is_active());
}

#[test]
#[ignore = "runs as a child of the_environment_variable_configures_the_runtime"]
fn env_child_bad_plan_fails_the_build() {
    if !in_child() {
        return;
    }
    match Runtime::builder().shards(1).pin(false).build() {
        Err(RuntimeError::Config(message)) => {
            assert!(message.contains(ENV_VAR) && message.contains("chaos"), "{message}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
