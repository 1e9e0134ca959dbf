//! Reading the topology through hwloc (the `hwloc` feature, via the
//! hwlocality bindings), from this machine or from a synthetic description.

use std::panic::{self, AssertUnwindSafe};

use hwlocality::Topology as HwTopology;
use hwlocality::cpu::cpuset::CpuSet as HwCpuSet;
use hwlocality::object::TopologyObject;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::{CacheType, ObjectType};

use super::{Cache, CacheKind, CpuSet, PuRecord, Topology, TopologyError, TopologySource};

/// Probes this machine.
pub(super) fn detect() -> Result<Topology, TopologyError> {
    guarded("probe this machine", || {
        let hw = HwTopology::new().map_err(|e| hwloc_error("probe this machine", e))?;
        convert(&hw, TopologySource::Hwloc)
    })
}

/// Builds a fake machine from a synthetic description.
pub(super) fn synthetic(description: &str) -> Result<Topology, TopologyError> {
    let action = "build a synthetic topology";
    guarded(action, || {
        let hw = HwTopology::builder()
            .from_synthetic(description)
            .map_err(|e| hwloc_error(action, format!("{e} (description {description:?})")))?
            .build()
            .map_err(|e| hwloc_error(action, e))?;
        convert(&hw, TopologySource::HwlocSynthetic)
    })
}

/// Runs `f`, turning a panic inside the bindings (they `expect` on some
/// states hwloc should never report) into an error: detection never panics.
fn guarded(
    action: &'static str,
    f: impl FnOnce() -> Result<Topology, TopologyError>,
) -> Result<Topology, TopologyError> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(hwloc_error(action, "the hwloc bindings panicked")))
}

fn hwloc_error(action: &'static str, reason: impl ToString) -> TopologyError {
    TopologyError::Hwloc { action, reason: reason.to_string() }
}

/// Translates an hwloc topology into ours.
fn convert(hw: &HwTopology, source: TopologySource) -> Result<Topology, TopologyError> {
    let mut nodes = Vec::new();
    for node in hw.objects_with_type(ObjectType::NUMANode) {
        let cpus = object_cpus(node)?;
        if !cpus.is_empty() {
            nodes.push((os_or_logical(node), cpus));
        }
    }
    nodes.sort_by_key(|(id, _)| *id);
    let lowest_node = nodes.first().map_or(0, |(id, _)| *id);
    let mut records = Vec::new();
    for pu in hw.objects_with_type(ObjectType::PU) {
        let cpu = pu
            .os_index()
            .ok_or_else(|| hwloc_error("read a processing unit", "it has no OS index"))?;
        let package = pu.first_ancestor_with_type(ObjectType::Package).map_or(0, os_or_logical);
        let (core_key, core_os_id) = match pu.first_ancestor_with_type(ObjectType::Core) {
            Some(core) => (object_cpus(core)?.first().unwrap_or(cpu), os_or_logical(core)),
            None => (cpu, cpu),
        };
        let numa_node =
            nodes.iter().find(|(_, cpus)| cpus.contains(cpu)).map_or(lowest_node, |(id, _)| *id);
        records.push(PuRecord { cpu, package, numa_node, core_key, core_os_id });
    }
    Topology::assemble(records, caches(hw)?, source)
}

/// The data and unified caches, L1 to L5.
fn caches(hw: &HwTopology) -> Result<Vec<Cache>, TopologyError> {
    let levels = [
        (1, ObjectType::L1Cache),
        (2, ObjectType::L2Cache),
        (3, ObjectType::L3Cache),
        (4, ObjectType::L4Cache),
        (5, ObjectType::L5Cache),
    ];
    let mut caches = Vec::new();
    for (level, ty) in levels {
        for object in hw.objects_with_type(ty) {
            let Some(ObjectAttributes::Cache(attributes)) = object.attributes() else {
                continue;
            };
            let kind = match attributes.cache_type() {
                CacheType::Data => CacheKind::Data,
                CacheType::Unified => CacheKind::Unified,
                _ => continue,
            };
            let size_bytes = attributes.size().map(|s| s.get());
            caches.push(Cache { level, kind, size_bytes, cpus: object_cpus(object)? });
        }
    }
    Ok(caches)
}

/// The object's OS index, or its logical index where hwloc has none.
fn os_or_logical(object: &TopologyObject) -> usize {
    object.os_index().unwrap_or_else(|| object.logical_index())
}

/// The object's CPUs (none for an object without a CPU set).
fn object_cpus(object: &TopologyObject) -> Result<CpuSet, TopologyError> {
    match object.cpuset() {
        Some(set) => convert_cpuset(&set),
        None => Ok(CpuSet::new()),
    }
}

fn convert_cpuset(set: &HwCpuSet) -> Result<CpuSet, TopologyError> {
    // An infinite set has no weight; iterating it would never end.
    if set.weight().is_none() {
        return Err(hwloc_error("read a CPU set", "hwloc returned an infinite CPU set"));
    }
    CpuSet::from_cpus(set.iter_set().map(usize::from))
}
