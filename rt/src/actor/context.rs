//! What a handler can do: the actor's [`Context`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::addr::{Shared, Signal, SysSignal, TimerEntry};
use super::ask::{ActorSink, ReplyTo};
use super::cell::Meta;
use super::{Actor, ActorId, ActorRef, ExitReason, MonitorRef, Pid};
use crate::error::{AskError, RuntimeError, SendError, StartError};
use crate::fault::FaultInjector;
use crate::io::{Completion, IoError, IoOp, IoResult};
use crate::runtime::{ShardCtx, SpawnOptions, TimerAction};

/// A handle on a timer set with [`Context::send_after`] or
/// [`Context::send_interval`]; cancel it with [`Context::cancel_timer`] (or
/// [`TimerRef::cancel`]) from anywhere.
#[derive(Clone, Debug)]
pub struct TimerRef {
    pub(crate) cancelled: Arc<AtomicBool>,
    /// The shard whose wheel holds it, and its key there.
    entry: TimerEntry,
}

impl TimerRef {
    /// Cancels the timer: a pending message is not sent, an interval stops.
    /// Returns false if it was already cancelled. The wheel's entry is freed
    /// when the timer would have fired; [`Context::cancel_timer`] on the
    /// shard that set it frees it at once.
    pub fn cancel(&self) -> bool {
        !self.cancelled.swap(true, Ordering::AcqRel)
    }
}

/// The actor's view of the runtime during one handler call: its identity,
/// spawning, links and monitors, names, asks ([`ask`](Self::ask)), timers
/// ([`send_after`](Self::send_after), [`send_interval`](Self::send_interval)),
/// blocking jobs and I/O. Every method returns at once; none blocks the
/// shard.
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
///
/// /// Spawns a helper on its first message and reports where both run.
/// struct Parent;
/// struct Helper;
/// impl Actor for Helper {
///     type Msg = ();
///     fn handle(&mut self, _: &mut Context<'_, Self>, _: ()) -> Result<(), ActorError> { Ok(()) }
/// }
/// impl Actor for Parent {
///     type Msg = ReplyTo<(usize, usize)>;
///     fn handle(&mut self, ctx: &mut Context<'_, Self>, reply: Self::Msg) -> Result<(), ActorError> {
///         let helper = ctx.spawn_link(Helper)?; // on this shard, linked
///         reply.reply((ctx.shard(), usize::from(helper.id().shard)));
///         Ok(())
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
/// let parent = rt.spawn(Parent).unwrap();
/// assert_eq!(rt.call(&parent, |reply| reply, Duration::from_secs(5)), Ok((0, 0)));
/// rt.shutdown();
/// ```
pub struct Context<'a, A: Actor> {
    shared: &'a Arc<Shared<A::Msg>>,
    meta: &'a mut Meta,
    shard: &'a mut ShardCtx,
    reductions: u32,
    stop: Option<ExitReason>,
}

impl<'a, A: Actor> Context<'a, A> {
    pub(crate) fn new(
        shared: &'a Arc<Shared<A::Msg>>,
        meta: &'a mut Meta,
        shard: &'a mut ShardCtx,
    ) -> Self {
        Context { shared, meta, shard, reductions: 1, stop: None }
    }

    pub(crate) fn meta(&mut self) -> &mut Meta {
        self.meta
    }

    pub(crate) fn reductions(&self) -> u32 {
        self.reductions
    }

    pub(crate) fn take_stop(&mut self) -> Option<ExitReason> {
        self.stop.take()
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.shared.header.id
    }

    /// A reference to this actor, to hand to others.
    pub fn myself(&self) -> ActorRef<A::Msg> {
        ActorRef { shared: self.shared.clone() }
    }

    /// This actor's untyped handle.
    pub fn pid(&self) -> Pid {
        Pid { target: self.shared.clone() }
    }

    /// The shard running this turn (it may change between turns when an
    /// idle shard steals the actor, unless it is pinned).
    pub fn shard(&self) -> usize {
        self.shard.index()
    }

