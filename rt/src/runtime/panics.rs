//! Handler panics, reported once through `tracing` instead of the panic hook.
//!
//! A panicking handler crashes its actor: the runtime catches the panic,
//! and the crash travels as the exit reason (`panicked: <message>`) to the
//! actor's links, monitors and supervisor, and into the `actor crashed`
//! warning. Rust calls the process's panic hook before the runtime catches
//! anything, though, and the default hook prints every such panic to stderr
//! (with a backtrace under `RUST_BACKTRACE=1`): a supervised worker pool
//! that restarts a crashing child prints a report per crash to a stream the
//! application's log subscriber never sees.
//!
//! With [`HandlerPanics::Tracing`] (the default), the first runtime built
//! wraps the process's panic hook once. The wrapper asks two questions of
//! the panicking thread: is it a shard of a runtime that routes handler
//! panics to `tracing`, and is it inside a call the runtime catches (an
//! actor's hook or handler, a supervisor's child factory)? When both hold,
//! it emits one `tracing` warning (target `zbmd_rt::panic`) with the
//! message, the location and, when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE`
//! asks for one, the backtrace; otherwise it calls the hook it wrapped.
//! Panics anywhere else, and a panic in the runtime's own code on a shard
//! thread (a bug, which kills the shard), reach the process's hook as
//! before.
//!
//! The panic hook is process-wide, so the wrapper has limits: a hook set
//! *after* the first runtime replaces the wrapper (handler panics then reach
//! that hook); a hook set *before* it is wrapped and no longer sees handler
//! panics of routing runtimes; a panic that the handler's own code catches
//! with `catch_unwind` is reported by the wrapper too. A runtime built with
//! [`HandlerPanics::PanicHook`] leaves every panic of its shards to the
//! process's hook (an error reporter that must see every panic wants that).

use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::PanicHookInfo;
use std::sync::Once;

/// How a runtime reports a panic in one of its actors' handlers
/// ([`RuntimeBuilder::handler_panics`](super::RuntimeBuilder::handler_panics)).
/// Either way the actor crashes with `panicked: <message>` as its reason;
/// this only chooses who else hears of the panic. See `docs/runtime.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandlerPanics {
    /// One `tracing` warning, target `zbmd_rt::panic`, with fields `panic`
    /// (the message), `location`, `thread` and, when `RUST_BACKTRACE` asks
    /// for one, `backtrace`; the process's panic hook is not called (the
    /// default).
    #[default]
    Tracing,
    /// The process's panic hook, as for any other panic (Rust's default
    /// hook prints the panic to stderr).
    PanicHook,
}

thread_local! {
    /// Whether this thread is a shard of a runtime whose handler panics go
    /// to `tracing` (set once, when the shard starts).
    static ROUTE_TO_TRACING: Cell<bool> = const { Cell::new(false) };
    /// How many runtime-caught calls this thread is inside (a handler can
    /// start a child synchronously, whose hook runs inside the handler).
    static CAUGHT_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Wraps the process's panic hook, once per process.
static INSTALL: Once = Once::new();

/// Marks the calling thread as inside a call whose panics the runtime
/// catches, until dropped. Not `Send`: it counts for the thread that made it.
pub(crate) struct CaughtCall {
    _this_thread: PhantomData<*const ()>,
}

impl CaughtCall {
    pub(crate) fn enter() -> CaughtCall {
        CAUGHT_DEPTH.with(|depth| depth.set(depth.get().saturating_add(1)));
        CaughtCall { _this_thread: PhantomData }
    }
}

impl Drop for CaughtCall {
    fn drop(&mut self) {
        CAUGHT_DEPTH.with(|depth| {
            debug_assert!(depth.get() > 0, "a caught call ended twice");
            depth.set(depth.get().saturating_sub(1));
        });
    }
}

/// Sets how the calling shard thread's handler panics are reported; called
/// once when the shard starts (for [`HandlerPanics::Tracing`], `build` has
/// wrapped the process's hook already: see [`install_hook`]).
pub(crate) fn route_this_thread(policy: HandlerPanics) {
    ROUTE_TO_TRACING.with(|route| route.set(policy == HandlerPanics::Tracing));
}

/// Wraps the process's panic hook, the first time a routing runtime is
/// built; later calls do nothing.
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if routed_here() {
                report(info);
            } else {
                previous(info);
            }
        }));
    });
}

/// Whether a panic on this thread, now, is a handler panic to route. A
/// thread-local that is gone (a panic during the thread's teardown) means
/// no.
fn routed_here() -> bool {
    let routed = ROUTE_TO_TRACING.try_with(Cell::get).unwrap_or(false);
    routed && CAUGHT_DEPTH.try_with(Cell::get).unwrap_or(0) > 0
}

/// The `tracing` report of one handler panic.
fn report(info: &PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with a non-string payload");
    let location = match info.location() {
        Some(location) => location.to_string(),
        None => "unknown".to_string(),
    };
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    // Honours RUST_BACKTRACE and RUST_LIB_BACKTRACE, as the default hook does.
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::warn!(target: "zbmd_rt::panic", panic = message, %location, thread, %backtrace, "a handler panicked; its actor crashes");
    } else {
        tracing::warn!(target: "zbmd_rt::panic", panic = message, %location, thread, "a handler panicked; its actor crashes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_caught_call_on_a_routing_thread_is_routed() {
        // A fresh thread, so that the test harness's thread is left alone.
        std::thread::spawn(|| {
            assert!(!routed_here());
            let call = CaughtCall::enter();
            assert!(!routed_here(), "not a routing shard");
            route_this_thread(HandlerPanics::Tracing);
            assert!(routed_here());
            let nested = CaughtCall::enter();
            drop(nested);
            assert!(routed_here(), "still inside the outer call");
            drop(call);
            assert!(!routed_here(), "outside every caught call");
            route_this_thread(HandlerPanics::PanicHook);
            let _call = CaughtCall::enter();
            assert!(!routed_here(), "a runtime that leaves panics to the hook");
        })
        .join()
        .unwrap();
    }
}
