//! Reading the topology from sysfs, as laid out in the kernel's
//! `Documentation/admin-guide/cputopology.rst` (CPUs),
//! `Documentation/ABI/stable/sysfs-devices-node` (NUMA nodes) and
//! `Documentation/ABI/testing/sysfs-devices-system-cpu` (caches).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{
    Cache, CacheKind, CpuSet, MAX_CPUS, PuRecord, Topology, TopologyError, TopologySource,
};

/// Where the CPU directories live on a real machine.
pub(super) const CPU_DIR: &str = "/sys/devices/system/cpu";

/// One CPU's `topology/` files.
struct RawPu {
    cpu: usize,
    package: usize,
    core_id: usize,
    siblings: Option<CpuSet>,
}

/// Reads a whole topology from the sysfs tree rooted at `root`.
pub(super) fn read(root: &Path) -> Result<Topology, TopologyError> {
    let cpu_dir = root.join("devices/system/cpu");
    let mut cpus = list_numbered(&cpu_dir, "cpu")?;
    if let Some(online) = read_optional(&cpu_dir.join("online"))? {
        let online = parse_cpulist(&cpu_dir.join("online"), &online)?;
        cpus.retain(|&cpu| online.contains(cpu));
    }
    let mut raw = Vec::with_capacity(cpus.len());
    let mut caches = Vec::new();
    for &cpu in &cpus {
        let dir = cpu_dir.join(format!("cpu{cpu}"));
        raw.push(read_pu(&dir.join("topology"), cpu)?);
        read_caches(&dir.join("cache"), &mut caches)?;
    }
    let nodes = read_nodes(&root.join("devices/system/node"))?;
    let records = to_records(&raw, &nodes);
    Topology::assemble(records, caches, TopologySource::Sysfs).map_err(|e| match e {
        TopologyError::NoCpus { .. } => {
            TopologyError::NoCpus { source_name: cpu_dir.display().to_string() }
        }
        other => other,
    })
}

/// Joins CPUs with their nodes and turns sibling lists into core keys.
fn to_records(raw: &[RawPu], nodes: &[(usize, CpuSet)]) -> Vec<PuRecord> {
    // Without thread_siblings_list, CPUs with the same package and core_id
    // are siblings; the lowest of them names the core.
    let mut lowest_by_core = BTreeMap::<(usize, usize), usize>::new();
    for pu in raw {
        let lowest = lowest_by_core.entry((pu.package, pu.core_id)).or_insert(pu.cpu);
        *lowest = (*lowest).min(pu.cpu);
    }
    let lowest_node = nodes.first().map_or(0, |(id, _)| *id);
    raw.iter()
        .map(|pu| {
            let core_key = match pu.siblings {
                Some(siblings) => siblings.first().unwrap_or(pu.cpu),
                None => lowest_by_core[&(pu.package, pu.core_id)],
            };
            let numa_node = nodes
                .iter()
                .find(|(_, cpus)| cpus.contains(pu.cpu))
                .map_or(lowest_node, |(id, _)| *id);
            PuRecord {
                cpu: pu.cpu,
                package: pu.package,
                numa_node,
                core_key,
                core_os_id: pu.core_id,
            }
        })
        .collect()
}

/// Reads `cpuN/topology/`. A missing file takes its default (package 0,
/// core id = the CPU, siblings unknown); a negative id (firmware that does
/// not know, as some VMs and ARM boards report -1) is taken as 0 / the CPU.
fn read_pu(dir: &Path, cpu: usize) -> Result<RawPu, TopologyError> {
    let package = read_id(&dir.join("physical_package_id"))?.unwrap_or(0);
    let core_id = read_id(&dir.join("core_id"))?.unwrap_or(cpu);
    let path = dir.join("thread_siblings_list");
    let siblings = match read_optional(&path)? {
        Some(text) => {
            let siblings = parse_cpulist(&path, &text)?;
            if !siblings.contains(cpu) {
                return Err(malformed(&path, &text, format!("does not list CPU {cpu} itself")));
            }
            Some(siblings)
        }
        None => None,
    };
    Ok(RawPu { cpu, package, core_id, siblings })
}

/// Reads an id file: `None` if absent, 0 for a negative (unknown) id.
fn read_id(path: &Path) -> Result<Option<usize>, TopologyError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let id: i64 = parse_value(path, &text)?;
    Ok(Some(usize::try_from(id).unwrap_or(0)))
}

