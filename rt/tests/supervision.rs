//! The OTP conformance suite for supervisors: each test encodes one rule of
//! OTP's `supervisor` documentation (or of `erlang` links and monitors as a
//! supervisor uses them) and cites it in its first line.
#![cfg(not(zbmd_loom))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{
    ChildKind, ChildRef, ChildSpec, Restart, Shutdown, Supervisor, SupervisorError, SupervisorRef,
    SupervisorSpec,
};
use zbmd_rt::{
    Actor, ActorError, ActorId, Context, Down, ExitReason, Pid, ReplyTo, Runtime, SendError,
};

/// Every child's life, in the order it happened, shared by a test's
/// workers: `start:a`, `stop:a:<reason>`, `exit:a:<reason>` (a trapped
/// exit signal).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    /// Takes what was logged so far.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

/// A worker that does what it is told and logs its life.
struct Worker {
    name: &'static str,
    log: Log,
    /// Trap exits, and ignore `shutdown` (to test the kill after the limit).
    stubborn: bool,
    /// While set, `started` fails.
    refuse_start: Option<Arc<AtomicBool>>,
}

enum W {
    Crash,
    Exit(ExitReason),
    Id(ReplyTo<ActorId>),
    /// Spin until the flag is set (messages queue up meanwhile).
    Hold(Arc<AtomicBool>),
    Count(Arc<AtomicU64>),
}

