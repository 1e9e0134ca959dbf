//! Kernel actors under the GPU supervisor, against devices that fail: the
//! fault-injecting backend around CPU devices stands in for GPUs that die,
//! time out and run out of memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zbmd_gpu::faulty::{Fault, Operation, Rule, Trigger, site_name};
use zbmd_gpu::health::Health;
use zbmd_gpu::{
    BackendKind, CpuDevice, Device, DeviceId, Executor, FaultyDevice, GpuError, GpuPool, Job,
    JobError, JobStats, Op,
};
use zbmd_rt::Runtime;
use zbmd_rt::fault::{FaultInjector, FaultPlan};

fn runtime() -> Runtime {
    Runtime::builder().shards(2).build().expect("runtime")
}

fn cpu(ordinal: u32) -> Arc<dyn Device> {
    Arc::new(CpuDevice::with_ordinal(ordinal, 64 << 20))
}

fn cpu_id(ordinal: u32) -> DeviceId {
    DeviceId::new(BackendKind::Cpu, ordinal)
}

fn faulty(ordinal: u32, rules: impl IntoIterator<Item = Rule>) -> Arc<FaultyDevice> {
    Arc::new(FaultyDevice::with_rules(cpu(ordinal), rules))
}

fn rule(operation: Operation, fault: Fault, trigger: Trigger) -> Rule {
    Rule { operation, fault, trigger }
}

