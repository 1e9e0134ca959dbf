//! The supervisor actor: OTP's `supervisor` behaviour.
//!
//! Everything a supervisor does that takes time (stopping children one by
//! one, each within its shutdown limit, waiting out a backoff) is a *job*:
//! the children to stop, newest first, then what to do once they are all
//! down (restart some, answer a request, exit). One job runs at a time;
//! exits of other children and requests that change the child table wait
//! in `deferred` and are handled in arrival order when it ends, as a
//! gen_server-based OTP supervisor would handle them after its blocking
//! callback returns. Read-only requests are answered at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::AnyChild;
use super::child_ref::ChildRef;
use super::client::{ChildCounts, ChildInfo, ChildKey, NewKind, SupervisorRef, SupervisorRequest};
use super::{
    ChildKind, ChildPlacement, DEFAULT_START_TIMEOUT, Restart, Shutdown, Strategy, SupervisorError,
    SupervisorSpec,
};
use crate::ReplyTo;
use crate::actor::{
    Actor, ActorError, ActorId, Context, Down, ExitReason, MonitorRef, Pid, ThreadSink, TimerRef,
};
use crate::error::StartError;
use crate::runtime::{RuntimeHandle, SpawnOptions};

/// Requests that change the child table and may wait for the current job;
/// more are refused with [`SupervisorError::Busy`]. (Exit signals always
/// wait: there is at most one per child incarnation.)
pub const MAX_DEFERRED_REQUESTS: usize = 256;

/// Restart times reserved up front (intensity + 1 of them, at most this
/// many): 64 KiB of `Instant`s.
const HISTORY_RESERVED: usize = 4096;

/// A supervisor's messages: [`SupervisorRequest`]s, and its own timers.
pub struct SupervisorMsg(pub(crate) Msg);

pub(crate) enum Msg {
    Request(SupervisorRequest),
    /// A child being stopped outlived its shutdown timeout.
    KillTimeout(ActorId),
    /// A job's wait (backoff, or a restart retry) is over.
    Resume(u64),
}

impl From<SupervisorRequest> for SupervisorMsg {
    fn from(request: SupervisorRequest) -> Self {
        SupervisorMsg(Msg::Request(request))
    }
}

/// The supervisor actor. Start one with [`Supervisor::start`] (a root,
/// from outside the runtime), [`SupervisorSpec::start_link`] (from an
/// actor) or as a child with [`ChildSpec::supervisor`](super::ChildSpec::supervisor).
pub struct Supervisor {
    strategy: Strategy,
    intensity: u32,
    period: Duration,
    backoff: Option<super::Backoff>,
    max_children: usize,
    placement: ChildPlacement,
    /// Children placed so far by [`ChildPlacement::RoundRobin`], modulo
    /// the number of shards.
    placed: usize,
    template: Option<AnyChild>,
    children: Vec<Child>,
    /// Restart times within the current period, oldest first.
    restarts: VecDeque<Instant>,
    job: Option<Job>,
    deferred: VecDeque<Deferred>,
    /// Who started it (its first link at start), or none for a root, whose
    /// parent is the runtime itself.
    parent: Option<ActorId>,
    start_reply: Option<ReplyTo<Result<(), SupervisorError>>>,
    next_key: u64,
    next_epoch: u64,
}

struct Child {
    /// Unique within the supervisor (dynamic children share their id).
    key: u64,
    spec: AnyChild,
    pid: Option<Pid>,
    /// The shard offered to every incarnation (set at its first start by
    /// [`ChildPlacement::RoundRobin`]; `None`: the supervisor's shard).
    shard: Option<usize>,
}

enum Deferred {
    Exit(ActorId, ExitReason),
    Request(SupervisorRequest),
}

/// A multi-step operation: stop `victims` (the last one first), wait
/// `delay` if set, then do `then`.
struct Job {
    victims: Vec<u64>,
    stopping: Option<Stopping>,
    delay: Option<Duration>,
    /// Set while a `Resume` with this epoch is awaited.
    waiting: Option<u64>,
    then: Then,
}

