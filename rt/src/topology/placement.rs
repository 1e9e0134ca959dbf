//! Shard placement policies, after glommio's `MaxPack`, `MaxSpread` and
//! `Custom` placements, computed from a [`Topology`] that tests can fake.
//!
//! Both automatic policies order the allowed CPUs and give shard `i` the
//! `i`-th CPU. The orders are built in *SMT tiers*: tier 0 holds the first
//! allowed CPU of every core, tier 1 the second, and so on. SMT siblings
//! share a core's execution units and L1/L2, so a second thread on a busy
//! core buys far less than a free core does.

use std::collections::BTreeMap;
use std::fmt;

use super::{Core, CpuSet, Topology, TopologyError};

/// How shards are laid out on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Keep shards close together (glommio's `MaxPack`): fill one NUMA node
    /// before the next, and the nodes of one package before the next
    /// package. Within a node, one CPU per physical core first; SMT siblings
    /// only once every core of that node has a shard. Best when shards talk
    /// to each other a lot: they share an L3 and local memory.
    Pack,
    /// Keep shards far apart (glommio's `MaxSpread`): round-robin across
    /// packages, then across the NUMA nodes within each package, then across
    /// cores; SMT siblings only once every allowed core on the machine has a
    /// shard. Best for memory bandwidth and for isolation between shards.
    Spread,
    /// Exactly these OS CPUs, shard `i` on the `i`-th (glommio's `Custom`).
    /// Each must be allowed and appear once, one per shard.
    Cores(Vec<usize>),
}

impl Placement {
    /// The shard count to use when the user names none: one shard per
    /// allowed CPU, or one per listed CPU for [`Placement::Cores`].
    pub fn default_shards(&self, topology: &Topology, allowed: &CpuSet) -> usize {
        match self {
            Placement::Cores(list) => list.len(),
            Placement::Pack | Placement::Spread => topology.cpus().intersection(allowed).len(),
        }
    }
}

/// Where one shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardPlacement {
    /// The shard's index, `0..shards`.
    pub shard: usize,
    /// The OS CPU to pin it to.
    pub cpu: usize,
    /// The [`Core::id`] of that CPU's core.
    pub core: usize,
    /// The NUMA node id of that CPU.
    pub numa_node: usize,
    /// The package id of that CPU.
    pub package: usize,
}

/// `shard 3 -> cpu 5 (core 2, numa node 0, package 0)`
impl fmt::Display for ShardPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {} -> cpu {} (core {}, numa node {}, package {})",
            self.shard, self.cpu, self.core, self.numa_node, self.package
        )
    }
}

/// Places `shards` shards on the CPUs of `topology` that are in `allowed`
/// (normally [`CpuSet::current_affinity`]), following `placement`. Every
/// shard gets its own CPU, always inside `allowed`.
///
/// # Errors
/// [`TopologyError::ZeroShards`]; [`TopologyError::TooManyShards`] when
/// fewer CPUs are allowed than shards; [`TopologyError::NoAllowedCpus`] when
/// no CPU of the topology is allowed; for [`Placement::Cores`],
/// [`TopologyError::CpuListLength`], [`TopologyError::DuplicateCpu`],
/// [`TopologyError::CpuNotAllowed`] or [`TopologyError::CpuNotInTopology`].
pub fn place(
    topology: &Topology,
    allowed: &CpuSet,
    shards: usize,
    placement: &Placement,
) -> Result<Vec<ShardPlacement>, TopologyError> {
    if shards == 0 {
        return Err(TopologyError::ZeroShards);
    }
    let usable = topology.restrict(allowed)?;
    let cpus = usable.cpus().len();
    if shards > cpus {
        return Err(TopologyError::TooManyShards { shards, cpus });
    }
    let order = match placement {
        Placement::Pack => pack_order(&usable),
        Placement::Spread => spread_order(&usable),
        Placement::Cores(list) => checked_list(topology, allowed, shards, list)?,
    };
    let placed: Vec<ShardPlacement> = order
        .iter()
        .take(shards)
        .enumerate()
        .map(|(shard, &cpu)| {
            let pu = usable.pu(cpu).expect("placement order holds only usable CPUs");
            ShardPlacement {
                shard,
                cpu,
                core: pu.core,
                numa_node: pu.numa_node,
                package: pu.package,
            }
        })
        .collect();
    // Postconditions: one distinct, allowed CPU per shard.
    assert_eq!(placed.len(), shards);
    let distinct = CpuSet::from_cpus(placed.iter().map(|p| p.cpu))?;
    assert_eq!(distinct.len(), shards, "two shards on one CPU");
    assert!(distinct.is_subset(allowed), "shard placed outside the allowed CPUs");
    Ok(placed)
}

