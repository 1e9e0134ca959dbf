//! [`RuntimeHandle`]: a cloneable handle on a running runtime, for code that
//! shares it (threads, an HTTP server's state, an actor that must end the
//! program), while one owner keeps the [`Runtime`] and joins it.
//!
//! Shutdown through a handle is a request, as OTP's `init:stop/0` is: it
//! returns at once (from any thread, a shard's included), refuses every new
//! actor from then on, and wakes the owner blocked in [`Runtime::join`],
//! which stops the actors and joins the threads. A runtime whose owner never
//! joins it stops when the owner calls [`Runtime::shutdown`] or drops it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Runtime, Scheduler, SpawnOptions, call_blocking, on_shard_thread};
use crate::actor::{Actor, ActorRef, ExitReason, Pid, ReplyTo};
use crate::error::{AskError, RuntimeError};

/// A cloneable handle on a [`Runtime`]: spawns, calls, registered names,
/// exit signals, and a shutdown request ([`shutdown`](Self::shutdown)).
///
/// It stays safe to use after the runtime has stopped: spawns answer
/// [`RuntimeError::ShuttingDown`], calls [`AskError::NoProc`] (every actor
/// is dead), [`whereis`](Self::whereis) `None`. It never panics for that,
/// but [`call`](Self::call) panics on a shard thread, as
/// [`Runtime::call`] does. A handle keeps the runtime's shared state (slot
/// tables and shard memory) alive until the last handle and actor
/// reference are gone, as an [`ActorRef`] does.
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime, RuntimeError};
///
/// struct Echo;
/// impl Actor for Echo {
///     type Msg = (u32, ReplyTo<u32>);
///     fn handle(&mut self, _: &mut Context<'_, Self>, (n, reply): Self::Msg) -> Result<(), ActorError> {
///         reply.reply(n);
///         Ok(())
///     }
/// }
///
/// let rt = Runtime::builder().shards(1).pin(false).build().unwrap();
/// let handle = rt.handle();
/// let worker = std::thread::spawn(move || {
///     let echo = handle.spawn(Echo).unwrap();
///     let answer = handle.call(&echo, |reply| (7, reply), Duration::from_secs(5));
///     handle.shutdown(); // asks the owner to stop the runtime
///     (answer, handle)
/// });
/// rt.join(); // returns once a handle asked for shutdown, with everything stopped
/// let (answer, handle) = worker.join().unwrap();
/// assert_eq!(answer, Ok(7));
/// assert!(matches!(handle.spawn(Echo), Err(RuntimeError::ShuttingDown)));
/// ```
#[derive(Clone)]
pub struct RuntimeHandle {
    sched: Arc<Scheduler>,
    request: Arc<ShutdownRequest>,
}

/// Whether shutdown was asked for, and the owner waiting for the request.
#[derive(Default)]
struct ShutdownRequest {
    requested: Mutex<bool>,
    asked: Condvar,
}

impl RuntimeHandle {
    pub(super) fn new(sched: Arc<Scheduler>) -> Self {
        RuntimeHandle { sched, request: Arc::default() }
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.sched.config.shards
    }

    /// Spawns an actor on the next shard, round robin (as
    /// [`Runtime::spawn`]).
    pub fn spawn<A: Actor>(&self, actor: A) -> Result<ActorRef<A::Msg>, RuntimeError> {
        self.sched.spawn(actor, SpawnOptions::default())
    }

    /// Spawns an actor with options (as [`Runtime::spawn_with`]; `link`
    /// is refused: there is no actor here to link to).
    pub fn spawn_with<A: Actor>(
        &self,
        actor: A,
        options: SpawnOptions,
    ) -> Result<ActorRef<A::Msg>, RuntimeError> {
        if options.link {
            return Err(RuntimeError::Config(
                "only an actor can spawn_link; there is no actor here".into(),
            ));
        }
        self.sched.spawn(actor, options)
    }

    /// Sends a request and blocks this thread until the reply or `timeout`
    /// (as [`Runtime::call`]).
    ///
    /// # Panics
    ///
    /// On a shard thread, where blocking would stall the shard; actors use
    /// [`Context::ask`](crate::actor::Context::ask).
    pub fn call<M, R>(
        &self,
        target: &ActorRef<M>,
        request: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        call_blocking(target, request, timeout)
    }

    /// Registers `name` for `pid` (as [`Runtime::register`]).
    pub fn register(&self, name: &str, pid: &Pid) -> Result<(), RuntimeError> {
        self.sched.registry().register(name, pid.clone())
    }

    /// Removes the name `pid` holds, if any.
    pub fn unregister(&self, pid: &Pid) -> bool {
        self.sched.registry().release(pid.id()).is_some()
    }

    /// Looks up a registered name.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.sched.registry().whereis(name)
    }

    /// Sends an exit signal to `target` from the runtime itself (as
    /// [`Runtime::exit`]).
    pub fn exit(&self, target: &Pid, reason: ExitReason) {
        self.sched.exit_from_runtime(target, reason);
    }

    /// Actors alive now.
    pub fn live_actors(&self) -> usize {
        self.sched.live_actors.load(Ordering::Acquire)
    }

    /// Asks the owner to stop the runtime, and returns at once (it never
    /// blocks, so an actor may call it). From now on no actor starts
    /// (spawns, here and in actors, answer [`RuntimeError::ShuttingDown`],
    /// and supervisors no longer restart children); the owner blocked in
    /// [`Runtime::join`] wakes and stops the live actors and the threads, as
    /// [`Runtime::shutdown`] does. Asking twice is asking once.
    pub fn shutdown(&self) {
        self.sched.accepting.store(false, Ordering::Release);
        let mut requested = lock(&self.request.requested);
        *requested = true;
        self.request.asked.notify_all();
    }

    /// Whether the runtime refuses new actors: a shutdown was asked for
    /// through a handle, or the owner is stopping or has stopped it.
    pub fn is_shutting_down(&self) -> bool {
        !self.sched.accepting.load(Ordering::Acquire)
    }
}

impl AsRef<RuntimeHandle> for RuntimeHandle {
    fn as_ref(&self) -> &RuntimeHandle {
        self
    }
}

impl AsRef<RuntimeHandle> for Runtime {
    fn as_ref(&self) -> &RuntimeHandle {
        &self.handle
    }
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("shards", &self.shards())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl Runtime {
    /// A cloneable handle on this runtime, for code that shares it; see
    /// [`RuntimeHandle`].
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Blocks until a [`RuntimeHandle::shutdown`] request (made before or
    /// during this call), then stops the runtime as
    /// [`shutdown`](Self::shutdown) does. With no handle left to ask, it
    /// waits for good: keep one, or call `shutdown` instead.
    ///
    /// # Panics
    ///
    /// On a shard thread, which cannot wait for its own shard to stop.
    pub fn join(self) {
        assert!(!on_shard_thread(), "Runtime::join must not run on a shard thread");
        let request = &self.handle.request;
        let requested = lock(&request.requested);
        let requested = request
            .asked
            .wait_while(requested, |requested| !*requested)
            .unwrap_or_else(|poison| poison.into_inner());
        drop(requested);
        self.shutdown();
    }
}

/// Locks the request flag; a poisoned lock still holds a valid bool.
fn lock(flag: &Mutex<bool>) -> std::sync::MutexGuard<'_, bool> {
    flag.lock().unwrap_or_else(|poison| poison.into_inner())
}