struct Stopping {
    key: u64,
    pid: Pid,
    monitor: MonitorRef,
    kill_timer: Option<TimerRef>,
}

enum Then {
    /// Start these children again (keys in start order).
    Restart(Vec<u64>),
    /// Answer a terminate_child request.
    Reply(ReplyTo<Result<(), SupervisorError>>),
    /// Stop the supervisor with this reason.
    Exit(ExitReason),
}

impl Job {
    fn new(victims: Vec<u64>, then: Then) -> Self {
        Job { victims, stopping: None, delay: None, waiting: None, then }
    }
}

impl Supervisor {
    /// A supervisor that will run `spec` once spawned.
    pub fn new(spec: SupervisorSpec) -> Self {
        let mut next_key = 0;
        let children = spec
            .children
            .into_iter()
            .map(|spec| {
                next_key += 1;
                Child { key: next_key, spec, pid: None, shard: None }
            })
            .collect();
        Supervisor {
            strategy: spec.strategy,
            intensity: spec.intensity,
            period: spec.period,
            backoff: spec.backoff,
            max_children: spec.max_children,
            placement: spec.placement,
            placed: 0,
            template: spec.template,
            children,
            // Reserved now so that restarts allocate nothing; only an
            // intensity above the cap lets the history grow later.
            restarts: VecDeque::with_capacity((spec.intensity as usize + 1).min(HISTORY_RESERVED)),
            job: None,
            deferred: VecDeque::new(),
            parent: None,
            start_reply: None,
            next_key,
            next_epoch: 0,
        }
    }

    /// Starts a root supervisor from a thread outside the runtime and waits
    /// until every child has started ([`DEFAULT_START_TIMEOUT`] at most).
    /// A child that fails to start fails the whole start: the children
    /// already started are stopped, newest first, and the error names the
    /// child and its reason.
    ///
    /// `rt` is the [`Runtime`](crate::Runtime) or any of its
    /// [`RuntimeHandle`]s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use zbmd_rt::supervisor::{ChildSpec, Supervisor, SupervisorSpec};
    /// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};
    ///
    /// struct Greeter;
    /// impl Actor for Greeter {
    ///     type Msg = (String, ReplyTo<String>);
    ///     fn handle(&mut self, _: &mut Context<'_, Self>, (name, reply): Self::Msg) -> Result<(), ActorError> {
    ///         reply.reply(format!("hello, {name}"));
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
    /// let greeter = ChildSpec::worker("greeter", || Greeter);
    /// let handle = greeter.child_ref(); // follows the child across restarts
    /// let tree = SupervisorSpec::one_for_one().intensity(3, Duration::from_secs(5)).child(greeter);
    /// let sup = Supervisor::start(&rt, tree).unwrap();
    /// let t = Duration::from_secs(5);
    /// assert_eq!(handle.call(|reply| ("zbmd".to_string(), reply), t), Ok("hello, zbmd".to_string()));
    /// assert_eq!(sup.count_children(t).unwrap().active, 1);
    /// rt.shutdown();
    /// ```
    pub fn start(
        rt: &impl AsRef<RuntimeHandle>,
        spec: SupervisorSpec,
    ) -> Result<SupervisorRef, SupervisorError> {
        Self::start_timeout(rt, spec, DEFAULT_START_TIMEOUT)
    }

    /// [`start`](Self::start) with a chosen wait.
    pub fn start_timeout(
        rt: &impl AsRef<RuntimeHandle>,
        spec: SupervisorSpec,
        timeout: Duration,
    ) -> Result<SupervisorRef, SupervisorError> {
        let rt = rt.as_ref();
        spec.validate()?;
        let spec_options = spec.options.clone();
        let sink = Arc::new(ThreadSink::new());
        let mut supervisor = Supervisor::new(spec);
        supervisor.start_reply = Some(ReplyTo::new(sink.clone(), None));
        let options = supervisor_options(&spec_options);
        let actor =
            rt.spawn_with(supervisor, options).map_err(|error| SupervisorError::StartFailed {
                id: "<supervisor>".into(),
                reason: ExitReason::error(error),
            })?;
        sink.wait(timeout)??;
        Ok(SupervisorRef::new(ChildRef::bound("<supervisor>", &actor)))
    }

