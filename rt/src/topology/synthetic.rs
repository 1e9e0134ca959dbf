//! Fake machines for tests, built without hwloc.

use super::{
    Cache, CacheKind, CpuSet, MAX_CPUS, PuRecord, Topology, TopologyError, TopologySource,
};

/// L1d size of a synthetic core. Nominal (hwloc's synthetic default); only
/// the sharing structure matters to placement.
const L1D_BYTES: u64 = 32 << 10;
/// L2 size of a synthetic core (hwloc's synthetic default).
const L2_BYTES: u64 = 4 << 20;
/// L3 size of one synthetic L3 domain (hwloc's synthetic default).
const L3_BYTES: u64 = 16 << 20;

/// Which CPUs share one L3 in a synthetic machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3Scope {
    /// One L3 per NUMA node (AMD EPYC in NPS4, Intel with sub-NUMA
    /// clustering).
    Numa,
    /// One L3 per package.
    Package,
    /// No L3.
    None,
}

/// The shape of a fake, perfectly symmetric machine: `packages` packages,
/// each with `numa_per_package` NUMA nodes of `cores_per_numa` cores with
/// `threads_per_core` SMT threads. Every core has its own L1d and L2.
///
/// ```
/// use zbmd_rt::topology::{L3Scope, SyntheticSpec, Topology};
/// let spec = SyntheticSpec {
///     packages: 2,
///     numa_per_package: 2,
///     cores_per_numa: 4,
///     threads_per_core: 2,
///     l3_per: L3Scope::Numa,
/// };
/// let machine = Topology::synthetic(&spec).unwrap();
/// assert_eq!(machine.cpus().len(), 32);
/// assert_eq!(machine.numa_nodes().len(), 4);
/// assert_eq!(spec.hwloc_description(), "pack:2 numa:2 l3:1 core:4 l2:1 l1d:1 pu:2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Packages (sockets).
    pub packages: usize,
    /// NUMA nodes in each package.
    pub numa_per_package: usize,
    /// Physical cores in each NUMA node.
    pub cores_per_numa: usize,
    /// SMT threads (processing units) in each core.
    pub threads_per_core: usize,
    /// Which CPUs share an L3.
    pub l3_per: L3Scope,
}

impl SyntheticSpec {
    /// The number of CPUs, or `None` if it overflows `usize`.
    pub fn cpus(&self) -> Option<usize> {
        self.packages
            .checked_mul(self.numa_per_package)?
            .checked_mul(self.cores_per_numa)?
            .checked_mul(self.threads_per_core)
    }

    /// The same machine as an hwloc synthetic description, for
    /// `Topology::from_hwloc_synthetic` (feature `hwloc`).
    pub fn hwloc_description(&self) -> String {
        let l3 = match self.l3_per {
            L3Scope::Numa => format!("numa:{} l3:1", self.numa_per_package),
            L3Scope::Package => format!("l3:1 numa:{}", self.numa_per_package),
            L3Scope::None => format!("numa:{}", self.numa_per_package),
        };
        format!(
            "pack:{} {l3} core:{} l2:1 l1d:1 pu:{}",
            self.packages, self.cores_per_numa, self.threads_per_core
        )
    }

    fn validate(&self) -> Result<usize, TopologyError> {
        let counts = [
            ("packages", self.packages),
            ("numa_per_package", self.numa_per_package),
            ("cores_per_numa", self.cores_per_numa),
            ("threads_per_core", self.threads_per_core),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(TopologyError::InvalidSpec {
                reason: format!("{name} must be at least 1"),
            });
        }
        match self.cpus() {
            Some(cpus) if cpus <= MAX_CPUS => Ok(cpus),
            _ => Err(TopologyError::InvalidSpec {
                reason: format!("{self:?} has more than {MAX_CPUS} CPUs; make it smaller"),
            }),
        }
    }
}

/// Builds the machine: CPUs numbered depth first, package, then node, then
/// core, then thread, the way hwloc numbers a synthetic topology.
pub(super) fn build(spec: &SyntheticSpec) -> Result<Topology, TopologyError> {
    let cpus = spec.validate()?;
    let threads = spec.threads_per_core;
    let cores_per_package = spec.numa_per_package * spec.cores_per_numa;
    let mut records = Vec::with_capacity(cpus);
    let mut caches = Vec::new();
    for core in 0..cpus / threads {
        let first = core * threads;
        let core_cpus = CpuSet::from_cpus(first..first + threads)?;
        caches.push(cache(1, CacheKind::Data, L1D_BYTES, core_cpus));
        caches.push(cache(2, CacheKind::Unified, L2_BYTES, core_cpus));
        for cpu in first..first + threads {
            records.push(PuRecord {
                cpu,
                package: core / cores_per_package,
                numa_node: core / spec.cores_per_numa,
                core_key: first,
                core_os_id: core,
            });
        }
    }
    let l3_cpus = match spec.l3_per {
        L3Scope::Numa => Some(spec.cores_per_numa * threads),
        L3Scope::Package => Some(cores_per_package * threads),
        L3Scope::None => None,
    };
    if let Some(width) = l3_cpus {
        for first in (0..cpus).step_by(width) {
            caches.push(cache(
                3,
                CacheKind::Unified,
                L3_BYTES,
                CpuSet::from_cpus(first..first + width)?,
            ));
        }
    }
    Topology::assemble(records, caches, TopologySource::Synthetic)
}

fn cache(level: u8, kind: CacheKind, size_bytes: u64, cpus: CpuSet) -> Cache {
    Cache { level, kind, size_bytes: Some(size_bytes), cpus }
}
