//! Machine topology, shard placement and thread pinning.
//!
//! zbmd runs one shard per CPU, pinned. This module answers three questions
//! at startup:
//!
//! 1. **What does the machine look like?** A [`Topology`] lists packages
//!    (sockets), NUMA nodes, physical cores, processing units (the OS CPUs,
//!    with their SMT siblings) and the data/unified caches with the CPUs
//!    sharing each. [`Topology::detect`] reads it from hwloc (feature
//!    `hwloc`) or from sysfs (`/sys/devices/system/{cpu,node}`, the layout
//!    described in the kernel's `Documentation/admin-guide/cputopology.rst`);
//!    [`Topology::synthetic`] and [`Topology::from_sysfs_root`] fake one for
//!    tests.
//! 2. **Where may we run?** [`CpuSet::current_affinity`] is the mask the
//!    process was started with (`taskset`, `srun --cpu-bind`, a cgroup);
//!    [`Topology::restrict`] cuts the topology down to it. zbmd never pins
//!    outside that mask.
//! 3. **Which shard goes where?** [`place`] applies a [`Placement`] policy
//!    (`Pack`, `Spread` or an explicit CPU list, after glommio's
//!    `MaxPack`/`MaxSpread`/`Custom`) and returns one [`ShardPlacement`] per
//!    shard; [`pin_current_thread`] then pins each shard's thread.
//!
//! ```
//! use zbmd_rt::topology::{place, L3Scope, Placement, SyntheticSpec, Topology};
//! let machine = Topology::synthetic(&SyntheticSpec {
//!     packages: 2,
//!     numa_per_package: 2,
//!     cores_per_numa: 4,
//!     threads_per_core: 2,
//!     l3_per: L3Scope::Numa,
//! })
//! .unwrap();
//! let plan = place(&machine, &machine.cpus(), 4, &Placement::Spread).unwrap();
//! let nodes: Vec<usize> = plan.iter().map(|p| p.numa_node).collect();
//! assert_eq!(nodes, [0, 2, 1, 3]);
//! ```
//!
//! See `docs/topology.md` for the placement rules in prose.

mod claims;
mod cpuset;
mod error;
#[cfg(feature = "hwloc")]
mod hwloc;
mod pin;
mod placement;
mod synthetic;
mod sysfs;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use claims::pinned_cpus;
pub(crate) use claims::{CpuClaim, claim};
pub use cpuset::{CpuSet, Iter as CpuSetIter, MAX_CPUS};
pub use error::TopologyError;
pub use pin::{current_cpu, pin_current_thread};
pub use placement::{Placement, ShardPlacement, place};
pub use synthetic::{L3Scope, SyntheticSpec};

/// A physical package (socket).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Package {
    /// The OS package id (`physical_package_id` in sysfs).
    pub id: usize,
    /// The package's CPUs.
    pub cpus: CpuSet,
}

/// A NUMA node that has CPUs (memory-only nodes are left out: no shard can
/// run there).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NumaNode {
    /// The OS node id (`nodeN` in sysfs).
    pub id: usize,
    /// The node's CPUs.
    pub cpus: CpuSet,
}

/// A physical core: one or more processing units that are SMT siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Core {
    /// zbmd's id for the core: cores numbered 0, 1, ... in order of their
    /// lowest CPU on the whole machine. A restricted topology keeps the ids.
    pub id: usize,
    /// The id the OS or hwloc reports (sysfs `core_id`, unique only within
    /// a package; informational).
    pub os_id: usize,
    /// The package id of the core's first CPU.
    pub package: usize,
    /// The NUMA node id of the core's first CPU.
    pub numa_node: usize,
    /// The core's processing units: its SMT siblings, itself included.
    pub cpus: CpuSet,
}

/// A processing unit: one OS CPU (a hardware thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessingUnit {
    /// The OS CPU index.
    pub cpu: usize,
    /// The [`Core::id`] of its core.
    pub core: usize,
    /// Its NUMA node id.
    pub numa_node: usize,
    /// Its package id.
    pub package: usize,
}

/// What a cache holds. Instruction caches are left out: they do not matter
/// for placement, and hwloc drops them by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheKind {
    /// Data only (an L1d).
    Data,
    /// Data and instructions (L2, L3 on most machines).
    Unified,
}

/// A CPU cache and the CPUs that share it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cache {
    /// 1 for L1, 2 for L2, ...
    pub level: u8,
    /// Data or unified.
    pub kind: CacheKind,
    /// Its size, where the source reports one.
    pub size_bytes: Option<u64>,
    /// The CPUs sharing it.
    pub cpus: CpuSet,
}

