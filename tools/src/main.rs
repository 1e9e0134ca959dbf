//! `zbmd-node`: what one node of a zbmd job runs (`srun zbmd-node ...`).
//!
//! - `zbmd-node info` prints the machine's topology as the runtime sees it
//!   and every device of every backend, with its memory and capability,
//!   and says why each absent backend is absent.
//! - `zbmd-node train` trains a model under supervision (by default an MLP
//!   on the embedded digits) and reports its held-out accuracy; see
//!   `zbmd-node train --help`. Exit codes: 0 success, 2 a bad argument,
//!   configuration or environment variable, 1 a run that failed or could
//!   not write what it was asked to (a checkpoint, `--save-params`, its
//!   log), 128 + the signal for a run stopped by SIGTERM or SIGINT after
//!   checkpointing its last step (docs/training.md, "What can go wrong").

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zbmd_gpu::{BackendStatus, detect_devices};
use zbmd_rt::topology::Topology;

mod plot;
mod progress;
mod train;

#[derive(Parser)]
#[command(name = "zbmd-node", version, about = "A node of a zbmd job")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the topology and every device found, and why a backend is absent.
    Info,
    /// Train a model under supervision and report its held-out accuracy.
    Train(Box<train::TrainArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `train` reports every crash and recovery itself (as log lines or
    // JSON), so the runtime's own warnings about them would only repeat
    // those and break the progress bar: it logs errors only unless RUST_LOG
    // says otherwise.
    let default_filter = match cli.command {
        Command::Info => "warn",
        Command::Train(_) => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Info => info(),
        Command::Train(args) => train::run(*args),
    }
}

fn info() -> ExitCode {
    match Topology::detect() {
        Ok(topology) => {
            println!("topology: {topology}");
            for node in topology.numa_nodes() {
                println!("  NUMA node {}: CPUs {}", node.id, node.cpus);
            }
        }
        Err(error) => println!("topology: unknown ({error})"),
    }
    let detection = detect_devices();
    if let Some(warning) = &detection.warning {
        println!("warning: {warning}");
    }
    println!("devices (best first):");
    for device in &detection.devices {
        let info = device.info();
        let free = device.memory().map_or_else(
            |error| format!("free unknown: {error}"),
            |memory| format!("{} free", gib(memory.free_bytes)),
        );
        println!(
            "  {:<9} {}\n            memory {} ({free}), capability {}, {} threads per block{}",
            info.id.to_string(),
            info.name,
            gib(info.memory_total_bytes),
            info.capability,
            info.max_block_threads,
            if info.is_software { ", software" } else { "" },
        );
    }
    println!("backends:");
    for report in &detection.backends {
        match &report.status {
            BackendStatus::Available(count) => {
                println!(
                    "  {:<7} {count} device{}",
                    report.backend.name(),
                    if *count == 1 { "" } else { "s" }
                )
            }
            BackendStatus::Absent(reason) => {
                println!("  {:<7} absent: {reason}", report.backend.name())
            }
        }
    }
    ExitCode::SUCCESS
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
