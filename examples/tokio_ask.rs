//! Async callers: tokio tasks ask a supervised pool of zbmd actors for
//! replies, without blocking tokio's worker threads.
//!
//! `ActorRef::ask_async` / `ChildRef::ask_async` send a request and return
//! a `ReplyFuture`, which any executor can await. zbmd has no timer an
//! outside task can reach, so the task bounds its wait with its executor's
//! timer (`tokio::time::timeout`); dropping the future on timeout tells the
//! actor (its `reply` returns false). A request that must ride through a
//! worker's restart goes through the blocking `ChildRef::call` on tokio's
//! blocking pool (`spawn_blocking`), which waits for the next incarnation.
//!
//! Run with `cargo run -p zbmd-rt --example tokio_ask`.

use std::time::Duration;

use zbmd_rt::supervisor::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{Actor, ActorError, AskError, Context, ReplyTo, Runtime};

/// How many workers the pool holds.
const WORKERS: usize = 4;
/// How long a task waits for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Squares numbers; crashes on 13 (the poison request).
#[derive(Default)]
struct Squarer {
    /// The last `Ignore` request, held unanswered.
    ignored: Option<ReplyTo<u64>>,
}

enum Msg {
    Square(u64, ReplyTo<u64>),
    /// Never answered: shows the executor's timeout.
    Ignore(ReplyTo<u64>),
}

impl Actor for Squarer {
    type Msg = Msg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Square(13, _) => Err(ActorError::msg("13 is unlucky")),
            Msg::Square(n, reply) => {
                reply.reply(n * n);
                Ok(())
            }
            Msg::Ignore(reply) => {
                self.ignored = Some(reply); // held, unanswered: the caller times out
                Ok(())
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // A small zbmd runtime beside tokio's: two unpinned shards.
    let rt = Runtime::builder().shards(2).pin(false).build().expect("runtime");
    let mut tree = SupervisorSpec::one_for_one()
        .intensity(10, Duration::from_secs(5))
        .backoff(Duration::from_millis(100), Duration::from_millis(100));
    let mut pool: Vec<ChildRef<Msg>> = Vec::new();
    for i in 0..WORKERS {
        let spec = ChildSpec::worker(format!("squarer-{i}"), Squarer::default);
        pool.push(spec.child_ref());
        tree = tree.child(spec);
    }
    let _supervisor = Supervisor::start(&rt, tree).expect("the pool starts");

    // 32 tasks, each awaiting one reply with tokio's timeout.
    let tasks: Vec<_> = (1..=32u64)
        .filter(|&n| n != 13)
        .map(|n| {
            let worker = pool[n as usize % WORKERS].clone();
            tokio::spawn(async move {
                let reply = worker.ask_async(|reply| Msg::Square(n, reply));
                (n, tokio::time::timeout(REPLY_TIMEOUT, reply).await)
            })
        })
        .collect();
    for task in tasks {
        let (n, answer) = task.await.expect("the task ran");
        assert_eq!(answer, Ok(Ok(n * n)), "{n}² from the pool");
    }
    println!("31 tasks got their squares");

    // A request that is never answered: tokio's timeout ends the wait.
    let ignored = pool[0].ask_async(Msg::Ignore);
    let timed_out = tokio::time::timeout(Duration::from_millis(50), ignored).await;
    assert!(timed_out.is_err());
    println!("an unanswered request timed out after 50 ms");

    // The poison request crashes its worker, taking the request with it:
    // the task hears `Dropped` at once, not at its timeout.
    let poisoned = pool[1].ask_async(|reply| Msg::Square(13, reply));
    let answer = tokio::time::timeout(REPLY_TIMEOUT, poisoned).await.expect("no timeout");
    assert_eq!(answer, Err(AskError::Dropped));
    println!("the poison request crashed squarer-1: {}", AskError::Dropped);

    // squarer-1 is restarting (a 100 ms backoff). `ChildRef::call` waits
    // for the next incarnation; it blocks, so it runs on tokio's blocking
    // pool, and the async task awaits that.
    let worker = pool[1].clone();
    let answer = tokio::task::spawn_blocking(move || {
        worker.call(|reply| Msg::Square(12, reply), REPLY_TIMEOUT)
    })
    .await
    .expect("the blocking task ran");
    assert_eq!(answer, Ok(144));
    println!("the restarted squarer-1 answered 12² = 144");

    // Runtime::shutdown blocks: leave the async context for it.
    tokio::task::spawn_blocking(move || rt.shutdown()).await.expect("shut down");
}
