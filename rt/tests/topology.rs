//! Topology, placement and pinning: cpulist text, the sysfs reader on fake
//! trees, placement policies on fake machines, pinning on this machine, and
//! (feature `hwloc`) agreement between hwloc and our own readers.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use zbmd_rt::topology::{
    CacheKind, CpuSet, L3Scope, MAX_CPUS, Placement, ShardPlacement, SyntheticSpec, Topology,
    TopologyError, TopologySource, current_cpu, pin_current_thread, place,
};

fn set(text: &str) -> CpuSet {
    text.parse().expect("test CPU list")
}

fn cpus_of(plan: &[ShardPlacement]) -> Vec<usize> {
    plan.iter().map(|p| p.cpu).collect()
}

// ---------------------------------------------------------------- cpulist

#[test]
fn cpulist_parses_the_kernel_format() {
    let s = set("0-3,8,10-11\n");
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 8, 10, 11]);
    assert_eq!(set("").len(), 0);
    assert_eq!(set("\n").len(), 0);
    assert_eq!(set("1023").iter().collect::<Vec<_>>(), [1023]);
}

#[test]
fn cpulist_formats_canonically() {
    assert_eq!(set("3,0,1,2").to_string(), "0-3");
    assert_eq!(set("5,1,3").to_string(), "1,3,5");
    assert_eq!(set("0-1,2-3,7,8").to_string(), "0-3,7-8");
    assert_eq!(CpuSet::new().to_string(), "");
    assert_eq!(format!("{:?}", set("0-2")), "CpuSet(0-2)");
}