impl Actor for Worker {
    type Msg = W;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        if self.refuse_start.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst)) {
            return Err(ActorError::msg("refused to start"));
        }
        ctx.trap_exit(self.stubborn);
        self.log.push(format!("start:{}", self.name));
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: W) -> Result<(), ActorError> {
        match msg {
            W::Crash => return Err(ActorError::msg("boom")),
            W::Exit(reason) => return Err(ActorError::exit(reason)),
            W::Id(reply) => {
                reply.reply(ctx.id());
            }
            W::Hold(flag) => {
                while !flag.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
            }
            W::Count(counter) => {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn handle_exit(
        &mut self,
        _: &mut Context<'_, Self>,
        _: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        self.log.push(format!("exit:{}:{reason}", self.name));
        Ok(()) // stubborn: ignores even shutdown
    }

    fn stopping(&mut self, _: &mut Context<'_, Self>, reason: &ExitReason) {
        self.log.push(format!("stop:{}:{reason}", self.name));
    }
}

fn worker(name: &'static str, log: &Log) -> ChildSpec<Worker> {
    let log = log.clone();
    ChildSpec::worker(name, move || Worker {
        name,
        log: log.clone(),
        stubborn: false,
        refuse_start: None,
    })
}

/// Forwards the `Down` of every actor it is told to monitor; answers once
/// the monitor request is on its way (queued at the target ahead of
/// anything the test does next).
struct Watcher(Sender<Down>);

impl Actor for Watcher {
    type Msg = (Pid, ReplyTo<()>);

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Self>,
        (pid, done): Self::Msg,
    ) -> Result<(), ActorError> {
        ctx.monitor(&pid);
        done.reply(());
        Ok(())
    }

    fn handle_down(&mut self, _: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let _ = self.0.send(down);
        Ok(())
    }
}

fn watch(rt: &Runtime, pid: Pid) -> Receiver<Down> {
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = rt.spawn(Watcher(tx)).unwrap();
    rt.call(&watcher, |done| (pid, done), PATIENCE).unwrap();
    rx
}

fn down(rx: &Receiver<Down>) -> Down {
    rx.recv_timeout(PATIENCE).expect("a Down in time")
}

fn current(child: &ChildRef<W>) -> ActorId {
    child.call(W::Id, PATIENCE).expect("the child answers")
}

/// Waits until `child` has a live incarnation other than `old`.
fn restarted(child: &ChildRef<W>, old: ActorId) -> ActorId {
    let mut id = old;
    eventually("the child's restart", || {
        id = child.current().map(|c| c.id()).unwrap_or(old);
        id != old
    });
    id
}

fn pid_of(sup: &SupervisorRef) -> Pid {
    sup.actor().expect("the supervisor is alive").pid()
}

fn running(sup: &SupervisorRef) -> Vec<String> {
    let children = sup.which_children(PATIENCE).unwrap();
    children.into_iter().filter(|c| c.pid.is_some()).map(|c| c.id).collect()
}

const T: Duration = PATIENCE;

#[test]
fn one_for_one_restarts_only_the_child_that_exited() {
    // OTP: one_for_one — "If one child process terminates and is to be restarted, only that child process is affected."
    let rt = runtime(2);
    let log = Log::default();
    let (a, b, c) = (worker("a", &log), worker("b", &log), worker("c", &log));
    let (ra, rb, rc) = (a.child_ref(), b.child_ref(), c.child_ref());
    let spec = SupervisorSpec::one_for_one().intensity(5, T).child(a).child(b).child(c);
    let _sup = Supervisor::start(&rt, spec).unwrap();
    let (ia, ib, ic) = (current(&ra), current(&rb), current(&rc));
    log.take();
    rb.try_send(W::Crash).unwrap();
    let new_b = restarted(&rb, ib);
    assert_ne!(new_b, ib, "b is a new incarnation");
    assert_eq!((current(&ra), current(&rc)), (ia, ic), "a and c untouched");
    assert_eq!(log.take(), ["stop:b:error: boom", "start:b"]);
    assert_eq!(rt.metrics().total(Metric::Restarts), 1);
    rt.shutdown();
}

#[test]
fn one_for_all_stops_the_others_newest_first_then_restarts_all_in_order() {
    // OTP: one_for_all — "all other child processes are terminated and then all child processes are restarted"; terminated in reverse start order.
    let rt = runtime(2);
    let log = Log::default();
    let (a, b, c) = (worker("a", &log), worker("b", &log), worker("c", &log));
    let (ra, rb, rc) = (a.child_ref(), b.child_ref(), c.child_ref());
    let spec = SupervisorSpec::one_for_all().intensity(5, T).child(a).child(b).child(c);
    let _sup = Supervisor::start(&rt, spec).unwrap();
    let (ia, ib, ic) = (current(&ra), current(&rb), current(&rc));
    log.take();
    rb.try_send(W::Crash).unwrap();
    restarted(&rc, ic);
    restarted(&ra, ia);
    restarted(&rb, ib);
    eventually("all three restarted", || log.count("start:c") == 1);
    assert_eq!(
        log.take(),
        [
            "stop:b:error: boom",
            "stop:c:shutdown",
            "stop:a:shutdown",
            "start:a",
            "start:b",
            "start:c"
        ]
    );
    rt.shutdown();
}

#[test]
fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    // OTP: rest_for_one — "the 'rest' of the child processes (that is, the child processes after the terminated child process in the start order) are terminated. Then the terminated child process and the rest of the child processes are restarted."
    let rt = runtime(2);
    let log = Log::default();
    let (a, b, c, d) = (worker("a", &log), worker("b", &log), worker("c", &log), worker("d", &log));
    let (ra, rb, rd) = (a.child_ref(), b.child_ref(), d.child_ref());
    let spec = SupervisorSpec::rest_for_one().intensity(5, T).child(a).child(b).child(c).child(d);
    let _sup = Supervisor::start(&rt, spec).unwrap();
    let (ia, ib, id) = (current(&ra), current(&rb), current(&rd));
    log.take();
    rb.try_send(W::Crash).unwrap();
    restarted(&rb, ib);
    restarted(&rd, id);
    eventually("d restarted", || log.count("start:d") == 1);
    assert_eq!(current(&ra), ia, "a, started before b, is untouched");
    assert_eq!(
        log.take(),
        [
            "stop:b:error: boom",
            "stop:d:shutdown",
            "stop:c:shutdown",
            "start:b",
            "start:c",
            "start:d"
        ]
    );
    rt.shutdown();
}

#[test]
fn simple_one_for_one_starts_children_at_run_time_from_one_template() {
    // OTP: simple_one_for_one — "a simplified one_for_one supervisor, where all child processes are dynamically added instances of the same process type".
    let rt = runtime(2);
    let log = Log::default();
    let template = worker("pool", &log).restart(Restart::Permanent);
    let spec = SupervisorSpec::simple_one_for_one(template).intensity(5, T);
    let sup = Supervisor::start(&rt, spec).unwrap();
    assert_eq!(sup.count_children(T).unwrap().specs, 0, "no child until asked");
    let names = ["w0", "w1", "w2"];
    let children: Vec<ChildRef<W>> = names
        .iter()
        .map(|&name| {
            let log = log.clone();
            let factory =
                move || Worker { name, log: log.clone(), stubborn: false, refuse_start: None };
            sup.start_child(factory, T).unwrap()
        })
        .collect();
    assert_eq!(sup.count_children(T).unwrap().active, 3);
    let old = current(&children[1]);
    children[1].try_send(W::Crash).unwrap();
    restarted(&children[1], old);
    eventually("w1 restarted", || log.count("start:w1") == 2);

    // Dynamic children are addressed by pid; terminating one removes it.
    let id = current(&children[0]);
    sup.terminate_child(id, T).unwrap();
    assert_eq!(sup.count_children(T).unwrap().specs, 2);
    assert!(!children[0].is_alive());

    // A different actor type than the template's is refused.
    let wrong = sup.start_child(|| Watcher(std::sync::mpsc::channel().0), T);
    assert!(matches!(wrong, Err(SupervisorError::WrongChildType { .. })), "{wrong:?}");
    // And the static-child operations do not apply.
    assert_eq!(
        sup.restart_child("pool", T).unwrap_err(),
        SupervisorError::SimpleOneForOne("restart_child")
    );
    assert_eq!(
        sup.delete_child("pool", T).unwrap_err(),
        SupervisorError::SimpleOneForOne("delete_child")
    );
    rt.shutdown();
}

