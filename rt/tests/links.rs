//! Links, monitors and exit signals, case by case, as OTP defines them.
#![cfg(not(zbmd_loom))]

mod common;

use common::*;
use zbmd_rt::{Actor, ActorError, ActorRef, Context, ExitReason, Pid};

/// An actor that links to, monitors, or signals others when told.
struct Linker {
    events: std::sync::mpsc::Sender<Event>,
    trap_exit: bool,
}

enum Cmd {
    Link(Pid),
    Unlink(Pid),
    Monitor(Pid),
    MonitorThenDemonitor(Pid),
    Exit(Pid, ExitReason),
    Crash,
    Stop(ExitReason),
}

impl Actor for Linker {
    type Msg = Cmd;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(self.trap_exit);
        let _ = self.events.send(Event::Started(ctx.id()));
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, cmd: Cmd) -> Result<(), ActorError> {
        match cmd {
            Cmd::Link(pid) => ctx.link(&pid),
            Cmd::Unlink(pid) => ctx.unlink(&pid),
            Cmd::Monitor(pid) => {
                ctx.monitor(&pid);
            }
            Cmd::MonitorThenDemonitor(pid) => {
                let monitor = ctx.monitor(&pid);
                assert!(ctx.demonitor(monitor));
            }
            Cmd::Exit(pid, reason) => ctx.exit(&pid, reason),
            Cmd::Crash => return Err(ActorError::msg("boom")),
            Cmd::Stop(reason) => ctx.stop(reason),
        }
        let _ = self.events.send(Event::Got(ctx.id(), 0));
        Ok(())
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: zbmd_rt::ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = self.events.send(Event::Exit { me: ctx.id(), from, reason });
        Ok(())
    }

    fn handle_down(
        &mut self,
        ctx: &mut Context<'_, Self>,
        down: zbmd_rt::Down,
    ) -> Result<(), ActorError> {
        let _ = self.events.send(Event::Down { me: ctx.id(), down });
        Ok(())
    }

    fn stopping(&mut self, ctx: &mut Context<'_, Self>, reason: &ExitReason) {
        let _ = self.events.send(Event::Stopping(ctx.id(), reason.clone()));
    }
}

fn linker(
    rt: &zbmd_rt::Runtime,
    events: &std::sync::mpsc::Sender<Event>,
    trap_exit: bool,
) -> ActorRef<Cmd> {
    rt.spawn(Linker { events: events.clone(), trap_exit }).unwrap()
}

fn stopped(rx: &std::sync::mpsc::Receiver<Event>, who: &ActorRef<Cmd>) -> ExitReason {
    let id = who.id();
    match expect(rx, "a stop", |e| matches!(e, Event::Stopping(i, _) if *i == id)) {
        Event::Stopping(_, reason) => reason,
        _ => unreachable!(),
    }
}

/// Wait until `cmd` has been handled by `who` (it reports Got(id, 0)).
fn handled(rx: &std::sync::mpsc::Receiver<Event>, who: &ActorRef<Cmd>) {
    let id = who.id();
    expect(rx, "a command handled", |e| *e == Event::Got(id, 0));
}

#[test]
fn a_crash_kills_a_linked_actor_with_the_same_reason() {
    // OTP: an abnormal exit signal kills a linked process that does not trap exits.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    a.try_send(Cmd::Link(b.pid())).unwrap();
    handled(&rx, &a);
    b.try_send(Cmd::Crash).unwrap();
    assert_eq!(stopped(&rx, &b), ExitReason::error("boom"));
    assert_eq!(stopped(&rx, &a), ExitReason::error("boom"));
    eventually("a dead", || !a.is_alive());
}

#[test]
fn a_trapping_actor_receives_the_exit_as_a_message_and_lives() {
    // OTP: with trap_exit, exit signals arrive as {'EXIT', From, Reason} messages.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, true), linker(&rt, &tx, false));
    a.try_send(Cmd::Link(b.pid())).unwrap();
    handled(&rx, &a);
    b.try_send(Cmd::Crash).unwrap();
    let (a_id, b_id) = (a.id(), b.id());
    expect(&rx, "the exit message", |e| {
        *e == Event::Exit { me: a_id, from: b_id, reason: ExitReason::error("boom") }
    });
    a.try_send(Cmd::Link(b.pid())).unwrap(); // still alive and handling
    handled(&rx, &a);
    assert!(a.is_alive());
}

