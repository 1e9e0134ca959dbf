//! What a runtime costs the process that builds it, per builder preset:
//! address space, resident memory, threads, and the time `build` takes.
//!
//! | preset | builder |
//! |---|---|
//! | `default` | `Runtime::builder()`: one pinned shard per allowed CPU, the default pools and limits |
//! | `default_unpinned` | `Runtime::builder().pin(false)`: the same, unpinned |
//! | `default_16_shards` | `Runtime::builder().pin(false)` on a modelled 16-CPU machine (`.topology(..)`): the defaults on a 16-core server, measured on a small one |
//! | `embedded` | `Runtime::builder().embedded()`: one unpinned shard, small pools, one blocking thread |
//!
//! First, before criterion runs, a table of footprints (printed as
//! Markdown, the rows of `bench_results/runtime_footprint.md`). Each row
//! comes from a fresh process (this executable again, with
//! [`PRESET_VAR`] naming the preset), because the first runtime of a
//! process pays for things the next ones reuse (glibc's per-thread malloc
//! arenas, 64 MiB of address space each): `/proc/self/status` before
//! `build`, with the runtime running one actor, and after `shutdown` (every
//! reference dropped), as differences from before: `VmSize` (address
//! space), `VmRSS` (resident), `Threads`; then the median wall time of
//! [`STARTS`] more builds, each followed by a shutdown outside the timed
//! span. Then criterion measures `build` alone (`runtime_start/<preset>`),
//! the shutdown again outside the timed span.
//!
//! Run with `cargo bench -p zbmd-benches --bench runtime_footprint` (about
//! half a minute).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use zbmd_rt::topology::{L3Scope, SyntheticSpec, Topology};
use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime, RuntimeBuilder};

/// Builds timed for the table's median: enough for a stable middle value,
/// few enough that the default preset (tens of milliseconds each) stays
/// quick.
const STARTS: usize = 21;

/// Set in the child process that measures one preset's row.
const PRESET_VAR: &str = "ZBMD_FOOTPRINT_PRESET";

/// A preset measured: its name and how to make its builder.
type Preset = (&'static str, fn() -> RuntimeBuilder);

/// The presets measured.
fn presets() -> [Preset; 4] {
    [
        ("default", Runtime::builder),
        ("default_unpinned", || Runtime::builder().pin(false)),
        ("default_16_shards", || Runtime::builder().pin(false).topology(sixteen_cpus())),
        ("embedded", || Runtime::builder().embedded()),
    ]
}

/// A modelled machine of 16 CPUs (one package, one NUMA node, 16 cores):
/// unpinned, the default shard count is its CPU count.
fn sixteen_cpus() -> Topology {
    let spec = SyntheticSpec {
        packages: 1,
        numa_per_package: 1,
        cores_per_numa: 16,
        threads_per_core: 1,
        l3_per: L3Scope::Package,
    };
    Topology::synthetic(&spec).expect("a 16-CPU topology")
}

/// One actor answering calls, so the measured runtime has done real work.
struct Echo;

impl Actor for Echo {
    type Msg = ReplyTo<u32>;
    fn handle(&mut self, _: &mut Context<'_, Self>, reply: ReplyTo<u32>) -> Result<(), ActorError> {
        reply.reply(7);
        Ok(())
    }
}

/// `VmSize` and `VmRSS` (KiB) and `Threads` of this process.
#[derive(Clone, Copy, Debug)]
struct Status {
    vm_kib: i64,
    rss_kib: i64,
    threads: i64,
}

fn status() -> Status {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    Status { vm_kib: field("VmSize:"), rss_kib: field("VmRSS:"), threads: field("Threads:") }
}

fn mib(kib: i64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// One row of the footprint table.
fn footprint(name: &str, builder: fn() -> RuntimeBuilder) -> String {
    let before = status();
    let rt = builder().build().expect("runtime");
    let echo = rt.spawn(Echo).expect("spawn");
    assert_eq!(rt.call(&echo, |reply| reply, Duration::from_secs(5)), Ok(7));
    let running = status();
    let shards = rt.shards();
    let io = rt.io_backend();
    // The ref keeps the runtime's shared state (and its pools) alive.
    drop(echo);
    rt.shutdown();
    let after = status();
    let mut starts: Vec<Duration> = (0..STARTS)
        .map(|_| {
            let start = Instant::now();
            let rt = builder().build().expect("runtime");
            let took = start.elapsed();
            rt.shutdown();
            took
        })
        .collect();
    starts.sort();
    let median = starts[STARTS / 2];
    format!(
        "| {name} | {shards} | {io} | {} | {} | {} | {:.1} | {} / {} |",
        mib(running.vm_kib - before.vm_kib),
        mib(running.rss_kib - before.rss_kib),
        running.threads - before.threads,
        median.as_secs_f64() * 1e3,
        mib(after.vm_kib - before.vm_kib),
        mib(after.rss_kib - before.rss_kib),
    )
}

/// The table, one fresh process per row.
fn footprint_table() {
    println!(
        "| preset | shards | I/O | address space (MiB) | resident (MiB) | threads | build median of {STARTS} (ms) | after shutdown: address space / resident (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("this executable");
    for (name, _) in presets() {
        let out = std::process::Command::new(&exe)
            .env(PRESET_VAR, name)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("the measuring process");
        assert!(out.status.success(), "measuring {name} failed: {}", out.status);
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn runtime_start(c: &mut Criterion) {
    let mut group = c.benchmark_group("runtime_start");
    // A default build takes tens of milliseconds: a few samples suffice.
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, builder) in presets() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let rt = builder().build().expect("runtime");
                    total += start.elapsed();
                    rt.shutdown();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, runtime_start);

fn main() {
    if let Ok(preset) = std::env::var(PRESET_VAR) {
        let (name, builder) = presets()
            .into_iter()
            .find(|(name, _)| *name == preset)
            .unwrap_or_else(|| panic!("no preset {preset:?}"));
        println!("{}", footprint(name, builder));
        return;
    }
    footprint_table();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
