//! Tensors on zbmd-gpu devices: host ↔ device moves (bit-exact, buffers freed
//! on drop, host accessors refusing device tensors), and a graph whose matrix
//! products run on a GPU pool, against healthy devices, a device that dies
//! mid-backward, and devices out of memory. Vulkan (Mesa's lavapipe here)
//! under the `vulkan` feature.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use zbmd_gpu::faulty::{Fault, Operation, Rule, Trigger};
use zbmd_gpu::{BackendKind, CpuDevice, Device, DeviceId, ErrorClass, FaultyDevice, GpuPool};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{DType, Graph, MatmulBackend, PoolMatmul, Product, Tensor, TensorError};
use zbmd_rt::Runtime;

fn runtime() -> Runtime {
    Runtime::builder().shards(2).build().expect("runtime")
}

fn cpu(ordinal: u32) -> Arc<dyn Device> {
    Arc::new(CpuDevice::with_ordinal(ordinal, 16 << 20))
}

fn cpu_id(ordinal: u32) -> DeviceId {
    DeviceId::new(BackendKind::Cpu, ordinal)
}

fn free_bytes(device: &Arc<dyn Device>) -> u64 {
    device.memory().expect("memory").free_bytes
}

/// Values whose bits a lossy path would change: signed zero, a subnormal,
/// a NaN payload, infinities, and ordinary numbers.
fn awkward_values() -> Vec<f32> {
    let mut values = vec![
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
    ];
    values.extend((0..18).map(|i| (i as f32 - 9.0) / 7.0));
    values
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A round trip to `device` and back, bit for bit, whose buffer is freed once
/// the last tensor sharing it is dropped.
fn check_round_trip(device: &Arc<dyn Device>) {
    let host = Tensor::from_vec(awkward_values(), &[4, 6]).unwrap();
    let before = free_bytes(device);
    let on_device = host.to_device(device).unwrap();
    assert_eq!(on_device.device(), Some(device.id()));
    assert!(!on_device.is_on_host());
    assert_eq!((on_device.shape(), on_device.dtype()), (&[4usize, 6][..], DType::F32));
    let during = free_bytes(device);
    assert!(during + 24 * 4 <= before, "the upload holds device memory: {before} -> {during}");
    let shared = on_device.clone();
    assert_eq!(free_bytes(device), during, "a clone shares the buffer");
    let back = shared.to_host().unwrap();
    assert!(back.is_on_host());
    assert_eq!(back.device(), None);
    assert_eq!(bits(back.as_f32_slice().unwrap()), bits(&awkward_values()));
    drop(on_device);
    assert_eq!(free_bytes(device), during, "one tensor still uses the buffer");
    drop(shared);
    assert_eq!(free_bytes(device), before, "the last drop frees the buffer");
}

#[test]
fn cpu_round_trip_is_bit_exact_and_the_buffer_is_freed_on_drop() {
    check_round_trip(&cpu(0));
}

#[test]
fn views_and_half_precision_move_in_logical_order() {
    let device = cpu(0);
    let host = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[2, 3]).unwrap();
    // A strided host view uploads row-major.
    let transposed = host.transpose().unwrap().to_device(&device).unwrap();
    assert_eq!(transposed.to_host().unwrap().to_vec_f32(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // Views of a device tensor download what they show: a contiguous row
    // from its offset, and a strided view through the whole buffer.
    let on_device = host.to_device(&device).unwrap();
    assert_eq!(on_device.select(1).unwrap().to_host().unwrap().to_vec_f32(), [3.0, 4.0, 5.0]);
    let view = on_device.transpose().unwrap().to_host().unwrap();
    assert_eq!(
        (view.shape(), view.to_vec_f32()),
        (&[3usize, 2][..], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
    );
    assert_eq!(on_device.reshape(&[3, 2]).unwrap().to_host().unwrap().shape(), [3, 2]);
    // A bf16 tensor stays bf16, a strided view of it too.
    let half = host.to_dtype(DType::BF16).to_device(&device).unwrap();
    assert_eq!(half.dtype(), DType::BF16);
    assert_eq!(half.to_host().unwrap().dtype(), DType::BF16);
    assert_eq!(half.to_host().unwrap().to_vec_f32(), host.to_vec_f32());
    let half_view = host.to_dtype(DType::BF16).transpose().unwrap().to_device(&device).unwrap();
    assert_eq!(half_view.dtype(), DType::BF16);
    assert_eq!(half_view.to_host().unwrap().to_vec_f32(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(half.transpose().unwrap().to_host().unwrap().dtype(), DType::BF16);
    // An empty tensor moves too.
    let empty = Tensor::zeros(&[0, 3]).to_device(&device).unwrap().to_host().unwrap();
    assert_eq!((empty.shape(), empty.numel()), (&[0usize, 3][..], 0));
}

/// Half-precision tensors keep their dtype and their bits on `device`.
fn check_half_round_trip(device: &Arc<dyn Device>) {
    // As f16: two NaNs with payloads, the smallest subnormal, -0, the
    // largest finite value, 1 and -2; seven of them, an odd byte count.
    // (A signalling NaN cannot be set up: host tensors are made through
    // f32, which quiets it.)
    let raw: [u16; 7] = [0x7e01, 0x7e3f, 0x0001, 0x8000, 0x7bff, 0x3c00, 0xc000];
    let bytes: Vec<u8> = raw.iter().flat_map(|bits| bits.to_le_bytes()).collect();
    for dtype in [DType::F16, DType::BF16] {
        let host = Tensor::from_le_bytes(&bytes, dtype, &[7]).unwrap().to_dtype(dtype);
        assert_eq!(host.to_le_bytes(), bytes, "{dtype:?}: the set-up keeps every bit");
        let back = host.to_device(device).unwrap().to_host().unwrap();
        assert_eq!(back.dtype(), dtype);
        assert_eq!(back.to_le_bytes(), bytes, "{dtype:?}: the same bits come back");
    }
}

/// Half-precision tensors take two bytes an element on `device` (whose
/// free-memory figure must count bytes, as the CPU's and lavapipe's do).
fn check_half_size(device: &Arc<dyn Device>) {
    for dtype in [DType::F16, DType::BF16] {
        let before = free_bytes(device);
        let large = Tensor::zeros(&[1024]).to_dtype(dtype).to_device(device).unwrap();
        assert_eq!(large.dtype(), dtype);
        let used = before - free_bytes(device);
        assert!((2048..3072).contains(&used), "{dtype:?}: 1,024 elements took {used} bytes");
    }
}

#[test]
fn cpu_half_precision_keeps_its_bits_and_its_two_bytes() {
    check_half_round_trip(&cpu(0));
    check_half_size(&cpu(0));
}

#[test]
fn moving_between_devices_goes_through_the_host_and_same_device_shares() {
    let (first, second) = (cpu(0), cpu(1));
    let host = Tensor::from_vec(vec![1.5, -2.0, 4.25], &[3]).unwrap();
    let on_first = host.to_device(&first).unwrap();
    let used = free_bytes(&first);
    let again = on_first.to_device(&first).unwrap();
    assert_eq!(free_bytes(&first), used, "to the device it is already on: no copy");
    drop(again);
    let on_second = on_first.to_device(&second).unwrap();
    assert_eq!(on_second.device(), Some(cpu_id(1)));
    assert_eq!(on_second.to_host().unwrap().to_vec_f32(), [1.5, -2.0, 4.25]);
}

#[test]
fn host_accessors_refuse_a_device_tensor_and_name_the_device() {
    let device = cpu(0);
    let tensor =
        Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap().to_device(&device).unwrap();
    let error = tensor.get(&[0, 1]).unwrap_err();
    assert_eq!(error, TensorError::OnDevice { op: "get", device: "cpu:0".into() });
    assert_eq!(
        error.to_string(),
        "get: tensor lives on cpu:0; move it to the host first (Tensor::to_host)"
    );
    assert_eq!(tensor.as_f32_slice(), None);
    assert_eq!(tensor.clone().as_f32_slice_mut(), None);
    let strided = tensor.transpose().unwrap();
    assert!(matches!(
        strided.reshape(&[4]),
        Err(TensorError::OnDevice { op: "reshape (copy of a strided view)", .. })
    ));
    let panic = catch_unwind(AssertUnwindSafe(|| tensor.to_vec_f32())).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.starts_with("to_vec_f32: tensor lives on cpu:0"), "{message}");
    let panic = catch_unwind(AssertUnwindSafe(|| strided.contiguous())).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.starts_with("contiguous: tensor lives on cpu:0"), "{message}");
    let panic = catch_unwind(AssertUnwindSafe(|| Graph::new().param(&tensor))).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.starts_with("Graph::param: tensor lives on cpu:0"), "{message}");
}

#[test]
fn a_failed_upload_is_a_device_error_and_leaks_nothing() {
    let inner = cpu(0);
    let faulty: Arc<dyn Device> = Arc::new(FaultyDevice::with_rules(
        inner.clone(),
        [Rule {
            operation: Operation::Sync,
            fault: Fault::KernelTimeout,
            trigger: Trigger::OnCall(1),
        }],
    ));
    let before = free_bytes(&inner);
    let error = Tensor::zeros(&[64]).to_device(&faulty).unwrap_err();
    assert!(
        matches!(error, TensorError::Device { op: "to_device", class: ErrorClass::Transient, .. }),
        "{error}"
    );
    assert_eq!(free_bytes(&inner), before, "the buffer of the failed upload is freed");
    let tiny: Arc<dyn Device> = Arc::new(CpuDevice::with_ordinal(3, 64));
    let error = Tensor::zeros(&[64]).to_device(&tiny).unwrap_err();
    assert!(matches!(error, TensorError::Device { class: ErrorClass::OutOfMemory, .. }), "{error}");
}

/// A small MLP whose graph uses every product: `linear` forward, `matmul`
/// forward, and both operands' gradients of each (the input is a parameter
/// so that `linear`'s input gradient is computed too). Returns the loss and
/// the gradients of x, w1, b1 and w2 after `steps` steps on one graph (the
/// later steps run on pooled buffers).
fn mlp_gradients(
    backend: Option<Arc<dyn MatmulBackend>>,
    steps: usize,
) -> Result<Vec<Vec<f32>>, TensorError> {
    let mut rng = Rng::new(7);
    let x = Tensor::randn(&[6, 8], 1.0, &mut rng);
    let w1 = Tensor::randn(&[16, 8], 0.4, &mut rng);
    let b1 = Tensor::randn(&[16], 0.1, &mut rng);
    let w2 = Tensor::randn(&[16, 4], 0.4, &mut rng);
    let targets = [0, 3, 1, 2, 3, 0];
    let mut graph = Graph::new();
    graph.set_matmul_backend(backend);
    let mut out = Vec::new();
    for _ in 0..steps {
        graph.clear();
        let vars = [graph.param(&x), graph.param(&w1), graph.param(&b1), graph.param(&w2)];
        let hidden = graph.linear(vars[0], vars[1], Some(vars[2]))?;
        let hidden = graph.relu(hidden)?;
        let logits = graph.matmul(hidden, vars[3])?;
        let loss = graph.cross_entropy(logits, &targets)?;
        let grads = graph.backward(loss)?;
        out = vec![graph.value(loss).to_vec()];
        out.extend(vars.iter().map(|&v| grads.get(v).expect("a gradient").to_vec()));
        graph.recycle(grads);
    }
    Ok(out)
}

/// Each output within `relative` of the reference, measured against the
/// reference output's largest magnitude (a gradient entry near zero is the
/// difference of larger terms, and carries their rounding, not its own).
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], relative: f32) {
    assert_eq!(got.len(), want.len());
    for (which, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= relative * scale,
                "output {which}[{i}]: {g} vs {w} (scale {scale})"
            );
        }
    }
}

