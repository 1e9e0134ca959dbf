//! The one error type of the topology module.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while finding the machine's topology,
/// placing shards on it or pinning a thread.
///
/// Each message says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A CPU index is at or beyond [`MAX_CPUS`](super::MAX_CPUS).
    #[error(
        "CPU {cpu} is beyond the {max} CPUs zbmd supports; \
         restrict the process to lower-numbered CPUs (taskset, srun --cpu-bind) \
         or raise MAX_CPUS and rebuild"
    )]
    CpuOutOfRange {
        /// The index that does not fit.
        cpu: usize,
        /// The number of CPUs a [`CpuSet`](super::CpuSet) holds.
        max: usize,
    },

    /// A CPU list such as `"0-3,8"` could not be parsed.
    #[error(
        "malformed CPU list {input:?}: {reason}; \
         expected the kernel's cpulist format, e.g. \"0-3,8,10-11\""
    )]
    CpuListParse {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A sysfs file (or directory) exists but could not be read.
    #[error("cannot read {}: {source}; check that sysfs is mounted and readable", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A sysfs file holds a value that makes no sense.
    #[error(
        "malformed value {value:?} in {}: {reason}; \
         the topology cannot be trusted, report the file's contents",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The topology source described no CPU at all.
    #[error(
        "no CPU found in {source_name}; check that the sysfs tree or the \
         topology description lists at least one CPU"
    )]
    NoCpus {
        /// Where the topology was read from.
        source_name: String,
    },

    /// A synthetic topology description is invalid.
    #[error("invalid synthetic topology: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },

    /// hwloc failed to build or read a topology.
    #[error("hwloc failed to {action}: {reason}; run without the `hwloc` feature to use sysfs")]
    Hwloc {
        /// What was being done.
        action: &'static str,
        /// What hwloc said.
        reason: String,
    },

    /// `sched_getaffinity` failed.
    #[error("cannot read the thread's CPU affinity mask: {source}")]
    Affinity {
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// `sched_setaffinity` failed.
    #[error(
        "cannot pin the thread to CPU {cpu}: {source}; \
         the CPU may be offline or outside the cgroup's cpuset"
    )]
    Pin {
        /// The CPU asked for.
        cpu: usize,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// `sched_getcpu` failed.
    #[error("cannot read the CPU this thread runs on: {source}")]
    CurrentCpu {
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A CPU is outside the set the process may run on.
    #[error(
        "CPU {cpu} is not in the allowed CPU set {allowed}; pick a CPU from that \
         set or widen the affinity mask (taskset, srun --cpu-bind)"
    )]
    CpuNotAllowed {
        /// The CPU asked for.
        cpu: usize,
        /// The allowed set, in cpulist format.
        allowed: String,
    },

    /// A CPU is allowed but the topology does not know it.
    #[error(
        "CPU {cpu} is not part of the topology ({cpus}); \
         it may be offline, pick an online CPU"
    )]
    CpuNotInTopology {
        /// The CPU asked for.
        cpu: usize,
        /// The topology's CPUs, in cpulist format.
        cpus: String,
    },

    /// Restricting a topology to a CPU set left nothing.
    #[error(
        "none of the allowed CPUs {allowed} is in the topology ({cpus}); \
         the affinity mask and the topology describe different machines"
    )]
    NoAllowedCpus {
        /// The allowed set, in cpulist format.
        allowed: String,
        /// The topology's CPUs, in cpulist format.
        cpus: String,
    },

    /// Zero shards were asked for.
    #[error("asked for 0 shards; a runtime needs at least one shard")]
    ZeroShards,

    /// More shards than CPUs to put them on.
    #[error(
        "asked for {shards} shards but only {cpus} CPUs are allowed; \
         lower the shard count or widen the affinity mask (taskset, srun --cpu-bind)"
    )]
    TooManyShards {
        /// Shards asked for.
        shards: usize,
        /// CPUs available to them.
        cpus: usize,
    },

    /// A CPU appears twice in an explicit CPU list.
    #[error("CPU {cpu} is listed twice; each shard needs its own CPU")]
    DuplicateCpu {
        /// The repeated CPU.
        cpu: usize,
    },

    /// An explicit CPU list does not have one CPU per shard.
    #[error(
        "asked for {shards} shards but the CPU list names {listed} CPUs; \
         list exactly one CPU per shard"
    )]
    CpuListLength {
        /// Shards asked for.
        shards: usize,
        /// CPUs in the list.
        listed: usize,
    },
}
