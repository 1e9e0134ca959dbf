//! What the kernel says about memory: physical size, hugepage reservations,
//! transparent-hugepage mode, NUMA nodes, and the `mbind(2)` call.
//!
//! Every reader here degrades to a safe answer when its file is missing (a
//! container without `/sys`, a kernel without NUMA): no hugepages, THP
//! unavailable, one node.

use std::io;

/// Explicit hugepage accounting from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HugeTlb {
    /// The default hugepage size (`Hugepagesize`).
    pub(crate) page_bytes: usize,
    /// Free hugepages not promised to an earlier mapping
    /// (`HugePages_Free - HugePages_Rsvd`), in bytes.
    pub(crate) free_bytes: usize,
}

/// The default hugepage size when `/proc/meminfo` does not say (x86_64).
const DEFAULT_HUGEPAGE_BYTES: usize = 2 << 20;

/// Reads `/proc/meminfo`'s hugepage lines.
pub(crate) fn hugetlb() -> HugeTlb {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_hugetlb(&text)
}

fn parse_hugetlb(meminfo: &str) -> HugeTlb {
    let field = |name: &str| -> Option<usize> {
        let line = meminfo.lines().find(|line| line.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let page_bytes =
        field("Hugepagesize:").map_or(DEFAULT_HUGEPAGE_BYTES, |kib| kib.saturating_mul(1024));
    let free = field("HugePages_Free:").unwrap_or(0);
    let reserved = field("HugePages_Rsvd:").unwrap_or(0);
    HugeTlb { page_bytes, free_bytes: free.saturating_sub(reserved).saturating_mul(page_bytes) }
}

/// The machine's physical memory in bytes (`sysconf`), or `usize::MAX` when
/// the kernel does not say (then only `mmap` itself can refuse).
pub(crate) fn machine_bytes() -> usize {
    // SAFETY: sysconf only reads a kernel-provided value; it has no memory
    // preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    match usize::try_from(pages) {
        Ok(pages) if pages > 0 => pages.saturating_mul(page_bytes()),
        _ => usize::MAX,
    }
}

/// The base page size (4 KiB where the kernel does not say).
pub(crate) fn page_bytes() -> usize {
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Whether `madvise(MADV_HUGEPAGE)` can give a region transparent
/// hugepages: THP mode `always` or `madvise`, not `never` or absent.
pub(crate) fn transparent_hugepages_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|mode| parse_thp_available(&mode))
        .unwrap_or(false)
}

fn parse_thp_available(mode: &str) -> bool {
    mode.contains("[always]") || mode.contains("[madvise]")
}

/// The NUMA nodes that exist, as the kernel lists them ("0-1,3"), and
/// parsed. A machine without `/sys/devices/system/node` has node 0 only.
pub(crate) fn online_nodes() -> (String, Vec<usize>) {
    #[cfg(feature = "hwloc")]
    if let Some(nodes) = hwloc::online_nodes() {
        return nodes;
    }
    let text = std::fs::read_to_string("/sys/devices/system/node/online")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "0".to_owned());
    let nodes = parse_node_list(&text).unwrap_or_else(|| vec![0]);
    (text, nodes)
}

/// Parses a kernel list ("0", "0-3", "0,2-3"); `None` on anything else.
fn parse_node_list(text: &str) -> Option<Vec<usize>> {
    let mut nodes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                // Bounded: the kernel supports at most 1024 nodes.
                if hi < lo || hi >= MAX_NODES {
                    return None;
                }
                nodes.extend(lo..=hi);
            }
            None => nodes.push(part.parse().ok().filter(|&n| n < MAX_NODES)?),
        }
    }
    Some(nodes)
}

/// The most NUMA nodes a node mask here can name (the kernel's
/// `CONFIG_NODES_SHIFT` is at most 10).
const MAX_NODES: usize = 1024;

/// `mbind(2)` flag: fail if existing pages do not follow the policy.
/// A fresh mapping has no pages, so this only guards later reuse.
const MPOL_MF_STRICT: libc::c_uint = 1;

