//! Regions: anonymous memory mapped once at startup, from which every pool
//! carves its blocks. Nothing is mapped, bound or unmapped on the hot path.
//!
//! Building a region ([`Region::map`]) does, in order:
//!
//! 1. **Checks**: a size of at least one byte and at most the machine's
//!    physical memory, and a NUMA node that exists.
//! 2. **Mapping**, with the [`HugePages`] policy: explicit hugetlb pages
//!    (`MAP_HUGETLB`, which reserves the pages at `mmap` time, so a later
//!    fault can never find the pool empty), else an ordinary mapping advised
//!    with `MADV_HUGEPAGE` for transparent hugepages, else plain pages. What
//!    it got is [`Region::page_kind`] and is logged.
//! 3. **NUMA binding** with `mbind(2)` (`MPOL_BIND`; hwloc with feature
//!    `hwloc`) before any page is touched, so every page comes from the node.
//! 4. **Prefaulting** where asked (`MADV_POPULATE_WRITE`, or one write per
//!    page on kernels before 5.14), so the first use of a block never takes a
//!    page fault.
//!
//! The mapping lives as long as the last [`Region`] handle or pool carved
//! from it: a buffer still in flight on another shard keeps it mapped.
//! [`Region::info`] gives the base address and length that io_uring fixed
//! buffers, CUDA host registration and RDMA memory registration need.

use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::{Advice, MmapMut, MmapOptions};

use crate::error::AllocError;
use crate::sys;

/// Which pages a region asks the kernel for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HugePages {
    /// Plain pages only.
    Off,
    /// Transparent hugepages (`MADV_HUGEPAGE`) where the kernel's THP mode
    /// allows them, plain pages otherwise; never explicit hugetlb pages.
    Transparent,
    /// Explicit hugetlb pages where enough are reserved
    /// (`/proc/sys/vm/nr_hugepages`), else transparent hugepages, else plain
    /// pages. The fallback is logged at `info` and reported by
    /// [`Region::page_kind`]. The default: it does the best the machine
    /// allows and works on a laptop.
    #[default]
    Prefer,
    /// Explicit hugetlb pages or [`AllocError::HugePagesNotReserved`].
    Require,
}

/// What a region got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// Explicit hugetlb pages of this size, reserved when the region was
    /// mapped.
    Hugetlb {
        /// The hugepage size (2 MiB on x86_64 by default).
        page_bytes: usize,
    },
    /// Plain pages advised with `MADV_HUGEPAGE`: the kernel backs them with
    /// transparent hugepages where it can (at fault time or later, through
    /// khugepaged), which it does not promise.
    Transparent,
    /// Plain pages.
    Normal,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageKind::Hugetlb { page_bytes } => {
                write!(f, "hugetlb ({} KiB pages)", page_bytes >> 10)
            }
            PageKind::Transparent => f.write_str("transparent hugepages (advised)"),
            PageKind::Normal => f.write_str("normal pages"),
        }
    }
}

/// How to build a region: its size, pages, NUMA node and prefaulting.
///
/// ```
/// use zbmd_alloc::{HugePages, Region, RegionConfig};
///
/// let region = Region::map(
///     RegionConfig::new("example", 1 << 20).hugepages(HugePages::Transparent).prefault(true),
/// )?;
/// assert!(region.len() >= 1 << 20);
/// # Ok::<(), zbmd_alloc::AllocError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RegionConfig {
    name: Arc<str>,
    bytes: usize,
    hugepages: HugePages,
    prefault: bool,
    numa_node: Option<usize>,
}

impl RegionConfig {
    /// A region named `name` (for errors, logs and stats) of at least
    /// `bytes` bytes (rounded up to whole pages), with the default
    /// [`HugePages::Prefer`], no prefaulting and no NUMA binding.
    pub fn new(name: &str, bytes: usize) -> Self {
        RegionConfig {
            name: name.into(),
            bytes,
            hugepages: HugePages::default(),
            prefault: false,
            numa_node: None,
        }
    }

    /// The hugepage policy.
    pub fn hugepages(mut self, policy: HugePages) -> Self {
        self.hugepages = policy;
        self
    }

    /// Touch every page at startup, so no block ever takes a page fault
    /// (and so the memory is really there: an overcommitted machine fails
    /// here, not later).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Bind the region's pages to this NUMA node (`None`: the kernel's
    /// default policy, usually the node of the first thread that touches
    /// each page).
    pub fn numa_node(mut self, node: Option<usize>) -> Self {
        self.numa_node = node;
        self
    }