/// Exits one child of each restart type with `reason` under one_for_one and
/// returns which of them came back.
fn restarted_after(reason: ExitReason) -> [bool; 3] {
    let rt = runtime(2);
    let log = Log::default();
    let specs = [
        worker("permanent", &log).restart(Restart::Permanent),
        worker("transient", &log).restart(Restart::Transient),
        worker("temporary", &log).restart(Restart::Temporary),
    ];
    let refs: Vec<ChildRef<W>> = specs.iter().map(|s| s.child_ref()).collect();
    let mut spec = SupervisorSpec::one_for_one().intensity(10, T);
    for child in specs {
        spec = spec.child(child);
    }
    let sup = Supervisor::start(&rt, spec).unwrap();
    let ids: Vec<ActorId> = refs.iter().map(current).collect();
    for (child, id) in refs.iter().zip(&ids) {
        let rx = watch(&rt, child.current().unwrap().pid());
        child.try_send(W::Exit(reason.clone())).unwrap();
        assert_eq!(down(&rx).actor, *id);
    }
    // Give restarts their chance: a supervisor request is answered only
    // after the exits queued before it were handled.
    let listed = sup.which_children(T).unwrap();
    let came_back = |i: usize| refs[i].current().is_some_and(|c| c.id() != ids[i]);
    let result = [came_back(0), came_back(1), came_back(2)];
    // A temporary child's spec is gone once it stopped; the others stay.
    assert!(!listed.iter().any(|c| c.id == "temporary"), "{listed:?}");
    assert_eq!(listed.len(), 2);
    rt.shutdown();
    result
}

#[test]
fn restart_types_after_a_normal_exit() {
    // OTP: "permanent child process is always restarted"; "transient child process is restarted only if it terminates abnormally, that is, with another exit reason than normal, shutdown, or {shutdown,Term}"; "temporary child process is never restarted".
    assert_eq!(restarted_after(ExitReason::Normal), [true, false, false]);
}

#[test]
fn restart_types_after_a_shutdown_exit() {
    // OTP: a transient child exiting with reason shutdown is not restarted; permanent is.
    assert_eq!(restarted_after(ExitReason::Shutdown), [true, false, false]);
}

#[test]
fn restart_types_after_an_abnormal_exit() {
    // OTP: an abnormal exit restarts permanent and transient children, never temporary ones.
    assert_eq!(restarted_after(ExitReason::error("crash")), [true, true, false]);
}

#[test]
fn a_temporary_child_taken_down_by_a_siblings_restart_is_not_restarted() {
    // OTP: "temporary child process is never restarted (even when the supervisor's restart strategy is rest_for_one or one_for_all and a sibling's death causes the temporary process to be terminated)".
    let rt = runtime(2);
    let log = Log::default();
    let a = worker("a", &log);
    let temp = worker("temp", &log).restart(Restart::Temporary);
    let ra = a.child_ref();
    let rtemp = temp.child_ref();
    let spec = SupervisorSpec::one_for_all().intensity(5, T).child(temp).child(a);
    let sup = Supervisor::start(&rt, spec).unwrap();
    let ia = current(&ra);
    let watched = watch(&rt, rtemp.current().unwrap().pid());
    ra.try_send(W::Crash).unwrap();
    assert_eq!(down(&watched).reason, ExitReason::Shutdown, "taken down with the sibling");
    restarted(&ra, ia);
    let children = sup.which_children(T).unwrap();
    assert_eq!(children.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["a"]);
    assert!(!rtemp.is_alive());
    assert_eq!(log.count("start:temp"), 1, "started once, never again");
    rt.shutdown();
}

