//! Regions on this machine: what pages they got and that it is reported,
//! NUMA binding and prefaulting as the kernel sees them, registration
//! info, and a clear error for every bad input.
#![cfg(not(zbmd_loom))]

use zbmd_alloc::{
    AllocError, BufPool, HugePages, PageKind, Region, RegionConfig, ShardPools, TypedPool,
};

/// `/proc/meminfo`'s free, unreserved explicit hugepage bytes and page size.
fn hugetlb_free_and_page_bytes() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> usize {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let page = field("Hugepagesize:") * 1024;
    ((field("HugePages_Free:").saturating_sub(field("HugePages_Rsvd:"))) * page, page)
}

fn thp_enabled() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| mode.contains("[always]") || mode.contains("[madvise]"))
}

#[test]
fn hugepage_policies_report_what_they_got_and_fall_back_as_documented() {
    const BYTES: usize = 4 << 20;
    let (free, page_bytes) = hugetlb_free_and_page_bytes();
    let map = |policy| Region::map(RegionConfig::new("pages", BYTES).hugepages(policy));
    let thp = if thp_enabled() { PageKind::Transparent } else { PageKind::Normal };

    assert_eq!(map(HugePages::Off).unwrap().page_kind(), PageKind::Normal);
    assert_eq!(map(HugePages::Transparent).unwrap().page_kind(), thp);
    let preferred = map(HugePages::Prefer).unwrap().page_kind();
    match map(HugePages::Require) {
        Ok(region) => {
            assert!(free >= BYTES, "hugetlb mapped with {free} bytes free");
            assert_eq!(region.page_kind(), PageKind::Hugetlb { page_bytes });
            assert_eq!(preferred, PageKind::Hugetlb { page_bytes });
        }
        Err(AllocError::HugePagesNotReserved { requested_bytes, page_bytes: got, .. }) => {
            assert_eq!((requested_bytes, got), (BYTES, page_bytes));
            assert_eq!(preferred, thp, "Prefer must fall back to THP, then normal pages");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn bad_input_gives_a_named_error_at_startup() {
    let config = |bytes| RegionConfig::new("bad", bytes);
    assert!(matches!(Region::map(config(0)), Err(AllocError::EmptyRegion { .. })));
    assert!(matches!(
        Region::map(config(usize::MAX / 2)),
        Err(AllocError::RegionTooLarge { requested_bytes, .. }) if requested_bytes == usize::MAX / 2
    ));
    assert!(matches!(
        Region::map(config(4096).numa_node(Some(1000))),
        Err(AllocError::NoSuchNumaNode { node: 1000, .. })
    ));

    let region = Region::map(config(1 << 16).hugepages(HugePages::Off)).unwrap();
    assert!(matches!(BufPool::new(&region, "zero", 0, 4), Err(AllocError::ZeroSizedClass { .. })));
    assert!(matches!(
        BufPool::new(&region, "none", 64, 0),
        Err(AllocError::BlockCount { blocks: 0, .. })
    ));
    assert!(matches!(
        BufPool::new(&region, "huge", usize::MAX / 2, 4),
        Err(AllocError::SizeOverflow { .. })
    ));
    assert!(matches!(
        TypedPool::<[u8; 4096]>::new(&region, "big", 17),
        Err(AllocError::RegionFull { requested_bytes: 69632, .. })
    ));
    assert_eq!(region.used_bytes(), 0, "a refused pool took room");

    let builder = || ShardPools::builder().hugepages(HugePages::Off);
    assert!(matches!(
        builder().classes([(64, 4), (0, 4)]).build(),
        Err(AllocError::ZeroSizedClass { .. })
    ));
    assert!(matches!(
        builder().classes([(64, 4), (64, 8)]).build(),
        Err(AllocError::DuplicateClass { block_bytes: 64, .. })
    ));
    assert!(matches!(
        builder().classes([(1024, 8)]).region_bytes(4096).build(),
        Err(AllocError::RegionFull { .. })
    ));
    // Room for typed pools is at least `typed_bytes` (the region rounds up
    // to whole pages), and no more than that page's worth.
    let pools = builder().classes([(64, 4)]).typed_bytes(8192).build().unwrap();
    assert!(pools.typed_pool::<[u8; 4096]>("fits", 2).is_ok());
    assert!(matches!(
        pools.typed_pool::<[u8; 4096]>("spills", 1),
        Err(AllocError::RegionFull { requested_bytes: 4096, .. })
    ));
}

/// The kernel's own view (`get_mempolicy` with `MPOL_F_ADDR`) of a page
/// of a region bound to node 0 is `MPOL_BIND` to node 0.
#[test]
fn a_region_bound_to_a_node_has_that_policy_in_the_kernel() {
    let region =
        Region::map(RegionConfig::new("numa", 1 << 20).numa_node(Some(0)).prefault(true)).unwrap();
    assert_eq!(region.info().numa_node, Some(0));
    let mut mode: libc::c_int = -1;
    let mut mask = [0 as libc::c_ulong; 16];
    const MPOL_F_ADDR: libc::c_ulong = 2;
    // SAFETY: the kernel writes `mode` and at most 1024 bits of `mask`, both
    // ours; `addr` is inside a live mapping.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            1025usize,
            region.base().as_ptr(),
            MPOL_F_ADDR,
        )
    };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        eprintln!("kernel without NUMA: nothing to check");
        return;
    }
    assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
    assert_eq!(mode, libc::MPOL_BIND);
    assert_eq!(mask[0], 1, "bound to another node set");
}