/// Where a [`Topology`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologySource {
    /// Read from sysfs.
    Sysfs,
    /// Probed by hwloc on this machine.
    Hwloc,
    /// Built by hwloc from a synthetic description.
    HwlocSynthetic,
    /// Built from a [`SyntheticSpec`].
    Synthetic,
    /// No topology information at all (no sysfs): every allowed CPU is its
    /// own core on one package and one NUMA node.
    AffinityOnly,
}

/// The machine's CPUs and how they are grouped.
///
/// Every CPU belongs to exactly one core, one NUMA node and one package;
/// every list is sorted by id. Build one with [`Topology::detect`] (or one of
/// the fakes for tests), then [`restrict`](Topology::restrict) it to the
/// affinity mask before placing shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    packages: Vec<Package>,
    numa_nodes: Vec<NumaNode>,
    cores: Vec<Core>,
    pus: Vec<ProcessingUnit>,
    caches: Vec<Cache>,
    cpus: CpuSet,
    source: TopologySource,
}

/// One CPU as a source reports it, before grouping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PuRecord {
    pub(crate) cpu: usize,
    pub(crate) package: usize,
    pub(crate) numa_node: usize,
    /// Equal for SMT siblings, distinct across cores (the lowest sibling).
    pub(crate) core_key: usize,
    pub(crate) core_os_id: usize,
}

impl Topology {
    /// The topology of this machine: hwloc when the `hwloc` feature is on
    /// (falling back to sysfs if hwloc fails), sysfs otherwise, and when
    /// there is no sysfs at all, a flat topology of the allowed CPUs.
    /// Never panics.
    ///
    /// # Errors
    /// A [`TopologyError`] when sysfs exists but cannot be read or holds a
    /// malformed value.
    pub fn detect() -> Result<Self, TopologyError> {
        #[cfg(feature = "hwloc")]
        if let Ok(topology) = Self::from_hwloc() {
            return Ok(topology);
        }
        if !Path::new(sysfs::CPU_DIR).is_dir() {
            return Self::affinity_only(&CpuSet::current_affinity()?);
        }
        Self::from_sysfs()
    }

    /// Reads the topology from `/sys`.
    ///
    /// # Errors
    /// As [`Topology::from_sysfs_root`].
    pub fn from_sysfs() -> Result<Self, TopologyError> {
        Self::from_sysfs_root("/sys")
    }

    /// Reads the topology from a sysfs tree rooted at `root` (the directory
    /// standing for `/sys`): `devices/system/cpu/cpuN/topology/*`,
    /// `devices/system/cpu/cpuN/cache/indexM/*`,
    /// `devices/system/cpu/online` and `devices/system/node/nodeN/cpulist`.
    ///
    /// Missing files degrade gracefully: no `node` directory means one NUMA
    /// node 0; no `cache` directory means no caches; a missing
    /// `thread_siblings_list` groups cores by package and `core_id`; a
    /// missing `physical_package_id` means package 0; a CPU listed in no
    /// node goes to the lowest node. Tests build fake trees with this.
    ///
    /// # Errors
    /// [`TopologyError::Malformed`] naming the file for a value that does not
    /// parse, [`TopologyError::Io`] for a file that exists but cannot be
    /// read, [`TopologyError::NoCpus`] for a tree with no CPU.
    pub fn from_sysfs_root(root: impl AsRef<Path>) -> Result<Self, TopologyError> {
        sysfs::read(root.as_ref())
    }

    /// Probes this machine with hwloc.
    ///
    /// # Errors
    /// [`TopologyError::Hwloc`] when hwloc cannot build the topology.
    #[cfg(feature = "hwloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hwloc")))]
    pub fn from_hwloc() -> Result<Self, TopologyError> {
        hwloc::detect()
    }

    /// Builds a fake machine with hwloc from a [synthetic description]
    /// such as `"pack:2 numa:2 core:4 pu:2"`; [`SyntheticSpec::hwloc_description`]
    /// writes one for a spec.
    ///
    /// # Errors
    /// [`TopologyError::Hwloc`] when hwloc rejects the description.
    ///
    /// [synthetic description]: https://hwloc.readthedocs.io/en/stable/synthetic.html
    #[cfg(feature = "hwloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hwloc")))]
    pub fn from_hwloc_synthetic(description: &str) -> Result<Self, TopologyError> {
        hwloc::synthetic(description)
    }

    /// Builds a fake machine from a [`SyntheticSpec`], with no hwloc needed.
    /// CPUs are numbered depth first as hwloc does (SMT siblings adjacent).
    ///
    /// # Errors
    /// [`TopologyError::InvalidSpec`] for a zero count or more than
    /// [`MAX_CPUS`] CPUs.
    pub fn synthetic(spec: &SyntheticSpec) -> Result<Self, TopologyError> {
        synthetic::build(spec)
    }

