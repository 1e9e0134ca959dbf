//! Per-shard counters, readable as a snapshot and in Prometheus' text
//! format.
//!
//! Each shard writes its own cache-padded set of counters (Relaxed adds on a
//! line no other core writes, except the rare count from a sender on another
//! thread), and a reader sums nothing: the snapshot shows each shard.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter a shard keeps, as read with [`MetricsSnapshot::get`] and
/// [`MetricsSnapshot::total`] and written as `zbmd_<name>` series by
/// [`MetricsSnapshot::to_prometheus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
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

impl Metric {
    /// Every counter, in display order.
    pub const ALL: [Metric; 20] = [
        Metric::Messages,
        Metric::Reductions,
        Metric::Steals,
        Metric::StolenActors,
        Metric::Parks,
        Metric::MailboxFull,
        Metric::Crashes,
        Metric::Stops,
        Metric::Spawns,
        Metric::Stalls,
        Metric::RepliesDropped,
        Metric::DeadLetters,
        Metric::SignalsDropped,
        Metric::TimersFired,
        Metric::FaultsCrash,
        Metric::FaultsDrop,
        Metric::FaultsDelay,
        Metric::FaultsSite,
        Metric::Restarts,
        Metric::Escalations,
    ];

    /// The Prometheus metric name (without the `zbmd_` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Messages => "messages_total",
            Metric::Reductions => "reductions_total",
            Metric::Steals => "steals_total",
            Metric::StolenActors => "stolen_actors_total",
            Metric::Parks => "parks_total",
            Metric::MailboxFull => "mailbox_full_total",
            Metric::Crashes => "crashes_total",
            Metric::Stops => "stops_total",
            Metric::Spawns => "spawns_total",
            Metric::Stalls => "stalls_total",
            Metric::RepliesDropped => "replies_dropped_total",
            Metric::DeadLetters => "dead_letters_total",
            Metric::SignalsDropped => "signals_dropped_total",
            Metric::TimersFired => "timers_fired_total",
            Metric::FaultsCrash => "faults_crash_total",
            Metric::FaultsDrop => "faults_drop_total",
            Metric::FaultsDelay => "faults_delay_total",
            Metric::FaultsSite => "faults_site_total",
            Metric::Restarts => "restarts_total",
            Metric::Escalations => "escalations_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Metric::Messages => "Messages and signals handled.",
            Metric::Reductions => "Reductions spent.",
            Metric::Steals => "Batches of runnable actors stolen from other shards.",
            Metric::StolenActors => "Runnable actors taken by steals.",
            Metric::Parks => "Times the shard parked with nothing to run.",
            Metric::MailboxFull => "Sends refused by a full mailbox.",
            Metric::Crashes => "Actors that stopped with an abnormal reason.",
            Metric::Stops => "Actors that stopped normally or on shutdown.",
            Metric::Spawns => "Actors spawned.",
            Metric::Stalls => "Turns that held the shard past the stall limit.",
            Metric::RepliesDropped => "Replies dropped: asker dead, timed out, or full.",
            Metric::DeadLetters => "User messages still queued when their actor died.",
            Metric::SignalsDropped => "System signals refused by a full system lane.",
            Metric::TimersFired => "Timers fired.",
            Metric::FaultsCrash => "Actors crashed by fault injection, each losing one message.",
            Metric::FaultsDrop => "User messages dropped by fault injection.",
            Metric::FaultsDelay => "User messages delayed by fault injection.",
            Metric::FaultsSite => "Named fault sites that fired.",
            Metric::Restarts => "Children restarted by their supervisor.",
            Metric::Escalations => "Supervisors that reached their restart intensity.",
        }
    }
}

/// One shard's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [AtomicU64; Metric::ALL.len()],
}

impl Counters {
    pub(crate) fn add(&self, counter: Metric, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, counter: Metric) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }
}