/// Validates an explicit CPU list against the shard count, `allowed` and
/// the topology.
fn checked_list(
    topology: &Topology,
    allowed: &CpuSet,
    shards: usize,
    list: &[usize],
) -> Result<Vec<usize>, TopologyError> {
    if list.len() != shards {
        return Err(TopologyError::CpuListLength { shards, listed: list.len() });
    }
    let mut seen = CpuSet::new();
    for &cpu in list {
        if !seen.insert(cpu)? {
            return Err(TopologyError::DuplicateCpu { cpu });
        }
        if !allowed.contains(cpu) {
            return Err(TopologyError::CpuNotAllowed { cpu, allowed: allowed.to_string() });
        }
        if !topology.cpus().contains(cpu) {
            return Err(TopologyError::CpuNotInTopology { cpu, cpus: topology.cpus().to_string() });
        }
    }
    Ok(list.to_vec())
}

/// Cores grouped by package, then NUMA node, each level sorted by id.
fn cores_by_package_and_node(topology: &Topology) -> BTreeMap<usize, BTreeMap<usize, Vec<&Core>>> {
    let mut tree = BTreeMap::<usize, BTreeMap<usize, Vec<&Core>>>::new();
    for core in topology.cores() {
        tree.entry(core.package).or_default().entry(core.numa_node).or_default().push(core);
    }
    tree
}

/// The largest number of allowed SMT threads on any core.
fn max_threads(topology: &Topology) -> usize {
    topology.cores().iter().map(|c| c.cpus.len()).max().unwrap_or(0)
}

/// The `tier`-th allowed CPU of each core that has one, in core order.
fn tier(cores: &[&Core], tier: usize) -> Vec<usize> {
    cores.iter().filter_map(|core| core.cpus.iter().nth(tier)).collect()
}

/// Pack: node by node (package by package), and within a node tier by tier.
fn pack_order(topology: &Topology) -> Vec<usize> {
    let threads = max_threads(topology);
    let mut order = Vec::with_capacity(topology.cpus().len());
    for nodes in cores_by_package_and_node(topology).values() {
        for cores in nodes.values() {
            for t in 0..threads {
                order.extend(tier(cores, t));
            }
        }
    }
    order
}

/// Spread: tier by tier over the whole machine; within a tier, packages
/// take turns, and within a package its NUMA nodes take turns.
fn spread_order(topology: &Topology) -> Vec<usize> {
    let threads = max_threads(topology);
    let tree = cores_by_package_and_node(topology);
    let mut order = Vec::with_capacity(topology.cpus().len());
    for t in 0..threads {
        let per_package: Vec<Vec<usize>> = tree
            .values()
            .map(|nodes| interleave(nodes.values().map(|cores| tier(cores, t)).collect()))
            .collect();
        order.extend(interleave(per_package));
    }
    order
}

/// Round-robin merge: the first of each list, then the second of each, ...
/// Lists run out independently.
fn interleave(lists: Vec<Vec<usize>>) -> Vec<usize> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    for i in 0..longest {
        out.extend(lists.iter().filter_map(|list| list.get(i)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn interleave_handles_uneven_lists() {
        assert_eq!(interleave(vec![vec![1, 2, 3], vec![], vec![7]]), [1, 7, 2, 3]);
        assert!(interleave(Vec::new()).is_empty());
    }
}