    fn position(&self, key: u64) -> Option<usize> {
        self.children.iter().position(|c| c.key == key)
    }

    fn position_of_actor(&self, actor: ActorId) -> Option<usize> {
        self.children.iter().position(|c| c.pid.as_ref().is_some_and(|p| p.id() == actor))
    }

    fn position_of(&self, key: &ChildKey) -> Option<usize> {
        match key {
            ChildKey::Id(id) if self.strategy != Strategy::SimpleOneForOne => {
                self.children.iter().position(|c| c.spec.id == *id)
            }
            ChildKey::Id(_) => None,
            ChildKey::Actor(actor) => self.position_of_actor(*actor),
        }
    }

    /// Keys of the running children from `from` on, in start order.
    fn running_from(&self, from: usize) -> Vec<u64> {
        self.children[from..].iter().filter(|c| c.pid.is_some()).map(|c| c.key).collect()
    }

    /// Starts one child (by index) and records its pid.
    fn start_child(
        &mut self,
        ctx: &mut Context<'_, Self>,
        index: usize,
    ) -> Result<Pid, SupervisorError> {
        let child = &mut self.children[index];
        if child.shard.is_none() && self.placement == ChildPlacement::RoundRobin {
            // A supervisor is pinned, so `ctx.shard()` is its home shard.
            let shards = ctx.shards();
            child.shard = Some((ctx.shard() + self.placed) % shards);
            // Kept below `shards`, so the sum above cannot overflow.
            self.placed = (self.placed + 1) % shards;
        }
        match child.spec.start.start(ctx, child.shard) {
            Ok(pid) => {
                child.pid = Some(pid.clone());
                Ok(pid)
            }
            Err(error) => {
                let reason = error.reason();
                tracing::error!(supervisor = %ctx.id(), child = &*child.spec.id, %reason, "child failed to start");
                Err(SupervisorError::StartFailed { id: child.spec.id.to_string(), reason })
            }
        }
    }