    /// The size asked for, before rounding.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Where a region lives: what later layers register once (io_uring fixed
/// buffers, CUDA host registration, RDMA memory regions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region's name.
    pub name: Arc<str>,
    /// The first byte's address.
    pub base_addr: usize,
    /// The mapping's length in bytes (a whole number of pages).
    pub len: usize,
    /// The pages it got.
    pub page_kind: PageKind,
    /// The NUMA node it is bound to, if any.
    pub numa_node: Option<usize>,
    /// Whether every page was touched at startup.
    pub prefaulted: bool,
}

impl RegionInfo {
    /// The region as an `iovec`, the form `io_uring_register_buffers` takes.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec { iov_base: self.base_addr as *mut libc::c_void, iov_len: self.len }
    }

    /// Whether `[addr, addr + len)` lies inside the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.base_addr
            && addr.checked_add(len).is_some_and(|end| end <= self.base_addr + self.len)
    }
}

/// An anonymous mapping reserved once, from which pools carve their blocks.
/// Cheap to clone (a reference count); unmapped when the last clone and the
/// last pool carved from it are gone.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Inner>,
}

struct Inner {
    /// Held for its `Drop` (munmap); never dereferenced, so the raw
    /// pointers pools hold into it alias nothing.
    _map: MmapMut,
    base: NonNull<u8>,
    info: RegionInfo,
    /// Bytes handed out to pools, from the base. Startup only.
    used: Mutex<usize>,
}

// SAFETY: `base` points into the mapping `_map` owns, which lives as long as
// `Inner`; `Inner` itself never reads or writes through it (pools do, each in
// the disjoint range it carved), and `used` is behind a mutex.
unsafe impl Send for Inner {}
// SAFETY: as above: every shared method reads immutable fields or locks.
unsafe impl Sync for Inner {}

