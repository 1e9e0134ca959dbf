//! The fault-injection example (`examples/fault_injection.rs`) as a test:
//! 100 workers under `one_for_all`, 10,000 messages, 1% injected crashes,
//! 0.1% drops and 0.01% device failures. For the example's seed and three
//! others, with one client and with four, its three properties hold: more
//! than 99% of the messages delivered (within the bounded retry), every
//! worker alive and answering afterwards, and every injected fault seen
//! equal to the runtime's counters. The example's module docs say what
//! "delivered" means and why the tree has two levels.
#![cfg(not(zbmd_loom))]

// The example's own code, run here rather than copied: its `main` (and
// what only `main` uses) is dead code in this test.
#[allow(dead_code)]
#[path = "../../examples/fault_injection.rs"]
mod example;

use example::{Config, DEFAULT_SEED, MESSAGES, Report, WORKERS};

/// Runs the example and asserts its three properties, printing its table
/// when one fails (and with `--nocapture`).
fn run(seed: u64, clients: usize) -> Report {
    let report = example::run(&Config { seed, clients }).expect("the example runs");
    eprintln!("seed {seed}, {clients} clients:\n{report}");
    for property in report.properties() {
        assert!(property.holds, "seed {seed}: {}: {}\n{report}", property.name, property.detail);
    }
    report
}

/// The figures the properties rest on, asserted directly, and that the run
/// injected faults at all (a plan that injected nothing would pass
/// vacuously).
fn assert_faults_seen(report: &Report) {
    let (tally, exits, counters) = (&report.tally, &report.exits, &report.counters);
    assert!(report.delivered_share() > 0.99);
    assert!(tally.first_attempt <= tally.delivered && tally.delivered <= MESSAGES);
    assert_eq!(tally.answering, WORKERS);
    assert_eq!(report.alive, WORKERS);
    assert_eq!(exits.injected_crash, counters.faults_crash);
    assert_eq!(report.drops_seen(), counters.faults_drop as i64);
    assert_eq!(tally.device_lost, counters.device_fires);
    // About 1% and 0.1% of some 10,300 messages: wide bounds, the seeds
    // are fixed.
    assert!((50..200).contains(&counters.faults_crash), "{report}");
    assert!((1..50).contains(&counters.faults_drop), "{report}");
    // Every crash restarted the workers, or landed in a restart already
    // under way.
    let crashes = exits.injected_crash + exits.device_lost;
    assert!((1..=crashes).contains(&report.restart_events()), "{report}");
}

#[test]
fn the_example_seed_meets_its_three_properties() {
    let report = run(DEFAULT_SEED, Config::default().clients);
    assert_faults_seen(&report);
    // The example's seed is chosen to show a device failure too.
    assert!(report.counters.device_fires > 0, "{report}");
}

#[test]
fn one_client_meets_them_too() {
    let report = run(DEFAULT_SEED, 1);
    assert_faults_seen(&report);
}

#[test]
fn other_seeds_meet_them_too() {
    let mut device_failures = 0;
    for seed in [1, 42, 2024] {
        let report = run(seed, 4);
        assert_faults_seen(&report);
        device_failures += report.counters.device_fires;
    }
    assert!(device_failures > 0, "the seeds saw no device failure");
}