    /// Records a restart; false when it is one too many for the period.
    fn note_restart(&mut self, now: Instant) -> bool {
        while self.restarts.front().is_some_and(|&t| now.duration_since(t) > self.period) {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity as usize
    }

    /// Intensity exceeded: stop every child, newest first, then exit with
    /// `shutdown` so the parent decides.
    fn escalate(&mut self, ctx: &mut Context<'_, Self>) {
        tracing::error!(
            supervisor = %ctx.id(),
            intensity = self.intensity,
            period_ms = self.period.as_millis() as u64,
            "reached maximum restart intensity; stopping all children and exiting with shutdown"
        );
        ctx.count_escalation();
        for child in &self.children {
            child.spec.start.retire(); // callers waiting for a restart stop waiting
        }
        let victims = self.running_from(0);
        self.run(ctx, Job::new(victims, Then::Exit(ExitReason::Shutdown)));
    }

    /// A child's incarnation exited on its own (or was killed by someone
    /// else): OTP's restart decision.
    fn child_exited(&mut self, ctx: &mut Context<'_, Self>, index: usize, reason: ExitReason) {
        let child = &mut self.children[index];
        child.pid = None;
        child.spec.start.unbind();
        let (key, restart) = (child.key, child.spec.restart);
        // The runtime is stopping every actor, children first: restarting
        // them would only fight it.
        if !restart.restarts_after(&reason) || ctx.runtime_stopping() {
            self.children[index].spec.start.retire(); // its callers stop waiting
            if restart == Restart::Temporary || self.strategy == Strategy::SimpleOneForOne {
                self.children.remove(index);
            }
            return;
        }
        if !self.note_restart(Instant::now()) {
            return self.escalate(ctx);
        }
        let (victims, restart) = match self.strategy {
            Strategy::OneForOne | Strategy::SimpleOneForOne => (Vec::new(), vec![key]),
            Strategy::OneForAll => (self.running_from(0), self.restartable_from(0)),
            Strategy::RestForOne => (self.running_from(index), self.restartable_from(index)),
        };
        let mut job = Job::new(victims, Then::Restart(restart));
        job.delay = self.backoff.map(|b| b.delay(self.restarts.len() as u32));
        self.run(ctx, job);
    }

    /// Keys of the children from `from` on that a sibling's restart brings
    /// back: all but temporary ones.
    fn restartable_from(&self, from: usize) -> Vec<u64> {
        self.children[from..]
            .iter()
            .filter(|c| c.spec.restart != Restart::Temporary)
            .map(|c| c.key)
            .collect()
    }

    /// Starts `job`, or queues nothing: the caller made sure none runs.
    fn run(&mut self, ctx: &mut Context<'_, Self>, job: Job) {
        debug_assert!(self.job.is_none(), "one job at a time");
        self.job = Some(job);
        self.advance(ctx);
    }

    /// Moves the current job on until it waits for something or ends; then
    /// handles deferred events until one of them starts another job.
    fn advance(&mut self, ctx: &mut Context<'_, Self>) {
        loop {
            let Some(job) = self.job.as_mut() else {
                match self.deferred.pop_front() {
                    Some(Deferred::Exit(from, reason)) => self.exited(ctx, from, reason),
                    Some(Deferred::Request(request)) => self.request(ctx, request),
                    None => return,
                }
                continue;
            };
            if job.stopping.is_some() || job.waiting.is_some() {
                return;
            }
            if let Some(key) = job.victims.pop() {
                let stopping = self.stop(ctx, key);
                // The borrow of `job` ended with the call above.
                if let Some(job) = self.job.as_mut() {
                    job.stopping = stopping;
                }
                continue;
            }
            if let Some(delay) = job.delay.take().filter(|d| !d.is_zero()) {
                self.wait(ctx, Some(delay));
                continue;
            }
            let Some(job) = self.job.take() else { return };
            match job.then {
                Then::Restart(keys) => self.restart(ctx, keys),
                Then::Reply(reply) => {
                    reply.reply(Ok(()));
                }
                Then::Exit(reason) => {
                    ctx.stop(reason);
                    return;
                }
            }
        }
    }

    /// Parks the current job until a `Resume`: after `delay`, or as soon as
    /// the signals already waiting are handled. Its own timers travel in the
    /// system lane, so a flood of requests cannot hold them up or lose them.
    fn wait(&mut self, ctx: &mut Context<'_, Self>, delay: Option<Duration>) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let resume = SupervisorMsg(Msg::Resume(epoch));
        let parked = match delay {
            Some(delay) => ctx.signal_after(resume, delay).is_ok(),
            None => ctx.signal_now(resume),
        };
        if let Some(job) = self.job.as_mut() {
            // With no timer and a full mailbox, go on at once rather than
            // never: the wait only spaces restarts out.
            job.waiting = parked.then_some(epoch);
        }
    }

    /// Begins stopping the child `key` by its shutdown spec (OTP's
    /// `shutdown/2`): unlink, monitor, exit signal, and the kill timer.
    fn stop(&mut self, ctx: &mut Context<'_, Self>, key: u64) -> Option<Stopping> {
        let index = self.position(key)?;
        let child = &self.children[index];
        let pid = child.pid.clone()?;
        ctx.unlink(&pid);
        let monitor = ctx.monitor(&pid);
        let mut kill_timer = None;
        match child.spec.shutdown {
            Shutdown::BrutalKill => ctx.exit(&pid, ExitReason::Kill),
            Shutdown::Infinity => ctx.exit(&pid, ExitReason::Shutdown),
            Shutdown::Timeout(limit) => {
                ctx.exit(&pid, ExitReason::Shutdown);
                match ctx.signal_after(SupervisorMsg(Msg::KillTimeout(pid.id())), limit) {
                    Ok(timer) => kill_timer = Some(timer),
                    Err(error) => {
                        tracing::warn!(%error, child = %pid.id(), "no timer for the shutdown limit: killing at once");
                        ctx.exit(&pid, ExitReason::Kill);
                    }
                }
            }
        }
        Some(Stopping { key, pid, monitor, kill_timer })
    }

    /// Stops children at once, without waiting (a failed start): exit
    /// signals now, the kill after each one's shutdown limit from a timer
    /// that outlives this supervisor.
    fn stop_without_waiting(&mut self, ctx: &mut Context<'_, Self>) {
        for child in self.children.iter_mut().rev() {
            let Some(pid) = child.pid.take() else { continue };
            child.spec.start.unbind();
            ctx.unlink(&pid);
            match child.spec.shutdown {
                Shutdown::BrutalKill => ctx.exit(&pid, ExitReason::Kill),
                Shutdown::Infinity => ctx.exit(&pid, ExitReason::Shutdown),
                Shutdown::Timeout(limit) => {
                    ctx.exit(&pid, ExitReason::Shutdown);
                    if ctx.exit_after(&pid, ExitReason::Kill, limit).is_err() {
                        ctx.exit(&pid, ExitReason::Kill);
                    }
                }
            }
        }
    }

    /// A child being stopped is down.
    fn stopped(&mut self, ctx: &mut Context<'_, Self>, down: &Down) {
        let Some(job) = self.job.as_mut() else { return };
        if job.stopping.as_ref().is_none_or(|s| s.monitor != down.monitor) {
            return;
        }
        let Some(stopping) = job.stopping.take() else { return };
        if let Some(timer) = stopping.kill_timer {
            ctx.cancel_timer(&timer);
        }
        if let Some(index) = self.position(stopping.key) {
            let child = &mut self.children[index];
            child.pid = None;
            child.spec.start.unbind();
            if child.spec.restart == Restart::Temporary
                || self.strategy == Strategy::SimpleOneForOne
            {
                self.children[index].spec.start.retire();
                self.children.remove(index);
            }
        }
        tracing::debug!(supervisor = %ctx.id(), child = %down.actor, reason = %down.reason, "child stopped");
        self.advance(ctx);
    }

    /// Starts `keys` again, in order. A start that fails counts as one
    /// more restart and is retried after the other messages waiting (OTP's
    /// `try_again_restart`); too many, and the supervisor gives up.
    fn restart(&mut self, ctx: &mut Context<'_, Self>, keys: Vec<u64>) {
        for (i, &key) in keys.iter().enumerate() {
            let Some(index) = self.position(key) else { continue };
            if self.children[index].pid.is_some() {
                continue;
            }
            if self.start_child(ctx, index).is_ok() {
                ctx.count_restart();
                continue;
            }
            if !self.note_restart(Instant::now()) {
                return self.escalate(ctx);
            }
            self.job = Some(Job::new(Vec::new(), Then::Restart(keys[i..].to_vec())));
            let delay = self.backoff.map(|b| b.delay(self.restarts.len() as u32));
            return self.wait(ctx, delay);
        }
    }

    /// An exit signal arrived (when no job runs).
    fn exited(&mut self, ctx: &mut Context<'_, Self>, from: ActorId, reason: ExitReason) {
        let from_runtime = from.shard == u16::MAX;
        if Some(from) == self.parent || from_runtime {
            // The parent, or the runtime on an operator's behalf
            // (`Runtime::exit`, `SupervisorRef::exit`), stops us: children
            // first, newest first, then ourselves with the same reason.
            let victims = self.running_from(0);
            return self.run(ctx, Job::new(victims, Then::Exit(reason)));
        }
        match self.position_of_actor(from) {
            Some(index) => self.child_exited(ctx, index, reason),
            None => {
                tracing::debug!(supervisor = %ctx.id(), %from, %reason, "exit from an actor that is not a child: ignored")
            }
        }
    }

    /// Keeps a request for when the current job ends, or refuses it with
    /// `Busy` when [`MAX_DEFERRED_REQUESTS`] already wait.
    fn defer(&mut self, request: SupervisorRequest) {
        let waiting = self.deferred.iter().filter(|d| matches!(d, Deferred::Request(_))).count();
        if waiting < MAX_DEFERRED_REQUESTS {
            return self.deferred.push_back(Deferred::Request(request));
        }
        let busy = SupervisorError::Busy { waiting };
        match request {
            SupervisorRequest::TerminateChild(_, reply)
            | SupervisorRequest::DeleteChild(_, reply) => {
                reply.reply(Err(busy));
            }
            SupervisorRequest::RestartChild(_, reply) | SupervisorRequest::StartChild(_, reply) => {
                reply.reply(Err(busy));
            }
            SupervisorRequest::WhichChildren(_) | SupervisorRequest::CountChildren(_) => {
                unreachable!("read-only requests are answered at once")
            }
        }
    }

    /// Answers a request (when no job runs, or at once for read-only ones).
    fn request(&mut self, ctx: &mut Context<'_, Self>, request: SupervisorRequest) {
        use SupervisorRequest as R;
        let simple = self.strategy == Strategy::SimpleOneForOne;
        match request {
            R::WhichChildren(reply) => {
                reply.reply(self.which_children());
            }
            R::CountChildren(reply) => {
                reply.reply(self.count_children());
            }
            R::TerminateChild(key, reply) => match self.position_of(&key) {
                None => {
                    reply.reply(Err(SupervisorError::NotFound(key.to_string())));
                }
                Some(index) if self.children[index].pid.is_none() => {
                    reply.reply(Ok(()));
                }
                Some(index) => {
                    let key = self.children[index].key;
                    self.children[index].spec.start.retire(); // until restart_child
                    self.run(ctx, Job::new(vec![key], Then::Reply(reply)));
                }
            },
            R::RestartChild(id, reply) => {
                let answer = match self.position_of(&ChildKey::Id(id.clone())) {
                    _ if simple => Err(SupervisorError::SimpleOneForOne("restart_child")),
                    None => Err(SupervisorError::NotFound(format!("{id:?}"))),
                    Some(index) if self.children[index].pid.is_some() => {
                        Err(SupervisorError::Running(id.to_string()))
                    }
                    Some(index) => self.start_child(ctx, index),
                };
                reply.reply(answer);
            }
            R::DeleteChild(id, reply) => {
                let answer = match self.position_of(&ChildKey::Id(id.clone())) {
                    _ if simple => Err(SupervisorError::SimpleOneForOne("delete_child")),
                    None => Err(SupervisorError::NotFound(format!("{id:?}"))),
                    Some(index) if self.children[index].pid.is_some() => {
                        Err(SupervisorError::Running(id.to_string()))
                    }
                    Some(index) => {
                        self.children.remove(index);
                        Ok(())
                    }
                };
                reply.reply(answer);
            }
            R::StartChild(new, reply) => {
                let answer = self.add_child(ctx, new.0);
                reply.reply(answer);
            }
        }
    }

    fn add_child(
        &mut self,
        ctx: &mut Context<'_, Self>,
        new: NewKind,
    ) -> Result<Pid, SupervisorError> {
        if self.children.len() >= self.max_children {
            return Err(SupervisorError::TooManyChildren { limit: self.max_children });
        }
        let spec = match (new, &self.template) {
            (NewKind::Dynamic(dynamic), Some(template)) => {
                let expected = template.start.actor_type();
                template
                    .start
                    .instance(dynamic)
                    .map_err(|given| SupervisorError::WrongChildType { expected, given })?
            }
            (NewKind::Dynamic(_), None) => return Err(SupervisorError::NotSimple),
            (NewKind::Static(_), Some(_)) => {
                return Err(SupervisorError::SimpleOneForOne("start_child with a spec"));
            }
            (NewKind::Static(spec), None) => {
                if self.children.iter().any(|c| c.spec.id == spec.id) {
                    return Err(SupervisorError::DuplicateChild(spec.id.to_string()));
                }
                spec
            }
        };
        self.next_key += 1;
        self.children.push(Child { key: self.next_key, spec, pid: None, shard: None });
        let index = self.children.len() - 1;
        self.start_child(ctx, index).inspect_err(|_| {
            self.children.pop();
        })
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|c| ChildInfo {
                id: c.spec.id.to_string(),
                pid: c.pid.clone(),
                kind: c.spec.kind,
                restart: c.spec.restart,
            })
            .collect()
    }

