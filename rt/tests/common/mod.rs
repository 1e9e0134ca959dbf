//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use zbmd_rt::{Actor, ActorError, ActorId, Context, Down, ExitReason, Runtime};

/// How long a test waits for an event that must come. Generous: the
/// machines are small and shared; a pass never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a test waits to be sure an event does *not* come.
pub const QUIET: Duration = Duration::from_millis(200);

/// A runtime for tests: unpinned (tests run side by side), small.
pub fn runtime(shards: usize) -> Runtime {
    Runtime::builder().shards(shards).pin(false).build().expect("test runtime")
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started(ActorId),
    Got(ActorId, u64),
    Exit { me: ActorId, from: ActorId, reason: ExitReason },
    Down { me: ActorId, down: Down },
    Stopping(ActorId, ExitReason),
}

/// An actor that reports everything that happens to it.
pub struct Probe {
    pub events: Sender<Event>,
    pub trap_exit: bool,
    /// A message with this value makes the handler fail.
    pub crash_on: Option<u64>,
}

impl Probe {
    pub fn new(events: &Sender<Event>) -> Self {
        Probe { events: events.clone(), trap_exit: false, crash_on: None }
    }

    pub fn trapping(events: &Sender<Event>) -> Self {
        Probe { trap_exit: true, ..Probe::new(events) }
    }
}

impl Actor for Probe {
    type Msg = u64;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.trap_exit(self.trap_exit);
        let _ = self.events.send(Event::Started(ctx.id()));
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: u64) -> Result<(), ActorError> {
        if self.crash_on == Some(msg) {
            return Err(ActorError::msg(format!("told to crash on {msg}")));
        }
        let _ = self.events.send(Event::Got(ctx.id(), msg));
        Ok(())
    }

    fn handle_exit(
        &mut self,
        ctx: &mut Context<'_, Self>,
        from: ActorId,
        reason: ExitReason,
    ) -> Result<(), ActorError> {
        let _ = self.events.send(Event::Exit { me: ctx.id(), from, reason });
        Ok(())
    }

    fn handle_down(&mut self, ctx: &mut Context<'_, Self>, down: Down) -> Result<(), ActorError> {
        let _ = self.events.send(Event::Down { me: ctx.id(), down });
        Ok(())
    }

    fn stopping(&mut self, ctx: &mut Context<'_, Self>, reason: &ExitReason) {
        let _ = self.events.send(Event::Stopping(ctx.id(), reason.clone()));
    }
}

/// Events and the receiving end, for a test.
pub fn events() -> (Sender<Event>, Receiver<Event>) {
    channel()
}

/// The next event that `want` accepts, skipping others; panics after
/// [`PATIENCE`].
pub fn expect(rx: &Receiver<Event>, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) if want(&event) => return event,
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
            Err(RecvTimeoutError::Disconnected) => panic!("events closed waiting for {what}"),
        }
    }
}

/// Asserts that no event `unwanted` accepts arrives within [`QUIET`].
pub fn expect_none(rx: &Receiver<Event>, what: &str, unwanted: impl Fn(&Event) -> bool) {
    let deadline = std::time::Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) if unwanted(&event) => panic!("unexpected {what}: {event:?}"),
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// Waits until `done` holds, polling; panics after [`PATIENCE`].
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