/// A backend that multiplies naively on the host and counts its calls.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
}

impl MatmulBackend for Counting {
    fn matmul(
        &self,
        product: Product<'_>,
        dst: &mut [f32],
        accumulate: bool,
    ) -> Result<(), TensorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        product.check_dst(dst)?;
        let (m, n, _) = product.dims();
        for r in 0..m {
            for c in 0..n {
                let (sum, slot) = (product.reference(r, c), &mut dst[r * n + c]);
                *slot = if accumulate { *slot + sum } else { sum };
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "host, naively".into()
    }
}

#[test]
fn every_product_forward_and_backward_goes_through_the_backend() {
    let counting = Arc::new(Counting::default());
    let got = mlp_gradients(Some(counting.clone()), 2).unwrap();
    // Per step: linear and matmul forward, two gradients of each backward.
    assert_eq!(counting.calls.load(Ordering::Relaxed), 2 * 6);
    assert_close(&got, &mlp_gradients(None, 1).unwrap(), 1e-5);
    let mut graph = Graph::new();
    assert_eq!(graph.matmul_backend(), "host gemm");
    graph.set_matmul_backend(Some(counting));
    assert_eq!(graph.matmul_backend(), "host, naively");
}

#[test]
fn pool_products_on_two_cpu_devices_match_the_host_within_1e_6() {
    let rt = runtime();
    let pool = Arc::new(GpuPool::builder(vec![cpu(0), cpu(1)]).actors(2).start(&rt).unwrap());
    let backend = Arc::new(PoolMatmul::new(pool.clone()));
    assert_eq!(backend.describe(), "cpu:0, cpu:1 via 2 kernel actors");
    let host = mlp_gradients(None, 1).unwrap();
    let pooled = mlp_gradients(Some(backend), 2).unwrap();
    // Not bit for bit: the host path lets gemm accumulate into the bias and
    // into gradients inside its kernel, the pool's gemm cannot (a job has no
    // beta), so the sums round in another order.
    assert_close(&pooled, &host, 1e-6);
    assert_eq!(pool.stats().migrations, 0);
    drop(pool);
    rt.shutdown();
}

#[test]
fn a_device_lost_during_backward_moves_the_product_and_gradients_stay_correct() {
    let rt = runtime();
    let dying = Arc::new(FaultyDevice::with_rules(cpu(0), []));
    let healthy = Arc::new(FaultyDevice::with_rules(cpu(1), []));
    let devices: Vec<Arc<dyn Device>> = vec![dying.clone(), healthy.clone()];
    let pool = Arc::new(GpuPool::builder(devices).actors(2).start(&rt).unwrap());
    let backend: Arc<dyn MatmulBackend> = Arc::new(PoolMatmul::new(pool.clone()));

    let mut rng = Rng::new(11);
    let (x, w) = (Tensor::randn(&[5, 8], 1.0, &mut rng), Tensor::randn(&[3, 8], 0.5, &mut rng));
    let run = |graph: &mut Graph, lose_device_before_backward: bool| {
        let (xv, wv) = (graph.param(&x), graph.param(&w));
        let y = graph.linear(xv, wv, None).unwrap();
        let y = graph.tanh(y).unwrap();
        let loss = graph.sum(y).unwrap();
        if lose_device_before_backward {
            dying.fail_next(Operation::Launch, Fault::DeviceLost);
        }
        let grads = graph.backward(loss).unwrap();
        [grads.get(xv).unwrap().to_vec(), grads.get(wv).unwrap().to_vec()]
    };
    let want = run(&mut Graph::new(), false);
    let mut graph = Graph::new();
    graph.set_matmul_backend(Some(backend));
    let got = run(&mut graph, true);
    assert_eq!(dying.injected(Fault::DeviceLost), 1, "a backward product hit the dying device");
    assert!(dying.is_lost());
    assert!(pool.stats().migrations >= 1, "{:?}", pool.stats());
    assert_eq!(pool.placements(), [Some(cpu_id(1)), Some(cpu_id(1))]);
    assert_close(&got, &want, 1e-6);
    drop(graph);
    drop(pool);
    rt.shutdown();
}

#[test]
fn devices_out_of_memory_fail_the_graph_op_with_out_of_memory() {
    let rt = runtime();
    let out_of_memory = || -> Arc<dyn Device> {
        let rule = Rule {
            operation: Operation::Alloc,
            fault: Fault::OutOfMemory,
            trigger: Trigger::FromCall(1),
        };
        Arc::new(FaultyDevice::with_rules(cpu(0), [rule]))
    };
    let pool = Arc::new(
        GpuPool::builder(vec![out_of_memory(), out_of_memory()]).actors(2).start(&rt).unwrap(),
    );
    let mut graph = Graph::new();
    graph.set_matmul_backend(Some(Arc::new(PoolMatmul::new(pool.clone()))));
    let a = graph.input(&Tensor::full(&[4, 4], 1.0));
    let error = graph.matmul(a, a).unwrap_err();
    assert!(
        matches!(
            &error,
            TensorError::Device { class: ErrorClass::OutOfMemory, message, .. } if message.contains("out of memory")
        ),
        "{error}"
    );
    assert_eq!(graph.len(), 1, "the failed product recorded no node");
    drop(graph);
    drop(pool);
    rt.shutdown();
}

/// A one-actor pool over `device` (whose reports start with `name`) gives
/// the MLP's gradients within 1e-4 of the host's.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
fn check_pool_products_match_the_host(device: Arc<dyn Device>, name: &str) {
    let rt = runtime();
    let pool = Arc::new(GpuPool::builder(vec![device]).actors(1).start(&rt).unwrap());
    let backend = Arc::new(PoolMatmul::new(pool.clone()));
    assert!(backend.describe().starts_with(name), "{}", backend.describe());
    let got = mlp_gradients(Some(backend), 2).unwrap();
    assert_close(&got, &mlp_gradients(None, 1).unwrap(), 1e-4);
    drop(pool);
    rt.shutdown();
}

#[cfg(feature = "vulkan")]
mod vulkan {
    use super::*;
    use zbmd_gpu::vulkan::{VulkanConfig, VulkanDevice};