#[test]
fn cpulist_rejects_malformed_text() {
    for bad in ["a", "1,,2", ",1", "0-3,", "-1", "1-", "3-1", "1 2", "+1", "1-2-3", "0x1", "1;2"] {
        match CpuSet::parse_list(bad) {
            Err(TopologyError::CpuListParse { input, .. }) => assert_eq!(input, bad.trim()),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn cpulist_rejects_cpus_beyond_the_maximum() {
    for bad in ["1024", "0-5000", "99999999999999999999999"] {
        let err = CpuSet::parse_list(bad).unwrap_err();
        assert!(
            matches!(err, TopologyError::CpuOutOfRange { .. } | TopologyError::CpuListParse { .. }),
            "{bad:?} gave {err:?}"
        );
    }
    let err = CpuSet::from_cpus([MAX_CPUS]).unwrap_err();
    assert!(matches!(err, TopologyError::CpuOutOfRange { cpu: MAX_CPUS, max: MAX_CPUS }));
    assert!(err.to_string().contains("1024"), "{err}");
}

proptest! {
    #[test]
    fn cpulist_round_trips(cpus in prop::collection::btree_set(0..MAX_CPUS, 0..96)) {
        let s = CpuSet::from_cpus(cpus.iter().copied()).unwrap();
        prop_assert_eq!(s.iter().collect::<Vec<_>>(), cpus.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(s.len(), cpus.len());
        let text = s.to_string();
        let back = CpuSet::parse_list(&text).unwrap();
        prop_assert_eq!(back, s);
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn cpulist_of_ranges_round_trips(ranges in prop::collection::vec((0..MAX_CPUS, 0usize..40), 0..12)) {
        let text: Vec<String> = ranges
            .iter()
            .map(|&(a, len)| format!("{a}-{}", (a + len).min(MAX_CPUS - 1)))
            .collect();
        let parsed = CpuSet::parse_list(&text.join(",")).unwrap();
        let expected: BTreeSet<usize> =
            ranges.iter().flat_map(|&(a, len)| a..=(a + len).min(MAX_CPUS - 1)).collect();
        prop_assert_eq!(parsed.iter().collect::<BTreeSet<_>>(), expected);
        prop_assert_eq!(CpuSet::parse_list(&parsed.to_string()).unwrap(), parsed);
    }
}

// ---------------------------------------------------------------- sysfs

/// A fake sysfs tree in a fresh temporary directory, removed on drop.
struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "zbmd-topology-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let root = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{contents}\n")).unwrap();
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const CPU: &str = "devices/system/cpu";
const NODE: &str = "devices/system/node";

/// 2 packages x 2 NUMA nodes x 2 cores x 2 SMT threads, numbered as Intel
/// does (all first threads, then all second threads: cpu c and c+8 are
/// siblings), core_id unique only within a package, L1d/L1i/L2 per core and
/// an L3 per NUMA node. Plus the noise a real tree has.
fn two_socket_tree() -> FakeSysfs {
    let fake = FakeSysfs::new("2s");
    fake.write(&format!("{CPU}/online"), "0-15");
    fake.write(&format!("{CPU}/possible"), "0-15");
    fake.write(&format!("{CPU}/cpufreq/boost"), "1");
    fake.write(&format!("{NODE}/has_cpu"), "0-3");
    for core in 0..8 {
        let (package, node) = (core / 4, core / 2);
        let node_cpus = format!("{},{},{},{}", node * 2, node * 2 + 1, node * 2 + 8, node * 2 + 9);
        for cpu in [core, core + 8] {
            let dir = format!("{CPU}/cpu{cpu}");
            fake.write(&format!("{dir}/topology/physical_package_id"), &package.to_string());
            fake.write(&format!("{dir}/topology/core_id"), &(core % 4).to_string());
            fake.write(
                &format!("{dir}/topology/thread_siblings_list"),
                &format!("{core},{}", core + 8),
            );
            let caches =
                [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K")];
            for (index, (level, kind, size)) in caches.into_iter().enumerate() {
                let cache = format!("{dir}/cache/index{index}");
                fake.write(&format!("{cache}/level"), level);
                fake.write(&format!("{cache}/type"), kind);
                fake.write(&format!("{cache}/size"), size);
                fake.write(&format!("{cache}/shared_cpu_list"), &format!("{core},{}", core + 8));
            }
            let l3 = format!("{dir}/cache/index3");
            fake.write(&format!("{l3}/level"), "3");
            fake.write(&format!("{l3}/type"), "Unified");
            fake.write(&format!("{l3}/size"), "32768K");
            fake.write(&format!("{l3}/shared_cpu_list"), &node_cpus);
        }
        if core % 2 == 0 {
            fake.write(&format!("{NODE}/node{node}/cpulist"), &node_cpus);
        }
    }
    fake
}

#[test]
fn sysfs_reads_a_two_socket_smt_tree() {
    let fake = two_socket_tree();
    let t = Topology::from_sysfs_root(&fake.root).unwrap();
    assert_eq!(t.source(), TopologySource::Sysfs);
    assert_eq!(t.cpus(), set("0-15"));
    assert_eq!(t.packages().len(), 2);
    assert_eq!(t.packages()[1].cpus, set("4-7,12-15"));
    let nodes: Vec<(usize, String)> =
        t.numa_nodes().iter().map(|n| (n.id, n.cpus.to_string())).collect();
    let expected = [(0, "0-1,8-9"), (1, "2-3,10-11"), (2, "4-5,12-13"), (3, "6-7,14-15")];
    assert_eq!(nodes, expected.map(|(id, cpus)| (id, cpus.to_owned())));
    // core_id repeats across packages, yet the 8 cores stay distinct.
    assert_eq!(t.cores().len(), 8);
    for core in t.cores() {
        let first = core.cpus.first().unwrap();
        assert_eq!(core.cpus.iter().collect::<Vec<_>>(), [first, first + 8]);
        assert_eq!(core.os_id, first % 4);
        assert_eq!(core.package, first / 4);
        assert_eq!(core.numa_node, first / 2);
    }
    assert_eq!(t.smt_siblings(12), Some(set("4,12")));
    let pu = t.pu(13).unwrap();
    assert_eq!((pu.package, pu.numa_node), (1, 2));
    assert_eq!(t.core(pu.core).unwrap().cpus, set("5,13"));
}

#[test]
fn sysfs_reads_caches_without_instruction_caches() {
    let fake = two_socket_tree();
    let t = Topology::from_sysfs_root(&fake.root).unwrap();
    let count =
        |level, kind| t.caches().iter().filter(|c| c.level == level && c.kind == kind).count();
    assert_eq!(count(1, CacheKind::Data), 8);
    assert_eq!(count(2, CacheKind::Unified), 8);
    assert_eq!(count(3, CacheKind::Unified), 4);
    assert_eq!(t.caches().len(), 20, "instruction caches are left out");
    for cache in t.caches() {
        let expected = match cache.level {
            1 => 48 << 10,
            2 => 2048 << 10,
            _ => 32768 << 10,
        };
        assert_eq!(cache.size_bytes, Some(expected));
    }
    let l3: Vec<CpuSet> = t.caches().iter().filter(|c| c.level == 3).map(|c| c.cpus).collect();
    let nodes: Vec<CpuSet> = t.numa_nodes().iter().map(|n| n.cpus).collect();
    assert_eq!(l3, nodes, "one L3 per NUMA node");
}

#[test]
fn sysfs_malformed_values_name_their_file() {
    let cases = [
        (format!("{CPU}/cpu3/topology/core_id"), "abc"),
        (format!("{CPU}/cpu5/topology/physical_package_id"), "1.5"),
        (format!("{CPU}/cpu2/topology/thread_siblings_list"), "2-x"),
        (format!("{CPU}/cpu2/topology/thread_siblings_list"), "3,11"),
        (format!("{NODE}/node1/cpulist"), "2-3,,10"),
        (format!("{CPU}/cpu0/cache/index2/size"), "2048Q"),
        (format!("{CPU}/cpu0/cache/index3/type"), "Victim"),
        (format!("{CPU}/cpu0/cache/index0/level"), "one"),
        (format!("{CPU}/online"), "0-"),
    ];
    for (file, value) in cases {
        let fake = two_socket_tree();
        fake.write(&file, value);
        match Topology::from_sysfs_root(&fake.root) {
            Err(err @ TopologyError::Malformed { .. }) => {
                let TopologyError::Malformed { path, .. } = &err else { unreachable!() };
                assert_eq!(path, &fake.path(&file));
                assert!(err.to_string().contains(&file), "message names the file: {err}");
            }
            other => panic!("{file} = {value:?} gave {other:?}"),
        }
    }
}

#[test]
fn sysfs_missing_files_degrade_gracefully() {
    // Four CPUs, two per core by core_id, no siblings lists, no package ids,
    // no caches, no node directory, no online file; plus a CPU-less node dir
    // name that must be ignored.
    let fake = FakeSysfs::new("sparse");
    for cpu in 0..4 {
        fake.write(&format!("{CPU}/cpu{cpu}/topology/core_id"), &(cpu / 2).to_string());
    }
    fake.write(&format!("{CPU}/cpuidle/current_driver"), "none");
    let t = Topology::from_sysfs_root(&fake.root).unwrap();
    assert_eq!(t.cpus(), set("0-3"));
    assert_eq!(t.packages().len(), 1);
    assert_eq!(t.numa_nodes().len(), 1);
    assert_eq!(t.numa_nodes()[0].id, 0);
    assert_eq!(t.cores().iter().map(|c| c.cpus).collect::<Vec<_>>(), [set("0-1"), set("2-3")]);
    assert!(t.caches().is_empty());
}

#[test]
fn sysfs_leaves_out_offline_cpus_and_cpuless_nodes() {
    let fake = two_socket_tree();
    fake.write(&format!("{CPU}/online"), "0-14");
    fake.write(&format!("{NODE}/node7/cpulist"), ""); // CXL memory, no CPUs
    let t = Topology::from_sysfs_root(&fake.root).unwrap();
    assert_eq!(t.cpus(), set("0-14"));
    assert_eq!(t.smt_siblings(7), Some(set("7")));
    assert_eq!(t.numa_nodes().iter().map(|n| n.id).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[test]
fn sysfs_tree_without_cpus_is_an_error() {
    let fake = FakeSysfs::new("empty");
    fs::create_dir_all(fake.path(CPU)).unwrap();
    assert!(matches!(Topology::from_sysfs_root(&fake.root), Err(TopologyError::NoCpus { .. })));
    let missing = Topology::from_sysfs_root(fake.path("nowhere")).unwrap_err();
    assert!(matches!(missing, TopologyError::Io { .. }), "{missing:?}");
}

#[test]
fn pack_follows_sysfs_numbering() {
    // Siblings are c and c+8 here, not adjacent: Pack must still take one
    // CPU per core of node 0 before any sibling.
    let fake = two_socket_tree();
    let t = Topology::from_sysfs_root(&fake.root).unwrap();
    let plan = place(&t, &t.cpus(), 5, &Placement::Pack).unwrap();
    assert_eq!(cpus_of(&plan), [0, 1, 8, 9, 2]);
    let plan = place(&t, &t.cpus(), 4, &Placement::Spread).unwrap();
    assert_eq!(plan.iter().map(|p| p.numa_node).collect::<Vec<_>>(), [0, 2, 1, 3]);
}

// ---------------------------------------------------------------- synthetic machines

const TWO_SOCKETS: SyntheticSpec = SyntheticSpec {
    packages: 2,
    numa_per_package: 2,
    cores_per_numa: 4,
    threads_per_core: 2,
    l3_per: L3Scope::Numa,
};

fn two_sockets() -> Topology {
    Topology::synthetic(&TWO_SOCKETS).unwrap()
}

#[test]
fn synthetic_machine_has_the_asked_shape() {
    let t = two_sockets();
    assert_eq!(t.source(), TopologySource::Synthetic);
    assert_eq!((t.packages().len(), t.numa_nodes().len()), (2, 4));
    assert_eq!((t.cores().len(), t.pus().len()), (16, 32));
    assert_eq!(t.numa_nodes()[1].cpus, set("8-15"));
    assert_eq!(t.smt_siblings(9), Some(set("8-9")));
    let l3: Vec<CpuSet> = t.caches().iter().filter(|c| c.level == 3).map(|c| c.cpus).collect();
    assert_eq!(l3, [set("0-7"), set("8-15"), set("16-23"), set("24-31")]);
    assert_eq!(t.caches().iter().filter(|c| c.level < 3).count(), 32);
    let per_package =
        Topology::synthetic(&SyntheticSpec { l3_per: L3Scope::Package, ..TWO_SOCKETS });
    assert_eq!(per_package.unwrap().caches().iter().filter(|c| c.level == 3).count(), 2);
    assert!(t.to_string().starts_with("2 packages, 4 NUMA nodes, 16 cores, 32 CPUs (0-31)"));
}

#[test]
fn synthetic_rejects_impossible_specs() {
    for spec in [
        SyntheticSpec { packages: 0, ..TWO_SOCKETS },
        SyntheticSpec { threads_per_core: 0, ..TWO_SOCKETS },
        SyntheticSpec { cores_per_numa: 257, ..TWO_SOCKETS }, // 2056 CPUs
        SyntheticSpec { cores_per_numa: usize::MAX, ..TWO_SOCKETS },
    ] {
        match Topology::synthetic(&spec) {
            Err(TopologyError::InvalidSpec { .. }) => {}
            Err(other) => panic!("{spec:?} gave {other:?}"),
            Ok(t) => panic!("{spec:?} gave {t}"),
        }
    }
}

#[test]
fn restrict_keeps_ids_and_drops_emptied_groups() {
    let t = two_sockets();
    let r = t.restrict(&set("17,19,25")).unwrap();
    assert_eq!(r.cpus(), set("17,19,25"));
    assert_eq!(r.packages().iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
    assert_eq!(r.numa_nodes().iter().map(|n| n.id).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(r.cores().iter().map(|c| c.id).collect::<Vec<_>>(), [8, 9, 12]);
    assert_eq!(r.smt_siblings(17), Some(set("17")));
    assert!(r.caches().iter().all(|c| c.cpus.is_subset(&r.cpus())));
    let err = t.restrict(&set("100-200")).unwrap_err();
    assert!(matches!(err, TopologyError::NoAllowedCpus { .. }), "{err:?}");
}

// ---------------------------------------------------------------- placement

#[test]
fn pack_of_4_lands_on_distinct_cores_of_node_0() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 4, &Placement::Pack).unwrap();
    assert!(plan.iter().all(|p| p.numa_node == 0 && p.package == 0));
    let cores: HashSet<usize> = plan.iter().map(|p| p.core).collect();
    assert_eq!(cores.len(), 4);
    assert_eq!(plan.iter().map(|p| p.shard).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[test]
fn pack_of_10_fills_node_0_cores_then_its_siblings_then_node_1() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 10, &Placement::Pack).unwrap();
    // Node 0 = cores {0,1},{2,3},{4,5},{6,7}: first threads, then second
    // threads, then node 1 (same package) first threads.
    assert_eq!(cpus_of(&plan), [0, 2, 4, 6, 1, 3, 5, 7, 8, 10]);
    let nodes: Vec<usize> = plan.iter().map(|p| p.numa_node).collect();
    assert_eq!(nodes, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
}

#[test]
fn pack_fills_a_package_before_the_next() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 20, &Placement::Pack).unwrap();
    assert!(plan[..16].iter().all(|p| p.package == 0));
    assert!(plan[16..].iter().all(|p| p.package == 1 && p.numa_node == 2));
}

#[test]
fn spread_of_4_lands_on_4_nodes_across_both_packages() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 4, &Placement::Spread).unwrap();
    let nodes: HashSet<usize> = plan.iter().map(|p| p.numa_node).collect();
    assert_eq!(nodes.len(), 4);
    assert_eq!(plan[0].package, 0);
    assert_eq!(plan[1].package, 1, "packages take turns first");
    assert_eq!(cpus_of(&plan), [0, 16, 8, 24]);
}

#[test]
fn spread_never_picks_a_sibling_while_a_core_is_free() {
    let t = two_sockets();
    for allowed in [t.cpus(), set("0-5,9,16-17,30-31"), set("1-31")] {
        let usable = t.restrict(&allowed).unwrap();
        for shards in 1..=allowed.len() {
            let plan = place(&t, &allowed, shards, &Placement::Spread).unwrap();
            let cores: HashSet<usize> = plan.iter().map(|p| p.core).collect();
            assert_eq!(cores.len(), shards.min(usable.cores().len()), "{shards} on {allowed}");
        }
    }
}

#[test]
fn spread_balances_nodes() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 12, &Placement::Spread).unwrap();
    for node in 0..4 {
        assert_eq!(plan.iter().filter(|p| p.numa_node == node).count(), 3);
    }
}

#[test]
fn cores_list_is_used_exactly_and_in_order() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 3, &Placement::Cores(vec![5, 3, 17])).unwrap();
    assert_eq!(cpus_of(&plan), [5, 3, 17]);
    assert_eq!((plan[2].core, plan[2].numa_node, plan[2].package), (8, 2, 1));
}

