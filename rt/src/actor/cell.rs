//! The private side of an actor: its state, links and monitors, and the
//! code that runs one turn of it on a shard.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::addr::{Header, Shared, Signal, SysSignal};
use super::context::Context;
use super::{Actor, ActorError, ActorId, Down, ExitReason, MonitorRef, Pid};
use crate::fault::Verdict;
use crate::runtime::ShardCtx;
use crate::sync::mpsc::Envelope;

/// What a turn left the actor as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnOutcome {
    /// Nothing more to do; the next send schedules it again.
    Idle,
    /// It still holds the SCHEDULED token: put it at the back of a run queue.
    Requeue,
    /// It died; the shard frees the cell.
    Dead,
}

/// A cell the shards can run without knowing the actor's type.
pub(crate) trait Runnable: Send {
    fn header(&self) -> &Header;

    /// Runs one turn: messages until the mailbox is empty or the reduction
    /// budget is spent.
    fn run(&self, shard: &mut ShardCtx) -> TurnOutcome;

    /// Starts a new actor synchronously on the caller's shard: links it to
    /// `parent` and runs its `started` hook. On failure the actor is dead
    /// (and unlinked first, so the parent hears the reason only as the
    /// answer) and the caller frees the cell.
    ///
    /// The caller must hold the actor's SCHEDULED token: it was just
    /// created and is on no run queue.
    fn init(&self, shard: &mut ShardCtx, parent: Option<&Pid>) -> Result<(), ExitReason>;

    /// Kills a new actor that never started (same contract as `init`) and
    /// returns `reason`.
    fn abort(&self, shard: &mut ShardCtx, reason: ExitReason) -> ExitReason;
}

/// Links, monitors and flags: the process-control block's private part.
#[derive(Default)]
pub(crate) struct Meta {
    /// Linked actors, at most one link per pair.
    pub(crate) links: Vec<Pid>,
    /// Monitors others hold on this actor.
    pub(crate) monitored_by: Vec<(MonitorRef, Pid)>,
    /// Monitors this actor holds on others.
    pub(crate) monitoring: Vec<(MonitorRef, Pid)>,
    pub(crate) trap_exit: bool,
}

impl Meta {
    pub(crate) fn add_link(&mut self, pid: Pid) {
        if !self.links.iter().any(|p| p.id() == pid.id()) {
            self.links.push(pid);
        }
    }

    pub(crate) fn remove_link(&mut self, id: ActorId) -> bool {
        let before = self.links.len();
        self.links.retain(|p| p.id() != id);
        before != self.links.len()
    }
}

struct Inner<A> {
    actor: A,
    meta: Meta,
}

/// An actor's cell: owned by the runtime from spawn to death, reached by the
/// shards through `RunPtr`s.
pub(crate) struct ActorCell<A: Actor> {
    shared: Arc<Shared<A::Msg>>,
    inner: UnsafeCell<Inner<A>>,
}

// SAFETY: the cell moves between shard threads with its SCHEDULED token;
// `A: Send` and `A::Msg: Send` make its contents movable, and `inner` is
// only touched by the one shard that holds the token.
unsafe impl<A: Actor> Send for ActorCell<A> {}

impl<A: Actor> ActorCell<A> {
    pub(crate) fn new(shared: Arc<Shared<A::Msg>>, actor: A) -> Self {
        ActorCell { shared, inner: UnsafeCell::new(Inner { actor, meta: Meta::default() }) }
    }

    /// Dispatches one envelope; returns the reductions it cost.
    fn dispatch(
        &self,
        inner: &mut Inner<A>,
        shard: &mut ShardCtx,
        envelope: Envelope<Signal<A::Msg>, A::Msg>,
        exit: &mut Option<ExitReason>,
    ) -> u32 {
        // Fault injection (crate::fault): one predictable branch without a plan.
        let envelope = match envelope {
            Envelope::User(msg) if shard.faults_active() => {
                match crate::fault::apply(shard, &self.shared, msg) {
                    Verdict::Deliver(msg) => Envelope::User(msg),
                    Verdict::Crash(reason) => {
                        *exit = Some(reason);
                        return 1;
                    }
                    Verdict::Consumed => return 1,
                }
            }
            envelope => envelope,
        };
        let Inner { actor, meta } = inner;
        let mut ctx = Context::new(&self.shared, meta, shard);
        let result = match envelope {
            Envelope::User(msg) | Envelope::System(Signal::Reply(msg)) => {
                guarded(|| actor.handle(&mut ctx, msg))
            }
            Envelope::System(Signal::Answer(msg, timer)) => {
                ctx.forget_timer(timer);
                guarded(|| actor.handle(&mut ctx, msg))
            }
            Envelope::System(Signal::Sys(signal)) => match system(actor, &mut ctx, signal) {
                Ok(result) => result,
                Err(reason) => {
                    *exit = Some(reason);
                    return 1;
                }
            },
        };
        let reductions = ctx.reductions();
        *exit = match result {
            Err(error) => Some(error.0),
            Ok(()) => ctx.take_stop(),
        };
        reductions
    }

