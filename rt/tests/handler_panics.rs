//! A handler's panic goes to `tracing`, not to the process's panic hook,
//! unless the runtime leaves it to the hook; every other panic reaches the
//! hook as before.
//!
//! One test, in a file of its own: the panic hook and the global `tracing`
//! subscriber are process-wide, and the test sets both.

use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use zbmd_rt::runtime::HandlerPanics;
use zbmd_rt::{Actor, ActorError, Context, Runtime};

/// How long the test waits for a report that must come.
const PATIENCE: Duration = Duration::from_secs(10);

/// Calls of the test's own panic hook (the one the runtime wraps).
static HOOK_CALLS: AtomicU64 = AtomicU64::new(0);

/// Where the hook and the subscriber report, for the test to wait on.
static HOOK_SEEN: Mutex<Option<Sender<String>>> = Mutex::new(None);
static EVENTS_SEEN: Mutex<Option<Sender<String>>> = Mutex::new(None);

fn send(to: &Mutex<Option<Sender<String>>>, what: String) {
    if let Some(tx) = to.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let _ = tx.send(what);
    }
}

/// A subscriber that forwards each event with target `zbmd_rt::panic` as
/// `field=value` text.
struct PanicEvents;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Subscriber for PanicEvents {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == "zbmd_rt::panic" {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            send(&EVENTS_SEEN, fields.0);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct Bomb;

impl Actor for Bomb {
    type Msg = &'static str;
    fn handle(&mut self, _: &mut Context<'_, Self>, msg: &'static str) -> Result<(), ActorError> {
        panic!("{msg}");
    }
}

fn runtime(panics: HandlerPanics) -> Runtime {
    Runtime::builder().embedded().handler_panics(panics).build().unwrap()
}

#[test]
fn handler_panics_go_to_tracing_and_every_other_panic_to_the_hook() {
    let (hook_tx, hook_seen): (_, Receiver<String>) = channel();
    let (event_tx, events): (_, Receiver<String>) = channel();
    *HOOK_SEEN.lock().unwrap() = Some(hook_tx);
    *EVENTS_SEEN.lock().unwrap() = Some(event_tx);
    tracing::subscriber::set_global_default(PanicEvents).unwrap();
    // The process's hook before any runtime exists: the first runtime wraps it.
    std::panic::set_hook(Box::new(|info| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        send(&HOOK_SEEN, info.to_string());
    }));

    // A routing runtime (the default): the handler's panic is one tracing
    // warning with its message and location; the hook is not called. The
    // wrapper decides before the panic unwinds, so once the event is here
    // the hook would have run already.
    let rt = runtime(HandlerPanics::default());
    let bomb = rt.spawn(Bomb).unwrap();
    bomb.try_send("boom in a handler").unwrap();
    let event = events.recv_timeout(PATIENCE).expect("the panic reported through tracing");
    assert!(event.contains("panic=boom in a handler"), "{event}");
    assert!(event.contains("location=") && event.contains("handler_panics.rs"), "{event}");
    assert!(event.contains("thread=zbmd-shard-0"), "{event}");
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 0, "the hook stayed quiet");

    // A panic outside any handler reaches the wrapped hook.
    let outside = std::thread::spawn(|| panic!("boom outside")).join();
    assert!(outside.is_err());
    let seen = hook_seen.recv_timeout(PATIENCE).unwrap();
    assert!(seen.contains("boom outside"), "{seen}");
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 1);

    // A runtime that leaves handler panics to the hook.
    let loud = runtime(HandlerPanics::PanicHook);
    loud.spawn(Bomb).unwrap().try_send("boom for the hook").unwrap();
    let seen = hook_seen.recv_timeout(PATIENCE).expect("the panic reached the hook");
    assert!(seen.contains("boom for the hook"), "{seen}");
    assert!(events.try_recv().is_err(), "and did not go to tracing");

    // The routing runtime still routes, side by side with the loud one.
    rt.spawn(Bomb).unwrap().try_send("boom again").unwrap();
    let event = events.recv_timeout(PATIENCE).unwrap();
    assert!(event.contains("panic=boom again"), "{event}");
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 2);
}