    /// A flat topology: each CPU of `cpus` its own core, on package 0 and
    /// NUMA node 0, no caches. What [`detect`](Topology::detect) falls back
    /// to when the machine offers no topology information.
    ///
    /// # Errors
    /// [`TopologyError::NoCpus`] for an empty set.
    pub fn affinity_only(cpus: &CpuSet) -> Result<Self, TopologyError> {
        let records = cpus
            .iter()
            .map(|cpu| PuRecord { cpu, package: 0, numa_node: 0, core_key: cpu, core_os_id: cpu })
            .collect();
        Self::assemble(records, Vec::new(), TopologySource::AffinityOnly)
    }

    /// The topology cut down to the CPUs in `allowed`: cores, nodes,
    /// packages and caches keep only allowed CPUs, and those left with none
    /// disappear. Ids are kept. Start from [`CpuSet::current_affinity`].
    ///
    /// # Errors
    /// [`TopologyError::NoAllowedCpus`] if no CPU of the topology is allowed.
    pub fn restrict(&self, allowed: &CpuSet) -> Result<Self, TopologyError> {
        let cpus = self.cpus.intersection(allowed);
        if cpus.is_empty() {
            return Err(TopologyError::NoAllowedCpus {
                allowed: allowed.to_string(),
                cpus: self.cpus.to_string(),
            });
        }
        let cut = |set: &CpuSet| set.intersection(&cpus);
        let restricted = Self {
            packages: keep_nonempty(&self.packages, |p| Package {
                cpus: cut(&p.cpus),
                ..p.clone()
            }),
            numa_nodes: keep_nonempty(&self.numa_nodes, |n| NumaNode {
                cpus: cut(&n.cpus),
                ..n.clone()
            }),
            cores: keep_nonempty(&self.cores, |c| Core { cpus: cut(&c.cpus), ..c.clone() }),
            caches: keep_nonempty(&self.caches, |c| Cache { cpus: cut(&c.cpus), ..c.clone() }),
            pus: self.pus.iter().filter(|pu| cpus.contains(pu.cpu)).copied().collect(),
            cpus,
            source: self.source,
        };
        restricted.check_invariants();
        Ok(restricted)
    }

    /// All CPUs of the topology.
    pub fn cpus(&self) -> CpuSet {
        self.cpus
    }

    /// Packages, by id.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// NUMA nodes with CPUs, by id.
    pub fn numa_nodes(&self) -> &[NumaNode] {
        &self.numa_nodes
    }

    /// Physical cores, by id.
    pub fn cores(&self) -> &[Core] {
        &self.cores
    }

    /// Processing units (OS CPUs), by CPU index.
    pub fn pus(&self) -> &[ProcessingUnit] {
        &self.pus
    }

    /// Data and unified caches, by level, then by first CPU.
    pub fn caches(&self) -> &[Cache] {
        &self.caches
    }

    /// Where this topology came from.
    pub fn source(&self) -> TopologySource {
        self.source
    }

    /// The processing unit for OS CPU `cpu`.
    pub fn pu(&self, cpu: usize) -> Option<&ProcessingUnit> {
        self.pus.binary_search_by_key(&cpu, |pu| pu.cpu).ok().map(|i| &self.pus[i])
    }

    /// The core with [`Core::id`] `id`.
    pub fn core(&self, id: usize) -> Option<&Core> {
        self.cores.binary_search_by_key(&id, |core| core.id).ok().map(|i| &self.cores[i])
    }

    /// The SMT siblings of `cpu` (itself included).
    pub fn smt_siblings(&self, cpu: usize) -> Option<CpuSet> {
        self.pu(cpu).and_then(|pu| self.core(pu.core)).map(|core| core.cpus)
    }

    /// Groups per-CPU records into a topology. Every source ends here.
    pub(crate) fn assemble(
        mut records: Vec<PuRecord>,
        caches: Vec<Cache>,
        source: TopologySource,
    ) -> Result<Self, TopologyError> {
        if records.is_empty() {
            return Err(TopologyError::NoCpus { source_name: format!("{source:?}") });
        }
        records.sort_by_key(|r| r.cpu);
        records.dedup_by_key(|r| r.cpu);
        let cpus = CpuSet::from_cpus(records.iter().map(|r| r.cpu))?;
        let (cores, core_of_key) = group_cores(&records);
        let mut packages = BTreeMap::<usize, CpuSet>::new();
        let mut nodes = BTreeMap::<usize, CpuSet>::new();
        let mut pus = Vec::with_capacity(records.len());
        for r in &records {
            // Cannot fail: every cpu made it into `cpus` above.
            packages.entry(r.package).or_default().insert(r.cpu)?;
            nodes.entry(r.numa_node).or_default().insert(r.cpu)?;
            let core = core_of_key[&r.core_key];
            pus.push(ProcessingUnit {
                cpu: r.cpu,
                core,
                numa_node: r.numa_node,
                package: r.package,
            });
        }
        let topology = Self {
            packages: packages.into_iter().map(|(id, cpus)| Package { id, cpus }).collect(),
            numa_nodes: nodes.into_iter().map(|(id, cpus)| NumaNode { id, cpus }).collect(),
            cores,
            pus,
            caches: normalize_caches(caches, &cpus),
            cpus,
            source,
        };
        topology.check_invariants();
        Ok(topology)
    }

