//! The timer wheel, driven by random sequences of inserts (deadlines on every
//! level, in the past and beyond the wheel's span), cancels and polls (small
//! steps, large jumps, steps back in time), answers exactly as a model that
//! keeps every pending timer in a `BTreeMap` ordered by deadline tick.
//!
//! Time is synthetic: every instant is `start + ticks * tick + jitter`.
#![cfg(not(zbmd_loom))]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use zbmd_rt::timer::{TimerError, TimerKey, TimerWheel};

#[derive(Debug, Clone)]
enum Op {
    /// A timer due `offset` ticks from the model's now (negative: in the
    /// past), plus `jitter` of a tick, in millionths.
    Insert { offset: i64, jitter: u32 },
    /// A timer due `delta` ticks from the start of the `k`-th slot of
    /// `level` after now's: the boundaries where cascades happen.
    InsertNearBoundary { level: u32, k: u64, delta: i64 },
    /// Cancel the `pick`-th timer ever inserted (modulo their number).
    Cancel { pick: usize },
    /// Move now forward by `advance` ticks plus `jitter` millionths of a tick.
    Poll { advance: u64, jitter: u32 },
    /// Poll exactly at `next_deadline`, as a parked shard does when it wakes.
    PollAtNextDeadline,
    /// Poll at an instant `back` ticks before the model's now.
    PollBack { back: u64 },
}

/// Deadline offsets that land on every level, in the past, and beyond the span.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        -300i64..=0,
        0i64..64,
        64i64..4096,
        4096i64..(1 << 18),
        (1i64 << 18)..(1 << 24),
        (1i64 << 24)..(1 << 30),
        (1i64 << 30)..(1 << 36),
        (1i64 << 36)..(1 << 40),
    ]
}

/// Steps of time: single ticks, a slot's worth, a level's worth, huge jumps.
fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..4,
        2 => 0u64..300,
        2 => 0u64..(1 << 20),
        1 => 0u64..(1 << 32),
        1 => 0u64..(1 << 39),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let jitter = 0u32..1_000_000;
    prop_oneof![
        4 => (offset(), jitter.clone()).prop_map(|(offset, jitter)| Op::Insert { offset, jitter }),
        2 => (0u32..7, 1u64..64, -1i64..=2)
            .prop_map(|(level, k, delta)| Op::InsertNearBoundary { level, k, delta }),
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        3 => (advance(), jitter).prop_map(|(advance, jitter)| Op::Poll { advance, jitter }),
        2 => Just(Op::PollAtNextDeadline),
        1 => (0u64..500).prop_map(|back| Op::PollBack { back }),
    ]
}

/// What became of each timer ever inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Fired,
    Cancelled,
}

/// The wheel under test, the model, and the bookkeeping that links them.
struct Harness {
    wheel: TimerWheel<u64>,
    start: Instant,
    tick: Duration,
    /// The tick the wheel has been polled up to (the model's "now").
    now_tick: u64,
    /// Pending timers by (due tick, seq): the due tick is the deadline tick,
    /// or the tick polled to when the deadline had already passed.
    model: BTreeMap<(u64, u64), ()>,
    /// Per seq: its key, its due tick, and its fate.
    timers: Vec<(TimerKey, u64, Fate)>,
    seq_of: HashMap<TimerKey, u64>,
}

impl Harness {
    /// The instant `ticks` ticks plus `millionths` of a tick after start.
    fn instant(&self, ticks: u64, millionths: u32) -> Instant {
        let tick_ns = self.tick.as_nanos() as u64;
        let ns = u128::from(ticks) * u128::from(tick_ns)
            + u128::from(tick_ns) * u128::from(millionths) / 1_000_000;
        let secs = u64::try_from(ns / 1_000_000_000).expect("test instants fit");
        self.start + Duration::new(secs, (ns % 1_000_000_000) as u32)
    }

    fn insert(&mut self, offset: i64, jitter: u32) -> Result<(), TestCaseError> {
        let whole = u64::try_from(i128::from(self.now_tick) + i128::from(offset)).unwrap_or(0);
        let deadline = self.instant(whole, jitter);
        // Rounded up: a deadline between ticks is due at the next one.
        let tick_ns = self.tick.as_nanos() as u64;
        let deadline_tick = whole + u64::from(u64::from(jitter) * tick_ns / 1_000_000 > 0);
        let due_tick = deadline_tick.max(self.now_tick);
        let seq = self.timers.len() as u64;
        match self.wheel.insert(deadline, seq) {
            Ok(key) => {
                prop_assert!(self.model.len() < self.wheel.capacity(), "accepted beyond capacity");
                prop_assert!(self.seq_of.insert(key, seq).is_none(), "a key was issued twice");
                self.timers.push((key, due_tick, Fate::Pending));
                self.model.insert((due_tick, seq), ());
            }
            Err(rejected) => {
                let capacity = self.wheel.capacity();
                prop_assert_eq!(rejected.reason, TimerError::Full { capacity });
                prop_assert_eq!(self.model.len(), capacity, "refused while not full");
                prop_assert_eq!(rejected.into_payload(), seq, "the payload came back");
            }
        }
        Ok(())
    }