    fn count_children(&self) -> ChildCounts {
        let supervisors = self.children.iter().filter(|c| c.spec.kind == ChildKind::Supervisor);
        let supervisors = supervisors.count();
        ChildCounts {
            specs: self.children.len(),
            active: self.children.iter().filter(|c| c.pid.is_some()).count(),
            supervisors,
            workers: self.children.len() - supervisors,
        }
    }
}

/// How a supervisor is spawned: `options` (its spec's), pinned to the shard
/// it starts on, so its timers stay on one wheel and it is never stolen
/// from its children, and exempt from fault injection (its messages are the
/// tree's control traffic; a fault plan targets the workers).
pub(crate) fn supervisor_options(options: &SpawnOptions) -> SpawnOptions {
    SpawnOptions { pinned: true, fault_exempt: true, link: false, ..options.clone() }
}

impl SupervisorSpec {
    /// Starts this supervisor from an actor, linked to it, and returns once
    /// every child has started (OTP's `supervisor:start_link`). The caller
    /// becomes its parent: an exit signal from it stops the tree in order.
    pub fn start_link<A: Actor>(
        self,
        ctx: &mut Context<'_, A>,
    ) -> Result<SupervisorRef, StartError> {
        self.validate().map_err(|error| StartError::Init(ExitReason::error(error)))?;
        let options = supervisor_options(&self.options);
        let actor = ctx.start_link(Supervisor::new(self), options, None)?;
        Ok(SupervisorRef::new(ChildRef::bound("<supervisor>", &actor)))
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(true);
        self.parent = ctx.meta().links.first().map(Pid::id);
        let mut failure = None;
        for index in 0..self.children.len() {
            if let Err(error) = self.start_child(ctx, index) {
                failure = Some(error);
                break;
            }
        }
        let Some(error) = failure else {
            if let Some(reply) = self.start_reply.take() {
                reply.reply(Ok(()));
            }
            return Ok(());
        };
        self.stop_without_waiting(ctx);
        let reason = ExitReason::error(&error);
        if let Some(reply) = self.start_reply.take() {
            reply.reply(Err(error));
        }
        Err(ActorError::exit(reason))
    }