#[test]
fn a_normal_exit_does_not_kill_a_linked_actor() {
    // OTP: exit reason `normal` through a link is ignored unless trapping.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    a.try_send(Cmd::Link(b.pid())).unwrap();
    handled(&rx, &a);
    b.try_send(Cmd::Stop(ExitReason::Normal)).unwrap();
    assert_eq!(stopped(&rx, &b), ExitReason::Normal);
    let a_id = a.id();
    expect_none(&rx, "a stopping", |e| matches!(e, Event::Stopping(i, _) if *i == a_id));
    assert!(a.is_alive());
}

#[test]
fn kill_sent_directly_cannot_be_trapped_and_links_see_killed() {
    // OTP: exit(Pid, kill) is untrappable; the victim dies with `killed`, which its links receive.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (victim, watcher, killer) =
        (linker(&rt, &tx, true), linker(&rt, &tx, true), linker(&rt, &tx, false));
    watcher.try_send(Cmd::Link(victim.pid())).unwrap();
    handled(&rx, &watcher);
    killer.try_send(Cmd::Exit(victim.pid(), ExitReason::Kill)).unwrap();
    assert_eq!(stopped(&rx, &victim), ExitReason::Killed);
    let (w, v) = (watcher.id(), victim.id());
    expect(&rx, "killed via the link", |e| {
        *e == Event::Exit { me: w, from: v, reason: ExitReason::Killed }
    });
}

#[test]
fn a_direct_exit_with_an_abnormal_reason_is_trappable() {
    // OTP: exit(Pid, Reason) for Reason other than kill arrives as a message when trapping.
    let rt = runtime(1);
    let (tx, rx) = events();
    let (target, sender) = (linker(&rt, &tx, true), linker(&rt, &tx, false));
    sender.try_send(Cmd::Exit(target.pid(), ExitReason::error("go away"))).unwrap();
    let (t, s) = (target.id(), sender.id());
    expect(&rx, "the trapped exit", |e| {
        *e == Event::Exit { me: t, from: s, reason: ExitReason::error("go away") }
    });
    assert!(target.is_alive());
}

#[test]
fn a_direct_normal_exit_is_ignored_by_a_non_trapping_actor() {
    // OTP: exit(Pid, normal) does nothing to another process that does not trap exits.
    let rt = runtime(1);
    let (tx, rx) = events();
    let (target, sender) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    sender.try_send(Cmd::Exit(target.pid(), ExitReason::Normal)).unwrap();
    handled(&rx, &sender);
    target.try_send(Cmd::Link(sender.pid())).unwrap();
    handled(&rx, &target);
    assert!(target.is_alive());
}

#[test]
fn linking_twice_makes_one_link() {
    // OTP: there is at most one link between two processes; a second link/1 is a no-op.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, true), linker(&rt, &tx, false));
    a.try_send(Cmd::Link(b.pid())).unwrap();
    a.try_send(Cmd::Link(b.pid())).unwrap();
    handled(&rx, &a);
    handled(&rx, &a);
    b.try_send(Cmd::Crash).unwrap();
    let a_id = a.id();
    expect(&rx, "one exit", |e| matches!(e, Event::Exit { me, .. } if *me == a_id));
    expect_none(&rx, "a second exit", |e| matches!(e, Event::Exit { me, .. } if *me == a_id));
}

#[test]
fn unlink_stops_exits_from_propagating() {
    // OTP: unlink/1 removes the link in both directions.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    a.try_send(Cmd::Link(b.pid())).unwrap();
    a.try_send(Cmd::Unlink(b.pid())).unwrap();
    handled(&rx, &a);
    handled(&rx, &a);
    b.try_send(Cmd::Crash).unwrap();
    stopped(&rx, &b);
    let a_id = a.id();
    expect_none(&rx, "a stopping", |e| matches!(e, Event::Stopping(i, _) if *i == a_id));
}