#[test]
fn more_restarts_than_the_intensity_stop_the_supervisor_with_shutdown() {
    // OTP: "If more than MaxR number of restarts occur in the last MaxT seconds, the supervisor terminates all the child processes and then itself", with reason shutdown.
    let rt = runtime(2);
    let log = Log::default();
    let (a, b) = (worker("a", &log), worker("b", &log));
    let rb = b.child_ref();
    let spec =
        SupervisorSpec::one_for_one().intensity(2, Duration::from_secs(60)).child(a).child(b);
    let sup = Supervisor::start(&rt, spec).unwrap();
    let sup_down = watch(&rt, pid_of(&sup));
    for _ in 0..2 {
        let old = current(&rb);
        rb.try_send(W::Crash).unwrap();
        restarted(&rb, old);
    }
    log.take();
    rb.try_send(W::Crash).unwrap(); // the third restart within the period
    assert_eq!(down(&sup_down).reason, ExitReason::Shutdown);
    // Its last child was stopped before it exited.
    assert_eq!(log.take(), ["stop:b:error: boom", "stop:a:shutdown"]);
    assert_eq!(rt.metrics().total(Metric::Escalations), 1);
    assert_eq!(rt.metrics().total(Metric::Restarts), 2);
    rt.shutdown();
}

#[test]
fn escalation_climbs_a_three_level_tree() {
    // OTP: a supervisor that reaches its intensity exits with shutdown and "its own supervisor decides": the parent restarts it (permanent) until the parent's own intensity is exceeded.
    let rt = runtime(2);
    let log = Log::default();
    let leaf = worker("leaf", &log);
    let rleaf = leaf.child_ref();
    let mid =
        ChildSpec::supervisor("mid", SupervisorSpec::one_for_one().intensity(0, T).child(leaf));
    let rmid = mid.supervisor_ref();
    let root_spec = SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(60)).child(mid);
    let root = Supervisor::start(&rt, root_spec).unwrap();
    let root_down = watch(&rt, pid_of(&root));
    let mid_first = pid_of(&rmid).id();

    // One crash: mid gives up at once (intensity 0); root restarts mid,
    // which starts a fresh leaf.
    let old_leaf = current(&rleaf);
    rleaf.try_send(W::Crash).unwrap();
    restarted(&rleaf, old_leaf);
    eventually("mid restarted", || rmid.actor().is_some_and(|m| m.id() != mid_first));
    assert_eq!(root.count_children(T).unwrap().active, 1);

    // Another: mid gives up again; that is root's second restart within
    // the period, over its intensity of 1, so root gives up too.
    rleaf.try_send(W::Crash).unwrap();
    assert_eq!(down(&root_down).reason, ExitReason::Shutdown);
    assert!(!rleaf.is_alive() && !rmid.is_alive());
    assert_eq!(rt.metrics().total(Metric::Escalations), 3, "mid twice, then root");
    rt.shutdown();
}

#[test]
fn a_child_that_ignores_shutdown_is_killed_after_its_timeout() {
    // OTP: shutdown timeout — "the supervisor tells the child process to terminate by calling exit(Child,shutdown) and then wait for an exit signal back. If no exit signal is received within the specified number of milliseconds, the child process is unconditionally terminated using exit(Child,kill)."
    let rt = runtime(2);
    let log = Log::default();
    let stubborn_log = log.clone();
    let stubborn = ChildSpec::worker("stubborn", move || Worker {
        name: "stubborn",
        log: stubborn_log.clone(),
        stubborn: true,
        refuse_start: None,
    })
    .shutdown(Shutdown::Timeout(Duration::from_millis(50)));
    let child = stubborn.child_ref();
    let sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(stubborn)).unwrap();
    let watched = watch(&rt, child.current().unwrap().pid());
    sup.terminate_child("stubborn", T).unwrap();
    assert_eq!(down(&watched).reason, ExitReason::Killed);
    assert_eq!(log.take(), ["start:stubborn", "exit:stubborn:shutdown", "stop:stubborn:killed"]);
    // terminate_child keeps a permanent child's spec, not running.
    let listed = sup.which_children(T).unwrap();
    assert_eq!((listed.len(), listed[0].pid.is_none()), (1, true));
    rt.shutdown();
}