#[test]
fn cores_list_is_validated() {
    let t = two_sockets();
    let odd = CpuSet::from_cpus((1..32).step_by(2)).unwrap();
    let cores = |list: &[usize]| Placement::Cores(list.to_vec());
    let err = place(&t, &odd, 2, &cores(&[1, 4])).unwrap_err();
    assert!(matches!(err, TopologyError::CpuNotAllowed { cpu: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("CPU 4"), "{err}");
    let err = place(&t, &t.cpus(), 3, &cores(&[1, 2, 1])).unwrap_err();
    assert!(matches!(err, TopologyError::DuplicateCpu { cpu: 1 }), "{err:?}");
    let err = place(&t, &t.cpus(), 3, &cores(&[1, 2])).unwrap_err();
    assert!(matches!(err, TopologyError::CpuListLength { shards: 3, listed: 2 }), "{err:?}");
    let wide = set("0-63");
    let err = place(&t, &wide, 2, &cores(&[1, 40])).unwrap_err();
    assert!(matches!(err, TopologyError::CpuNotInTopology { cpu: 40, .. }), "{err:?}");
    let err = place(&t, &wide, 1, &cores(&[5000])).unwrap_err();
    assert!(matches!(err, TopologyError::CpuOutOfRange { cpu: 5000, .. }), "{err:?}");
}

#[test]
fn every_policy_stays_inside_the_affinity_mask() {
    let t = two_sockets();
    let odd = CpuSet::from_cpus((1..32).step_by(2)).unwrap();
    for policy in [Placement::Pack, Placement::Spread] {
        for shards in 1..=16 {
            let plan = place(&t, &odd, shards, &policy).unwrap();
            assert!(plan.iter().all(|p| p.cpu % 2 == 1), "{policy:?} {shards}: {plan:?}");
        }
    }
    // Odd CPUs are the second thread of every core: Pack still fills node 0
    // first, Spread still alternates packages.
    let pack = place(&t, &odd, 5, &Placement::Pack).unwrap();
    assert_eq!(cpus_of(&pack), [1, 3, 5, 7, 9]);
    let spread = place(&t, &odd, 2, &Placement::Spread).unwrap();
    assert_eq!(cpus_of(&spread), [1, 17]);
    let list = place(&t, &odd, 2, &Placement::Cores(vec![31, 1])).unwrap();
    assert_eq!(cpus_of(&list), [31, 1]);
}

#[test]
fn zero_and_too_many_shards_are_errors() {
    let t = two_sockets();
    let odd = CpuSet::from_cpus((1..32).step_by(2)).unwrap();
    for policy in [Placement::Pack, Placement::Spread, Placement::Cores(vec![])] {
        let err = place(&t, &t.cpus(), 0, &policy).unwrap_err();
        assert!(matches!(err, TopologyError::ZeroShards), "{err:?}");
    }
    let err = place(&t, &t.cpus(), 33, &Placement::Pack).unwrap_err();
    assert!(matches!(err, TopologyError::TooManyShards { shards: 33, cpus: 32 }), "{err:?}");
    let err = place(&t, &odd, 17, &Placement::Spread).unwrap_err();
    assert!(matches!(err, TopologyError::TooManyShards { shards: 17, cpus: 16 }), "{err:?}");
    assert!(err.to_string().contains("17 shards") && err.to_string().contains("16 CPUs"), "{err}");
}

#[test]
fn default_shard_count_is_one_per_allowed_cpu() {
    let t = two_sockets();
    let odd = CpuSet::from_cpus((1..32).step_by(2)).unwrap();
    assert_eq!(Placement::Pack.default_shards(&t, &t.cpus()), 32);
    assert_eq!(Placement::Spread.default_shards(&t, &odd), 16);
    assert_eq!(Placement::Spread.default_shards(&t, &set("0-127")), 32);
    assert_eq!(Placement::Cores(vec![3, 4]).default_shards(&t, &odd), 2);
    let shards = Placement::Spread.default_shards(&t, &odd);
    assert_eq!(place(&t, &odd, shards, &Placement::Spread).unwrap().len(), 16);
}

#[test]
fn shard_placement_displays_for_logs() {
    let t = two_sockets();
    let plan = place(&t, &t.cpus(), 2, &Placement::Spread).unwrap();
    assert_eq!(plan[1].to_string(), "shard 1 -> cpu 16 (core 8, numa node 2, package 1)");
}

// ---------------------------------------------------------------- this machine

#[test]
fn detect_finds_this_machine() {
    let t = Topology::detect().unwrap();
    assert!(!t.cpus().is_empty());
    assert!(!t.cores().is_empty() && !t.numa_nodes().is_empty() && !t.packages().is_empty());
    let allowed = CpuSet::current_affinity().unwrap();
    assert!(!allowed.is_empty());
    assert!(!t.restrict(&allowed).unwrap().cpus().is_empty());
}

#[test]
fn pinning_each_allowed_cpu_moves_the_thread_there() {
    let t = Topology::detect().unwrap();
    let allowed = CpuSet::current_affinity().unwrap();
    let shards = Placement::Spread.default_shards(&t, &allowed);
    let plan = place(&t, &allowed, shards, &Placement::Spread).unwrap();
    let handles: Vec<_> = plan
        .iter()
        .map(|p| {
            let cpu = p.cpu;
            std::thread::spawn(move || {
                pin_current_thread(cpu).unwrap();
                let mask = CpuSet::current_affinity().unwrap();
                (cpu, current_cpu().unwrap(), mask)
            })
        })
        .collect();
    for handle in handles {
        let (cpu, running_on, mask) = handle.join().unwrap();
        assert_eq!(running_on, cpu);
        assert_eq!(mask, CpuSet::from_cpus([cpu]).unwrap());
    }
}

#[test]
fn pinning_outside_the_mask_is_an_error() {
    let allowed = CpuSet::current_affinity().unwrap();
    let outside = (0..MAX_CPUS).rev().find(|&cpu| !allowed.contains(cpu)).unwrap();
    let err = pin_current_thread(outside).unwrap_err();
    assert!(matches!(err, TopologyError::CpuNotAllowed { cpu, .. } if cpu == outside), "{err:?}");
    let err = pin_current_thread(MAX_CPUS + 5).unwrap_err();
    assert!(matches!(err, TopologyError::CpuOutOfRange { .. }), "{err:?}");
    // A pinned thread is never widened back out of its own mask.
    let cpus: Vec<usize> = allowed.iter().collect();
    if let [first, second, ..] = cpus[..] {
        let result = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            pin_current_thread(second)
        })
        .join()
        .unwrap();
        assert!(matches!(result, Err(TopologyError::CpuNotAllowed { .. })), "{result:?}");
    }
}