/// `a + b` for a = 0, 1, 2, ... and b = 0.5, 1.5, ...: the expected result
/// is known without any device.
fn vector_add(n: usize) -> (Job, Vec<f32>) {
    let a: Arc<[f32]> = (0..n).map(|i| i as f32).collect();
    let b: Arc<[f32]> = (0..n).map(|i| i as f32 + 0.5).collect();
    let expected = (0..n).map(|i| 2.0 * i as f32 + 0.5).collect();
    (Job::new(Op::VectorAdd { n }, vec![a, b]).unwrap(), expected)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_job_whose_device_dies_completes_on_the_other_device() {
    let rt = runtime();
    let dying = faulty(0, [rule(Operation::Launch, Fault::DeviceLost, Trigger::OnCall(1))]);
    let pool = GpuPool::builder(vec![dying.clone(), cpu(1)]).actors(1).start(&rt).unwrap();
    assert_eq!(pool.placements(), [Some(cpu_id(0))], "the first healthy device is preferred");

    let (job, expected) = vector_add(10_000);
    let out = pool.run(job).expect("the job survives its device");
    assert_eq!(out, expected, "and its result is right");

    assert_eq!(dying.injected(Fault::DeviceLost), 1);
    assert_eq!(pool.placements(), [Some(cpu_id(1))], "the actor moved to the healthy device");
    assert_eq!(pool.health().devices()[0].health(), Health::Critical);
    assert_eq!(pool.health().devices()[1].health(), Health::Healthy);
    let stats = pool.stats();
    assert_eq!((stats.jobs, stats.migrations), (1, 1), "{stats:?}");
    let metrics = pool.prometheus();
    assert!(metrics.contains("zbmd_gpu_device_health{device=\"cpu:0\"} 2"), "{metrics}");
    assert!(metrics.contains("zbmd_gpu_migrations_total 1"), "{metrics}");

    // Later jobs run on the survivor without further moves.
    for _ in 0..20 {
        let (job, expected) = vector_add(257);
        assert_eq!(pool.run(job).unwrap(), expected);
    }
    assert_eq!(pool.stats().migrations, 1);
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn a_pool_nested_in_another_tree_is_restarted_by_it_and_keeps_serving() {
    use zbmd_rt::ExitReason;
    use zbmd_rt::supervisor::{Supervisor, SupervisorSpec};

    let rt = runtime();
    let (child, pool) = GpuPool::builder(vec![cpu(0)]).child_spec("gpu").unwrap();
    let parent = Supervisor::start(&rt, SupervisorSpec::one_for_one().child(child)).unwrap();
    let (job, expected) = vector_add(1000);
    assert_eq!(pool.run(job).unwrap(), expected, "the parent started the pool's actors");

    // Kill the GPU supervisor: its parent restarts it (and its actors), and
    // the same pool handle reaches the new ones.
    let before = pool.supervisor().actor().expect("running").pid();
    assert!(pool.supervisor().exit(ExitReason::Kill));
    wait_until("the parent restarted the GPU supervisor", || {
        pool.supervisor().actor().is_some_and(|actor| actor.pid() != before)
    });
    let (job, expected) = vector_add(1000);
    assert_eq!(pool.run(job).unwrap(), expected, "the restarted pool serves jobs");
    assert!(parent.is_alive());
    parent.exit(ExitReason::Shutdown);
    rt.shutdown();
}

#[test]
fn transient_errors_are_retried_in_place() {
    let rt = runtime();
    let flaky = faulty(0, [rule(Operation::Launch, Fault::KernelTimeout, Trigger::OnCall(1))]);
    let pool = GpuPool::builder(vec![flaky.clone(), cpu(1)]).actors(1).start(&rt).unwrap();
    let (job, expected) = vector_add(1000);
    assert_eq!(pool.run(job).unwrap(), expected);
    let stats = pool.stats();
    assert_eq!((stats.retries, stats.migrations), (1, 0), "{stats:?}");
    assert_eq!(pool.placements(), [Some(cpu_id(0))], "a timeout is no reason to move");
    assert_eq!(pool.health().devices()[0].health(), Health::Degraded, "but it is remembered");
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn transient_errors_past_the_bound_are_answered() {
    let rt = runtime();
    let stuck = faulty(0, [rule(Operation::Launch, Fault::KernelTimeout, Trigger::FromCall(1))]);
    let policy = zbmd_gpu::HealthPolicy { critical_after: 100, ..Default::default() };
    let pool = GpuPool::builder(vec![stuck.clone()]).health_policy(policy).start(&rt).unwrap();
    let (job, _) = vector_add(16);
    let error = pool.run(job).unwrap_err();
    assert!(matches!(error, JobError::Gpu(GpuError::KernelTimeout { .. })), "{error}");
    let retries = u64::from(zbmd_gpu::kernel_actor::MAX_TRANSIENT_RETRIES);
    assert_eq!(
        stuck.injected(Fault::KernelTimeout),
        retries + 1,
        "one try and the bounded retries"
    );
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn out_of_memory_is_answered_and_the_device_stays_usable() {
    let rt = runtime();
    let small: Arc<dyn Device> = Arc::new(CpuDevice::with_ordinal(0, 64 * 1024));
    let pool = GpuPool::builder(vec![small]).start(&rt).unwrap();
    let (big, _) = vector_add(16 * 1024); // 3 × 64 KiB: does not fit
    let error = pool.run(big).unwrap_err();
    assert!(
        matches!(error, JobError::OutOfMemory { device, .. } if device == cpu_id(0)),
        "{error}"
    );
    assert!(error.to_string().ends_with("bytes asked)"), "the allocation is named: {error}");
    let launch = JobError::OutOfMemory { device: cpu_id(0), requested_bytes: 0 };
    assert_eq!(launch.to_string(), "cpu:0: out of memory for this job", "no allocation to name");
    let (smaller, expected) = vector_add(4 * 1024); // 3 × 16 KiB: fits
    assert_eq!(pool.run(smaller).unwrap(), expected, "a smaller job runs on the same device");
    assert_eq!(
        pool.health().devices()[0].health(),
        Health::Healthy,
        "OOM is not the device's fault"
    );
    assert_eq!(pool.stats().migrations, 0);
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn an_injected_oom_is_retried_once_after_freeing_cached_buffers() {
    let rt = runtime();
    let device = faulty(0, [rule(Operation::Alloc, Fault::OutOfMemory, Trigger::OnCall(1))]);
    let pool = GpuPool::builder(vec![device.clone()]).start(&rt).unwrap();
    let (job, expected) = vector_add(100);
    assert_eq!(pool.run(job).unwrap(), expected);
    assert_eq!(device.injected(Fault::OutOfMemory), 1);
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn when_every_device_is_lost_the_caller_hears_so() {
    let rt = runtime();
    let lost =
        |ordinal| faulty(ordinal, [rule(Operation::Launch, Fault::DeviceLost, Trigger::OnCall(1))]);
    let pool = GpuPool::builder(vec![lost(0), lost(1)]).actors(1).start(&rt).unwrap();
    let (job, _) = vector_add(64);
    let error = pool.run(job).unwrap_err();
    assert!(matches!(error, JobError::NoHealthyDevice { migrations: 2, .. }), "{error}");
    assert!(pool.health().place_would_fail());
    rt.shutdown();
}

#[test]
fn the_monitor_moves_actors_off_a_device_that_went_critical() {
    let rt = runtime();
    let pool = GpuPool::builder(vec![cpu(0), cpu(1)])
        .actors(2)
        .probe_period(Duration::from_millis(10))
        .start(&rt)
        .unwrap();
    let mut placed = pool.placements();
    placed.sort();
    assert_eq!(placed, [Some(cpu_id(0)), Some(cpu_id(1))], "one actor per device");

    let lost = GpuError::DeviceLost { device: cpu_id(0), detail: "test".into() };
    pool.health().devices()[0].record_error(&lost);
    wait_until("both actors run on cpu:1", || pool.placements() == [Some(cpu_id(1)); 2]);
    let (job, expected) = vector_add(100);
    assert_eq!(pool.run(job.clone()).unwrap(), expected);
    assert_eq!(pool.run(job).unwrap(), expected);
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn seeded_faults_never_corrupt_a_result() {
    let rt = runtime();
    let plan = FaultPlan::new()
        .seed(42)
        .site(site_name(Operation::Launch, Fault::KernelTimeout), 0.2)
        .site(site_name(Operation::Sync, Fault::KernelTimeout), 0.1);
    let faults = FaultInjector::new(plan).unwrap();
    let devices: Vec<Arc<dyn Device>> = (0..2)
        .map(|ordinal| Arc::new(FaultyDevice::new(cpu(ordinal), &faults)) as Arc<dyn Device>)
        .collect();
    let policy = zbmd_gpu::HealthPolicy { critical_after: 1000, ..Default::default() };
    let pool = GpuPool::builder(devices).health_policy(policy).start(&rt).unwrap();
    let mut answered_with_error = 0;
    for n in 1..200 {
        let (job, expected) = vector_add(n);
        match pool.run(job) {
            Ok(out) => assert_eq!(out, expected, "n = {n}"),
            // Four timeouts in a row (p ≈ 0.3^4) exhaust the retries.
            Err(JobError::Gpu(GpuError::KernelTimeout { .. })) => answered_with_error += 1,
            Err(other) => panic!("n = {n}: {other}"),
        }
    }
    let JobStats { jobs, retries, .. } = pool.stats();
    assert!(retries > 20, "about a quarter of the launches retried, saw {retries}");
    assert_eq!(jobs + answered_with_error, 199);
    assert!(faults.fires(&site_name(Operation::Launch, Fault::KernelTimeout)) > 0);
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn every_op_gives_the_same_result_through_the_pool_as_directly() {
    let rt = runtime();
    let pool = GpuPool::builder(vec![cpu(0)]).start(&rt).unwrap();
    let mut direct = Executor::open(cpu(1)).unwrap();
    let data = |n: usize, seed: f32| -> Arc<[f32]> {
        (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    };
    let jobs = [
        Job::new(Op::Scale { alpha: -2.5, n: 300 }, vec![data(300, 1.0)]),
        Job::new(Op::Relu { n: 300 }, vec![data(300, 2.0)]),
        Job::new(Op::ReluGrad { n: 300 }, vec![data(300, 3.0), data(300, 4.0)]),
        Job::new(Op::Sum { n: 1000 }, vec![data(1000, 5.0)]),
        Job::new(Op::Max { n: 1000 }, vec![data(1000, 6.0)]),
        Job::new(Op::Softmax { rows: 7, cols: 33 }, vec![data(231, 7.0)]),
        Job::new(Op::Gemm { m: 17, n: 9, k: 33 }, vec![data(17 * 33, 8.0), data(33 * 9, 9.0)]),
        Job::new(Op::Empty { n: 1 }, vec![]),
    ];
    for job in jobs {
        let job = job.unwrap();
        let mut expected = Vec::new();
        direct.run(&job, &mut expected).unwrap();
        assert_eq!(pool.run(job.clone()).unwrap(), expected, "{:?}", job.op());
    }
    // Softmax rows sum to one; the gemm agrees with a plain triple loop.
    let softmax =
        pool.run(Job::new(Op::Softmax { rows: 2, cols: 3 }, vec![data(6, 0.0)]).unwrap()).unwrap();
    assert!((softmax[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let (a, b) = (data(4, 1.0), data(6, 2.0));
    let product = pool
        .run(Job::new(Op::Gemm { m: 2, n: 3, k: 2 }, vec![a.clone(), b.clone()]).unwrap())
        .unwrap();
    for i in 0..2 {
        for j in 0..3 {
            let want: f32 = (0..2).map(|p| a[i * 2 + p] * b[p * 3 + j]).sum();
            assert!((product[i * 3 + j] - want).abs() < 1e-5);
        }
    }
    pool.shutdown();
    rt.shutdown();
}

#[test]
fn malformed_jobs_are_refused_before_any_device_sees_them() {
    let short: Arc<[f32]> = vec![1.0; 3].into();
    let error = Job::new(Op::VectorAdd { n: 4 }, vec![short.clone(), short.clone()]).unwrap_err();
    assert!(
        matches!(&error, JobError::Invalid(message) if message.contains("input 0 has 3 elements, 4 expected"))
    );
    let error = Job::new(Op::VectorAdd { n: 3 }, vec![short]).unwrap_err();
    assert!(
        matches!(&error, JobError::Invalid(message) if message.contains("takes 2 inputs, got 1"))
    );
}

/// The same migration with a real second backend: a Vulkan device (lavapipe
/// here) that dies under its first launch, and the CPU that takes over.
#[cfg(feature = "vulkan")]
#[test]
fn a_job_whose_vulkan_device_dies_completes_on_the_cpu() {
    use zbmd_gpu::vulkan::{VulkanConfig, VulkanDevice};
    let rt = runtime();
    let vulkan: Arc<dyn Device> =
        Arc::new(VulkanDevice::open(0, VulkanConfig::default()).expect("a Vulkan device"));
    let vulkan_id = vulkan.id();
    let dying = Arc::new(FaultyDevice::with_rules(
        vulkan,
        [rule(Operation::Launch, Fault::DeviceLost, Trigger::OnCall(2))],
    ));
    let pool = GpuPool::builder(vec![dying.clone(), cpu(0)]).actors(1).start(&rt).unwrap();
    let (job, expected) = vector_add(100_000);
    assert_eq!(pool.run(job.clone()).unwrap(), expected, "the first job runs on Vulkan");
    assert_eq!(pool.placements(), [Some(vulkan_id)]);
    assert_eq!(pool.run(job).unwrap(), expected, "the second survives Vulkan's death");
    assert_eq!(pool.placements(), [Some(cpu_id(0))]);
    assert_eq!(pool.stats().migrations, 1);
    pool.shutdown();
    rt.shutdown();
}

/// On a GPU backend the actor lends its executor to a blocking thread;
/// jobs that arrive meanwhile wait in the actor, in order, and all complete.
#[cfg(feature = "vulkan")]
#[test]
fn concurrent_jobs_on_a_vulkan_actor_all_complete_correctly() {
    use zbmd_gpu::vulkan::{VulkanConfig, VulkanDevice};
    let rt = runtime();
    let vulkan: Arc<dyn Device> =
        Arc::new(VulkanDevice::open(0, VulkanConfig::default()).expect("a Vulkan device"));
    let pool = Arc::new(GpuPool::builder(vec![vulkan]).actors(1).start(&rt).unwrap());
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for round in 0..10 {
                    let (job, expected) = vector_add(1000 + 97 * caller + round);
                    assert_eq!(pool.run(job).unwrap(), expected);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("a caller");
    }
    assert_eq!(pool.stats().jobs, 40);
    rt.shutdown();
}