#[test]
fn brutal_kill_does_not_wait_for_the_child() {
    // OTP: "brutal_kill means that the child process is unconditionally terminated using exit(Child, kill)."
    let rt = runtime(2);
    let log = Log::default();
    let stubborn_log = log.clone();
    let spec = ChildSpec::worker("k", move || Worker {
        name: "k",
        log: stubborn_log.clone(),
        stubborn: true,
        refuse_start: None,
    })
    .shutdown(Shutdown::BrutalKill);
    let child = spec.child_ref();
    let sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(spec)).unwrap();
    let watched = watch(&rt, child.current().unwrap().pid());
    sup.terminate_child("k", T).unwrap();
    assert_eq!(down(&watched).reason, ExitReason::Killed);
    assert_eq!(log.count("exit:k:shutdown"), 0, "no shutdown signal first");
    rt.shutdown();
}

#[test]
fn a_child_that_fails_to_start_fails_the_supervisor_start() {
    // OTP: "If the child process start function returns {error,Reason}... the supervisor terminates all the child processes already started and the start function returns {error, {shutdown, ...}}"; later children are not started.
    let rt = runtime(2);
    let log = Log::default();
    let refuse = Arc::new(AtomicBool::new(true));
    let (a, c) = (worker("a", &log), worker("c", &log));
    let ra = a.child_ref();
    let b_log = log.clone();
    let b_flag = refuse.clone();
    let b = ChildSpec::worker("b", move || Worker {
        name: "b",
        log: b_log.clone(),
        stubborn: false,
        refuse_start: Some(b_flag.clone()),
    });
    let error = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(a).child(b).child(c))
        .expect_err("b refuses to start");
    assert_eq!(
        error,
        SupervisorError::StartFailed {
            id: "b".into(),
            reason: ExitReason::error("refused to start")
        }
    );
    eventually("a stopped", || log.count("stop:a:shutdown") == 1);
    assert!(!ra.is_alive());
    assert_eq!(log.count("start:c"), 0, "children after the failed one never start");
    eventually("nothing left alive", || rt.live_actors() == 0);
    rt.shutdown();
}

#[test]
fn a_failed_restart_is_retried_and_counts_toward_the_intensity() {
    // OTP: a child whose restart fails is restarted again later (try_again_restart), each attempt counting as a restart, until the intensity is reached.
    let rt = runtime(2);
    let log = Log::default();
    let refuse = Arc::new(AtomicBool::new(false));
    let flag = refuse.clone();
    let b_log = log.clone();
    let b = ChildSpec::worker("b", move || Worker {
        name: "b",
        log: b_log.clone(),
        stubborn: false,
        refuse_start: Some(flag.clone()),
    });
    let rb = b.child_ref();
    let spec = SupervisorSpec::one_for_one().intensity(3, Duration::from_secs(60)).child(b);
    let sup = Supervisor::start(&rt, spec).unwrap();
    let sup_down = watch(&rt, pid_of(&sup));
    refuse.store(true, Ordering::SeqCst);
    rb.try_send(W::Crash).unwrap();
    // Crash (1), failed restart (2), retry fails (3), retry fails (4 > 3).
    assert_eq!(down(&sup_down).reason, ExitReason::Shutdown);
    assert_eq!(rt.metrics().total(Metric::Escalations), 1);
    rt.shutdown();
}

#[test]
fn a_supervisor_stops_its_children_in_reverse_start_order() {
    // OTP: "When the supervisor terminates, it terminates all child processes in reverse start order".
    let rt = runtime(2);
    let log = Log::default();
    let spec = SupervisorSpec::one_for_one()
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let sup = Supervisor::start(&rt, spec).unwrap();
    let sup_down = watch(&rt, pid_of(&sup));
    log.take();
    assert!(sup.exit(ExitReason::Shutdown));
    assert_eq!(down(&sup_down).reason, ExitReason::Shutdown);
    assert_eq!(log.take(), ["stop:c:shutdown", "stop:b:shutdown", "stop:a:shutdown"]);
    rt.shutdown();
}

#[test]
fn a_trapping_child_gets_shutdown_as_an_exit_signal_from_its_supervisor() {
    // OTP: trap_exit — a child that traps exits receives the supervisor's shutdown as {'EXIT', Parent, shutdown} and may clean up (here it ignores it and is killed at the limit).
    let rt = runtime(2);
    let log = Log::default();
    let child_log = log.clone();
    let spec = ChildSpec::worker("t", move || Worker {
        name: "t",
        log: child_log.clone(),
        stubborn: true,
        refuse_start: None,
    })
    .shutdown(Shutdown::Timeout(Duration::from_millis(20)));
    let sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(spec)).unwrap();
    let sup_down = watch(&rt, pid_of(&sup));
    assert!(sup.exit(ExitReason::Shutdown));
    assert_eq!(down(&sup_down).reason, ExitReason::Shutdown);
    assert_eq!(log.take(), ["start:t", "exit:t:shutdown", "stop:t:killed"]);
    rt.shutdown();
}