/// Reads the NUMA nodes that have CPUs; no `node` directory (a kernel
/// without NUMA) or no node in it gives an empty list, and every CPU then
/// lands on node 0.
fn read_nodes(dir: &Path) -> Result<Vec<(usize, CpuSet)>, TopologyError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut nodes = Vec::new();
    for id in list_numbered(dir, "node")? {
        let path = dir.join(format!("node{id}/cpulist"));
        let cpus = match read_optional(&path)? {
            Some(text) => parse_cpulist(&path, &text)?,
            None => CpuSet::new(),
        };
        if !cpus.is_empty() {
            nodes.push((id, cpus));
        }
    }
    Ok(nodes)
}

/// Appends the data and unified caches of one CPU (`cpuN/cache/indexM/`).
/// An index missing `level`, `type` or `shared_cpu_list` is skipped; a
/// missing `size` leaves the size unknown. Duplicates (the same cache seen
/// from each CPU sharing it) are removed later.
fn read_caches(dir: &Path, caches: &mut Vec<Cache>) -> Result<(), TopologyError> {
    if !dir.is_dir() {
        return Ok(());
    }
    for index in list_numbered(dir, "index")? {
        let index_dir = dir.join(format!("index{index}"));
        let file = |name: &str| -> Result<Option<(PathBuf, String)>, TopologyError> {
            let path = index_dir.join(name);
            Ok(read_optional(&path)?.map(|text| (path, text)))
        };
        let (Some(level), Some(kind), Some(shared)) =
            (file("level")?, file("type")?, file("shared_cpu_list")?)
        else {
            continue;
        };
        let kind = match kind.1.trim() {
            "Data" => CacheKind::Data,
            "Unified" => CacheKind::Unified,
            "Instruction" => continue,
            other => {
                return Err(malformed(&kind.0, other, "expected Data, Instruction or Unified"));
            }
        };
        let size_bytes = match file("size")? {
            Some((path, text)) => Some(parse_size(&path, &text)?),
            None => None,
        };
        caches.push(Cache {
            level: parse_value(&level.0, &level.1)?,
            kind,
            size_bytes,
            cpus: parse_cpulist(&shared.0, &shared.1)?,
        });
    }
    Ok(())
}

/// Parses a cache size as sysfs writes it: `"48K"`, or with `M`/`G`, or a
/// plain number of bytes.
fn parse_size(path: &Path, text: &str) -> Result<u64, TopologyError> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.as_bytes().last() {
        Some(b'K') => (&trimmed[..trimmed.len() - 1], 1u64 << 10),
        Some(b'M') => (&trimmed[..trimmed.len() - 1], 1u64 << 20),
        Some(b'G') => (&trimmed[..trimmed.len() - 1], 1u64 << 30),
        _ => (trimmed, 1),
    };
    let count: u64 = parse_value(path, digits)?;
    count.checked_mul(unit).ok_or_else(|| malformed(path, text, "size overflows 64 bits"))
}

/// The numbers N of the entries named `{prefix}N` in `dir`, sorted.
fn list_numbered(dir: &Path, prefix: &str) -> Result<Vec<usize>, TopologyError> {
    let io_error = |source| TopologyError::Io { path: dir.to_owned(), source };
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue; // cpufreq, cpuidle, has_cpu, ...
        }
        let number: usize = parse_value(&dir.join(&name), digits)?;
        if prefix == "cpu" && number >= MAX_CPUS {
            return Err(TopologyError::CpuOutOfRange { cpu: number, max: MAX_CPUS });
        }
        numbers.push(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The contents of `path`, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Io { path: path.to_owned(), source }),
    }
}

fn parse_cpulist(path: &Path, text: &str) -> Result<CpuSet, TopologyError> {
    CpuSet::parse_list(text).map_err(|e| malformed(path, text, e.to_string()))
}

fn parse_value<T: FromStr>(path: &Path, text: &str) -> Result<T, TopologyError>
where
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|e: T::Err| malformed(path, text, e.to_string()))
}

fn malformed(path: &Path, value: &str, reason: impl Into<String>) -> TopologyError {
    TopologyError::Malformed {
        path: path.to_owned(),
        value: value.trim().to_owned(),
        reason: reason.into(),
    }
}