impl Region {
    /// Maps, binds and (if asked) prefaults a region; see the module docs
    /// for the steps and their order.
    ///
    /// # Errors
    ///
    /// [`AllocError::EmptyRegion`], [`AllocError::RegionTooLarge`],
    /// [`AllocError::NoSuchNumaNode`], [`AllocError::HugePagesNotReserved`]
    /// (only with [`HugePages::Require`]), and [`AllocError::Map`],
    /// [`AllocError::NumaBind`], [`AllocError::Prefault`] when the kernel
    /// refuses.
    pub fn map(config: RegionConfig) -> Result<Region, AllocError> {
        let name = config.name.clone();
        check(&config)?;
        let (mut map, page_kind) = map_pages(&config)?;
        let len = map.len();
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| AllocError::Map {
            region: name.clone(),
            bytes: len,
            source: std::io::Error::other("mmap returned a null mapping"),
        })?;
        if let Some(node) = config.numa_node {
            sys::bind_to_node(base.as_ptr(), len, node).map_err(|source| AllocError::NumaBind {
                region: name.clone(),
                node,
                bytes: len,
                source,
            })?;
        }
        if config.prefault {
            prefault(&map, base, page_kind).map_err(|source| AllocError::Prefault {
                region: name.clone(),
                bytes: len,
                source,
            })?;
        }
        tracing::info!(region = %name, bytes = len, pages = %page_kind, numa_node = ?config.numa_node, prefault = config.prefault, "region mapped");
        let info = RegionInfo {
            name,
            base_addr: base.as_ptr() as usize,
            len,
            page_kind,
            numa_node: config.numa_node,
            prefaulted: config.prefault,
        };
        Ok(Region { inner: Arc::new(Inner { _map: map, base, info, used: Mutex::new(0) }) })
    }

    /// The base address, length, pages and node: what registration needs.
    pub fn info(&self) -> &RegionInfo {
        &self.inner.info
    }

    /// The region's name.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// The first byte of the mapping.
    pub fn base(&self) -> NonNull<u8> {
        self.inner.base
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.inner.info.len
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The pages it got.
    pub fn page_kind(&self) -> PageKind {
        self.inner.info.page_kind
    }

    /// The bytes pools have carved so far (with alignment padding).
    pub fn used_bytes(&self) -> usize {
        *self.inner.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes left for more pools.
    pub fn free_bytes(&self) -> usize {
        self.len() - self.used_bytes()
    }

    /// How many handles keep the mapping alive: the `Region` clones plus
    /// one per live pool carved from it. The mapping goes when this would
    /// reach zero.
    pub fn users(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Reserves `bytes` at an `align`-aligned address for `pool`.
    pub(crate) fn carve(
        &self,
        pool: &Arc<str>,
        bytes: usize,
        align: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        debug_assert!(align.is_power_of_two());
        let mut used = self.inner.used.lock().unwrap_or_else(PoisonError::into_inner);
        let base = self.inner.base.as_ptr() as usize;
        let full = || AllocError::RegionFull {
            region: self.inner.info.name.clone(),
            pool: pool.clone(),
            requested_bytes: bytes,
            available_bytes: self.len() - *used,
        };
        let start = (base + *used).checked_next_multiple_of(align).ok_or_else(full)? - base;
        let end = start.checked_add(bytes).filter(|&end| end <= self.len()).ok_or_else(full)?;
        *used = end;
        // SAFETY: `start < end <= len`, so the pointer stays inside the
        // mapping (and is non-null because the base is).
        Ok(unsafe { self.inner.base.add(start) })
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("info", &self.inner.info)
            .field("used_bytes", &self.used_bytes())
            .finish()
    }
}

fn check(config: &RegionConfig) -> Result<(), AllocError> {
    let region = config.name.clone();
    if config.bytes == 0 {
        return Err(AllocError::EmptyRegion { region });
    }
    let machine_bytes = sys::machine_bytes();
    if config.bytes > machine_bytes {
        return Err(AllocError::RegionTooLarge {
            region,
            requested_bytes: config.bytes,
            machine_bytes,
        });
    }
    if let Some(node) = config.numa_node {
        let (online, nodes) = sys::online_nodes();
        if !nodes.contains(&node) {
            return Err(AllocError::NoSuchNumaNode { region, node, online });
        }
    }
    Ok(())
}

/// Maps the pages the policy asks for, falling back as documented.
fn map_pages(config: &RegionConfig) -> Result<(MmapMut, PageKind), AllocError> {
    let region = &config.name;
    let policy = config.hugepages;
    if matches!(policy, HugePages::Prefer | HugePages::Require) {
        let tlb = sys::hugetlb();
        let huge_len = config.bytes.checked_next_multiple_of(tlb.page_bytes).unwrap_or(usize::MAX);
        // MAP_HUGETLB reserves the pages now: it fails at once (ENOMEM)
        // when too few are reserved, and a later fault can never SIGBUS.
        match MmapOptions::new().len(huge_len).huge(None).map_anon() {
            Ok(map) => return Ok((map, PageKind::Hugetlb { page_bytes: tlb.page_bytes })),
            Err(error) if policy == HugePages::Require => {
                tracing::debug!(%region, %error, "MAP_HUGETLB refused");
                return Err(AllocError::HugePagesNotReserved {
                    region: region.clone(),
                    requested_bytes: huge_len,
                    free_bytes: tlb.free_bytes,
                    page_bytes: tlb.page_bytes,
                });
            }
            Err(error) => tracing::info!(
                %region, bytes = huge_len, free_hugetlb_bytes = tlb.free_bytes, %error,
                "not enough explicit hugepages reserved; falling back to transparent hugepages"
            ),
        }
    }
    let len = config.bytes.checked_next_multiple_of(sys::page_bytes()).unwrap_or(usize::MAX);
    let map = MmapOptions::new().len(len).map_anon().map_err(|source| AllocError::Map {
        region: region.clone(),
        bytes: len,
        source,
    })?;
    if policy == HugePages::Off {
        return Ok((map, PageKind::Normal));
    }
    if !sys::transparent_hugepages_available() {
        tracing::info!(%region, "transparent hugepages are disabled (THP mode never); using normal pages");
        return Ok((map, PageKind::Normal));
    }
    match map.advise(Advice::HugePage) {
        Ok(()) => Ok((map, PageKind::Transparent)),
        Err(error) => {
            tracing::warn!(%region, %error, "madvise(MADV_HUGEPAGE) failed; using normal pages");
            Ok((map, PageKind::Normal))
        }
    }
}

/// Faults every page in, writably.
fn prefault(map: &MmapMut, base: NonNull<u8>, kind: PageKind) -> std::io::Result<()> {
    match map.advise(Advice::PopulateWrite) {
        Ok(()) => return Ok(()),
        // Kernels before 5.14 do not know the advice: touch each page.
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {}
        Err(error) => return Err(error),
    }
    let page = match kind {
        PageKind::Hugetlb { page_bytes } => page_bytes,
        _ => sys::page_bytes(),
    };
    for offset in (0..map.len()).step_by(page) {
        // SAFETY: `offset < len`, inside the mapping, which no pool uses
        // yet; writing a zero over a zero-filled anonymous page changes no
        // content, and the volatile write makes the compiler keep it.
        unsafe { base.add(offset).as_ptr().write_volatile(0) };
    }
    Ok(())
}