/// The counters of every shard at one moment (each read is atomic, the set
/// is not: a snapshot of a running system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// The runtime the snapshot comes from ([`Runtime::id`](crate::Runtime::id)):
    /// the `runtime` label of every Prometheus series.
    pub runtime: u32,
    /// The runtime's name, if the builder gave one
    /// ([`RuntimeBuilder::name`](crate::runtime::RuntimeBuilder::name)): the
    /// `runtime_name` label of every series when set.
    pub runtime_name: Option<String>,
    /// Per shard, then one last entry for threads outside the runtime.
    pub shards: Vec<[u64; Metric::ALL.len()]>,
    /// Actors alive when the snapshot was taken.
    pub live_actors: usize,
    /// CPUs the runtime's shards are pinned to that another live runtime of
    /// the process had pinned first ([`Runtime::shared_cpus`](crate::Runtime::shared_cpus)).
    pub shared_cpus: usize,
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
        let shards = counters.iter().map(|c| Metric::ALL.map(|counter| c.get(counter))).collect();
        MetricsSnapshot {
            runtime: 0,
            runtime_name: None,
            shards,
            live_actors,
            shared_cpus: 0,
            fault_sites: Vec::new(),
            pools: Vec::new(),
        }
    }

    /// A counter's value on one shard (`shard == shards.len() - 1` is the
    /// outside threads).
    pub fn get(&self, shard: usize, counter: Metric) -> u64 {
        self.shards[shard][counter as usize]
    }

    /// A counter summed over every shard and the outside threads.
    pub fn total(&self, counter: Metric) -> u64 {
        self.shards.iter().map(|values| values[counter as usize]).sum()
    }

    /// The labels every series carries: `runtime="<id>"`, then
    /// `runtime_name="<name>"` when the runtime has a name (names are
    /// `[A-Za-z0-9_.-]`, checked by the builder, so they need no escaping).
    fn runtime_labels(&self) -> String {
        match &self.runtime_name {
            Some(name) => format!("runtime=\"{}\",runtime_name=\"{name}\"", self.runtime),
            None => format!("runtime=\"{}\"", self.runtime),
        }
    }

    /// Each named fault site's rolls and fires, one series per site (site
    /// names are `[A-Za-z0-9_.-]`, so they need no escaping).
    fn write_fault_sites(&self, labels: &str, out: &mut String) {
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
                let _ = writeln!(out, "zbmd_{name}{{{labels},site=\"{}\"}} {value}", site.name);
            }
        }
    }

    /// The snapshot in Prometheus' text exposition format, one series per
    /// shard (`shard="outside"` for threads outside the runtime). Every
    /// series, the memory pools' included, starts its labels with
    /// `runtime="<id>"` (and `runtime_name="<name>"` for a named runtime),
    /// so that the metrics of two runtimes in one process never merge:
    ///
    /// ```text
    /// zbmd_messages_total{runtime="1",runtime_name="api",shard="0"} 42
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let labels = self.runtime_labels();
        let outside = self.shards.len() - 1;
        for counter in Metric::ALL {
            let name = counter.name();
            let _ = writeln!(out, "# HELP zbmd_{name} {}", counter.help());
            let _ = writeln!(out, "# TYPE zbmd_{name} counter");
            for (shard, values) in self.shards.iter().enumerate() {
                let value = values[counter as usize];
                if shard == outside {
                    let _ = writeln!(out, "zbmd_{name}{{{labels},shard=\"outside\"}} {value}");
                } else {
                    let _ = writeln!(out, "zbmd_{name}{{{labels},shard=\"{shard}\"}} {value}");
                }
            }
        }
        for (name, help, value) in [
            ("live_actors", "Actors alive.", self.live_actors),
            (
                "shared_cpus",
                "CPUs this runtime pinned that another live runtime of the process had pinned first.",
                self.shared_cpus,
            ),
        ] {
            let _ = writeln!(out, "# HELP zbmd_{name} {help}");
            let _ = writeln!(out, "# TYPE zbmd_{name} gauge");
            let _ = writeln!(out, "zbmd_{name}{{{labels}}} {value}");
        }
        self.write_fault_sites(&labels, &mut out);
        add_labels(&zbmd_alloc::to_prometheus(&self.pools), &labels, &mut out);
        out
    }
}

/// Copies Prometheus text into `out`, putting `labels` first in every
/// series' label set (comments pass unchanged). In the exposition format a
/// metric name holds neither `{` nor a space, so the first of the two ends
/// the name.
fn add_labels(text: &str, labels: &str, out: &mut String) {
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            let _ = writeln!(out, "{line}");
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        match rest.strip_prefix('{') {
            Some(rest) if rest.starts_with('}') => {
                let _ = writeln!(out, "{name}{{{labels}{rest}");
            }
            Some(rest) => {
                let _ = writeln!(out, "{name}{{{labels},{rest}");
            }
            None => {
                let _ = writeln!(out, "{name}{{{labels}}}{rest}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::add_labels;

    #[test]
    fn add_labels_puts_the_runtime_first_in_every_series() {
        let text = "# HELP a An a.\n# TYPE a gauge\na{pool=\"x\",shard=\"0\"} 1\nb 2\nc{} 3\n";
        let mut out = String::new();
        add_labels(text, "runtime=\"7\"", &mut out);
        assert_eq!(
            out,
            "# HELP a An a.\n# TYPE a gauge\na{runtime=\"7\",pool=\"x\",shard=\"0\"} 1\n\
             b{runtime=\"7\"} 2\nc{runtime=\"7\"} 3\n"
        );
    }
}