#[test]
fn monitoring_a_crashed_incarnation_gives_noproc() {
    // OTP: erlang:monitor/2 — "If the monitored entity does not exist... the 'DOWN' message is delivered immediately with Info noproc" — true of a child's old incarnation after a restart.
    let rt = runtime(2);
    let log = Log::default();
    let a = worker("a", &log);
    let ra = a.child_ref();
    let _sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(a)).unwrap();
    let old = ra.current().unwrap();
    ra.try_send(W::Crash).unwrap();
    restarted(&ra, old.id());
    let rx = watch(&rt, old.pid());
    let seen = down(&rx);
    assert_eq!((seen.actor, seen.reason), (old.id(), ExitReason::NoProc));
    assert!(matches!(old.try_send(W::Crash), Err(SendError::NoProc(_))), "old ref stays dead");
    rt.shutdown();
}

#[test]
fn child_refs_and_registered_names_follow_the_restarted_child() {
    // zbmd: a restarted child is reachable through the ChildRef and the registered name the caller already holds (OTP: a registered child is re-registered by its start function).
    let rt = runtime(2);
    let log = Log::default();
    let a = worker("a", &log).name("counter");
    let ra = a.child_ref();
    let _sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(a)).unwrap();
    let first = current(&ra);
    assert_eq!(rt.whereis("counter").map(|p| p.id()), Some(first));
    ra.try_send(W::Crash).unwrap();
    let second = restarted(&ra, first);
    eventually("the name follows", || rt.whereis("counter").is_some_and(|p| p.id() == second));
    let counted = Arc::new(AtomicU64::new(0));
    ra.send_timeout(W::Count(counted.clone()), T).unwrap();
    let by_name = rt.whereis("counter").unwrap().typed::<W>().unwrap();
    by_name.try_send(W::Count(counted.clone())).unwrap();
    eventually("both delivered to the new incarnation", || counted.load(Ordering::SeqCst) == 2);
    rt.shutdown();
}

#[test]
fn messages_queued_for_a_crashing_child_are_counted_as_dead_letters() {
    // zbmd: messages queued for a child when it crashes are not silently lost: each is counted in dead_letters_total, and the new incarnation starts empty.
    let rt = runtime(2);
    let log = Log::default();
    let a = worker("a", &log);
    let ra = a.child_ref();
    let _sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(a)).unwrap();
    let first = current(&ra);
    let before = rt.metrics().total(Metric::DeadLetters);
    let release = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    ra.try_send(W::Hold(release.clone())).unwrap();
    ra.try_send(W::Crash).unwrap();
    for _ in 0..5 {
        ra.try_send(W::Count(counted.clone())).unwrap();
    }
    release.store(true, Ordering::SeqCst);
    restarted(&ra, first);
    eventually("five dead letters", || rt.metrics().total(Metric::DeadLetters) - before == 5);
    assert_eq!(counted.load(Ordering::SeqCst), 0, "none reached the new incarnation");
    rt.shutdown();
}

#[test]
fn terminate_restart_and_delete_a_static_child() {
    // OTP: terminate_child/2 keeps the spec of a non-temporary child; restart_child/2 starts it again from its spec; delete_child/2 removes a stopped child's spec; each answers running/not_found errors.
    let rt = runtime(2);
    let log = Log::default();
    let (a, b) = (worker("a", &log), worker("b", &log));
    let rb = b.child_ref();
    let sup = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(a).child(b)).unwrap();
    assert_eq!(sup.delete_child("b", T).unwrap_err(), SupervisorError::Running("b".into()));
    assert_eq!(sup.restart_child("b", T).unwrap_err(), SupervisorError::Running("b".into()));
    sup.terminate_child("b", T).unwrap();
    assert_eq!(running(&sup), ["a"]);
    assert!(!rb.is_alive());
    let counts = sup.count_children(T).unwrap();
    assert_eq!((counts.specs, counts.active, counts.workers, counts.supervisors), (2, 1, 2, 0));
    let pid = sup.restart_child("b", T).unwrap();
    assert_eq!(current(&rb), pid.id());
    sup.terminate_child("b", T).unwrap();
    sup.delete_child("b", T).unwrap();
    assert_eq!(sup.which_children(T).unwrap().len(), 1);
    assert!(matches!(sup.delete_child("b", T), Err(SupervisorError::NotFound(_))));
    assert!(matches!(sup.terminate_child("zz", T), Err(SupervisorError::NotFound(_))));
    // add_child appends a new static child, refusing a duplicate id.
    let added = sup.add_child(worker("c", &log), T).unwrap();
    assert!(added.is_alive());
    assert_eq!(
        sup.add_child(worker("c", &log), T).unwrap_err(),
        SupervisorError::DuplicateChild("c".into())
    );
    assert_eq!(running(&sup), ["a", "c"]);
    rt.shutdown();
}

