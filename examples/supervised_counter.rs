//! Let it crash: a counter that crashes on every 20th message it handles,
//! under a supervisor that restarts it, and that keeps counting because
//! each incarnation resumes from the last count it committed.
//!
//! Run with `cargo run --example supervised_counter [messages]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{Actor, ActorError, AskError, Context, ReplyTo, Runtime};

/// Where the counter commits its count: the stand-in for a checkpoint that
/// outlives any one incarnation.
type Checkpoint = Arc<AtomicU64>;

struct Counter {
    checkpoint: Checkpoint,
    count: u64,
    /// Messages this incarnation has handled.
    handled: u64,
}

enum Msg {
    /// Adds, and answers the new count once it is committed.
    Add(u64, ReplyTo<u64>),
    Get(ReplyTo<u64>),
}

impl Actor for Counter {
    type Msg = Msg;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        self.count = self.checkpoint.load(Ordering::Acquire);
        println!("counter {} started at {}", ctx.id(), self.count);
        Ok(())
    }

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
        self.handled += 1;
        if self.handled % 20 == 0 {
            return Err(ActorError::msg(format!(
                "crash on message {} of this incarnation",
                self.handled
            )));
        }
        match msg {
            Msg::Add(n, reply) => {
                self.count += n;
                self.checkpoint.store(self.count, Ordering::Release);
                reply.reply(self.count);
            }
            Msg::Get(reply) => {
                reply.reply(self.count);
            }
        }
        Ok(())
    }
}

fn main() {
    let messages: u64 =
        std::env::args().nth(1).map_or(100, |n| n.parse().expect("a message count"));
    let rt = Runtime::builder().build().expect("runtime");
    let checkpoint = Checkpoint::default();
    let spec = {
        let checkpoint = checkpoint.clone();
        ChildSpec::worker("counter", move || Counter {
            checkpoint: checkpoint.clone(),
            count: 0,
            handled: 0,
        })
    };
    let counter = spec.child_ref();
    // Allow a restart every 20 messages, with room to spare.
    let tree = SupervisorSpec::one_for_one().intensity(1000, Duration::from_secs(1)).child(spec);
    let _supervisor = Supervisor::start(&rt, tree).expect("supervisor");

    // One call at a time, with no retry loop of our own: `ChildRef::call`
    // waits through the restart window, and resends a request that a dying
    // counter never handled (queued behind the crash) to the next
    // incarnation. Only the request that crashed the counter is lost, and
    // the caller hears so at once (`Dropped`: the handler had it).
    let timeout = Duration::from_secs(5);
    let (mut acknowledged, mut lost) = (0u64, 0u64);
    for _ in 0..messages {
        match counter.call(|reply| Msg::Add(1, reply), timeout) {
            Ok(_) => acknowledged += 1,
            Err(AskError::Dropped) => lost += 1,
            Err(error) => panic!("no answer from the counter: {error}"),
        }
    }
    let count = loop {
        match counter.call(Msg::Get, timeout) {
            Ok(count) => break count,
            // The Get was itself a 20th message, and crashed the counter.
            Err(AskError::Dropped) => lost += 1,
            Err(error) => panic!("no answer from the counter: {error}"),
        }
    };
    let metrics = rt.metrics();
    let (crashes, dead) = (metrics.total(Metric::Crashes), metrics.total(Metric::DeadLetters));
    println!(
        "sent {messages} increments: {acknowledged} acknowledged and counted ({count}); \
         {lost} requests lost, one per crash ({crashes}); {dead} requests were queued behind \
         a crash and resent to the next incarnation; {} restarts",
        metrics.total(Metric::Restarts),
    );
    assert_eq!(count, acknowledged, "every acknowledged increment is in the count");
    assert_eq!(lost, crashes, "only the request that crashed the counter is lost");
    rt.shutdown();
}
