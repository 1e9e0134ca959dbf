//! The devices a run computes on, and the check a backend passes before a
//! run trusts it with its products.

use std::sync::Arc;

use zbmd_gpu::{BackendKind, BackendStatus, Device, FaultyDevice};

#[cfg(test)]
use crate::tensor::TensorError;
use crate::tensor::{MatmulBackend, Product};

/// The devices a run uses, each behind a fault-injecting wrapper (so
/// device faults can be injected), best first.
pub(crate) struct Devices {
    pub faulty: Vec<Arc<FaultyDevice>>,
    /// Whether the model's products run on kernel actors over them (or on
    /// the host, the devices then holding only activation reservations).
    pub kernels: bool,
}

impl Devices {
    /// The devices for `backend` (`None`: the best found):
    ///
    /// - an accelerator backend (`cuda`, `rocm`, `vulkan`, or the first
    ///   hardware accelerator found when none is named) runs the products on
    ///   kernel actors over its devices, with the host CPU last so that a
    ///   lost device has somewhere to go;
    /// - the CPU (named, or when no hardware accelerator is found; a
    ///   software Vulkan device is no better than the host) computes on the
    ///   host, with two logical CPU devices for placement and faults, unless
    ///   `kernel_actors` asks for the kernel actors anyway.
    pub fn choose(backend: Option<&str>, kernel_actors: bool) -> Result<Devices, String> {
        let wrap = |device: Arc<dyn Device>| Arc::new(FaultyDevice::with_rules(device, []));
        let budget = zbmd_gpu::cpu::default_budget();
        let cpu = |ordinal| -> Arc<dyn Device> {
            Arc::new(zbmd_gpu::CpuDevice::with_ordinal(ordinal, budget))
        };
        // Named in the settings, else in ZBMD_GPU_BACKEND: either way a
        // name that is wrong, or a backend that is absent, is an error,
        // never a silent fall back to another backend.
        let from_env = std::env::var(zbmd_gpu::detect::BACKEND_ENV)
            .ok()
            .filter(|name| backend.is_none() && !name.trim().is_empty());
        let (backend, origin) = match (backend, &from_env) {
            (Some(name), _) => (Some(name), "backend".to_string()),
            (None, Some(name)) => (Some(name.as_str()), zbmd_gpu::detect::BACKEND_ENV.to_string()),
            (None, None) => (None, String::new()),
        };
        let wanted = match backend {
            None => None,
            Some(name) => Some(BackendKind::parse(name).ok_or_else(|| {
                format!("{origin} {name:?}: expected one of cpu, cuda, rocm, vulkan")
            })?),
        };
        let accelerators: Vec<Arc<dyn Device>> = match wanted {
            Some(BackendKind::Cpu) => Vec::new(),
            Some(kind) => {
                let detection = zbmd_gpu::detect_backends(Some(kind));
                let devices: Vec<_> = detection
                    .devices
                    .iter()
                    .filter(|device| device.id().backend == kind)
                    .cloned()
                    .collect();
                if devices.is_empty() {
                    let why = match &detection.backend(kind).status {
                        BackendStatus::Absent(reason) => reason.clone(),
                        BackendStatus::Available(_) => "no device".into(),
                    };
                    return Err(format!("{origin} {}: {why}", kind.name()));
                }
                devices
            }
            None => {
                let detection = zbmd_gpu::detect_devices();
                let best = detection.devices.iter().find(|device| {
                    !device.info().is_software && device.id().backend != BackendKind::Cpu
                });
                let kind = best.map(|device| device.id().backend);
                detection
                    .devices
                    .into_iter()
                    .filter(|device| {
                        Some(device.id().backend) == kind && !device.info().is_software
                    })
                    .collect()
            }
        };
        if accelerators.is_empty() {
            return Ok(Devices {
                faulty: (0..2).map(|n| wrap(cpu(n))).collect(),
                kernels: kernel_actors,
            });
        }
        let mut faulty: Vec<Arc<FaultyDevice>> = accelerators.into_iter().map(wrap).collect();
        faulty.push(wrap(cpu(0)));
        Ok(Devices { faulty, kernels: true })
    }

    /// The wrapped devices, as `Device`s.
    pub fn devices(&self) -> Vec<Arc<dyn Device>> {
        self.faulty.iter().map(|faulty| faulty.clone() as Arc<dyn Device>).collect()
    }
}

/// Checks that `backend` multiplies correctly before a run trusts it with
/// its products: a driver or kernel that computes wrong numbers would
/// otherwise train garbage without a single error. One small product whose
/// exact answer is known (eighths times quarters: every partial sum is
/// exact in `f32`).
pub(crate) fn check_products(backend: &dyn MatmulBackend) -> Result<(), String> {
    let (m, n, k) = (17, 9, 33);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
    let product = Product::new(&a, &b, (m, n, k)).map_err(|error| error.to_string())?;
    let mut got = vec![f32::NAN; m * n];
    backend.matmul(product, &mut got, false).map_err(|error| {
        format!("{}: the check before training failed: {error}", backend.describe())
    })?;
    let mut worst = 0.0f32;
    for row in 0..m {
        for col in 0..n {
            let error = (got[row * n + col] - product.reference(row, col)).abs();
            // NaN compares false: make it the worst.
            worst = if error.is_nan() { f32::INFINITY } else { worst.max(error) };
        }
    }
    if worst > 1e-3 {
        return Err(format!(
            "{} computes matrix products wrongly (an entry is off by {worst}): \
             train with --backend cpu, and report the device",
            backend.describe()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Products through the host's arithmetic, off by `bias` everywhere.
    struct Naive {
        bias: f32,
    }

    impl MatmulBackend for Naive {
        fn matmul(
            &self,
            product: Product<'_>,
            dst: &mut [f32],
            accumulate: bool,
        ) -> Result<(), TensorError> {
            let (m, n, _) = product.dims();
            for row in 0..m {
                for col in 0..n {
                    let old = if accumulate { dst[row * n + col] } else { 0.0 };
                    dst[row * n + col] = old + product.reference(row, col) + self.bias;
                }
            }
            Ok(())
        }

        fn describe(&self) -> String {
            format!("naive (bias {})", self.bias)
        }
    }

    #[test]
    fn a_backend_that_multiplies_wrongly_is_refused_by_name() {
        assert_eq!(check_products(&Naive { bias: 0.0 }), Ok(()));
        let error = check_products(&Naive { bias: 0.01 }).unwrap_err();
        assert!(error.contains("naive (bias 0.01) computes matrix products wrongly"), "{error}");
        let error = check_products(&Naive { bias: f32::NAN }).unwrap_err();
        assert!(error.contains("off by inf"), "{error}");
    }
}