#[test]
fn nested_supervisors_report_their_kind_and_follow_restarts() {
    // OTP: a child spec of type supervisor defaults to shutdown infinity and is counted under supervisors by count_children/1.
    let rt = runtime(2);
    let log = Log::default();
    let inner = SupervisorSpec::one_for_one().child(worker("leaf", &log));
    let sub = ChildSpec::supervisor("sub", inner);
    let rsub = sub.supervisor_ref();
    let root = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(sub)).unwrap();
    let listed = root.which_children(T).unwrap();
    assert_eq!(listed[0].kind, ChildKind::Supervisor);
    let counts = root.count_children(T).unwrap();
    assert_eq!((counts.supervisors, counts.workers), (1, 0));
    assert_eq!(rsub.count_children(T).unwrap().active, 1);
    let old = pid_of(&rsub).id();
    rsub.exit(ExitReason::Kill);
    eventually("sub restarted", || rsub.actor().is_some_and(|a| a.id() != old));
    assert_eq!(rsub.count_children(T).unwrap().active, 1, "the new sub started its leaf");
    rt.shutdown();
}

#[test]
fn invalid_specs_are_refused_before_anything_starts() {
    // zbmd: bad input is a clear error at start, never a crash later.
    let rt = runtime(1);
    let log = Log::default();
    let duplicate = SupervisorSpec::one_for_one().child(worker("a", &log)).child(worker("a", &log));
    assert_eq!(
        Supervisor::start(&rt, duplicate).unwrap_err(),
        SupervisorError::DuplicateChild("a".into())
    );
    let zero_period = SupervisorSpec::one_for_one().intensity(1, Duration::ZERO);
    assert!(matches!(Supervisor::start(&rt, zero_period), Err(SupervisorError::InvalidSpec(_))));
    let bad_backoff =
        SupervisorSpec::one_for_one().backoff(Duration::from_millis(10), Duration::from_millis(1));
    assert!(matches!(Supervisor::start(&rt, bad_backoff), Err(SupervisorError::InvalidSpec(_))));
    let too_many = SupervisorSpec::one_for_one()
        .max_children(1)
        .child(worker("a", &log))
        .child(worker("b", &log));
    assert_eq!(
        Supervisor::start(&rt, too_many).unwrap_err(),
        SupervisorError::TooManyChildren { limit: 1 }
    );
    let sup = Supervisor::start(&rt, SupervisorSpec::one_for_one()).unwrap();
    assert_eq!(
        sup.start_child(
            move || Worker { name: "x", log: Log::default(), stubborn: false, refuse_start: None },
            T
        )
        .unwrap_err(),
        SupervisorError::NotSimple
    );
    assert_eq!(rt.live_actors(), 1, "only the valid supervisor runs");
    rt.shutdown();
}

#[test]
fn backoff_spaces_restarts_out_and_still_restarts() {
    // zbmd: optional exponential backoff — the n-th restart within the period waits initial * 2^(n-1), capped.
    let backoff = zbmd_rt::supervisor::Backoff {
        initial: Duration::from_millis(2),
        max: Duration::from_millis(10),
    };
    assert_eq!(
        (1..=5).map(|n| backoff.delay(n).as_millis()).collect::<Vec<_>>(),
        [2, 4, 8, 10, 10]
    );
    let rt = runtime(2);
    let log = Log::default();
    let a = worker("a", &log);
    let ra = a.child_ref();
    let spec = SupervisorSpec::one_for_one()
        .intensity(10, T)
        .backoff(Duration::from_millis(2), Duration::from_millis(10))
        .child(a);
    let sup = Supervisor::start(&rt, spec).unwrap();
    for _ in 0..3 {
        let old = current(&ra);
        ra.try_send(W::Crash).unwrap();
        restarted(&ra, old);
    }
    assert_eq!(log.count("start:a"), 4);
    assert_eq!(sup.count_children(T).unwrap().active, 1);
    rt.shutdown();

    // A backoff of an hour: after the crash has been handled (its Down is
    // sent after the exit signal, and the supervisor takes its signals
    // before requests), the child is not running. Without backoff the
    // restart happens while the exit is handled, so it would be.
    let rt = runtime(2);
    let a = worker("a", &log);
    let ra = a.child_ref();
    let hour = Duration::from_secs(3600);
    let spec = SupervisorSpec::one_for_one().intensity(10, T).backoff(hour, hour).child(a);
    let sup = Supervisor::start(&rt, spec).unwrap();
    let watched = watch(&rt, ra.current().unwrap().pid());
    ra.try_send(W::Crash).unwrap();
    down(&watched);
    assert_eq!(sup.count_children(T).unwrap().active, 0, "waiting out the backoff");
    assert!(!ra.is_alive());
    rt.shutdown();
}