/// How many of the region's pages are resident (`mincore`).
fn resident_pages(region: &Region) -> usize {
    let page = 4096;
    let mut vec = vec![0u8; region.len().div_ceil(page)];
    // SAFETY: the range is a live mapping and `vec` has one byte per page.
    let rc =
        unsafe { libc::mincore(region.base().as_ptr().cast(), region.len(), vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 == 1).count()
}

#[test]
fn prefault_makes_every_page_resident_and_lazy_regions_are_not() {
    let config =
        |prefault| RegionConfig::new("touch", 2 << 20).hugepages(HugePages::Off).prefault(prefault);
    let eager = Region::map(config(true)).unwrap();
    assert!(eager.info().prefaulted);
    assert_eq!(resident_pages(&eager), eager.len() / 4096);
    let lazy = Region::map(config(false)).unwrap();
    assert_eq!(resident_pages(&lazy), 0, "building pools must not touch the pages");
    let pool = BufPool::new(&lazy, "lazy", 4096, 256).unwrap();
    assert_eq!(resident_pages(&lazy), 0, "carving a pool touched its blocks");
    drop(pool);
}

#[test]
fn regions_give_what_registration_needs_and_buffers_live_inside() {
    let pools = ShardPools::builder()
        .shard(2)
        .classes([(64, 8), (8192, 4)])
        .hugepages(HugePages::Off)
        .build()
        .unwrap();
    pools.bind_current_thread().unwrap();
    let info = pools.region().info().clone();
    assert_eq!(info.base_addr, pools.region().base().as_ptr() as usize);
    assert_eq!(&*info.name, "shard2");
    assert!(info.len >= 64 * 8 + 8192 * 4 && info.len % 4096 == 0);
    let iovec = info.iovec();
    assert_eq!((iovec.iov_base as usize, iovec.iov_len), (info.base_addr, info.len));
    let small = pools.alloc_buf(64).unwrap();
    let page = pools.alloc_buf(5000).unwrap();
    assert!(info.contains(small.as_ptr() as usize, small.capacity()));
    assert!(info.contains(page.as_ptr() as usize, page.capacity()));
    assert_eq!(page.as_ptr() as usize % 4096, 0, "page-sized blocks must be page-aligned");
    assert_eq!(small.as_ptr() as usize % 64, 0, "small blocks must be line-aligned");
    assert!(!info.contains(info.base_addr + info.len, 1));
}