    /// The number of shards in the runtime (shard indices are
    /// `0..shards()`, for [`SpawnOptions::shard`]).
    pub fn shards(&self) -> usize {
        self.shard.sched().config.shards
    }

    /// Charges `n` more reductions for long work, so the actor yields its
    /// shard sooner. The message itself already costs one.
    pub fn consume(&mut self, n: u32) {
        self.reductions = self.reductions.saturating_add(n);
    }

    /// Stops this actor with `reason` once the current handler returns.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop = Some(reason);
    }

    /// Whether exit signals arrive as [`Actor::handle_exit`] calls (true) or
    /// apply OTP's default rules (false, the default).
    pub fn trap_exit(&mut self, trap: bool) {
        self.meta.trap_exit = trap;
    }

    /// Spawns an actor on this shard.
    pub fn spawn<B: Actor>(&mut self, actor: B) -> Result<ActorRef<B::Msg>, RuntimeError> {
        self.spawn_with(actor, SpawnOptions::default())
    }

    /// Spawns an actor with options (shard, pinning, mailbox size, link).
    pub fn spawn_with<B: Actor>(
        &mut self,
        actor: B,
        options: SpawnOptions,
    ) -> Result<ActorRef<B::Msg>, RuntimeError> {
        let options = SpawnOptions { shard: options.shard.or(Some(self.shard.index())), ..options };
        let link = options.link;
        let child = self.shard.sched().spawn(actor, options)?;
        if link {
            self.link(&child.pid());
        }
        Ok(child)
    }

    /// Spawns an actor on this shard, linked to this one.
    pub fn spawn_link<B: Actor>(&mut self, actor: B) -> Result<ActorRef<B::Msg>, RuntimeError> {
        self.spawn_with(actor, SpawnOptions { link: true, ..SpawnOptions::default() })
    }

    /// Spawns an actor linked to this one and runs its `started` hook before
    /// returning, on this shard (the new actor then runs on the shard
    /// `options` names, by default this one): OTP's `proc_lib:start_link`,
    /// the synchronous start supervisors use. `name`, when given, is
    /// registered before the hook runs.
    ///
    /// If the hook fails or panics (or the name is taken) the new actor is
    /// gone when this returns, with no link and no exit signal left behind:
    /// the reason comes back in [`StartError::Init`]. Its `stopping` hook
    /// runs, as at any death.
    pub fn start_link<B: Actor>(
        &mut self,
        actor: B,
        options: SpawnOptions,
        name: Option<&str>,
    ) -> Result<ActorRef<B::Msg>, StartError> {
        let options = SpawnOptions { shard: options.shard.or(Some(self.shard.index())), ..options };
        let me = self.pid();
        let sched = self.shard.sched().clone();
        let child = sched.start_link(actor, &options, name, Some(&me), self.shard)?;
        self.meta.add_link(child.pid());
        Ok(child)
    }

    /// Links this actor to `other` (idempotent: one link per pair). If
    /// `other` is dead, an exit signal with reason `noproc` arrives, as in OTP.
    pub fn link(&mut self, other: &Pid) {
        if other.id() == self.id() {
            return;
        }
        self.meta.add_link(other.clone());
        if let Err(SysSignal::Link(_)) = other.target.send_sys(SysSignal::Link(self.pid())) {
            let exit =
                SysSignal::Exit { from: other.id(), reason: ExitReason::NoProc, direct: false };
            self.signal_self(exit);
        }
    }

    /// Removes the link to `other`, if any.
    pub fn unlink(&mut self, other: &Pid) {
        if self.meta.remove_link(other.id()) {
            let _ = other.target.send_sys(SysSignal::Unlink(self.id()));
        }
    }

    /// Monitors `other`: a [`Down`](super::Down) arrives when it stops, or at
    /// once with reason `noproc` if it is already dead. Monitors stack.
    pub fn monitor(&mut self, other: &Pid) -> MonitorRef {
        let monitor = self.shard.sched().next_monitor_ref();
        self.meta.monitoring.push((monitor, other.clone()));
        let request = SysSignal::Monitor { watcher: self.pid(), monitor };
        if other.target.send_sys(request).is_err() {
            let down = super::Down { monitor, actor: other.id(), reason: ExitReason::NoProc };
            self.signal_self(SysSignal::Down(down));
        }
        monitor
    }

    /// Removes a monitor; a `Down` for it that is already queued is
    /// discarded. Returns false if no such monitor was active.
    pub fn demonitor(&mut self, monitor: MonitorRef) -> bool {
        let Some(index) = self.meta.monitoring.iter().position(|(m, _)| *m == monitor) else {
            return false;
        };
        let (_, target) = self.meta.monitoring.swap_remove(index);
        let _ = target.target.send_sys(SysSignal::Demonitor(monitor));
        true
    }

    /// Sends an exit signal to `target` (erlang:exit/2): `Kill` cannot be
    /// trapped; `Normal` is ignored unless `target` traps exits or is this
    /// actor.
    pub fn exit(&mut self, target: &Pid, reason: ExitReason) {
        let signal = SysSignal::Exit { from: self.id(), reason, direct: true };
        let _ = target.target.send_sys(signal);
    }

    /// Registers `name` for this actor (one name per actor, one live actor
    /// per name). The name is released when it dies, before its links and
    /// monitors are told.
    pub fn register(&mut self, name: &str) -> Result<(), RuntimeError> {
        self.shard.sched().registry().register(name, self.pid())
    }

    /// Looks up a registered name.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.shard.sched().registry().whereis(name)
    }

    /// The handle on the runtime's fault plan, for code that injects its
    /// own faults at named sites (see [`crate::fault`]).
    pub fn faults(&self) -> FaultInjector {
        let sched = self.shard.sched();
        FaultInjector::attached(sched.config.faults.as_ref(), sched)
    }

    /// Asks `target` for a reply without blocking the shard: `request`
    /// builds the message around a [`ReplyTo`], and the reply (or
    /// [`AskError::Timeout`] after `timeout`, or [`AskError::Dropped`] when
    /// the target drops the `ReplyTo` unanswered) comes back to this actor,
    /// through its system lane, as the message `on_reply` makes of it.
    /// `on_reply` runs once, on the thread that settles the ask; it may be
    /// a variant constructor (`Msg::Answer`) or a closure that carries what
    /// the answer needs, such as a request id.
    ///
    /// An `Err` means the request was not sent (`on_reply` never runs):
    /// [`AskError::ZeroTimeout`], [`AskError::TimersFull`], or the target's
    /// [`AskError::Full`] / [`AskError::NoProc`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::{Actor, ActorError, ActorRef, AskError, Context, ReplyTo, Runtime};
    ///
    /// struct Doubler;
    /// impl Actor for Doubler {
    ///     type Msg = (u64, ReplyTo<u64>);
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, (n, reply): Self::Msg) -> Result<(), ActorError> {
    ///         reply.reply(2 * n);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// enum Msg { Go(u64, ReplyTo<(u64, u64)>), Doubled(u64, Result<u64, AskError>, ReplyTo<(u64, u64)>) }
    ///
    /// struct Client { doubler: ActorRef<(u64, ReplyTo<u64>)> }
    /// impl Actor for Client {
    ///     type Msg = Msg;
    ///     fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
    ///         match msg {
    ///             // The closure carries the request id and the outer ReplyTo.
    ///             Msg::Go(id, caller) => ctx.ask(
    ///                 &self.doubler,
    ///                 |reply| (id * 10, reply),
    ///                 Duration::from_secs(5),
    ///                 move |answer| Msg::Doubled(id, answer, caller),
    ///             )?,
    ///             Msg::Doubled(id, answer, caller) => {
    ///                 caller.reply((id, answer?));
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let doubler = rt.spawn(Doubler).unwrap();
    /// let client = rt.spawn(Client { doubler }).unwrap();
    /// let answer = rt.call(&client, |reply| Msg::Go(7, reply), Duration::from_secs(5));
    /// assert_eq!(answer, Ok((7, 140)));
    /// rt.shutdown();
    /// ```
    pub fn ask<N, R>(
        &mut self,
        target: &ActorRef<N>,
        request: impl FnOnce(ReplyTo<R>) -> N,
        timeout: Duration,
        on_reply: impl FnOnce(Result<R, AskError>) -> A::Msg + Send + 'static,
    ) -> Result<(), AskError>
    where
        N: Send + 'static,
        R: Send + 'static,
    {
        if timeout.is_zero() {
            return Err(AskError::ZeroTimeout);
        }
        let sink = Arc::new(ActorSink::new(self.myself(), on_reply));
        let action = TimerAction::AskTimeout(sink.clone());
        let key = self.shard.add_timer(timeout, action).map_err(|_| AskError::TimersFull)?;
        sink.set_timer((self.shard.index(), key));
        match target.try_send(request(ReplyTo::new(sink.clone(), Some(target.id())))) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The request never reached the target: settle the ask so
                // neither the timer nor a dropped ReplyTo delivers anything.
                sink.settle();
                Err(if e.is_full() { AskError::Full } else { AskError::NoProc })
            }
        }
    }

    /// Sends `msg` to `target` after `delay` (rounded up to the timer tick),
    /// unless the returned [`TimerRef`] is cancelled first. The message goes
    /// to the target's user lane; if that is full or the target is dead when
    /// the timer fires, the message is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
    ///
    /// enum Msg { Start(ReplyTo<&'static str>), Ring(ReplyTo<&'static str>) }
    ///
    /// struct Alarm;
    /// impl Actor for Alarm {
    ///     type Msg = Msg;
    ///     fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
    ///         match msg {
    ///             // A ReplyTo is not Clone, and need not be: the timer sends it once.
    ///             Msg::Start(reply) => {
    ///                 ctx.send_after(&ctx.myself(), Msg::Ring(reply), Duration::from_millis(5))?;
    ///             }
    ///             Msg::Ring(reply) => {
    ///                 reply.reply("ring");
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let alarm = rt.spawn(Alarm).unwrap();
    /// assert_eq!(rt.call(&alarm, Msg::Start, Duration::from_secs(5)), Ok("ring"));
    /// rt.shutdown();
    /// ```
    pub fn send_after<N: Send + 'static>(
        &mut self,
        target: &ActorRef<N>,
        msg: N,
        delay: Duration,
    ) -> Result<TimerRef, RuntimeError> {
        let target = target.clone();
        let fire = move || target.try_send(msg).map_err(drop);
        self.set_timer(delay, |cancelled| TimerAction::once(cancelled, fire))
    }

    /// Sends `target` the message `make` builds, every `period`, until the
    /// returned [`TimerRef`] is cancelled or the target dies. `make` runs on
    /// this shard each time the timer fires, so the message type need not be
    /// `Clone` (`|| Msg::Tick` for a plain tick, `move || msg.clone()` to
    /// repeat a value). A tick that finds the target's user lane full is
    /// dropped and the interval goes on; a shard that falls a whole period
    /// behind skips the missed ticks rather than bursting.
    ///
    /// A zero `period` is refused with [`RuntimeError::Config`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::actor::TimerRef;
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
    ///
    /// enum Msg { Tick, WhenThree(ReplyTo<u32>) }
    ///
    /// #[derive(Default)]
    /// struct Metronome { ticks: u32, timer: Option<TimerRef>, waiting: Option<ReplyTo<u32>> }
    /// impl Actor for Metronome {
    ///     type Msg = Msg;
    ///     fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
    ///         let me = ctx.myself();
    ///         self.timer = Some(ctx.send_interval(&me, || Msg::Tick, Duration::from_millis(1))?);
    ///         Ok(())
    ///     }
    ///     fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
    ///         match msg {
    ///             Msg::Tick => self.ticks += 1,
    ///             Msg::WhenThree(reply) => self.waiting = Some(reply),
    ///         }
    ///         if self.ticks >= 3 {
    ///             if let Some(reply) = self.waiting.take() {
    ///                 if let Some(timer) = self.timer.take() {
    ///                     ctx.cancel_timer(&timer);
    ///                 }
    ///                 reply.reply(self.ticks);
    ///             }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let metronome = rt.spawn(Metronome::default()).unwrap();
    /// let ticks = rt.call(&metronome, Msg::WhenThree, Duration::from_secs(5)).unwrap();
    /// assert!(ticks >= 3);
    /// rt.shutdown();
    /// ```
    pub fn send_interval<N: Send + 'static>(
        &mut self,
        target: &ActorRef<N>,
        mut make: impl FnMut() -> N + Send + 'static,
        period: Duration,
    ) -> Result<TimerRef, RuntimeError> {
        if period.is_zero() {
            return Err(RuntimeError::Config("send_interval needs a non-zero period".into()));
        }
        let target = target.clone();
        let fire = move || match target.try_send(make()) {
            Err(SendError::NoProc(_)) => Err(()),
            _ => Ok(()),
        };
        self.set_timer(period, |cancelled| TimerAction::every(cancelled, period, fire))
    }

    /// Cancels a timer; see [`TimerRef::cancel`]. On the shard that set it
    /// (always, for an actor that is pinned or not stolen since), its wheel
    /// entry is freed now, so cancelled timers never crowd the wheel.
    pub fn cancel_timer(&mut self, timer: &TimerRef) -> bool {
        self.forget_timer(timer.entry);
        timer.cancel()
    }

    /// Frees a timer's wheel entry if this shard holds it (an ask's timeout
    /// once its answer is here); elsewhere it fires into a settled ask.
    pub(crate) fn forget_timer(&mut self, (shard, key): TimerEntry) {
        if shard == self.shard.index() {
            self.shard.remove_timer(key);
        }
    }

    /// A message buffer of `len` bytes from this shard's memory pools
    /// (contents unspecified): fill it, `freeze` it into a `SharedBuf` to
    /// share it, and send either to any actor without copying a byte; it
    /// goes home to this shard's pool when its last handle drops, wherever
    /// that is. A full size class is `PoolExhausted`, never a heap
    /// allocation.
    ///
    /// # Errors
    ///
    /// [`AllocError::BufferTooLarge`](zbmd_alloc::AllocError::BufferTooLarge)
    /// beyond the largest class, `PoolExhausted` when its class is full.
    pub fn alloc_buf(
        &mut self,
        len: usize,
    ) -> Result<zbmd_alloc::PooledBuf, zbmd_alloc::AllocError> {
        self.shard.pools().alloc_buf(len)
    }

    /// Sets a timer on this shard and makes its [`TimerRef`].
    fn set_timer(
        &mut self,
        delay: Duration,
        action: impl FnOnce(Arc<AtomicBool>) -> TimerAction,
    ) -> Result<TimerRef, RuntimeError> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let key = self.shard.add_timer(delay, action(cancelled.clone()))?;
        Ok(TimerRef { cancelled, entry: (self.shard.index(), key) })
    }

    /// Runs `job` on the runtime's blocking threads (for work with no
    /// asynchronous form: a synchronous device wait, a foreign call) and
    /// delivers its result to this actor as the message `on_done` makes
    /// (a variant constructor, or a closure carrying what the result needs).
    pub fn spawn_blocking<R: Send + 'static>(
        &mut self,
        job: impl FnOnce() -> R + Send + 'static,
        on_done: impl FnOnce(R) -> A::Msg + Send + 'static,
    ) -> Result<(), RuntimeError> {
        let me = self.myself();
        self.shard.sched().blocking().submit(Box::new(move || {
            let msg = on_done(job());
            // Results travel in the system lane so a full user lane cannot
            // lose them; a dead actor's result is counted as a dead letter.
            if me.shared.push_signal(Signal::Reply(msg)).is_err() {
                me.shared.header.sched.count_reply_dropped();
            }
        }))
    }

    /// Starts an I/O operation on this shard (see [`crate::io`]) and
    /// delivers its result to this actor as the message `on_done` makes,
    /// through the system lane, like a blocking job's result. An error means
    /// the operation did not start: the shard's in-flight limit is reached
    /// ([`IoError::QueueFull`]), or the operation is invalid as given.
    ///
    /// Each result waits in the system lane until handled, so keep fewer
    /// operations in flight per actor than its system capacity (128 by
    /// default): a result that finds the lane full is dropped and counted.
    pub fn io(
        &mut self,
        op: IoOp,
        on_done: impl FnOnce(IoResult) -> A::Msg + Send + 'static,
    ) -> Result<(), IoError> {
        let me = self.myself();
        let done: Completion = Box::new(move |result| {
            let msg = on_done(result);
            // A dead actor's result is counted as a dropped reply.
            if me.shared.push_signal(Signal::Reply(msg)).is_err() {
                me.shared.header.sched.count_reply_dropped();
            }
        });
        self.shard.io().submit(op, done).map_err(|(error, _)| error)
    }

    /// Sends `target` an exit signal from this actor after `delay`, even if
    /// this actor is gone by then (a supervisor's kill after a shutdown
    /// timeout). The returned ref cancels it.
    pub(crate) fn exit_after(
        &mut self,
        target: &Pid,
        reason: ExitReason,
        delay: Duration,
    ) -> Result<TimerRef, RuntimeError> {
        let (from, target) = (self.id(), target.clone());
        let fire = move || {
            let signal = SysSignal::Exit { from, reason, direct: true };
            target.target.send_sys(signal).map_err(drop)
        };
        self.set_timer(delay, |cancelled| TimerAction::once(cancelled, fire))
    }

    /// Delivers `msg` to this actor after `delay` through its system lane,
    /// as replies travel, so a full user lane cannot lose it (the state
    /// machine's timeouts, `crate::behaviour`). A message for a dead actor
    /// is dropped; one that finds the system lane full is counted there.
    pub(crate) fn signal_after(
        &mut self,
        msg: A::Msg,
        delay: Duration,
    ) -> Result<TimerRef, RuntimeError> {
        let me = self.myself();
        let fire = move || {
            let _ = me.shared.push_signal(Signal::Reply(msg));
            Ok(())
        };
        self.set_timer(delay, |cancelled| TimerAction::once(cancelled, fire))
    }

    /// Queues `msg` for this actor in its system lane, behind what is
    /// already there (a supervisor's "go on after the others"). False if
    /// the lane is full.
    pub(crate) fn signal_now(&mut self, msg: A::Msg) -> bool {
        self.shared.push_signal(Signal::Reply(msg)).is_ok()
    }

    /// Whether the runtime is shutting down (it accepts no new actors).
    pub(crate) fn runtime_stopping(&self) -> bool {
        !self.shard.sched().accepting.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a supervisor's restart of a child on this shard.
    pub(crate) fn count_restart(&self) {
        self.shard.sched().counters().add(crate::runtime::Metric::Restarts, 1);
    }

    /// Counts a supervisor giving up (restart intensity reached).
    pub(crate) fn count_escalation(&self) {
        self.shard.sched().counters().add(crate::runtime::Metric::Escalations, 1);
    }

    /// Delivers a signal to this actor's own system lane.
    fn signal_self(&mut self, signal: SysSignal) {
        if self.shared.push_signal(Signal::Sys(signal)).is_err() {
            tracing::error!(id = %self.id(), "system lane full: a signal to self was dropped");
        }
    }
}
