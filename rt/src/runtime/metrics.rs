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
    /// Actors crashed by fault injection instead of handling a message
    /// (each loses that message).
    FaultsCrash,
    /// User messages discarded by fault injection (including delayed ones
    /// that could not be handed back: timer wheel or system lane full).
    FaultsDrop,
    /// User messages delayed by fault injection.
    FaultsDelay,
    /// Named fault sites that fired (`FaultInjector::inject`).
    FaultsSite,
    /// Children a supervisor started again after an exit.
    Restarts,
    /// Supervisors that reached their restart intensity and gave up.
    Escalations,
}

impl Counter {
    /// Every counter, in display order.
    pub const ALL: [Counter; 20] = [
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
        Counter::FaultsCrash,
        Counter::FaultsDrop,
        Counter::FaultsDelay,
        Counter::FaultsSite,
        Counter::Restarts,
        Counter::Escalations,
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
            Counter::FaultsCrash => "faults_crash_total",
            Counter::FaultsDrop => "faults_drop_total",
            Counter::FaultsDelay => "faults_delay_total",
            Counter::FaultsSite => "faults_site_total",
            Counter::Restarts => "restarts_total",
            Counter::Escalations => "escalations_total",
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
            Counter::FaultsCrash => "Actors crashed by fault injection, each losing one message.",
            Counter::FaultsDrop => "User messages dropped by fault injection.",
            Counter::FaultsDelay => "User messages delayed by fault injection.",
            Counter::FaultsSite => "Named fault sites that fired.",
            Counter::Restarts => "Children restarted by their supervisor.",
            Counter::Escalations => "Supervisors that reached their restart intensity.",
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
    /// The named fault sites of the active fault plan, with their counters
    /// (empty without one): see [`crate::fault::FaultInjector`].
    pub fault_sites: Vec<crate::fault::SiteCount>,
    /// Every shard's memory pools: capacity, in use, high-water mark,
    /// remote frees ([`zbmd_alloc::PoolStats`]).
    pub pools: Vec<zbmd_alloc::PoolStats>,
}

impl MetricsSnapshot {
    pub(crate) fn read(
        counters: &[crossbeam_utils::CachePadded<Counters>],
        live_actors: usize,
    ) -> Self {
        let shards = counters.iter().map(|c| Counter::ALL.map(|counter| c.get(counter))).collect();
        MetricsSnapshot { shards, live_actors, fault_sites: Vec::new(), pools: Vec::new() }
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

    /// Each named fault site's rolls and fires, one series per site (site
    /// names are `[A-Za-z0-9_.-]`, so they need no escaping).
    fn write_fault_sites(&self, out: &mut String) {
        if self.fault_sites.is_empty() {
            return;
        }
        for (name, help, fires) in [
            ("fault_site_rolls_total", "Rolls of each named fault site.", false),
            ("fault_site_fires_total", "Fires of each named fault site.", true),
        ] {
            let _ = writeln!(out, "# HELP zbmd_{name} {help}");
            let _ = writeln!(out, "# TYPE zbmd_{name} counter");
            for site in &self.fault_sites {
                let value = if fires { site.fires } else { site.rolls };
                let _ = writeln!(out, "zbmd_{name}{{site=\"{}\"}} {value}", site.name);
            }
        }
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
        self.write_fault_sites(&mut out);
        out.push_str(&zbmd_alloc::to_prometheus(&self.pools));
        out
    }
}
