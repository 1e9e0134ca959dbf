//! The supervision soak: 1,000 workers under a two-level tree take
//! 1,000,000 messages while fault injection crashes 1% of deliveries and
//! drops 0.1%. Afterwards every message is accounted for exactly, every
//! worker is alive, and memory (the shards' pools and the heap) is back
//! where it started.
#![cfg(not(zbmd_loom))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, eventually};
use zbmd_rt::fault::FaultPlan;
use zbmd_rt::runtime::Metric;
use zbmd_rt::supervisor::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};
use zbmd_rt::{Actor, ActorError, Context, Runtime, SendError};

/// The system allocator, keeping count of the bytes live on the heap.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call forwards to `System` with the caller's own arguments;
// the counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SUPERVISORS: usize = 10;
const WORKERS_PER_SUPERVISOR: usize = 100;
const MESSAGES: u64 = 1_000_000;

struct Worker {
    handled: Arc<AtomicU64>,
}

impl Actor for Worker {
    type Msg = u64;

    fn handle(&mut self, _: &mut Context<'_, Self>, _: u64) -> Result<(), ActorError> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Builds the tree: a root over `SUPERVISORS` one_for_one supervisors of
/// `WORKERS_PER_SUPERVISOR` workers each. Intensity is high enough that the
/// injected crashes (about 10 per worker, a few hundred a second per
/// supervisor) never exhaust it.
fn tree(
    rt: &Runtime,
    handled: &Arc<AtomicU64>,
) -> (zbmd_rt::supervisor::SupervisorRef, Vec<ChildRef<u64>>) {
    let mut workers = Vec::new();
    let mut root = SupervisorSpec::one_for_one().intensity(10, Duration::from_secs(1));
    for s in 0..SUPERVISORS {
        // About 1% of the messages crash their worker: at most a few hundred
        // restarts a second per supervisor here, and 4,000 fits the history
        // a supervisor reserves at start.
        let mut sub = SupervisorSpec::one_for_one().intensity(4_000, Duration::from_secs(1));
        for w in 0..WORKERS_PER_SUPERVISOR {
            let handled = handled.clone();
            let spec =
                ChildSpec::worker(format!("w{s}.{w}"), move || Worker { handled: handled.clone() });
            workers.push(spec.child_ref());
            sub = sub.child(spec);
        }
        root = root.child(ChildSpec::supervisor(format!("s{s}"), sub));
    }
    (Supervisor::start(rt, root).expect("the tree starts"), workers)
}

/// Sends `count` messages round robin, retrying each until it is accepted
/// (a full mailbox, or a worker between crash and restart, hands it back).
fn send(workers: &[ChildRef<u64>], count: u64) {
    for i in 0..count {
        let worker = &workers[i as usize % workers.len()];
        let mut msg = i;
        let deadline = Instant::now() + PATIENCE;
        loop {
            match worker.try_send(msg) {
                Ok(()) => break,
                Err(SendError::Full(back) | SendError::NoProc(back)) => msg = back,
            }
            assert!(Instant::now() < deadline, "worker {} never took a message", worker.id());
            std::thread::yield_now();
        }
    }
}

/// handled + dropped + lost with a crash (the message that crashed it and
/// those still queued) — what must equal the number sent.
fn accounted(rt: &Runtime, handled: &AtomicU64) -> u64 {
    let m = rt.metrics();
    handled.load(Ordering::Relaxed)
        + m.total(Metric::FaultsDrop)
        + m.total(Metric::FaultsCrash)
        + m.total(Metric::DeadLetters)
}

#[test]
fn a_million_messages_through_a_faulty_tree_all_accounted_for() {
    let plan = FaultPlan::new().seed(42).crash(0.01).drop(0.001);
    let rt = Runtime::builder().shards(2).pin(false).fault_plan(plan).build().unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let (root, workers) = tree(&rt, &handled);
    assert_eq!(workers.len(), 1000);

    // Warm up so the heap's steady state (mailboxes cycled through
    // restarts, supervisors' restart histories, registry) is the baseline.
    send(&workers, 300_000);
    eventually("warm-up accounted for", || accounted(&rt, &handled) == 300_000);
    eventually("warm-up repaired", || {
        let m = rt.metrics();
        m.total(Metric::Restarts) == m.total(Metric::FaultsCrash)
    });
    let baseline = LIVE_BYTES.load(Ordering::Relaxed);
    let pooled = |rt: &Runtime| rt.memory().iter().map(|p| p.in_use).sum::<usize>();
    let pooled_baseline = pooled(&rt);
    let before = rt.metrics();

    send(&workers, MESSAGES);
    eventually("every message accounted for", || accounted(&rt, &handled) == 300_000 + MESSAGES);

    let after = rt.metrics();
    let delta = |c| after.total(c) - before.total(c);
    let (crashes, drops, dead) =
        (delta(Metric::FaultsCrash), delta(Metric::FaultsDrop), delta(Metric::DeadLetters));
    eprintln!("soak: {crashes} injected crashes, {drops} injected drops, {dead} dead letters");
    // The plan's rates, within wide bounds (seeded: this run is fixed).
    assert!((5_000..20_000).contains(&crashes), "crashes {crashes}");
    assert!((300..3_000).contains(&drops), "drops {drops}");

    // Every crash was repaired: each worker alive, each restart counted.
    eventually("every crash restarted", || {
        rt.metrics().total(Metric::Restarts) - before.total(Metric::Restarts) == crashes
    });
    for worker in &workers {
        assert!(worker.is_alive(), "worker {} is down", worker.id());
    }
    let counts = root.count_children(PATIENCE).unwrap();
    assert_eq!((counts.specs, counts.active), (SUPERVISORS, SUPERVISORS));
    assert_eq!(rt.metrics().total(Metric::Escalations), 0);
    assert_eq!(rt.live_actors(), 1 + SUPERVISORS + workers.len());

    // The heap is back to its level before the run: what the restarts
    // took (some 10,000 mailboxes and cells) was given back, and nothing
    // grew with the number of messages or restarts. The slack (16 KiB of
    // 40 MiB) covers the few small buffers whose size follows a burst.
    // The restarted workers' cells and mailboxes came from the shards'
    // pools (a supervisor starts its children on its own shard), and went
    // back: the pools hold as many blocks as before the run.
    eventually("the pools back to their level", || pooled(&rt) == pooled_baseline);
    let grown = LIVE_BYTES.load(Ordering::Relaxed) - baseline;
    eprintln!("soak: heap {baseline} bytes before, {grown:+} after");
    assert!(grown.abs() < 16 * 1024, "heap grew by {grown} bytes over {baseline}");
    rt.shutdown();
}