/// Binds `[base, base + len)` to `node` with `MPOL_BIND` (hwloc's
/// area binding with the `hwloc` feature). Must run before the pages are
/// touched, so that every page is allocated on the node.
///
/// A kernel built without NUMA answers `ENOSYS`: with one node there is
/// nothing to bind, so that is success for node 0.
pub(crate) fn bind_to_node(base: *mut u8, len: usize, node: usize) -> io::Result<()> {
    #[cfg(feature = "hwloc")]
    if let Some(result) = hwloc::bind(base, len, node) {
        return result;
    }
    if node >= MAX_NODES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "node beyond the kernel maximum"));
    }
    const BITS: usize = libc::c_ulong::BITS as usize;
    let mut mask = [0 as libc::c_ulong; MAX_NODES / BITS];
    mask[node / BITS] |= 1 << (node % BITS);
    // SAFETY: mbind reads `mask` (MAX_NODES bits, as `maxnode` says; the
    // kernel reads maxnode - 1 bits, hence the + 1) and changes the policy of
    // the range, which is a mapping we own; it writes no user memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            base,
            len,
            libc::MPOL_BIND,
            mask.as_ptr(),
            MAX_NODES + 1,
            MPOL_MF_STRICT,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOSYS) && node == 0 {
        tracing::debug!("mbind is not supported (kernel without NUMA): one node, nothing to bind");
        return Ok(());
    }
    Err(error)
}

#[cfg(feature = "hwloc")]
mod hwloc {
    //! The same two answers from hwloc (feature `hwloc`). Each returns
    //! `None` when hwloc cannot probe the machine, and the caller falls back
    //! to sysfs and `mbind`.

    use std::io;
    use std::sync::OnceLock;

    use hwlocality::Topology;
    use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
    use hwlocality::object::types::ObjectType;

    /// Probing costs milliseconds: once per process.
    fn topology() -> Option<&'static Topology> {
        static TOPOLOGY: OnceLock<Option<Topology>> = OnceLock::new();
        TOPOLOGY
            .get_or_init(|| match Topology::new() {
                Ok(topology) => Some(topology),
                Err(error) => {
                    tracing::warn!(%error, "hwloc could not probe this machine; using sysfs and mbind");
                    None
                }
            })
            .as_ref()
    }

    pub(super) fn online_nodes() -> Option<(String, Vec<usize>)> {
        let mut nodes: Vec<usize> = topology()?
            .objects_with_type(ObjectType::NUMANode)
            .filter_map(|node| node.os_index())
            .collect();
        nodes.sort_unstable();
        let text = nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        Some((text, nodes))
    }

    pub(super) fn bind(base: *mut u8, len: usize, node: usize) -> Option<io::Result<()>> {
        let topology = topology()?;
        let object = topology
            .objects_with_type(ObjectType::NUMANode)
            .find(|object| object.os_index() == Some(node));
        let Some(nodeset) = object.and_then(|object| object.nodeset()) else {
            return Some(Err(io::Error::new(io::ErrorKind::NotFound, "hwloc has no such node")));
        };
        // SAFETY: `base..base + len` is a live mapping owned by the region
        // being built; nothing else references it yet, and a zero-filled
        // anonymous mapping is initialised bytes, so a shared slice over it
        // is valid for the duration of the call.
        let area = unsafe { std::slice::from_raw_parts(base.cast_const(), len) };
        // STRICT: without it hwloc (2.8+) may use MPOL_PREFERRED_MANY, which
        // lets the kernel take pages from other nodes; we promise a binding.
        let result = topology.bind_memory_area(
            area,
            nodeset,
            MemoryBindingPolicy::Bind,
            MemoryBindingFlags::STRICT,
        );
        Some(result.map_err(|error| io::Error::other(error.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_hugepages_are_free_minus_reserved() {
        let text = "MemTotal: 1 kB\nHugePages_Total: 10\nHugePages_Free: 8\n\
                    HugePages_Rsvd: 3\nHugepagesize: 2048 kB\n";
        assert_eq!(parse_hugetlb(text), HugeTlb { page_bytes: 2 << 20, free_bytes: 5 << 21 });
        assert_eq!(parse_hugetlb(""), HugeTlb { page_bytes: 2 << 20, free_bytes: 0 });
    }

    #[test]
    fn thp_modes() {
        assert!(parse_thp_available("always [madvise] never"));
        assert!(parse_thp_available("[always] madvise never"));
        assert!(!parse_thp_available("always madvise [never]"));
    }

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list("0"), Some(vec![0]));
        assert_eq!(parse_node_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_node_list("3-1"), None);
        assert_eq!(parse_node_list("x"), None);
        assert_eq!(parse_node_list("0-99999"), None);
    }
}