#[test]
fn linking_to_a_dead_actor_delivers_noproc() {
    // OTP: link/1 to a dead process gives the trapping caller an exit with reason noproc.
    let rt = runtime(1);
    let (tx, rx) = events();
    let (a, b) = (linker(&rt, &tx, true), linker(&rt, &tx, false));
    b.try_send(Cmd::Stop(ExitReason::Normal)).unwrap();
    stopped(&rx, &b);
    eventually("b dead", || !b.is_alive());
    a.try_send(Cmd::Link(b.pid())).unwrap();
    let (a_id, b_id) = (a.id(), b.id());
    expect(&rx, "noproc", |e| {
        *e == Event::Exit { me: a_id, from: b_id, reason: ExitReason::NoProc }
    });
}

#[test]
fn monitors_stack_and_each_delivers_its_own_down() {
    // OTP: monitor/2 called twice creates two monitors, each with its own 'DOWN'.
    let rt = runtime(2);
    let (tx, rx) = events();
    let (watcher, target) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    watcher.try_send(Cmd::Monitor(target.pid())).unwrap();
    watcher.try_send(Cmd::Monitor(target.pid())).unwrap();
    handled(&rx, &watcher);
    handled(&rx, &watcher);
    target.try_send(Cmd::Crash).unwrap();
    let w = watcher.id();
    let first = expect(&rx, "first down", |e| matches!(e, Event::Down { me, .. } if *me == w));
    let second = expect(&rx, "second down", |e| matches!(e, Event::Down { me, .. } if *me == w));
    let (Event::Down { down: d1, .. }, Event::Down { down: d2, .. }) = (first, second) else {
        unreachable!()
    };
    assert_ne!(d1.monitor, d2.monitor);
    assert_eq!(d1.reason, ExitReason::error("boom"));
    assert_eq!(d1.actor, target.id());
    assert!(watcher.is_alive(), "a monitor never kills the watcher");
}

#[test]
fn monitoring_a_dead_actor_delivers_down_noproc_at_once() {
    // OTP: monitor/2 of a process that does not exist delivers 'DOWN' with reason noproc immediately.
    let rt = runtime(1);
    let (tx, rx) = events();
    let (watcher, target) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    target.try_send(Cmd::Stop(ExitReason::Normal)).unwrap();
    eventually("target dead", || !target.is_alive());
    watcher.try_send(Cmd::Monitor(target.pid())).unwrap();
    let w = watcher.id();
    let t = target.id();
    expect(
        &rx,
        "noproc down",
        |e| matches!(e, Event::Down { me, down } if *me == w && down.actor == t && down.reason == ExitReason::NoProc),
    );
}

#[test]
fn demonitor_means_no_down() {
    // OTP: demonitor/1 removes the monitor; no 'DOWN' arrives for it afterwards.
    let rt = runtime(1);
    let (tx, rx) = events();
    let (watcher, target) = (linker(&rt, &tx, false), linker(&rt, &tx, false));
    watcher.try_send(Cmd::MonitorThenDemonitor(target.pid())).unwrap();
    handled(&rx, &watcher);
    target.try_send(Cmd::Crash).unwrap();
    stopped(&rx, &target);
    let w = watcher.id();
    expect_none(&rx, "a down", |e| matches!(e, Event::Down { me, .. } if *me == w));
}

#[test]
fn a_panicking_handler_crashes_only_its_actor() {
    // The shard keeps running: a neighbour on the same shard still answers.
    struct Panicker;
    impl Actor for Panicker {
        type Msg = ();
        fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> {
            panic!("handler bug");
        }
    }
    let rt = runtime(1);
    let (tx, rx) = events();
    let neighbour = rt.spawn(Probe::new(&tx)).unwrap();
    let panicker = rt.spawn(Panicker).unwrap();
    let watcher = linker(&rt, &tx, false);
    watcher.try_send(Cmd::Monitor(panicker.pid())).unwrap();
    handled(&rx, &watcher);
    panicker.try_send(()).unwrap();
    let w = watcher.id();
    let down =
        expect(&rx, "the panicker's down", |e| matches!(e, Event::Down { me, .. } if *me == w));
    let Event::Down { down, .. } = down else { unreachable!() };
    assert_eq!(down.reason, ExitReason::error("panicked: handler bug"));
    neighbour.try_send(7).unwrap();
    let n = neighbour.id();
    expect(&rx, "the neighbour's answer", |e| *e == Event::Got(n, 7));
    assert_eq!(rt.metrics().total(zbmd_rt::runtime::Metric::Crashes), 1);
}
