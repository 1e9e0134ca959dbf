//! The program issue 15 asks a newcomer to build in an afternoon, written
//! against the public API only, as the README and the rustdoc show it: a
//! supervised worker pool answering requests from outside, a poison
//! message, a timer, a registered name, metrics, a tokio task awaiting a
//! reply, and shutdown. No retry loop of its own: `ChildRef::call` rides
//! through restarts.
#![cfg(not(zbmd_loom))]

use std::time::Duration;

use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{ChildPlacement, ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{Actor, ActorError, AskError, Context, ReplyTo, Runtime};

/// The pool's size.
const WORKERS: usize = 4;
/// A bound on every wait: far above what any answer takes.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The request that crashes a worker.
const POISON: u64 = 13;

/// Squares numbers, and counts the requests this incarnation served.
#[derive(Default)]
struct Worker {
    served: u64,
}

enum Job {
    Square(u64, ReplyTo<u64>),
    /// How many requests this incarnation served.
    Served(ReplyTo<u64>),
    /// Square `n`, answering `after` from now (a timer).
    Later {
        n: u64,
        after: Duration,
        reply: ReplyTo<u64>,
    },
    /// The timer's message.
    Due(u64, ReplyTo<u64>),
}

impl Actor for Worker {
    type Msg = Job;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, job: Job) -> Result<(), ActorError> {
        match job {
            Job::Square(POISON, _) => return Err(ActorError::msg("poison")),
            Job::Square(n, reply) | Job::Due(n, reply) => {
                self.served += 1;
                reply.reply(n * n);
            }
            Job::Served(reply) => {
                reply.reply(self.served);
            }
            Job::Later { n, after, reply } => {
                ctx.send_after(&ctx.myself(), Job::Due(n, reply), after)?;
            }
        }
        Ok(())
    }
}

#[test]
fn a_supervised_pool_serves_outside_callers_through_a_poison_message_a_timer_and_a_tokio_task() {
    let rt = Runtime::builder().shards(2).pin(false).build().expect("the runtime starts");
    let mut tree = SupervisorSpec::one_for_one()
        .intensity(5, Duration::from_secs(10))
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .child_placement(ChildPlacement::RoundRobin);
    let mut pool: Vec<ChildRef<Job>> = Vec::new();
    for i in 0..WORKERS {
        let spec =
            ChildSpec::worker(format!("worker-{i}"), Worker::default).name(format!("worker-{i}"));
        pool.push(spec.child_ref());
        tree = tree.child(spec);
    }
    let _supervisor = Supervisor::start(&rt, tree).expect("the pool starts");

    // Requests from outside, spread over the pool.
    for n in (1..=20u64).filter(|&n| n != POISON) {
        let worker = &pool[n as usize % WORKERS];
        assert_eq!(worker.call(|reply| Job::Square(n, reply), TIMEOUT), Ok(n * n));
    }

    // The poison message crashes its worker and comes back `Dropped` (not
    // resent); the very next call rides through the restart to the new
    // incarnation, which starts from zero.
    let victim = &pool[1];
    let before = victim.current().expect("a live worker").id();
    assert_eq!(victim.call(|reply| Job::Square(POISON, reply), TIMEOUT), Err(AskError::Dropped));
    assert_eq!(victim.call(|reply| Job::Square(7, reply), TIMEOUT), Ok(49));
    assert_ne!(victim.current().expect("restarted").id(), before, "a new incarnation");
    assert_eq!(victim.call(Job::Served, TIMEOUT), Ok(1), "the restart began from the factory");

    // A timer inside a worker answers later.
    let later = Duration::from_millis(20);
    let answer = pool[2].call(|reply| Job::Later { n: 9, after: later, reply }, TIMEOUT);
    assert_eq!(answer, Ok(81));

    // A registered name finds the current incarnation, restarted or not.
    let named = rt.whereis("worker-1").expect("registered").typed::<Job>().expect("its type");
    assert_eq!(named.id(), victim.current().expect("live").id());
    assert_eq!(named.call(|reply| Job::Square(3, reply), TIMEOUT), Ok(9));

    // A tokio task awaits a reply without blocking a thread.
    let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let worker = pool[3].clone();
    let awaited = tokio.block_on(async move {
        tokio::time::timeout(TIMEOUT, worker.ask_async(|reply| Job::Square(11, reply))).await
    });
    assert_eq!(awaited, Ok(Ok(121)));

    // Metrics: the crash and the restart are counted, and the Prometheus
    // text names this runtime.
    let metrics = rt.metrics();
    assert_eq!(metrics.total(Metric::Restarts), 1);
    assert!(metrics.total(Metric::Crashes) >= 1);
    let text = metrics.to_prometheus();
    let label = format!("runtime=\"{}\"", rt.id());
    assert!(
        text.lines().any(|line| line.contains("restarts_total") && line.contains(&label)),
        "{text}"
    );

    // After shutdown a call ends at once with `NoProc` (its supervisor is
    // gone and will start no incarnation), not at its timeout.
    let worker = pool[0].clone();
    rt.shutdown();
    assert_eq!(
        worker.call(|reply| Job::Square(2, reply), Duration::from_secs(600)),
        Err(AskError::NoProc)
    );
}