    /// Stops the actor: OTP's order of events at death.
    fn die(&self, inner: &mut Inner<A>, shard: &mut ShardCtx, reason: ExitReason) {
        let Inner { actor, meta } = inner;
        let header = &self.shared.header;
        {
            let mut ctx = Context::new(&self.shared, meta, shard);
            let _caught = crate::runtime::CaughtCall::enter();
            if catch_unwind(AssertUnwindSafe(|| actor.stopping(&mut ctx, &reason))).is_err() {
                tracing::error!(actor = header.name, id = %header.id, "stopping hook panicked");
            }
        }
        header.mark_dead();
        if header.is_registered() {
            shard.sched().registry().release(header.id);
        }
        for link in meta.links.drain(..) {
            let exit = SysSignal::Exit { from: header.id, reason: reason.clone(), direct: false };
            let _ = link.target.send_sys(exit);
        }
        for (monitor, watcher) in meta.monitored_by.drain(..) {
            let down = Down { monitor, actor: header.id, reason: reason.clone() };
            let _ = watcher.target.send_sys(SysSignal::Down(down));
        }
        for (monitor, target) in meta.monitoring.drain(..) {
            let _ = target.target.send_sys(SysSignal::Demonitor(monitor));
        }
        self.shared.drain_dead();
        // Wakes whoever waits for the death (`Scheduler::wait_dead`) or for
        // room (a send that now answers `NoProc`).
        header.progress.notify();
        let crashed = !matches!(reason, ExitReason::Normal | ExitReason::Shutdown);
        if crashed {
            tracing::warn!(actor = header.name, id = %header.id, %reason, "actor crashed");
        } else {
            tracing::debug!(actor = header.name, id = %header.id, %reason, "actor stopped");
        }
        shard.actor_died(header.id, crashed);
    }
}

impl<A: Actor> Runnable for ActorCell<A> {
    fn header(&self) -> &Header {
        &self.shared.header
    }

    fn init(&self, shard: &mut ShardCtx, parent: Option<&Pid>) -> Result<(), ExitReason> {
        // SAFETY: the caller holds the SCHEDULED token of an actor no queue
        // has seen yet, so no other thread touches `inner`.
        let inner = unsafe { &mut *self.inner.get() };
        if let Some(parent) = parent {
            inner.meta.add_link(parent.clone());
        }
        let Inner { actor, meta } = &mut *inner;
        let mut ctx = Context::new(&self.shared, meta, shard);
        let result = guarded(|| actor.started(&mut ctx));
        let reason = match result {
            Ok(()) => match ctx.take_stop() {
                None => return Ok(()),
                Some(reason) => reason,
            },
            Err(error) => error.0,
        };
        if let Some(parent) = parent {
            inner.meta.remove_link(parent.id());
        }
        self.die(inner, shard, reason.clone());
        Err(reason)
    }

    fn abort(&self, shard: &mut ShardCtx, reason: ExitReason) -> ExitReason {
        // SAFETY: as in `init`.
        let inner = unsafe { &mut *self.inner.get() };
        self.die(inner, shard, reason.clone());
        reason
    }