    fn cancel(&mut self, pick: usize) -> Result<(), TestCaseError> {
        if self.timers.is_empty() {
            return Ok(());
        }
        let seq = pick % self.timers.len();
        let (key, due_tick, fate) = self.timers[seq];
        let cancelled = self.wheel.cancel(key);
        if fate == Fate::Pending {
            prop_assert_eq!(cancelled, Some(seq as u64));
            prop_assert!(self.model.remove(&(due_tick, seq as u64)).is_some());
            self.timers[seq].2 = Fate::Cancelled;
        } else {
            prop_assert_eq!(cancelled, None, "a {:?} timer was cancelled", fate);
        }
        Ok(())
    }

    /// Polls at `now_tick` (plus jitter) and checks what fired against the model.
    fn poll(&mut self, now_tick: u64, jitter: u32) -> Result<(), TestCaseError> {
        let now = self.instant(now_tick, jitter);
        let mut fired = Vec::new();
        let count = self.wheel.poll(now, |key, seq| fired.push((key, seq)));
        prop_assert_eq!(count, fired.len());
        self.now_tick = self.now_tick.max(now_tick);
        let mut last_due = 0;
        for &(key, seq) in &fired {
            prop_assert_eq!(self.seq_of.get(&key), Some(&seq), "fired with a key not its own");
            let (_, due_tick, fate) = self.timers[seq as usize];
            prop_assert_eq!(fate, Fate::Pending, "timer {} fired twice or after a cancel", seq);
            prop_assert!(
                due_tick <= self.now_tick,
                "timer {} due at {} fired early",
                seq,
                due_tick
            );
            prop_assert!(due_tick >= last_due, "timer {} fired out of order", seq);
            last_due = due_tick;
            self.timers[seq as usize].2 = Fate::Fired;
        }
        let mut fired_seqs: Vec<u64> = fired.iter().map(|&(_, seq)| seq).collect();
        fired_seqs.sort_unstable();
        let still_pending = self.model.split_off(&(self.now_tick + 1, 0));
        let mut due: Vec<u64> = std::mem::replace(&mut self.model, still_pending)
            .into_keys()
            .map(|(_, seq)| seq)
            .collect();
        due.sort_unstable();
        prop_assert_eq!(fired_seqs, due, "the fired set differs from the due set");
        Ok(())
    }

    /// The checks that hold between any two operations.
    fn check(&self) -> Result<(), TestCaseError> {
        self.wheel.check_invariants();
        prop_assert_eq!(self.wheel.len(), self.model.len());
        prop_assert_eq!(self.wheel.is_empty(), self.model.is_empty());
        match (self.wheel.next_deadline(), self.model.keys().next()) {
            (None, None) => {}
            (Some(next), Some(&(earliest_due, _))) => {
                prop_assert!(next <= self.instant(earliest_due, 0), "next_deadline is too late");
                prop_assert!(
                    next >= self.instant(self.now_tick, 0),
                    "next_deadline is in the past"
                );
            }
            (next, earliest) => {
                prop_assert!(false, "next_deadline {:?} with {:?} pending", next, earliest)
            }
        }
        Ok(())
    }
}

fn tick() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::from_millis(1)),
        Just(Duration::from_micros(100)),
        Just(Duration::from_micros(1)),
        Just(Duration::from_micros(1234)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn matches_a_btreemap_model(
        capacity in 1usize..48,
        tick in tick(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let start = Instant::now();
        let wheel = TimerWheel::new(capacity, tick, start).expect("a valid wheel");
        let mut h = Harness {
            wheel, start, tick, now_tick: 0,
            model: BTreeMap::new(), timers: Vec::new(), seq_of: HashMap::new(),
        };
        for op in ops {
            match op {
                Op::Insert { offset, jitter } => h.insert(offset, jitter)?,
                Op::InsertNearBoundary { level, k, delta } => {
                    let shift = 6 * level;
                    let boundary = ((h.now_tick >> shift) + k) << shift;
                    let offset = i64::try_from(boundary - h.now_tick).unwrap() + delta;
                    h.insert(offset, 0)?;
                }
                Op::Cancel { pick } => h.cancel(pick)?,
                Op::Poll { advance, jitter } => h.poll(h.now_tick + advance, jitter)?,
                Op::PollAtNextDeadline => {
                    if let Some(next) = h.wheel.next_deadline() {
                        let ticks = next.duration_since(start).as_nanos() / tick.as_nanos();
                        prop_assert_eq!(h.instant(ticks as u64, 0), next, "not on a tick");
                        h.poll(ticks as u64, 0)?;
                    }
                }
                Op::PollBack { back } => h.poll(h.now_tick.saturating_sub(back), 0)?,
            }
            h.check()?;
        }
        // Drain: every timer fires exactly once or was cancelled exactly once.
        let last_due = h.model.keys().next_back().map_or(h.now_tick, |&(due, _)| due);
        h.poll(last_due, 0)?;
        h.check()?;
        prop_assert!(h.wheel.is_empty());
        prop_assert!(h.timers.iter().all(|&(_, _, fate)| fate != Fate::Pending));
    }
}