// ---------------------------------------------------------------- hwloc

#[cfg(feature = "hwloc")]
mod hwloc {
    use super::*;

    fn assert_same_shape(ours: &Topology, theirs: &Topology) {
        assert_eq!(ours.cpus(), theirs.cpus());
        assert_eq!(ours.packages(), theirs.packages());
        assert_eq!(ours.numa_nodes(), theirs.numa_nodes());
        assert_eq!(ours.cores(), theirs.cores());
        assert_eq!(ours.pus(), theirs.pus());
    }

    #[test]
    fn hwloc_synthetic_matches_our_synthetic() {
        let specs = [
            TWO_SOCKETS,
            SyntheticSpec { l3_per: L3Scope::Package, ..TWO_SOCKETS },
            SyntheticSpec { l3_per: L3Scope::None, threads_per_core: 1, ..TWO_SOCKETS },
            SyntheticSpec {
                packages: 1,
                numa_per_package: 1,
                cores_per_numa: 3,
                threads_per_core: 4,
                l3_per: L3Scope::Numa,
            },
        ];
        for spec in specs {
            let ours = Topology::synthetic(&spec).unwrap();
            let theirs = Topology::from_hwloc_synthetic(&spec.hwloc_description()).unwrap();
            assert_eq!(theirs.source(), TopologySource::HwlocSynthetic);
            assert_same_shape(&ours, &theirs);
            assert_eq!(ours.caches(), theirs.caches(), "{spec:?}");
        }
    }