    /// Asserts that cores, nodes and packages each partition the CPUs and
    /// that every processing unit agrees with its core.
    fn check_invariants(&self) {
        let partition = |sets: &mut dyn Iterator<Item = CpuSet>| {
            let mut seen = CpuSet::new();
            for set in sets {
                assert!(!set.is_empty(), "empty group in topology");
                assert!(set.intersection(&seen).is_empty(), "CPU in two groups");
                seen = seen.union(&set);
            }
            assert_eq!(seen, self.cpus, "groups do not cover the CPUs");
        };
        partition(&mut self.cores.iter().map(|c| c.cpus));
        partition(&mut self.numa_nodes.iter().map(|n| n.cpus));
        partition(&mut self.packages.iter().map(|p| p.cpus));
        assert_eq!(self.pus.len(), self.cpus.len());
        for pu in &self.pus {
            let core = self.core(pu.core).expect("processing unit names a missing core");
            assert!(core.cpus.contains(pu.cpu), "core does not hold its CPU");
        }
    }
}

/// Cores from records: grouped by `core_key`, numbered by lowest CPU.
/// Returns the cores and the core id of each key.
fn group_cores(records: &[PuRecord]) -> (Vec<Core>, BTreeMap<usize, usize>) {
    // Records are sorted by CPU, so a key's first record is its lowest CPU.
    let mut by_key = BTreeMap::<usize, (PuRecord, CpuSet)>::new();
    for r in records {
        let entry = by_key.entry(r.core_key).or_insert((*r, CpuSet::new()));
        // Cannot fail: the CPU was checked against MAX_CPUS by the caller.
        let _ = entry.1.insert(r.cpu);
    }
    let mut groups: Vec<(PuRecord, CpuSet)> = by_key.into_values().collect();
    groups.sort_by_key(|(first, _)| first.cpu);
    let mut core_of_key = BTreeMap::new();
    let cores = groups
        .into_iter()
        .enumerate()
        .map(|(id, (first, cpus))| {
            core_of_key.insert(first.core_key, id);
            Core {
                id,
                os_id: first.core_os_id,
                package: first.package,
                numa_node: first.numa_node,
                cpus,
            }
        })
        .collect();
    (cores, core_of_key)
}

/// Caches cut down to the topology's CPUs, without empties or duplicates,
/// sorted by level, kind and first CPU.
fn normalize_caches(caches: Vec<Cache>, cpus: &CpuSet) -> Vec<Cache> {
    let mut out: Vec<Cache> = caches
        .into_iter()
        .map(|c| Cache { cpus: c.cpus.intersection(cpus), ..c })
        .filter(|c| !c.cpus.is_empty())
        .collect();
    out.sort_by_key(|c| (c.level, c.kind, c.cpus.first()));
    out.dedup_by(|a, b| a.level == b.level && a.kind == b.kind && a.cpus == b.cpus);
    out
}

/// Maps every item and keeps those whose CPU set is not empty.
fn keep_nonempty<T, U: HasCpus>(items: &[T], map: impl Fn(&T) -> U) -> Vec<U> {
    items.iter().map(map).filter(|u| !u.cpus().is_empty()).collect()
}

trait HasCpus {
    fn cpus(&self) -> &CpuSet;
}

macro_rules! has_cpus {
    ($($ty:ty),*) => {$(
        impl HasCpus for $ty {
            fn cpus(&self) -> &CpuSet {
                &self.cpus
            }
        }
    )*};
}
has_cpus!(Package, NumaNode, Core, Cache);

/// A one-line summary for logs: `"2 packages, 4 NUMA nodes, 16 cores,
/// 32 CPUs (0-31), from Synthetic"`.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packages, {} NUMA nodes, {} cores, {} CPUs ({}), from {:?}",
            self.packages.len(),
            self.numa_nodes.len(),
            self.cores.len(),
            self.pus.len(),
            self.cpus,
            self.source
        )
    }
}