    fn run(&self, shard: &mut ShardCtx) -> TurnOutcome {
        let header = &self.shared.header;
        header.begin_turn(shard.index());
        // SAFETY: this shard holds the actor's SCHEDULED token (it dequeued
        // the `RunPtr`), so no other thread touches `inner` until `end_turn`.
        let inner = unsafe { &mut *self.inner.get() };
        let budget = shard.reduction_budget();
        let mut spent = 0u32;
        let mut messages = 0u32;
        let mut exit = None;
        while spent < budget {
            // SAFETY: the token also makes this shard the mailbox's only
            // consumer for the duration of the turn.
            let Some(envelope) = (unsafe { self.shared.mailbox.recv() }) else {
                break;
            };
            spent = spent.saturating_add(self.dispatch(inner, shard, envelope, &mut exit));
            messages += 1;
            if let Some(reason) = exit.take() {
                shard.count_turn(messages, spent);
                self.die(inner, shard, reason);
                return TurnOutcome::Dead;
            }
        }
        shard.count_turn(messages, spent);
        if messages != 0 {
            // Room was made: wake the senders waiting for it. Before
            // `end_turn`, after which another shard may run (and free) the
            // cell. With nobody waiting: a fence and one load per turn.
            header.progress.notify();
        }
        let more_work = spent >= budget && !self.shared.mailbox.is_empty();
        // Past the exchange to IDLE inside `end_turn`, another shard may
        // run the actor, and only this shard's `CurrentTurn` (published by
        // `Shard::run_turn` until `run` returns) keeps its memory from being
        // freed: the re-check reads the mailbox through the `Shared` taken
        // here, with the token, not through the cell, and nothing after
        // `end_turn` touches the actor.
        let shared: &Shared<A::Msg> = &self.shared;
        if header.end_turn(more_work, || shared.mailbox.has_claims()) {
            TurnOutcome::Requeue
        } else {
            TurnOutcome::Idle
        }
    }
}

/// Calls a handler, turning a panic into a crash reason.
fn guarded(f: impl FnOnce() -> Result<(), ActorError>) -> Result<(), ActorError> {
    catch(f).unwrap_or_else(|reason| Err(ActorError(reason)))
}

/// Runs `f`, turning a panic into a crash reason (`panicked: <message>`).
/// The panic is reported through `tracing` rather than the panic hook when
/// the runtime routes handler panics (`runtime::panics`).
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, ExitReason> {
    let _caught = crate::runtime::CaughtCall::enter();
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_string());
        ExitReason::error(format_args!("panicked: {message}"))
    })
}

/// Applies a system signal. `Err` is an exit the actor cannot trap.
fn system<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<'_, A>,
    signal: SysSignal,
) -> Result<Result<(), ActorError>, ExitReason> {
    match signal {
        SysSignal::Start => return Ok(guarded(|| actor.started(ctx))),
        SysSignal::Link(pid) => ctx.meta().add_link(pid),
        SysSignal::Unlink(id) => {
            ctx.meta().remove_link(id);
        }
        SysSignal::Exit { from, reason, direct } => {
            return exit_signal(actor, ctx, from, reason, direct);
        }
        SysSignal::Stop(reason) => return Err(reason),
        SysSignal::Monitor { watcher, monitor } => ctx.meta().monitored_by.push((monitor, watcher)),
        SysSignal::Demonitor(monitor) => ctx.meta().monitored_by.retain(|(m, _)| *m != monitor),
        SysSignal::Down(down) => {
            let monitoring = &mut ctx.meta().monitoring;
            let Some(index) = monitoring.iter().position(|(m, _)| *m == down.monitor) else {
                return Ok(Ok(())); // demonitored before it fired: flushed, as in OTP
            };
            monitoring.swap_remove(index);
            return Ok(guarded(|| actor.handle_down(ctx, down)));
        }
    }
    Ok(Ok(()))
}

/// OTP's exit-signal rules (erlang:exit/2 and links).
fn exit_signal<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<'_, A>,
    from: ActorId,
    reason: ExitReason,
    direct: bool,
) -> Result<Result<(), ActorError>, ExitReason> {
    if !direct && !ctx.meta().remove_link(from) && from != ctx.id() {
        // The link was removed (unlink) before this signal arrived.
        return Ok(Ok(()));
    }
    if direct && reason == ExitReason::Kill {
        return Err(ExitReason::Killed); // untrappable
    }
    if ctx.meta().trap_exit {
        return Ok(guarded(|| actor.handle_exit(ctx, from, reason)));
    }
    match reason {
        // `normal` does not kill, except an actor that exits itself normally.
        ExitReason::Normal if from != ctx.id() => Ok(Ok(())),
        reason => Err(reason),
    }
}