    /// The first Vulkan device, or `None` (with the reason printed) on a
    /// machine without one.
    fn vulkan() -> Option<Arc<dyn Device>> {
        match VulkanDevice::open(0, VulkanConfig::default()) {
            Ok(device) => Some(Arc::new(device)),
            Err(error) => {
                eprintln!(
                    "skipping: no Vulkan device ({error}); install mesa-vulkan-drivers for lavapipe"
                );
                None
            }
        }
    }

    #[test]
    fn vulkan_round_trip_is_bit_exact_and_the_buffer_is_freed_on_drop() {
        let Some(device) = vulkan() else { return };
        check_round_trip(&device);
        check_half_round_trip(&device);
        check_half_size(&device);
        let tensor = Tensor::zeros(&[3]).to_device(&device).unwrap();
        let error = tensor.get(&[0]).unwrap_err();
        assert_eq!(error, TensorError::OnDevice { op: "get", device: device.id().to_string() });
        assert!(error.to_string().contains("lives on vulkan:"), "{error}");
    }

    #[test]
    fn pool_products_on_vulkan_match_the_host() {
        let Some(device) = vulkan() else { return };
        check_pool_products_match_the_host(device, "vulkan:");
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use zbmd_gpu::cuda::CudaDevice;

    fn cuda() -> Arc<dyn Device> {
        Arc::new(CudaDevice::open(0).expect("an NVIDIA GPU (make test-gpu runs this where one is)"))
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn cuda_round_trip_is_bit_exact_and_the_buffer_is_freed_on_drop() {
        check_round_trip(&cuda());
        check_half_round_trip(&cuda());
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn pool_products_on_cuda_match_the_host() {
        check_pool_products_match_the_host(cuda(), "cuda:");
    }
}