    #[test]
    fn hwloc_synthetic_from_the_short_description() {
        let theirs = Topology::from_hwloc_synthetic("pack:2 numa:2 core:4 pu:2").unwrap();
        assert_same_shape(&two_sockets(), &theirs);
        let plan = place(&theirs, &theirs.cpus(), 10, &Placement::Pack).unwrap();
        assert_eq!(cpus_of(&plan), [0, 2, 4, 6, 1, 3, 5, 7, 8, 10]);
    }

    #[test]
    fn hwloc_rejects_a_bad_description() {
        let err = Topology::from_hwloc_synthetic("pack:two").unwrap_err();
        assert!(matches!(err, TopologyError::Hwloc { .. }), "{err:?}");
    }

    #[test]
    fn hwloc_detect_agrees_with_sysfs() {
        let hw = Topology::from_hwloc().unwrap();
        let sysfs = Topology::from_sysfs().unwrap();
        assert_eq!(hw.source(), TopologySource::Hwloc);
        assert_eq!(Topology::detect().unwrap().source(), TopologySource::Hwloc);
        assert_eq!(hw.cpus(), sysfs.cpus());
        let cores = |t: &Topology| t.cores().iter().map(|c| c.cpus).collect::<Vec<_>>();
        assert_eq!(cores(&hw), cores(&sysfs));
        let nodes =
            |t: &Topology| t.numa_nodes().iter().map(|n| (n.id, n.cpus)).collect::<Vec<_>>();
        assert_eq!(nodes(&hw), nodes(&sysfs));
        assert_eq!(hw.packages().len(), sysfs.packages().len());
    }
}
