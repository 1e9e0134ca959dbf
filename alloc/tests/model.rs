//! A property test of a shard's pools against a model: any sequence of
//! allocations, local and remote frees, freezes, clones and drains keeps
//! every live block distinct and intact, refuses an allocation exactly when
//! the model's class is full, and keeps the stats in line with the model.
#![cfg(not(zbmd_loom))]

use std::sync::mpsc;
use std::thread;

use proptest::prelude::*;
use zbmd_alloc::{AllocError, HugePages, PooledBuf, ShardPools, SharedBuf};

/// (block bytes, blocks) of the pools under test: small, so sequences fill
/// them.
const CLASSES: [(usize, usize); 2] = [(64, 4), (512, 3)];

#[derive(Debug, Clone)]
enum Op {
    Alloc { class: usize },
    FreeLocal(usize),
    FreeRemote(usize),
    Freeze(usize),
    Clone(usize),
    DropView { pick: usize, remote: bool },
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CLASSES.len()).prop_map(|class| Op::Alloc { class }),
        2 => any::<usize>().prop_map(Op::FreeLocal),
        2 => any::<usize>().prop_map(Op::FreeRemote),
        1 => any::<usize>().prop_map(Op::Freeze),
        1 => any::<usize>().prop_map(Op::Clone),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, remote)| Op::DropView { pick, remote }),
        1 => Just(Op::Drain),
    ]
}

/// One live block as the test holds it.
enum Held {
    Unique(PooledBuf),
    Shared(Vec<SharedBuf>),
}

struct Live {
    class: usize,
    tag: u64,
    held: Held,
}

impl Live {
    fn first_bytes(&self) -> [u8; 8] {
        let bytes: &[u8] = match &self.held {
            Held::Unique(buf) => buf,
            Held::Shared(views) => &views[0],
        };
        bytes[..8].try_into().unwrap()
    }

    fn addr(&self) -> usize {
        match &self.held {
            Held::Unique(buf) => buf.as_ptr() as usize,
            Held::Shared(views) => views[0].as_ptr() as usize,
        }
    }
}

/// A thread that drops what it is sent, then says so.
struct Freer {
    tx: mpsc::Sender<Box<dyn Send>>,
    done: mpsc::Receiver<()>,
}

impl Freer {
    fn start() -> (Self, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Box<dyn Send>>();
        let (done_tx, done) = mpsc::channel();
        let handle = thread::spawn(move || {
            for item in rx {
                drop(item);
                let _ = done_tx.send(());
            }
        });
        (Freer { tx, done }, handle)
    }

    fn drop_remotely(&self, item: Box<dyn Send>) {
        self.tx.send(item).unwrap();
        self.done.recv().unwrap();
    }
}

#[derive(Default)]
struct Model {
    live: [usize; CLASSES.len()],
    most: [usize; CLASSES.len()],
    remote_frees: [u64; CLASSES.len()],
}

fn run(ops: Vec<Op>) {
    let pools = ShardPools::builder().classes(CLASSES).hugepages(HugePages::Off).build().unwrap();
    pools.bind_current_thread().unwrap();
    let (freer, freer_thread) = Freer::start();
    let mut held: Vec<Live> = Vec::new();
    let mut model = Model::default();
    let mut next_tag = 1u64;
    for op in ops {
        step(&pools, &freer, &mut held, &mut model, &mut next_tag, op);
        check(&pools, &held, &model);
    }
    drop(held);
    drop(freer);
    freer_thread.join().unwrap();
}

fn step(
    pools: &ShardPools,
    freer: &Freer,
    held: &mut Vec<Live>,
    model: &mut Model,
    next_tag: &mut u64,
    op: Op,
) {
    let pick = |n: usize| (!held.is_empty()).then(|| n % held.len());
    match op {
        Op::Alloc { class } => {
            let (bytes, blocks) = CLASSES[class];
            match pools.alloc_buf(bytes) {
                Ok(mut buf) => {
                    assert!(model.live[class] < blocks, "allocated beyond the limit");
                    assert_eq!(buf.capacity(), bytes);
                    buf[..8].copy_from_slice(&next_tag.to_le_bytes());
                    held.push(Live { class, tag: *next_tag, held: Held::Unique(buf) });
                    *next_tag += 1;
                    model.live[class] += 1;
                    model.most[class] = model.most[class].max(model.live[class]);
                }
                Err(AllocError::PoolExhausted { limit, .. }) => {
                    assert_eq!(limit, blocks);
                    assert_eq!(model.live[class], blocks, "refused with room left");
                }
                Err(other) => panic!("{other}"),
            }
        }
        Op::FreeLocal(n) | Op::FreeRemote(n) => {
            let Some(i) = pick(n) else { return };
            let live = held.swap_remove(i);
            model.live[live.class] -= 1;
            if matches!(op, Op::FreeRemote(_)) {
                model.remote_frees[live.class] += 1;
                freer.drop_remotely(Box::new(live.held));
            }
        }
        Op::Freeze(n) => {
            let Some(i) = pick(n) else { return };
            if let Held::Unique(_) = held[i].held {
                let Held::Unique(buf) = std::mem::replace(&mut held[i].held, Held::Shared(vec![]))
                else {
                    unreachable!()
                };
                held[i].held = Held::Shared(vec![buf.freeze()]);
            }
        }
        Op::Clone(n) => {
            let Some(i) = pick(n) else { return };
            if let Held::Shared(views) = &mut held[i].held {
                let view = views[0].slice(..8);
                views.push(view);
            }
        }
        Op::DropView { pick: n, remote } => {
            let Some(i) = pick(n) else { return };
            let Held::Shared(views) = &mut held[i].held else { return };
            let view = views.pop().unwrap();
            if views.is_empty() {
                let live = held.swap_remove(i);
                model.live[live.class] -= 1;
                model.remote_frees[live.class] += u64::from(remote);
            }
            if remote {
                freer.drop_remotely(Box::new(view));
            }
        }
        Op::Drain => {
            pools.drain_remote().unwrap();
            for (class, stats) in pools.stats().iter().enumerate() {
                assert_eq!(stats.in_use, model.live[class], "{}", stats.pool);
                assert_eq!(stats.remote_frees, model.remote_frees[class], "{}", stats.pool);
            }
        }
    }
}

fn check(pools: &ShardPools, held: &[Live], model: &Model) {
    let mut addrs: Vec<usize> = held.iter().map(Live::addr).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), held.len(), "two live handles share a block");
    for live in held {
        assert_eq!(live.first_bytes(), live.tag.to_le_bytes(), "a live block was overwritten");
    }
    for (class, stats) in pools.stats().iter().enumerate() {
        // Blocks freed remotely count until the owner takes them back.
        assert!(stats.in_use >= model.live[class] && stats.in_use <= stats.capacity);
        assert!(stats.high_water >= model.most[class]);
        assert!(stats.remote_frees <= model.remote_frees[class]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn pools_behave_like_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