#[test]
fn runtime_shutdown_stops_a_tree_children_first_without_restarts() {
    // zbmd: Runtime::shutdown stops every actor newest first — children before their supervisors — and a supervisor does not restart the children the runtime is stopping.
    let rt = runtime(2);
    let log = Log::default();
    let spec = SupervisorSpec::one_for_all()
        .intensity(100, T)
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let _sup = Supervisor::start(&rt, spec).unwrap();
    rt.shutdown();
    assert_eq!(
        log.take(),
        ["start:a", "start:b", "start:c", "stop:c:shutdown", "stop:b:shutdown", "stop:a:shutdown"]
    );
}

#[test]
fn a_child_factory_that_panics_is_a_child_that_failed_to_start() {
    // OTP: a start function that fails makes the child fail to start (the supervisor's start fails; a failed restart is retried and counted), it does not crash the supervisor.
    let rt = runtime(2);
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let spec = ChildSpec::worker("p", move || {
        if counter.fetch_add(1, Ordering::SeqCst) >= 1 {
            panic!("no more workers");
        }
        Worker { name: "p", log: Log::default(), stubborn: false, refuse_start: None }
    });
    let child = spec.child_ref();
    let sup =
        Supervisor::start(&rt, SupervisorSpec::one_for_one().intensity(2, T).child(spec)).unwrap();
    let sup_down = watch(&rt, pid_of(&sup));
    child.try_send(W::Crash).unwrap();
    // Crash (1), restart panics (2), retry panics (3 > 2): it gives up
    // with shutdown, as for any failed restart.
    assert_eq!(down(&sup_down).reason, ExitReason::Shutdown);

    let panicking = ChildSpec::worker("q", || -> Worker { panic!("cannot build") });
    let error = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(panicking)).unwrap_err();
    assert_eq!(
        error,
        SupervisorError::StartFailed {
            id: "q".into(),
            reason: ExitReason::error("panicked: cannot build")
        }
    );
    rt.shutdown();
}

#[test]
fn requests_waiting_on_a_long_stop_are_bounded() {
    // zbmd: every queue has a bound — while a child takes its time to stop, at most MAX_DEFERRED_REQUESTS table-changing requests wait; the next one is answered Busy at once.
    let rt = runtime(2);
    let log = Log::default();
    let stubborn_log = log.clone();
    let slow = ChildSpec::worker("slow", move || Worker {
        name: "slow",
        log: stubborn_log.clone(),
        stubborn: true,
        refuse_start: None,
    })
    .shutdown(Shutdown::Infinity);
    let slow_ref = slow.child_ref();
    let spec = SupervisorSpec::one_for_one()
        .spawn_options(zbmd_rt::SpawnOptions { mailbox_capacity: Some(1024), ..Default::default() })
        .child(slow)
        .child(worker("other", &log));
    let sup = Supervisor::start(&rt, spec).unwrap();
    let stopping = {
        let sup = sup.clone();
        std::thread::spawn(move || sup.terminate_child("slow", T))
    };
    eventually("the stop has begun", || log.count("exit:slow:shutdown") == 1);
    let limit = zbmd_rt::supervisor::MAX_DEFERRED_REQUESTS;
    let waiting: Vec<_> = (0..=limit)
        .map(|_| {
            let sup = sup.clone();
            std::thread::spawn(move || sup.restart_child("other", T))
        })
        .collect();
    // Exactly one of the limit + 1 requests finds the queue full...
    eventually("one request refused", || {
        sup.count_children(T).is_ok() && { waiting.iter().filter(|t| t.is_finished()).count() == 1 }
    });
    // ...and the others are answered once the stop ends.
    assert!(slow_ref.exit(ExitReason::Kill));
    stopping.join().unwrap().unwrap();
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    let busy = answers.iter().filter(|a| matches!(a, Err(SupervisorError::Busy { .. }))).count();
    let running = answers.iter().filter(|a| matches!(a, Err(SupervisorError::Running(_)))).count();
    assert_eq!((busy, running), (1, limit));
    rt.shutdown();
}