    fn handle(
        &mut self,
        ctx: &mut Context<'_, Self>,
        msg: SupervisorMsg,
    ) -> Result<(), ActorError> {
        match msg.0 {
            Msg::Request(request) => {
                let read_only = matches!(
                    request,
                    SupervisorRequest::WhichChildren(_) | SupervisorRequest::CountChildren(_)
                );
                if self.job.is_some() && !read_only {
                    self.defer(request);
                } else {
                    self.request(ctx, request);
                }
            }
            Msg::KillTimeout(actor) => {
                let stopping = self.job.as_ref().and_then(|job| job.stopping.as_ref());
                if let Some(stopping) = stopping.filter(|s| s.pid.id() == actor) {
                    tracing::warn!(supervisor = %ctx.id(), child = %actor, "child ignored shutdown past its limit: killing it");
                    let pid = stopping.pid.clone();
                    ctx.exit(&pid, ExitReason::Kill);
                }
            }
            Msg::Resume(epoch) => {
                if let Some(job) = self.job.as_mut().filter(|job| job.waiting == Some(epoch)) {
                    job.waiting = None;
                    self.advance(ctx);
                }
            }
        }
        Ok(())
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        if self.job.is_some() {
            self.deferred.push_back(Deferred::Exit(from, reason));
        } else {
            self.exited(ctx, from, reason);
        }
        Ok(())
    }

    fn handle_down(&mut self, ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        self.stopped(ctx, &down);
        Ok(())
    }

    /// Whatever stops it (it gave up, its parent or the runtime stopped it,
    /// a kill), it starts no child again: callers waiting for a child's next
    /// incarnation stop waiting. A restart of this supervisor by its parent
    /// binds the children again.
    fn stopping(&mut self, _: &mut Context<'_, Self>, _: &ExitReason) {
        for child in &self.children {
            child.spec.start.retire();
        }
    }

    fn name(&self) -> &'static str {
        "zbmd_rt::supervisor::Supervisor"
    }
}
