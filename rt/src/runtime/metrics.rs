//! Per-shard counters, readable as a snapshot and in Prometheus' text
//! format.
//!
//! Each shard writes its own cache-padded set of counters (Relaxed adds on a
//! line no other core writes, except the rare count from a sender on another
//! thread), and a reader sums nothing: the snapshot shows each shard.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter a shard keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Messages (and signals) handled.
    Messages,
    /// Reductions spent (one per message plus `Context::consume`).
    Reductions,
    /// Successful steals (batches taken from another shard).
    Steals,
    /// Actors taken in those steals.
    StolenActors,
    /// Times the shard went to sleep.
    Parks,
    /// Sends refused because the target's mailbox was full.
    MailboxFull,
    /// Actors that stopped with an abnormal reason.
    Crashes,
    /// Actors that stopped normally or on shutdown.
    Stops,
    /// Actors spawned.
    Spawns,
    /// Turns that held the shard past the stall limit.
    Stalls,
    /// Replies (and blocking-job results) that found their asker dead,
    /// timed out, or its system lane full.
    RepliesDropped,
    /// User messages still queued when their actor died.
    DeadLetters,
    /// System signals refused by a full system lane.
    SignalsDropped,
    /// Timers that fired.
    TimersFired,
}

impl Counter {
    /// Every counter, in display order.
    pub const ALL: [Counter; 14] = [
        Counter::Messages,
        Counter::Reductions,
        Counter::Steals,
        Counter::StolenActors,
        Counter::Parks,
        Counter::MailboxFull,
        Counter::Crashes,
        Counter::Stops,
        Counter::Spawns,
        Counter::Stalls,
        Counter::RepliesDropped,
        Counter::DeadLetters,
        Counter::SignalsDropped,
        Counter::TimersFired,
    ];

    /// The Prometheus metric name (without the `zbmd_` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Messages => "messages_total",
            Counter::Reductions => "reductions_total",
            Counter::Steals => "steals_total",
            Counter::StolenActors => "stolen_actors_total",
            Counter::Parks => "parks_total",
            Counter::MailboxFull => "mailbox_full_total",
            Counter::Crashes => "crashes_total",
            Counter::Stops => "stops_total",
            Counter::Spawns => "spawns_total",
            Counter::Stalls => "stalls_total",
            Counter::RepliesDropped => "replies_dropped_total",
            Counter::DeadLetters => "dead_letters_total",
            Counter::SignalsDropped => "signals_dropped_total",
            Counter::TimersFired => "timers_fired_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Counter::Messages => "Messages and signals handled.",
            Counter::Reductions => "Reductions spent.",
            Counter::Steals => "Batches of runnable actors stolen from other shards.",
            Counter::StolenActors => "Runnable actors taken by steals.",
            Counter::Parks => "Times the shard parked with nothing to run.",
            Counter::MailboxFull => "Sends refused by a full mailbox.",
            Counter::Crashes => "Actors that stopped with an abnormal reason.",
            Counter::Stops => "Actors that stopped normally or on shutdown.",
            Counter::Spawns => "Actors spawned.",
            Counter::Stalls => "Turns that held the shard past the stall limit.",
            Counter::RepliesDropped => "Replies dropped: asker dead, timed out, or full.",
            Counter::DeadLetters => "User messages still queued when their actor died.",
            Counter::SignalsDropped => "System signals refused by a full system lane.",
            Counter::TimersFired => "Timers fired.",
        }
    }
}

/// One shard's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [AtomicU64; Counter::ALL.len()],
}

impl Counters {
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }
}

/// The counters of every shard at one moment (each read is atomic, the set
/// is not: a snapshot of a running system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Per shard, then one last entry for threads outside the runtime.
    pub shards: Vec<[u64; Counter::ALL.len()]>,
    /// Actors alive when the snapshot was taken.
    pub live_actors: usize,
}

impl MetricsSnapshot {
    pub(crate) fn read(
        counters: &[crossbeam_utils::CachePadded<Counters>],
        live_actors: usize,
    ) -> Self {
        let shards = counters.iter().map(|c| Counter::ALL.map(|counter| c.get(counter))).collect();
        MetricsSnapshot { shards, live_actors }
    }

    /// A counter's value on one shard (`shard == shards.len() - 1` is the
    /// outside threads).
    pub fn get(&self, shard: usize, counter: Counter) -> u64 {
        self.shards[shard][counter as usize]
    }

    /// A counter summed over every shard and the outside threads.
    pub fn total(&self, counter: Counter) -> u64 {
        self.shards.iter().map(|values| values[counter as usize]).sum()
    }

    /// The snapshot in Prometheus' text exposition format, one series per
    /// shard (`shard="outside"` for threads outside the runtime).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let outside = self.shards.len() - 1;
        for counter in Counter::ALL {
            let name = counter.name();
            let _ = writeln!(out, "# HELP zbmd_{name} {}", counter.help());
            let _ = writeln!(out, "# TYPE zbmd_{name} counter");
            for (shard, values) in self.shards.iter().enumerate() {
                let value = values[counter as usize];
                if shard == outside {
                    let _ = writeln!(out, "zbmd_{name}{{shard=\"outside\"}} {value}");
                } else {
                    let _ = writeln!(out, "zbmd_{name}{{shard=\"{shard}\"}} {value}");
                }
            }
        }
        let _ = writeln!(out, "# HELP zbmd_live_actors Actors alive.");
        let _ = writeln!(out, "# TYPE zbmd_live_actors gauge");
        let _ = writeln!(out, "zbmd_live_actors {}", self.live_actors);
        out
    }
}
